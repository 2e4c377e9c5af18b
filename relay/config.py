"""relay.toml: loading and validation. Every error names the key and the problem.

Relative paths of files the node only reads (key, root, roster, TLS files) are resolved against the
directory of the config file, so a node's directory can be moved as a whole. Relative paths of state
the node writes (``node.store``, ``api.socket``) are resolved against the state directory:
``node.state_dir`` when given, else ``$STATE_DIRECTORY`` (systemd sets it for a unit with
``StateDirectory=``), else the config file's directory. See docs/config.md for every key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relay import airtime, tomlcheck
from relay.links.mqtt_config import BrokerConfig, MqttSettings, connect_timeout_for
from relay.links.status_mailbox import STATUS_BACKLOG
from relay.tomlcheck import KeyPath, TomlProblem

DEFAULT_MQTT_PORT = 1883
DEFAULT_MQTTS_PORT = 8883
STATE_DIRECTORY_ENV = "STATE_DIRECTORY"  # systemd: StateDirectory= (docs/config.md, Paths)


class ConfigError(Exception):
    """The configuration is invalid; the message names the key (``path``, when known), and
    ``load`` puts the file and line in front: ``relay.toml:12: mqtt.broker[0].url: …``."""

    def __init__(self, message: str, *, path: KeyPath | None = None) -> None:
        super().__init__(message)
        self.path = path


def _section(section: str) -> KeyPath:
    """``"mqtt.broker[0]"`` -> ``("mqtt", "broker", 0)``; ``"top level"`` -> ``()``."""
    path = tomlcheck.key_path(section)
    return () if path is None else path


def _problem(p: TomlProblem) -> ConfigError:
    return ConfigError(str(p), path=p.path)


@dataclass(frozen=True, slots=True)
class RadioEntry:
    name: str
    tcp: tuple[str, int] | None = None
    serial: str | None = None
    preset: str = "LONG_FAST"  # the mesh's modem preset: airtime, fragment timing, gateway slots


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    node: str
    key: Path
    regions: frozenset[str]
    store: Path
    root: Path
    roster: Path
    api_socket: Path
    mqtt: MqttSettings | None  # [mqtt] and [[mqtt.broker]], exactly what the MQTT link takes
    radios: tuple[RadioEntry, ...] = ()
    max_messages: int = 20_000
    max_inbound_bytes: int = 4096
    skew_s: int = 6 * 3600
    log_level: str = "info"
    log_format: str = "json"
    drill_window: tuple[float, float] | None = None  # unix seconds; exercise traffic only inside
    metrics_listen: tuple[str, int] | None = None  # [metrics] listen: Prometheus endpoint
    extra: dict[str, Any] = field(default_factory=dict)
    state_dir: Path | None = None  # what relative state paths were resolved against
    sequence: Path | None = None  # the node's own signing counter; None: beside the store
    pq: str = "prefer"  # [trust] pq: "off" | "prefer" | "require" (relay.pq.Policy)

    @property
    def sequence_file(self) -> Path:
        return self.sequence if self.sequence is not None else self.store.with_suffix(".seq")


def _table(doc: dict[str, Any], key: str, *, required: bool = True) -> dict[str, Any]:
    try:
        return tomlcheck.table(doc, (), key, required=required)
    except TomlProblem as p:
        raise _problem(p) from None


def _str(t: dict[str, Any], section: str, key: str, default: str | None = None) -> str:
    try:
        return tomlcheck.string(t, _section(section), key, default)
    except TomlProblem as p:
        raise _problem(p) from None


def _num(
    t: dict[str, Any], section: str, key: str, default: float, *, lo: float, hi: float
) -> float:
    try:
        return tomlcheck.number(t, _section(section), key, default, lo=lo, hi=hi)
    except TomlProblem as p:
        raise _problem(p) from None


def _path(
    base: Path, t: dict[str, Any], section: str, key: str, default: str | None = None
) -> Path:
    p = Path(_str(t, section, key, default)).expanduser()
    return p if p.is_absolute() else base / p


def _unknown(t: dict[str, Any], section: str, known: set[str]) -> None:
    try:
        tomlcheck.known(t, _section(section), known)
    except TomlProblem as p:
        raise _problem(p) from None


def _broker(base: Path, i: int, b: Any) -> BrokerConfig:
    sec = f"mqtt.broker[{i}]"
    if not isinstance(b, dict):
        raise ConfigError(f"{sec}: must be a table")
    _unknown(b, sec, {"url", "ca", "cert", "key", "username", "password"})
    url = _str(b, sec, "url")
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"{sec}.url: scheme must be mqtt:// or mqtts://, got {url!r}")
    if not parts.hostname:
        raise ConfigError(f"{sec}.url: no host in {url!r}")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ConfigError(f"{sec}.url: bad port in {url!r}") from exc
    tls = parts.scheme == "mqtts"
    paths = {k: _path(base, b, sec, k) if k in b else None for k in ("ca", "cert", "key")}
    if (paths["cert"] is None) != (paths["key"] is None):
        raise ConfigError(f"{sec}: cert and key go together (client certificate)")
    if not tls and any(paths.values()):
        raise ConfigError(f"{sec}: ca/cert/key need an mqtts:// url")
    try:
        return BrokerConfig(
            url=url,
            ca=paths["ca"],
            cert=paths["cert"],
            key=paths["key"],
            username=b.get("username"),
            password=b.get("password"),
        )
    except ValueError as exc:  # what the checks above let through (a path in the url, ...)
        raise ConfigError(f"{sec}: {exc}") from None


def _check_identity(node: str, mqtt: MqttSettings, client_id: object) -> None:
    """The MQTT client id is the node name, and so are a broker's username and the CN of the
    node's client certificate: with the broker kit's ``use_username_as_clientid`` the client id
    *is* the certificate's CN, and a node under another id would publish where the ACL refuses
    it, or take over another node's persistent session (docs/broker.md)."""
    if client_id is not None and client_id != node:
        raise ConfigError(
            f"mqtt.client_id: {client_id!r} is not the node name {node!r}: the client id must be"
            " the node name"
        )
    from relay.kit.pki import PkiError, common_name, load_cert

    for i, b in enumerate(mqtt.brokers):
        if b.username is not None and b.username != node:
            raise ConfigError(
                f"mqtt.broker[{i}].username: {b.username!r} is not the node name {node!r}"
            )
        if b.cert is not None and b.cert.exists():
            try:
                cn = common_name(load_cert(b.cert))
            except PkiError as exc:
                raise ConfigError(f"mqtt.broker[{i}].cert: {exc}") from exc
            if cn != node:
                raise ConfigError(
                    f"mqtt.broker[{i}].cert: certificate is for {cn!r}, not the node {node!r}:"
                    " the broker would make that the client id"
                )


