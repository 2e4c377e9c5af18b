"""Restoring a key's sequence file from a backup: ``relay keys advance`` prevents replays."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.cli import main
from relay.keys import SequenceCounter, write_keypair


def test_advance_after_restoring_an_old_sequence_file_avoids_reused_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that a restored old .seq reuses numbers, and `relay keys advance` moves past them."""
    key_path, _, _ = write_keypair(tmp_path, "vr07-rbt")
    counter = SequenceCounter(key_path)
    used = [counter.reserve() for _ in range(2)]
    backup = counter.path.read_bytes()  # the nightly backup
    used += [counter.reserve() for _ in range(3)]
    counter.path.write_bytes(backup)  # restored: behind what was signed
    assert counter.reserve() in used  # the next decision would be refused as a replay
    counter.path.write_bytes(backup)
    assert main(["keys", "advance", str(key_path)]) == 0
    assert "sequence 2 -> 100002" in capsys.readouterr().out
    assert counter.reserve() > max(used)
    assert main(["keys", "advance", str(key_path), "--to", "500000"]) == 0
    assert counter.reserve() == 500001


def test_advance_refuses_a_missing_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Test that advancing a key file that does not exist is a one-line error, exit 2."""
    assert main(["keys", "advance", str(tmp_path / "nope.key")]) == 2
    assert f"no key file {tmp_path / 'nope.key'}" in capsys.readouterr().err
