"""``relay doctor``: every check a technician needs on site, each ok/warn/fail with a one-line fix.

It reuses ``relay.checks.run_checks`` (what ``relay run --check`` checks) and adds: key file modes
and owners, roster validity and whether a newer roster is known to the running node, the store's
integrity and free disk, each broker reachable with TLS and its certificate's expiry, the node's
own client certificate's expiry (the broker refuses an expired one), each radio
(firmware, region EU_868, preset, channel key not the public default), clock synchronisation and
the offset from peers, and the drill window. Checks that need the running node (newest roster,
clock offset from peers, radios held by the node) ask its local API; when it is not running they
say so, or probe the device themselves.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

from cryptography import x509

from relay import api
from relay.checks import Check, expiry, key_mode_checks, local_day, run_checks
from relay.config import Config, RadioEntry
from relay.envelope import Rejection, open_envelope
from relay.links.mqtt_config import BrokerConfig

DISK_FAIL_BYTES = 50 * 1024 * 1024
DISK_WARN_BYTES = 500 * 1024 * 1024
ROSTER_WARN_S = 14 * 86400
CONNECT_TIMEOUT_S = 5.0
# Channel keys of 0 or 1 byte are "no key" or the public default key ("AQ==") or a variant of
# it that everyone can derive; only a 16 or 32 byte key is private.
PRIVATE_PSK_LENGTHS = {16, 32}

RadioProbe = Callable[[RadioEntry, float], dict[str, Any]]
LOCAL = ZoneInfo("Europe/Amsterdam")


def _local(t: float, fmt: str = "%Y-%m-%d %H:%M %Z") -> str:
    """Times for people: Europe/Amsterdam, with the date."""
    return dt.datetime.fromtimestamp(t, LOCAL).strftime(fmt)


def node_status(cfg: Config) -> dict[str, Any] | None:
    """The running node's ``status``, or None when no node answers on the API socket."""
    if not cfg.api_socket.exists():
        return None
    try:
        answer = api.call(cfg.api_socket, {"op": "status"}, timeout=3.0)
    except (api.ApiError, OSError):
        return None
    return answer if answer.get("ok") else None


def roster_checks(cfg: Config, status: dict[str, Any] | None, now: float) -> Iterator[Check]:
    try:
        env = open_envelope(cfg.roster.read_bytes(), max_bytes=1 << 20)
    except OSError:
        return  # run_checks reported it
    if isinstance(env, Rejection):
        return
    left = env.decision.expires_at - now
    serial = env.decision.seq
    when = _local(env.decision.expires_at)
    if left < 0:
        yield Check(
            "trust.roster expiry",
            "fail",
            f"roster serial {serial} expired at {when}",
            "issue a new roster with `relay roster add/revoke` and distribute it",
            nl=(
                f"roster serienummer {serial} is verlopen op {when}",
                "maak een nieuwe roster met `relay roster add/revoke` en verspreid die",
            ),
        )
    elif left < ROSTER_WARN_S:
        yield Check(
            "trust.roster expiry",
            "warn",
            f"roster serial {serial} expires at {when}",
            "issue a new roster before then",
            nl=(
                f"roster serienummer {serial} verloopt op {when}",
                "maak vóór die tijd een nieuwe roster",
            ),
        )
    else:
        yield Check(
            "trust.roster expiry",
            "ok",
            f"roster serial {serial} valid until {when}",
            nl=(f"roster serienummer {serial} geldig tot {when}", ""),
        )
    if status is None:
        yield Check(
            "trust.roster newest",
            "warn",
            "the node is not running: cannot compare with the newest roster it knows",
            "start the node (systemctl start relay) and run doctor again",
            nl=(
                "de node draait niet: kan niet vergelijken met de nieuwste roster die hij kent",
                "start de node (systemctl start relay) en draai doctor opnieuw",
            ),
        )
        return
    known = status.get("engine", {}).get("roster_serial")
    if isinstance(known, int) and known > serial:
        yield Check(
            "trust.roster newest",
            "fail",
            f"the file has serial {serial}, the running node knows serial {known}",
            f"replace {cfg.roster} with the newest roster",
            nl=(
                f"het bestand heeft serienummer {serial}, de draaiende node kent {known}",
                f"vervang {cfg.roster} door de nieuwste roster",
            ),
        )
    else:
        yield Check(
            "trust.roster newest",
            "ok",
            f"serial {serial} is the newest the node knows",
            nl=(f"serienummer {serial} is het nieuwste dat de node kent", ""),
        )


