"""mosquitto.conf and ACL text for our topic layout: pure functions, no I/O.

The product kit (``relay broker kit``), the test and drill harness (relay.sim.broker) and the
six-node tests all render their broker configuration here, so what the tests prove is what a
region runs. The reasoning behind each setting is in docs/broker.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CHANNELS",
    "Bridge",
    "BrokerConf",
    "Limits",
    "TlsFiles",
    "bridge_topics",
    "make_bridge",
    "render_acl",
    "render_bridge",
    "render_conf",
]

# The node's topic channels (docs/mqtt.md): each is crisis/<node>/<channel>.
CHANNELS = ("msg", "rcpt", "sync", "status")


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A TLS listener that demands a client certificate and takes its CN as username."""

    ca: Path
    cert: Path
    key: Path
    crl: Path | None = None
    require_certificate: bool = True
    use_identity_as_username: bool = True
    # The client id becomes the username (= certificate CN): nobody can connect with another
    # node's client id, disconnect it and take over its persistent session.
    use_username_as_clientid: bool = True


@dataclass(frozen=True, slots=True)
class Limits:
    """Broker-side rate and size limits (docs/broker.md, "Limits")."""

    # The node refuses inbound payloads over its max_inbound_bytes: the broker need not carry them.
    message_size_limit: int = 4096
    max_inflight_messages: int = 20
    # Catch-up: a node away for a day (its session expiry) finds its decisions, receipts and
    # summaries queued. Status is subscribed with QoS 0, so heartbeats never fill this queue.
    max_queued_messages: int = 10000
    max_queued_bytes: int = 8 * 1024 * 1024
    persistent_client_expiration: str = "14d"


@dataclass(frozen=True, slots=True)
class Bridge:
    """A bridge from this broker to remote ones (mosquitto fails over between ``addresses``
    in order and returns to the first)."""

    name: str  # remote client id; with a certificate, the certificate's CN
    addresses: tuple[tuple[str, int], ...]
    topics: tuple[str, ...] = ("crisis/# both 1",)
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    restart_timeout: str = "1 5"
    keepalive_s: int = 60


# The bridge timing of every bridge we write (kit and drills alike): reconnect after 2 s, backing
# off to 30 s; keepalive 15 s, so a national that went silent (a dead router, no RST) is given up
# after about 1.5 x 15 s and the bridge moves to the next address, instead of after 90 s.
BRIDGE_RESTART_TIMEOUT = "2 30"
BRIDGE_KEEPALIVE_S = 15


def bridge_topics(
    nodes: Sequence[str], *, relay_all: bool = False, prefix: str = "crisis"
) -> tuple[str, ...]:
    """The topic lines of a bridge from a broker whose own nodes are ``nodes``.

    In: every node's topics. Out: only the own nodes' topics, so nothing that came down is ever
    sent back up. ``relay_all`` is for a bridge between two nationals: the regions bridged to
    this broker publish their nodes' traffic on it too, so everything goes both ways (mosquitto's
    ``try_private`` keeps a message from going back over the bridge it came in on).
    """
    if relay_all:
        return tuple(f"{prefix}/+/{c} both 1" for c in CHANNELS)
    # Statuses come down with QoS 0, as nodes subscribe them: a national then queues no
    # heartbeats for an absent bridge session (e.g. the one on the national it fails over to),
    # where they would crowd decisions out of max_queued_messages. Going up they stay QoS 1:
    # a node's Last Will must reach the nationals even if the bridge is down when it fires.
    return tuple(f"{prefix}/+/{c} in {0 if c == 'status' else 1}" for c in CHANNELS) + tuple(
        f"{prefix}/{n}/{c} out 1" for n in nodes for c in CHANNELS
    )


