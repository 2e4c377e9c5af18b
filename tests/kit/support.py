"""Helpers for the broker kit tests: a kit in a directory the mosquitto user can enter, and a
small synchronous paho client with TLS client certificates."""

from __future__ import annotations

import shutil
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

WAIT_S = 10.0


@contextmanager
def kit_root() -> Iterator[Path]:
    """A fresh directory that the ``mosquitto`` user may enter (pytest's tmp_path is 0700, and
    mosquitto started as root drops to that user before it reads the kit)."""
    root = Path(tempfile.mkdtemp(prefix="relay-kit-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


class Client:
    """One MQTT v5 connection with a client certificate (or none); calls wait for answers."""

    def __init__(
        self,
        port: int,
        ca: Path,
        pair: tuple[Path, Path] | None,
        *,
        client_id: str,
        will: tuple[str, bytes] | None = None,
    ) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connect_code: ReasonCode | None = None
        self._acks: dict[int, ReasonCode] = {}
        self._lock = threading.Condition()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        context = ssl.create_default_context(cafile=str(ca))
        if pair is not None:
            context.load_cert_chain(*pair)
        c.tls_set_context(context)
        if will is not None:
            c.will_set(will[0], will[1], qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self._c = c
        self._port = port

    def _on_connect(self, c: object, u: object, f: object, rc: ReasonCode, p: object) -> None:
        self.connect_code = rc
        if not rc.is_failure:
            self.connected.set()

    def _on_disconnect(self, c: object, u: object, f: object, rc: ReasonCode, p: object) -> None:
        self.disconnected.set()

    def _on_publish(self, c: object, u: object, mid: int, rc: ReasonCode, p: object) -> None:
        with self._lock:
            self._acks[mid] = rc
            self._lock.notify_all()

    def _on_subscribe(self, c: object, u: object, mid: int, rcs: object, p: object) -> None:
        with self._lock:
            self._acks[mid] = ReasonCode(PacketTypes.SUBACK, identifier=0)
            self._lock.notify_all()

    def _on_message(self, c: object, u: object, m: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((m.topic, bytes(m.payload)))
            self._lock.notify_all()

    def connect(self) -> bool:
        """Connect; True when the broker accepted us within WAIT_S, False when it refused."""
        try:
            self._c.connect("127.0.0.1", self._port, keepalive=30)
        except (OSError, ssl.SSLError):
            return False
        self._c.loop_start()
        accepted = self.connected.wait(WAIT_S / 2)
        return accepted and not self.disconnected.is_set()

    def _wait_ack(self, mid: int) -> ReasonCode:
        with self._lock:
            if not self._lock.wait_for(lambda: mid in self._acks, WAIT_S):
                raise TimeoutError(f"no acknowledgement for mid {mid}")
            return self._acks.pop(mid)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> ReasonCode:
        """Publish QoS 1 and return the PUBACK's reason code."""
        return self._wait_ack(self._c.publish(topic, payload, qos=1, retain=retain).mid)

    def publish_nowait(self, topic: str, payload: bytes) -> None:
        """Queue a QoS 1 publish without waiting for its PUBACK."""
        self._c.publish(topic, payload, qos=1)

    def subscribe(self, topic: str) -> None:
        result, mid = self._c.subscribe(topic, qos=1)
        assert result == paho.MQTT_ERR_SUCCESS
        assert mid is not None
        self._wait_ack(mid)

    def wait_message(self, topic: str, payload: bytes) -> None:
        with self._lock:
            if not self._lock.wait_for(lambda: (topic, payload) in self.messages, WAIT_S):
                raise TimeoutError(f"{payload!r} on {topic} did not arrive")

    def close(self) -> None:
        self._c.disconnect()
        self._c.loop_stop()
