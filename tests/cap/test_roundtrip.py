"""Round trips: CAP alert -> signed decision -> CAP alert (schema-valid) -> the same decision."""

from __future__ import annotations

from relay.cap import (
    Alert,
    CapReason,
    CapRejection,
    CapSchema,
    Held,
    Imported,
    RegionTable,
    alert_xml,
    export_alert,
    import_alert,
    parse_alert,
    parse_xml,
)
from relay.cli.common import DEFAULT_EXPIRY
from relay.envelope import Audience, Decision, Envelope, Kind, Precedence, open_envelope, seal
from relay.keys import load_private
from tests.cap.conftest import NOW, World, alert, area, info

FIELDS = ("issued_at", "expires_at", "precedence", "exercise", "audience", "kind", "text", "refs")


def do_import(data: bytes, schema: CapSchema, regions: RegionTable, **kw: object) -> Decision:
    parsed = parse_alert(data, schema)
    assert isinstance(parsed, Alert), parsed
    result = import_alert(
        parsed,
        regions=regions,
        now=NOW,
        seq=1,
        default_lifetime=DEFAULT_EXPIRY,
        **kw,  # type: ignore[arg-type]
    )
    assert isinstance(result, Imported), result
    return result.decision


def do_export(
    d: Decision, world: World, schema: CapSchema, regions: RegionTable, held: list[Held]
) -> tuple[Envelope, bytes]:
    raw = seal(d, load_private(world.key("vr09")), version=2)
    env = open_envelope(raw)
    assert isinstance(env, Envelope)
    cap = export_alert(
        env.decision, msg_id=env.id, signer="vr09-rbt", regions=regions, referenced=held
    )
    assert isinstance(cap, Alert), cap
    body = alert_xml(cap)
    root = parse_xml(body)
    assert not isinstance(root, CapRejection), root
    assert schema.first_error(root) is None
    return env, body


def same(a: Decision, b: Decision) -> None:
    for name in FIELDS:
        assert getattr(a, name) == getattr(b, name), name


def test_import_export_import_keeps_every_field(
    world: World, schema: CapSchema, regions: RegionTable
) -> None:
    """Test that an exported alert validates and imports to the same decision fields."""
    long = " ".join(["Opvang in sporthal De Waterlelie, Dorpsstraat 12, tot nader order."] * 5)
    areas = [area("Veiligheidsregio Utrecht", "VR09"), area("Gelderland-Midden")]
    first = do_import(
        alert(infos=[info(description=long, areas=areas)]), schema, regions, version=2
    )
    env, body = do_export(first, world, schema, regions, [])
    assert b"<status>Exercise</status>" in body and b"OEFENING / EXERCISE" in body
    assert env.id.hex().encode() in body and b"<sender>vr09-rbt</sender>" in body
    assert b"tekens weggelaten" in body  # the cut travels into the note
    again = do_import(body, schema, regions, version=2)
    same(env.decision, again)
    assert again.audience == Audience.parse("region:VR07,region:VR09")


def test_cancel_and_update_round_trip_with_their_references(
    world: World, schema: CapSchema, regions: RegionTable
) -> None:
    """Test that Cancel and Update export references that import to the same ids."""
    first = do_import(alert(status="Actual"), schema, regions, version=2)
    env1, _ = do_export(first, world, schema, regions, [])
    held = [Held(env1.id, env1.decision, "vr09-rbt")]
    for msg_type, kind in (("Cancel", Kind.CANCEL), ("Update", Kind.SUPERSEDE)):
        refs = f"rbt@vru.nl,NL-VR09-2026-0042,{'2026-05-12T14:00:00+02:00'}"
        d = do_import(
            alert(status="Actual", msg_type=msg_type, references=refs),
            schema,
            regions,
            held=held,
            version=2,
        )
        assert d.kind == kind and d.refs == (env1.id,)
        env, body = do_export(d, world, schema, regions, held)
        assert f"<msgType>{msg_type}</msgType>".encode() in body
        assert f"vr09-rbt,{env1.id.hex()},".encode() in body
        same(env.decision, do_import(body, schema, regions, held=held, version=2))


def test_a_notice_to_named_nodes_round_trips(
    world: World, schema: CapSchema, regions: RegionTable
) -> None:
    """Test that a notice to a node and a region exports as Private and imports the same."""
    issued = int(NOW) - 60
    d = Decision(
        issued_at=issued,
        expires_at=issued + 3600,
        precedence=Precedence.PRIORITY,
        audience=Audience.parse("node:vr09-utrecht,region:VR09"),
        seq=3,
        text="Noodsteunpunt open",
        kind=Kind.NOTICE,
    )
    env, body = do_export(d, world, schema, regions, [])
    assert b"<scope>Private</scope>" in body and b"<addresses>vr09-utrecht</addresses>" in body
    again = do_import(body, schema, regions, version=2)
    same(env.decision, again)


def test_export_refuses_what_is_not_an_alert(
    world: World, schema: CapSchema, regions: RegionTable
) -> None:
    """Test that a receipt is not exported, nor a cancel whose reference is not held."""
    d = do_import(alert(), schema, regions)
    ack = Decision(d.issued_at, d.expires_at, d.precedence, d.audience, 1, kind=Kind.ACK)
    r = export_alert(ack, msg_id=bytes(32), signer="x", regions=regions)
    assert isinstance(r, CapRejection) and r.reason == CapReason.NOT_AN_ALERT_KIND
    cancel = Decision(
        d.issued_at, d.expires_at, d.precedence, d.audience, 2, kind=Kind.CANCEL,
        refs=(bytes(32),),
    )  # fmt: skip
    r = export_alert(cancel, msg_id=bytes(32), signer="x", regions=regions)
    assert isinstance(r, CapRejection) and r.reason == CapReason.REFERENCE
