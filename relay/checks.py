"""Checks of what a node needs, shared by ``relay run --check``, ``relay run`` and ``relay doctor``.

Each check returns ``Check(key, status, message, fix)``: ``key`` names the config key (or the
subject) it is about, ``message`` says what was found (with the file), ``fix`` is one line telling
the technician what to do. ``status`` is ``ok``, ``warn`` or ``fail``; any ``fail`` makes the
commands exit non-zero.

``run_checks`` covers what ``relay run`` needs to start: the key, the root and roster files exist,
are readable, parse and match (the node's own key is on the roster), and the store and API socket
directories are writable. It reads files only; it creates nothing.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from relay.config import Config
from relay.keys import KeyError_, load_private, load_public, raw_public
from relay.rosterfile import RosterFileError, load_trust
from relay.trust import TrustState

Status = Literal["ok", "warn", "fail"]

CERT_WARN_DAYS = 30  # a certificate or CRL with fewer days left fails its check
LOCAL = ZoneInfo("Europe/Amsterdam")


def local_day(t: float) -> str:
    """A date for people: Europe/Amsterdam."""
    return dt.datetime.fromtimestamp(t, LOCAL).strftime("%Y-%m-%d")


def expiry(until: float, now: float) -> tuple[str, str] | None:
    """How near the end ``until`` is, in English and Dutch, or None with more than
    CERT_WARN_DAYS left: ``expired 2027-12-02`` / ``is verlopen op 2027-12-02``, or
    ``expires 2027-12-02 (12 days)`` / ``verloopt 2027-12-02 (12 dagen)``."""
    days, when = (until - now) / 86400, local_day(until)
    if days < 0:
        return f"expired {when}", f"is verlopen op {when}"
    if days < CERT_WARN_DAYS:
        return f"expires {when} ({days:.0f} days)", f"verloopt {when} ({days:.0f} dagen)"
    return None


@dataclass(frozen=True, slots=True)
class Check:
    key: str
    status: Status
    message: str  # English
    fix: str = ""
    nl: tuple[str, str] | None = None  # the message and the fix in Dutch

    def text(self, lang: str = "nl") -> tuple[str, str]:
        """(message, fix) in ``lang``: Dutch first, English where no Dutch text is given."""
        if lang == "nl" and self.nl is not None:
            return self.nl
        return self.message, self.fix

    def line(self, lang: str = "nl") -> str:
        """One line: ``fail node.key: kan sleutel /etc/… niet lezen … — oplossing: …``."""
        message, fix = self.text(lang)
        word = "oplossing" if lang == "nl" else "fix"
        tail = f" — {word}: {fix}" if fix and self.status != "ok" else ""
        return f"{self.status:<4} {self.key}: {message}{tail}"


def failed(checks: list[Check]) -> bool:
    return any(c.status == "fail" for c in checks)


def _nearest_dir(path: Path) -> Path:
    """The directory ``path`` would live in, or its nearest existing ancestor."""
    d = path.parent
    while not d.exists() and d != d.parent:
        d = d.parent
    return d


def check_writable_dir(key: str, path: Path, what: str) -> Check:
    """The file at ``path`` can be created (or, if it exists, written) by this user."""
    if path.exists():
        if path.is_dir():
            return Check(
                key,
                "fail",
                f"{path} is a directory, not a {what}",
                f"point {key} at a file",
                nl=(f"{path} is een map, geen bestand", f"laat {key} naar een bestand wijzen"),
            )
        if not os.access(path, os.R_OK | os.W_OK):
            return Check(
                key,
                "fail",
                f"{path}: not readable and writable by this user",
                f"chown the file to the node's user (relay) or fix {key}",
                nl=(
                    f"{path}: niet lees- en schrijfbaar voor deze gebruiker",
                    f"maak de gebruiker van de node (relay) eigenaar, of verbeter {key}",
                ),
            )
    d = _nearest_dir(path)
    if not d.is_dir():
        return Check(
            key,
            "fail",
            f"{d} is not a directory",
            f"fix {key}",
            nl=(f"{d} is geen map", f"verbeter {key}"),
        )
    if not os.access(d, os.W_OK | os.X_OK):
        return Check(
            key,
            "fail",
            f"directory {d} is not writable by this user ({what} {path})",
            f"make {d} writable for the node's user, or fix {key}",
            nl=(
                f"map {d} is niet schrijfbaar voor deze gebruiker ({path})",
                f"maak {d} schrijfbaar voor de gebruiker van de node, of verbeter {key}",
            ),
        )
    return Check(key, "ok", f"{path}: {what} can be written", nl=(f"{path}: schrijfbaar", ""))


def _load_key(cfg: Config) -> tuple[Check, Ed25519PublicKey | None]:
    try:
        pub = load_private(cfg.key).public_key()
    except KeyError_ as exc:
        return Check(
            "node.key",
            "fail",
            str(exc),
            "create it with `relay keys new NAME` or fix node.key",
            nl=(
                f"sleutel onbruikbaar: {exc}",
                "maak hem met `relay keys new NAAM` of verbeter node.key",
            ),
        ), None
    return Check(
        "node.key",
        "ok",
        f"{cfg.key}: private key readable",
        nl=(f"{cfg.key}: privésleutel leesbaar", ""),
    ), pub


def _load_root(cfg: Config) -> tuple[Check, Ed25519PublicKey | None]:
    try:
        root = load_public(cfg.root)
    except KeyError_ as exc:
        return Check(
            "trust.root",
            "fail",
            str(exc),
            "copy the root authority's .pub file there or fix trust.root",
            nl=(
                f"rootsleutel onbruikbaar: {exc}",
                "zet het .pub-bestand van de root-autoriteit daar, of verbeter trust.root",
            ),
        ), None
    return Check(
        "trust.root",
        "ok",
        f"{cfg.root}: root public key readable",
        nl=(f"{cfg.root}: publieke rootsleutel leesbaar", ""),
    ), root


def _load_roster(
    cfg: Config, root: Ed25519PublicKey | None, now: float
) -> tuple[Check, TrustState | None]:
    if root is None:
        return Check(
            "trust.roster",
            "fail",
            f"{cfg.roster}: not checked (no root key)",
            "fix trust.root first",
            nl=(
                f"{cfg.roster}: niet gecontroleerd (geen rootsleutel)",
                "verbeter eerst trust.root",
            ),
        ), None
    try:
        trust = load_trust(cfg.roster, root, now=now)
    except RosterFileError as exc:
        return Check(
            "trust.roster",
            "fail",
            str(exc),
            "copy the current roster (signed by this root) there or fix trust.roster",
            nl=(
                f"roster onbruikbaar: {exc}",
                "zet de huidige roster (getekend door deze root) daar, of verbeter trust.roster",
            ),
        ), None
    serial = trust.roster.serial if trust.roster else "?"
    return Check(
        "trust.roster",
        "ok",
        f"{cfg.roster}: roster serial {serial}, signed by the root",
        nl=(f"{cfg.roster}: roster serienummer {serial}, getekend door de root", ""),
    ), trust


def _on_roster(cfg: Config, pub: Ed25519PublicKey | None, trust: TrustState | None) -> Check:
    key = "node.name"
    if pub is None or trust is None or trust.roster is None:
        return Check(
            key,
            "fail",
            f"node {cfg.node}: not checked against the roster",
            "fix node.key and trust.roster first",
            nl=(
                f"node {cfg.node}: niet met de roster vergeleken",
                "verbeter eerst node.key en trust.roster",
            ),
        )
    entry = trust.roster.by_name(cfg.node)
    if entry is None:
        return Check(
            key,
            "fail",
            f"node {cfg.node} is not on the roster {cfg.roster}",
            f"add it: `relay roster add ROSTER --name {cfg.node} --role node …`, "
            "then distribute the roster",
            nl=(
                f"node {cfg.node} staat niet op de roster {cfg.roster}",
                f"voeg hem toe: `relay roster add ROSTER --name {cfg.node} --role node …`, "
                "en verspreid de roster",
            ),
        )
    if entry.public_key != raw_public(pub):
        return Check(
            key,
            "fail",
            f"the roster's key for {cfg.node} is not the key in {cfg.key}",
            "use the node's own key file, or add this key to the roster",
            nl=(
                f"de roster heeft voor {cfg.node} een andere sleutel dan {cfg.key}",
                "gebruik het eigen sleutelbestand van de node, of zet deze sleutel op de roster",
            ),
        )
    return Check(
        key,
        "ok",
        f"node {cfg.node} is on the roster with this key",
        nl=(f"node {cfg.node} staat met deze sleutel op de roster", ""),
    )


def run_checks(cfg: Config, *, now: float | None = None) -> list[Check]:
    """What ``relay run`` needs; every failing item names its key and file."""
    now = time.time() if now is None else now
    key_check, pub = _load_key(cfg)
    root_check, root = _load_root(cfg)
    roster_check, trust = _load_roster(cfg, root, now)
    checks = [key_check, root_check, roster_check, _on_roster(cfg, pub, trust)]
    checks.append(check_writable_dir("node.store", cfg.store, "store"))
    checks.append(check_writable_dir("node.sequence", cfg.sequence_file, "sequence file"))
    checks.append(check_writable_dir("api.socket", cfg.api_socket, "API socket"))
    checks.extend(_tls_files(cfg))
    if cfg.metrics_listen is not None:
        checks.append(_metrics_port(*cfg.metrics_listen))
    return checks


def _metrics_port(host: str, port: int) -> Check:
    """The metrics address can be bound (nothing else listens there)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(infos[0][4])
    except OSError as exc:
        return Check(
            "metrics.listen",
            "fail",
            f"cannot listen on {host}:{port}: {exc.strerror}",
            "choose a free port or stop what listens there",
            nl=(
                f"kan niet luisteren op {host}:{port}: {exc.strerror}",
                "kies een vrije poort of stop wat daar luistert",
            ),
        )
    return Check(
        "metrics.listen",
        "ok",
        f"{host}:{port} is free for the metrics endpoint",
        nl=(f"{host}:{port} is vrij voor de metrics", ""),
    )


