"""``relay broker check``: what in a broker kit runs out (relay.kit.check), on real kit files."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from relay.cli import main
from relay.kit import revoke, write_kit
from relay.kit.check import kit_checks
from relay.kit.pki import new_authority, write_crl

NOW = dt.datetime.now(dt.UTC)


def _kit(tmp_path: Path) -> Path:
    out = tmp_path / "kit"
    write_kit(out, ca_name="VR07 test", nodes=["vr07-utrecht", "vr07-rbt"], now=NOW)
    return out


def _status(out: Path, days: float) -> dict[str, str]:
    return {c.key: c.status for c in kit_checks(out, NOW + dt.timedelta(days=days))}


def test_a_kit_runs_out_crl_first_then_the_certificates(tmp_path: Path) -> None:
    """Test that a fresh kit is ok, its CRL fails 30 days before its year is up, certs later."""
    out = _kit(tmp_path)
    assert set(_status(out, 0).values()) == {"ok"}
    assert _status(out, 0).keys() == {"crl.pem", "ca.crt", "server.crt", "vr07-utrecht.crt",
                                      "vr07-rbt.crt"}  # fmt: skip
    soon = {c.key: c for c in kit_checks(out, NOW + dt.timedelta(days=340))}
    assert soon["crl.pem"].status == "fail" and "refuses every client" in soon["crl.pem"].message
    assert soon["crl.pem"].nl is not None and "weigert" in soon["crl.pem"].nl[0]
    assert soon["vr07-utrecht.crt"].status == "ok"
    gone = {c.key: c for c in kit_checks(out, NOW + dt.timedelta(days=400))}
    assert "expired" in gone["crl.pem"].message
    late = _status(out, 720)  # the certificates are signed for two years
    assert late["vr07-utrecht.crt"] == late["server.crt"] == "fail" and late["ca.crt"] == "ok"


def test_a_foreign_or_missing_crl_fails_and_a_revoked_cert_is_only_listed(tmp_path: Path) -> None:
    """Test that a CRL not signed by the kit's CA or missing fails; a revoked cert stays ok."""
    out = _kit(tmp_path)
    revoke(out, "vr07-rbt", now=NOW)
    checks = {c.key: c for c in kit_checks(out, NOW + dt.timedelta(days=720))}
    assert "revoked" in checks["vr07-rbt.crt"].message and checks["vr07-rbt.crt"].status == "ok"
    assert checks["vr07-utrecht.crt"].status == "fail"
    write_crl(out / "crl.pem", new_authority("someone else", now=NOW), set(), now=NOW)
    foreign = {c.key: c for c in kit_checks(out, NOW)}["crl.pem"]
    assert foreign.status == "fail" and "not signed by the kit's CA" in foreign.message
    (out / "crl.pem").unlink()
    assert _status(out, 0)["crl.pem"] == "fail"


def test_the_command_prints_dutch_lines_and_exits_1_on_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that relay broker check prints Dutch lines, JSON on request, and exits 0 or 1."""
    out = _kit(tmp_path)
    assert main(["broker", "check", "--out", str(out)]) == 0
    assert "de broker-kit is in orde" in capsys.readouterr().out
    (out / "crl.pem").write_text("kapot")
    assert main(["broker", "check", "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "FOUT" in text and "oplossing" in text and "NIET in orde" in text
    assert main(["broker", "check", "--out", str(out), "--json", "--lang", "en"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["checks"][0]["key"] == "crl.pem"
    assert "cannot read the CRL" in doc["checks"][0]["message"]
