"""Keys, a roster, a store and CAP 1.2 documents for the relay.cap tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from relay import resources
from relay.cap import CapSchema, RegionTable
from relay.cap.mapping import cap_time
from relay.cli import main
from relay.engine.ops import PutMessage
from relay.envelope import Envelope, open_envelope
from relay.keys import load_public
from relay.rosterfile import load_trust
from relay.store import Store
from relay.trust import TrustState

NOW = time.time()


@dataclass(frozen=True)
class World:
    dir: Path
    keys: Path
    roster: Path
    root_pub: Path

    def key(self, name: str) -> Path:
        return self.keys / f"{name}.key"

    def trust(self) -> TrustState:
        return load_trust(self.roster, load_public(self.root_pub))

    def trust_args(self) -> list[str]:
        return ["--roster", str(self.roster), "--root", str(self.root_pub)]


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """Keys and a roster, made once: the tests only add sequence numbers to the keys' counters."""
    tmp_path = tmp_path_factory.mktemp("cap-world")
    keys = tmp_path / "keys"
    for name in ("root", "vr09", "coord", "node1"):
        assert main(["keys", "new", name, "--dir", str(keys)]) == 0
    roster = tmp_path / "roster.cbor"
    assert main(["roster", "new", "--root-key", str(keys / "root.key"), "-o", str(roster)]) == 0
    for name, entry, role, scope in [
        ("vr09", "vr09-rbt", "issuer", "region:VR09,region:VR07"),
        ("coord", "coord", "exercise-coordinator", "all"),
        ("node1", "vr09-utrecht", "node", "region:VR09"),
    ]:
        args = ["roster", "add", str(roster), "--root-key", str(keys / "root.key")]
        args += ["--pub", str(keys / f"{name}.pub"), "--name", entry, "--role", role]
        assert main([*args, "--scope", scope]) == 0
    return World(tmp_path, keys, roster, keys / "root.pub")


@pytest.fixture(scope="session")
def schema() -> CapSchema:
    return CapSchema(resources.read_bytes("cap/cap-1.2.xsd"))


@pytest.fixture(scope="session")
def regions() -> RegionTable:
    return RegionTable.from_toml(resources.read_bytes("cap/regions.toml"))


def area(desc: str, geocode: str | None = None) -> str:
    code = (
        f"<geocode><valueName>veiligheidsregio</valueName><value>{geocode}</value></geocode>"
        if geocode
        else ""
    )
    return f"<area><areaDesc>{desc}</areaDesc>{code}</area>"


def info(
    *,
    headline: str = "Besluit RBT: evacuatie Kanaleneiland-Zuid",
    description: str = "Opvang in Jaarbeurs hal 9. Start 16:30.",
    urgency: str = "Immediate",
    severity: str = "Severe",
    expires: float | None = NOW + 4 * 3600,
    areas: Iterable[str] = (area("Veiligheidsregio Utrecht", "VR09"),),
    language: str = "nl-NL",
    extra: str = "",
) -> str:
    exp = f"<expires>{cap_time(expires)}</expires>" if expires is not None else ""
    head = f"<headline>{headline}</headline>" if headline else ""
    desc = f"<description>{description}</description>" if description else ""
    return (
        f"<info><language>{language}</language><category>Safety</category>"
        f"<event>Evacuatie</event><urgency>{urgency}</urgency><severity>{severity}</severity>"
        f"<certainty>Observed</certainty>{exp}{head}{desc}{extra}{''.join(areas)}</info>"
    )


def alert(
    *,
    identifier: str = "NL-VR09-2026-0042",
    sender: str = "rbt@vru.nl",
    sent: float = NOW - 60,
    status: str = "Exercise",
    msg_type: str = "Alert",
    scope: str = "Restricted",
    references: str = "",
    infos: Iterable[str] | None = None,
    head: str = '<?xml version="1.0" encoding="UTF-8"?>\n',
    ns: str = "urn:oasis:names:tc:emergency:cap:1.2",
) -> bytes:
    refs = f"<references>{references}</references>" if references else ""
    body = "".join(infos) if infos is not None else info()
    restriction = "<restriction>crisisteams</restriction>" if scope == "Restricted" else ""
    return (
        f'{head}<alert xmlns="{ns}"><identifier>{identifier}</identifier>'
        f"<sender>{sender}</sender><sent>{cap_time(sent)}</sent><status>{status}</status>"
        f"<msgType>{msg_type}</msgType><scope>{scope}</scope>{restriction}{refs}{body}</alert>"
    ).encode()


def store_with(path: Path, raws: Iterable[tuple[bytes, str]]) -> Path:
    """A real SQLite store holding these signed messages (raw, signer), as a node keeps them."""

    async def go() -> None:
        store = await Store.open(path)
        ops = []
        for raw, signer in raws:
            env = open_envelope(raw)
            assert isinstance(env, Envelope)
            d = env.decision
            ops.append(
                PutMessage(
                    id=env.id,
                    raw=raw,
                    kid=env.kid,
                    signer=signer,
                    seq=d.seq,
                    kind=int(d.kind),
                    precedence=int(d.precedence),
                    exercise=d.exercise,
                    audience=str(d.audience),
                    issued_at=d.issued_at,
                    expires_at=d.expires_at,
                    received_at=NOW,
                    received_via="mqtt",
                    origin=False,
                )
            )
        await store.apply([ops])
        await store.close()

    asyncio.run(go())
    return path
