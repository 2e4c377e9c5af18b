"""ML-DSA-44 key files of a PQ-enabled issuer, beside its Ed25519 key (relay.keys).

``relay keys new NAME --pq`` writes ``NAME.pq.key`` (PKCS#8 PEM, mode 0600, optionally encrypted
like the Ed25519 key) and ``NAME.pq.pub`` (SubjectPublicKeyInfo PEM) next to ``NAME.key`` and
``NAME.pub``. ``relay sign --pq`` finds the ML-DSA key beside the ``--key`` it is given. ML-DSA
signing keeps no state, so unlike the Ed25519 key no sequence counter goes with it.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey, MLDSA44PublicKey

from relay.keys import PASSPHRASE_ENV, KeyError_, _write_new


def pq_paths(key_path: Path) -> tuple[Path, Path]:
    """``DIR/NAME.key`` -> (``DIR/NAME.pq.key``, ``DIR/NAME.pq.pub``)."""
    stem = key_path.name.removesuffix(".key").removesuffix(".pub")
    return key_path.with_name(f"{stem}.pq.key"), key_path.with_name(f"{stem}.pq.pub")


def write_pq_keypair(
    directory: Path, name: str, *, passphrase: bytes | None = None, force: bool = False
) -> tuple[Path, Path, MLDSA44PrivateKey]:
    directory.mkdir(parents=True, exist_ok=True)
    key = MLDSA44PrivateKey.generate()
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    pub_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_path, pub_path = pq_paths(directory / f"{name}.key")
    try:
        _write_new(key_path, pem, 0o600, force=force)
    except FileExistsError as exc:
        raise KeyError_(f"{key_path} exists; refusing to overwrite a key (use --force)") from exc
    _write_new(pub_path, pub_pem, 0o644, force=True)
    return key_path, pub_path, key


def load_pq_private(path: Path, passphrase: bytes | None = None) -> MLDSA44PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"cannot read ML-DSA key {path}: {exc.strerror}") from exc
    if passphrase is None and os.environ.get(PASSPHRASE_ENV):
        passphrase = os.environ[PASSPHRASE_ENV].encode()
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as exc:
        raise KeyError_(f"{path} is encrypted: set {PASSPHRASE_ENV}") from exc
    except ValueError as exc:
        raise KeyError_(f"{path} is not a readable private key (or wrong passphrase)") from exc
    if not isinstance(key, MLDSA44PrivateKey):
        raise KeyError_(f"{path} is not an ML-DSA-44 key")
    return key


def load_pq_public(path: Path) -> MLDSA44PublicKey:
    """An ML-DSA-44 public key file (a private key file gives its public half)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"cannot read ML-DSA key {path}: {exc.strerror}") from exc
    if b"PRIVATE KEY" in data:
        return load_pq_private(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyError_(f"{path} is not a PEM public key") from exc
    if not isinstance(key, MLDSA44PublicKey):
        raise KeyError_(f"{path} is not an ML-DSA-44 key")
    return key
