"""A node whose relay.toml sits in a read-only /etc, started as the shipped systemd unit does."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from relay import api
from relay.sim.cluster import Cluster, NodeSpec
from relay.sim.net import free_port
from tests.node.util import ISSUERS, wait_until

pytestmark = pytest.mark.subprocess

RELATIVE_CONFIG = """\
[node]
name = "vr07-post"
key = "keys/vr07-post.key"
regions = ["VR07"]
store = "var/relay.db"

[trust]
root = "keys/root.pub"
roster = "roster.cbor"

[[mesh.radio]]
tcp = "127.0.0.1:{port}"
"""


def read_only(directory: Path, argv: list[str]) -> list[str]:
    """``argv`` run with ``directory`` read-only for it: a read-only bind mount in a private
    mount namespace when we are root (root ignores file modes), else mode 0555."""
    if os.geteuid() == 0:
        script = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
        return ["unshare", "-m", "sh", "-c", script, "sh", str(directory), *argv]
    directory.chmod(0o555)
    return argv


def test_relative_store_goes_to_state_directory_with_read_only_etc(tmp_path: Path) -> None:
    """Test that `relay run` with store = "var/relay.db" in a read-only /etc writes only below
    $STATE_DIRECTORY, as under the unit's StateDirectory=, and answers `relay status`."""
    c = Cluster(tmp_path / "c")
    c.create([NodeSpec("vr07-post", ("VR07",))], ISSUERS)
    etc, state = tmp_path / "etc", tmp_path / "state"
    (etc / "keys").mkdir(parents=True)
    state.mkdir()
    for name in ("vr07-post.key", "root.pub"):
        shutil.copy2(c.keys / name, etc / "keys" / name)
    shutil.copy2(c.roster_path, etc / "roster.cbor")
    # A radio nobody serves: the node runs with its link down, which is enough here.
    (etc / "relay.toml").write_text(RELATIVE_CONFIG.format(port=free_port()))
    env = {**os.environ, "STATE_DIRECTORY": str(state)}
    argv = [sys.executable, "-m", "relay", "run", "--config", str(etc / "relay.toml")]
    log = (tmp_path / "node.log").open("wb")
    proc = subprocess.Popen(read_only(etc, argv), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        socket = state / "var" / "relay.sock"

        def answers() -> bool:
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "node.log").read_text()[-3000:])
            try:
                return bool(api.call(socket, {"op": "status"}, timeout=2.0).get("ok"))
            except (api.ApiError, OSError):
                return False

        wait_until(answers, 30, "the node's API in the state directory")
        assert (state / "var" / "relay.db").is_file()
        status = subprocess.run(
            [sys.executable, "-m", "relay", "status", "--config", str(etc / "relay.toml")],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert "node vr07-post regions VR07" in status.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        log.close()
        etc.chmod(0o755)
    assert proc.returncode == 0, (tmp_path / "node.log").read_text()[-3000:]
    assert sorted(p.name for p in etc.iterdir()) == ["keys", "relay.toml", "roster.cbor"]


def test_api_socket_path_too_long_is_named_as_such(tmp_path: Path) -> None:
    """Test that `relay run` with an api.socket longer than a Unix socket address exits non-zero
    with a one-line reason that names the length, not the permissions."""
    c = Cluster(tmp_path / "c")
    c.create([NodeSpec("vr07-post", ("VR07",))], ISSUERS)
    etc = tmp_path / "etc"
    (etc / "keys").mkdir(parents=True)
    for name in ("vr07-post.key", "root.pub"):
        shutil.copy2(c.keys / name, etc / "keys" / name)
    shutil.copy2(c.roster_path, etc / "roster.cbor")
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    config = RELATIVE_CONFIG.format(port=free_port()).replace(
        'store = "var/relay.db"', f'store = "{tmp_path / "relay.db"}"'
    )
    (etc / "relay.toml").write_text(config + f'\n[api]\nsocket = "{deep / "relay.sock"}"\n')
    run = subprocess.run(
        [sys.executable, "-m", "relay", "run", "--config", str(etc / "relay.toml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode != 0
    assert "a Unix socket path holds at most 107" in run.stderr, run.stderr
    assert "set api.socket to a shorter path" in run.stderr
    assert "permissions" not in run.stderr
