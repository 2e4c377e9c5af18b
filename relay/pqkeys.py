"""ML-DSA-44 key files of a PQ-enabled issuer, beside its Ed25519 key (relay.keys).

``relay keys new NAME --pq`` writes ``NAME.pq.key`` (PKCS#8 PEM, mode 0600, optionally encrypted
like the Ed25519 key) and ``NAME.pq.pub`` (SubjectPublicKeyInfo PEM) next to ``NAME.key`` and
``NAME.pub``. ``relay sign --pq`` finds the ML-DSA key beside the ``--key`` it is given. ML-DSA
signing keeps no state, so unlike the Ed25519 key no sequence counter goes with it.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey, MLDSA44PublicKey

from relay.keys import KeyError_, read_private_pem, read_public_pem, write_pem_pair


def pq_paths(key_path: Path) -> tuple[Path, Path]:
    """``DIR/NAME.key`` -> (``DIR/NAME.pq.key``, ``DIR/NAME.pq.pub``)."""
    stem = key_path.name.removesuffix(".key").removesuffix(".pub")
    return key_path.with_name(f"{stem}.pq.key"), key_path.with_name(f"{stem}.pq.pub")


def write_pq_keypair(
    directory: Path, name: str, *, passphrase: bytes | None = None, force: bool = False
) -> tuple[Path, Path, MLDSA44PrivateKey]:
    key = MLDSA44PrivateKey.generate()
    key_path, pub_path = pq_paths(directory / f"{name}.key")
    write_pem_pair(key_path, pub_path, key, passphrase=passphrase, force=force)
    return key_path, pub_path, key


def load_pq_private(path: Path, passphrase: bytes | None = None) -> MLDSA44PrivateKey:
    key = read_private_pem(path, passphrase, what="ML-DSA key")
    if not isinstance(key, MLDSA44PrivateKey):
        raise KeyError_(f"{path} is not an ML-DSA-44 key")
    return key


def load_pq_public(path: Path) -> MLDSA44PublicKey:
    """An ML-DSA-44 public key file (a private key file gives its public half)."""
    key = read_public_pem(path, what="ML-DSA key")
    if key is None:
        return load_pq_private(path).public_key()
    if not isinstance(key, MLDSA44PublicKey):
        raise KeyError_(f"{path} is not an ML-DSA-44 key")
    return key
