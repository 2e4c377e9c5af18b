"""A set of relay nodes on one machine: keys, roster, configs and node processes.

Used by the integration tests, the benchmarks and the drill runner. Every node is a real
``relay run`` process with its own SQLite store and API socket; brokers and radios are given to it
as URLs and addresses (loopback only).
"""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay import api
from relay.daemon import CLOCK_SKEW_ENV
from relay.envelope import Audience, Decision, Kind, Precedence, key_id, seal
from relay.keys import SequenceCounter, load_private, load_public, raw_public, write_keypair
from relay.rosterfile import write_roster
from relay.sim.net import LOOPBACK, free_port
from relay.trust import DEFAULT_KINDS, Role, Roster, RosterEntry, Scope, revocation_decision


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    regions: tuple[str, ...] = ()
    mqtt: tuple[str, ...] = ()  # broker URLs in preference order
    radios: tuple[str, ...] = ()  # "HOST:PORT" of emulated or meshtasticd radios
    options: dict[str, Any] = field(default_factory=dict)  # extra [node] keys
    clock_skew_s: float = 0.0  # play a node whose wall clock is this far off (RELAY_CLOCK_SKEW_S)
    mqtt_options: dict[str, Any] = field(default_factory=dict)  # [mqtt] keys over the defaults
    radio_options: dict[str, Any] = field(default_factory=dict)  # more keys of each [[mesh.radio]]
    broker_options: dict[str, Any] = field(default_factory=dict)  # keys of each [[mqtt.broker]]
    mqtt_tls: tuple[Path, Path, Path] | None = None  # ca, cert, key for every mqtts:// broker


@dataclass(frozen=True, slots=True)
class IssuerSpec:
    name: str
    scope: tuple[str, ...] = ("all",)
    role: Role = Role.ISSUER


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


