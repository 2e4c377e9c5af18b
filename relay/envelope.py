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
from relay.text import model as textmodel

PAYLOAD_VERSION = 1  # what a signer emits unless configured or told by the roster (section 2a)
PAYLOAD_V2 = 2
PAYLOAD_VERSIONS = (PAYLOAD_VERSION, PAYLOAD_V2)
EPOCH_V2 = 1_767_225_600  # 2026-01-01T00:00:00Z: version 2 counts issued-at in minutes from here
# A model-coded text may decode to at most this many characters per coded byte (plus a few): the
# decoder's work is then bounded by the bytes it was given, not by MAX_TEXT_BYTES, because a
# hostile payload is decoded before its signature can be checked. Real texts need 2-5.
MODEL_CHARS_PER_BYTE = 8
V2_MINUTES_LIMIT = 1 << 26  # 127 years of minutes: with 6 flag bits the stamp stays below 2**32
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
    # Post-quantum attestations (relay.pq, docs/wire-format.md section 9)
    PQ_BAD_SIGNATURE = "pq-bad-signature"
    PQ_WRONG_MESSAGE = "pq-wrong-message"
    PQ_KEY_MISMATCH = "pq-key-mismatch"
    PQ_NOT_ENABLED = "pq-not-enabled"


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


def encode_payload(d: Decision, *, version: int = PAYLOAD_VERSION) -> bytes:
    """The payload bytes of ``d`` in payload ``version`` (1: a CBOR map; 2: a compact array)."""
    if version == PAYLOAD_V2:
        return _encode_v2(d)
    if version != PAYLOAD_VERSION:
        raise ValueError(f"unknown payload version {version}")
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


def v2_time(issued_at: int) -> int:
    """The issued-at time version 2 signs for ``issued_at``: rounded down to the minute."""
    return issued_at - (issued_at - EPOCH_V2) % 60


