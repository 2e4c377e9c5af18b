"""Issue #10 item 2 with real processes: rosters travel from the command line.

Three nodes on one mosquitto. A new node is added to the roster with `relay roster add`, and the
roster is handed to one running node with `relay submit`; every node then shows the new serial
and accepts the new node's receipts (before: `unknown-signer`). Then a newer roster file is put
beside one node only and that node restarted: it sends the file on, and the others take it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from relay.envelope import Precedence
from relay.sim.broker import Mosquitto
from relay.sim.cluster import Cluster, NodeSpec
from tests.node.util import cluster_of, three_nodes, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.subprocess]


def relay(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *map(str, args)], capture_output=True, text=True
    )


def serial(c: Cluster, node: str) -> int | None:
    value = c.status(node)["engine"]["roster_serial"]
    return None if value is None else int(value)


def has_serial(c: Cluster, node: str, want: int) -> bool:
    return serial(c, node) == want


def add_node(c: Cluster, roster: Path, name: str, region: str) -> int:
    """`relay keys new` and `relay roster add` for a new node; returns the new serial."""
    new = relay("keys", "new", name, "--dir", c.keys)
    assert new.returncode == 0, new.stderr
    added = relay("roster", "add", roster, "--root-key", c.keys / "root.key",
                  "--pub", c.keys / f"{name}.pub", "--name", name, "--role", "node",
                  "--scope", f"region:{region}")  # fmt: skip
    assert added.returncode == 0, added.stderr
    return int(added.stdout.split("serial ")[1].split(",")[0])


def test_submitted_roster_reaches_every_node_and_admits_the_new_nodes_receipts(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that a roster submitted at one node reaches all three, which then accept the new
    node's receipts, and that a newer roster file loaded at a restart is sent on to the rest."""
    specs = three_nodes(mosquitto)
    names = [s.name for s in specs]
    with cluster_of(tmp_path, specs) as c:
        first = serial(c, "hq")
        assert first is not None and all(serial(c, n) == first for n in names)
        newer = tmp_path / "roster-new.cbor"
        shutil.copy(c.roster_path, newer)
        second = add_node(c, newer, "vr07-zeist", "VR07")
        assert second > first

        out = relay("submit", "--config", c.config_path("hq"), newer)
        assert out.returncode == 0, out.stderr
        assert len(out.stdout.strip()) == 64  # the roster message's id, in hex
        for n in names:
            wait_until(partial(has_serial, c, n, second), 20, f"serial {second} at {n}")
        again = relay("submit", "--config", c.config_path("hq"), newer)
        assert again.returncode == 0 and again.stdout == out.stdout and "duplicate" in again.stderr

        # The new node starts with the new roster; its receipts are accepted everywhere.
        shutil.copy(newer, c.roster_path)
        zeist = NodeSpec("vr07-zeist", ("VR07",), (mosquitto.url,))
        c.specs[zeist.name] = zeist
        c.write_config(zeist)
        c.start(zeist.name)
        c.wait_ready(zeist.name)
        msg_id = c.submit("hq", c.sign("vr07-rbt", "Besluit: opvang in Zeist", to="region:VR07",
                                       precedence=Precedence.IMMEDIATE))  # fmt: skip

        def signed_at(node: str) -> bool:
            rows = c.message(node, msg_id)["delivery"]
            return any(r["node"] == "vr07-zeist" and r["signed"] for r in rows)

        for n in names:
            wait_until(partial(signed_at, n), 30, f"vr07-zeist's receipt accepted at {n}")
            assert "unknown-signer" not in c.status(n)["rejections"]

        # A newer roster file beside one node only: at its restart it goes to the others.
        third = add_node(c, c.roster_path, "vr05-hengelo", "VR05")
        c.stop("vr05-twente")
        c.start("vr05-twente")
        c.wait_ready("vr05-twente")
        for n in [*names, zeist.name]:
            wait_until(partial(has_serial, c, n, third), 20, f"serial {third} at {n}")

        # A revocation written by `relay roster revoke --message`, submitted at another node.
        message = tmp_path / "revoke-hengelo.cose"
        revoked = relay("roster", "revoke", c.roster_path, "--root-key", c.keys / "root.key",
                        "--name", "vr05-hengelo", "--message", message)  # fmt: skip
        assert revoked.returncode == 0, revoked.stderr
        rev = relay("submit", "--config", c.config_path("vr07-utrecht"), message)
        assert rev.returncode == 0, rev.stderr
        rev_id = rev.stdout.strip()

        def applied(node: str) -> bool:
            return any(e["event"] == "revoked" and e["msg_id"] == rev_id for e in c.audit(node))

        for n in [*names, zeist.name]:
            wait_until(partial(applied, n), 20, f"the revocation applied at {n}")


