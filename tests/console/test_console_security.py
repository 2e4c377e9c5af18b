"""The console's guards, over real HTTP against a real console process and a real node."""

from __future__ import annotations

import base64
import http.client
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay import api
from relay.console.app import PROTECTED_ROUTES
from relay.console.core import CSP
from relay.keys import load_private
from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster
from relay.sim.net import free_port
from relay.sim.pki import generate_pki
from tests.console.util import (
    PASSWORD,
    Client,
    ConsoleProcess,
    add_user,
    csrf_of,
    nodes_with_consoles,
    start_console,
)
from tests.node.util import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.subprocess]

NODE = "vr07-utrecht"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, ConsoleProcess]]:
    """One VR07 node with a console; users bart and carla bound to the VR07 issuer key."""
    tmp = tmp_path_factory.mktemp("console-security")
    with Mosquitto() as broker, nodes_with_consoles(tmp, broker, (NODE,)) as (c, consoles):
        add_user(c, NODE, "bart", "vr07-rbt")
        add_user(c, NODE, "carla", "vr07-rbt")
        add_user(c, NODE, "dirk", "vr07-rbt")
        yield c, start_console(c, NODE, consoles)


def logged_in(console: ConsoleProcess, user: str = "bart") -> Client:
    client = Client(console.port)
    assert client.login(user).status == 303
    return client


def compose_form(
    client: Client, to: str, text: str = "Sluit de A12 bij Utrecht"
) -> list[tuple[str, str]]:
    return [("csrf", client.csrf()), ("precedence", "IMMEDIATE"), ("to", to), ("text", text),
            ("validity", "60"), ("kind", "decision"), ("ref", ""),
            ("password", PASSWORD)]  # fmt: skip


def console_audit(c: Cluster, event: str) -> list[dict[str, object]]:
    return [r for r in c.audit(NODE) if r["event"] == f"console-{event}"]


def test_every_route_without_a_session_is_refused(setup: tuple[Cluster, ConsoleProcess]) -> None:
    """Test that every route answers a request without a session with 401 or a login redirect."""
    _, console = setup
    anonymous = Client(console.port)
    for method, path in PROTECTED_ROUTES:
        reply = anonymous.request(method, path, [] if method == "POST" else None)
        if method == "GET" and not path.startswith("/events"):
            assert (reply.status, reply.headers.get("location")) == (303, "/login"), path
        else:
            assert reply.status == 401, (method, path, reply.status)
        assert "OEFENING" not in reply.body or reply.status != 200


def test_a_form_post_without_the_csrf_token_is_refused(
    setup: tuple[Cluster, ConsoleProcess],
) -> None:
    """Test that posts without (or with a wrong) CSRF token are refused and change nothing."""
    c, console = setup
    client = logged_in(console)
    form = [kv for kv in compose_form(client, "region:VR07") if kv[0] != "csrf"]
    assert client.post("/compose/send", form).status == 403
    assert client.post("/compose/send", [("csrf", "forged"), *form]).status == 403
    assert client.post("/logout", []).status == 403
    assert client.get("/inbox").status == 200  # still logged in: the logout was refused
    anonymous = Client(console.port)
    anonymous.get("/login")
    login = [("user", "bart"), ("password", PASSWORD)]
    assert anonymous.post("/login", login).status == 403
    assert c.call(NODE, {"op": "sent"})["messages"] == []


def test_a_vr07_user_is_not_offered_vr05_and_a_forged_post_is_refused(
    setup: tuple[Cluster, ConsoleProcess],
) -> None:
    """Test that a VR07-bound user sees no VR05 choice and a forged VR05 send is refused."""
    c, console = setup
    client = logged_in(console)
    page = client.get("/compose").body
    offered = set(re.findall(r'name="to" value="([^"]+)"', page))
    assert offered == {"region:VR07", "node:vr07-utrecht"}
    for target in ("region:VR05", "node:vr05-twente", "all", "region:VR07,region:VR05"):
        reply = client.post("/compose/send", compose_form(client, target))
        assert reply.status == 403, (target, reply.status)
        assert "buiten het bereik" in reply.body
    assert c.call(NODE, {"op": "sent"})["messages"] == []
    refused = console_audit(c, "refused")
    assert len(refused) >= 4 and {r["node"] for r in refused} == {"bart"}


