"""The mesh description: radios, links, preset, time scale, seed. Loaded from TOML.

See docs/emulator.md for the file format. Everything is validated here, so the servers and the
channel model can trust what they get.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay import airtime


class SpecError(ValueError):
    """The mesh description is invalid (the message says where)."""


@dataclass(frozen=True, slots=True)
class RadioSpec:
    name: str
    node_num: int
    long_name: str
    short_name: str
    preset: str = "LONG_FAST"
    tcp_port: int | None = None
    pty: str | None = None  # "" = a pty without a stable link; a path = symlink kept there


@dataclass(frozen=True, slots=True)
class LinkSpec:
    a: str
    b: str
    loss: float = 0.0
    symmetric: bool = True


@dataclass(frozen=True, slots=True)
class MeshSpec:
    radios: tuple[RadioSpec, ...]
    links: tuple[LinkSpec, ...] = ()
    all_hear_all: bool = False
    default_loss: float = 0.0
    time_scale: float = 1.0
    seed: int = 0
    host: str = "127.0.0.1"
    control: tuple[str, int] | None = None
    names: dict[str, RadioSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", {r.name: r for r in self.radios})
        if len(self.names) != len(self.radios):
            raise SpecError("radio names must be unique")
        nums = [r.node_num for r in self.radios]
        if len(set(nums)) != len(nums):
            raise SpecError("node numbers must be unique")
        for r in self.radios:
            if not 1 <= r.node_num < 0xFFFFFFFF:
                raise SpecError(f"radio {r.name}: node_num must be within 1..0xfffffffe")
            if r.preset not in airtime.PRESETS:
                raise SpecError(f"radio {r.name}: unknown preset {r.preset!r}")
        for link in self.links:
            for end in (link.a, link.b):
                if end not in self.names:
                    raise SpecError(f"link {link.a}-{link.b}: no radio named {end!r}")
            if not 0.0 <= link.loss <= 1.0:
                raise SpecError(f"link {link.a}-{link.b}: loss must be within 0..1")
        if self.time_scale <= 0:
            raise SpecError("time_scale must be positive")


def node_num_for(index: int) -> int:
    """Node number the generated radios get: 0x5e1a0001, 0x5e1a0002, ..."""
    return 0x5E1A0000 + index + 1


def uniform_mesh(
    count: int,
    *,
    tcp_base: int | None = None,
    preset: str = "LONG_FAST",
    seed: int = 0,
    time_scale: float = 1.0,
    host: str = "127.0.0.1",
) -> MeshSpec:
    """``count`` radios that all hear each other without loss (``relay sim mesh --radios N``)."""
    radios = tuple(
        RadioSpec(
            name=f"r{i + 1}",
            node_num=node_num_for(i),
            long_name=f"Emulated radio {i + 1}",
            short_name=f"R{i + 1}",
            preset=preset,
            tcp_port=None if tcp_base is None else tcp_base + i,
        )
        for i in range(count)
    )
    return MeshSpec(radios, all_hear_all=True, seed=seed, time_scale=time_scale, host=host)


def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise SpecError(f"expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def load_spec(path: Path) -> MeshSpec:
    """Read a mesh description file (TOML)."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"{path}: {exc}") from exc
    return spec_from_dict(doc)


def spec_from_dict(doc: dict[str, Any]) -> MeshSpec:
    mesh = doc.get("mesh", {})
    preset = str(mesh.get("preset", "LONG_FAST")).upper()
    radios = []
    for i, r in enumerate(doc.get("radio", [])):
        try:
            name = str(r["name"])
        except KeyError as exc:
            raise SpecError(f"radio #{i + 1}: missing name") from exc
        pty = r.get("pty")
        radios.append(
            RadioSpec(
                name=name,
                node_num=int(r.get("node_num", node_num_for(i))),
                long_name=str(r.get("long_name", name)),
                short_name=str(r.get("short_name", name[:4])),
                preset=str(r.get("preset", preset)).upper(),
                tcp_port=None if r.get("tcp_port") is None else int(r["tcp_port"]),
                pty=None if pty is None or pty is False else ("" if pty is True else str(pty)),
            )
        )
    if not radios:
        raise SpecError("a mesh needs at least one [[radio]]")
    links = tuple(
        LinkSpec(
            a=str(link["a"]),
            b=str(link["b"]),
            loss=float(link.get("loss", 0.0)),
            symmetric=bool(link.get("symmetric", True)),
        )
        for link in doc.get("link", [])
    )
    control = mesh.get("control")
    return MeshSpec(
        radios=tuple(radios),
        links=links,
        all_hear_all=bool(mesh.get("all_hear_all", False)),
        default_loss=float(mesh.get("loss", 0.0)),
        time_scale=float(mesh.get("time_scale", 1.0)),
        seed=int(mesh.get("seed", 0)),
        host=str(mesh.get("host", "127.0.0.1")),
        control=None if control is None else parse_endpoint(str(control)),
    )
