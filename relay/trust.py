"""Trust: the root-signed roster, revocations, scopes and replay protection. Pure code.

A root authority key signs a *roster*: a message of kind ROSTER whose sequence number is the
roster's serial and whose data lists the keys allowed to sign (issuers, nodes, exercise
coordinators) with their scopes and validity. A higher serial replaces a lower one. Revocations are
either a newer roster without the key (it moves to the roster's revoked list, so a later message
from it is called *revoked*, not *unknown*) or an explicit REVOCATION message signed by the root;
both travel through the relay like FLASH decisions.

``TrustState.check`` runs every rule and returns ``Accepted`` or a ``Rejection`` with one reason. It
does not record the sequence number: the caller commits it (``ReplayGuard.commit``) once the message
is durably stored, so a crash in between cannot turn a legitimate retransmission into a "replay".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from relay import cose
from relay.envelope import (
    KID_LEN,
    PAYLOAD_VERSION,
    PAYLOAD_VERSIONS,
    Audience,
    Decision,
    Envelope,
    Kind,
    Precedence,
    Reason,
    Rejection,
    key_id,
)

DEFAULT_SKEW_S = 6 * 3600  # a Pi without RTC or NTP may be hours off: be generous, rely on seqs
REPLAY_WINDOW = 1024
ROSTER_LIFETIME_S = 5 * 365 * 86400


class Role(StrEnum):
    ISSUER = "issuer"
    NODE = "node"
    COORDINATOR = "exercise-coordinator"


DEFAULT_KINDS: dict[Role, frozenset[Kind]] = {
    Role.ISSUER: frozenset({Kind.DECISION, Kind.NOTICE, Kind.CANCEL, Kind.SUPERSEDE, Kind.STATUS}),
    Role.COORDINATOR: frozenset({Kind.DECISION, Kind.NOTICE, Kind.CANCEL, Kind.SUPERSEDE}),
    Role.NODE: frozenset({Kind.ACK, Kind.STATUS}),
}
ROOT_KINDS = frozenset({Kind.ROSTER, Kind.REVOCATION})


@dataclass(frozen=True, slots=True)
class Scope:
    """Audiences a key may address: everything, or some regions and nodes."""

    everyone: bool = False
    regions: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, specs: Iterable[str]) -> Scope:
        items = list(specs)
        if not items:
            return cls()  # e.g. a national node that serves no region of its own
        aud = Audience.parse(items)
        return cls(aud.everyone, aud.regions, aud.nodes)

    def specs(self) -> list[str]:
        return Audience(self.regions, self.nodes, self.everyone).specs()

    def covers(self, audience: Audience, node_regions: Mapping[str, frozenset[str]]) -> bool:
        """Whether every target of ``audience`` lies inside this scope.

        A named node is inside a regional scope when the roster places that node in one of the
        scope's regions.
        """
        if self.everyone:
            return True
        if audience.everyone:
            return False
        if not audience.regions <= self.regions:
            return False
        return all(
            n in self.nodes or bool(node_regions.get(n, frozenset()) & self.regions)
            for n in audience.nodes
        )


@dataclass(frozen=True, slots=True)
class Device:
    """A further key of one issuer (a second laptop): signs as the entry's name, with the
    entry's role, scope and validity, and numbers its messages on its own (its own key id, so
    its own replay window)."""

    public_key: bytes  # raw 32-byte Ed25519 key
    label: str

    @property
    def kid(self) -> bytes:
        return key_id(self.public_key)


@dataclass(frozen=True, slots=True)
class RosterEntry:
    public_key: bytes  # raw 32-byte Ed25519 key
    name: str
    role: Role
    scope: Scope
    kinds: frozenset[Kind]
    not_before: int = 0
    not_after: int | None = None
    devices: tuple[Device, ...] = ()  # further keys of the same issuer (wire key 7)
    pq_key: bytes | None = None  # SHA-256 of the issuer's ML-DSA-44 public key (wire key 8)

    @property
    def kid(self) -> bytes:
        return key_id(self.public_key)

    def kids(self) -> list[bytes]:
        """The key ids of the entry's own key and of each device key."""
        return [self.kid, *(d.kid for d in self.devices)]

    def key_for(self, kid: bytes) -> bytes | None:
        """The public key with this key id, among the entry's keys."""
        if kid == self.kid:
            return self.public_key
        return next((d.public_key for d in self.devices if d.kid == kid), None)

    def to_wire(self) -> dict[int, object]:
        m: dict[int, object] = {
            0: self.public_key,
            1: self.name,
            2: str(self.role),
            3: self.scope.specs(),
            4: sorted(int(k) for k in self.kinds),
            5: self.not_before,
        }
        if self.not_after is not None:
            m[6] = self.not_after
        if self.devices:
            m[7] = [[d.public_key, d.label] for d in self.devices]
        if self.pq_key is not None:
            m[8] = self.pq_key
        return m

    @classmethod
    def from_wire(cls, m: Any) -> RosterEntry:
        if not isinstance(m, Mapping):
            raise ValueError("roster entry is not a map")
        pk, name = m.get(0), m.get(1)
        if not isinstance(pk, bytes) or len(pk) != 32:
            raise ValueError("roster entry public key must be 32 bytes")
        if not isinstance(name, str) or not name or len(name) > 64:
            raise ValueError("roster entry name must be 1-64 characters")
        kinds = m.get(4)
        if not isinstance(kinds, list | tuple):
            raise ValueError("roster entry kinds must be a list")
        not_after = m.get(6)
        not_before = m.get(5, 0)
        if not isinstance(not_before, int) or (
            not_after is not None and not isinstance(not_after, int)
        ):
            raise ValueError("roster entry validity must be integers")
        pq_key = m.get(8)
        if pq_key is not None and (not isinstance(pq_key, bytes) or len(pq_key) != 32):
            raise ValueError("roster entry ML-DSA key hash must be 32 bytes")
        return cls(
            public_key=pk,
            name=name,
            role=Role(str(m.get(2))),
            scope=Scope.parse(list(m.get(3) or [])),
            kinds=frozenset(Kind(k) for k in kinds),
            not_before=not_before,
            not_after=not_after,
            devices=_devices_from_wire(m.get(7, [])),
            pq_key=pq_key,
        )

    def with_device(self, device: Device) -> RosterEntry:
        if self.role == Role.NODE:
            raise ValueError(f"{self.name!r} is a node: a node has one key (add a new node)")
        if any(d.label == device.label for d in self.devices):
            raise ValueError(f"{self.name!r} already has a device {device.label!r}")
        return replace(self, devices=(*self.devices, device))


