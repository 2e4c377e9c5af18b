"""Console accounts and sessions in-process: password hashes, the sealed key, expiry, throttling."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay import api
from relay.console.accounts import AccountError, Accounts
from relay.console.app import Console
from relay.console.auth import LOGIN_FAILURES, Throttle
from relay.console.settings import ConsoleSettings, is_loopback, parse_listen
from relay.keys import raw_public

PASSWORD = "correct horse battery"


def test_a_user_unlocks_the_key_only_with_the_password(tmp_path: Path) -> None:
    """Test that the sealed key opens with the right password only and is not in the file."""
    key = Ed25519PrivateKey.generate()
    accounts = Accounts(tmp_path / "users.json")
    user = accounts.add("anna", PASSWORD, key, "national", seq_floor=41)
    assert accounts.check_password("anna", PASSWORD) == user
    assert accounts.check_password("anna", PASSWORD + "x") is None
    assert accounts.check_password("nobody", PASSWORD) is None
    opened = accounts.unlock(user, PASSWORD)
    assert raw_public(opened.public_key()) == raw_public(key.public_key())
    with pytest.raises(AccountError, match="wrong password"):
        accounts.unlock(user, "another password")
    text = (tmp_path / "users.json").read_text()
    assert key.private_bytes_raw().hex() not in text and PASSWORD not in text
    assert accounts.next_seq(user) == 42 and accounts.next_seq(user) == 43
    with pytest.raises(AccountError, match="exists already"):
        accounts.add("anna", PASSWORD, key, "national", seq_floor=0)
    with pytest.raises(AccountError, match="at least"):
        accounts.add("bert", "short", key, "national", seq_floor=0)


def test_the_throttle_locks_a_name_after_five_failures_and_forgets_after_a_success() -> None:
    """Test that a name locks at the fifth failure, an address only much later, and unlocks."""
    th = Throttle()
    for i in range(LOGIN_FAILURES):
        assert th.locked_for("user:anna", 100.0 + i) == 0
        th.failed("user:anna", 100.0 + i)
        th.failed("addr:127.0.0.1", 100.0 + i)
    assert th.locked_for("user:anna", 105.0) > 0
    assert th.locked_for("addr:127.0.0.1", 105.0) == 0
    assert th.locked_for("user:anna", 105.0 + 3600) == 0
    th.succeeded("user:anna")
    assert th.locked_for("user:anna", 105.0) == 0


def test_listen_addresses_are_parsed_and_only_loopback_counts_as_local() -> None:
    """Test that HOST:PORT forms parse and only loopback addresses are local."""
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:8443") == ("::1", 8443)
    for bad in ("8080", "host:", "host:0", "host:99999"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_listen(bad)
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert not is_loopback("console.example")


def test_a_session_ends_after_the_idle_time(tmp_path: Path) -> None:
    """Test that a session older than its idle time is refused and sent back to the login."""
    now = [1_000_000.0]
    settings = ConsoleSettings(tmp_path / "users.json", None, None, session_idle_s=1800)
    Accounts(settings.users).add("anna", PASSWORD, Ed25519PrivateKey.generate(), "national",
                                 seq_floor=0)  # fmt: skip
    audited: list[dict[str, Any]] = []

    async def node(req: dict[str, Any]) -> dict[str, Any]:
        """A stand-in for the node on the real API socket: records audits, knows no roster."""
        if req["op"] == "console-audit":
            audited.append(req)
            return {"ok": True}
        return {"ok": True, "entries": []} if req["op"] == "roster" else {"ok": False}

    sock = tmp_path / "api.sock"
    console = Console("hq", sock, settings, clock=lambda: now[0])

    async def scenario() -> None:
        ready = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            server = tg.create_task(api.serve(sock, node, ready))
            await ready.wait()
            async with TestClient(TestServer(console.app())) as client:
                page = await (await client.get("/login")).text()
                token = page.split('name="csrf" value="')[1].split('"')[0]
                form = {"csrf": token, "user": "anna", "password": PASSWORD}
                r = await client.post("/login", data=form, allow_redirects=False)
                assert r.status == 303 and r.headers["Location"] == "/inbox"
                assert [a["event"] for a in audited] == ["login"] and audited[0]["user"] == "anna"
                now[0] += 1799
                assert (await client.get("/compose", allow_redirects=False)).status == 200
                now[0] += 1801
                r = await client.get("/compose", allow_redirects=False)
                assert r.status == 303 and r.headers["Location"] == "/login"
                assert console.sessions == {}
            server.cancel()

    asyncio.run(scenario())


def test_no_login_without_the_node_recording_it(tmp_path: Path) -> None:
    """Test that a right password gives no session when the node cannot audit the login."""
    settings = ConsoleSettings(tmp_path / "users.json", None, None, session_idle_s=1800)
    Accounts(settings.users).add("anna", PASSWORD, Ed25519PrivateKey.generate(), "national",
                                 seq_floor=0)  # fmt: skip
    console = Console("hq", tmp_path / "no-node.sock", settings)

    async def scenario() -> None:
        async with TestClient(TestServer(console.app())) as client:
            page = await (await client.get("/login")).text()
            token = page.split('name="csrf" value="')[1].split('"')[0]
            form = {"csrf": token, "user": "anna", "password": PASSWORD}
            r = await client.post("/login", data=form, allow_redirects=False)
            assert r.status == 503 and console.sessions == {}

    asyncio.run(scenario())
