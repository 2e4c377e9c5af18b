"""Run-time files shipped with the package: the systemd unit, the radio profiles, and whatever
else lives under relay/data/ (``relay files list``).

In a wheel they are package data under ``relay/data/`` (setup.py copies ``deploy/relay.service``
and ``firmware_configs/`` there). Run from a source checkout, the same names resolve to the
source tree, so there is one copy of each file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_DATA = Path(str(resources.files("relay"))) / "data"
_SOURCE_ROOT = Path(__file__).resolve().parent.parent
# name prefix -> where a source checkout keeps those files (setup.py EXTERNAL, the other way)
_IN_SOURCE = {
    "systemd/relay.service": "deploy/relay.service",
    "firmware_configs": "firmware_configs",
}


class ResourceError(Exception):
    """No shipped file has that name."""


def _sources() -> dict[str, Path]:
    found: dict[str, Path] = {}
    if _DATA.is_dir():
        for p in sorted(_DATA.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                found[p.relative_to(_DATA).as_posix()] = p
    if (_SOURCE_ROOT / "pyproject.toml").is_file():  # a source checkout: its own copies
        for name, rel in _IN_SOURCE.items():
            src = _SOURCE_ROOT / rel
            if src.is_file():
                found.setdefault(name, src)
            elif src.is_dir():
                for p in sorted(src.rglob("*")):
                    if p.is_file():
                        found.setdefault(f"{name}/{p.relative_to(src).as_posix()}", p)
    return found


def names() -> list[str]:
    return sorted(_sources())


def path(name: str) -> Path:
    found = _sources()
    if name not in found:
        raise ResourceError(f"no shipped file {name!r}; `relay files list` shows them")
    return found[name]


def read_bytes(name: str) -> bytes:
    return path(name).read_bytes()
