"""One issuer, several devices (issue #10 item 3): each device key numbers its own messages."""

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.cli import main
from relay.envelope import Reason, Rejection, open_envelope, seal
from relay.keys import SequenceCounter, load_private, raw_public
from relay.rosterfile import load_trust
from relay.trust import Accepted, Device, ReplayGuard, Roster, roster_decision
from tests.world import NOW, World, standard_world


def with_laptop2(w: World) -> Ed25519PrivateKey:
    """Give the issuer vr07-issuer a second device key; returns it."""
    key = Ed25519PrivateKey.generate()
    device = Device(raw_public(key.public_key()), "laptop2")
    w.roster = w.roster.with_device("vr07-issuer", device, w.roster.serial + 1)
    return key


def check(w: World, raw: bytes, guard: ReplayGuard) -> Accepted | Rejection:
    """Check and, when accepted, commit the sequence number (as a node does once stored)."""
    env = open_envelope(raw)
    if isinstance(env, Rejection):
        return env
    result = w.trust().check(env, NOW, guard)
    if isinstance(result, Accepted):
        guard.commit(env.kid, env.decision.seq)
    return result


def test_two_devices_of_one_issuer_both_start_at_sequence_one() -> None:
    """Test that decisions of one issuer from two device keys, both numbered 1, 2, are all
    accepted under the issuer's name, each device's replay still refused."""
    w = standard_world()
    laptop2 = with_laptop2(w)
    guard = ReplayGuard()
    for seq in (1, 2):
        first = w.sign("vr07-issuer", f"laptop 1: {seq}", to="region:VR07", seq=seq)
        second = seal(w.decision("vr07-issuer", f"laptop 2: {seq}", to="region:VR07", seq=seq),
                      laptop2)  # fmt: skip
        for raw in (first, second):
            result = check(w, raw, guard)
            assert isinstance(result, Accepted) and result.signer == "vr07-issuer"
    again = seal(w.decision("vr07-issuer", "laptop 2 again", to="region:VR07", seq=2), laptop2)
    result = check(w, again, guard)
    assert isinstance(result, Rejection) and result.reason == Reason.REPLAY
    assert "key id" in result.detail  # says which key: the device that reused its number


def test_a_copied_key_is_still_a_replay_with_the_key_named() -> None:
    """Test that the same key on two laptops (both at sequence 1) is refused as a replay."""
    w = standard_world()
    guard = ReplayGuard()
    first = w.sign("vr07-issuer", "laptop 1", to="region:VR07", seq=1)
    copied = w.sign("vr07-issuer", "laptop 2, copied key", to="region:VR07", seq=1)
    assert isinstance(check(w, first, guard), Accepted)
    result = check(w, copied, guard)
    assert isinstance(result, Rejection) and result.reason == Reason.REPLAY


def test_device_keys_keep_scope_survive_the_wire_and_revoke_alone() -> None:
    """Test that a device key signs only inside its entry's scope, that the roster's wire form
    keeps it, and that revoking the device leaves the issuer's other key valid."""
    w = standard_world()
    laptop2 = with_laptop2(w)
    decoded = Roster.from_decision(roster_decision(w.roster, NOW))
    assert decoded == w.roster
    wide = seal(w.decision("vr07-issuer", "landelijk", to="all"), laptop2)
    result = check(w, wide, ReplayGuard())
    assert isinstance(result, Rejection) and result.reason == Reason.OUT_OF_SCOPE
    w.roster = w.roster.without("vr07-issuer", w.roster.serial + 1, device="laptop2")
    gone = seal(w.decision("vr07-issuer", "na intrekking", to="region:VR07"), laptop2)
    result = check(w, gone, ReplayGuard())
    assert isinstance(result, Rejection) and result.reason == Reason.REVOKED_SIGNER
    assert isinstance(check(w, w.sign("vr07-issuer", to="region:VR07"), ReplayGuard()), Accepted)


def test_device_rules_nodes_labels_and_shared_keys_are_refused() -> None:
    """Test that a node gets no device keys, a label is used once, and a key only once."""
    w = standard_world()
    key = raw_public(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(ValueError, match="node has one key"):
        w.roster.with_device("vr07-utrecht", Device(key, "spare"), 99)
    roster = w.roster.with_device("vr07-issuer", Device(key, "laptop2"), 99)
    other = raw_public(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(ValueError, match="already has a device"):
        roster.with_device("vr07-issuer", Device(other, "laptop2"), 100)
    with pytest.raises(ValueError, match="already on the roster"):
        roster.with_device("national", Device(key, "laptop"), 100)
    national = roster.by_name("national")
    assert national is not None
    with pytest.raises(ValueError, match="already on the roster"):
        roster.with_device("national", Device(national.public_key, "same"), 100)


def test_roster_add_device_and_revoke_device_from_the_command_line(tmp_path: Path) -> None:
    """Test `relay roster add --device` and `relay roster revoke --device` on a roster file."""
    k, r = tmp_path / "keys", tmp_path / "roster.cbor"
    for name in ("root", "alice", "alice-laptop2"):
        assert main(["keys", "new", name, "--dir", str(k)]) == 0
    root = str(k / "root.key")
    assert main(["roster", "new", "--root-key", root, "-o", str(r)]) == 0
    base = ["roster", "add", str(r), "--root-key", root, "--name", "alice"]
    assert main([*base, "--pub", str(k / "alice.pub"), "--role", "issuer",
                 "--scope", "region:VR07"]) == 0  # fmt: skip
    assert main([*base, "--pub", str(k / "alice-laptop2.pub"), "--device", "laptop2"]) == 0
    assert main([*base, "--pub", str(k / "alice-laptop2.pub"), "--device", "laptop3"]) == 2
    state = load_trust(r, load_private(k / "root.key").public_key())
    assert state.roster is not None
    entry = state.roster.by_name("alice")
    assert entry is not None and [d.label for d in entry.devices] == ["laptop2"]
    laptop2 = load_private(k / "alice-laptop2.key")
    assert entry.key_for(entry.devices[0].kid) == raw_public(laptop2.public_key())
    assert SequenceCounter(k / "alice-laptop2.key").last() == 0  # its own counter, unused yet
    msg = tmp_path / "revoke.cose"
    assert main(["roster", "revoke", str(r), "--root-key", root, "--name", "alice",
                 "--device", "laptop2", "--message", str(msg)]) == 0  # fmt: skip
    state = load_trust(r, load_private(k / "root.key").public_key())
    assert state.roster is not None
    entry = state.roster.by_name("alice")
    assert entry is not None and entry.devices == ()
    assert [x.name for x in state.roster.revoked] == ["alice"]
    assert msg.stat().st_size > 0
