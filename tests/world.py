"""An in-memory trust world for unit tests: a root, a roster and keys for each role."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay.envelope import Audience, Decision, Envelope, Kind, Precedence, open_envelope, seal
from relay.keys import raw_public
from relay.trust import (
    DEFAULT_KINDS,
    Accepted,
    Role,
    Roster,
    RosterEntry,
    Scope,
    TrustState,
    roster_decision,
)

NOW = 1_800_000_000


@dataclass
class World:
    root: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    roster: Roster = field(default_factory=lambda: Roster(serial=1))
    seqs: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, role: Role, *scope: str, **kw: int | None) -> Ed25519PrivateKey:
        key = Ed25519PrivateKey.generate()
        self.keys[name] = key
        entry = RosterEntry(
            public_key=raw_public(key.public_key()),
            name=name,
            role=role,
            scope=Scope.parse(list(scope)),
            kinds=DEFAULT_KINDS[role],
            not_before=kw.get("not_before") or 0,
            not_after=kw.get("not_after"),
        )
        self.roster = self.roster.with_entry(entry, self.roster.serial + 1)
        return key

    def roster_bytes(self, now: int = NOW) -> bytes:
        return seal(roster_decision(self.roster, now), self.root)

    def trust(self, now: int = NOW) -> TrustState:
        state = TrustState(root_public=raw_public(self.root.public_key()))
        env = open_envelope(self.roster_bytes(now))
        assert isinstance(env, Envelope), env
        verdict = state.check(env, now)
        assert isinstance(verdict, Accepted), verdict
        state.apply(verdict)
        return state

    def decision(
        self,
        signer: str,
        text: str = "Besluit: evacuatie van de wijk. Opvang in de sporthal.",
        *,
        to: str = "all",
        precedence: Precedence = Precedence.PRIORITY,
        now: int = NOW,
        lifetime: int = 3600,
        seq: int | None = None,
        exercise: bool = False,
        kind: Kind = Kind.DECISION,
        refs: tuple[bytes, ...] = (),
    ) -> Decision:
        if seq is None:
            seq = self.seqs.get(signer, 0) + 1
        self.seqs[signer] = max(seq, self.seqs.get(signer, 0))
        return Decision(
            issued_at=now,
            expires_at=now + lifetime,
            precedence=precedence,
            audience=Audience.parse(to),
            seq=seq,
            text=text,
            exercise=exercise,
            kind=kind,
            refs=refs,
        )

    def sign(self, signer: str, text: str = "Besluit: evacuatie.", **kw: object) -> bytes:
        return seal(self.decision(signer, text, **kw), self.keys[signer])  # type: ignore[arg-type]


def standard_world() -> World:
    w = World()
    w.add("national", Role.ISSUER, "all")
    w.add("vr07-issuer", Role.ISSUER, "region:VR07")
    w.add("coordinator", Role.COORDINATOR, "all")
    w.add("vr07-utrecht", Role.NODE, "region:VR07")
    w.add("vr05-twente", Role.NODE, "region:VR05")
    return w
