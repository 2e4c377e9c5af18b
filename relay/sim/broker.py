"""A real mosquitto process on loopback, owned by the test or drill that started it.

``Mosquitto`` writes a config into its own working directory, starts ``mosquitto -c`` on a free
127.0.0.1 port, waits until the port accepts connections, and can stop (SIGTERM), kill (SIGKILL)
and restart it on the same port. It only ever signals the process it started itself, refuses to
start on a port where something else already listens, and deletes only a directory it created.

Sync use (pytest fixtures, drill runner)::

    with Mosquitto(persistence=True) as broker:
        ...  # broker.url == "mqtt://127.0.0.1:<port>"
        broker.restart()

Async use: the same object, with ``await broker.astart()``, ``astop()``, ``arestart()``, which
run the blocking waits in a worker thread.

Options: persistence (the data directory survives restarts), a TLS listener with client
certificates and the identity as username, an ACL file (see ``NODE_ACL``), and a bridge to
another broker (MQTT 3.1.1 with ``cleansession false``: with mosquitto 2.0 a v5 bridge loses
messages published towards it while it is down), or ``bridges`` as the kit writes them
(``relay.kit.mosquitto.make_bridge``: failover between several addresses). The config text
comes from relay.kit.mosquitto, the code that writes the product kit; ``Mosquitto.from_kit``
runs a kit's own mosquitto.conf.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from relay.kit.mosquitto import Bridge, BrokerConf, Limits, TlsFiles, render_acl, render_conf
from relay.sim.net import LOOPBACK, free_port, port_accepts, require_loopback

__all__ = ["NODE_ACL", "BridgeConfig", "BrokerError", "Mosquitto", "TlsListener"]

# The product kit's ACL (relay.kit.mosquitto.render_acl): each node writes only its own topics
# and reads every node's. The read rules must be ``pattern`` lines: in a mosquitto ACL file,
# ``topic`` lines before any ``user`` line apply to anonymous clients only, so ``topic read
# crisis/#`` gives certificate users nothing (verified with mosquitto 2.0.11).
NODE_ACL = render_acl("crisis")

_POLL_S = 0.02


class BrokerError(Exception):
    """The broker did not start, or stopped in a way we did not ask for."""


@dataclass(frozen=True, slots=True)
class TlsListener:
    """A TLS listener that demands a client certificate and uses its CN as the username."""

    ca: Path
    cert: Path
    key: Path
    require_certificate: bool = True
    use_identity_as_username: bool = True
    use_username_as_clientid: bool = True


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    """A bridge from this broker to another one on loopback (configured on this side only)."""

    name: str
    port: int
    host: str = LOOPBACK
    topics: tuple[str, ...] = ("crisis/# both 1",)
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


def _find_mosquitto() -> str:
    found = shutil.which("mosquitto")
    if found is not None:
        return found
    if Path("/usr/sbin/mosquitto").is_file():
        return "/usr/sbin/mosquitto"
    raise BrokerError("mosquitto not found: run deploy/dev-setup.sh")


def _kill_quietly(proc: subprocess.Popen[bytes]) -> None:
    """Finalizer: SIGKILL a process we started if its owner forgot to stop it."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class Mosquitto:
    """One mosquitto process on ``127.0.0.1:port`` with a generated config."""

    def __init__(
        self,
        *,
        port: int | None = None,
        workdir: Path | None = None,
        persistence: bool = False,
        autosave_interval_s: int | None = None,
        tls: TlsListener | None = None,
        acl: str | None = None,
        bridge: BridgeConfig | None = None,
        bridges: Sequence[Bridge] = (),
        max_packet_size: int | None = None,
        limits: Limits | None = None,
        extra_config: Sequence[str] = (),
        executable: str | None = None,
    ) -> None:
        self.host = LOOPBACK
        self.port = port if port is not None else free_port()
        self._owns_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix="relay-mosquitto-")) if workdir is None else workdir
        )
        self.persistence = persistence
        self.autosave_interval_s = autosave_interval_s
        self.tls = tls
        self.acl = acl
        self.bridge = bridge
        # Bridges as the kit writes them (relay.kit.mosquitto.make_bridge), e.g. a regional
        # broker's bridge with failover between two nationals; loopback addresses only.
        self.bridges = tuple(bridges)
        self.max_packet_size = max_packet_size
        self.limits = limits  # the kit's limits block (relay.kit.mosquitto.Limits), if given
        self.extra_config = tuple(extra_config)
        self._executable = executable
        self.kit_conf: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[..., Mosquitto] | None = None
        if bridge is not None:
            require_loopback(bridge.host)
        for b in self.bridges:
            for host, _ in b.addresses:
                require_loopback(host)

    @classmethod
    def from_kit(cls, conf: Path, *, port: int, workdir: Path | None = None) -> Mosquitto:
        """A broker that runs a ``relay broker kit`` directory's own ``mosquitto.conf``
        unchanged (its listener must be on ``port`` on loopback; it logs to our stderr.log)."""
        broker = cls(port=port, workdir=workdir)
        broker.kit_conf = conf
        return broker

    # -- paths and addresses -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<port>`` or ``mqtts://…`` for a TLS listener."""
        scheme = "mqtts" if self.tls is not None or self.kit_conf is not None else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.kit_conf if self.kit_conf is not None else self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def data_dir(self) -> Path:
        """Where persistence writes ``mosquitto.db``; it survives ``restart()``."""
        return self.workdir / "data"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- config ----------------------------------------------------------------------------------

    def render_config(self) -> str:
        """Return the mosquitto.conf text this broker runs with (relay.kit.mosquitto renders it,
        as it does for the product kit), or the kit's own file for ``Mosquitto.from_kit``."""
        if self.kit_conf is not None:
            return self.kit_conf.read_text()
        tls = None
        if self.tls is not None:
            tls = TlsFiles(
                ca=self.tls.ca,
                cert=self.tls.cert,
                key=self.tls.key,
                require_certificate=self.tls.require_certificate,
                use_identity_as_username=self.tls.use_identity_as_username,
                use_username_as_clientid=self.tls.use_username_as_clientid,
            )
        bridges: tuple[Bridge, ...] = ()
        if self.bridge is not None:
            b = self.bridge
            bridges = (
                Bridge(
                    name=b.name,
                    addresses=((b.host, b.port),),
                    topics=b.topics,
                    ca=b.ca,
                    cert=b.cert,
                    key=b.key,
                ),
            )
        bridges += self.bridges
        conf = BrokerConf(
            port=self.port,
            bind=self.host,
            tls=tls,
            acl_file=self.workdir / "acl" if self.acl is not None else None,
            persistence_dir=self.data_dir if self.persistence else None,
            autosave_interval_s=self.autosave_interval_s,
            log_file=self.log_path,
            log_types=("all",),
            # As root mosquitto drops to user "mosquitto", which cannot write our temp dir.
            user=pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None,
            max_packet_size=self.max_packet_size,
            limits=self.limits,
            bridges=bridges,
            extra=self.extra_config,
            header="generated by relay.sim.broker for one test or drill run",
        )
        return render_conf(conf)

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.kit_conf is not None:
            return  # the kit's files are used as they are
        if self.persistence:
            self.data_dir.mkdir(exist_ok=True)
        if self.acl is not None:
            (self.workdir / "acl").write_text(self.acl)
        self.config_path.write_text(self.render_config())

    # -- lifecycle (sync) ------------------------------------------------------------------------

    def start(self, *, timeout: float = 5.0) -> None:
        """Start mosquitto and return once its port accepts connections."""
        if self.running:
            raise BrokerError(f"broker on port {self.port} is already running")
        if port_accepts(self.host, self.port):
            raise BrokerError(f"port {self.port} is in use by a process we did not start")
        self._write_config()
        executable = self._executable or _find_mosquitto()
        with (self.workdir / "stderr.log").open("ab") as err:
            self._proc = subprocess.Popen(
                [executable, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,
            )
        self._finalizer = weakref.finalize(self, _kill_quietly, self._proc)
        self.wait_ready(timeout=timeout)

    def wait_ready(self, *, timeout: float = 5.0) -> None:
        """Wait until our process accepts TCP connections; raise ``BrokerError`` otherwise."""
        proc = self._require_proc()
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise BrokerError(
                    f"mosquitto exited with status {proc.returncode}:\n{self.read_log()[-2000:]}"
                )
            if port_accepts(self.host, self.port, timeout=0.2):
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"mosquitto did not accept connections within {timeout} s")
            time.sleep(_POLL_S)

    def stop(self, *, timeout: float = 5.0) -> int:
        """SIGTERM our process (it saves persistence on the way out); return its exit status."""
        proc = self._require_proc()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise BrokerError(f"mosquitto ignored SIGTERM for {timeout} s; killed") from None
        return self._forget()

    def kill(self) -> int:
        """SIGKILL our process (nothing is saved, like a power cut); return its exit status."""
        proc = self._require_proc()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        return self._forget()

    def restart(self, *, kill: bool = False, timeout: float = 5.0) -> None:
        """Stop (or kill) and start again on the same port, keeping the data directory."""
        if self._proc is not None:
            if kill:
                self.kill()
            else:
                self.stop(timeout=timeout)
        self.start(timeout=timeout)

    def close(self) -> None:
        """Stop if running and delete the working directory if we created it."""
        if self._proc is not None:
            try:
                self.stop()
            finally:
                self._proc = None
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise BrokerError("this broker was not started (or already stopped)")
        return self._proc

    def _forget(self) -> int:
        proc = self._require_proc()
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self._proc = None
        return proc.returncode

    # -- logs ------------------------------------------------------------------------------------

    def read_log(self) -> str:
        """Return mosquitto's log so far (its own log file, then anything on stderr)."""
        parts = []
        for path in (self.log_path, self.workdir / "stderr.log"):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def wait_for_log(self, needle: str, *, timeout: float = 5.0) -> str:
        """Wait until ``needle`` appears in the log; return the log. Raise ``TimeoutError``."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.read_log()
            if needle in text:
                return text
            if time.monotonic() > deadline:
                raise TimeoutError(f"{needle!r} not in mosquitto log within {timeout} s")
            time.sleep(_POLL_S)

    # -- async wrappers --------------------------------------------------------------------------
    # The deadlines belong to the blocking waits in the worker thread: cancelling ``to_thread``
    # cannot stop those, so these take ``timeout`` like their sync twins (hence the ASYNC109
    # ignores).

    async def astart(self, *, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        await asyncio.to_thread(self.start, timeout=timeout)

    async def astop(self, *, timeout: float = 5.0) -> int:  # noqa: ASYNC109
        return await asyncio.to_thread(self.stop, timeout=timeout)

    async def akill(self) -> int:
        return await asyncio.to_thread(self.kill)

    async def arestart(self, *, kill: bool = False, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        await asyncio.to_thread(self.restart, kill=kill, timeout=timeout)

    async def await_log(self, needle: str, *, timeout: float = 5.0) -> str:  # noqa: ASYNC109
        return await asyncio.to_thread(self.wait_for_log, needle, timeout=timeout)

    # -- context managers ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        await self.astart()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.close)