def test_a_send_in_scope_is_signed_sent_and_audited_with_the_user_name(
    setup: tuple[Cluster, ConsoleProcess],
) -> None:
    """Test that a send needs the signing password and is audited as sign and send by user."""
    c, console = setup
    client = logged_in(console, "dirk")
    wrong = [(k, "not the password" if k == "password" else v)
             for k, v in compose_form(client, "region:VR07")]  # fmt: skip
    assert client.post("/compose/send", wrong).status == 403
    reply = client.post("/compose/send", compose_form(client, "region:VR07", "Drinkwater: kook"))
    assert reply.status == 303, reply.body
    msg_id = reply.headers["location"].split("/")[2]
    assert [m["id"] for m in c.call(NODE, {"op": "sent"})["messages"]] == [msg_id]
    for event in ("login", "sign", "send"):
        rows = [r for r in console_audit(c, event) if r["node"] == "dirk"]
        assert rows, f"no console-{event} row for dirk"
        if event != "login":
            assert rows[-1]["msg_id"] == msg_id
    delivery = client.get(f"/m/{msg_id}/delivery")
    assert delivery.status == 200 and "Drinkwater: kook" in delivery.body
    entries = c.call(NODE, {"op": "roster"})["entries"]
    kid = next(e["kid"] for e in entries if e["name"] == "vr07-rbt")
    page = client.get(f"/m/{msg_id}").body
    assert f"geverifieerd (Ed25519, sleutel {kid}" in page
    assert "Verloop op deze node" in page and "<td>accepted</td>" in page
    answer = api.call(c.socket_path(NODE), {"op": "trail", "id": "xyz"})
    assert answer == {"ok": False, "error": "bad request: id must be 64 lowercase hex digits"}


def test_five_wrong_passwords_throttle_the_next_login(
    setup: tuple[Cluster, ConsoleProcess],
) -> None:
    """Test that after five wrong passwords even the right one is refused with 429 for now."""
    c, console = setup
    client = Client(console.port)
    for _ in range(5):
        assert client.login("carla", "wrong password!").status == 401
    reply = client.login("carla")
    assert reply.status == 429 and "Te veel mislukte pogingen" in reply.body
    assert len([r for r in console_audit(c, "login-failed") if r["node"] == "carla"]) == 5
    assert [r for r in console_audit(c, "login-throttled") if r["node"] == "carla"]


def test_no_page_loads_anything_from_another_origin(
    setup: tuple[Cluster, ConsoleProcess],
) -> None:
    """Test that every page sends the strict CSP and links only to its own origin."""
    _, console = setup
    client = logged_in(console)
    reply = client.post("/compose/send", compose_form(client, "node:vr07-utrecht", "Oefen"))
    msg_id = reply.headers["location"].split("/")[2]
    pages = ["/inbox", "/compose", "/sent", "/network", f"/m/{msg_id}",
             f"/m/{msg_id}/delivery", f"/m/{msg_id}/print", "/static/console.css",
             "/static/console.js"]  # fmt: skip
    for path in ["/login", *pages]:
        reply = (Client(console.port) if path == "/login" else client).get(path)
        assert reply.status == 200, path
        assert reply.headers["content-security-policy"] == CSP
        assert "default-src 'none'" in CSP and "http" not in CSP
        for url in re.findall(r'(?:src|href|action)="([^"]*)"', reply.body):
            assert url.startswith(("/", "data:", "#")) and not url.startswith("//"), (path, url)
        assert "http:" not in reply.body and "https:" not in reply.body, path


