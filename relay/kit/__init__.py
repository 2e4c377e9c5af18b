"""The broker kit: a complete, runnable mosquitto configuration for a regional (or national)
broker, written into one directory (``relay broker kit``; docs/broker.md).

``write_kit`` writes a CA (or reuses one), a server certificate, ``NODE.crt``/``NODE.key`` per
node beside ``ca.crt``, a CRL, the ACL and ``mosquitto.conf``; ``revoke`` adds a node's
certificate to the CRL. The harness in relay.sim builds its brokers from the same functions.
"""

from __future__ import annotations

import datetime as dt
import grp
import os
import pwd
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from relay.kit import pki
from relay.kit.mosquitto import Bridge, BrokerConf, Limits, TlsFiles, make_bridge, render_acl
from relay.kit.mosquitto import render_conf as render_conf

__all__ = ["DEFAULT_PORT", "Kit", "KitError", "parse_hostport", "revoke", "write_kit"]

MOSQUITTO_USER = "mosquitto"
DEFAULT_PORT = 8883
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # the node name rule of relay.config


class KitError(Exception):
    """A bad kit request (bad name, unusable CA, files we will not overwrite)."""


@dataclass(frozen=True, slots=True)
class Kit:
    """What ``write_kit`` wrote, and how to start it."""

    directory: Path
    conf: Path
    ca: Path
    server_cert: Path
    server_key: Path
    nodes: dict[str, tuple[Path, Path]]
    bridge_name: str | None
    port: int
    notes: list[str] = field(default_factory=list)

    @property
    def start_command(self) -> str:
        return f"mosquitto -c {shlex.quote(str(self.conf))}"

    def node_pair(self, node: str) -> tuple[Path, Path]:
        return self.nodes[node]


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) into its parts; ValueError when malformed."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.").lower()
    return slug[:56] or "broker"


def _mosquitto_ids() -> tuple[int, int] | None:
    """uid and gid of the ``mosquitto`` user when we may hand files to it (we are root)."""
    if os.geteuid() != 0:
        return None
    try:
        user = pwd.getpwnam(MOSQUITTO_USER)
        group = grp.getgrnam(MOSQUITTO_USER)
    except KeyError:
        return None
    return user.pw_uid, group.gr_gid


