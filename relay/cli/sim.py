"""``relay radio emulate`` and ``relay sim mesh``: serve emulated Meshtastic radios on loopback."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from pathlib import Path

import structlog

from relay import airtime
from relay.cli import CliError
from relay.sim.server import MeshServer
from relay.sim.spec import MeshSpec, RadioSpec, SpecError, load_spec, parse_endpoint, uniform_mesh


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    radio = subparsers.add_parser("radio", help="Meshtastic radio tools")
    radio_sub = radio.add_subparsers(dest="radio_command", metavar="COMMAND", required=True)
    emulate = radio_sub.add_parser(
        "emulate", help="serve one emulated radio speaking the Meshtastic device API"
    )
    emulate.add_argument("--tcp", metavar="HOST:PORT", required=True, help="TCP endpoint to serve")
    emulate.add_argument("--pty", action="store_true", help="also serve a pty (prints its path)")
    emulate.add_argument("--preset", default="LONG_FAST", choices=sorted(airtime.PRESETS))
    _common(emulate)
    emulate.set_defaults(handler=_emulate)

    sim = subparsers.add_parser("sim", help="mesh simulation")
    sim_sub = sim.add_subparsers(dest="sim_command", metavar="COMMAND", required=True)
    mesh = sim_sub.add_parser("mesh", help="serve a mesh of emulated radios")
    mesh.add_argument("file", nargs="?", type=Path, help="mesh description (TOML)")
    mesh.add_argument("--radios", type=int, metavar="N", help="N radios that all hear each other")
    mesh.add_argument("--tcp-base", type=int, metavar="PORT", help="first TCP port (with --radios)")
    mesh.add_argument("--preset", default=None, choices=sorted(airtime.PRESETS))
    _common(mesh)
    mesh.set_defaults(handler=_mesh)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--control", metavar="HOST:PORT", help="JSON-lines control port")
    parser.add_argument("--time-scale", type=float, default=None, help="virtual seconds per second")
    parser.add_argument("--seed", type=int, default=None, help="random seed of the channel model")


def _emulate(args: argparse.Namespace) -> int:
    host, port = _endpoint(args.tcp)
    spec = MeshSpec(
        radios=(
            RadioSpec(
                name="radio",
                node_num=0x5E1A0001,
                long_name="Emulated radio",
                short_name="EMU",
                preset=args.preset,
                tcp_port=port,
                pty="" if args.pty else None,
            ),
        ),
        host=host,
    )
    return _serve(_override(spec, args), args)


def _mesh(args: argparse.Namespace) -> int:
    if args.file is not None:
        if args.radios is not None:
            raise CliError("give either FILE.toml or --radios N, not both")
        try:
            spec = load_spec(args.file)
        except SpecError as exc:
            raise CliError(str(exc)) from exc
    elif args.radios is not None and args.tcp_base is not None:
        if not 1 <= args.radios <= 64:
            raise CliError("--radios must be within 1..64")
        spec = uniform_mesh(args.radios, tcp_base=args.tcp_base, preset=args.preset or "LONG_FAST")
    else:
        raise CliError("give FILE.toml, or --radios N --tcp-base PORT")
    return _serve(_override(spec, args), args)


def _override(spec: MeshSpec, args: argparse.Namespace) -> MeshSpec:
    changes: dict[str, object] = {}
    if args.time_scale is not None:
        if args.time_scale <= 0:
            raise CliError("--time-scale must be positive")
        changes["time_scale"] = args.time_scale
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.control is not None:
        changes["control"] = _endpoint(args.control)
    return dataclasses.replace(spec, **changes) if changes else spec  # type: ignore[arg-type]


def _endpoint(text: str) -> tuple[str, int]:
    try:
        host, port = parse_endpoint(text)
    except SpecError as exc:
        raise CliError(str(exc)) from exc
    if not host.startswith("127.") and host != "localhost":
        raise CliError(f"the emulator serves loopback only, not {host}")
    return host, port


def _serve(spec: MeshSpec, args: argparse.Namespace) -> int:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
    server = MeshServer(spec)

    def ready(s: MeshServer) -> None:
        for name, port in s.tcp_ports.items():
            print(f"radio {name} tcp {spec.host}:{port}", flush=True)
        for r in spec.radios:
            path = s.pty_path(r.name)
            if path is not None:
                print(f"radio {r.name} pty {path}", flush=True)
        if s.control_port is not None and spec.control is not None:
            print(f"control {spec.control[0]}:{s.control_port}", flush=True)
        print("ready", flush=True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop)
        await server.serve(ready=ready)

    try:
        asyncio.run(main())
    except OSError as exc:
        raise CliError(f"cannot serve: {exc}", status=1) from exc
    return 0