def test_listening_beyond_loopback_without_tls_is_refused(
    setup: tuple[Cluster, ConsoleProcess],
) -> None:
    """Test that `relay console --listen 0.0.0.0:PORT` without TLS exits with a clear refusal."""
    c, _ = setup
    done = subprocess.run(
        [sys.executable, "-m", "relay", "console", "--config", str(c.config_path(NODE)),
         "--listen", f"0.0.0.0:{free_port()}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0" in done.stderr and "tls_cert" in done.stderr


def test_the_users_file_holds_no_key_in_the_clear(setup: tuple[Cluster, ConsoleProcess]) -> None:
    """Test that the users file is private and contains neither the key nor the password."""
    c, _ = setup
    path = c.node_dir(NODE) / "console-users.json"
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    raw = load_private(c.keys / "vr07-rbt.key").private_bytes_raw()
    assert raw.hex() not in text and base64.b64encode(raw).decode() not in text
    assert PASSWORD not in text and "PRIVATE KEY" not in text
    assert Path(c.keys / "vr07-rbt.key").read_text() not in text


def test_a_cancel_from_the_decision_page_marks_it_cancelled_everywhere(
    setup: tuple[Cluster, ConsoleProcess],
) -> None:
    """Test that a CANCEL sent from a decision's page refers to it and marks it everywhere."""
    c, console = setup
    client = logged_in(console, "dirk")
    reply = client.post("/compose/send", compose_form(client, "region:VR07", "Schuilen binnen"))
    original = reply.headers["location"].split("/")[2]
    page = client.get(f"/m/{original}").body
    assert f"/compose?kind=cancel&amp;ref={original}" in page
    follow = client.get(f"/compose?kind=cancel&ref={original}").body
    assert 'value="region:VR07" checked' in follow and "Schuilen binnen" in follow
    form = [("csrf", csrf_of(follow)), ("precedence", "IMMEDIATE"), ("to", "region:VR07"),
            ("text", "Sein veilig"), ("validity", "0"), ("kind", "cancel"), ("ref", original),
            ("password", PASSWORD)]  # fmt: skip
    reply = client.post("/compose/send", form)
    assert reply.status == 303, reply.body
    cancel = c.message(NODE, reply.headers["location"].split("/")[2])
    assert cancel["kind"] == "cancel" and cancel["refs"] == [original]
    for path in ("/inbox", "/sent", f"/m/{original}", f"/m/{original}/print"):
        assert "INGETROKKEN" in client.get(path).body, path
    client.get("/lang?to=en&back=/sent")
    assert "CANCELLED" in client.get("/sent").body and 'lang="en"' in client.get("/sent").body
    client.get("/lang?to=nl&back=/sent")


def test_with_a_certificate_the_console_speaks_only_tls_with_secure_cookies(
    setup: tuple[Cluster, ConsoleProcess], tmp_path: Path
) -> None:
    """Test that with console.tls_cert/tls_key the console serves HTTPS and Secure cookies."""
    c, _ = setup
    pki = generate_pki(tmp_path / "pki", clients=[])
    config = tmp_path / "relay-tls.toml"
    users = c.node_dir(NODE) / "console-users.json"
    config.write_text(
        c.config_path(NODE).read_text()
        + f'\n[console]\nusers = "{users}"\ntls_cert = "{pki.server.cert}"\n'
        f'tls_key = "{pki.server.key}"\n'
    )
    port = free_port()
    log = (tmp_path / "console.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "console", "--config", str(config),
         "--listen", f"127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    context = ssl.create_default_context(cafile=str(pki.ca))

    def get(path: str) -> http.client.HTTPResponse | None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            return resp
        except OSError:
            return None
        finally:
            conn.close()

    try:
        resp = wait_until(lambda: get("/login"), 30, "the TLS console")
        assert resp is not None and resp.status == 200
        assert "Secure" in (resp.getheader("Set-Cookie") or "")
        plain = Client(port)
        with pytest.raises((OSError, http.client.HTTPException)):
            plain.get("/login")
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
