"""Trust rules: one test per rejection reason, the replay window, roster updates."""

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from relay import cose
from relay.envelope import Envelope, Kind, Reason, Rejection, open_envelope, seal
from relay.sim.statuses import sim_nodes
from relay.trust import (
    Accepted,
    ReplayGuard,
    ReplayWindow,
    Role,
    Roster,
    revocation_decision,
    roster_decision,
)
from tests.world import NOW, World, standard_world


def verdict(w: World, raw: bytes, now: float = NOW, guard: ReplayGuard | None = None) -> object:
    env = open_envelope(raw)
    if isinstance(env, Rejection):
        return env
    return w.trust().check(env, now, guard)


def reason_of(result: object) -> Reason:
    assert isinstance(result, Rejection), result
    return result.reason


def test_valid_decision_is_accepted() -> None:
    """Test that a decision from an issuer inside its scope is accepted with its signer's name."""
    w = standard_world()
    result = verdict(w, w.sign("vr07-issuer", to="region:VR07"))
    assert isinstance(result, Accepted) and result.signer == "vr07-issuer"


def test_malformed_is_rejected() -> None:
    """Test that bytes that are not a COSE_Sign1 are rejected as malformed."""
    assert reason_of(verdict(standard_world(), b"hello")) == Reason.MALFORMED


def test_unsupported_algorithm_is_rejected() -> None:
    """Test that a message claiming another algorithm is rejected as unsupported-algorithm."""
    import cbor2

    w = standard_world()
    env = open_envelope(w.sign("national"))
    assert isinstance(env, Envelope)
    protected = cbor2.dumps({1: -7, 4: env.kid})
    raw = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, env.sign1.payload, b"\0" * 64]))
    assert reason_of(verdict(w, raw)) == Reason.UNSUPPORTED_ALGORITHM


def test_bad_signature_is_rejected() -> None:
    """Test that a payload signed by another key under a roster kid is a bad signature."""
    w = standard_world()
    env = open_envelope(w.sign("national"))
    assert isinstance(env, Envelope)
    forged = cose.sign1(env.sign1.payload, Ed25519PrivateKey.generate(), kid=env.kid)
    assert reason_of(verdict(w, forged)) == Reason.BAD_SIGNATURE


def test_unknown_signer_is_rejected() -> None:
    """Test that a well-formed message from a key not on the roster is an unknown signer."""
    w = standard_world()
    stranger = Ed25519PrivateKey.generate()
    raw = seal(w.decision("national"), stranger)
    assert reason_of(verdict(w, raw)) == Reason.UNKNOWN_SIGNER


def test_revoked_signer_in_roster_is_rejected() -> None:
    """Test that a key moved to the roster's revoked list is rejected as revoked-signer."""
    w = standard_world()
    raw = w.sign("vr07-issuer", to="region:VR07")
    w.roster = w.roster.without("vr07-issuer", w.roster.serial + 1)
    assert reason_of(verdict(w, raw)) == Reason.REVOKED_SIGNER


def test_explicit_revocation_takes_effect() -> None:
    """Test that a root-signed revocation message makes later messages of that key rejected."""
    w = standard_world()
    trust = w.trust()
    kid = w.roster.by_name("national").kid  # type: ignore[union-attr]
    rev = open_envelope(seal(revocation_decision([kid], 100, NOW), w.root))
    assert isinstance(rev, Envelope)
    accepted = trust.check(rev, NOW)
    assert isinstance(accepted, Accepted)
    trust.apply(accepted)
    env = open_envelope(w.sign("national"))
    assert isinstance(env, Envelope)
    assert reason_of(trust.check(env, NOW)) == Reason.REVOKED_SIGNER


