"""``relay doctor``: each check's failure, found with real files, brokers and radios."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relay import doctor
from relay.checks import Check
from relay.config import Config, load
from relay.keys import load_private
from relay.kit import pki as kit_pki
from relay.links.mqtt_config import BrokerConfig
from relay.rosterfile import write_roster
from relay.sim.broker import Mosquitto, TlsListener
from relay.sim.cluster import Cluster, MeshProcess, NodeSpec
from relay.sim.net import free_port
from relay.sim.pki import generate_pki
from relay.trust import Roster
from tests.deploy.test_run_check import set_key


def by_key(checks: list[Check]) -> dict[str, Check]:
    return {c.key: c for c in checks}


def config_of(c: Cluster) -> Config:
    return load(c.config_path("n1"))


def radio_node(tmp_path: Path, radio: str) -> Cluster:
    """Node ``n1`` with one radio at ``radio`` (HOST:PORT) and no MQTT."""
    c = Cluster(tmp_path / "radio-node")
    c.create([NodeSpec("n1", ("VR07",), (), (radio,))], [])
    return c


def test_doctor_reports_an_invalid_config_as_json_and_exits_1(tmp_path: Path) -> None:
    """Test that an invalid relay.toml is one failing check in --json and exit status 1."""
    bad = tmp_path / "relay.toml"
    bad.write_text('[node]\nname = "n1"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "relay", "doctor", "--json", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    assert report["checks"][0]["key"] == "config"
    assert report["checks"][0]["status"] == "fail"
    assert report["checks"][0]["message"] == "[trust]: missing section"


@pytest.mark.subprocess
def test_doctor_prints_dutch_lines_with_a_fix_and_exits_1_on_a_failure(
    node_files: Cluster,
) -> None:
    """Test that doctor prints Dutch status words, a fix per failing check and exits 1."""
    proc = subprocess.run(
        [sys.executable, "-m", "relay", "doctor", "--config", str(node_files.config_path("n1"))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stdout
    broker = [ln for ln in proc.stdout.splitlines() if "mqtt.broker[0]:" in ln]
    assert broker and broker[0].startswith("FOUT") and "oplossing:" in broker[0]
    assert proc.stdout.splitlines()[-1].endswith("de node is NIET klaar")


def test_doctor_fails_a_private_key_others_can_read(node_files: Cluster) -> None:
    """Test that a node key with mode 0644 fails with the chmod that fixes it."""
    key = node_files.keys / "n1.key"
    key.chmod(0o644)
    check = by_key(doctor.diagnose(config_of(node_files)))["node.key mode"]
    assert check.status == "fail"
    assert check.fix == f"chmod 0600 {key}"


def test_doctor_fails_an_expired_roster(node_files: Cluster) -> None:
    """Test that a roster past its expiry fails both the roster and its expiry check."""
    later = time.time() + 10 * 365 * 86400
    checks = by_key(doctor.diagnose(config_of(node_files), now=later))
    assert checks["trust.roster expiry"].status == "fail"
    assert checks["trust.roster"].status == "fail"
    assert "expired" in checks["trust.roster"].message


@pytest.mark.subprocess
def test_doctor_fails_a_roster_file_older_than_the_running_nodes(node_files: Cluster) -> None:
    """Test that a roster file older than the one the running node holds fails 'newest'."""
    old = node_files.roster_path.read_bytes()
    root = load_private(node_files.keys / "root.key")
    current = Roster(serial=1)  # replaced below by the same entries under a higher serial
    from relay.rosterfile import load_trust

    state = load_trust(node_files.roster_path, root.public_key())
    assert state.roster is not None
    current = Roster(serial=state.roster.serial + 1, entries=state.roster.entries)
    write_roster(node_files.roster_path, current, root)
    node_files.start("n1")
    try:
        node_files.wait_ready("n1", link_up=False)
        node_files.roster_path.write_bytes(old)  # an old backup put back
        check = by_key(doctor.diagnose(config_of(node_files)))["trust.roster newest"]
    finally:
        node_files.stop("n1")
    assert check.status == "fail"
    assert f"the running node knows serial {current.serial}" in check.message


def test_doctor_fails_a_corrupt_store(node_files: Cluster) -> None:
    """Test that a store file that is not a sound SQLite database fails its integrity check."""
    cfg = config_of(node_files)
    cfg.store.parent.mkdir(parents=True, exist_ok=True)
    cfg.store.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    check = by_key(doctor.diagnose(cfg))["node.store integrity"]
    assert check.status == "fail"
    assert "restore the store" in check.fix


def test_doctor_fails_when_the_disk_is_nearly_full(
    node_files: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that less free disk than the limit fails (the limit raised above this disk's space)."""
    monkeypatch.setattr(doctor, "DISK_FAIL_BYTES", 1 << 62)
    check = by_key(doctor.diagnose(config_of(node_files)))["node.store disk"]
    assert check.status == "fail"
    assert "MiB free" in check.message


