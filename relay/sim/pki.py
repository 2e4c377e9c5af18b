"""Throwaway X.509 material for tests and drills: one CA, one loopback server, named clients.

Made by relay.kit.pki, the code behind ``relay broker kit``, with a short validity. The server
certificate is valid for ``127.0.0.1`` and ``localhost`` only. A client certificate's common name
is the node name, which a broker with ``use_identity_as_username true`` takes as the MQTT
username (the ACL's ``%u``). Keys are written unencrypted (mode 0600).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from relay.kit import pki

__all__ = ["CertPair", "TestPki", "generate_pki"]

_VALIDITY = dt.timedelta(days=2)


@dataclass(frozen=True, slots=True)
class CertPair:
    """A PEM certificate and its unencrypted PEM private key."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class TestPki:
    """Paths of a generated CA, server pair and client pairs (by common name)."""

    ca: Path
    server: CertPair
    clients: dict[str, CertPair]


def generate_pki(
    directory: Path, *, clients: Iterable[str], key_type: pki.KeyType = "p256"
) -> TestPki:
    """Write a fresh CA, a loopback server pair and one pair per client name into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca = pki.new_authority("crisis-relay test CA", key_type=key_type, now=now, validity=_VALIDITY)
    ca_path = directory / "ca.crt"
    pki.write_cert(ca_path, ca.cert)

    def pair(stem: str, common: str, server_names: tuple[str, ...] = ()) -> CertPair:
        key = pki.new_key(key_type)
        cert = pki.issue(ca, common, key, now=now, server_names=server_names, validity=_VALIDITY)
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        pki.write_cert(cert_path, cert)
        pki.write_key(key_path, key)
        return CertPair(cert=cert_path, key=key_path)

    server = pair("server", "localhost", ("localhost", "127.0.0.1"))
    client_pairs: dict[str, CertPair] = {}
    for name in clients:
        if not name or "/" in name or name in client_pairs:
            raise ValueError(f"bad or repeated client name {name!r}")
        client_pairs[name] = pair(f"client-{name}", name)
    return TestPki(ca=ca_path, server=server, clients=client_pairs)
