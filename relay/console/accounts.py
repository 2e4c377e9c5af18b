"""Console accounts: a person, a password and the issuer key they sign with.

The users file (JSON, mode 0600) holds per user a scrypt password hash and the issuer's raw
Ed25519 private key encrypted with AES-256-GCM under a second scrypt key derived from the same
password (another salt). The console never writes the key in the clear; it decrypts it in memory
for one signature and drops it. scrypt is memory-hard (2^15 x 8 x 128 B = 32 MiB a derivation)
and in the standard library, so no extra dependency is needed.

Sequence numbers: every console signature takes the next number from a counter file per key id
beside the users file, started above the key file's own counter when the user was added, so the
numbers continue where ``relay send`` left off.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from relay.envelope import key_id
from relay.keys import SequenceCounter, raw_public

SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
MIN_PASSWORD = 10
NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
FILE_VERSION = 1


class AccountError(Exception):
    """A users file or account operation failed; the message says why."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    issuer: str  # the roster entry the key belongs to
    kid: bytes
    seq_floor: int
    record: dict[str, Any]


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: object) -> bytes:
    if not isinstance(s, str):
        raise AccountError("users file: a field is not base64 text")
    return base64.b64decode(s, validate=True)


def _scrypt(password: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=SCRYPT_P, maxmem=256 * 1024 * 1024, dklen=32
    )


class Accounts:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"version": FILE_VERSION, "users": {}}
        except (OSError, ValueError) as exc:
            raise AccountError(f"cannot read users file {self.path}: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("version") != FILE_VERSION:
            raise AccountError(f"{self.path} is not a version {FILE_VERSION} users file")
        if not isinstance(doc.get("users"), dict):
            raise AccountError(f"{self.path}: 'users' must be a table")
        return doc

    def _save(self, doc: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, json.dumps(doc, indent=2, sort_keys=True).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(self.path)

    def names(self) -> list[str]:
        return sorted(self._load()["users"])

    def add(
        self, name: str, password: str, key: Ed25519PrivateKey, issuer: str, *, seq_floor: int
    ) -> User:
        if not NAME.match(name):
            raise AccountError(f"user name {name!r}: use 1-64 letters, digits or . _ @ -")
        if len(password) < MIN_PASSWORD:
            raise AccountError(f"the password must have at least {MIN_PASSWORD} characters")
        doc = self._load()
        if name in doc["users"]:
            raise AccountError(f"user {name!r} exists already")
        pub = raw_public(key.public_key())
        kid = key_id(pub)
        pw_salt, key_salt, nonce = os.urandom(16), os.urandom(16), os.urandom(12)
        aad = f"relay-console:{name}:{kid.hex()}".encode()
        sealed = AESGCM(_scrypt(password, key_salt)).encrypt(nonce, key.private_bytes_raw(), aad)
        record = {
            "issuer": issuer,
            "kid": kid.hex(),
            "public_key": _b64(pub),
            "scrypt": {"n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
            "password_salt": _b64(pw_salt),
            "password_hash": _b64(_scrypt(password, pw_salt)),
            "key_salt": _b64(key_salt),
            "key_nonce": _b64(nonce),
            "key_sealed": _b64(sealed),
            "seq_floor": seq_floor,
            "created_at": int(time.time()),
        }
        doc["users"][name] = record
        self._save(doc)
        return self._user(name, record)

    def _user(self, name: str, record: Any) -> User:
        if not isinstance(record, dict):
            raise AccountError(f"users file: entry {name!r} is not a table")
        try:
            return User(
                name,
                str(record["issuer"]),
                bytes.fromhex(str(record["kid"])),
                int(record["seq_floor"]),
                record,
            )
        except (KeyError, ValueError) as exc:
            raise AccountError(f"users file: entry {name!r} is incomplete ({exc})") from exc

    def get(self, name: str) -> User | None:
        record = self._load()["users"].get(name)
        return None if record is None else self._user(name, record)

    def check_password(self, name: str, password: str) -> User | None:
        """The user, when ``password`` is theirs; otherwise None (after the same work)."""
        user = self.get(name)
        if user is None:
            _scrypt(password, b"\0" * 16)  # the same cost for an unknown name
            return None
        params = user.record["scrypt"]
        digest = _scrypt(password, _unb64(user.record["password_salt"]), params["n"], params["r"])
        if not hmac.compare_digest(digest, _unb64(user.record["password_hash"])):
            return None
        return user

    def unlock(self, user: User, password: str) -> Ed25519PrivateKey:
        """Decrypt the user's issuer key for one signature. Raises AccountError on a wrong
        password (the AES-GCM tag does not match)."""
        rec, params = user.record, user.record["scrypt"]
        aad = f"relay-console:{user.name}:{user.kid.hex()}".encode()
        try:
            raw = AESGCM(
                _scrypt(password, _unb64(rec["key_salt"]), params["n"], params["r"])
            ).decrypt(_unb64(rec["key_nonce"]), _unb64(rec["key_sealed"]), aad)
        except InvalidTag:
            raise AccountError("wrong password: the key was not unlocked") from None
        key = Ed25519PrivateKey.from_private_bytes(raw)
        if key_id(raw_public(key.public_key())) != user.kid:
            raise AccountError("the stored key does not match its key id")
        return key

    def counter(self, user: User) -> SequenceCounter:
        """The sequence counter of the user's key (shared by every user of that key)."""
        return SequenceCounter(self.path.parent / f"console-{user.kid.hex()}.key")

    def next_seq(self, user: User) -> int:
        return self.counter(user).reserve(floor=user.seq_floor)

    def peek_seq(self, user: User) -> int:
        return max(self.counter(user).last(), user.seq_floor) + 1