def test_doctor_fails_an_unreachable_broker(node_files: Cluster) -> None:
    """Test that a broker nobody listens for fails with the port to check."""
    check = by_key(doctor.diagnose(config_of(node_files)))["mqtt.broker[0]"]
    assert check.status == "fail"
    assert "cannot connect" in check.message


@pytest.mark.broker
def test_doctor_checks_broker_tls_and_certificate_expiry(
    node_files: Cluster, tmp_path: Path
) -> None:
    """Test that TLS is verified and a certificate expiring within 30 days fails."""
    pki = generate_pki(tmp_path / "pki", clients=["n1"])  # certificates valid for 2 days
    listener = TlsListener(ca=pki.ca, cert=pki.server.cert, key=pki.server.key)
    with Mosquitto(tls=listener) as broker:
        config = node_files.config_path("n1")
        text = config.read_text().split("[[mqtt.broker]]")[0]
        client = pki.clients["n1"]
        broker_toml = (
            f'[[mqtt.broker]]\nurl = "mqtts://127.0.0.1:{broker.port}"\nca = "{pki.ca}"\n'
            f'cert = "{client.cert}"\nkey = "{client.key}"\n'
        )
        config.write_text(text + broker_toml)
        now = time.time()
        soon = by_key(doctor.diagnose(load(config), now=now))["mqtt.broker[0]"]
        assert soon.status == "fail", soon
        assert "expires" in soon.message
        # Seen from 40 days before the certificate's end, the same broker is fine.
        fine = by_key(doctor.diagnose(load(config), now=now - 40 * 86400))["mqtt.broker[0]"]
        assert fine.status == "ok", fine
        # A CA that did not sign the broker's certificate: the TLS check fails.
        other = generate_pki(tmp_path / "other", clients=["n1"])
        config.write_text(text + broker_toml.replace(str(pki.ca), str(other.ca)))
        wrong = by_key(doctor.diagnose(load(config)))["mqtt.broker[0]"]
        assert wrong.status == "fail"
        assert "TLS failed" in wrong.message


@pytest.mark.radio
def test_doctor_fails_a_radio_with_the_public_channel_key(tmp_path: Path) -> None:
    """Test that doctor reads an emulated radio with meshtastic and fails the default key."""
    with MeshProcess(tmp_path / "mesh", {"m": ["r1"]}) as mesh:
        c = radio_node(tmp_path, mesh.radio("r1"))
        checks = by_key(doctor.diagnose(config_of(c)))
    assert checks["mesh.radio[0]"].status == "ok"
    assert checks["mesh.radio[0] region"].status == "ok"
    assert checks["mesh.radio[0] preset"].status == "ok"
    key = checks["mesh.radio[0] channel key"]
    assert key.status == "fail"
    assert "AQ==" in key.message
    assert "--ch-set psk random" in key.fix


def test_doctor_fails_a_radio_that_does_not_answer(tmp_path: Path) -> None:
    """Test that a radio address nobody answers on fails with the cable/device fix."""
    c = radio_node(tmp_path, f"127.0.0.1:{free_port()}")
    check = by_key(doctor.diagnose(config_of(c)))["mesh.radio[0]"]
    assert check.status == "fail"
    assert "no radio answers" in check.message