def test_audience_outside_scope_is_rejected() -> None:
    """Test that a regional issuer addressing all regions is rejected as out-of-scope."""
    w = standard_world()
    assert reason_of(verdict(w, w.sign("vr07-issuer", to="all"))) == Reason.OUT_OF_SCOPE
    assert reason_of(verdict(w, w.sign("vr07-issuer", to="region:VR05"))) == Reason.OUT_OF_SCOPE


def test_named_node_inside_regional_scope_is_allowed() -> None:
    """Test that a regional issuer may address a node the roster places in its region."""
    w = standard_world()
    assert isinstance(verdict(w, w.sign("vr07-issuer", to="node:vr07-utrecht")), Accepted)
    assert reason_of(verdict(w, w.sign("vr07-issuer", to="node:vr05-twente"))) == (
        Reason.OUT_OF_SCOPE
    )


def test_kind_outside_role_is_rejected() -> None:
    """Test that a node key signing a decision (nodes sign receipts) is out-of-scope."""
    w = standard_world()
    assert reason_of(verdict(w, w.sign("vr07-utrecht", to="region:VR07"))) == Reason.OUT_OF_SCOPE


def test_issuer_cannot_sign_a_roster() -> None:
    """Test that a roster signed by an issuer instead of the root is rejected."""
    w = standard_world()
    raw = seal(roster_decision(w.roster, NOW), w.keys["national"])
    assert reason_of(verdict(w, raw)) == Reason.OUT_OF_SCOPE


def test_coordinator_may_sign_exercise_only() -> None:
    """Test that an exercise coordinator's real (non-exercise) message is rejected."""
    w = standard_world()
    assert isinstance(verdict(w, w.sign("coordinator", exercise=True)), Accepted)
    assert reason_of(verdict(w, w.sign("coordinator"))) == Reason.EXERCISE_ONLY


def test_expired_is_rejected() -> None:
    """Test that a message whose expiry lies beyond the skew window in the past is expired."""
    w = standard_world()
    raw = w.sign("national", now=NOW - 10 * 3600, lifetime=3600)
    assert reason_of(verdict(w, raw)) == Reason.EXPIRED


def test_not_yet_valid_is_rejected() -> None:
    """Test that a message issued further in the future than the skew window is not yet valid."""
    w = standard_world()
    raw = w.sign("national", now=NOW + 7 * 3600)
    assert reason_of(verdict(w, raw)) == Reason.NOT_YET_VALID


def test_clock_three_hours_wrong_still_accepts() -> None:
    """Test that a receiver whose clock is 3 hours off either way still accepts fresh messages."""
    w = standard_world()
    raw = w.sign("national", lifetime=1800)
    assert isinstance(verdict(w, raw, now=NOW - 3 * 3600), Accepted)
    assert isinstance(verdict(w, raw, now=NOW + 3 * 3600), Accepted)


def test_replay_is_rejected_once_committed() -> None:
    """Test that a new message reusing a committed sequence number is rejected as replay."""
    w = standard_world()
    guard = ReplayGuard()
    first = verdict(w, w.sign("national", seq=5), guard=guard)
    assert isinstance(first, Accepted)
    guard.commit(first.envelope.kid, 5)
    assert reason_of(verdict(w, w.sign("national", "other text", seq=5), guard=guard)) == (
        Reason.REPLAY
    )


def test_signer_key_outside_validity_is_rejected() -> None:
    """Test that a key used after its roster validity ended is rejected as signer-not-valid."""
    w = standard_world()
    w.add("temp", Role.ISSUER, "all", not_after=NOW - 30 * 86400)
    assert reason_of(verdict(w, w.sign("temp"))) == Reason.SIGNER_NOT_VALID


def test_stale_roster_is_rejected() -> None:
    """Test that a roster whose serial is not newer than the current one is stale."""
    w = standard_world()
    old = seal(roster_decision(w.roster, NOW), w.root)
    assert reason_of(verdict(w, old)) == Reason.STALE_ROSTER