def _devices_from_wire(items: Any) -> tuple[Device, ...]:
    if not isinstance(items, list | tuple):
        raise ValueError("roster entry devices must be a list")
    devices: list[Device] = []
    for item in items:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not isinstance(item[0], bytes)
            or len(item[0]) != 32
            or not isinstance(item[1], str)
            or not 1 <= len(item[1]) <= 64
        ):
            raise ValueError("a device is [32-byte public key, label of 1-64 characters]")
        devices.append(Device(item[0], item[1]))
    if len({d.label for d in devices}) != len(devices):
        raise ValueError("two devices of one entry share a label")
    return tuple(devices)


@dataclass(frozen=True, slots=True)
class Revoked:
    kid: bytes
    name: str


@dataclass(frozen=True, slots=True)
class _RosterIndex:
    """Read-only lookups of one roster (plain dicts: nobody writes to them after build)."""

    by_name: Mapping[str, RosterEntry]
    by_kid: Mapping[bytes, RosterEntry]
    node_regions: Mapping[str, frozenset[str]]

    @classmethod
    def build(cls, entries: tuple[RosterEntry, ...]) -> _RosterIndex:
        by_name: dict[str, RosterEntry] = {}
        by_kid: dict[bytes, RosterEntry] = {}
        for e in entries:
            by_name.setdefault(e.name, e)  # duplicates are refused by from_decision
            for kid in e.kids():
                by_kid.setdefault(kid, e)
        regions = {e.name: e.scope.regions for e in entries if e.role == Role.NODE}
        return cls(by_name, by_kid, regions)


