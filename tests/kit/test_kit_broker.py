"""The broker kit's own files run a real mosquitto that refuses what the ACL and TLS forbid."""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.kit import Kit, revoke, write_kit
from relay.kit.pki import KeyType
from relay.sim.broker import Mosquitto
from relay.sim.net import free_port
from tests.kit.support import Client, kit_root

pytestmark = [pytest.mark.broker]


def _kit(root: Path, key_type: KeyType = "p256") -> tuple[Kit, Mosquitto]:
    port = free_port()
    kit = write_kit(
        root / "vr07",
        ca_name="VR07 test CA",
        nodes=["a", "b"],
        port=port,
        bind="127.0.0.1",
        key_type=key_type,
    )
    return kit, Mosquitto.from_kit(kit.conf, port=port)


@pytest.fixture
def kit() -> Iterator[tuple[Kit, Mosquitto]]:
    with kit_root() as root:
        kit, broker = _kit(root)
        with broker:
            yield kit, broker


def _client(kit: Kit, node: str | None, client_id: str, **kw: object) -> Client:
    pair = kit.nodes[node] if node is not None else None
    return Client(kit.port, kit.ca, pair, client_id=client_id, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("key_type", ["p256", "ed25519"])
def test_node_certificate_connects_and_anonymous_is_refused(key_type: KeyType) -> None:
    """Test that a node connects with its kit certificate (P-256 and Ed25519) and a client
    without a certificate is refused."""
    with kit_root() as root:
        kit, broker = _kit(root, key_type)
        with broker:
            a = _client(kit, "a", "a")
            assert a.connect()
            a.close()
            anonymous = _client(kit, None, "anon")
            assert not anonymous.connect()
            broker.wait_for_log("certificate")


@pytest.mark.skipif(os.geteuid() != 0, reason="the privilege drop happens only as root")
def test_broker_started_as_root_runs_as_mosquitto_and_keys_stay_private(
    kit: tuple[Kit, Mosquitto],
) -> None:
    """Test that mosquitto started as root on the kit drops to the mosquitto user and that no
    private key is readable by others."""
    k, broker = kit
    assert broker.pid is not None
    uid_line = next(
        line
        for line in Path(f"/proc/{broker.pid}/status").read_text().splitlines()
        if line.startswith("Uid:")
    )
    assert int(uid_line.split()[1]) == pwd.getpwnam("mosquitto").pw_uid
    for key in k.directory.glob("*.key"):
        assert key.stat().st_mode & 0o007 == 0, key
    for node in ("a", "b"):
        assert (k.directory / f"{node}.key").stat().st_mode & 0o777 == 0o600


def test_a_cannot_publish_on_bs_topics_nor_forge_its_status(kit: tuple[Kit, Mosquitto]) -> None:
    """Test that a's certificate gets reason 135 on b's msg and status topics and nothing of it
    reaches b, while a's own publication does."""
    k, _ = kit
    b = _client(k, "b", "b")
    a = _client(k, "a", "a")
    assert b.connect() and a.connect()
    try:
        b.subscribe("crisis/+/msg")
        b.subscribe("crisis/+/status")
        assert a.publish("crisis/b/msg", b"forged decision").value == 135
        assert a.publish("crisis/b/status", b'{"state":"offline"}', retain=True).value == 135
        assert a.publish("crisis/b/probe", b"x").value == 135
        assert not a.publish("crisis/a/msg", b"genuine").is_failure
        b.wait_message("crisis/a/msg", b"genuine")
        assert [p for _, p in b.messages] == [b"genuine"]
    finally:
        a.close()
        b.close()


def test_client_id_takeover_is_refused(kit: tuple[Kit, Mosquitto]) -> None:
    """Test that a client with a's certificate claiming b's client id does not disconnect b or
    take its session: the broker makes its client id "a"."""
    k, broker = kit
    b = _client(k, "b", "b")
    assert b.connect()
    impostor = _client(k, "a", "b", will=("crisis/b/status", b'{"state":"offline"}'))
    try:
        assert impostor.connect()
        broker.wait_for_log("as a (p5")
        assert not impostor.publish("crisis/a/msg", b"still a").is_failure
        assert not b.disconnected.is_set()
        assert not b.publish("crisis/b/msg", b"b is still here").is_failure
    finally:
        impostor.close()
        b.close()


def test_message_over_max_inbound_bytes_is_not_carried(kit: tuple[Kit, Mosquitto]) -> None:
    """Test that message_size_limit (the node's max_inbound_bytes) stops a larger payload: its
    sender is disconnected (mosquitto 2.0.11, MQTT v5) and nothing reaches the subscriber."""
    k, _ = kit
    a, b = _client(k, "a", "a"), _client(k, "b", "b")
    assert a.connect() and b.connect()
    try:
        b.subscribe("crisis/a/msg")
        a.publish_nowait("crisis/a/msg", b"x" * 4097)
        assert a.disconnected.wait(10)
        a.close()
        a = _client(k, "a", "a")
        assert a.connect()
        assert not a.publish("crisis/a/msg", b"y" * 4096).is_failure
        b.wait_message("crisis/a/msg", b"y" * 4096)
        assert len(b.messages) == 1
    finally:
        a.close()
        b.close()


def test_revoked_certificate_is_refused_after_restart(kit: tuple[Kit, Mosquitto]) -> None:
    """Test that a certificate in the kit's CRL is refused once mosquitto restarts."""
    k, broker = kit
    revoke(k.directory, "b")
    broker.restart()
    b = _client(k, "b", "b")
    assert not b.connect()
    a = _client(k, "a", "a")
    assert a.connect()
    a.close()
