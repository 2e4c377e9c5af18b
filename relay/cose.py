"""COSE_Sign1 (RFC 9052) with Ed25519: the low-level signing and verification layer.

``verify_sign1`` accepts any standard COSE_Sign1 signed with an Ed25519 key, tagged or untagged,
with the algorithm given as -19 (Ed25519, RFC 9864) or -8 (the older polymorphic EdDSA id), and
returns its payload. It is what the relay's own envelope uses, and it verifies messages made by
independent COSE implementations too (see tests/test_cose.py for the COSE working group's example).

``sign1`` emits alg -19 with the key id in the *protected* header, so the signature covers it,
and an empty unprotected map: the most compact standard form.

Decoding never trusts lengths it has not checked: every failure is a ``CoseError`` with a short
``reason`` that callers turn into a rejection, never an unexpected exception.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

COSE_SIGN1_TAG = 18
HEADER_ALG = 1
HEADER_KID = 4
ALG_ED25519 = -19  # RFC 9864 fully specified Ed25519
ALG_EDDSA = -8  # RFC 9053 polymorphic EdDSA, deprecated but common: accepted, never emitted
ACCEPTED_ALGS = frozenset({ALG_ED25519, ALG_EDDSA})
SIGNATURE_LEN = 64


class CoseError(Exception):
    """A COSE_Sign1 could not be decoded or verified; ``reason`` is a short machine word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Sign1:
    """A structurally valid COSE_Sign1, not yet verified."""

    protected_bytes: bytes
    protected: dict[Any, Any]
    unprotected: dict[Any, Any]
    payload: bytes
    signature: bytes

    @property
    def alg(self) -> object:
        return self.protected.get(HEADER_ALG, self.unprotected.get(HEADER_ALG))

    @property
    def kid(self) -> bytes | None:
        kid = self.protected.get(HEADER_KID, self.unprotected.get(HEADER_KID))
        return kid if isinstance(kid, bytes) else None

    def to_be_signed(self, external_aad: bytes = b"") -> bytes:
        return sig_structure(self.protected_bytes, self.payload, external_aad)


def sig_structure(protected_bytes: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    """The Sig_structure of RFC 9052 section 4.4 for a COSE_Sign1."""
    return cbor2.dumps(["Signature1", protected_bytes, external_aad, payload])


def _loads_exact(data: bytes) -> Any:
    """Decode exactly one CBOR item; trailing bytes are an error, not ignored."""
    try:
        stream = io.BytesIO(data)
        item = cbor2.CBORDecoder(stream).decode()
        rest = len(data) - stream.tell()
    except Exception as exc:
        raise CoseError("malformed", f"not CBOR: {exc}") from exc
    if rest:
        raise CoseError("malformed", f"{rest} trailing bytes after the COSE structure")
    return item


def decode_sign1(data: bytes) -> Sign1:
    """Parse a COSE_Sign1 (tagged 18 or untagged) without verifying it."""
    item = _loads_exact(data)
    if isinstance(item, cbor2.CBORTag):
        if item.tag != COSE_SIGN1_TAG:
            raise CoseError("malformed", f"CBOR tag {item.tag} is not COSE_Sign1 (18)")
        item = item.value
    # cbor2 6 decodes a tagged array as a tuple and maps inside it as frozendicts.
    if not isinstance(item, list | tuple) or len(item) != 4:
        raise CoseError("malformed", "COSE_Sign1 must be an array of four items")
    protected_bytes, unprotected, payload, signature = item
    if not isinstance(protected_bytes, bytes):
        raise CoseError("malformed", "protected header must be a byte string")
    if not isinstance(unprotected, Mapping):
        raise CoseError("malformed", "unprotected header must be a map")
    if not isinstance(payload, bytes):
        raise CoseError("malformed", "payload must be an attached byte string")
    if not isinstance(signature, bytes):
        raise CoseError("malformed", "signature must be a byte string")
    if protected_bytes:
        protected = _loads_exact(protected_bytes)
        if not isinstance(protected, Mapping):
            raise CoseError("malformed", "protected header must encode a map")
    else:
        protected = {}
    overlap = set(protected) & set(unprotected)
    if overlap:
        # RFC 9052 section 3: a label must not occur in both buckets.
        raise CoseError("malformed", f"header labels {sorted(map(str, overlap))} are duplicated")
    return Sign1(protected_bytes, dict(protected), dict(unprotected), payload, signature)


def check_alg(msg: Sign1) -> None:
    alg = msg.alg
    # An int first: a hostile header may carry any CBOR item, a map (unhashable) included.
    if not isinstance(alg, int) or isinstance(alg, bool) or alg not in ACCEPTED_ALGS:
        raise CoseError("unsupported-algorithm", f"alg {alg!r} is not Ed25519 (-19 or -8)")


def verify_parsed(msg: Sign1, key: Ed25519PublicKey, external_aad: bytes = b"") -> None:
    """Check the algorithm and the signature of an already parsed message."""
    check_alg(msg)
    if len(msg.signature) != SIGNATURE_LEN:
        raise CoseError("bad-signature", f"Ed25519 signature is {len(msg.signature)} bytes, not 64")
    try:
        key.verify(msg.signature, msg.to_be_signed(external_aad))
    except InvalidSignature as exc:
        raise CoseError("bad-signature", "signature does not verify") from exc


def verify_sign1(data: bytes, key: Ed25519PublicKey, external_aad: bytes = b"") -> bytes:
    """Verify any standard COSE_Sign1 signed with ``key`` (Ed25519, alg -19 or -8).

    Returns the payload; raises ``CoseError`` with reason ``malformed``, ``unsupported-algorithm``
    or ``bad-signature``.
    """
    msg = decode_sign1(data)
    verify_parsed(msg, key, external_aad)
    return msg.payload


def sign1(payload: bytes, key: Ed25519PrivateKey, *, kid: bytes | None = None) -> bytes:
    """Sign ``payload`` into a tagged COSE_Sign1: alg -19, ``kid`` in the protected header."""
    protected: dict[int, object] = {HEADER_ALG: ALG_ED25519}
    if kid is not None:
        protected[HEADER_KID] = kid
    protected_bytes = cbor2.dumps(protected)
    signature = key.sign(sig_structure(protected_bytes, payload))
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected_bytes, {}, payload, signature]))
