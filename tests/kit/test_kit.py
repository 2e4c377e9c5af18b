"""``relay broker kit``: the files it writes, reuse and renewal, and the node's identity check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli import main
from relay.config import ConfigError, load
from relay.kit import write_kit
from relay.kit.pki import common_name, load_cert
from relay.sim.cluster import Cluster, NodeSpec
from tests.node.util import ISSUERS


def test_kit_command_writes_a_complete_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that the command writes CA, server and node certificates, ACL, CRL and
    mosquitto.conf with the required settings, and prints the start command."""
    out = tmp_path / "kit"
    code = main(
        ["broker", "kit", "--out", str(out), "--ca-name", "VR07 CA", "--node", "vr07-a",
         "--node", "vr07-b", "--port", "18883", "--bridge-to", "nat1.example:8883",
         "--bridge-to", "nat2.example:8883"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert f"mosquitto -c {out.resolve() / 'mosquitto.conf'}" in printed
    for name in ("ca.crt", "server.crt", "server.key", "vr07-a.crt", "vr07-a.key", "crl.pem"):
        assert (out / name).is_file(), name
    assert common_name(load_cert(out / "vr07-b.crt")) == "vr07-b"
    conf = (out / "mosquitto.conf").read_text().splitlines()
    for line in (
        "listener 18883",
        "allow_anonymous false",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "persistence true",
        "message_size_limit 4096",
        "max_queued_messages 10000",
        "user mosquitto",
        "addresses nat1.example:8883 nat2.example:8883",
        "bridge_protocol_version mqttv311",
        "cleansession false",
        "topic crisis/+/msg in 1",
        "topic crisis/vr07-a/msg out 1",
        f"crlfile {out.resolve() / 'crl.pem'}",
    ):
        assert line in conf, line
    assert "topic crisis/+/probe" not in "\n".join(conf)  # liveness stays on the regional broker
    acl = (out / "acl").read_text().splitlines()
    assert "pattern write crisis/%u/msg" in acl and "pattern read crisis/+/status" in acl
    assert not [line for line in acl if line.startswith("topic")]
    assert (out / "vr07-a.key").stat().st_mode & 0o077 == 0


def test_rerun_keeps_node_certificates_unless_renewed(tmp_path: Path) -> None:
    """Test that writing the kit again keeps existing node certificates and --renew replaces one."""
    out = tmp_path / "kit"
    write_kit(out, ca_name="CA", nodes=["a", "b"])
    a1, b1 = (out / "a.crt").read_bytes(), (out / "b.crt").read_bytes()
    kit = write_kit(out, ca_name="CA", nodes=["a", "b", "c"], renew=["b"])
    assert (out / "a.crt").read_bytes() == a1
    assert (out / "b.crt").read_bytes() != b1
    assert set(kit.nodes) == {"a", "b", "c"}


def test_regional_kit_reuses_the_national_ca(tmp_path: Path) -> None:
    """Test that --ca signs a region's certificates with the given CA and leaves its key there."""
    national = write_kit(tmp_path / "nat", ca_name="NL CA", nodes=[], bridge_from=["bridge-vr07"])
    region = write_kit(
        tmp_path / "vr07", ca_name="unused", name="vr07", ca=national.directory, nodes=["a"],
        bridge_to=[("127.0.0.1", national.port)],
    )  # fmt: skip
    ca = load_cert(national.ca)
    load_cert(region.nodes["a"][0]).verify_directly_issued_by(ca)
    load_cert(region.directory / "bridge-vr07.crt").verify_directly_issued_by(ca)
    assert not (region.directory / "ca.key").exists()
    assert "user bridge-vr07" in (national.directory / "acl").read_text()


def test_bad_node_name_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that a node name that cannot be a topic level is refused with a one-line error."""
    code = main(["broker", "kit", "--out", str(tmp_path), "--ca-name", "CA", "--node", "a/b"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a/b" in err[0]


def _node_config(tmp_path: Path, cert_for: str, **mqtt: object) -> Path:
    kit = write_kit(tmp_path / "kit", ca_name="CA", nodes=["hq", "other"])
    cert, key = kit.nodes[cert_for]
    c = Cluster(tmp_path / "cluster")
    spec = NodeSpec("hq", (), ("mqtts://127.0.0.1:8883",), mqtt_tls=(kit.ca, cert, key),
                    mqtt_options=dict(mqtt))  # fmt: skip
    c.create([spec], ISSUERS)
    return c.config_path("hq")


def test_node_refuses_a_certificate_of_another_node(tmp_path: Path) -> None:
    """Test that `relay run` refuses, in one line, a client certificate whose CN is not its name."""
    path = _node_config(tmp_path, "other")
    with pytest.raises(ConfigError, match="certificate is for 'other', not the node 'hq'"):
        load(path)
    done = subprocess.run(
        [sys.executable, "-m", "relay", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "not the node 'hq'" in done.stderr


def test_node_refuses_a_client_id_other_than_its_name(tmp_path: Path) -> None:
    """Test that mqtt.client_id other than the node name is a configuration error."""
    with pytest.raises(ConfigError, match="client id must be the node name"):
        load(_node_config(tmp_path, "hq", client_id="someone-else"))
    assert load(_node_config(tmp_path / "ok", "hq", client_id="hq")).node == "hq"