def test_newer_roster_replaces_current() -> None:
    """Test that a root-signed roster with a higher serial is adopted, adding its keys."""
    w = standard_world()
    trust = w.trust()
    w.add("late-issuer", Role.ISSUER, "all")
    newer = open_envelope(seal(roster_decision(w.roster, NOW), w.root))
    assert isinstance(newer, Envelope)
    accepted = trust.check(newer, NOW)
    assert isinstance(accepted, Accepted)
    trust.apply(accepted)
    env = open_envelope(w.sign("late-issuer"))
    assert isinstance(env, Envelope) and isinstance(trust.check(env, NOW), Accepted)


@settings(max_examples=300)
@given(st.lists(st.integers(0, 3000), min_size=1, max_size=200))
def test_replay_window_accepts_each_number_once_in_any_order(seqs: list[int]) -> None:
    """Test that the window accepts every fresh number once, whatever the arrival order."""
    window = ReplayWindow(size=1024)
    accepted: set[int] = set()
    for s in seqs:
        if not window.seen(s):
            assert s not in accepted
            window.commit(s)
            accepted.add(s)
        else:
            assert s in accepted or s <= window.high - 1024
    restored = ReplayWindow.restore(window.high, window.to_bytes(), 1024)
    assert all(restored.seen(s) for s in accepted if s > window.high - 1024)


def test_replay_window_tolerates_reordering_within_the_window() -> None:
    """Test that 1000 then 1..999 in reverse are all accepted (out-of-order arrival)."""
    window = ReplayWindow()
    for s in [1000, *range(999, 0, -1)]:
        assert not window.seen(s)
        window.commit(s)
    assert window.seen(500)


def test_replay_window_survives_a_huge_sequence_jump() -> None:
    """Test that committing a sequence number near 2**63 after a small one is cheap and exact."""
    window = ReplayWindow()
    window.commit(5)
    window.commit(2**63 - 1)
    assert window.seen(2**63 - 1) and not window.seen(2**63 - 2)
    assert window.seen(5)  # far below the window: too old to tell, so refused
    restored = ReplayWindow.restore(window.high, window.to_bytes())
    assert restored.seen(2**63 - 1) and not restored.seen(2**63 - 2)


def test_replay_window_commit_below_the_window_keeps_it_serialisable() -> None:
    """Test that committing a number that fell below the window leaves to_bytes working."""
    window = ReplayWindow()
    window.commit(2000)
    window.commit(1)  # checked before 2000 was committed, stored after it
    assert window.seen(1)
    assert len(window.to_bytes()) == window.size // 8


@pytest.mark.parametrize("kind", [Kind.ACK, Kind.STATUS])
def test_nodes_may_sign_receipts_and_status(kind: Kind) -> None:
    """Test that node keys may sign receipts and status messages to anyone."""
    w = standard_world()
    assert isinstance(verdict(w, w.sign("vr07-utrecht", kind=kind)), Accepted)


def test_roster_lookups_follow_each_new_roster_at_national_size() -> None:
    """Test that a 2,000-node roster finds every entry by key id and name, and that a roster
    derived with an entry added or removed finds exactly its own entries (the index is rebuilt)."""
    nodes = sim_nodes(2001)
    roster = Roster(serial=1, entries=tuple(n.entry for n in nodes[:2000]))
    assert all(roster.by_kid(n.kid) is n.entry for n in nodes[:2000])
    assert all(roster.by_name(n.name) is n.entry for n in nodes[:2000])
    assert len(roster.node_regions()) == 2000
    extra = nodes[2000]
    assert roster.by_kid(extra.kid) is None
    grown = roster.with_entry(extra.entry, serial=2)
    assert grown.by_kid(extra.kid) is extra.entry and grown.node_regions()[extra.name]
    shrunk = grown.without(nodes[0].name, serial=3)
    assert shrunk.by_kid(nodes[0].kid) is None and shrunk.by_name(nodes[0].name) is None
    assert nodes[0].name not in shrunk.node_regions()
