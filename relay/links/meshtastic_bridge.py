"""The thread bridge to a Meshtastic radio: the only relay module that imports ``meshtastic``
outside the emulator (``relay.sim`` builds the device side from meshtastic's protobufs).

The library is thread-based: a reader thread per interface, one global "publishing" thread that
runs every pypubsub listener, ``onResponse`` handlers on the reader thread, and blocking writes
(serial writes sleep 0.1 s each). This module keeps all of that on its side of one line:

* every blocking library call (open, ``sendData``, ``close``) runs on ONE dedicated worker thread
  per interface, and every wait for it is bounded by a timeout;
* every library callback (received packet, ACK/NAK, connection lost) crosses into asyncio in
  exactly one place, ``_post``, with ``loop.call_soon_threadsafe``; on the loop the event goes
  into a bounded queue. No callback touches an asyncio object directly.

``RadioBridge.run()`` is its own reconnect supervisor: the library reconnects TCP once and serial
never, and a dead reader thread means building a new interface. Loss is detected through the
``meshtastic.connection.lost`` topic and through sends that fail or time out; the supervisor then
closes the interface and builds a new one after a jittered exponential backoff, for ever, so a
radio that is unplugged and plugged back resumes without restarting anything.

pypubsub holds listeners by WEAK reference: we subscribe bound methods of the bridge itself (which
the driver keeps alive) and never lambdas; the listeners are global, so each one checks that the
interface is ours.

Known library trap (FACTS.md): the library counts the radio's ``QueueStatus.free`` down locally and
spins for ever while it is 0, so a radio that stops sending QueueStatus deadlocks ``sendData``.
A send that exceeds ``call_timeout_s`` therefore declares the interface dead; closing it clears the
library's stale queue status so the stuck thread can run out, and the next interface gets a fresh
worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import structlog
from meshtastic.protobuf import channel_pb2, config_pb2, mesh_pb2, portnums_pb2
from pubsub import pub

from relay.backoff import equal_jitter, exponential
from relay.links import LinkUnavailable
from relay.links.radio_events import (
    BridgeEvent,
    Connected,
    Disconnected,
    Endpoint,
    PacketIn,
    RadioLora,
    Routed,
)
from relay.mesh.routing import BROADCAST, PRIVATE_APP, RoutingError

ROUTING_APP: Final = int(portnums_pb2.PortNum.ROUTING_APP)

PRIORITY_HIGH: Final = int(mesh_pb2.MeshPacket.Priority.HIGH)
PRIORITY_RELIABLE: Final = int(mesh_pb2.MeshPacket.Priority.RELIABLE)

# The firmware's well-known default channel key (Channels.cpp defaultpsk): public, as are its
# variants with another last byte (the one-byte PSK indexes).
DEFAULT_CHANNEL_KEY: Final = bytes.fromhex("d4f1bb3a20290759f0bcffabcf4e6901")

log = structlog.get_logger("relay.links.meshtastic_bridge")

T = TypeVar("T")


class RadioError(LinkUnavailable):
    """The radio could not take a packet now (not connected, send failed or timed out)."""


# ------------------------------------------------------------------------------- worker thread


class _Worker:
    """One thread that runs blocking library calls in order (the aiosqlite pattern).

    Results come back through ``loop.call_soon_threadsafe`` into futures that may have been
    cancelled meanwhile (guarded). ``abandon`` lets a stuck thread run out on its own.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, fut = job
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
                self._resolve(fut, None, exc)
            else:
                self._resolve(fut, result, None)

    def _resolve(self, fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
        def settle() -> None:
            if fut.done():
                return  # the caller timed out or was cancelled
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(settle)

    async def call(self, fn: Callable[[], T], timeout_s: float) -> T:
        fut: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put((fn, fut))
        return await asyncio.wait_for(fut, timeout_s)

    def stop(self) -> None:
        """Let the thread finish its current job and exit (never joined: it may be stuck)."""
        self._jobs.put(None)


# ------------------------------------------------------------------------------------- bridge


class _AckWaiter:
    """Receives the library's ``onResponse`` for one packet (on the reader thread).

    The library keeps it strongly in ``responseHandlers``; it must be a bound method with a
    ``__name__`` (a ``functools.partial`` breaks the library's ACK branch).
    """

    __slots__ = ("bridge", "generation", "ref")

    def __init__(self, bridge: RadioBridge, ref: int, generation: int) -> None:
        self.bridge = bridge
        self.ref = ref
        self.generation = generation

    def onAckNak(self, packet: dict[str, Any]) -> None:  # the name the library looks for
        self.bridge._on_response(self.ref, self.generation, packet)


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    connect_timeout_s: float = 45.0  # the library's own config wait is 30 s
    call_timeout_s: float = 15.0  # one sendData; past it the interface counts as dead
    close_timeout_s: float = 10.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    max_events: int = 1024


class RadioBridge:
    """One Meshtastic radio, seen from asyncio: ``run()`` keeps it connected, ``send()`` sends.

    Events (``BridgeEvent``) go into ``events`` (bounded); ``notify`` is called on the loop after
    each one, so the owner can wake up. Construct and use it on the event loop's thread.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        name: str = "mesh",
        settings: BridgeSettings | None = None,
        notify: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.name = name
        self.settings = settings or BridgeSettings()
        self.events: asyncio.Queue[BridgeEvent] = asyncio.Queue(self.settings.max_events)
        self._notify = notify or (lambda: None)
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self.log = log.bind(link=name, radio=str(endpoint))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._iface: Any = None
        self._opening: Any = None  # the interface being connected (worker thread sets it)
        self._worker: _Worker | None = None
        self._generation = 0
        self._lost = asyncio.Event()
        self._lost_detail = ""
        self._refs = itertools.count(1)
        self.node_num: int | None = None
        self.counters: Counter[str] = Counter()
        self._subscribed = False

    # -- state ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._iface is not None and not self._lost.is_set()

    def statistics(self) -> dict[str, Any]:
        return {
            "endpoint": str(self.endpoint),
            "connected": self.connected,
            "node_num": self.node_num,
            "generation": self._generation,
            "events_queued": self.events.qsize(),
            **dict(self.counters),
        }

    def new_ref(self) -> int:
        return next(self._refs)

    # -- the supervisor ---------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, watch, reconnect with jittered exponential backoff; until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._subscribe()
        attempt = 0  # waits since the last good connection
        try:
            while True:
                self._generation += 1
                gen = self._generation
                self._lost.clear()
                worker = _Worker(self._loop, f"meshtastic-{self.name}-{gen}")
                self._worker = worker
                try:
                    iface, lora = await worker.call(self._open, self.settings.connect_timeout_s)
                except Exception as exc:  # noqa: BLE001 - any failure (timeouts too): retry
                    self._opening = None  # a late success must not feed us packets
                    self.counters["connect_failures"] += 1
                    self.log.warning(
                        "radio_connect_failed", error=repr(exc), retry_in=self._backoff(attempt)
                    )
                    worker.stop()
                    self._emit(Disconnected(f"connect failed: {exc!r}", gen))
                else:
                    self._iface, self._opening = iface, None
                    self.node_num = int(iface.myInfo.my_node_num)
                    self.counters["connects"] += 1
                    self.log.info("radio_connected", node_num=f"!{self.node_num:08x}", gen=gen)
                    self._emit(Connected(self.node_num, gen, lora))
                    attempt = 0
                    await self._lost.wait()
                    self.log.warning("radio_lost", detail=self._lost_detail, gen=gen)
                    self._emit(Disconnected(self._lost_detail, gen))
                    await self._close(worker, iface)
                # Jittered: concurrent nodes must not reconnect in lockstep.
                await asyncio.sleep(self._backoff(attempt, rng=self._rng))
                attempt += 1
        finally:
            iface, self._iface = self._iface, None
            if iface is not None and self._worker is not None:
                # Cancelled: close politely without waiting (it may block), on a spare thread.
                self._kill(iface)
                threading.Thread(target=self._quiet_close, args=(iface,), daemon=True).start()
                self._worker.stop()
            self._unsubscribe()

    def _backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before reconnect ``attempt + 1``: with ``rng`` jittered, else its ceiling."""
        s = self.settings
        if rng is None:
            return exponential(attempt, base=s.backoff_initial_s, cap=s.backoff_max_s)
        return equal_jitter(attempt, base=s.backoff_initial_s, cap=s.backoff_max_s, rng=rng)

    def _open(self) -> tuple[Any, RadioLora | None]:
        """Build and connect an interface (worker thread); waits for the config download, and
        returns the interface with the radio's own LoRa settings read from that download.

        Built with ``connectNow=False`` so that ``_opening`` names it before its reader thread
        starts: packets the radio buffered for us while we were away arrive right after the
        config, before this call returns, and must not be taken for another interface's.
        """
        wait_s = max(int(self.settings.connect_timeout_s * 0.8), 1)  # the library's own waits
        if self.endpoint.tcp is not None:
            from meshtastic.tcp_interface import TCPInterface

            host, port = self.endpoint.tcp
            iface = TCPInterface(host, portNumber=port, connectNow=False, timeout=wait_s)
        else:
            from meshtastic.serial_interface import SerialInterface

            iface = SerialInterface(self.endpoint.serial, connectNow=False, timeout=wait_s)
        self._opening = iface
        try:
            iface.connect()
            iface.waitForConfig()
        except BaseException:
            self._opening = None
            self._kill(iface)
            with contextlib.suppress(Exception):
                iface.close()
            raise
        return iface, self._lora_of(iface)

    @staticmethod
    def _lora_of(iface: Any) -> RadioLora | None:
        """The lora section of the local node's config (``Config.LoRaConfig``), if it sent one."""
        local = getattr(iface.localNode, "localConfig", None)
        if local is None or not local.HasField("lora"):
            return None
        lora = local.lora
        cls = config_pb2.Config.LoRaConfig
        preset = cls.ModemPreset.Name(lora.modem_preset) if lora.use_preset else "CUSTOM"
        return RadioLora(
            preset,
            cls.RegionCode.Name(lora.region),
            bool(lora.override_duty_cycle),
            RadioBridge._channel_key(iface),
        )

    @staticmethod
    def _channel_key(iface: Any) -> str:
        """Whether the primary channel's key is private, the public default, or no key at all.

        One-byte PSKs are indexes into the firmware's well-known default key (``AQ==`` is index 1;
        0 means no encryption), so every one of them is public; so is the default key written out.
        """
        for ch in getattr(iface.localNode, "channels", None) or ():
            if ch.role == channel_pb2.Channel.Role.PRIMARY:
                psk = bytes(ch.settings.psk)
                if psk in (b"", b"\x00"):
                    return "none"
                if len(psk) == 1 or psk[:-1] == DEFAULT_CHANNEL_KEY[:-1]:
                    return "default"
                return "private"
        return "unknown"

    async def _close(self, worker: _Worker, iface: Any) -> None:
        self._iface = None
        self._kill(iface)
        try:
            await worker.call(iface.close, self.settings.close_timeout_s)
        except Exception as exc:  # noqa: BLE001 - it is gone either way
            self.log.info("radio_close_failed", error=repr(exc))
        worker.stop()

    @staticmethod
    def _quiet_close(iface: Any) -> None:
        with contextlib.suppress(Exception):
            iface.close()

    @staticmethod
    def _kill(iface: Any) -> None:
        """Unstick a thread spinning on the library's local queue count (FACTS.md deadlock)."""
        with contextlib.suppress(Exception):
            iface._wantExit = True
            iface.queueStatus = None
            iface.queue.clear()

    def declare_lost(self, detail: str) -> None:
        """The owner saw the link fail (e.g. sends timing out): rebuild the interface."""
        if not self._lost.is_set():
            self._lost_detail = detail
            self._lost.set()

    # -- sending ----------------------------------------------------------------------------

    async def send(
        self, payload: bytes, *, ref: int, to: int = BROADCAST, want_ack: bool, priority: int
    ) -> int:
        """Hand one packet to the radio; return its packet id. ACK/NAK arrive as ``Routed``.

        Raises ``RadioError`` when not connected or when the library fails or takes longer than
        ``call_timeout_s`` (then the interface is declared lost and rebuilt).
        """
        iface, worker, gen = self._iface, self._worker, self._generation
        if iface is None or worker is None or self._lost.is_set():
            raise RadioError("radio not connected")
        waiter = _AckWaiter(self, ref, gen) if want_ack else None

        def job() -> int:
            packet = iface.sendData(
                payload,
                destinationId=to,
                portNum=PRIVATE_APP,
                wantAck=want_ack,
                onResponse=waiter.onAckNak if waiter is not None else None,
                onResponseAckPermitted=True,
                priority=priority,
            )
            return int(packet.id)

        try:
            packet_id = await worker.call(job, self.settings.call_timeout_s)
        except TimeoutError as exc:
            self.counters["send_timeouts"] += 1
            self.declare_lost("send timed out (radio not answering)")
            raise RadioError("send timed out") from exc
        except Exception as exc:  # library errors are many and untyped
            self.counters["send_errors"] += 1
            self.declare_lost(f"send failed: {exc!r}")
            raise RadioError(f"send failed: {exc!r}") from exc
        self.counters["packets_sent"] += 1
        return packet_id

    # -- library callbacks (library threads) ------------------------------------------------

    def _subscribe(self) -> None:
        if not self._subscribed:
            pub.subscribe(self._on_receive, "meshtastic.receive")
            pub.subscribe(self._on_connection_lost, "meshtastic.connection.lost")
            self._subscribed = True

    def _unsubscribe(self) -> None:
        if self._subscribed:
            with contextlib.suppress(Exception):
                pub.unsubscribe(self._on_receive, "meshtastic.receive")
                pub.unsubscribe(self._on_connection_lost, "meshtastic.connection.lost")
            self._subscribed = False

    def _on_receive(self, packet: dict[str, Any], interface: Any) -> None:
        """pubsub's publishing thread: every packet of every interface in the process."""
        if interface is None or (interface is not self._iface and interface is not self._opening):
            return
        raw = packet.get("raw")
        if raw is None or not raw.HasField("decoded") or raw.decoded.portnum != PRIVATE_APP:
            return
        sender = int(getattr(raw, "from"))
        hops = raw.hop_start - raw.hop_limit if raw.hop_start else None
        self._post(PacketIn(bytes(raw.decoded.payload), sender, int(raw.to), int(raw.id), hops))

    def _on_connection_lost(self, interface: Any) -> None:
        """pubsub's publishing thread: some interface's reader thread ended."""
        if interface is self._iface and interface is not None:
            self._post_call(self.declare_lost, "connection lost (reader thread ended)")

    def _on_response(self, ref: int, generation: int, packet: dict[str, Any]) -> None:
        """The reader thread: an ACK or NAK for the packet ``ref``."""
        raw = packet.get("raw")
        if raw is None or raw.decoded.portnum != ROUTING_APP:
            return  # a data reply; we never ask for those
        routing = mesh_pb2.Routing()
        try:
            routing.ParseFromString(raw.decoded.payload)
        except Exception:  # noqa: BLE001 - a garbled routing payload is not an ACK
            return
        sender = int(getattr(raw, "from"))
        iface = self._iface
        own = self.node_num if iface is not None else None
        event = Routed(
            ref,
            int(raw.decoded.request_id),
            int(routing.error_reason),
            sender,
            implicit=routing.error_reason == RoutingError.NONE
            and own is not None
            and sender == own,
        )
        if generation == self._generation:
            self._post(event)

    # -- the one bridge into asyncio ---------------------------------------------------------

    def _post(self, event: BridgeEvent) -> None:
        """Any thread: hand ``event`` to the loop, which queues it (bounded)."""
        self._post_call(self._emit, event)

    def _post_call(self, fn: Callable[[T], None], arg: T) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop closed: shutting down
            loop.call_soon_threadsafe(fn, arg)

    def _emit(self, event: BridgeEvent) -> None:
        """Loop thread only."""
        try:
            self.events.put_nowait(event)
        except asyncio.QueueFull:
            # The loop is far behind. A dropped packet is repaired by NACK or end-to-end retry;
            # a dropped ACK makes its frame time out and the transmission fail and retry.
            self.counters["events_dropped"] += 1
            self.log.warning("radio_event_dropped", kind=type(event).__name__)
            return
        self._notify()


def probe_radio(
    tcp: tuple[str, int] | None, serial: str | None, timeout_s: float
) -> dict[str, Any]:
    """Connect once, read what ``relay doctor`` checks, and close (blocking; not for the daemon).

    Returns ``firmware``, ``region`` and ``preset`` (enum names, e.g. ``EU_868``, ``LONG_FAST``)
    and ``psk`` (channel 0's key bytes; ``b"\\x01"`` is the public default ``AQ==``).
    """
    from meshtastic.protobuf import config_pb2

    wait_s = max(int(timeout_s), 1)
    if tcp is not None:
        from meshtastic.tcp_interface import TCPInterface

        iface = TCPInterface(tcp[0], portNumber=tcp[1], timeout=wait_s)
    else:
        from meshtastic.serial_interface import SerialInterface

        iface = SerialInterface(serial, timeout=wait_s)
    try:
        lora = iface.localNode.localConfig.lora
        channels = iface.localNode.channels or []
        primary = next((c for c in channels if c.index == 0), None)
        return {
            "firmware": iface.metadata.firmware_version if iface.metadata else None,
            "region": config_pb2.Config.LoRaConfig.RegionCode.Name(lora.region),
            "preset": config_pb2.Config.LoRaConfig.ModemPreset.Name(lora.modem_preset),
            "psk": bytes(primary.settings.psk) if primary is not None else None,
        }
    finally:
        iface.close()