def store_checks(cfg: Config) -> Iterator[Check]:
    from relay.store import StoreError, integrity_of  # the only module that talks SQL

    if cfg.store.exists():
        try:
            verdict = asyncio.run(integrity_of(cfg.store))
        except StoreError as exc:
            verdict = str(exc)
        if verdict == "ok":
            yield Check(
                "node.store integrity",
                "ok",
                f"{cfg.store}: PRAGMA integrity_check ok",
                nl=(f"{cfg.store}: PRAGMA integrity_check ok", ""),
            )
        else:
            yield Check(
                "node.store integrity",
                "fail",
                f"{cfg.store}: {verdict}",
                "stop the node and restore the store from the last backup (docs/operations.md)",
                nl=(
                    f"{cfg.store}: {verdict}",
                    "stop de node en zet de store terug uit de laatste back-up "
                    "(docs/operations.md)",
                ),
            )
    else:
        yield Check(
            "node.store integrity",
            "warn",
            f"{cfg.store}: no store yet",
            "it is created when the node first starts",
            nl=(
                f"{cfg.store}: nog geen store",
                "die wordt gemaakt als de node voor het eerst start",
            ),
        )
    d = cfg.store.parent
    while not d.exists() and d != d.parent:
        d = d.parent
    free = shutil.disk_usage(d).free
    text = f"{free / 2**20:.0f} MiB free on the store's file system ({d})"
    text_nl = f"{free / 2**20:.0f} MiB vrij op het bestandssysteem van de store ({d})"
    if free < DISK_FAIL_BYTES:
        yield Check(
            "node.store disk",
            "fail",
            text,
            "free disk space (old logs, backups)",
            nl=(text_nl, "maak schijfruimte vrij (oude logs, back-ups)"),
        )
    elif free < DISK_WARN_BYTES:
        yield Check(
            "node.store disk",
            "warn",
            text,
            "free disk space soon",
            nl=(text_nl, "maak binnenkort schijfruimte vrij"),
        )
    else:
        yield Check("node.store disk", "ok", text, nl=(text_nl, ""))


def client_cert_check(i: int, b: BrokerConfig, now: float) -> Iterator[Check]:
    """The node's own client certificate for this broker: readable, valid now, not about to
    expire (the broker kit signs them for a year; an expired one locks the node out)."""
    if b.cert is None:
        return
    key = f"mqtt.broker[{i}].cert"
    try:
        cert = x509.load_pem_x509_certificate(b.cert.read_bytes())
    except (OSError, ValueError) as exc:
        yield Check(
            key,
            "fail",
            f"{b.cert}: cannot read the client certificate: {exc}",
            "copy the node's certificate from the broker kit (relay broker kit)",
            nl=(
                f"{b.cert}: clientcertificaat niet leesbaar: {exc}",
                "kopieer het certificaat van de node uit de broker-kit (relay broker kit)",
            ),
        )
        return
    start = cert.not_valid_before_utc.timestamp()
    end = cert.not_valid_after_utc.timestamp()
    if now < start:
        since = _local(start, "%Y-%m-%d %H:%M %Z")
        yield Check(
            key,
            "fail",
            f"{b.cert}: the client certificate is valid only from {since}",
            "check the clock (timedatectl), or use a certificate that is valid now",
            nl=(
                f"{b.cert}: het clientcertificaat is pas geldig vanaf {since}",
                "controleer de klok (timedatectl) of gebruik een certificaat dat nu geldig is",
            ),
        )
    elif (near := expiry(end, now)) is not None:
        yield Check(
            key,
            "fail",
            f"{b.cert}: the node's client certificate {near[0]}",
            "issue a new one with relay broker kit and copy it here",
            nl=(
                f"{b.cert}: het clientcertificaat van de node {near[1]}",
                "maak een nieuw aan met relay broker kit en kopieer het hierheen",
            ),
        )
    else:
        when = local_day(end)
        yield Check(
            key,
            "ok",
            f"{b.cert}: client certificate valid until {when}",
            nl=(f"{b.cert}: clientcertificaat geldig tot {when}", ""),
        )


def _tls_context(b: BrokerConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(b.ca) if b.ca else None)
    if b.cert is not None and b.key is not None:
        ctx.load_cert_chain(str(b.cert), str(b.key))
    return ctx


