"""The key, roster, sign and verify commands, in the exact forms the acceptance checks use."""

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli import main
from relay.envelope import Envelope, open_envelope
from relay.keys import SequenceCounter


def relay(*args: str | Path, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *map(str, args)], capture_output=True, input=input
    )


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    k = tmp_path / "keys"
    for name in ("root", "vr07", "coord", "node1"):
        assert main(["keys", "new", name, "--dir", str(k)]) == 0
    r = tmp_path / "roster.cbor"
    assert main(["roster", "new", "--root-key", str(k / "root.key"), "-o", str(r)]) == 0
    for name, role, scope in [
        ("vr07", "issuer", "region:VR07"),
        ("coord", "exercise-coordinator", "all"),
        ("node1", "node", "region:VR07"),
    ]:
        args = ["roster", "add", str(r), "--root-key", str(k / "root.key")]
        args += ["--pub", str(k / f"{name}.pub"), "--name", name, "--role", role]
        assert main([*args, "--scope", scope]) == 0
    return tmp_path


def test_keys_new_writes_private_key_0600_and_never_prints_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that `relay keys new` writes a 0600 PKCS#8 key and prints only id and fingerprint."""
    assert main(["keys", "new", "alice", "--dir", str(tmp_path)]) == 0
    key = tmp_path / "alice.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    out = capsys.readouterr().out
    body = "".join(key.read_text().splitlines()[1:-1])
    assert body[:20] not in out and "PRIVATE" not in out
    assert main(["keys", "show", str(tmp_path / "alice.pub")]) == 0
    shown = capsys.readouterr().out
    assert "key id" in shown and "fingerprint" in shown
    assert main(["keys", "new", "alice", "--dir", str(tmp_path)]) == 2  # no silent overwrite


def test_encrypted_key_needs_its_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that a passphrase-encrypted key is written encrypted and loads only with it."""
    monkeypatch.setenv("RELAY_KEY_PASSPHRASE", "correct horse")
    assert main(["keys", "new", "bob", "--dir", str(tmp_path), "--encrypt"]) == 0
    assert "ENCRYPTED" in (tmp_path / "bob.key").read_text()
    assert main(["keys", "show", str(tmp_path / "bob.key")]) == 0
    monkeypatch.setenv("RELAY_KEY_PASSPHRASE", "wrong")
    assert main(["keys", "show", str(tmp_path / "bob.key")]) == 2


def test_sign_and_verify_round_trip(setup: Path) -> None:
    """Test that `relay sign` output verifies with `relay verify` in text and JSON form."""
    k = setup / "keys"
    out = setup / "d.cose"
    r = relay(
        "sign",
        "--key",
        k / "vr07.key",
        "--precedence",
        "IMMEDIATE",
        "--to",
        "region:VR07",
        "--text",
        "Besluit ROT: evacuatie Lombok.",
        "-o",
        out,
    )
    assert r.returncode == 0, r.stderr
    ok = relay("verify", "--root", k / "root.pub", "--roster", setup / "roster.cbor", out)
    assert ok.returncode == 0, ok.stderr
    assert b"IMMEDIATE from vr07" in ok.stdout and b"Besluit ROT" in ok.stdout
    js = relay("verify", "--root", k / "root.pub", "--roster", setup / "roster.cbor", out, "--json")
    doc = json.loads(js.stdout)
    assert doc["issuer"] == "vr07" and doc["precedence"] == "IMMEDIATE" and not doc["exercise"]
    # Verifying the same file twice is not a replay unless a state file is given.
    again = relay("verify", "--root", k / "root.pub", "--roster", setup / "roster.cbor", out)
    assert again.returncode == 0


def test_sign_to_stdout_and_verify_from_stdin(setup: Path) -> None:
    """Test that `-o -` writes raw COSE bytes to stdout and verify reads `-` from stdin."""
    k = setup / "keys"
    r = relay(
        "sign",
        "--key",
        k / "vr07.key",
        "--precedence",
        "FLASH",
        "--to",
        "region:VR07",
        "--text",
        "Dijkdoorbraak.",
        "-o",
        "-",
    )
    assert r.returncode == 0 and r.stdout[:1] == b"\xd2"
    v = relay(
        "verify", "--root", k / "root.pub", "--roster", setup / "roster.cbor", "-", input=r.stdout
    )
    assert v.returncode == 0, v.stderr


def test_tampered_copy_is_rejected_with_reason(setup: Path) -> None:
    """Test that a tampered file exits non-zero with the rejection reason on stderr."""
    k = setup / "keys"
    out = setup / "d.cose"
    assert (
        main(
            [
                "sign",
                "--key",
                str(k / "vr07.key"),
                "--precedence",
                "ROUTINE",
                "--to",
                "region:VR07",
                "--text",
                "Ploegwissel om 19:00.",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    data = bytearray(out.read_bytes())
    data[-1] ^= 0x01
    out.write_bytes(data)
    v = relay("verify", "--root", k / "root.pub", "--roster", setup / "roster.cbor", out)
    assert v.returncode == 1
    assert b"rejected: bad-signature" in v.stderr


def test_verify_state_file_detects_replay(setup: Path) -> None:
    """Test that with --state a second verification of the same message is a replay."""
    k = setup / "keys"
    out = setup / "d.cose"
    assert (
        main(
            [
                "sign",
                "--key",
                str(k / "vr07.key"),
                "--precedence",
                "ROUTINE",
                "--to",
                "region:VR07",
                "--text",
                "x",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    args: list[str | Path] = [
        "verify",
        "--root",
        k / "root.pub",
        "--roster",
        setup / "roster.cbor",
        out,
    ]
    assert relay(*args, "--state", setup / "st.json").returncode == 0
    second = relay(*args, "--state", setup / "st.json")
    assert second.returncode == 1 and b"replay" in second.stderr


def test_exercise_rendering_starts_with_marker(setup: Path) -> None:
    """Test that an exercise decision is shown with OEFENING / EXERCISE first and in the body."""
    k = setup / "keys"
    out = setup / "x.cose"
    assert (
        main(
            [
                "sign",
                "--key",
                str(k / "coord.key"),
                "--precedence",
                "FLASH",
                "--to",
                "all",
                "--text",
                "Dijkdoorbraak bij Culemborg.",
                "--exercise",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    v = relay("verify", "--root", k / "root.pub", "--roster", setup / "roster.cbor", out)
    text = v.stdout.decode()
    assert text.startswith("[OEFENING / EXERCISE]")
    assert "OEFENING / EXERCISE: Dijkdoorbraak" in text


def test_revoke_makes_later_verification_fail(setup: Path) -> None:
    """Test that after `relay roster revoke` the key's messages are rejected as revoked."""
    k = setup / "keys"
    out = setup / "d.cose"
    assert (
        main(
            [
                "sign",
                "--key",
                str(k / "vr07.key"),
                "--precedence",
                "ROUTINE",
                "--to",
                "region:VR07",
                "--text",
                "x",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "roster",
                "revoke",
                str(setup / "roster.cbor"),
                "--root-key",
                str(k / "root.key"),
                "--name",
                "vr07",
                "--message",
                str(setup / "rev.cose"),
            ]
        )
        == 0
    )
    v = relay("verify", "--root", k / "root.pub", "--roster", setup / "roster.cbor", out)
    assert v.returncode == 1 and b"revoked-signer" in v.stderr
    rv = relay(
        "verify", "--root", k / "root.pub", "--roster", setup / "roster.cbor", setup / "rev.cose"
    )
    assert rv.returncode == 0 and b"revocation from root" in rv.stdout
    shown = relay("roster", "show", setup / "roster.cbor", "--root", k / "root.pub", "--json")
    doc = json.loads(shown.stdout)
    assert [r["name"] for r in doc["revoked"]] == ["vr07"]