def _tls_files(cfg: Config) -> Iterator[Check]:
    if cfg.mqtt is None:
        return
    for i, b in enumerate(cfg.mqtt.brokers):
        for name in ("ca", "cert", "key"):
            path: Path | None = getattr(b, name)
            if path is None:
                continue
            key = f"mqtt.broker[{i}].{name}"
            try:
                with path.open("rb"):
                    pass
            except OSError as exc:
                yield Check(
                    key,
                    "fail",
                    f"cannot read {path}: {exc.strerror}",
                    f"copy the file from the broker kit there or fix {key}",
                    nl=(
                        f"kan {path} niet lezen: {exc.strerror}",
                        f"zet het bestand uit de broker-kit daar, of verbeter {key}",
                    ),
                )
            else:
                yield Check(key, "ok", f"{path}: readable", nl=(f"{path}: leesbaar", ""))


def key_mode_checks(cfg: Config) -> Iterator[Check]:
    """Private key files: mode 0600 (no group or other access), owned by this user."""
    files = [("node.key", cfg.key)]
    if cfg.mqtt is not None:
        files += [
            (f"mqtt.broker[{i}].key", b.key)
            for i, b in enumerate(cfg.mqtt.brokers)
            if b.key is not None
        ]
    for key, path in files:
        try:
            st = path.stat()
        except OSError as exc:
            yield Check(
                f"{key} mode",
                "fail",
                f"{path}: {exc.strerror}",
                f"fix {key}",
                nl=(f"{path}: {exc.strerror}", f"verbeter {key}"),
            )
            continue
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            yield Check(
                f"{key} mode",
                "fail",
                f"{path} has mode {mode:04o}: others can read the private key",
                f"chmod 0600 {path}",
                nl=(
                    f"{path} heeft modus {mode:04o}: anderen kunnen de privésleutel lezen",
                    f"chmod 0600 {path}",
                ),
            )
        elif st.st_uid != os.geteuid():
            yield Check(
                f"{key} mode",
                "warn",
                f"{path} is owned by uid {st.st_uid}, not by this user ({os.geteuid()})",
                f"chown relay:relay {path} (the service runs as relay)",
                nl=(
                    f"{path} is van uid {st.st_uid}, niet van deze gebruiker ({os.geteuid()})",
                    f"chown relay:relay {path} (de dienst draait als relay)",
                ),
            )
        else:
            yield Check(
                f"{key} mode",
                "ok",
                f"{path}: mode {mode:04o}, owned by this user",
                nl=(f"{path}: modus {mode:04o}, van deze gebruiker", ""),
            )
