"""The engine's settings (the daemon fills them from relay.toml, tests from literals)."""

from __future__ import annotations

from dataclasses import dataclass, field

from relay.engine.healing import SyncConfig
from relay.engine.pq import PqConfig


@dataclass(frozen=True, slots=True)
class EngineConfig:
    node: str
    regions: frozenset[str]
    max_messages: int = 20_000
    max_inflight_per_link: int = 64
    retry_base_s: float = 30.0  # first re-send towards nodes that have not signed
    retry_max_s: float = 600.0
    flash_retry_base_s: float = 10.0
    fail_retry_base_s: float = 2.0  # after a failed transmission (link error)
    fail_retry_max_s: float = 60.0
    # After the broker or peer refused a transmission (an ACL, PUBACK 135): an operator has to
    # change something first, so retry rarely -- but do retry, it may have been fixed.
    refused_retry_base_s: float = 60.0
    refused_retry_max_s: float = 900.0
    # Expired messages are collected only once other clocks confirm ours (relay.engine.clock),
    # or after this long without such evidence: a clock that jumped 30 days ahead at boot must
    # not purge the store before anyone could say so (docs/config.md, "Clock").
    clock_grace_s: float = 3600.0
    gc_interval_s: float = 60.0
    max_inbound_bytes: int = 4096
    link_hold_s: float = 2.0  # a link must stay up this long before traffic moves back to it
    peer_timeout_s: float = 15.0  # a node not heard on MQTT for this long counts as cut off
    # Only roster nodes become peers; beyond this many the least recently heard is forgotten.
    max_peers: int = 4096  # a national deployment has up to a few thousand nodes
    peer_grace_s: float = 6.0  # after MQTT comes up: time for every peer's status to arrive
    trickle_s: float = 1.0  # random part of a gateway's delay before bridging into the mesh
    # Gateways take turns, in an order that every gateway computes alike (by a hash of node name
    # and decision, over the gateways heard on MQTT): the n-th waits n slots. A slot must cover
    # the jitter (1 s), the sending radio's latency (up to 1.2 s: contention slot, carrier
    # sense), one LONG_FAST frame on the air (up to 2.2 s) and both hosts' processing, so the
    # next gateway has heard the first one's copy before its own turn comes. 4 s left 0.8 s for
    # the hosts, and on a loaded machine both gateways sent (the six-node test, 1 run in ~8).
    bridge_slot_s: float = 6.0
    seed: int | None = None  # for the gateway's random delays (tests fix it)
    # A decision from MQTT within this long of the one before it on that link (a burst) waits
    # up to this long to share its receipt with others (relay.engine.receipts). 0: never.
    receipt_hold_s: float = 0.0
    drill_window: tuple[float, float] | None = None  # exercise traffic accepted only inside
    heal: SyncConfig = field(default_factory=SyncConfig)  # relay.engine.healing
    pq: PqConfig = field(default_factory=PqConfig)  # relay.engine.pq: [trust] pq