def _check_name(name: str, what: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise KitError(f"{what} {name!r} must match {_NAME_RE.pattern}")


def _load_or_new_ca(
    out: Path, ca: Path | None, ca_name: str, key_type: pki.KeyType, now: dt.datetime
) -> tuple[pki.Authority, list[str]]:
    notes: list[str] = []
    if ca is not None:
        cert_path = ca / "ca.crt" if ca.is_dir() else ca
        key_path = cert_path.with_name("ca.key")
        authority = pki.load_authority(cert_path, key_path)
        if cert_path.resolve() != (out / "ca.crt").resolve():
            pki.write_cert(out / "ca.crt", authority.cert)
            notes.append(f"CA reused from {cert_path}; its key stays there")
        return authority, notes
    if (out / "ca.crt").exists() and (out / "ca.key").exists():
        notes.append("CA already in the kit directory: reused")
        return pki.load_authority(out / "ca.crt", out / "ca.key"), notes
    if (out / "ca.crt").exists():
        raise KitError(f"{out / 'ca.crt'} exists without ca.key: give --ca or another --out")
    authority = pki.new_authority(ca_name, key_type=key_type, now=now)
    pki.write_cert(out / "ca.crt", authority.cert)
    pki.write_key(out / "ca.key", authority.key)
    notes.append("ca.key signs every certificate of the kit: move it off the broker, keep it safe")
    return authority, notes


def _issued_by(cert_path: Path, authority: pki.Authority) -> bool:
    try:
        cert = pki.load_cert(cert_path)
        cert.verify_directly_issued_by(authority.cert)
    except (pki.PkiError, ValueError, TypeError):
        return False
    return True


def write_kit(
    out: Path,
    *,
    ca_name: str,
    nodes: Sequence[str],
    port: int = DEFAULT_PORT,
    bridge_to: Sequence[tuple[str, int]] = (),
    bridge_from: Sequence[str] = (),
    ca: Path | None = None,
    name: str | None = None,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    bind: str | None = None,
    key_type: pki.KeyType = "p256",
    max_inbound_bytes: int = 4096,
    topic_prefix: str = "crisis",
    renew: Sequence[str] = (),
    now: dt.datetime | None = None,
) -> Kit:
    """Write (or complete) a broker kit in ``out``; existing node certificates issued by the
    same CA are kept unless named in ``renew``."""
    now = now if now is not None else dt.datetime.now(dt.UTC)
    for node in nodes:
        _check_name(node, "node name")
    if len(set(nodes)) != len(nodes):
        raise KitError("a --node is given twice")
    for user in bridge_from:
        _check_name(user, "bridge client")
    if not 0 < port < 65536:
        raise KitError(f"port {port} is not a TCP port")
    broker_name = _slug(name or ca_name)
    bridge_name = f"bridge-{broker_name}" if bridge_to else None
    if bridge_name is not None and bridge_name in nodes:
        raise KitError(f"{bridge_name!r} is the bridge's own certificate name, not a node")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    ids = _mosquitto_ids()
    try:
        authority, notes = _load_or_new_ca(out, ca, ca_name, key_type, now)
    except pki.PkiError as exc:
        raise KitError(str(exc)) from exc

    # Files mosquitto itself reads: readable by the mosquitto user (it drops to it when started
    # as root), never by others. Node keys are for the nodes: only their owner reads them.
    def broker_key(path: Path, key: pki.PrivateKey) -> None:
        pki.write_key(path, key, mode=0o640 if ids else 0o600)
        if ids:
            os.chown(path, 0, ids[1])

    server_key = pki.new_key(key_type)
    server_cert = pki.issue(authority, broker_name, server_key, now=now, server_names=hosts)
    pki.write_cert(out / "server.crt", server_cert)
    broker_key(out / "server.key", server_key)

    pairs: dict[str, tuple[Path, Path]] = {}
    kept: list[str] = []
    for node in nodes:
        cert_path, key_path = out / f"{node}.crt", out / f"{node}.key"
        if node not in renew and key_path.exists() and _issued_by(cert_path, authority):
            kept.append(node)
        else:
            key = pki.new_key(key_type)
            pki.write_cert(cert_path, pki.issue(authority, node, key, now=now))
            pki.write_key(key_path, key)
        pairs[node] = (cert_path, key_path)
    if kept:
        notes.append(f"kept existing certificates of {', '.join(kept)} (renew with --renew)")

    bridges: tuple[Bridge, ...] = ()
    if bridge_name is not None:
        b_cert, b_key = out / f"{bridge_name}.crt", out / f"{bridge_name}.key"
        key = pki.new_key(key_type)
        pki.write_cert(b_cert, pki.issue(authority, bridge_name, key, now=now))
        broker_key(b_key, key)
        # In: every node's topics from the nationals. Out: only this region's own nodes, so
        # nothing heard from a national is ever sent back up (docs/broker.md, "Topology"). A
        # national that takes regions' bridges (--bridge-from) and bridges to the other
        # national carries those regions' traffic too: everything both ways.
        bridges = (
            make_bridge(
                bridge_name,
                bridge_to,
                nodes=nodes,
                relay_all=bool(bridge_from),
                prefix=topic_prefix,
                ca=out / "ca.crt",
                cert=b_cert,
                key=b_key,
            ),
        )

    crl = out / "crl.pem"
    try:
        revoked = pki.read_crl_serials(crl)
        pki.write_crl(crl, authority, revoked, now=now, validity=dt.timedelta(days=365))
    except pki.PkiError as exc:
        raise KitError(str(exc)) from exc

    acl = out / "acl"
    acl.write_text(render_acl(topic_prefix, bridge_users=bridge_from))
    acl.chmod(0o640 if ids else 0o644)
    data = out / "data"
    data.mkdir(exist_ok=True)
    data.chmod(0o700)
    if ids:
        os.chown(acl, 0, ids[1])
        os.chown(data, ids[0], ids[1])
        os.chown(out, 0, ids[1])
        out.chmod(0o750)
    else:
        out.chmod(0o755)  # nothing secret is readable: every key is 0600
        notes.append(
            "not root: before starting mosquitto as root run "
            f"chown root:{MOSQUITTO_USER} {out} {out}/server.key {out}/acl"
            + (f" {out}/{bridge_name}.key" if bridge_name else "")
            + f" && chmod 0640 {out}/server.key {out}/acl"
            + (f" {out}/{bridge_name}.key" if bridge_name else "")
            + f" && chmod 0750 {out} && chown {MOSQUITTO_USER}: {data}"
        )

    conf = BrokerConf(
        port=port,
        bind=bind,
        tls=TlsFiles(ca=out / "ca.crt", cert=out / "server.crt", key=out / "server.key", crl=crl),
        acl_file=acl,
        persistence_dir=data,
        autosave_interval_s=60,
        user=MOSQUITTO_USER,
        limits=Limits(message_size_limit=max_inbound_bytes),
        bridges=bridges,
        header=f"relay broker kit for {broker_name} (CA {ca_name!r}); see docs/broker.md",
    )
    conf_path = out / "mosquitto.conf"
    conf_path.write_text(render_conf(conf))
    conf_path.chmod(0o644)
    notes += _unreachable_parents(out, ids)
    return Kit(
        directory=out,
        conf=conf_path,
        ca=out / "ca.crt",
        server_cert=out / "server.crt",
        server_key=out / "server.key",
        nodes=pairs,
        bridge_name=bridge_name,
        port=port,
        notes=notes,
    )


def _unreachable_parents(out: Path, ids: tuple[int, int] | None) -> list[str]:
    """Parents the mosquitto user cannot enter (e.g. a 0700 home): it could not read the kit."""
    blocked = []
    for parent in out.parents:
        st = parent.stat()
        if ids is not None and st.st_uid == ids[0]:
            continue
        if not st.st_mode & 0o001 and not (ids is not None and st.st_gid == ids[1]):
            blocked.append(str(parent))
    if not blocked:
        return []
    return [f"the mosquitto user cannot enter {', '.join(blocked)}: move the kit or chmod o+x"]


def revoke(out: Path, node: str, *, ca: Path | None = None, now: dt.datetime | None = None) -> int:
    """Add ``node``'s certificate in kit ``out`` to the CRL; return its serial number.

    The CA key is the kit's ``ca.key``, or the one beside ``ca`` (a ``ca.crt`` or its
    directory). mosquitto reads the CRL when it starts: restart it to apply.
    """
    now = now if now is not None else dt.datetime.now(dt.UTC)
    out = out.resolve()
    cert_path = out / "ca.crt" if ca is None else (ca / "ca.crt" if ca.is_dir() else ca)
    try:
        authority = pki.load_authority(cert_path, cert_path.with_name("ca.key"))
        cert = pki.load_cert(out / f"{node}.crt")
        crl = out / "crl.pem"
        serials = pki.read_crl_serials(crl) | {cert.serial_number}
        pki.write_crl(crl, authority, serials, now=now, validity=dt.timedelta(days=365))
    except pki.PkiError as exc:
        raise KitError(str(exc)) from exc
    return int(cert.serial_number)