class Cluster:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.keys = directory / "keys"
        self.roster_path = directory / "roster.cbor"
        self.specs: dict[str, NodeSpec] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, Any] = {}

    # ------------------------------------------------------------------ set-up

    def create(
        self,
        nodes: Sequence[NodeSpec],
        issuers: Iterable[IssuerSpec],
        *,
        extra: Iterable[RosterEntry] = (),
    ) -> None:
        """Keys, roster and configs; ``extra`` entries (e.g. simulated nodes whose keys the
        caller holds, relay.sim.statuses) join the roster as they are."""
        self.dir.mkdir(parents=True, exist_ok=True)
        _, _, root = write_keypair(self.keys, "root", force=True)
        entries: list[RosterEntry] = []
        for spec in nodes:
            _, _, key = write_keypair(self.keys, spec.name, force=True)
            scope = Scope.parse([f"region:{r}" for r in spec.regions])
            entries.append(
                RosterEntry(
                    raw_public(key.public_key()),
                    spec.name,
                    Role.NODE,
                    scope,
                    DEFAULT_KINDS[Role.NODE],
                )
            )
            self.specs[spec.name] = spec
        for issuer in issuers:
            _, _, key = write_keypair(self.keys, issuer.name, force=True)
            entries.append(
                RosterEntry(
                    raw_public(key.public_key()),
                    issuer.name,
                    issuer.role,
                    Scope.parse(issuer.scope),
                    DEFAULT_KINDS[issuer.role],
                )
            )
        entries.extend(extra)
        serial = SequenceCounter(self.keys / "root.key").reserve()
        write_roster(self.roster_path, Roster(serial=serial, entries=tuple(entries)), root)
        for spec in nodes:
            self.write_config(spec)

    def node_dir(self, name: str) -> Path:
        return self.dir / "nodes" / name

    def config_path(self, name: str) -> Path:
        return self.node_dir(name) / "relay.toml"

    def socket_path(self, name: str) -> Path:
        # Unix socket paths are limited to ~107 bytes: keep them short and absolute.
        return self.node_dir(name) / "api.sock"

    def write_config(self, spec: NodeSpec) -> None:
        d = self.node_dir(spec.name)
        d.mkdir(parents=True, exist_ok=True)
        lines = [
            "[node]",
            f"name = {_toml_value(spec.name)}",
            f"key = {_toml_value(str(self.keys / (spec.name + '.key')))}",
            f"regions = {_toml_value(list(spec.regions))}",
            f"store = {_toml_value(str(d / 'relay.db'))}",
            *(f"{k} = {_toml_value(v)}" for k, v in spec.options.items()),
            "",
            "[trust]",
            f"root = {_toml_value(str(self.keys / 'root.pub'))}",
            f"roster = {_toml_value(str(self.roster_path))}",
            "",
            "[api]",
            f"socket = {_toml_value(str(self.socket_path(spec.name)))}",
            "",
        ]
        if spec.mqtt:
            mqtt = {"probe_interval": 0.5, "probe_timeout": 2.0, **spec.mqtt_options}
            lines += ["[mqtt]", *(f"{k} = {_toml_value(v)}" for k, v in mqtt.items()), ""]
            for url in spec.mqtt:
                lines += ["[[mqtt.broker]]", f"url = {_toml_value(url)}"]
                lines += [f"{k} = {_toml_value(v)}" for k, v in spec.broker_options.items()]
                if spec.mqtt_tls is not None and url.startswith("mqtts:"):
                    for k, path in zip(("ca", "cert", "key"), spec.mqtt_tls, strict=True):
                        lines.append(f"{k} = {_toml_value(str(path))}")
                lines.append("")
        for radio in spec.radios:
            extra = [f"{k} = {_toml_value(v)}" for k, v in spec.radio_options.items()]
            lines += ["[[mesh.radio]]", f"tcp = {_toml_value(radio)}", *extra, ""]
        self.config_path(spec.name).write_text("\n".join(lines))

    # ------------------------------------------------------------------ processes

    def start(self, name: str, *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        if name in self.procs and self.procs[name].poll() is None:
            raise RuntimeError(f"node {name} is already running")
        spec = self.specs.get(name)
        if spec is not None and spec.clock_skew_s:
            env = {CLOCK_SKEW_ENV: repr(spec.clock_skew_s), **(env or {})}
        log = (self.node_dir(name) / "node.log").open("ab")
        self._logs[name] = log
        proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "run", "--config", str(self.config_path(name))],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.procs[name] = proc
        return proc

    def wait_ready(self, name: str, timeout: float = 20.0, *, link_up: bool = True) -> None:
        """Wait until the node answers its API (and, by default, has a link up)."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"node {name} exited with {proc.returncode}: {self.log(name)}")
            try:
                st = self.call(name, {"op": "status"}, timeout=2.0)
                if not link_up or any(lk["state"] == "up" for lk in st["links"]):
                    return
                last = str([(lk["name"], lk["state"]) for lk in st["links"]])
            except (api.ApiError, OSError) as exc:
                last = str(exc)
            time.sleep(0.05)
        raise TimeoutError(f"node {name} not ready after {timeout} s: {last}")

    def stop(self, name: str, timeout: float = 15.0) -> int:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._close_log(name)
        return proc.returncode

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._close_log(name)

    def _close_log(self, name: str) -> None:
        log = self._logs.pop(name, None)
        if log is not None:
            log.close()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.node_dir(name) / "node.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    # ------------------------------------------------------------------ talking to nodes

    def call(self, name: str, req: dict[str, Any], *, timeout: float = 30.0) -> dict[str, Any]:
        answer = api.call(self.socket_path(name), req, timeout=timeout)
        if not answer.get("ok"):
            raise api.ApiError(str(answer.get("error")))
        return answer

    def sign(
        self,
        issuer: str,
        text: str,
        *,
        to: str = "all",
        precedence: Precedence = Precedence.PRIORITY,
        exercise: bool = False,
        lifetime_s: int = 6 * 3600,
        now: float | None = None,
    ) -> bytes:
        key_path = self.keys / f"{issuer}.key"
        issued = int(time.time() if now is None else now)
        decision = Decision(
            issued_at=issued,
            expires_at=issued + lifetime_s,
            precedence=precedence,
            audience=Audience.parse(to),
            seq=SequenceCounter(key_path).reserve(),
            text=text,
            kind=Kind.DECISION,
            exercise=exercise,
        )
        return seal(decision, load_private(key_path))

    def submit(self, node: str, raw: bytes) -> str:
        answer = self.call(node, {"op": "submit", "raw": base64.b64encode(raw).decode()})
        return str(answer["id"])

    def inbox(self, node: str) -> list[dict[str, Any]]:
        return list(self.call(node, {"op": "inbox", "limit": 100_000})["messages"])

    def status(self, node: str) -> dict[str, Any]:
        return self.call(node, {"op": "status"})

    def message(self, node: str, msg_id: str) -> dict[str, Any]:
        return dict(self.call(node, {"op": "message", "id": msg_id})["message"])

    def audit(self, node: str, since: int = 0) -> list[dict[str, Any]]:
        return list(self.call(node, {"op": "audit", "since": since})["events"])

    def revocation(self, *names: str) -> bytes:
        """A root-signed REVOCATION of the named roster entries' keys (to send as FLASH)."""
        kids = [key_id(raw_public(load_public(self.keys / f"{n}.pub"))) for n in names]
        root = self.keys / "root.key"
        seq = SequenceCounter(root).reserve()
        return seal(revocation_decision(kids, seq, int(time.time())), load_private(root))

    def recipients(self, audience: str) -> list[str]:
        aud = Audience.parse(audience)
        return sorted(n for n, s in self.specs.items() if aud.includes(n, frozenset(s.regions)))


