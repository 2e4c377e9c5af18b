"""Post-quantum attestations: an ML-DSA-44 COSE_Sign1 over a decision's message id. Pure code.

The LoRa path stays Ed25519 (an ML-DSA-44 signature alone is 2,420 B, about eleven frames), so a
PQ-enabled issuer signs each decision twice: the decision itself with Ed25519, as always, and a
companion *attestation* with ML-DSA-44 (FIPS 204, COSE alg -48 of RFC 9964) whose payload names
the decision's message id (SHA-256 of its signed bytes) and carries the ML-DSA public key. The
roster holds only SHA-256 of that public key (entry key 8), so it stays small enough for the mesh.
One message id on every path: the attestation is a separate object that travels over MQTT beside
the decision and by healing (a small "want" request) to nodes that got the decision by mesh.

Layout and rules: docs/wire-format.md, section 9. Every fault is a ``Rejection`` with a reason,
never an exception; ``open_attestation`` accepts only the one byte form that ``attest`` emits.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA44PrivateKey, MLDSA44PublicKey

from relay import cose
from relay.envelope import KID_LEN, Reason, Rejection

ALG_MLDSA44: Final = -48  # RFC 9964: ML-DSA-44
KTY_AKP: Final = 7  # RFC 9964: Algorithm Key Pair
COSE_KEY_KTY: Final = 1
COSE_KEY_ALG: Final = 3
AKP_PUB: Final = -1
PUBLIC_LEN: Final = 1312
SIGNATURE_LEN: Final = 2420
KEY_HASH_LEN: Final = 32  # SHA-256 of the raw ML-DSA-44 public key (roster entry key 8)
MSG_ID_LEN: Final = 32
ATT_MSG_ID: Final = 1  # payload labels
ATT_KEY: Final = 2
# What an attestation is: 3,799 B exactly (tests check it); a node's inbound limit is 4096 B.
ATTESTATION_BYTES: Final = 3799
MAX_ATTESTATION_BYTES: Final = 4096
# The first bytes of every attestation: tag 18, array(4), bstr(10) holding {1: -48, 4: bstr(4)}.
PREFIX: Final = bytes.fromhex("d2844aa201382f0444")

WANT_MARK: Final = "pq-want"
WANT_VERSION: Final = 1
MAX_WANT_IDS: Final = 16
MAX_WANT_BYTES: Final = 1024
WANT_PREFIX: Final = b"\x84\x67" + WANT_MARK.encode()


class Policy(StrEnum):
    """``[trust] pq``: what a node makes of attestations (docs/config.md)."""

    OFF = "off"  # attestations are neither checked nor kept; decisions show as before
    PREFER = "prefer"  # checked and kept; a decision without one is still shown as verified
    REQUIRE = "require"  # a PQ-enabled issuer's decision is verified only with its attestation


class State(StrEnum):
    """What a held decision's quantum-safe signature looks like (status, console, API)."""

    NONE = "none"  # the issuer has no ML-DSA key on the roster (or the node's policy is off)
    VERIFIED = "verified"  # a valid attestation is stored
    PENDING = "pending"  # the issuer is PQ-enabled and the attestation has not come (yet)


LABELS: Final = {
    "nl": {
        State.PENDING: "kwantumveilige handtekening volgt",
        State.VERIFIED: "kwantumveilig ondertekend",
    },
    "en": {
        State.PENDING: "quantum-safe signature pending",
        State.VERIFIED: "quantum-safe signature verified",
    },
}


def label(state: str, lang: str = "nl") -> str:
    """The user-facing words for a state ("" for ``none``)."""
    return LABELS.get(lang, LABELS["nl"]).get(State(state), "") if state else ""


def key_hash(public_raw: bytes) -> bytes:
    """What the roster holds of an issuer's ML-DSA-44 key."""
    return hashlib.sha256(public_raw).digest()


def public_raw(key: MLDSA44PublicKey) -> bytes:
    return key.public_bytes_raw()


