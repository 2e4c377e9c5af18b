"""The mosquitto harness: start, restart on the same port, kill, and its safety checks."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from relay.sim.broker import BrokerError, Mosquitto
from relay.sim.net import port_accepts

pytestmark = pytest.mark.broker


def test_start_accepts_connections_and_stop_frees_the_port(mosquitto: Mosquitto) -> None:
    """Test that a started broker accepts TCP on its port and stop() frees it."""
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    assert port_accepts(mosquitto.host, mosquitto.port)
    assert mosquitto.stop() == 0
    assert not port_accepts(mosquitto.host, mosquitto.port)
    assert "mosquitto version" in mosquitto.read_log()


def test_restart_keeps_port_and_data_dir(mosquitto_factory: Callable[..., Mosquitto]) -> None:
    """Test that restart() comes back on the same port and persistence is saved on SIGTERM."""
    broker = mosquitto_factory(persistence=True)
    port, pid = broker.port, broker.pid
    broker.restart()
    assert broker.port == port and broker.pid != pid
    assert (broker.data_dir / "mosquitto.db").exists()
    broker.restart(kill=True)
    assert port_accepts(broker.host, port)


def test_kill_is_sigkill(mosquitto: Mosquitto) -> None:
    """Test that kill() ends the broker with SIGKILL."""
    assert mosquitto.kill() == -9
    assert not mosquitto.running


def test_refuses_a_port_someone_else_listens_on() -> None:
    """Test that start() refuses a port where a process it did not start already listens."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        broker = Mosquitto(port=other.getsockname()[1])
        with pytest.raises(BrokerError, match="did not start"):
            broker.start()
        broker.close()


def test_bad_config_reports_the_log() -> None:
    """Test that a broker that exits at start raises BrokerError with its log."""
    broker = Mosquitto(extra_config=["no_such_option 1"])
    with pytest.raises(BrokerError, match="exited"):
        broker.start()
    broker.close()
