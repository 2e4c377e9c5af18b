"""``relay run --check`` and ``relay run`` on missing or unusable files: one line naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.keys import load_private, raw_public
from relay.rosterfile import write_roster
from relay.sim.cluster import Cluster
from relay.trust import DEFAULT_KINDS, Role, Roster, RosterEntry, Scope

pytestmark = pytest.mark.subprocess


def relay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args], capture_output=True, text=True, timeout=60
    )


def set_key(config: Path, section_key: str, value: str) -> None:
    """Point one ``key = "…"`` line of a generated relay.toml somewhere else."""
    lines = config.read_text().splitlines()
    out = [
        f'{section_key} = "{value}"' if ln.startswith(f"{section_key} =") else ln for ln in lines
    ]
    config.write_text("\n".join(out) + "\n")


def test_check_passes_for_a_complete_node(node_files: Cluster) -> None:
    """Test that `relay run --check` lists every check as ok and exits 0 for a complete node."""
    proc = relay("run", "--check", "--config", str(node_files.config_path("n1")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for key in ("node.key", "trust.root", "trust.roster", "node.name", "node.store", "api.socket"):
        assert f"ok   {key}: " in proc.stdout


@pytest.mark.parametrize(
    ("key", "target"),
    [("key", "missing.key"), ("root", "missing.pub"), ("roster", "missing.cbor")],
)
def test_check_names_the_key_and_file_that_is_missing(
    node_files: Cluster, tmp_path: Path, key: str, target: str
) -> None:
    """Test that a missing key, root or roster file fails --check naming its key and path."""
    config = node_files.config_path("n1")
    missing = tmp_path / target
    set_key(config, key, str(missing))
    proc = relay("run", "--check", "--config", str(config))
    assert proc.returncode == 1
    name = {"key": "node.key", "root": "trust.root", "roster": "trust.roster"}[key]
    fail = [ln for ln in proc.stdout.splitlines() if ln.startswith("fail")]
    assert any(ln.startswith(f"fail {name}: ") and str(missing) in ln for ln in fail), proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_check_fails_when_the_nodes_key_is_not_the_rosters(node_files: Cluster) -> None:
    """Test that --check fails when the roster holds a different key under the node's name."""
    root = node_files.keys / "root.key"
    other = Ed25519PrivateKey.generate()
    entry = RosterEntry(
        raw_public(other.public_key()),
        "n1",
        Role.NODE,
        Scope.parse(["region:VR07"]),
        DEFAULT_KINDS[Role.NODE],
    )
    write_roster(node_files.roster_path, Roster(serial=5, entries=(entry,)), load_private(root))
    proc = relay("run", "--check", "--config", str(node_files.config_path("n1")))
    assert proc.returncode == 1
    assert "fail node.name: de roster heeft voor n1 een andere sleutel dan" in proc.stdout


def test_check_fails_when_the_node_is_not_on_the_roster(node_files: Cluster) -> None:
    """Test that --check fails, with the command to fix it, when the node is not on the roster."""
    root = load_private(node_files.keys / "root.key")
    write_roster(node_files.roster_path, Roster(serial=6), root)
    proc = relay("run", "--check", "--config", str(node_files.config_path("n1")))
    assert proc.returncode == 1
    assert "fail node.name: node n1 staat niet op de roster" in proc.stdout
    assert "relay roster add" in proc.stdout


def test_check_fails_when_the_store_directory_cannot_be_made(
    node_files: Cluster, tmp_path: Path
) -> None:
    """Test that a store path below a regular file fails --check under node.store."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    config = node_files.config_path("n1")
    set_key(config, "store", str(blocker / "var" / "relay.db"))
    proc = relay("run", "--check", "--config", str(config))
    assert proc.returncode == 1
    assert f"fail node.store: {blocker} is geen map" in proc.stdout


def test_check_fails_on_a_roster_that_is_not_signed_by_the_root(node_files: Cluster) -> None:
    """Test that a roster signed by another key fails --check under trust.roster."""
    write_roster(node_files.roster_path, Roster(serial=7), Ed25519PrivateKey.generate())
    proc = relay("run", "--check", "--config", str(node_files.config_path("n1")))
    assert proc.returncode == 1
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("fail trust.roster: ")]
    assert str(node_files.roster_path) in line


@pytest.mark.parametrize("key", ["key", "roster"])
def test_run_prints_one_line_for_an_unreadable_file(
    node_files: Cluster, tmp_path: Path, key: str
) -> None:
    """Test that `relay run` refuses an unreadable file with one line naming key and file."""
    unreadable = tmp_path / "a-directory"
    unreadable.mkdir()  # reading a directory fails even for root, unlike chmod 000
    config = node_files.config_path("n1")
    set_key(config, key, str(unreadable))
    proc = relay("run", "--config", str(config))
    assert proc.returncode == 2
    name = {"key": "node.key", "roster": "trust.roster"}[key]
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"relay: {name}: cannot read {'key' if key == 'key' else 'roster'} "
        f"{unreadable}: Is a directory"
    ], proc.stderr
    assert proc.stdout == ""
