"""X.509 for the broker kit: a CA, server certificates, node client certificates and a CRL.

One code path for the product (``relay broker kit``) and the test harness (relay.sim.pki). Keys
are ECDSA P-256 by default: mosquitto 2.0 (OpenSSL 1.1.1 / 3.0 on Raspberry Pi OS) and Python's
``ssl`` accept both P-256 and Ed25519 TLS certificates (tests/kit/test_kit_broker.py connects with
each), but P-256 is what every MQTT client library and older OpenSSL can use, so the kit picks it
unless told otherwise. A client certificate's common name is the node name: with
``use_identity_as_username true`` it is the MQTT username (the ACL's ``%u``) and with
``use_username_as_clientid true`` the client id.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "Authority",
    "KeyType",
    "PkiError",
    "PrivateKey",
    "common_name",
    "issue",
    "load_authority",
    "new_authority",
    "new_key",
    "write_crl",
    "write_key",
]

KeyType = Literal["p256", "ed25519"]
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

CA_VALIDITY = dt.timedelta(days=10 * 365)
CERT_VALIDITY = dt.timedelta(days=2 * 365)
CRL_VALIDITY = dt.timedelta(days=30)
_BACKDATE = dt.timedelta(minutes=5)  # a Pi whose clock is a little behind still accepts them


class PkiError(Exception):
    """Bad or unusable PKI input (an existing CA that does not load, a bad name)."""


@dataclass(frozen=True, slots=True)
class Authority:
    """A CA certificate with its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def name(self) -> x509.Name:
        return self.cert.subject


def new_key(key_type: KeyType = "p256") -> PrivateKey:
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _hash(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _name(common: str, organisation: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def common_name(cert: x509.Certificate) -> str:
    """The certificate's subject CN (what mosquitto takes as the username)."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(attrs) != 1:
        raise PkiError("certificate has no single common name")
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode()


def new_authority(
    name: str, *, key_type: KeyType = "p256", now: dt.datetime, validity: dt.timedelta = CA_VALIDITY
) -> Authority:
    """A self-signed CA that may sign end-entity certificates and CRLs (path length 0)."""
    key = new_key(key_type)
    subject = _name(name, "crisis-relay CA")  # never equal to an end entity's name
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + validity)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, _hash(key))
    )
    return Authority(cert, key)


def load_authority(cert_path: Path, key_path: Path) -> Authority:
    """Load an existing CA (``ca.crt`` and its unencrypted PEM ``ca.key``)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"cannot load CA from {cert_path} and {key_path}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise PkiError(f"{key_path}: CA key must be ECDSA or Ed25519")
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if key.public_key().public_bytes(enc, pub) != cert.public_key().public_bytes(enc, pub):
        raise PkiError(f"{key_path} is not the key of {cert_path}")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise PkiError(f"{cert_path} is not a CA certificate")
    return Authority(cert, key)


def issue(
    ca: Authority,
    common: str,
    key: PrivateKey,
    *,
    now: dt.datetime,
    server_names: Sequence[str] = (),
    validity: dt.timedelta = CERT_VALIDITY,
) -> x509.Certificate:
    """A certificate for ``common``: a TLS server with ``server_names`` (DNS names or IP
    addresses) as its subjectAltName, else a TLS client (a node or a bridge)."""
    if not common or "/" in common or common.startswith("."):
        raise PkiError(f"bad certificate name {common!r}")
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common, "crisis-relay"))
        .issuer_name(ca.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + validity, ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if server_names:
        builder = builder.add_extension(_san(server_names), critical=False)
    return builder.sign(ca.key, _hash(ca.key))


def _san(names: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def write_key(path: Path, key: PrivateKey, *, mode: int = 0o600) -> None:
    """Write an unencrypted PKCS#8 PEM key, created with ``mode`` (never readable by others)."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    path.chmod(mode)  # the umask may have taken bits away; never adds any for others


def write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.chmod(0o644)


def write_crl(
    path: Path,
    ca: Authority,
    revoked_serials: Iterable[int],
    *,
    now: dt.datetime,
    validity: dt.timedelta = CRL_VALIDITY,
) -> x509.CertificateRevocationList:
    """Write a PEM CRL signed by ``ca`` listing ``revoked_serials`` (may be empty)."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.name)
        .last_update(now - _BACKDATE)
        .next_update(now + validity)
    )
    for serial in sorted(set(revoked_serials)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - _BACKDATE)
            .build()
        )
    crl = builder.sign(ca.key, _hash(ca.key))
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    path.chmod(0o644)
    return crl


def read_crl_serials(path: Path) -> set[int]:
    """Serial numbers already revoked in an existing CRL (empty when there is none)."""
    if not path.exists():
        return set()
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except ValueError as exc:
        raise PkiError(f"{path}: not a PEM CRL: {exc}") from exc
    return {r.serial_number for r in crl}


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot load certificate {path}: {exc}") from exc
