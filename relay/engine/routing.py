"""Routing policy as pure functions (docs/failover.md): which links a message goes out on, the
best link at the time of sending, a gateway's turn to bridge, and who depends on the mesh.

Each function looks at a ``Net``: our links and their health, and when roster nodes were last
heard where. The engine keeps one ``Net`` whose tables are its own live ones; tests build them
from literals.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from relay.engine.health import LinkHealth
from relay.engine.model import LinkInfo
from relay.engine.outbox import ANY_LINK
from relay.envelope import Audience, Decision, Kind, Precedence, encode_payload
from relay.trust import Roster
from relay.vocab import LinkKind, LinkState

SHOWN_KINDS = frozenset({Kind.DECISION, Kind.NOTICE, Kind.CANCEL, Kind.SUPERSEDE})
TRUST_KINDS = frozenset({Kind.ROSTER, Kind.REVOCATION})
KIND_RANK = {LinkKind.MQTT: 0, LinkKind.MESH: 1}  # MQTT before mesh

Targets = list[tuple[str, float]]  # (link or ANY_LINK, delay before the first send)


@dataclass(frozen=True, slots=True)
class Net:
    """What routing looks at. The mappings are read, never changed, here."""

    node: str  # our own name
    links: Mapping[str, LinkInfo]
    health: Mapping[str, LinkHealth]
    mqtt_peers: Mapping[str, float]  # roster node -> last heard on MQTT
    gateway_peers: Mapping[str, float]  # nodes whose status says they bridge to a mesh
    mesh_peers: Mapping[str, float]  # roster nodes last heard signing on a mesh link
    peer_timeout_s: float  # a node not heard on MQTT for this long counts as cut off

    def kind(self, link: str) -> LinkKind | None:
        info = self.links.get(link)
        return info.kind if info is not None else None

    def usable(self, link: str, now: float) -> bool:
        return self.health[link].usable(now)

    def of_kind(self, kind: LinkKind) -> list[str]:
        return [n for n, info in self.links.items() if info.kind == kind]


def audience_of(d: Decision) -> Audience:
    """Who a message is for: trust (rosters, revocations) is for everyone."""
    return Audience.all() if d.kind in TRUST_KINDS else d.audience


def receipt_needs_row(net: Net, link: str) -> bool:
    """Does our receipt owed on ``link`` get an outbox row? Not on MQTT: lost in a crash before
    its PUBACK, it goes again when the sender retries (a duplicate resends it), which spares a
    row written and one deleted per receipt (docs/mqtt.md). A mesh keeps it: airtime is scarce
    and a radio origin retries slowly."""
    return net.kind(link) != LinkKind.MQTT


def best_link(net: Net, now: float, skip: Collection[str] = frozenset()) -> str | None:
    """The usable link to send on: MQTT before mesh, ``up`` before ``degraded``, then the
    order the links were configured in."""
    usable = [
        (KIND_RANK.get(info.kind, 9), net.health[name].effective(now) != LinkState.UP, i, name)
        for i, (name, info) in enumerate(net.links.items())
        if net.usable(name, now) and name not in skip
    ]
    return min(usable)[3] if usable else None


def bridge_turn(net: Net, d: Decision, now: float) -> int:
    """Our place among the gateways heard on MQTT lately, in an order all of them agree on
    for this message, so they take turns instead of all sending at once. (Random delays
    alone fail at LONG_FAST: a frame is on the air for seconds, and two gateways whose
    delays fall within that time both send.)"""
    cutoff = now - net.peer_timeout_s
    others = {n for n, t in net.gateway_peers.items() if t >= cutoff}
    salt = hashlib.sha256(encode_payload(d)).digest()
    order = sorted(others | {net.node}, key=lambda n: hashlib.sha256(salt + n.encode()).digest())
    return order.index(net.node)


def mesh_only(net: Net, node: str, now: float) -> bool:
    """Can we reach ``node`` only by mesh? Yes when it has not been heard on MQTT within
    ``peer_timeout_s`` (or never: a radio-only post), or when it was heard signing on the
    mesh since it was last heard on MQTT."""
    mqtt = net.mqtt_peers.get(node, float("-inf"))
    return mqtt < now - net.peer_timeout_s or net.mesh_peers.get(node, mqtt) > mqtt


def mesh_pending(net: Net, recipients: Iterable[str], now: float) -> set[str]:
    """Of these recipients (who have not signed), the ones only the mesh reaches."""
    return {n for n in recipients if mesh_only(net, n, now)}


def retry_reaches_nobody(net: Net, unsigned: Iterable[str], now: float) -> bool:
    """Would a retry on MQTT reach none of the recipients that have not signed? Yes when we hear
    other nodes' heartbeats there but none of those lately: they are cut off, or radio-only
    posts that their gateway serves. A node that hears nobody on MQTT says no (as before)."""
    cutoff = now - net.peer_timeout_s
    heard = net.mqtt_peers
    if any(heard.get(n, cutoff - 1) >= cutoff for n in unsigned):
        return False
    return any(t >= cutoff for n, t in heard.items() if n != net.node)


def asks_returned(net: Net, returned: str, askers: int, now: float) -> bool:
    """Do we send our summary to ``returned``, back on MQTT? Every subscriber sees the answers
    to anyone's summary, so a few askers serve everyone: each node asks with probability
    ``askers`` / (nodes heard on MQTT lately), by a hash of both names (the same choice on
    every call). Otherwise a region back after a cut has every node of the country summarise
    to it at once (docs/scale.md). With ``askers`` or fewer nodes heard (or 0), always."""
    cutoff = now - net.peer_timeout_s
    alive = sum(1 for t in net.mqtt_peers.values() if t >= cutoff)
    if askers <= 0 or alive <= askers:
        return True
    digest = hashlib.sha256(f"{returned}\0{net.node}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < (askers << 64) // alive


def mesh_needed(
    net: Net,
    d: Decision,
    roster: Roster | None,
    now: float,
    *,
    arrived_by: Callable[[bytes], LinkKind | None],
) -> bool:
    """Does a node that should get this message depend on the mesh right now? (For a
    receipt: did what it acknowledges come from the mesh; ``arrived_by`` says how a held
    message arrived, None when it is not held.)"""
    if d.kind == Kind.ACK:
        return any(arrived_by(ref) == LinkKind.MESH for ref in d.refs)
    if roster is None:
        return False
    cutoff = now - net.peer_timeout_s
    return any(
        net.mqtt_peers.get(node, float("-inf")) < cutoff
        for node in roster.recipients(audience_of(d))
        if node != net.node
    )


def missed_by(
    net: Net, d: Decision, roster: Roster, signed: Collection[str], newly_quiet: set[str]
) -> set[str]:
    """Nodes that have just gone quiet on MQTT, should get this message and have not signed
    for it: a gateway bridges it into its meshes for them."""
    return (newly_quiet & set(roster.recipients(audience_of(d)))) - set(signed) - {net.node}


def mesh_targets(
    net: Net, d: Decision | None, roster: Roster | None, now: float, *, peer_grace_s: float
) -> Targets:
    """Own non-FLASH decision: besides "the best link", one entry per mesh link when a
    recipient is reachable only by mesh (docs/failover.md). Without this a gateway sends its
    own decision by MQTT alone, and nobody bridges it to its region's radio-only posts.
    Right after MQTT came up the peers' statuses may not all be in: the entry then waits
    until ``peer_grace_s`` after that, and is dropped if every such node has been heard on
    MQTT meanwhile (``Delivery.pump``)."""
    meshes = net.of_kind(LinkKind.MESH)
    has_mqtt = bool(net.of_kind(LinkKind.MQTT))
    if d is None or d.kind not in SHOWN_KINDS or roster is None or not meshes or not has_mqtt:
        return []  # without MQTT "the best link" is a mesh link already
    members = set(roster.recipients(d.audience)) - {net.node}
    if not any(mesh_only(net, n, now) for n in members):
        return []
    heard_from = [
        h.usable_since
        for n, h in net.health.items()
        if net.links[n].kind == LinkKind.MQTT and h.usable(now) and h.usable_since is not None
    ]
    grace_end = min(heard_from) + peer_grace_s if heard_from else now
    return [(n, max(0.0, grace_end - now)) for n in meshes]


def targets(
    net: Net,
    precedence: Precedence,
    d: Decision | None,
    *,
    origin: bool,
    arrived: str | None,
    now: float,
    mesh_first: Callable[[], Targets],
    mesh_is_needed: Callable[[], bool],
    bridge_delay: Callable[[], float],
) -> Targets:
    """Outbox entries for a new message: (link or ANY_LINK, delay before the first send).

    * Our own: FLASH on every link at once; otherwise the best link at the time of sending,
      plus ``mesh_first()`` (``mesh_targets``).
    * Fresh from a mesh: bridged to every usable MQTT link.
    * From MQTT, when ``mesh_is_needed()``: into every mesh, each after ``bridge_delay()``
      (our turn times the slot, plus jitter), so several gateways do not all transmit it.
    """
    if not net.links:
        return []
    if origin:
        if precedence == Precedence.FLASH:
            return [(name, 0.0) for name in net.links]
        return [(ANY_LINK, 0.0), *mesh_first()]
    arrived_kind = net.kind(arrived) if arrived else None
    if arrived_kind == LinkKind.MESH:
        # Bridge fresh mesh traffic to MQTT; what MQTT missed meanwhile, healing catches up.
        return [(n, 0.0) for n in net.of_kind(LinkKind.MQTT) if net.usable(n, now)]
    if arrived_kind == LinkKind.MQTT and d is not None and mesh_is_needed():
        return [(n, bridge_delay()) for n in net.of_kind(LinkKind.MESH)]
    return []