@dataclass(frozen=True, slots=True)
class Roster:
    serial: int
    entries: tuple[RosterEntry, ...] = ()
    revoked: tuple[Revoked, ...] = ()
    # The highest payload version every node on this roster reads (wire-format.md, section 2a):
    # the root raises it once the last node is upgraded, and signers then emit that version.
    payload: int = PAYLOAD_VERSION
    # Lookups by name and by key id, built once per roster: every message check and every peer
    # heard asks, and a national roster has thousands of entries (docs/scale.md).
    _index: _RosterIndex = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", _RosterIndex.build(self.entries))

    def to_wire(self) -> dict[int, object]:
        m: dict[int, object] = {
            1: [e.to_wire() for e in self.entries],
            2: [[r.kid, r.name] for r in self.revoked],
        }
        if self.payload != PAYLOAD_VERSION:
            m[3] = self.payload  # old nodes ignore key 3, so such a roster still reaches them
        return m

    @property
    def emit_version(self) -> int:
        """The payload version a signer emits under this roster: the highest both sides know."""
        return min(self.payload, max(PAYLOAD_VERSIONS))

    @classmethod
    def from_decision(cls, d: Decision) -> Roster:
        m = d.data
        if not isinstance(m, Mapping):
            raise ValueError("roster data is not a map")
        entries = tuple(RosterEntry.from_wire(e) for e in m.get(1, ()))
        revoked: list[Revoked] = []
        for item in m.get(2, ()):
            if (
                not isinstance(item, list | tuple)
                or len(item) != 2
                or not isinstance(item[0], bytes)
                or not isinstance(item[1], str)
            ):
                raise ValueError("revoked entries are [kid, name] pairs")
            revoked.append(Revoked(item[0], item[1]))
        kids = [k for e in entries for k in e.kids()]
        if len(set(kids)) != len(kids):
            raise ValueError("two roster keys share a key id")
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise ValueError("two roster entries share a name")
        payload = m.get(3, PAYLOAD_VERSION)
        if isinstance(payload, bool) or not isinstance(payload, int) or payload < PAYLOAD_VERSION:
            raise ValueError("the roster's payload version is a positive integer")
        return cls(serial=d.seq, entries=entries, revoked=tuple(revoked), payload=payload)

    def by_name(self, name: str) -> RosterEntry | None:
        return self._index.by_name.get(name)

    def by_kid(self, kid: bytes) -> RosterEntry | None:
        """The entry with this key id (its own key or one of its device keys)."""
        return self._index.by_kid.get(kid)

    def with_entry(self, entry: RosterEntry, serial: int) -> Roster:
        if self.by_name(entry.name) is not None:
            raise ValueError(f"the roster already has an entry named {entry.name!r}")
        self._check_new_key(entry.kid)
        return replace(self, serial=serial, entries=(*self.entries, entry))

    def _check_new_key(self, kid: bytes) -> None:
        if any(kid in e.kids() for e in self.entries):
            raise ValueError("that public key (or its key id) is already on the roster")
        if any(r.kid == kid for r in self.revoked):
            raise ValueError("that key was revoked; generate a new key")

    def with_device(self, name: str, device: Device, serial: int) -> Roster:
        """Another device key for the issuer ``name`` (its own sequence numbers)."""
        entry = self.by_name(name)
        if entry is None:
            raise ValueError(f"no roster entry named {name!r}")
        self._check_new_key(device.kid)
        updated = entry.with_device(device)
        entries = tuple(updated if e.name == name else e for e in self.entries)
        return replace(self, serial=serial, entries=entries)

    def without(self, name: str, serial: int, *, device: str | None = None) -> Roster:
        """Revoke an entry with all its keys, or (``device``) one device key of it."""
        entry = self.by_name(name)
        if entry is None:
            raise ValueError(f"no roster entry named {name!r}")
        if device is not None:
            gone = [d for d in entry.devices if d.label == device]
            if not gone:
                raise ValueError(f"{name!r} has no device {device!r}")
            kept = replace(entry, devices=tuple(d for d in entry.devices if d.label != device))
            return replace(
                self,
                serial=serial,
                entries=tuple(kept if e.name == name else e for e in self.entries),
                revoked=(*self.revoked, Revoked(gone[0].kid, name)),
            )
        return replace(
            self,
            serial=serial,
            entries=tuple(e for e in self.entries if e.name != name),
            revoked=(*self.revoked, *(Revoked(k, entry.name) for k in entry.kids())),
        )

    def node_regions(self) -> Mapping[str, frozenset[str]]:
        return self._index.node_regions

    def recipients(self, audience: Audience) -> list[str]:
        """Names of the nodes that should sign for a message to ``audience``."""
        return sorted(
            e.name
            for e in self.entries
            if e.role == Role.NODE
            and (
                audience.everyone or e.name in audience.nodes or e.scope.regions & audience.regions
            )
        )


