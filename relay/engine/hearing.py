"""Hearing peers: who was heard on which link, their signed statuses, and the readings of their
clocks that those statuses carry. Pure: time is passed in.

The peer table itself is relay.engine.peers; the status's verification relay.engine.status; the
clock evidence relay.engine.clock. ``Hearing`` is the glue between them and the engine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator

from relay.engine.clock import TrustedTime
from relay.engine.config import EngineConfig
from relay.engine.healing import SyncState
from relay.engine.ops import Action, Persist, PutPeerCheckpoint, Rejected
from relay.engine.peers import PeerTable
from relay.engine.routing import Net, asks_returned
from relay.engine.status import PeerStatus, check_status
from relay.envelope import Rejection
from relay.trust import Role, TrustState
from relay.vocab import LinkKind


class Hearing:
    """Notes peers heard, takes their statuses in, and their clocks as evidence about ours."""

    def __init__(
        self,
        *,
        config: EngineConfig,
        trust: TrustState,
        peers: PeerTable,
        net: Net,
        links: Collection[str],
        sync: SyncState,
        time: TrustedTime,
        counters: Counter[str],
        rejections: Counter[str],
        tokens: Iterator[int],
    ) -> None:
        self.config = config
        self._trust = trust
        self._peers = peers
        self._net = net
        self._links = links
        self._sync = sync
        self._time = time
        self.counters = counters
        self.rejections = rejections
        self._tokens = tokens

    def peer_heard(self, link: str, node: str, now: float, *, gateway: bool | None = None) -> None:
        """A node was heard on a link (any message or status it published). ``gateway``: its
        status says whether it has a usable mesh link besides MQTT (None: not stated).

        Only nodes on the roster become peers (a topic name is no proof of anything), and the
        table holds at most ``max_peers``: a new one evicts the least recently heard."""
        if not self._peers.admit(node, self._trust.roster):
            return
        self._peers.heard[node] = now
        if self._net.kind(link) == LinkKind.MQTT:
            before = self._peers.heard_on_mqtt(node, now, gateway=gateway)
            back = before < now - self.config.peer_timeout_s  # new, or back from a partition
            if (
                back
                and link in self._links
                and node != self.config.node
                and asks_returned(self._net, node, self.config.heal.return_askers, now)
            ):
                self._sync.peer_returned(link, node, now)

    def observe_clock(self, source: str, their_time: float, now: float) -> None:
        """A peer's verified status said its clock read ``their_time`` (roster nodes only)."""
        self._time.saw(now)
        if source != self.config.node and (roster := self._trust.roster) is not None:
            entry = roster.by_name(source)
            if entry is not None and entry.role == Role.NODE:
                self._time.evidence.observe_point(source, their_time, now)

    def status_received(self, link: str, peer: str, raw: bytes, now: float) -> list[Action]:
        """A status published on ``peer``'s status topic (relay.engine.status): verified, then
        the peer is heard (gateway or not); a forged, unsigned or stale one is rejected."""
        self.counters["statuses"] += 1
        self._time.saw(now)

        def observe(signer: str, issued_at: int) -> None:
            # A verified status is a reading of its signer's clock when it was sent, a point of
            # evidence about ours (relay.engine.clock); noted before the time checks, which
            # would otherwise reject every status while our own clock is far off.
            if signer == peer:
                self.observe_clock(signer, float(issued_at), now)

        heard = self._time.check(
            now,
            lambda at, first: check_status(
                self._trust,
                peer,
                raw,
                at,
                last_issued=self._peers.status_issued.get(peer, {}),
                max_bytes=self.config.max_inbound_bytes,
                observe=observe if first else None,
            ),
        )
        if isinstance(heard, Rejection):
            # Counted and logged, not audited: a broker can hold thousands of retained statuses
            # and hands them all over on every connect.
            self.counters["statuses_rejected"] += 1
            self.rejections[str(heard.reason)] += 1
            return [Rejected(link, heard.reason, f"status: {heard.detail}", None)]
        if not self._peers.admit(
            peer, self._trust.roster
        ):  # checked by the trust rules already; kept for the bound
            return []
        self._peers.status_issued.setdefault(peer, {})[str(heard.fields["state"])] = heard.issued_at
        self._peers.statuses[peer] = {**heard.fields, "heard_at": now}
        if heard.online:
            gateway = heard.fields.get("gateway")
            self.peer_heard(link, peer, now, gateway=gateway if isinstance(gateway, bool) else None)
        else:
            self._peers.heard.setdefault(peer, now)  # keeps the status table inside the same bound
        return self._peer_checkpoint(peer, heard, raw, now)

    def _peer_checkpoint(
        self, peer: str, heard: PeerStatus, raw: bytes, now: float
    ) -> list[Action]:
        """Keep the audit checkpoint a status carries when its chain moved since the last one
        kept (a heartbeat every few seconds repeats it otherwise; docs/store.md)."""
        audit = heard.audit
        if audit is None or self._peers.audit.get(peer) == audit.n:
            return []
        self._peers.audit[peer] = audit.n
        op = PutPeerCheckpoint(peer, audit.n, audit.head, audit.issued_at, now, raw)
        return [Persist(next(self._tokens), (op,))]