def test_roster_signed_by_another_root_is_refused(setup: Path) -> None:
    """Test that verify refuses a roster that the given root key did not sign."""
    k = setup / "keys"
    v = relay(
        "verify", "--root", k / "vr07.pub", "--roster", setup / "roster.cbor", setup / "roster.cbor"
    )
    assert v.returncode == 2 and b"unknown-signer" in v.stderr


def test_sequence_counter_is_monotonic_and_durable(tmp_path: Path) -> None:
    """Test that the counter beside a key never repeats, across instances (restarts)."""
    key = tmp_path / "issuer.key"
    key.write_text("")
    seen = [SequenceCounter(key).reserve() for _ in range(5)]
    assert seen == [1, 2, 3, 4, 5]
    assert SequenceCounter(key).reserve(floor=10) == 11
    assert SequenceCounter(key).last() == 11


def test_roster_payload_version_rolls_out_version_2(
    setup: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that `relay roster payload --version 2` is shown, never lowered, and that signing
    with --payload-version 2 gives a message `relay verify` accepts."""
    k, r = setup / "keys", setup / "roster.cbor"
    root = ["--root-key", str(k / "root.key")]
    assert main(["roster", "payload", str(r), *root, "--version", "2"]) == 0
    assert main(["roster", "show", str(r), "--root", str(k / "root.pub"), "--json"]) == 0
    shown = capsys.readouterr().out
    assert json.loads(shown[shown.index("{") :])["payload_version"] == 2
    assert main(["roster", "payload", str(r), *root, "--version", "1"]) == 2
    assert "never lowered" in capsys.readouterr().err
    out = setup / "d.cose"
    sign = ["sign", "--key", str(k / "vr07.key"), "--precedence", "FLASH", "--to", "region:VR07"]
    sign += ["--text", "Dijk houdt stand.", "--payload-version", "2"]
    assert main([*sign, "-o", str(out)]) == 0
    env = open_envelope(out.read_bytes())
    assert isinstance(env, Envelope) and env.sign1.payload[0] >> 5 == 4  # a CBOR array: version 2
    verify = relay("verify", "--root", k / "root.pub", "--roster", r, out, "--json")
    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.stdout)["text"] == "Dijk houdt stand."
