"""The signed decision: a compact CBOR payload inside a COSE_Sign1 (see docs/wire-format.md).

Pure code: no clocks, no I/O. ``seal`` turns a ``Decision`` into the exact bytes that travel;
``open_envelope`` parses bytes back into an ``Envelope`` (not yet trusted: see relay.trust) or a
``Rejection``. Relays forward the exact signed bytes they received and never re-encode them; the
message id is the SHA-256 of those bytes, so one decision has one id on every path.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay import compress, cose

PAYLOAD_VERSION = 1
MAX_MESSAGE_BYTES = 4096  # any inbound message larger than this is refused before decoding
MAX_TEXT_BYTES = 2048
MAX_REFS = 16
MAX_AUDIENCE = 32
ID_LEN = 32
KID_LEN = 4

# Payload map keys (small integers keep the encoding compact: one byte each).
K_VERSION = 0
K_ISSUED = 1
K_LIFETIME_MIN = 2
K_PRECEDENCE = 3
K_EXERCISE = 4
K_AUDIENCE = 5
K_KIND = 6
K_SEQ = 7
K_REFS = 8
K_TEXT = 9
K_TEXT_DEFLATED = 10
K_DATA = 11
KNOWN_KEYS = frozenset(range(12))
AUDIENCE_ALL = "*"
NODE_PREFIX = "@"


class Precedence(IntEnum):
    """ACP 121 precedence; a lower value is more urgent."""

    FLASH = 0
    IMMEDIATE = 1
    PRIORITY = 2
    ROUTINE = 3


class Kind(IntEnum):
    DECISION = 0
    NOTICE = 1
    CANCEL = 2
    SUPERSEDE = 3
    ACK = 4
    ROSTER = 5
    REVOCATION = 6
    STATUS = 7


class Reason(StrEnum):
    """Why a message was rejected. Each value is logged, counted and shown as is."""

    OVERSIZED = "oversized"
    MALFORMED = "malformed"
    UNSUPPORTED_ALGORITHM = "unsupported-algorithm"
    BAD_SIGNATURE = "bad-signature"
    UNKNOWN_SIGNER = "unknown-signer"
    REVOKED_SIGNER = "revoked-signer"
    SIGNER_NOT_VALID = "signer-not-valid"
    OUT_OF_SCOPE = "out-of-scope"
    EXERCISE_ONLY = "exercise-only"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    REPLAY = "replay"
    STALE_ROSTER = "stale-roster"
    WRONG_TOPIC = "wrong-topic"
    QUEUE_FULL = "queue-full"  # the link's bounded inbound queue overflowed; the sender retries
    BAD_PROBE = "bad-probe"  # a liveness probe echo that we did not send
    DRILL_WINDOW = "outside-drill-window"
    STORE_FULL = "store-full"
    DISK_FULL = "disk-full"  # the daemon's store cannot be written (not a message's fault)
    UNSIGNED = "unsigned"  # e.g. a plain JSON status where a signed one is required
    WRONG_SIGNER = "wrong-signer"  # signed by a node other than the one whose topic carried it


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class Audience:
    """Who a message is for: everyone, or a set of regions and/or named nodes."""

    regions: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()
    everyone: bool = False

    @classmethod
    def all(cls) -> Audience:
        return cls(everyone=True)

    @classmethod
    def parse(cls, specs: str | list[str] | tuple[str, ...]) -> Audience:
        """Parse ``all``, ``region:VR07``, ``node:vr07-utrecht`` (comma-separated or a list)."""
        items = [specs] if isinstance(specs, str) else list(specs)
        parts = [p.strip() for item in items for p in item.split(",") if p.strip()]
        if not parts:
            raise ValueError("empty audience")
        regions: set[str] = set()
        nodes: set[str] = set()
        for part in parts:
            if part == "all":
                if len(parts) > 1:
                    raise ValueError("audience 'all' cannot be combined with other targets")
                return cls.all()
            kind, sep, name = part.partition(":")
            if not sep or not name or name.startswith(NODE_PREFIX) or name == AUDIENCE_ALL:
                raise ValueError(f"audience {part!r}: expected all, region:CODE or node:NAME")
            if kind == "region":
                regions.add(name)
            elif kind == "node":
                nodes.add(name)
            else:
                raise ValueError(f"audience {part!r}: expected all, region:CODE or node:NAME")
        return cls(frozenset(regions), frozenset(nodes))

    def specs(self) -> list[str]:
        if self.everyone:
            return ["all"]
        return [f"region:{r}" for r in sorted(self.regions)] + [
            f"node:{n}" for n in sorted(self.nodes)
        ]

    def __str__(self) -> str:
        return ",".join(self.specs())

    def includes(self, node: str, regions: frozenset[str]) -> bool:
        return self.everyone or node in self.nodes or bool(self.regions & regions)

    def to_wire(self) -> object:
        if self.everyone:
            return AUDIENCE_ALL
        return sorted(self.regions) + [NODE_PREFIX + n for n in sorted(self.nodes)]

    @classmethod
    def from_wire(cls, value: object) -> Audience:
        if value == AUDIENCE_ALL:
            return cls.all()
        if not isinstance(value, list | tuple) or not value or len(value) > MAX_AUDIENCE:
            raise ValueError("audience must be '*' or a list of 1-32 targets")
        regions: set[str] = set()
        nodes: set[str] = set()
        for item in value:
            if not isinstance(item, str) or not item or len(item) > 64 or item == AUDIENCE_ALL:
                raise ValueError("audience targets must be short non-empty strings")
            if item.startswith(NODE_PREFIX):
                if len(item) == 1:
                    raise ValueError("empty node name in audience")
                nodes.add(item[1:])
            else:
                regions.add(item)
        return cls(frozenset(regions), frozenset(nodes))


@dataclass(frozen=True, slots=True)
class Decision:
    """The signed content of a message. Times are Unix seconds."""

    issued_at: int
    expires_at: int
    precedence: Precedence
    audience: Audience
    seq: int
    text: str = ""
    kind: Kind = Kind.DECISION
    exercise: bool = False
    refs: tuple[bytes, ...] = ()
    data: Any = field(default=None, hash=False)

    def __post_init__(self) -> None:
        lifetime = self.expires_at - self.issued_at
        if self.issued_at < 0 or lifetime <= 0 or lifetime % 60:
            raise ValueError("expires_at must be a whole number of minutes after issued_at")
        if self.seq < 0:
            raise ValueError("sequence numbers are non-negative")
        if len(self.text.encode()) > MAX_TEXT_BYTES:
            raise ValueError(f"text is longer than {MAX_TEXT_BYTES} bytes")
        if len(self.refs) > MAX_REFS or any(len(r) != ID_LEN for r in self.refs):
            raise ValueError(f"at most {MAX_REFS} references of {ID_LEN} bytes each")


@dataclass(frozen=True, slots=True)
class Envelope:
    """A structurally valid signed message: parsed, but not yet checked against the roster."""

    raw: bytes
    id: bytes
    kid: bytes
    decision: Decision
    sign1: cose.Sign1

    @property
    def short_id(self) -> str:
        return self.id.hex()[:16]


def message_id(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def encode_payload(d: Decision) -> bytes:
    m: dict[int, object] = {
        K_VERSION: PAYLOAD_VERSION,
        K_ISSUED: d.issued_at,
        K_LIFETIME_MIN: (d.expires_at - d.issued_at) // 60,
        K_PRECEDENCE: int(d.precedence),
        K_AUDIENCE: d.audience.to_wire(),
        K_SEQ: d.seq,
    }
    if d.exercise:
        m[K_EXERCISE] = True
    if d.kind != Kind.DECISION:
        m[K_KIND] = int(d.kind)
    if d.refs:
        m[K_REFS] = list(d.refs)
    if d.text:
        plain = d.text.encode()
        packed = compress.compress(plain)
        if len(packed) < len(plain):
            m[K_TEXT_DEFLATED] = packed
        else:
            m[K_TEXT] = d.text
    if d.data is not None:
        m[K_DATA] = d.data
    return cbor2.dumps(m)


def _uint(m: dict[Any, Any], key: int, name: str, *, limit: int = 2**63) -> int:
    v = m.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < limit:
        raise ValueError(f"{name} must be an unsigned integer")
    return v


def decode_payload(payload: bytes) -> Decision:
    """Strict decoder: unknown keys, wrong types and non-minimal choices are errors."""
    stream = io.BytesIO(payload)
    m = cbor2.CBORDecoder(stream).decode()
    if stream.tell() != len(payload):
        # cbor2.loads ignores trailing bytes; the payload must be exactly one map.
        raise ValueError(f"{len(payload) - stream.tell()} trailing bytes after the payload map")
    if not isinstance(m, dict):
        raise ValueError("payload is not a map")
    unknown = set(m) - KNOWN_KEYS
    if unknown:
        raise ValueError(f"unknown payload keys {sorted(map(str, unknown))}")
    if m.get(K_VERSION) != PAYLOAD_VERSION or isinstance(m.get(K_VERSION), bool):
        raise ValueError(f"unsupported payload version {m.get(K_VERSION)!r}")
    issued = _uint(m, K_ISSUED, "issued-at", limit=2**40)
    lifetime = _uint(m, K_LIFETIME_MIN, "lifetime", limit=2**32)
    if lifetime == 0:
        raise ValueError("lifetime must be at least one minute")
    precedence = Precedence(_uint(m, K_PRECEDENCE, "precedence", limit=4))
    seq = _uint(m, K_SEQ, "sequence number")
    exercise = m.get(K_EXERCISE, False)
    if K_EXERCISE in m and exercise is not True:
        raise ValueError("exercise flag is encoded only as true")
    kind = Kind(_uint(m, K_KIND, "kind", limit=len(Kind))) if K_KIND in m else Kind.DECISION
    if K_KIND in m and kind == Kind.DECISION:
        raise ValueError("kind 'decision' is encoded by omission")
    refs_raw = m.get(K_REFS, [])
    if not isinstance(refs_raw, list | tuple) or (K_REFS in m and not refs_raw):
        raise ValueError("refs must be a non-empty list")
    refs = tuple(refs_raw)
    if len(refs) > MAX_REFS or not all(isinstance(r, bytes) and len(r) == ID_LEN for r in refs):
        raise ValueError(f"refs must be up to {MAX_REFS} ids of {ID_LEN} bytes")
    if K_TEXT in m and K_TEXT_DEFLATED in m:
        raise ValueError("both plain and deflated text")
    text = ""
    if K_TEXT in m:
        if not isinstance(m[K_TEXT], str) or not m[K_TEXT]:
            raise ValueError("text must be a non-empty string")
        text = m[K_TEXT]
    elif K_TEXT_DEFLATED in m:
        if not isinstance(m[K_TEXT_DEFLATED], bytes):
            raise ValueError("deflated text must be a byte string")
        try:
            text = compress.decompress(m[K_TEXT_DEFLATED], max_len=MAX_TEXT_BYTES).decode()
        except (compress.DecompressError, UnicodeDecodeError) as exc:
            raise ValueError(f"deflated text: {exc}") from exc
        if not text:
            raise ValueError("deflated text is empty")
    audience = Audience.from_wire(m.get(K_AUDIENCE))
    return Decision(
        issued_at=issued,
        expires_at=issued + lifetime * 60,
        precedence=precedence,
        audience=audience,
        seq=seq,
        text=text,
        kind=kind,
        exercise=exercise,
        refs=refs,
        data=m.get(K_DATA),
    )


def key_id(public_raw: bytes) -> bytes:
    """The short key id carried in every message: the first 4 bytes of SHA-256(public key)."""
    return hashlib.sha256(public_raw).digest()[:KID_LEN]


def seal(decision: Decision, key: Ed25519PrivateKey, *, kid: bytes | None = None) -> bytes:
    """Sign a decision: the returned bytes are what travels and what the id is computed over.

    ``kid`` is ``key_id`` of the key's public half; a caller that signs often passes it, computed
    once, instead of having it derived again for every message.
    """
    if kid is None:
        kid = key_id(key.public_key().public_bytes_raw())
    return cose.sign1(encode_payload(decision), key, kid=kid)


def open_envelope(raw: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Envelope | Rejection:
    """Parse bytes into an Envelope, or say precisely why not. Never raises on any input."""
    if len(raw) > max_bytes:
        return Rejection(Reason.OVERSIZED, f"{len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        msg = cose.decode_sign1(raw)
        cose.check_alg(msg)
    except cose.CoseError as exc:
        return Rejection(Reason(exc.reason), exc.detail)
    # The id is a hash of the bytes, so only one byte form of a message may exist: anyone could
    # otherwise re-wrap a signed message (untagged, an unprotected header, longer length
    # encodings) into a second valid copy with another id. cose.verify_sign1 stays permissive.
    canonical = cbor2.dumps(
        cbor2.CBORTag(cose.COSE_SIGN1_TAG, [msg.protected_bytes, {}, msg.payload, msg.signature])
    )
    if canonical != raw:
        return Rejection(Reason.MALFORMED, "not in canonical form (tagged, empty unprotected map)")
    kid = msg.kid
    if kid is None or len(kid) != KID_LEN:
        return Rejection(Reason.MALFORMED, f"key id must be {KID_LEN} bytes")
    try:
        decision = decode_payload(msg.payload)
    except Exception as exc:  # noqa: BLE001 - hostile payloads: every failure is a rejection
        return Rejection(Reason.MALFORMED, f"payload: {exc}")
    return Envelope(raw=raw, id=message_id(raw), kid=kid, decision=decision, sign1=msg)