def _encode_v2(d: Decision) -> bytes:
    minutes = (d.issued_at - EPOCH_V2) // 60
    if not 0 <= minutes < V2_MINUTES_LIMIT:
        raise ValueError("payload version 2 needs an issued-at time after 2026-01-01")
    flags = int(d.precedence) | (4 if d.exercise else 0) | (int(d.kind) << 3)
    lifetime = (d.expires_at - d.issued_at) // 60
    life: int = -(lifetime // 60) if lifetime % 60 == 0 else lifetime  # whole hours: negative
    body: bytes | str | None = None
    if d.text:
        plain = d.text.encode()
        try:
            coded = textmodel.encode(d.text)
        except RuntimeError:  # its own round-trip check failed: a bug; send the text as it is
            coded = plain
        fits = len(d.text) <= _model_limit(len(coded))
        body = coded if len(coded) < len(plain) and fits else d.text
    items: list[object] = [(minutes << 6) | flags, life, d.seq, _audience_v2(d.audience), body]
    extras: dict[int, object] = {}
    if d.refs:
        extras[K_REFS] = list(d.refs)
    if d.data is not None:
        extras[K_DATA] = d.data
    if extras:
        items.append(extras)
    return cbor2.dumps(items)


def _model_limit(coded_len: int) -> int:
    return min(MAX_TEXT_BYTES, MODEL_CHARS_PER_BYTE * coded_len + 32)


def _audience_v2(audience: Audience) -> object:
    """Everyone is null, one target a bare string, several an array (as in version 1)."""
    if audience.everyone:
        return None
    wire = audience.to_wire()
    assert isinstance(wire, list)
    return wire[0] if len(wire) == 1 else wire


def _decode_v2(items: list[Any]) -> Decision:
    """Strict: the array of section 2a, each field in its one allowed form."""
    if len(items) not in (5, 6):
        raise ValueError(f"a version 2 payload is an array of 5 or 6 items, not {len(items)}")
    stamp, life, seq = items[0], items[1], items[2]
    for value, name in ((stamp, "stamp"), (seq, "sequence number")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an unsigned integer")
    if stamp >= V2_MINUTES_LIMIT << 6 or seq >= 2**63:
        raise ValueError("stamp or sequence number out of range")
    flags = stamp & 0x3F
    precedence = Precedence(flags & 3)
    exercise = bool(flags & 4)
    kind = Kind(flags >> 3)
    if isinstance(life, bool) or not isinstance(life, int) or life == 0:
        raise ValueError("lifetime must be a non-zero integer")
    if life > 0:
        if life % 60 == 0:
            raise ValueError("a lifetime of whole hours is encoded in hours (negative)")
        if life >= 2**32:
            raise ValueError("lifetime out of range")
        lifetime_min = life
    else:
        if -life >= 2**26:
            raise ValueError("lifetime out of range")
        lifetime_min = -life * 60
    wire_audience = items[3]
    if wire_audience is None:
        audience = Audience.all()
    elif isinstance(wire_audience, str):
        audience = Audience.from_wire([wire_audience])
    elif isinstance(wire_audience, list) and len(wire_audience) > 1:
        audience = Audience.from_wire(wire_audience)
        if audience.to_wire() != wire_audience:
            raise ValueError("audience targets must be sorted, regions first, without repeats")
    else:
        raise ValueError("audience must be null, one target or an array of 2-32 targets")
    body = items[4]
    text = ""
    if isinstance(body, str):
        if not body:
            raise ValueError("text must be a non-empty string")
        text = body
    elif isinstance(body, bytes):
        try:
            text = textmodel.decode(body, max_len=_model_limit(len(body)))
        except textmodel.TextModelError as exc:
            raise ValueError(f"coded text: {exc}") from exc
        if not text:
            raise ValueError("coded text is empty")
        if len(text.encode()) > MAX_TEXT_BYTES:
            raise ValueError(f"text is longer than {MAX_TEXT_BYTES} bytes")
    elif body is not None:
        raise ValueError("text must be null, a string or model-coded bytes")
    refs: tuple[bytes, ...] = ()
    data = None
    if len(items) == 6:
        extras = items[5]
        if not isinstance(extras, dict) or not extras or set(extras) - {K_REFS, K_DATA}:
            raise ValueError("extras must be a non-empty map of refs (8) and data (11)")
        if K_REFS in extras:
            raw_refs = extras[K_REFS]
            if not isinstance(raw_refs, list) or not raw_refs:
                raise ValueError("refs must be a non-empty list")
            refs = tuple(raw_refs)
            if len(refs) > MAX_REFS or not all(
                isinstance(r, bytes) and len(r) == ID_LEN for r in refs
            ):
                raise ValueError(f"refs must be up to {MAX_REFS} ids of {ID_LEN} bytes")
        if K_DATA in extras:
            data = extras[K_DATA]
            if data is None:
                raise ValueError("data is omitted, never null")
    issued = EPOCH_V2 + (stamp >> 6) * 60
    return Decision(
        issued_at=issued,
        expires_at=issued + lifetime_min * 60,
        precedence=precedence,
        audience=audience,
        seq=seq,
        text=text,
        kind=kind,
        exercise=exercise,
        refs=refs,
        data=data,
    )


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
        # cbor2.loads ignores trailing bytes; the payload must be exactly one map or array.
        raise ValueError(f"{len(payload) - stream.tell()} trailing bytes after the payload")
    if isinstance(m, list):
        return _decode_v2(m)
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


def seal(
    decision: Decision,
    key: Ed25519PrivateKey,
    *,
    kid: bytes | None = None,
    version: int = PAYLOAD_VERSION,
) -> bytes:
    """Sign a decision: the returned bytes are what travels and what the id is computed over.

    ``kid`` is ``key_id`` of the key's public half; a caller that signs often passes it, computed
    once, instead of having it derived again for every message. With ``version`` 2 the issued-at
    and expiry times are signed rounded down to the minute (``v2_time``).
    """
    if kid is None:
        kid = key_id(key.public_key().public_bytes_raw())
    if version == PAYLOAD_V2 and decision.issued_at < EPOCH_V2:
        # A Pi without a real-time clock boots in 1970: it still signs, in the version that can
        # say so (and the clock warning tells its operator).
        version = PAYLOAD_VERSION
    return cose.sign1(encode_payload(decision, version=version), key, kid=kid)


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
