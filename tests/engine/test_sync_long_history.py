"""Summaries of signers with a long history: a node that has signed more than a replay window
(1,024) of its own receipts must still be understood by its peers, in a bounded size."""

from collections import Counter

import pytest

from relay.engine import sync
from relay.engine.core import SEQ_COUNTER
from relay.envelope import KID_LEN, Rejection
from relay.trust import REPLAY_WINDOW
from tests.engine.test_heal import away_while_hq_publishes, partitioned_world

KID = bytes(range(KID_LEN))
OTHER = bytes(range(1, KID_LEN + 1))


@pytest.mark.parametrize("high", [1, 1023, 1024, 1025, 5000, 10**9, sync.MAX_SEQ])
def test_own_history_of_any_length_encodes_to_a_small_valid_summary(high: int) -> None:
    """Test that ``contiguous(kid, high)`` for any history length decodes whole (claiming the
    window below ``high`` and nothing under it), stays small, and that every cut and any
    trailing byte is a specific rejection."""
    own = sync.contiguous(KID, high)
    assert own is not None
    other = sync.SignerSeqs(OTHER, 3000, (10, 5, 1009))
    raw, count = sync.encode("vr07-utrecht", "", [own, other], max_bytes=229)
    assert count == 2 and len(raw) <= 80
    whole = sync.decode(raw, max_bytes=229)
    assert isinstance(whole, sync.Summary), whole
    got = whole.by_kid()[KID]
    assert got.high == high and got.holds(high) is True
    assert got.holds(max(1, high - REPLAY_WINDOW + 1)) is True
    if high > REPLAY_WINDOW:
        assert got.holds(high - REPLAY_WINDOW) is None  # below the window: nothing claimed
    for cut in range(len(raw)):
        assert isinstance(sync.decode(raw[:cut], max_bytes=229), Rejection), cut
    for extra in (b"\x00", b"\xff", raw):
        bad = sync.decode(raw + extra, max_bytes=229)
        assert isinstance(bad, Rejection) and "after the summary" in bad.detail


def test_node_with_more_than_a_window_of_own_receipts_heals() -> None:
    """Test that a node that has signed 1,500 receipts of its own, back from a stop, gets what
    it missed through healing, and that no peer rejects its summaries."""
    w, bus = partitioned_world()
    bus.run_for(10)
    bus.nodes["vr05-almelo"].store.counters[SEQ_COUNTER] = 1500
    back, ids = away_while_hq_publishes(w, bus, 5, every_s=60)
    bus.run_for(60)
    got = Counter(d.id for d in back.delivered)
    assert set(got) == set(ids) and max(got.values()) == 1
    assert all(n.engine.rejections == Counter() for n in bus.nodes.values())
