"""The node under systemd: sd_notify READY/WATCHDOG, journald priorities, the unit's exposure."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relay import resources
from relay.sim.cluster import Cluster

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "relay.service"
MAX_EXPOSURE = 2.5  # the goal is <= 2.0; CI fails above 2.5


@pytest.mark.subprocess
def test_run_notifies_ready_and_pings_the_watchdog_with_journal_priorities(
    node_files: Cluster,
) -> None:
    """Test that `relay run` sends READY=1 and WATCHDOG=1 and prefixes journald priorities."""
    name = f"relay-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(20)
        env = {
            **os.environ,
            "NOTIFY_SOCKET": "@" + name,
            "WATCHDOG_USEC": "1000000",
            "JOURNAL_STREAM": "8:1234",
        }
        config = node_files.config_path("n1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            got: list[str] = []
            while sum(m == "WATCHDOG=1" for m in got) < 3:
                got.append(sock.recv(4096).decode())
            ready = [m for m in got if m.startswith("READY=1")]
            assert len(ready) == 1, got
            assert "STATUS=links mqtt" in ready[0]
            # The node answers its API by the time it says READY.
            assert node_files.status("n1")["node"] == "n1"
            proc.terminate()
            assert "STOPPING=1" in sock.recv(4096).decode()
            out, _ = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = out.decode().splitlines()
    parsed: dict[str, int] = {}
    for ln in lines:
        m = re.match(r"^<(\d)>(\{.*\})$", ln)
        assert m, f"a line without a priority prefix: {ln!r}"
        parsed.setdefault(json.loads(m.group(2))["event"], int(m.group(1)))
    assert parsed["started"] == 6  # info
    assert parsed["mqtt connect failed"] == 4  # warning: `journalctl -p warning` shows it


@pytest.mark.subprocess
def test_run_without_systemd_prints_plain_json(
    node_files: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that without NOTIFY_SOCKET and JOURNAL_STREAM the node runs and logs bare JSON."""
    for name in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC"):
        monkeypatch.delenv(name, raising=False)
    node_files.start("n1")
    try:
        node_files.wait_ready("n1", link_up=False)
    finally:
        assert node_files.stop("n1") == 0
    first = node_files.log("n1").splitlines()[0]
    assert json.loads(first)["event"] == "started"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_unit_exposure_is_at_most_the_limit() -> None:
    """Test that systemd-analyze scores deploy/relay.service at most 2.5 (goal 2.0)."""
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for relay\.service: (\d+\.\d)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, proc.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_unit_passes_systemd_verification_of_its_directives() -> None:
    """Test that systemd-analyze verify knows every directive in the unit."""
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    unknown = [ln for ln in proc.stderr.splitlines() if "Unknown" in ln or "Invalid" in ln]
    assert not unknown, proc.stderr


def test_unit_declares_what_the_service_relies_on() -> None:
    """Test that the unit is Type=notify with a watchdog, the state directory and dialout."""
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=30",
        "StateDirectory=crisis-relay",
        "UMask=0077",
        "SupplementaryGroups=dialout",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ):
        assert f"\n{line}\n" in text, line
    assert "ExecStart=/opt/crisis-relay/bin/relay run --config /etc/crisis-relay/relay.toml" in text
    assert resources.read_bytes("systemd/relay.service") == UNIT.read_bytes()
