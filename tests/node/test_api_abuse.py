"""The local API under abuse: bad numbers, deep nesting, idle floods, the socket mode (11.4)."""

from __future__ import annotations

import json
import os
import resource
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from relay import api
from relay.sim.broker import Mosquitto
from relay.sim.cluster import NodeSpec
from tests.node.util import cluster_of, inbox_ids, wait_until

BIG = "12345678901234567890123"  # 23 digits
ABUSE: list[tuple[str, str]] = [
    ('{"op": "inbox", "limit": Infinity}', "bad request: Infinity is not a number JSON allows"),
    ('{"op": "inbox", "limit": NaN}', "bad request: NaN is not a number JSON allows"),
    ('{"op": "inbox", "limit": 1e400}', "bad request: number 1e400 is out of range"),
    (f'{{"op": "inbox", "limit": {BIG}}}', "bad request: integer of 23 digits is out of range"),
    ('{"op": "inbox", "limit": -1}', "bad request: 'limit' must be a whole number from 1 to"),
    ('{"op": "inbox", "limit": 2.5}', "bad request: 'limit' must be a whole number from 1 to"),
    ('{"op": "inbox", "limit": true}', "bad request: 'limit' must be a whole number from 1 to"),
    ('{"op": "audit", "since": Infinity}', "bad request: Infinity is not a number JSON allows"),
    ('{"op": "audit", "since": 1e400}', "bad request: number 1e400 is out of range"),
    (f'{{"op": "audit", "since": {BIG}}}', "bad request: integer of 23 digits is out of range"),
    (f'{{"op": "audit", "since": -{BIG}}}', "bad request: integer of 24 digits is out of range"),
    ('{"op": "audit", "since": 9223372036854775808}', "bad request: 'since' must be a whole"),
    ('{"op": "audit", "since": -1}', "bad request: 'since' must be a whole number from 0 to"),
    ('{"op": "message", "id": 7}', "bad request: 'id' must be a string of at most 64"),
    ("[" * 30_000, "bad request: nested too deeply"),
    ('{"op": "status"' + "," * 10 + "}", "bad request: not JSON: "),
    ("[1, 2]", "bad request: request must be a JSON object"),
]


@pytest.mark.parametrize(("line", "error"), ABUSE)
def test_parse_request_refuses_each_with_its_reason(line: str, error: str) -> None:
    """Test that parse_request plus the field helpers refuse each abusive request by name."""
    with pytest.raises(api.BadRequest) as info:
        req = api.parse_request(line.encode() + b"\n")
        api.integer(req, "limit", default=1, lo=1, hi=100_000)
        api.integer(req, "since", default=0, lo=0, hi=2**63 - 1)
        api.text(req, "id", max_len=64)
    assert f"bad request: {info.value}".startswith(error)


def test_socket_is_created_with_mode_0660(tmp_path: Path) -> None:
    """Test that bind_socket creates the socket file as 0660 even under umask 000."""
    old = os.umask(0)
    try:
        sock = api.bind_socket(tmp_path / "api.sock")
        assert os.umask(0) == 0, "the process umask must be restored"
    finally:
        os.umask(old)
    try:
        mode = (tmp_path / "api.sock").stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660, oct(mode)
    finally:
        sock.close()


def _raw_exchange(path: Path, lines: list[bytes], timeout: float = 10.0) -> list[dict[str, object]]:
    """Send lines on ONE connection and read one answer for each."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        f = s.makefile("rb")
        answers = []
        for line in lines:
            s.sendall(line + b"\n")
            got = f.readline()
            assert got, f"the node closed the connection after {line[:40]!r}"
            answers.append(json.loads(got))
        return answers


@pytest.mark.broker
@pytest.mark.subprocess
def test_abusive_requests_get_clear_errors_from_a_running_node(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that a real node answers each abusive request with a bad-request error and goes on."""
    with cluster_of(tmp_path, [NodeSpec("hq", (), (mosquitto.url,))]) as c:
        c.submit("hq", c.sign("national", "Besluit: opvang in de sporthal."))
        lines = [line.encode() for line, _ in ABUSE] + [b'{"op": "status"}']
        answers = _raw_exchange(c.socket_path("hq"), lines)
        for (line, error), answer in zip(ABUSE, answers, strict=False):
            assert answer["ok"] is False and answer["reason"] == "bad-request", (line, answer)
            assert str(answer["error"]).startswith(error), (line[:40], answer)
        assert answers[-1]["ok"] is True, "the same connection still works"
        assert len(c.inbox("hq")) == 1
        st = c.status("hq")
        assert st["api"]["bad_requests"] == len(ABUSE) and st["api"]["internal_errors"] == 0
        log = c.log("hq", tail=1_000_000)
        assert "Unhandled exception" not in log and "Traceback" not in log


@contextmanager
def _idle_clients(path: Path, n: int) -> Iterator[list[socket.socket]]:
    """Open n connections that never send anything (the server may close some)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 200), hard))
    clients: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            clients.append(s)
            s.setblocking(False)
            deadline = time.monotonic() + 10.0
            while True:  # a full listen backlog answers EAGAIN until the server accepts
                try:
                    s.connect(str(path))
                    break
                except BlockingIOError:
                    assert time.monotonic() < deadline, "the API stopped accepting connections"
                    time.sleep(0.005)
        yield clients
    finally:
        for s in clients:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.broker
@pytest.mark.subprocess
def test_idle_connection_flood_under_1024_fds_keeps_api_and_links(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that 1,100 idle API connections at RLIMIT_NOFILE 1024 block neither API nor MQTT."""
    nodes = [
        NodeSpec("hq", (), (mosquitto.url,)),
        NodeSpec("vr07-utrecht", ("VR07",), (mosquitto.url,)),
    ]
    with cluster_of(tmp_path, nodes) as c:
        pid = c.procs["hq"].pid
        _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (1024, hard))  # systemd's default soft
        with _idle_clients(c.socket_path("hq"), 1_100):
            began = time.monotonic()
            st = c.call("hq", {"op": "status"}, timeout=10.0)
            assert time.monotonic() - began < 10.0
            assert st["api"]["open"] <= api.MAX_CONNECTIONS
            assert st["api"]["refused_busy"] + st["api"]["evicted_idle"] >= 1_100 - 64
            fds = sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
            assert fds < 1024 - 200, f"{fds} descriptors open"
            mosquitto.restart()  # the trial: the MQTT reconnect was blocked here

            def hq_up() -> bool:
                st = c.call("hq", {"op": "status"}, timeout=10.0)
                return any(lk["state"] == "up" for lk in st["links"])

            wait_until(hq_up, 30, "hq's MQTT link back up after the broker restart")
            sent = c.submit("hq", c.sign("national", "Besluit tijdens de aanval op de API."))
            wait_until(lambda: sent in inbox_ids(c, "vr07-utrecht"), 30, "delivery to vr07")
        log = c.log("hq", tail=5_000_000)
        assert "Too many open files" not in log
        refusals = log.count('"event": "api_refused"')
        assert 1 <= refusals <= 10, f"{refusals} api_refused lines: logged once per interval"