@dataclass(frozen=True, slots=True)
class Attestation:
    """A structurally valid attestation in its canonical form, not yet checked."""

    raw: bytes
    kid: bytes  # the Ed25519 key id that signed the decision (which roster entry)
    msg_id: bytes  # the decision it attests
    public: bytes  # raw ML-DSA-44 public key
    to_be_signed: bytes
    signature: bytes

    @property
    def id(self) -> bytes:
        return hashlib.sha256(self.raw).digest()

    @property
    def key_hash(self) -> bytes:
        return key_hash(self.public)


def _parts(kid: bytes, msg_id: bytes, public: bytes) -> tuple[bytes, bytes]:
    protected = cbor2.dumps({cose.HEADER_ALG: ALG_MLDSA44, cose.HEADER_KID: kid})
    cose_key = {COSE_KEY_KTY: KTY_AKP, COSE_KEY_ALG: ALG_MLDSA44, AKP_PUB: public}
    payload = cbor2.dumps({ATT_MSG_ID: msg_id, ATT_KEY: cose_key})
    return protected, payload


def _encode(protected: bytes, payload: bytes, signature: bytes) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(cose.COSE_SIGN1_TAG, [protected, {}, payload, signature]))


def attest(msg_id: bytes, kid: bytes, key: MLDSA44PrivateKey) -> bytes:
    """Sign the attestation of the decision ``msg_id`` signed by the Ed25519 key ``kid``."""
    if len(msg_id) != MSG_ID_LEN or len(kid) != KID_LEN:
        raise ValueError("an attestation names a 32-byte message id and a 4-byte key id")
    protected, payload = _parts(kid, msg_id, public_raw(key.public_key()))
    # FIPS 204 pure ML-DSA with an empty context string, as RFC 9964 uses it.
    signature = key.sign(cose.sig_structure(protected, payload))
    return _encode(protected, payload, signature)


def is_attestation(raw: bytes) -> bool:
    """A cheap look at the first bytes: does this claim to be an attestation?"""
    return raw.startswith(PREFIX)


def open_attestation(raw: bytes) -> Attestation | Rejection:
    """Parse an attestation; only the exact form ``attest`` emits is accepted."""
    if len(raw) > MAX_ATTESTATION_BYTES:
        return Rejection(Reason.OVERSIZED, f"attestation of {len(raw)} B (limit 4096 B)")
    try:
        msg = cose.decode_sign1(raw)
    except cose.CoseError as exc:
        return Rejection(Reason.MALFORMED, f"attestation: {exc.detail}")
    if msg.alg != ALG_MLDSA44:
        return Rejection(
            Reason.UNSUPPORTED_ALGORITHM, f"attestation alg {msg.alg!r} is not ML-DSA-44 (-48)"
        )
    try:
        body = _loads_map(msg.payload)
    except ValueError as exc:
        return Rejection(Reason.MALFORMED, f"attestation payload: {exc}")
    kid, msg_id, key = msg.kid, body.get(ATT_MSG_ID), body.get(ATT_KEY)
    if not isinstance(kid, bytes) or len(kid) != KID_LEN:
        return Rejection(Reason.MALFORMED, "attestation: kid must be 4 bytes")
    if not isinstance(msg_id, bytes) or len(msg_id) != MSG_ID_LEN:
        return Rejection(Reason.MALFORMED, "attestation: message id must be 32 bytes")
    if not isinstance(key, dict) or set(key) != {COSE_KEY_KTY, COSE_KEY_ALG, AKP_PUB}:
        return Rejection(Reason.MALFORMED, "attestation: key must be a COSE_Key {1, 3, -1}")
    if key[COSE_KEY_KTY] != KTY_AKP or key[COSE_KEY_ALG] != ALG_MLDSA44:
        return Rejection(Reason.MALFORMED, "attestation: key must be kty AKP (7), alg -48")
    public = key[AKP_PUB]
    if not isinstance(public, bytes) or len(public) != PUBLIC_LEN:
        return Rejection(Reason.MALFORMED, "attestation: ML-DSA-44 public key must be 1312 B")
    if len(msg.signature) != SIGNATURE_LEN:
        return Rejection(Reason.MALFORMED, "attestation: ML-DSA-44 signature must be 2420 B")
    if set(body) != {ATT_MSG_ID, ATT_KEY} or _encode(
        *_parts(kid, msg_id, public), msg.signature
    ) != bytes(raw):
        # The attestation's id is a hash of its bytes: one byte form only (as open_envelope).
        return Rejection(Reason.MALFORMED, "attestation: not in canonical form")
    return Attestation(bytes(raw), kid, msg_id, public, msg.to_be_signed(), msg.signature)