def roster_decision(roster: Roster, issued_at: int) -> Decision:
    return Decision(
        issued_at=issued_at,
        expires_at=issued_at + ROSTER_LIFETIME_S,
        precedence=Precedence.FLASH,
        audience=Audience.all(),
        seq=roster.serial,
        kind=Kind.ROSTER,
        data=roster.to_wire(),
    )


def revocation_decision(kids: Iterable[bytes], seq: int, issued_at: int) -> Decision:
    return Decision(
        issued_at=issued_at,
        expires_at=issued_at + ROSTER_LIFETIME_S,
        precedence=Precedence.FLASH,
        audience=Audience.all(),
        seq=seq,
        kind=Kind.REVOCATION,
        data={1: sorted(kids)},
    )


def revoked_kids(d: Decision) -> list[bytes]:
    m = d.data
    if not isinstance(m, Mapping):
        raise ValueError("revocation data is not a map")
    kids = list(m.get(1, ()))
    if not kids or not all(isinstance(k, bytes) and len(k) == KID_LEN for k in kids):
        raise ValueError("a revocation lists one or more 4-byte key ids")
    return kids


# ---------------------------------------------------------------------------------------------
# Replay protection: a sliding window per issuer, as IPsec's anti-replay window (RFC 4303 3.4.3).


