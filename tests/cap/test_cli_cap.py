"""``relay cap import`` and ``relay cap export`` as a person runs them: real subprocesses."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from relay import resources
from relay.cap import CapRejection, CapSchema, parse_xml
from relay.cli import main
from relay.envelope import Envelope, Kind, open_envelope
from tests.cap.conftest import World, alert, info, store_with
from tests.cap.test_parse import BOMB


def relay(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *map(str, args)], capture_output=True, text=True
    )


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """The command line in this process (quicker than a subprocess; same parser and handlers)."""

    def go(*args: str | Path) -> Ran:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return Ran(code, out.out, out.err)

    return go


def signed(path: Path) -> Envelope:
    env = open_envelope(path.read_bytes())
    assert isinstance(env, Envelope), env
    return env


@pytest.mark.subprocess
def test_import_signs_a_verifiable_exercise_decision_and_export_writes_valid_cap(
    world: World, tmp_path: Path
) -> None:
    """Test that import signs a decision `relay verify` accepts, and export writes valid CAP."""
    src = tmp_path / "alert.xml"
    src.write_bytes(alert(infos=[info(extra="<instruction>Blijf binnen.</instruction>")]))
    out = tmp_path / "d.cose"
    p = relay("cap", "import", src, "--key", world.key("vr09"), "-o", out, *world.trust_args())
    assert p.returncode == 0, p.stderr
    assert "[OEFENING / EXERCISE]" in p.stderr and "FLASH decision aan / to region:VR09" in p.stderr
    assert "niet meegenomen / not carried: instruction" in p.stderr
    v = relay("verify", "--root", world.root_pub, "--roster", world.roster, out)
    assert v.returncode == 0, v.stderr
    assert v.stdout.startswith("[OEFENING / EXERCISE] FLASH from vr09-rbt to region:VR09")
    xml = tmp_path / "out.xml"
    e = relay("cap", "export", out, "-o", xml, *world.trust_args())
    assert e.returncode == 0, e.stderr
    root = parse_xml(xml.read_bytes())
    assert not isinstance(root, CapRejection)
    assert CapSchema(resources.read_bytes("cap/cap-1.2.xsd")).first_error(root) is None
    assert f"<identifier>{signed(out).id.hex()}</identifier>" in xml.read_text()


def test_hostile_and_refused_alerts_exit_1_with_the_reason(
    world: World, tmp_path: Path, run: Callable[..., Ran]
) -> None:
    """Test that an entity bomb, a Test alert and a coordinator's Actual alert are refused."""
    cases = [
        (BOMB, "vr09", "relay: rejected: entity-forbidden: entity 'a' declared"),
        (alert(status="Test"), "vr09", "relay: rejected: status-refused: status Test"),
        (alert(status="Actual"), "coord", "relay: rejected: exercise-only: 'coord'"),
    ]
    for i, (data, key, expected) in enumerate(cases):
        src = tmp_path / f"a{i}.xml"
        src.write_bytes(data)
        out = tmp_path / f"a{i}.cose"
        p = run("cap", "import", src, "--key", world.key(key), "-o", out, *world.trust_args())
        assert p.returncode == 1, p.stderr
        assert p.stderr.startswith(expected), p.stderr
        assert "Traceback" not in p.stderr and not out.exists()


def test_cancel_resolves_its_reference_in_the_store_and_exports_by_id(
    world: World, tmp_path: Path, run: Callable[..., Ran]
) -> None:
    """Test that a Cancel resolves its reference in a real store and exports by message id."""
    first = tmp_path / "first.cose"
    src = tmp_path / "alert.xml"
    src.write_bytes(alert())
    assert run("cap", "import", src, "--key", world.key("vr09"), "-o", first,
                 *world.trust_args()).returncode == 0  # fmt: skip
    db = store_with(tmp_path / "relay.db", [(first.read_bytes(), "vr09-rbt")])
    cancel_xml = tmp_path / "cancel.xml"
    refs = "rbt@vru.nl,NL-VR09-2026-0042,2026-05-12T14:00:00+02:00"
    cancel_xml.write_bytes(alert(msg_type="Cancel", references=refs, infos=[]))
    cancel = tmp_path / "cancel.cose"
    args: list[str | Path] = ["cap", "import", cancel_xml, "--key", world.key("vr09")]
    args += ["-o", cancel]
    p = run(*args, *world.trust_args())
    assert p.returncode == 2 and "--store DB" in p.stderr  # a Cancel needs the store
    p = run(*args, *world.trust_args(), "--store", db)
    assert p.returncode == 0, p.stderr
    env = signed(cancel)
    assert env.decision.kind == Kind.CANCEL and env.decision.refs == (signed(first).id,)
    store_with(tmp_path / "relay2.db", [(first.read_bytes(), "vr09-rbt"),
                                        (cancel.read_bytes(), "vr09-rbt")])  # fmt: skip
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[node]\nname = "vr09-utrecht"\nkey = "{world.key("node1")}"\nregions = ["VR09"]\n'
        f'store = "{tmp_path / "relay2.db"}"\n[trust]\nroot = "{world.root_pub}"\n'
        f'roster = "{world.roster}"\n[[mqtt.broker]]\nurl = "mqtt://127.0.0.1:1"\n'
    )
    e = run("cap", "export", env.id.hex()[:12], "--config", config)
    assert e.returncode == 0, e.stderr
    assert "<msgType>Cancel</msgType>" in e.stdout
    assert f"<references>vr09-rbt,{signed(first).id.hex()},20" in e.stdout
    unknown = tmp_path / "unknown.xml"
    unknown.write_bytes(alert(msg_type="Cancel", references="x,NL-1,2026-05-12T14:00:00+02:00"))
    p = run("cap", "import", unknown, "--key", world.key("vr09"), "-o", tmp_path / "u.cose",
              *world.trust_args(), "--store", db)  # fmt: skip
    assert p.returncode == 1
    assert p.stderr.startswith("relay: rejected: unknown-reference: x,NL-1,")
