"""Every word the console shows, in Dutch (the default) and English, and how times look.

Times are shown in Europe/Amsterdam with the date (``wo 2 dec 2026 01:53:37``) whatever the
machine's own zone is; the zone database comes from the system or the tzdata package.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from relay.envelope import Precedence

LANGUAGES = ("nl", "en")
ZONE = ZoneInfo("Europe/Amsterdam")

_T: dict[str, tuple[str, str]] = {
    "app": ("Crisisconsole", "Crisis console"),
    "inbox": ("Binnengekomen", "Inbox"),
    "compose": ("Opstellen", "Compose"),
    "sent": ("Verzonden", "Sent"),
    "network": ("Netwerk", "Network"),
    "logout": ("Afmelden", "Log out"),
    "login": ("Aanmelden", "Log in"),
    "user": ("Gebruiker", "User"),
    "password": ("Wachtwoord", "Password"),
    "login_failed": ("Naam of wachtwoord onjuist.", "Wrong name or password."),
    "throttled": (
        "Te veel mislukte pogingen. Probeer het over {m} minuten opnieuw.",
        "Too many failed attempts. Try again in {m} minutes.",
    ),
    "node": ("Node", "Node"),
    "signed_in_as": (
        "Aangemeld als {user} (sleutel {issuer})",
        "Signed in as {user} (key {issuer})",
    ),
    "precedence": ("Voorrang", "Precedence"),
    "audience": ("Ontvangers", "Audience"),
    "audience_help": (
        "Alleen gebieden en nodes waarvoor uw sleutel mag tekenen worden aangeboden.",
        "Only the regions and nodes your key may address are offered.",
    ),
    "everyone": ("Iedereen (alle nodes)", "Everyone (all nodes)"),
    "region": ("Regio", "Region"),
    "text": ("Tekst", "Text"),
    "validity": ("Geldig gedurende", "Valid for"),
    "exercise": ("Oefening", "Exercise"),
    "exercise_help": (
        "Een oefenbericht draagt altijd het merkteken OEFENING / EXERCISE.",
        "An exercise message always carries the marker OEFENING / EXERCISE.",
    ),
    "preview": ("Voorbeeld (zo zien ontvangers het)", "Preview (as recipients will see it)"),
    "sign_password": ("Wachtwoord om te ondertekenen", "Password to sign"),
    "sign_send": ("Onderteken en verstuur", "Sign and send"),
    "fits_one": (
        "past in één LoRa-bericht: {size} / {limit} B, ≈ {air} s zendtijd",
        "fits one LoRa frame: {size} / {limit} B, ≈ {air} s airtime",
    ),
    "fits_many": (
        "te groot voor één LoRa-bericht: {size} B in {n} delen, ≈ {air} s zendtijd",
        "too large for one LoRa frame: {size} B in {n} parts, ≈ {air} s airtime",
    ),
    "too_large": ("Te groot: {size} B (max. {limit} B)", "Too large: {size} B (max {limit} B)"),
    "issuer": ("Afzender", "Issuer"),
    "signature": ("Handtekening", "Signature"),
    "pq": ("Kwantumveilige handtekening", "Quantum-safe signature"),
    "verified": (
        "geverifieerd (Ed25519, sleutel {kid}, rooster van de node)",
        "verified (Ed25519, key {kid}, node's roster)",
    ),
    "issued": ("Opgesteld", "Issued"),
    "expires": ("Geldig tot", "Valid until"),
    "received": ("Binnengekomen", "Received"),
    "via": ("Via", "Via"),
    "path_here": ("hier opgesteld en verzonden", "composed and sent here"),
    "kind": ("Soort", "Kind"),
    "id": ("Kenmerk", "Id"),
    "refers": ("Verwijst naar", "Refers to"),
    "delivery": ("Aflevering", "Delivery"),
    "delivered": ("ontvangen", "received"),
    "waiting": ("wacht", "waiting"),
    "delivery_help": (
        "'ontvangen' betekent alleen: de node heeft een ondertekende ontvangstbevestiging "
        "gestuurd.",
        "'received' only means: the node sent a signed receipt.",
    ),
    "cancel": ("Intrekken", "Cancel"),
    "supersede": ("Vervangen", "Supersede"),
    "cancelled": ("INGETROKKEN", "CANCELLED"),
    "superseded": ("VERVANGEN", "SUPERSEDED"),
    "print": ("Afdrukken", "Print"),
    "printed_at": ("Afgedrukt", "Printed"),
    "filter": ("Filter", "Filter"),
    "all": ("alle", "all"),
    "only_exercise": ("alleen oefening", "exercise only"),
    "only_real": ("alleen echt", "real only"),
    "apply": ("Toepassen", "Apply"),
    "empty": ("Geen berichten.", "No messages."),
    "flash_alert": ("FLASH-bericht binnengekomen", "FLASH message received"),
    "sound": ("Geluidssignaal bij FLASH", "Sound on FLASH"),
    "dismiss": ("Gezien", "Seen"),
    "links": ("Verbindingen", "Links"),
    "state": ("Toestand", "State"),
    "since": ("sinds", "since"),
    "peers": ("Andere nodes, laatst gehoord", "Peers, last heard"),
    "airtime": ("Zendtijd (per uur, EU868 10 %)", "Airtime (per hour, EU868 10 %)"),
    "airtime_row": (
        "{used} s van {budget} s gebruikt (FLASH-reserve boven {cap} s)",
        "{used} s of {budget} s used (FLASH reserve above {cap} s)",
    ),
    "clock_ok": ("Klok van de node lijkt gelijk te lopen.", "The node's clock looks right."),
    "clock_warning": (
        "WAARSCHUWING: de klok van deze node wijkt {off} s af van de berichttijden.",
        "WARNING: this node's clock differs from message times by {off} s.",
    ),
    "console_counts": ("Console: geweigerde verzoeken", "Console: refused requests"),
    "trail": ("Verloop op deze node (auditlog)", "Path through this node (audit log)"),
    "event": ("Gebeurtenis", "Event"),
    "detail": ("Toelichting", "Detail"),
    "rejections": ("Geweigerde berichten (recent)", "Rejected messages (recent)"),
    "none": ("geen", "none"),
    "reason": ("Reden", "Reason"),
    "when": ("Wanneer", "When"),
    "node_down": (
        "De node antwoordt niet ({error}). Draait `relay run`?",
        "The node does not answer ({error}). Is `relay run` running?",
    ),
    "refused": ("Geweigerd", "Refused"),
    "sent_ok": ("Ondertekend en verzonden.", "Signed and sent."),
    "receipts": ("Ontvangstbevestigingen", "Receipts"),
    "of": ("van", "of"),
    "not_found": ("Niet gevonden.", "Not found."),
    "session_expired": ("Uw sessie is verlopen; meld u opnieuw aan.", "Your session expired."),
}

PRECEDENCE_HELP: dict[Precedence, tuple[str, str]] = {
    Precedence.FLASH: (
        "FLASH — direct handelen, binnen 10 minuten. Gaat over alle verbindingen tegelijk.",
        "FLASH — act at once, within 10 minutes. Goes out on every link at once.",
    ),
    Precedence.IMMEDIATE: (
        "IMMEDIATE — met spoed, binnen 30 minuten.",
        "IMMEDIATE — urgent, within 30 minutes.",
    ),
    Precedence.PRIORITY: (
        "PRIORITY — voorrang boven gewone berichten, zo snel als het werk toelaat.",
        "PRIORITY — ahead of ordinary traffic, as soon as work allows.",
    ),
    Precedence.ROUTINE: (
        "ROUTINE — gewone berichtgeving, geen haast.",
        "ROUTINE — ordinary traffic, no hurry.",
    ),
}

_DAYS = {
    "nl": ("ma", "di", "wo", "do", "vr", "za", "zo"),
    "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
}
_MONTHS = {
    "nl": ("jan", "feb", "mrt", "apr", "mei", "jun", "jul", "aug", "sep", "okt", "nov", "dec"),
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
}


def t(lang: str, key: str, **kw: object) -> str:
    nl, en = _T[key]
    text = en if lang == "en" else nl
    return text.format(**kw) if kw else text


def precedence_help(lang: str, p: Precedence) -> str:
    nl, en = PRECEDENCE_HELP[p]
    return en if lang == "en" else nl


def when(lang: str, ts: float | None) -> str:
    """A Unix time as Amsterdam local time with the weekday and date."""
    if ts is None:
        return "—"
    d = datetime.fromtimestamp(ts, UTC).astimezone(ZONE)
    lang = lang if lang in _DAYS else "nl"
    return (
        f"{_DAYS[lang][d.weekday()]} {d.day} {_MONTHS[lang][d.month - 1]} {d.year} "
        f"{d:%H:%M:%S} {d.tzname()}"
    )


def decimal(lang: str, x: float, digits: int = 1) -> str:
    s = f"{x:.{digits}f}"
    return s if lang == "en" else s.replace(".", ",")
