"""``relay broker``: write a regional broker kit, revoke a node's certificate, check what in a kit
runs out (docs/broker.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from relay.cli import CliError
from relay.kit import DEFAULT_PORT, KitError, parse_hostport, revoke, write_kit


def _hostport(text: str) -> tuple[str, int]:
    try:
        return parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "broker", help="mosquitto broker kits: TLS client certificates, ACL, bridges"
    )
    bs = p.add_subparsers(dest="broker_command", metavar="ACTION", required=True)
    kit = bs.add_parser(
        "kit",
        help="write a runnable mosquitto configuration with a CA, certificates and an ACL",
        description="Write CA, server certificate, NODE.crt/NODE.key per node, crl.pem, acl and "
        "mosquitto.conf into DIR, and print the command that starts the broker.",
    )
    kit.add_argument("--out", type=Path, required=True, metavar="DIR")
    kit.add_argument("--ca-name", required=True, metavar="NAME", help="the CA's common name")
    kit.add_argument(
        "--node", action="append", default=[], metavar="NAME", help="a node (repeat per node)"
    )
    kit.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="P")
    kit.add_argument(
        "--bridge-to",
        action="append",
        default=[],
        type=_hostport,
        metavar="HOST:PORT",
        help="a national broker, in order of preference (repeat)",
    )
    kit.add_argument(
        "--ca", type=Path, metavar="PATH", help="reuse this CA (ca.crt, with ca.key beside it)"
    )
    kit.add_argument("--name", help="the broker's name (default: from --ca-name)")
    kit.add_argument(
        "--host",
        action="append",
        metavar="NAME",
        help="a DNS name or address clients use for this broker (repeat; default localhost, "
        "127.0.0.1)",
    )
    kit.add_argument("--bind", metavar="ADDR", help="listen on this address only")
    kit.add_argument(
        "--bridge-from",
        action="append",
        default=[],
        metavar="NAME",
        help="on a national broker: the certificate name of a regional bridge to accept",
    )
    kit.add_argument("--key-type", choices=["p256", "ed25519"], default="p256")
    kit.add_argument(
        "--max-inbound-bytes", type=int, default=4096, help="the nodes' node.max_inbound_bytes"
    )
    kit.add_argument(
        "--renew", action="append", default=[], metavar="NAME", help="re-issue this node's cert"
    )
    kit.set_defaults(handler=cmd_kit)

    rev = bs.add_parser("revoke", help="add a node's certificate to the kit's CRL")
    rev.add_argument("--out", type=Path, required=True, metavar="DIR")
    rev.add_argument("--node", required=True, metavar="NAME")
    rev.add_argument("--ca", type=Path, metavar="PATH", help="the CA, when not in the kit")
    rev.set_defaults(handler=cmd_revoke)

    chk = bs.add_parser(
        "check",
        help="check a kit's CRL and certificates for expiry (exit 1 on a failure)",
        description="On the broker host: is crl.pem signed by the kit's CA and not about to run "
        "out (then mosquitto refuses every client), and are the CA, server, node and bridge "
        "certificates valid for more than 30 days?",
    )
    chk.add_argument("--out", type=Path, required=True, metavar="DIR")
    chk.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    chk.add_argument("--lang", choices=["nl", "en"], default="nl", help="language (default nl)")
    chk.set_defaults(handler=cmd_check)


CHECK_SUMMARY = {
    "nl": "{fail} fout, {ok} ok: de broker-kit is {verdict}",
    "en": "{fail} failed, {ok} ok: the broker kit is {verdict}",
}
CHECK_VERDICT = {"nl": ("in orde", "NIET in orde"), "en": ("fine", "NOT fine")}


def cmd_check(args: argparse.Namespace) -> int:
    from relay.cli.doctor import report
    from relay.kit.check import kit_checks

    if not args.out.is_dir():
        raise CliError(f"{args.out}: no such directory (the kit's --out)", status=2)
    return report(kit_checks(args.out), args, CHECK_SUMMARY, CHECK_VERDICT)


def cmd_kit(args: argparse.Namespace) -> int:
    if not args.node and not args.bridge_from:
        raise CliError("give at least one --node (or --bridge-from for a national broker)")
    try:
        kit = write_kit(
            args.out,
            ca_name=args.ca_name,
            nodes=args.node,
            port=args.port,
            bridge_to=args.bridge_to,
            bridge_from=args.bridge_from,
            ca=args.ca,
            name=args.name,
            hosts=args.host or ("localhost", "127.0.0.1"),
            bind=args.bind,
            key_type=args.key_type,
            max_inbound_bytes=args.max_inbound_bytes,
            renew=args.renew,
        )
    except KitError as exc:
        raise CliError(str(exc)) from exc
    print(f"kit in {kit.directory}:")
    for node, (cert, key) in kit.nodes.items():
        print(f"  {node}: {cert.name} {key.name} (copy with ca.crt to the node, key mode 0600)")
    if kit.bridge_name:
        print(f"  bridge certificate {kit.bridge_name}.crt: accept it on the nationals with")
        print(f"    relay broker kit ... --bridge-from {kit.bridge_name}")
    for note in kit.notes:
        print(f"note: {note}")
    print("start the broker (as root; it drops to the mosquitto user):")
    print(f"  {kit.start_command}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    try:
        serial = revoke(args.out, args.node, ca=args.ca)
    except KitError as exc:
        raise CliError(str(exc)) from exc
    print(f"revoked {args.node} (serial {serial:x}) in {args.out / 'crl.pem'}")
    print("restart mosquitto to apply: it reads the CRL when it starts")
    return 0