def _mqtt(
    base: Path, doc: dict[str, Any], node: str, max_inbound_bytes: int
) -> MqttSettings | None:
    t = _table(doc, "mqtt", required=False)
    if not t:
        return None
    known = {"broker", "protocol", "topic_prefix", "session_expiry", "keepalive",
             "probe_interval", "probe_timeout", "client_id", "inbound_queue",
             "status_backlog"}  # fmt: skip
    _unknown(t, "mqtt", known)
    brokers = t.get("broker")
    if not isinstance(brokers, list) or not brokers:
        raise ConfigError("mqtt.broker: at least one [[mqtt.broker]] with a url is required")
    protocol = _str(t, "mqtt", "protocol", "v5")
    if protocol not in ("v5", "v311"):
        raise ConfigError(f"mqtt.protocol: must be 'v5' or 'v311', got {protocol!r}")
    prefix = _str(t, "mqtt", "topic_prefix", "crisis")
    if any(c in prefix for c in "#+") or prefix.endswith("/"):
        raise ConfigError(f"mqtt.topic_prefix: {prefix!r} may not contain wildcards or end in /")
    interval = _num(t, "mqtt", "probe_interval", 1.0, lo=0.1, hi=60)
    timeout = _num(t, "mqtt", "probe_timeout", 3.0, lo=0.2, hi=120)
    if timeout <= interval:
        raise ConfigError("mqtt.probe_timeout: must be longer than mqtt.probe_interval")
    try:
        return MqttSettings(
            node=node,
            brokers=tuple(_broker(base, i, b) for i, b in enumerate(brokers)),
            protocol="v311" if protocol == "v311" else "v5",
            topic_prefix=prefix,
            session_expiry_s=int(_num(t, "mqtt", "session_expiry", 86400, lo=60, hi=2**32 - 1)),
            keepalive_s=int(_num(t, "mqtt", "keepalive", 30, lo=5, hi=65535)),
            probe_interval_s=interval,
            probe_timeout_s=timeout,
            connect_timeout_s=connect_timeout_for(timeout),
            max_inbound_bytes=max_inbound_bytes,
            inbound_queue=int(_num(t, "mqtt", "inbound_queue", 1000, lo=10, hi=65535)),
            status_backlog=int(
                _num(t, "mqtt", "status_backlog", STATUS_BACKLOG, lo=16, hi=1_000_000)
            ),
        )
    except ValueError as exc:  # e.g. a node name that cannot be an MQTT client id
        raise ConfigError(f"mqtt: {exc}") from None


