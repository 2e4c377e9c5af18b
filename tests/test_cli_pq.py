"""`relay keys new --pq`, `relay roster add --pq-pub`, `relay sign --pq` and `relay verify`."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from relay import pq
from relay.cli import main
from relay.envelope import Envelope, open_envelope


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    k = tmp_path / "keys"
    assert main(["keys", "new", "root", "--dir", str(k)]) == 0
    assert main(["keys", "new", "nat", "--dir", str(k), "--pq"]) == 0
    assert main(["keys", "new", "vr07", "--dir", str(k)]) == 0
    r = tmp_path / "roster.cbor"
    assert main(["roster", "new", "--root-key", str(k / "root.key"), "-o", str(r)]) == 0
    base = ["roster", "add", str(r), "--root-key", str(k / "root.key"), "--role", "issuer"]
    assert main([*base, "--pub", str(k / "nat.pub"), "--name", "nat", "--scope", "all",
                 "--pq-pub", str(k / "nat.pq.pub")]) == 0  # fmt: skip
    assert main([*base, "--pub", str(k / "vr07.pub"), "--name", "vr07", "--scope", "all"]) == 0
    return tmp_path


def sign(setup: Path, out: Path, *extra: str, key: str = "nat") -> int:
    k = setup / "keys"
    args = ["sign", "--key", str(k / f"{key}.key"), "--precedence", "FLASH", "--to", "all"]
    return main([*args, "--text", "Besluit: evacuatie.", "-o", str(out), *extra])


def verify(setup: Path, path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    k = setup / "keys"
    args = ["verify", "--root", str(k / "root.pub"), "--roster", str(setup / "roster.cbor")]
    code = main([*args, str(path), "--json"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_keys_new_pq_writes_an_ml_dsa_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that `relay keys new NAME --dir DIR --pq` writes NAME.pq.key (0600) and NAME.pq.pub
    beside the Ed25519 pair and prints the key hash, never the key."""
    assert main(["keys", "new", "alice", "--dir", str(tmp_path), "--pq"]) == 0
    out = capsys.readouterr().out
    pq_key = tmp_path / "alice.pq.key"
    assert stat.S_IMODE(pq_key.stat().st_mode) == 0o600
    assert (tmp_path / "alice.pq.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert (tmp_path / "alice.key").exists() and "pq key hash" in out
    assert "".join(pq_key.read_text().splitlines()[1:-1])[:20] not in out
    assert main(["keys", "new", "alice", "--dir", str(tmp_path), "--pq"]) == 2


def test_sign_pq_writes_the_attestation_beside_and_verify_checks_it(
    setup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that `relay sign --pq` writes OUT.pq beside OUT and `relay verify` reports the
    quantum-safe signature verified; without the file it reports it pending."""
    out = setup / "d.cose"
    assert sign(setup, out, "--pq") == 0
    att = (setup / "d.cose.pq").read_bytes()
    env = open_envelope(out.read_bytes())
    assert isinstance(env, Envelope)
    parsed = pq.open_attestation(att)
    assert isinstance(parsed, pq.Attestation) and parsed.msg_id == env.id
    code, text = verify(setup, out, capsys)
    assert code == 0 and json.loads(text.splitlines()[0])["pq"] == "verified"
    (setup / "d.cose.pq").unlink()
    code, text = verify(setup, out, capsys)
    assert code == 0 and json.loads(text.splitlines()[0])["pq"] == "pending"


def test_verify_rejects_a_tampered_or_foreign_attestation(
    setup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that a tampered attestation (pq-bad-signature) and one of another decision
    (pq-wrong-message) beside the file make `relay verify` exit 1 with the reason."""
    a, b = setup / "a.cose", setup / "b.cose"
    assert sign(setup, a, "--pq") == 0 and sign(setup, b, "--pq") == 0
    good = (setup / "a.cose.pq").read_bytes()
    bad = bytearray(good)
    bad[-7] ^= 0x10
    (setup / "a.cose.pq").write_bytes(bytes(bad))
    code, text = verify(setup, a, capsys)
    assert code == 1 and "pq-bad-signature" in text
    (setup / "a.cose.pq").write_bytes((setup / "b.cose.pq").read_bytes())
    code, text = verify(setup, a, capsys)
    assert code == 1 and "pq-wrong-message" in text


def test_roster_holds_the_key_hash(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Test that `relay roster show --json` lists the PQ issuer's ML-DSA key hash only."""
    k = setup / "keys"
    capsys.readouterr()
    args = ["roster", "show", str(setup / "roster.cbor"), "--root", str(k / "root.pub")]
    assert main([*args, "--json"]) == 0
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)["entries"]}
    from relay.pqkeys import load_pq_public

    expected = pq.key_hash(load_pq_public(k / "nat.pq.pub").public_bytes_raw()).hex()
    assert entries["nat"]["pq_key_hash"] == expected
    assert entries["vr07"]["pq_key_hash"] is None


def test_sign_pq_needs_a_file_and_an_ml_dsa_key(
    setup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that `relay sign --pq -o -` and --pq with a key that has no ML-DSA pair fail
    clearly (exit 2) without writing anything."""
    assert sign(setup, Path("-"), "--pq") == 2
    out = setup / "v.cose"
    assert sign(setup, out, "--pq", key="vr07") == 2
    assert "relay keys new NAME --pq" in capsys.readouterr().err
    assert not (setup / "v.cose.pq").exists()


def _doc(trust: dict[str, str]) -> dict[str, object]:
    return {
        "node": {"name": "vr07-post", "key": "keys/vr07-post.key"},
        "trust": {"root": "keys/root.pub", "roster": "roster.cbor", **trust},
        "mesh": {"radio": [{"tcp": "127.0.0.1:4403"}]},
    }


def test_trust_pq_key_in_relay_toml() -> None:
    """Test that `[trust] pq` takes "off", "prefer" (the default) or "require", and refuses
    anything else with the key's name."""
    from relay.config import ConfigError, parse

    path = Path("/etc/crisis-relay/relay.toml")
    assert parse(_doc({}), path).pq == "prefer"
    for value in ("off", "prefer", "require"):
        assert parse(_doc({"pq": value}), path).pq == value
    with pytest.raises(ConfigError, match=r"trust\.pq"):
        parse(_doc({"pq": "always"}), path)
    small = {
        **_doc({"pq": "require"}),
        "node": {"name": "n", "key": "k", "max_inbound_bytes": 2048},
    }
    with pytest.raises(ConfigError, match="at least 3799"):
        parse(small, path)