def broker_check(i: int, b: BrokerConfig, now: float) -> Iterator[Check]:
    key = f"mqtt.broker[{i}]"
    try:
        sock = socket.create_connection((b.host, b.port), timeout=CONNECT_TIMEOUT_S)
    except OSError as exc:
        yield Check(
            key,
            "fail",
            f"{b.url}: cannot connect: {exc}",
            f"check the network, the broker and the firewall (port {b.port})",
            nl=(
                f"{b.url}: geen verbinding: {exc}",
                f"controleer het netwerk, de broker en de firewall (poort {b.port})",
            ),
        )
        return
    with sock:
        if not b.tls:
            yield Check(
                key,
                "warn",
                f"{b.url}: reachable, but without TLS",
                "use an mqtts:// broker with the broker kit's certificates",
                nl=(
                    f"{b.url}: bereikbaar, maar zonder TLS",
                    "gebruik een mqtts://-broker met de certificaten uit de broker-kit",
                ),
            )
            return
        try:
            with _tls_context(b).wrap_socket(sock, server_hostname=b.host) as tls:
                cert = tls.getpeercert()
        except (ssl.SSLError, OSError) as exc:
            yield Check(
                key,
                "fail",
                f"{b.url}: TLS failed: {exc}",
                f"check {key}.ca/cert/key against the broker kit",
                nl=(
                    f"{b.url}: TLS mislukt: {exc}",
                    f"controleer {key}.ca/cert/key met de broker-kit",
                ),
            )
            return
    not_after = ssl.cert_time_to_seconds(str((cert or {}).get("notAfter")))
    if (near := expiry(not_after, now)) is not None:
        yield Check(
            key,
            "fail",
            f"{b.url}: TLS ok, but the broker's certificate {near[0]}",
            "renew the broker certificate (relay broker kit)",
            nl=(
                f"{b.url}: TLS ok, maar het certificaat van de broker {near[1]}",
                "vernieuw het brokercertificaat (relay broker kit)",
            ),
        )
    else:
        when = local_day(not_after)
        yield Check(
            key,
            "ok",
            f"{b.url}: TLS ok, certificate valid until {when}",
            nl=(f"{b.url}: TLS ok, certificaat geldig tot {when}", ""),
        )


def radio_checks(
    cfg: Config, status: dict[str, Any] | None, probe: RadioProbe | None
) -> Iterator[Check]:
    """Firmware, region, preset and channel key of each radio: read by the running node at its
    connect (``links[].mesh.radio_config``), or read here with meshtastic when it is not running
    (a radio serves one client at a time)."""
    for i, radio in enumerate(cfg.radios):
        key = f"mesh.radio[{i}]"
        want = radio.preset
        if status is not None:
            link = next((lk for lk in status.get("links", []) if lk["name"] == radio.name), None)
            state = link["state"] if link else "?"
            seen = ((link or {}).get("mesh") or {}).get("radio_config") or {}
            yield Check(
                key,
                "ok" if state != "down" else "fail",
                f"{radio.name}: held by the running node, link {state}",
                "check the radio's cable and power; `relay status` shows the detail",
                nl=(
                    f"{radio.name}: in gebruik door de draaiende node, link {state}",
                    "controleer kabel en voeding van de radio; `relay status` toont details",
                ),
            )
            if seen:
                yield from _radio_findings(
                    key,
                    radio.name,
                    want,
                    seen.get("region"),
                    seen.get("preset"),
                    seen.get("channel_key"),
                )
            continue
        try:
            info = (probe or _probe)(radio, CONNECT_TIMEOUT_S * 4)
        except Exception as exc:  # noqa: BLE001 - any failure to talk to the radio is the finding
            yield Check(
                key,
                "fail",
                f"{radio.name}: no radio answers: {exc}",
                "check the cable, the device path (dialout group) or meshtasticd",
                nl=(
                    f"{radio.name}: geen radio antwoordt: {exc}",
                    "controleer de kabel, het apparaatpad (groep dialout) of meshtasticd",
                ),
            )
            continue
        yield Check(key, "ok", f"{radio.name}: firmware {info.get('firmware', '?')}")
        psk = info.get("psk")
        channel_key = (
            "private"
            if isinstance(psk, bytes) and len(psk) in PRIVATE_PSK_LENGTHS
            else "none"
            if not psk
            else "default"
        )
        yield from _radio_findings(
            key, radio.name, want, info.get("region"), info.get("preset"), channel_key
        )


def _radio_findings(
    key: str, name: str, want: str, region: Any, preset: Any, channel_key: Any
) -> Iterator[Check]:
    yield Check(
        f"{key} region",
        "ok" if region == "EU_868" else "fail",
        f"{name}: region {region}",
        "apply the radio profile for its role (firmware_configs/): region EU_868",
        nl=(
            f"{name}: regio {region}",
            "pas het radioprofiel voor de rol toe (firmware_configs/): regio EU_868",
        ),
    )
    yield Check(
        f"{key} preset",
        "ok" if preset == want else "fail",
        f"{name}: preset {preset} (configured {want})",
        "apply the radio profile, or set [[mesh.radio]] preset to match",
        nl=(
            f"{name}: preset {preset} (ingesteld {want})",
            "pas het radioprofiel toe, of zet [[mesh.radio]] preset gelijk",
        ),
    )
    if channel_key == "private":
        yield Check(
            f"{key} channel key",
            "ok",
            f"{name}: private channel key",
            nl=(f"{name}: eigen kanaalsleutel", ""),
        )
    else:
        yield Check(
            f"{key} channel key",
            "fail",
            f"{name}: the channel key is the public default (AQ==) or none",
            "meshtastic --ch-set psk random --ch-index 0, then share the channel URL "
            "with the other radios",
            nl=(
                f"{name}: de kanaalsleutel is de openbare standaard (AQ==) of ontbreekt",
                "meshtastic --ch-set psk random --ch-index 0, en deel de kanaal-URL "
                "met de andere radio's",
            ),
        )


