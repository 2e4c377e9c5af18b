"""The command line's entry points."""

import subprocess
import sys


def test_python_m_relay_prints_help() -> None:
    """Test that `python -m relay --help` runs and names the program."""
    out = subprocess.run(
        [sys.executable, "-m", "relay", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: relay" in out.stdout