def _radios(doc: dict[str, Any]) -> tuple[RadioEntry, ...]:
    t = _table(doc, "mesh", required=False)
    if not t:
        return ()
    _unknown(t, "mesh", {"radio"})
    radios = t.get("radio")
    if not isinstance(radios, list) or not radios:
        raise ConfigError("mesh.radio: at least one [[mesh.radio]] is required")
    out = []
    for i, r in enumerate(radios):
        sec = f"mesh.radio[{i}]"
        if not isinstance(r, dict):
            raise ConfigError(f"{sec}: must be a table")
        _unknown(r, sec, {"tcp", "serial", "name", "preset"})
        if ("tcp" in r) == ("serial" in r):
            raise ConfigError(f'{sec}: give exactly one of tcp = "HOST:PORT" or serial = "/dev/…"')
        name = _str(r, sec, "name", f"mesh{i}" if i else "mesh")
        given = _str(r, sec, "preset", "LONG_FAST")
        try:
            preset = airtime.preset(given).name  # "LongFast" (as the apps show it) works too
        except KeyError:
            known = ", ".join(airtime.PRESETS)
            raise ConfigError(
                f"{sec}.preset: unknown modem preset {given!r}; one of {known}"
            ) from None
        if "tcp" in r:
            host, _, port = _str(r, sec, "tcp").rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"{sec}.tcp: expected HOST:PORT, got {r['tcp']!r}")
            out.append(RadioEntry(name, tcp=(host, int(port)), preset=preset))
        else:
            out.append(RadioEntry(name, serial=_str(r, sec, "serial"), preset=preset))
    return tuple(out)


def _drill_window(doc: dict[str, Any]) -> tuple[float, float] | None:
    """``[drill] window = [START, END]``: ISO 8601 times with a UTC offset, START before END."""
    t = _table(doc, "drill", required=False)
    _unknown(t, "drill", {"window"})
    if "window" not in t:
        return None
    value = t["window"]
    example = '["2026-12-01T09:00:00+01:00", "2026-12-01T17:00:00+01:00"]'
    if not isinstance(value, list) or len(value) != 2:
        raise ConfigError(f"drill.window: must be a list of two times, e.g. {example}")
    bounds: list[float] = []
    for i, item in enumerate(value):
        if isinstance(item, datetime):  # a bare TOML datetime
            when = item
        elif isinstance(item, str):
            try:
                when = datetime.fromisoformat(item)
            except ValueError:
                raise ConfigError(
                    f"drill.window[{i}]: {item!r} is not an ISO 8601 time, e.g. {example}"
                ) from None
        else:
            raise ConfigError(f"drill.window[{i}]: must be a time string, got {item!r}")
        if when.tzinfo is None or when.utcoffset() is None:
            raise ConfigError(
                f"drill.window[{i}]: {item!s} has no UTC offset; write e.g. +01:00 or Z"
            )
        bounds.append(when.timestamp())
    if bounds[0] >= bounds[1]:
        raise ConfigError("drill.window: the start must be before the end")
    return bounds[0], bounds[1]


def _metrics(doc: dict[str, Any]) -> tuple[str, int] | None:
    """``[metrics] listen = "127.0.0.1:9108"``: where the Prometheus endpoint listens."""
    t = _table(doc, "metrics", required=False)
    _unknown(t, "metrics", {"listen"})
    if "listen" not in t:
        return None
    host, _, port = _str(t, "metrics", "listen").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f'metrics.listen: expected "HOST:PORT", got {t["listen"]!r}')
    return host.strip("[]"), int(port)


def _state_dir(base: Path, node: dict[str, Any], environ: Mapping[str, str] | None) -> Path:
    """Where relative state paths (store, API socket) go: ``node.state_dir``, else the first
    directory of ``$STATE_DIRECTORY`` (systemd may list several, separated by colons), else the
    config file's directory."""
    if "state_dir" in node:
        return _path(base, node, "node", "state_dir")
    env = os.environ if environ is None else environ
    first = env.get(STATE_DIRECTORY_ENV, "").split(":")[0]
    if first:
        state = Path(first)
        if not state.is_absolute():
            raise ConfigError(f"${STATE_DIRECTORY_ENV}: must be an absolute path, got {first!r}")
        return state
    return base