def _loads_map(data: bytes) -> dict[Any, Any]:
    try:
        stream = io.BytesIO(data)
        item = cbor2.CBORDecoder(stream).decode()
    except Exception as exc:
        raise ValueError(f"not CBOR: {exc}") from exc
    if stream.tell() != len(data):
        raise ValueError("trailing bytes")
    if not isinstance(item, Mapping):
        raise ValueError("not a map")
    return {k: dict(v) if isinstance(v, Mapping) else v for k, v in item.items()}


def check(
    att: Attestation, *, kid: bytes, pq_key_hash: bytes | None, msg_id: bytes | None
) -> Rejection | None:
    """Check an attestation against the roster entry of ``kid`` (its ML-DSA key hash) and, when
    the decision is known, against its message id and Ed25519 key id. ``None``: valid."""
    if msg_id is not None and att.msg_id != msg_id:
        return Rejection(
            Reason.PQ_WRONG_MESSAGE,
            f"attestation names message {att.msg_id.hex()[:16]}, not {msg_id.hex()[:16]}",
        )
    if att.kid != kid:
        return Rejection(
            Reason.PQ_WRONG_MESSAGE,
            f"attestation of key id {att.kid.hex()} for a decision signed by {kid.hex()}",
        )
    if pq_key_hash is None:
        return Rejection(
            Reason.PQ_NOT_ENABLED, f"key id {kid.hex()} has no ML-DSA key on the roster"
        )
    if att.key_hash != pq_key_hash:
        return Rejection(
            Reason.PQ_KEY_MISMATCH,
            f"ML-DSA key {att.key_hash.hex()[:16]} is not the roster's {pq_key_hash.hex()[:16]}",
        )
    try:
        MLDSA44PublicKey.from_public_bytes(att.public).verify(att.signature, att.to_be_signed)
    except (InvalidSignature, ValueError):
        return Rejection(Reason.PQ_BAD_SIGNATURE, "ML-DSA-44 signature does not verify")
    return None


# ------------------------------------------------------------------------------ want requests


@dataclass(frozen=True, slots=True)
class Want:
    """A node asks for the attestations of decisions it holds without one (unsigned, like the
    healing summaries: the worst a forged one does is make nodes publish public attestations,
    which the answer bounds limit)."""

    sender: str
    ids: tuple[bytes, ...]


def is_want(raw: bytes) -> bool:
    return raw.startswith(WANT_PREFIX)


def encode_want(sender: str, ids: Iterable[bytes]) -> bytes:
    items = list(ids)[:MAX_WANT_IDS]
    return cbor2.dumps([WANT_MARK, WANT_VERSION, sender, items])


def decode_want(raw: bytes) -> Want | Rejection:
    if len(raw) > MAX_WANT_BYTES:
        return Rejection(Reason.OVERSIZED, f"pq-want of {len(raw)} B (limit {MAX_WANT_BYTES} B)")
    try:
        stream = io.BytesIO(raw)
        item = cbor2.CBORDecoder(stream).decode()
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the peer's fault
        return Rejection(Reason.MALFORMED, f"pq-want: not CBOR: {exc}")
    if stream.tell() != len(raw):
        return Rejection(Reason.MALFORMED, "pq-want: trailing bytes")
    if (
        not isinstance(item, list | tuple)
        or len(item) != 4
        or item[0] != WANT_MARK
        or item[1] != WANT_VERSION
        or not isinstance(item[2], str)
        or not 1 <= len(item[2]) <= 64
        or not isinstance(item[3], list | tuple)
        or not 1 <= len(item[3]) <= MAX_WANT_IDS
        or not all(isinstance(i, bytes) and len(i) == MSG_ID_LEN for i in item[3])
    ):
        return Rejection(
            Reason.MALFORMED, f'pq-want must be ["{WANT_MARK}", 1, sender, [1*16 message id]]'
        )
    return Want(item[2], tuple(item[3]))