# ---------------------------------------------------------------------- an emulated mesh


class EmulatorProcess:
    """``relay sim mesh SPEC`` as a subprocess, from the text of its spec file (docs/emulator.md).

    ``start`` waits for the ``ready`` line and reads the radios' TCP ports and the control port
    from what the emulator prints; ``radio(name)`` is the "HOST:PORT" to put in a ``NodeSpec``;
    ``control`` sends one command to the control port. Errors are ``EmulatorError``.
    """

    def __init__(self, directory: Path, spec: str) -> None:
        self.dir = directory
        self.spec = spec
        self.log_path = directory / "mesh.log"
        self.ports: dict[str, int] = {}
        self.control_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "mesh.toml"
        path.write_text(self.spec)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", "sim", "mesh", str(path)],
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        pending = b""  # raw reads: a buffered reader could hold lines back from select()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                words = raw.decode(errors="replace").split()
                if words == ["ready"]:
                    return
                if len(words) >= 4 and words[0] == "radio" and words[2] == "tcp":
                    self.ports[words[1]] = int(words[3].rpartition(":")[2])
                elif len(words) >= 2 and words[0] == "control":
                    self.control_port = int(words[1].rpartition(":")[2])
        code = self.proc.poll()
        why = f"exited with {code}" if code is not None else f"not ready in {timeout:g} s"
        raise EmulatorError(f"the radio emulator {why}; see {self.log_path}")

    def radio(self, name: str) -> str:
        return f"{LOOPBACK}:{self.ports[name]}"

    def control(self, cmd: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        try:
            with socket.create_connection((LOOPBACK, self.control_port), timeout) as sock:
                sock.sendall(json.dumps(cmd).encode() + b"\n")
                reply = sock.makefile("rb").readline()
            answer: dict[str, Any] = json.loads(reply)
        except (OSError, ValueError) as exc:
            raise EmulatorError(f"radio emulator gave no answer to {cmd} ({exc}); "
                                f"see {self.log_path}") from None  # fmt: skip
        if not answer.get("ok"):
            raise EmulatorError(f"radio emulator refused {cmd}: {answer.get('error')}")
        return answer

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


class EmulatorError(RuntimeError):
    """The radio emulator did not start, or did not answer or refused a control command."""


class MeshProcess(EmulatorProcess):
    """Several separate meshes of emulated radios in one ``relay sim mesh``.

    ``meshes`` maps a mesh name to its radios' names; radios of one mesh all hear each other,
    radios of different meshes never do. Each radio gets a free loopback TCP port; ``stats(name)``
    reads the emulator's counters (``frames_sent``, ``own_sent``, ``airtime_total_s`` …).
    """

    def __init__(
        self, directory: Path, meshes: Mapping[str, Sequence[str]], *, preset: str = "LONG_FAST"
    ) -> None:
        self.meshes = {m: tuple(radios) for m, radios in meshes.items()}
        lines = [
            "[mesh]",
            f"preset = {_toml_value(preset)}",
            f"control = {_toml_value(f'{LOOPBACK}:{free_port()}')}",
            "",
        ]
        for radios in self.meshes.values():
            for r in radios:
                lines += ["[[radio]]", f"name = {_toml_value(r)}", "tcp_port = 0", ""]
        for radios in self.meshes.values():
            for i, a in enumerate(radios):
                for b in radios[i + 1 :]:
                    lines += ["[[link]]", f"a = {_toml_value(a)}", f"b = {_toml_value(b)}", ""]
        super().__init__(directory, "\n".join(lines))

    def stats(self, radio: str) -> dict[str, Any]:
        return self.control({"cmd": "stats", "radio": radio})

    def all_stats(self) -> dict[str, dict[str, Any]]:
        return dict(self.control({"cmd": "status"})["radios"])

    def __enter__(self) -> MeshProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
