"""CI's install check: build the wheel and sdist, install the wheel with deploy/install.sh into a
fresh venv outside the checkout, and run the installed ``relay`` from there."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEV_TOOLS = ("pytest", "ruff", "mypy", "hypothesis")

pytestmark = pytest.mark.subprocess


def run(*argv: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")},
    )
    assert proc.returncode == 0, f"{argv}: {proc.stdout}\n{proc.stderr}"
    return proc


def test_wheel_installs_outside_the_checkout_and_runs(tmp_path: Path) -> None:
    """Test that install.sh installs the wheel in a venv outside the checkout that runs relay."""
    dist = tmp_path / "dist"
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--disable-pip-version-check",
        "--no-build-isolation",
        "-w",
        dist,
        ROOT,
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("crisis_relay-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "relay/data/systemd/relay.service",
        "relay/data/firmware_configs/README.md",
        "relay/data/dictionary-v1.txt",
        "relay/data/cap/cap-1.2.xsd",
        "relay/data/cap/regions.toml",
        "relay/drill/scenarios/demo.toml",
    ):
        assert name in names, name
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)

    stage = tmp_path / "root"
    began = time.monotonic()
    run("bash", ROOT / "deploy" / "install.sh", "--root", stage, "--wheel", wheel, cwd=tmp_path)
    first_install_s = time.monotonic() - began
    relay = stage / "opt" / "crisis-relay" / "bin" / "relay"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    version = run(relay, "--version", cwd=elsewhere).stdout.strip()
    assert version.startswith("relay ")
    demo = run(relay, "demo", "trust", cwd=elsewhere).stdout
    assert "rejected: out-of-scope" in demo
    unit = stage / "etc" / "systemd" / "system" / "relay.service"
    assert unit.read_bytes() == (ROOT / "deploy" / "relay.service").read_bytes()
    assert (stage / "etc" / "crisis-relay").stat().st_mode & 0o777 == 0o750
    assert (stage / "var" / "lib" / "crisis-relay").stat().st_mode & 0o777 == 0o700
    # The installed program is the wheel's, not the checkout's; and no development tools.
    where = run(
        stage / "opt" / "crisis-relay" / "bin" / "python",
        "-c",
        "import relay; print(relay.__file__)",
        cwd=elsewhere,
    ).stdout
    assert str(stage) in where and str(ROOT) not in where
    site = run(
        stage / "opt" / "crisis-relay" / "bin" / "python",
        "-m",
        "pip",
        "list",
        "--format=freeze",
        cwd=elsewhere,
    ).stdout.lower()
    assert not [t for t in DEV_TOOLS if f"\n{t}==" in "\n" + site]

    # Idempotent: a second run succeeds and keeps the node's files.
    (stage / "etc" / "crisis-relay" / "relay.toml").write_text("# the node's config\n")
    run("bash", ROOT / "deploy" / "install.sh", "--root", stage, "--wheel", wheel, cwd=tmp_path)
    assert (stage / "etc" / "crisis-relay" / "relay.toml").exists()

    run("bash", ROOT / "deploy" / "install.sh", "--root", stage, "--uninstall", cwd=tmp_path)
    assert not (stage / "opt" / "crisis-relay").exists()
    assert not unit.exists()
    assert (stage / "etc" / "crisis-relay" / "relay.toml").exists()
    run(
        "bash",
        ROOT / "deploy" / "install.sh",
        "--root",
        stage,
        "--uninstall",
        "--purge",
        cwd=tmp_path,
    )
    assert not (stage / "etc" / "crisis-relay").exists()
    assert not (stage / "var" / "lib" / "crisis-relay").exists()
    print(f"wheel {wheel.stat().st_size} B, first install {first_install_s:.1f} s")


def test_sdist_carries_the_licence_unit_and_profiles(tmp_path: Path) -> None:
    """Test that the sdist has LICENSE, the unit, the radio profiles and the build hook."""
    run(
        sys.executable,
        "-m",
        "build",
        "--sdist",
        "--no-isolation",
        "--outdir",
        tmp_path,
        ROOT,
        cwd=tmp_path,
    )
    (sdist,) = tmp_path.glob("crisis_relay-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for name in (
        "LICENSE",
        "setup.py",
        "deploy/relay.service",
        "deploy/install.sh",
        "firmware_configs/README.md",
        "relay/data/dictionary-v1.txt",
    ):
        assert name in names, name


def test_install_refuses_32_bit_arm_with_what_to_do(tmp_path: Path) -> None:
    """Test that install.sh on armv7l stops before installing and says to use the 64-bit OS."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "uname").write_text(
        '#!/bin/sh\n[ "$1" = "-m" ] && echo armv7l || exec /bin/uname "$@"\n'
    )
    (shim / "uname").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}
    env.pop("RELAY_ALLOW_SOURCE_BUILD", None)
    proc = subprocess.run(
        ["bash", str(ROOT / "deploy" / "install.sh"), "--root", str(tmp_path / "root")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 1
    assert "no wheels of cffi and pyyaml" in proc.stderr
    assert "64-bit (aarch64)" in proc.stderr
    assert not (tmp_path / "root" / "opt").exists()