def _probe(radio: RadioEntry, timeout_s: float) -> dict[str, Any]:
    from relay.links.meshtastic_bridge import probe_radio  # the only module that imports meshtastic

    return probe_radio(radio.tcp, radio.serial, timeout_s)


def clock_checks(status: dict[str, Any] | None) -> Iterator[Check]:
    timedatectl = shutil.which("timedatectl")
    synced: str | None = None
    if timedatectl is not None:
        try:
            proc = subprocess.run(
                [timedatectl, "show", "-p", "NTPSynchronized", "--value"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if proc.returncode == 0 and proc.stdout.strip() in ("yes", "no"):
                synced = proc.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            synced = None
    if synced == "yes":
        yield Check(
            "clock ntp",
            "ok",
            "the clock is synchronised (timedatectl)",
            nl=("de klok is gesynchroniseerd (timedatectl)", ""),
        )
    elif synced == "no":
        yield Check(
            "clock ntp",
            "warn",
            "the clock is not synchronised (timedatectl)",
            "timedatectl set-ntp true; check the NTP server is reachable",
            nl=(
                "de klok is niet gesynchroniseerd (timedatectl)",
                "timedatectl set-ntp true; controleer of de NTP-server bereikbaar is",
            ),
        )
    else:
        yield Check(
            "clock ntp",
            "warn",
            "synchronisation state unknown (no timedatectl answer)",
            "check the clock by hand; a Pi has no real-time clock",
            nl=(
                "synchronisatie onbekend (timedatectl antwoordt niet)",
                "controleer de klok met de hand; een Pi heeft geen klokchip",
            ),
        )
    if status is None:
        return
    offset = status.get("engine", {}).get("clock_offset_s")
    if not isinstance(offset, int | float):
        yield Check(
            "clock peers",
            "ok",
            "not enough messages yet to compare with peers",
            nl=("nog te weinig berichten om met anderen te vergelijken", ""),
        )
    elif status.get("clock_warning"):  # the engine's own threshold (docs/config.md, Clock)
        yield Check(
            "clock peers",
            "warn",
            f"this node's clock differs from message times by {offset:+.0f} s",
            "set the clock (NTP, or by hand from a trusted source)",
            nl=(
                f"de klok van deze node wijkt {offset:+.0f} s af van de berichttijden",
                "zet de klok gelijk (NTP, of met de hand van een betrouwbare bron)",
            ),
        )
    else:
        yield Check(
            "clock peers",
            "ok",
            f"offset from peers' messages {offset:+.0f} s",
            nl=(f"afwijking van de berichten van anderen {offset:+.0f} s", ""),
        )


def drill_check(cfg: Config, now: float) -> Check:
    if cfg.drill_window is None:
        return Check(
            "drill.window",
            "ok",
            "no drill window: exercise traffic is not limited",
            nl=("geen oefenvenster: oefenverkeer is niet begrensd", ""),
        )
    start, end = cfg.drill_window
    span = f"{_local(start)} – {_local(end)}"
    if now > end:
        return Check(
            "drill.window",
            "warn",
            f"the drill window {span} is over",
            "remove [drill] window or set the next drill's",
            nl=(
                f"het oefenvenster {span} is voorbij",
                "verwijder [drill] window of zet dat van de volgende oefening",
            ),
        )
    state = "open now" if now >= start else "not yet open"
    state_nl = "nu open" if now >= start else "nog niet open"
    return Check(
        "drill.window",
        "ok",
        f"drill window {span}, {state}",
        nl=(f"oefenvenster {span}, {state_nl}", ""),
    )


def diagnose(
    cfg: Config, *, now: float | None = None, radio_probe: RadioProbe | None = None
) -> list[Check]:
    now = time.time() if now is None else now
    checks = [
        Check(
            "config",
            "ok",
            f"{cfg.path}: valid (node {cfg.node})",
            nl=(f"{cfg.path}: geldig (node {cfg.node})", ""),
        )
    ]
    checks += run_checks(cfg, now=now)
    checks += key_mode_checks(cfg)
    status = node_status(cfg)
    checks += roster_checks(cfg, status, now)
    checks += store_checks(cfg)
    if cfg.mqtt is not None:
        for i, b in enumerate(cfg.mqtt.brokers):
            checks += broker_check(i, b, now)
            checks += client_cert_check(i, b, now)
    checks += radio_checks(cfg, status, radio_probe)
    checks += clock_checks(status)
    checks.append(drill_check(cfg, now))
    return checks