def load(path: Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and check ``path``; an error names the file, the line and the key."""
    try:
        text = path.read_text()
        doc = tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(tomlcheck.syntax_error(exc, str(path))) from exc
    try:
        return parse(doc, path, environ=environ)
    except ConfigError as exc:
        # The key is the error's path, or the key path its message starts with.
        key = exc.path if exc.path is not None else tomlcheck.key_path(str(exc).split(": ")[0])
        line = tomlcheck.Lines(text).find(key) if key else None
        if line is None:
            raise
        raise ConfigError(f"{path}:{line}: {exc}", path=key) from exc


def parse(doc: dict[str, Any], path: Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """``environ`` (default ``os.environ``) supplies ``$STATE_DIRECTORY``."""
    base = path.resolve().parent
    known = {"node", "trust", "mqtt", "mesh", "api", "log", "drill", "console", "metrics"}
    _unknown(doc, "top level", known)
    node = _table(doc, "node")
    _unknown(node, "node", {"name", "key", "regions", "store", "max_messages", "max_inbound_bytes",
                            "clock_skew", "state_dir", "sequence"})  # fmt: skip
    state = _state_dir(base, node, environ)
    name = _str(node, "node", "name")
    if len(name) > 64 or any(c in name for c in "/#+ "):
        raise ConfigError(f"node.name: {name!r} may not contain / # + or spaces (MQTT topics)")
    regions = node.get("regions", [])
    if not isinstance(regions, list) or not all(isinstance(r, str) and r for r in regions):
        raise ConfigError('node.regions: must be a list of region codes, e.g. ["VR07"]')
    trust = _table(doc, "trust")
    _unknown(trust, "trust", {"root", "roster", "pq"})
    pq = _str(trust, "trust", "pq", "prefer")
    if pq not in ("off", "prefer", "require"):
        raise ConfigError(f'trust.pq: must be "off", "prefer" or "require", got {pq!r}')
    if pq == "require" and _num(node, "node", "max_inbound_bytes", 4096, lo=256, hi=65536) < 3799:
        raise ConfigError(
            'trust.pq = "require" needs node.max_inbound_bytes of at least 3799: an ML-DSA-44 '
            "attestation is 3,799 B, and every PQ issuer's decision would stay pending"
        )
    api = _table(doc, "api", required=False)
    _unknown(api, "api", {"socket"})
    log = _table(doc, "log", required=False)
    _unknown(log, "log", {"level", "format"})
    level = _str(log, "log", "level", "info").lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log.level: must be debug, info, warning or error, got {level!r}")
    fmt = _str(log, "log", "format", "json")
    if fmt not in ("json", "console"):
        raise ConfigError(f"log.format: must be 'json' or 'console', got {fmt!r}")
    max_inbound = int(_num(node, "node", "max_inbound_bytes", 4096, lo=256, hi=65536))
    mqtt = _mqtt(base, doc, name, max_inbound)
    if mqtt is not None:
        _check_identity(name, mqtt, _table(doc, "mqtt").get("client_id"))
    radios = _radios(doc)
    if mqtt is None and not radios:
        raise ConfigError("no links: configure [[mqtt.broker]] and/or [[mesh.radio]]")
    return Config(
        path=path,
        node=name,
        key=_path(base, node, "node", "key"),
        regions=frozenset(regions),
        store=_path(state, node, "node", "store", "var/relay.db"),
        root=_path(base, trust, "trust", "root"),
        roster=_path(base, trust, "trust", "roster"),
        api_socket=_path(state, api, "api", "socket", "var/relay.sock"),
        mqtt=mqtt,
        radios=radios,
        max_messages=int(_num(node, "node", "max_messages", 20_000, lo=10, hi=10_000_000)),
        max_inbound_bytes=max_inbound,
        skew_s=int(_num(node, "node", "clock_skew", 6 * 3600, lo=0, hi=7 * 86400)),
        log_level=level,
        log_format=fmt,
        drill_window=_drill_window(doc),
        metrics_listen=_metrics(doc),
        extra={"drill": doc.get("drill", {}), "console": _table(doc, "console", required=False)},
        state_dir=state,
        sequence=_path(state, node, "node", "sequence") if "sequence" in node else None,
        pq=pq,
    )
