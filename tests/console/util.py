"""Helpers for the console tests: nodes with a console each, and a small cookie-keeping client."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster, IssuerSpec, NodeSpec
from relay.sim.net import LOOPBACK, free_port
from tests.node.util import wait_until

ISSUERS = (
    IssuerSpec("national", ("all",)),
    IssuerSpec("vr07-rbt", ("region:VR07",)),
    IssuerSpec("vr05-rbt", ("region:VR05",)),
)
PASSWORD = "correct horse battery"


def add_user(c: Cluster, node: str, name: str, issuer: str, password: str = PASSWORD) -> str:
    """``relay console user add`` as a real subprocess; returns its output."""
    done = subprocess.run(
        [sys.executable, "-m", "relay", "console", "user", "add", name,
         "--config", str(c.config_path(node)), "--key", str(c.keys / f"{issuer}.key"),
         "--password-stdin"],
        input=password + "\n", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@dataclass
class ConsoleProcess:
    """``relay console --config relay.toml --listen 127.0.0.1:PORT`` as a subprocess."""

    config: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        log = (self.config.parent / f"console-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "console", "--config", str(self.config),
             "--listen", f"{LOOPBACK}:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
        )  # fmt: skip
        log.close()

        def answers() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            try:
                return Client(self.port).get("/login").status == 200
            except OSError:
                return False

        wait_until(answers, 30, f"console on port {self.port}", step=0.1)

    def log(self) -> str:
        path = self.config.parent / f"console-{self.port}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """HTTP on loopback with the cookies a browser would keep (no redirects followed)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, form: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:  # fmt: skip
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            h["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace") if "event-stream" not in (
                resp.getheader("Content-Type") or "") else ""  # fmt: skip
            for k, v in resp.getheaders():
                if k.lower() == "set-cookie":
                    name, _, rest = v.partition("=")
                    value = rest.split(";", 1)[0]
                    if value in ("", '""') or "Max-Age=0" in v:
                        self.cookies.pop(name, None)
                    else:
                        self.cookies[name] = value
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, text)
        finally:
            conn.close()

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, form: list[tuple[str, str]], **kw: Any) -> Reply:
        return self.request("POST", path, form, **kw)

    def login(self, user: str, password: str = PASSWORD) -> Reply:
        page = self.get("/login")
        token = csrf_of(page.body)
        return self.post("/login", [("csrf", token), ("user", user), ("password", password)])

    def csrf(self) -> str:
        return csrf_of(self.get("/compose").body)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


@contextmanager
def nodes_with_consoles(
    tmp: Path, broker: Mosquitto, run: tuple[str, ...]
) -> Iterator[tuple[Cluster, dict[str, ConsoleProcess]]]:
    """hq (all), vr07-utrecht (VR07) and vr05-twente (VR05) on the roster; the nodes named in
    ``run`` are started, each with its own console."""
    c = Cluster(tmp / "cluster")
    c.create(
        [NodeSpec("hq", (), (broker.url,)), NodeSpec("vr07-utrecht", ("VR07",), (broker.url,)),
         NodeSpec("vr05-twente", ("VR05",), (broker.url,))],
        ISSUERS,
    )  # fmt: skip
    consoles: dict[str, ConsoleProcess] = {}
    try:
        for name in run:
            c.start(name)
        for name in run:
            c.wait_ready(name)
        yield c, consoles
    finally:
        for console in consoles.values():
            console.stop()
        c.stop_all()


def start_console(c: Cluster, node: str, consoles: dict[str, ConsoleProcess]) -> ConsoleProcess:
    console = ConsoleProcess(c.config_path(node))
    consoles[node] = console
    console.start()
    return console


def audit_events(c: Cluster, node: str, prefix: str = "console-") -> list[dict[str, Any]]:
    def rows() -> list[dict[str, Any]]:
        return [r for r in c.audit(node) if r["event"].startswith(prefix)]

    return rows()


def wait_for(check: Any, timeout: float, what: str) -> Any:
    return wait_until(check, timeout, what, step=0.1)


def now() -> float:
    return time.monotonic()