def test_doctor_warns_when_the_drill_window_is_over(node_files: Cluster) -> None:
    """Test that a drill window in the past is a warning naming it in Amsterdam time."""
    config = node_files.config_path("n1")
    config.write_text(
        config.read_text()
        + '\n[drill]\nwindow = ["2026-01-10T09:00:00+01:00", "2026-01-10T17:00:00+01:00"]\n'
    )
    check = by_key(doctor.diagnose(load(config), now=time.time()))["drill.window"]
    assert check.status == "warn"
    assert "2026-01-10 09:00 CET – 2026-01-10 17:00 CET is over" in check.message


def test_store_path_key_is_reported_for_an_unwritable_store(
    node_files: Cluster, tmp_path: Path
) -> None:
    """Test that doctor reuses run --check: a store below a regular file fails node.store."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    set_key(node_files.config_path("n1"), "store", str(blocker / "relay.db"))
    assert by_key(doctor.diagnose(config_of(node_files)))["node.store"].status == "fail"


@pytest.mark.radio
@pytest.mark.subprocess
def test_doctor_reads_the_radio_settings_from_the_running_node(tmp_path: Path) -> None:
    """Test that with the node running, doctor takes the radio's settings from the node."""
    with MeshProcess(tmp_path / "mesh", {"m": ["r1"]}) as mesh:
        c = radio_node(tmp_path, mesh.radio("r1"))
        c.start("n1")
        try:
            c.wait_ready("n1")
            checks = by_key(doctor.diagnose(config_of(c)))
        finally:
            c.stop("n1")
    assert "held by the running node, link up" in checks["mesh.radio[0]"].message
    assert checks["mesh.radio[0] region"].status == "ok"
    assert checks["mesh.radio[0] channel key"].status == "fail"


def test_doctor_warns_when_the_clock_is_off_from_peers() -> None:
    """Test that a running node's clock offset of an hour from message times is a warning."""
    status = {"engine": {"clock_offset_s": 3600.0}, "clock_warning": True}
    check = by_key(list(doctor.clock_checks(status)))["clock peers"]
    assert check.status == "warn"
    assert check.text("nl")[0] == "de klok van deze node wijkt +3600 s af van de berichttijden"
    assert check.text("en")[0] == "this node's clock differs from message times by +3600 s"


def test_doctor_checks_the_nodes_own_client_certificate(tmp_path: Path) -> None:
    """Test that the node's client certificate fails when unreadable, not yet valid or expiring."""
    now = dt.datetime.now(dt.UTC)
    ca = kit_pki.new_authority("doctor test CA", now=now)
    key = kit_pki.new_key()
    for name, validity in (("year", dt.timedelta(days=365)), ("week", dt.timedelta(days=7))):
        kit_pki.write_cert(tmp_path / f"{name}.crt", kit_pki.issue(ca, "n1", key, now=now,
                                                                   validity=validity))  # fmt: skip
    (tmp_path / "junk.crt").write_text("not a certificate")
    kit_pki.write_key(tmp_path / "n1.key", key)

    def check(cert: str, at: dt.datetime) -> Check:
        b = BrokerConfig("mqtts://127.0.0.1:8883", cert=tmp_path / cert, key=tmp_path / "n1.key")
        (found,) = doctor.client_cert_check(0, b, at.timestamp())
        assert found.key == "mqtt.broker[0].cert"
        return found

    assert check("year.crt", now).status == "ok"
    soon = check("week.crt", now)
    assert soon.status == "fail" and "expires" in soon.message and soon.nl is not None
    assert "verloopt" in soon.nl[0]
    gone = check("year.crt", now + dt.timedelta(days=400))
    assert gone.status == "fail" and "expired" in gone.message
    early = check("year.crt", now - dt.timedelta(days=2))
    assert early.status == "fail" and "valid only from" in early.message
    assert check("junk.crt", now).status == "fail"