@dataclass(slots=True)
class ReplayWindow:
    """Accepts each sequence number once, in any order, within ``size`` of the highest seen."""

    size: int = REPLAY_WINDOW
    high: int = -1
    bits: int = 0  # bit i set: (high - i) was seen

    def seen(self, seq: int) -> bool:
        """True when ``seq`` was accepted before or is too old to tell (below the window)."""
        if seq > self.high:
            return False
        offset = self.high - seq
        if offset >= self.size:
            return True
        return bool(self.bits >> offset & 1)

    def commit(self, seq: int) -> None:
        if seq > self.high:
            shift = seq - self.high
            # A jump past the whole window forgets every bit; shifting by it would build an
            # integer of ``shift`` bits (a signed seq near 2**63 exhausts memory).
            bits = 0 if shift >= self.size else self.bits << shift
            self.bits = (bits | 1) & ((1 << self.size) - 1)
            self.high = seq
        elif self.high - seq < self.size:
            self.bits |= 1 << (self.high - seq)
        # else: below the window, already reported as seen; setting its bit would overflow
        # ``to_bytes`` (a message checked before a much newer one was committed).

    def to_bytes(self) -> bytes:
        return self.bits.to_bytes(self.size // 8, "little")

    @classmethod
    def restore(cls, high: int, bits: bytes, size: int = REPLAY_WINDOW) -> ReplayWindow:
        return cls(size=size, high=high, bits=int.from_bytes(bits, "little"))


@dataclass(slots=True)
class ReplayGuard:
    windows: dict[bytes, ReplayWindow] = field(default_factory=dict)

    def seen(self, kid: bytes, seq: int) -> bool:
        w = self.windows.get(kid)
        return w is not None and w.seen(seq)

    def commit(self, kid: bytes, seq: int) -> ReplayWindow:
        w = self.windows.setdefault(kid, ReplayWindow())
        w.commit(seq)
        return w


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    envelope: Envelope
    signer: str  # roster name, or "root"
    role: Role | None  # None for the root authority


ROOT_NAME = "root"


@dataclass(slots=True)
class TrustState:
    """The root key, the newest verified roster and explicit revocations."""

    root_public: bytes
    roster: Roster | None = None
    revoked: dict[bytes, str] = field(default_factory=dict)  # kid -> name (explicit revocations)
    skew_s: int = DEFAULT_SKEW_S
    # Verification keys by raw public key: loading one costs more than a dict lookup, and only
    # the root's and the rosters' keys ever get here, so this stays small.
    _verifiers: dict[bytes, Ed25519PublicKey] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def _verifier(self, public_raw: bytes) -> Ed25519PublicKey:
        key = self._verifiers.get(public_raw)
        if key is None:
            key = self._verifiers[public_raw] = Ed25519PublicKey.from_public_bytes(public_raw)
        return key

    @property
    def root_kid(self) -> bytes:
        return key_id(self.root_public)

    def entry_for(self, kid: bytes) -> RosterEntry | None:
        if self.roster is None:
            return None
        return self.roster.by_kid(kid)

    def _revoked_name(self, kid: bytes) -> str | None:
        if kid in self.revoked:
            return self.revoked[kid]
        if self.roster is not None:
            for r in self.roster.revoked:
                if r.kid == kid:
                    return r.name
        return None

    def check(
        self,
        env: Envelope,
        now: float,
        replay: ReplayGuard | None = None,
        *,
        observe: Callable[[str, int], None] | None = None,
    ) -> Accepted | Rejection:
        """Apply every trust rule to a parsed envelope. Never raises on peer input.

        ``observe(signer, issued_at)`` is called once the signature is verified, before the time
        checks: the signer's clock is evidence about ours even when the time checks reject."""
        d = env.decision
        if env.kid == self.root_kid:
            key, signer, role, kinds = self.root_public, ROOT_NAME, None, ROOT_KINDS
            entry = None
        else:
            revoked_as = self._revoked_name(env.kid)
            if revoked_as is not None:
                return Rejection(Reason.REVOKED_SIGNER, f"key of {revoked_as!r} was revoked")
            entry = self.entry_for(env.kid)
            if entry is None:
                serial = self.roster.serial if self.roster else "none"
                return Rejection(
                    Reason.UNKNOWN_SIGNER,
                    f"key id {env.kid.hex()} is not on the roster (serial {serial})",
                )
            key = entry.key_for(env.kid) or entry.public_key  # a device key, or the entry's
            signer, role, kinds = entry.name, entry.role, entry.kinds
        try:
            cose.verify_parsed(env.sign1, self._verifier(key))
        except cose.CoseError as exc:
            return Rejection(Reason(exc.reason), f"{exc.detail} (claimed signer {signer!r})")
        if observe is not None:
            observe(signer, d.issued_at)
        if entry is not None:
            if now + self.skew_s < entry.not_before or (
                entry.not_after is not None and now - self.skew_s > entry.not_after
            ):
                return Rejection(Reason.SIGNER_NOT_VALID, f"key of {signer!r} is not valid now")
            node_regions = self.roster.node_regions() if self.roster else {}
            # A node's scope names the regions it serves; its receipts and status go to all.
            if role != Role.NODE and not entry.scope.covers(d.audience, node_regions):
                return Rejection(
                    Reason.OUT_OF_SCOPE,
                    f"{signer!r} may address {entry.scope.specs()}, not {d.audience.specs()}",
                )
            if role == Role.COORDINATOR and not d.exercise:
                return Rejection(
                    Reason.EXERCISE_ONLY, f"{signer!r} is an exercise coordinator: exercise only"
                )
        if d.kind not in kinds:
            return Rejection(Reason.OUT_OF_SCOPE, f"{signer!r} may not sign {d.kind.name} messages")
        if d.issued_at > now + self.skew_s:
            return Rejection(
                Reason.NOT_YET_VALID,
                f"issued {int(d.issued_at - now)} s in the future (skew window {self.skew_s} s)",
            )
        if d.expires_at + self.skew_s < now:
            return Rejection(Reason.EXPIRED, f"expired {int(now - d.expires_at)} s ago")
        if d.kind == Kind.ROSTER:
            current = self.roster.serial if self.roster else -1
            if d.seq <= current:
                return Rejection(
                    Reason.STALE_ROSTER, f"roster serial {d.seq} is not newer than {current}"
                )
            try:
                Roster.from_decision(d)
            except ValueError as exc:
                return Rejection(Reason.MALFORMED, f"roster: {exc}")
        if d.kind == Kind.REVOCATION:
            try:
                revoked_kids(d)
            except ValueError as exc:
                return Rejection(Reason.MALFORMED, f"revocation: {exc}")
        if replay is not None and replay.seen(env.kid, d.seq):
            return Rejection(
                Reason.REPLAY,
                f"sequence {d.seq} of {signer!r} (key id {env.kid.hex()}) was already seen",
            )
        return Accepted(env, signer, role)

    def apply(self, accepted: Accepted) -> None:
        """Adopt a checked roster or revocation (no-op for other kinds)."""
        d = accepted.envelope.decision
        if d.kind == Kind.ROSTER:
            roster = Roster.from_decision(d)
            if self.roster is None or roster.serial > self.roster.serial:
                self.roster = roster
        elif d.kind == Kind.REVOCATION:
            for kid in revoked_kids(d):
                entry = self.entry_for(kid)
                self.revoked[kid] = entry.name if entry else kid.hex()
