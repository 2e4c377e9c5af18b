"""Throwaway X.509 material for tests and drills: one CA, one loopback server, named clients.

Keys are ECDSA P-256 (fast to make, accepted by mosquitto's OpenSSL). The server certificate is
valid for ``127.0.0.1`` and ``localhost`` only. A client certificate's common name is the node
name, which a broker with ``use_identity_as_username true`` takes as the MQTT username (the ACL's
``%u``). Nothing here is fit for a real deployment: keys are written unencrypted.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "crisis-relay test PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _issue(
    *,
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    ca_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    usage: x509.ObjectIdentifier,
    san: x509.SubjectAlternativeName | None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def generate_pki(directory: Path, *, clients: Iterable[str]) -> TestPki:
    """Write a fresh CA, a loopback server pair and one pair per client name into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("crisis-relay test CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def pair(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> CertPair:
        cert_path = directory / f"{stem}.crt"
        key_path = directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return CertPair(cert=cert_path, key=key_path)

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
    )
    server_cert = _issue(
        subject="localhost",
        key=server_key,
        ca_name=ca_name,
        ca_key=ca_key,
        now=now,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        san=server_san,
    )
    server = pair("server", server_cert, server_key)

    client_pairs: dict[str, CertPair] = {}
    for name in clients:
        if not name or "/" in name or name in client_pairs:
            raise ValueError(f"bad or repeated client name {name!r}")
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(
            subject=name,
            key=key,
            ca_name=ca_name,
            ca_key=ca_key,
            now=now,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            san=None,
        )
        client_pairs[name] = pair(f"client-{name}", cert, key)
    return TestPki(ca=ca_path, server=server, clients=client_pairs)