def make_bridge(
    name: str,
    addresses: Sequence[tuple[str, int]],
    *,
    nodes: Sequence[str],
    relay_all: bool = False,
    prefix: str = "crisis",
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> Bridge:
    """The bridge of a regional broker (or of one national to the other) to ``addresses``, in
    failover order: what ``relay broker kit --bridge-to`` writes and what a drill runs."""
    return Bridge(
        name=name,
        addresses=tuple(addresses),
        topics=bridge_topics(nodes, relay_all=relay_all, prefix=prefix),
        ca=ca,
        cert=cert,
        key=key,
        restart_timeout=BRIDGE_RESTART_TIMEOUT,
        keepalive_s=BRIDGE_KEEPALIVE_S,
    )


@dataclass(frozen=True, slots=True)
class BrokerConf:
    """Everything one mosquitto process needs."""

    port: int
    bind: str | None = None
    tls: TlsFiles | None = None
    acl_file: Path | None = None
    persistence_dir: Path | None = None
    autosave_interval_s: int | None = None
    log_file: Path | None = None
    log_types: tuple[str, ...] = ("error", "warning", "notice", "information")
    user: str | None = None
    limits: Limits | None = None
    max_packet_size: int | None = None
    bridges: tuple[Bridge, ...] = ()
    extra: tuple[str, ...] = field(default=())
    header: str = "generated by relay"


def render_acl(
    prefix: str = "crisis", *, bridge_users: Sequence[str] = (), channels: Sequence[str] = CHANNELS
) -> str:
    """The ACL: each node (username = certificate CN) writes only its own topics and reads every
    node's; a bridge user carries everything between brokers."""
    lines = [
        "# Written by relay broker kit (docs/broker.md). Usernames are certificate CNs.",
        "# 'pattern' lines apply to every user (%u = username); 'topic' lines before any",
        "# 'user' line would apply to anonymous clients only, and there are none.",
        "# A node writes only its own topics: nobody can publish decisions, receipts, summaries",
        "# or a status (or Last Will) in another node's name.",
        *(f"pattern write {prefix}/%u/{c}" for c in channels),
        "# Its liveness probe echoes back to itself alone.",
        f"pattern readwrite {prefix}/%u/probe",
        "# It reads what every node publishes (never another node's probe).",
        *(f"pattern read {prefix}/+/{c}" for c in channels),
    ]
    for user in bridge_users:
        lines += [
            "",
            "# Bridge from a regional broker: it relays every node's topics in both directions.",
            f"user {user}",
            *(f"topic readwrite {prefix}/+/{c}" for c in channels),
        ]
    return "\n".join(lines) + "\n"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def render_bridge(b: Bridge) -> list[str]:
    """The ``connection`` stanza of one bridge (docs/broker.md, "Topology")."""
    lines = [
        f"connection {b.name}",
        "addresses " + " ".join(f"{h}:{p}" for h, p in b.addresses),
        # Connect to the first address; on failure go to the next, and keep returning to the
        # first while on a later one.
        "round_robin false",
        "start_type automatic",
        # FACTS.md: a v5 bridge of mosquitto 2.0 loses what is published towards it while
        # it is down; v3.1.1 with a persistent session keeps it.
        "bridge_protocol_version mqttv311",
        "cleansession false",
        f"remote_clientid {b.name}",
        f"local_clientid {b.name}-local",
        "try_private true",
        "notifications false",
        f"keepalive_interval {b.keepalive_s}",
        f"restart_timeout {b.restart_timeout}",
        *(f"topic {t}" for t in b.topics),
    ]
    if b.ca is not None:
        lines += [f"bridge_cafile {b.ca}", "bridge_insecure false"]
    if b.cert is not None and b.key is not None:
        lines += [f"bridge_certfile {b.cert}", f"bridge_keyfile {b.key}"]
    return lines


def render_conf(conf: BrokerConf) -> str:
    """Return the mosquitto.conf text for ``conf``."""
    lines = [f"# {conf.header}", "per_listener_settings false"]
    if conf.user is not None:
        lines.append(f"user {conf.user}")
    if conf.log_file is not None:
        lines.append(f"log_dest file {conf.log_file}")
    else:
        lines.append("log_dest stderr")
    lines += [*(f"log_type {t}" for t in conf.log_types)]
    lines += [
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        "connection_messages true",
        "set_tcp_nodelay true",
    ]
    if conf.persistence_dir is not None:
        lines += ["persistence true", f"persistence_location {conf.persistence_dir}/"]
        if conf.autosave_interval_s is not None:
            lines.append(f"autosave_interval {conf.autosave_interval_s}")
    else:
        lines.append("persistence false")
    if conf.limits is not None:
        lim = conf.limits
        lines += [
            f"message_size_limit {lim.message_size_limit}",
            f"max_inflight_messages {lim.max_inflight_messages}",
            f"max_queued_messages {lim.max_queued_messages}",
            f"max_queued_bytes {lim.max_queued_bytes}",
            f"persistent_client_expiration {lim.persistent_client_expiration}",
        ]
    if conf.max_packet_size is not None:
        lines.append(f"max_packet_size {conf.max_packet_size}")
    lines.append(f"listener {conf.port}" + (f" {conf.bind}" if conf.bind else ""))
    if conf.tls is None:
        lines.append("allow_anonymous true")
    else:
        tls = conf.tls
        lines += [
            "allow_anonymous false",
            f"cafile {tls.ca}",
            f"certfile {tls.cert}",
            f"keyfile {tls.key}",
            "tls_version tlsv1.2",
            f"require_certificate {_bool(tls.require_certificate)}",
            f"use_identity_as_username {_bool(tls.use_identity_as_username)}",
            f"use_username_as_clientid {_bool(tls.use_username_as_clientid)}",
        ]
        if tls.crl is not None:
            lines.append(f"crlfile {tls.crl}")
    if conf.acl_file is not None:
        lines.append(f"acl_file {conf.acl_file}")
    for b in conf.bridges:
        lines += render_bridge(b)
    lines += list(conf.extra)
    return "\n".join(lines) + "\n"