def test_submit_names_the_reason_of_a_rejection_and_exits_non_zero(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that `relay submit` of a bad file prints the rejection reason and exits 1."""
    with cluster_of(tmp_path, three_nodes(mosquitto)[:1]) as c:
        junk = tmp_path / "junk.cbor"
        junk.write_bytes(b"\xd2\x84not a signed message")
        out = relay("submit", "--config", c.config_path("hq"), junk)
        assert out.returncode == 1
        assert out.stderr.startswith("relay: rejected: malformed")
        raw = c.sign("national", "Besluit: GRIP 2")
        signed = tmp_path / "decision.cose"
        signed.write_bytes(raw)
        first = relay("submit", "--config", c.config_path("hq"), signed)
        assert first.returncode == 0 and len(first.stdout.strip()) == 64
        # The same sequence number in a different message: what a copied key produces.
        (c.keys / "national.seq").write_text("0\n")
        clash = c.sign("national", "Besluit: GRIP 3")
        signed.write_bytes(clash)
        replay = relay("submit", "--config", c.config_path("hq"), signed)
        assert replay.returncode == 1
        assert "rejected: replay" in replay.stderr and "another device" in replay.stderr


def test_second_laptop_with_its_own_device_key_is_accepted_a_copied_key_is_not(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Test that, at a running node, an issuer's second device key (added with `relay roster
    add --device`, roster submitted) is accepted from sequence 1 under the issuer's name, while
    the same key copied to another laptop is refused as a replay with a hint."""
    with cluster_of(tmp_path, three_nodes(mosquitto)[:1]) as c:
        cfg = c.config_path("hq")
        send = ("send", "--config", cfg, "--precedence", "PRIORITY", "--to", "all")
        assert relay(*send, "--key", c.keys / "national.key", "--text", "laptop 1").returncode == 0
        laptop2 = tmp_path / "laptop2"
        assert relay("keys", "new", "national", "--dir", laptop2).returncode == 0
        newer = tmp_path / "roster-devices.cbor"
        shutil.copy(c.roster_path, newer)
        added = relay("roster", "add", newer, "--root-key", c.keys / "root.key",
                      "--name", "national", "--pub", laptop2 / "national.pub",
                      "--device", "laptop2")  # fmt: skip
        assert added.returncode == 0, added.stderr
        assert relay("submit", "--config", cfg, newer).returncode == 0
        own = relay(*send, "--key", laptop2 / "national.key", "--text", "laptop 2")
        assert own.returncode == 0, own.stderr
        assert (laptop2 / "national.seq").read_text().strip() == "1"  # its own sequence
        issuers = {m["text"]: m["issuer"] for m in c.inbox("hq")}
        assert issuers["laptop 1"] == issuers["laptop 2"] == "national"

        laptop3 = tmp_path / "laptop3"  # the first laptop's key copied, without its .seq file
        laptop3.mkdir()
        shutil.copy(c.keys / "national.key", laptop3 / "national.key")
        copied = relay(*send, "--key", laptop3 / "national.key", "--text", "laptop 3")
        assert copied.returncode == 1
        assert "rejected: replay" in copied.stderr and "another device" in copied.stderr
