"""Real components against the servers: SerialInterface on a pty, the CLI, the control port."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from meshtastic.serial_interface import SerialInterface
from meshtastic.tcp_interface import TCPInterface

from relay.sim.net import free_port
from tests.sim.conftest import RunningMesh, loopback_spec
from tests.sim.test_library_tcp import Inbox

MESHTASTIC = str(Path(sys.executable).with_name("meshtastic"))
CLI_TIMEOUT = 30.0


def meshtastic_cli(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MESHTASTIC, "--host", f"127.0.0.1:{port}", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


@pytest.mark.radio
def test_serial_interface_on_a_pty() -> None:
    """Test that SerialInterface opens the pty, gets its config and its text reaches TCP."""
    running = RunningMesh(loopback_spec(2, pty=True))
    try:
        path = running.server.pty_path("r1")
        assert path is not None
        serial = SerialInterface(path)
        tcp = TCPInterface("127.0.0.1", portNumber=running.port("r2"))
        try:
            serial.waitForConfig()
            assert serial.myInfo is not None and serial.myInfo.my_node_num == 0x5E1A0001
            inbox = Inbox(tcp)
            serial.sendData(b"over serial", portNum=256)
            assert inbox.wait_for("PRIVATE_APP")["decoded"]["payload"] == b"over serial"
        finally:
            serial.close()
            tcp.close()
    finally:
        running.stop()


@pytest.mark.radio
@pytest.mark.subprocess
def test_cli_info_sendtext_export_and_configure(tmp_path: Path) -> None:
    """Test that the meshtastic CLI's --info, --sendtext, --export-config and --configure work."""
    running = RunningMesh(loopback_spec(2))
    try:
        port = running.port("r1")
        info = meshtastic_cli(port, "--info")
        assert info.returncode == 0, info.stderr
        assert "Owner: Emulated radio 1 (R1)" in info.stdout
        assert "!5e1a0002" in info.stdout

        listener = TCPInterface("127.0.0.1", portNumber=running.port("r2"))
        try:
            inbox = Inbox(listener)
            sent = meshtastic_cli(port, "--sendtext", "noodsteunpunt open")
            assert sent.returncode == 0, sent.stderr
            assert inbox.wait_for("TEXT_MESSAGE_APP")["decoded"]["text"] == "noodsteunpunt open"
        finally:
            listener.close()

        exported = meshtastic_cli(port, "--export-config", "-")  # hangs if admin goes unanswered
        assert exported.returncode == 0, exported.stderr
        assert "channel_url: https://meshtastic.org/e/#" in exported.stdout

        profile = tmp_path / "gateway.yaml"
        profile.write_text(
            "owner: Gateway Zwolle\nowner_short: GZW\n"
            "config:\n  lora:\n    hopLimit: 5\n    modemPreset: MEDIUM_FAST\n    region: EU_868\n"
            "module_config:\n  telemetry:\n    deviceUpdateInterval: 900\n",
            encoding="utf-8",
        )
        configured = meshtastic_cli(port, "--configure", str(profile))
        assert configured.returncode == 0, configured.stderr
        after = meshtastic_cli(port, "--export-config", "-")
        assert "owner: Gateway Zwolle" in after.stdout
        assert "hopLimit: 5" in after.stdout
        assert "modemPreset: MEDIUM_FAST" in after.stdout
        assert "deviceUpdateInterval: 900" in after.stdout
        assert "Owner: Gateway Zwolle (GZW)" in meshtastic_cli(port, "--info").stdout
        assert running.server.mesh.radios["r1"].settings.preset.name == "MEDIUM_FAST"
    finally:
        running.stop()


class Control:
    """A JSON-lines client of the control port."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rwb")

    def __call__(self, **cmd: Any) -> dict[str, Any]:
        self.file.write(json.dumps(cmd).encode() + b"\n")
        self.file.flush()
        reply: dict[str, Any] = json.loads(self.file.readline())
        return reply

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.mark.radio
def test_control_port_unplug_replug_loss_and_stats() -> None:
    """Test that the control port unplugs and replugs a radio, cuts links and reports airtime."""
    running = RunningMesh(loopback_spec(2, time_scale=50.0), control=True)
    assert running.server.control_port is not None
    control = Control(running.server.control_port)
    try:
        a = TCPInterface("127.0.0.1", portNumber=running.port("r1"))
        b = TCPInterface("127.0.0.1", portNumber=running.port("r2"))
        b_reader = b._rxThread  # the library's only sign that its connection died
        try:
            assert control(cmd="unplug", radio="r2") == {"ok": True}
            b_reader.join(10)
            assert not b_reader.is_alive()
            a.sendData(b"while unplugged", portNum=256)
            assert control(cmd="status")["radios"]["r2"]["unplugged"] is True
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", running.port("r2")), timeout=2)
            assert control(cmd="replug", radio="r2") == {"ok": True}
            b2 = TCPInterface("127.0.0.1", portNumber=running.port("r2"))
            try:
                inbox = Inbox(b2)
                # The packet was heard while unplugged and waited in the radio's host queue.
                assert inbox.wait_for("PRIVATE_APP")["decoded"]["payload"] == b"while unplugged"
            finally:
                b2.close()
            assert control(cmd="cut", a="r1", b="r2") == {"ok": True}
            assert control(cmd="status")["links"] == []
            assert control(cmd="set_loss", a="r1", b="r2", loss=0.25)["ok"] is True
            stats = control(cmd="stats", radio="r1")
            assert stats["frames_sent"] >= 1
            assert 0 < stats["airtime_last_hour_s"] <= stats["airtime_total_s"]
            assert stats["duty_cycle_budget_s"] == 360.0
            assert control(cmd="nonsense")["ok"] is False
            assert control(cmd="unplug", radio="nope")["ok"] is False
        finally:
            a.close()
            b.close()
    finally:
        control.close()
        running.stop()


@pytest.mark.radio
@pytest.mark.subprocess
def test_relay_sim_mesh_command_serves_radios() -> None:
    """Test that `relay sim mesh --radios 2 --tcp-base PORT` serves radios the CLI can read."""
    base = free_port(count=2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "sim", "mesh", "--radios", "2", "--tcp-base", str(base)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip() == "ready":
                break
        assert f"radio r2 tcp 127.0.0.1:{base + 1}" in lines
        info = meshtastic_cli(base + 1, "--info")
        assert "Owner: Emulated radio 2 (R2)" in info.stdout
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
