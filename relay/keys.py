"""Key files and the per-key sequence counter.

Private keys are PKCS#8 PEM created with mode 0600 (optionally encrypted with a passphrase);
public keys are SubjectPublicKeyInfo PEM. Key material is never printed or logged: only the key id
(4 bytes of SHA-256 of the raw public key, as carried in messages) and a fingerprint.

The sequence counter lives beside the key (``NAME.key`` -> ``NAME.seq``). It is advanced and made
durable *before* a message with the new number is signed, under an exclusive lock, so a crash can
skip a number but never reuse one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey

from relay.envelope import key_id

PASSPHRASE_ENV = "RELAY_KEY_PASSPHRASE"  # noqa: S105 - the name of a variable, not a secret


class KeyError_(Exception):
    """A key file is missing, unreadable, of the wrong type or needs a passphrase."""


def raw_public(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(pub_raw: bytes) -> str:
    digest = hashlib.sha256(pub_raw).hexdigest()
    return ":".join(digest[i : i + 4] for i in range(0, 32, 4))


def _write_new(path: Path, data: bytes, mode: int, *, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_pem_pair(
    key_path: Path,
    pub_path: Path,
    key: Ed25519PrivateKey | MLDSA44PrivateKey,
    *,
    passphrase: bytes | None,
    force: bool,
) -> None:
    """Write a private key (PKCS#8 PEM, mode 0600, encrypted with ``passphrase`` if given) and
    its public half (SubjectPublicKeyInfo PEM); an existing private key is kept unless ``force``."""
    key_path.parent.mkdir(parents=True, exist_ok=True)
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    pub_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        _write_new(key_path, pem, 0o600, force=force)
    except FileExistsError as exc:
        raise KeyError_(f"{key_path} exists; refusing to overwrite a key (use --force)") from exc
    _write_new(pub_path, pub_pem, 0o644, force=True)


def read_private_pem(path: Path, passphrase: bytes | None, *, what: str = "key") -> object:
    """The private key in a PEM file (any type: the caller checks it); the passphrase from
    RELAY_KEY_PASSPHRASE when none is given."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"cannot read {what} {path}: {exc.strerror}") from exc
    if passphrase is None and os.environ.get(PASSPHRASE_ENV):
        passphrase = os.environ[PASSPHRASE_ENV].encode()
    try:
        return serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as exc:
        raise KeyError_(f"{path} is encrypted: set {PASSPHRASE_ENV}") from exc
    except ValueError as exc:
        raise KeyError_(f"{path} is not a readable private key (or wrong passphrase)") from exc


def read_public_pem(path: Path, *, what: str = "key") -> object | None:
    """The public key in a PEM file (any type), or None when the file holds a private key (the
    caller then loads that and takes its public half)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"cannot read {what} {path}: {exc.strerror}") from exc
    if b"PRIVATE KEY" in data:
        return None
    try:
        return serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyError_(f"{path} is not a PEM public key") from exc


def write_keypair(
    directory: Path, name: str, *, passphrase: bytes | None = None, force: bool = False
) -> tuple[Path, Path, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    key_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub"
    write_pem_pair(key_path, pub_path, key, passphrase=passphrase, force=force)
    return key_path, pub_path, key


def load_private(path: Path, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    key = read_private_pem(path, passphrase)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"{path} is not an Ed25519 key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    """Load a public key; a private key file is accepted too (its public half is used)."""
    key = read_public_pem(path)
    if key is None:
        return load_private(path).public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise KeyError_(f"{path} is not an Ed25519 key")
    return key


def kid_of(pub: Ed25519PublicKey) -> bytes:
    return key_id(raw_public(pub))


class SequenceCounter:
    """A durable, strictly increasing counter stored beside a key file."""

    def __init__(self, key_path: Path) -> None:
        self.path = key_path.with_suffix(".seq")

    @classmethod
    def at(cls, path: Path) -> SequenceCounter:
        """A counter kept in ``path`` itself (the node's own counter, see docs/store.md)."""
        counter = cls(path)
        counter.path = path
        return counter

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.path.with_suffix(".seq.lock")
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def last(self) -> int:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return 0
        if not text.isdigit():
            raise KeyError_(f"{self.path} is corrupt; restore it (never reset it to a lower value)")
        return int(text)

    def reserve(self, floor: int = 0) -> int:
        """Return a number above every number returned before (and above ``floor``)."""
        with self._locked():
            value = max(self.last(), floor) + 1
            tmp = self.path.with_suffix(".seq.tmp")
            _write_new(tmp, f"{value}\n".encode(), 0o600, force=True)
            tmp.replace(self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            return value
