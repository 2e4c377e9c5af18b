"""The CAP 1.2 <-> decision mapping tables and the import rules."""

from __future__ import annotations

import pytest

from relay.cap import Alert, CapReason, CapRejection, CapSchema, Imported, RegionTable, parse_alert
from relay.cap.mapping import (
    DATA_CUT,
    DATA_TAG,
    ELLIPSIS,
    EXPORT_PAIR,
    FRAME_BUDGET,
    PRECEDENCE,
    Held,
    cap_tag,
    import_alert,
    sealed_size,
    signer_refusal,
)
from relay.cap.model import Area
from relay.cap.regions import RegionTableError
from relay.cli.common import DEFAULT_EXPIRY
from relay.envelope import Audience, Decision, Kind, Precedence
from tests.cap.conftest import NOW, World, alert, area, info

URGENCY = ["Immediate", "Expected", "Future", "Past", "Unknown"]
SEVERITY = ["Extreme", "Severe", "Moderate", "Minor", "Unknown"]


def parsed(data: bytes, schema: CapSchema) -> Alert:
    result = parse_alert(data, schema)
    assert isinstance(result, Alert), result
    return result


def imported(
    data: bytes, schema: CapSchema, regions: RegionTable, **kw: object
) -> Imported | CapRejection:
    return import_alert(
        parsed(data, schema),
        regions=regions,
        now=NOW,
        seq=7,
        default_lifetime=DEFAULT_EXPIRY,
        **kw,  # type: ignore[arg-type]
    )


def ok(result: Imported | CapRejection) -> Decision:
    assert isinstance(result, Imported), result
    return result.decision


def refused(result: Imported | CapRejection) -> CapRejection:
    assert isinstance(result, CapRejection), result
    return result


def test_precedence_table_is_complete_and_ordered() -> None:
    """Test that every urgency x severity has a precedence, more urgent/severe never lower."""
    assert set(PRECEDENCE) == set(URGENCY)
    for urgency in URGENCY:
        assert list(PRECEDENCE[urgency]) == SEVERITY
        row = [PRECEDENCE[urgency][s] for s in SEVERITY[:4]]
        assert row == sorted(row), urgency  # Extreme .. Minor: precedence values never drop
    for severity in SEVERITY:
        column = [PRECEDENCE[u][severity] for u in URGENCY[:4]]
        assert column == sorted(column), severity
    assert PRECEDENCE["Immediate"]["Extreme"] == Precedence.FLASH
    assert PRECEDENCE["Immediate"]["Minor"] == Precedence.IMMEDIATE
    assert PRECEDENCE["Expected"]["Moderate"] == Precedence.PRIORITY
    assert {PRECEDENCE["Past"][s] for s in SEVERITY} == {Precedence.ROUTINE}
    assert PRECEDENCE["Unknown"] == PRECEDENCE["Expected"]


def test_export_pairs_map_back_to_their_precedence() -> None:
    """Test that the urgency/severity export writes for each precedence imports as it."""
    for precedence in Precedence:
        urgency, severity = EXPORT_PAIR[precedence]
        assert PRECEDENCE[urgency][severity] == precedence


@pytest.mark.parametrize(
    ("urgency", "severity", "expected"),
    [("Immediate", "Extreme", Precedence.FLASH), ("Future", "Minor", Precedence.ROUTINE)],
)
def test_urgency_and_severity_give_the_precedence(
    urgency: str, severity: str, expected: Precedence, schema: CapSchema, regions: RegionTable
) -> None:
    """Test that an imported alert gets its precedence from the table."""
    data = alert(infos=[info(urgency=urgency, severity=severity)])
    assert ok(imported(data, schema, regions)).precedence == expected


def test_status_maps_to_the_exercise_flag(schema: CapSchema, regions: RegionTable) -> None:
    """Test that Exercise sets the exercise flag and Actual does not."""
    assert ok(imported(alert(status="Exercise"), schema, regions)).exercise
    assert not ok(imported(alert(status="Actual"), schema, regions)).exercise


@pytest.mark.parametrize("status", ["Test", "System", "Draft"])
def test_test_system_and_draft_are_refused(
    status: str, schema: CapSchema, regions: RegionTable
) -> None:
    """Test that status Test, System and Draft are refused with a reason naming the status."""
    r = refused(imported(alert(status=status), schema, regions))
    assert r.reason == CapReason.STATUS and f"status {status}" in r.detail


@pytest.mark.parametrize("msg_type", ["Ack", "Error"])
def test_ack_and_error_are_refused(msg_type: str, schema: CapSchema, regions: RegionTable) -> None:
    """Test that msgType Ack and Error are refused: they are not decisions."""
    r = refused(imported(alert(msg_type=msg_type), schema, regions))
    assert r.reason == CapReason.MSGTYPE and msg_type in r.detail


def test_expires_becomes_the_lifetime(schema: CapSchema, regions: RegionTable) -> None:
    """Test that expires sets expires-at (rounded up to the minute) and sent issued-at."""
    sent = int(NOW) - 120
    d = ok(imported(alert(sent=sent, infos=[info(expires=sent + 3 * 3600 + 30)]), schema, regions))
    assert d.issued_at == sent
    assert d.expires_at == sent + 3 * 3600 + 60


def test_without_expires_the_precedence_default_applies(
    schema: CapSchema, regions: RegionTable
) -> None:
    """Test that an alert without expires gets the default lifetime of its precedence."""
    d = ok(imported(alert(infos=[info(expires=None)]), schema, regions))
    assert d.expires_at - d.issued_at == DEFAULT_EXPIRY[Precedence.FLASH]


def test_an_expired_alert_is_refused(schema: CapSchema, regions: RegionTable) -> None:
    """Test that an alert whose expires has passed is refused as expired."""
    data = alert(sent=NOW - 7200, infos=[info(expires=NOW - 60)])
    assert refused(imported(data, schema, regions)).reason == CapReason.EXPIRED


def test_areas_become_the_audience(schema: CapSchema, regions: RegionTable) -> None:
    """Test that areas map by geocode and by description, and --to replaces them."""
    areas = [area("Veiligheidsregio Utrecht", "VR09"), area("gelderland-midden")]
    d = ok(imported(alert(infos=[info(areas=areas)]), schema, regions))
    assert d.audience == Audience.parse("region:VR07,region:VR09")
    d = ok(imported(alert(infos=[info(areas=[area("Nederland")])]), schema, regions))
    assert d.audience.everyone
    to = Audience.parse("node:vr09-utrecht")
    assert ok(imported(alert(), schema, regions, audience=to)).audience == to


def test_an_unknown_area_is_refused(schema: CapSchema, regions: RegionTable) -> None:
    """Test that an area outside the region table, or none at all, is a clear refusal."""
    r = refused(imported(alert(infos=[info(areas=[area("Atlantis")])]), schema, regions))
    assert r.reason == CapReason.AREA and "Atlantis" in r.detail
    r = refused(imported(alert(infos=[info(areas=[area("x", "VR99")])]), schema, regions))
    assert r.reason == CapReason.AREA and "VR99" in r.detail
    r = refused(imported(alert(infos=[info(areas=[])]), schema, regions))
    assert r.reason == CapReason.NO_AUDIENCE and "--to" in r.detail


def test_a_long_text_is_cut_to_the_frame_and_says_so(
    schema: CapSchema, regions: RegionTable
) -> None:
    """Test that a long description is cut so the signed message fits one frame, and reported."""
    words = "Bewoners van de wijk gaan naar de opvang in sporthal De Waterlelie aan de Dorpsstraat."
    data = alert(infos=[info(description=" ".join([words] * 6))])
    result = imported(data, schema, regions, version=2)
    assert isinstance(result, Imported) and result.cut is not None
    d = result.decision
    assert sealed_size(d, 2) <= FRAME_BUDGET
    assert d.text.endswith(ELLIPSIS) and d.text.startswith("Besluit RBT")
    assert result.cut.headline == 0 and result.cut.description == result.cut.cut > 0
    assert d.data[DATA_CUT] == result.cut.cut
    assert "tekens weggelaten" in result.cut.line() and "characters cut" in result.cut.line()


def test_a_short_text_is_carried_whole(schema: CapSchema, regions: RegionTable) -> None:
    """Test that headline and description that fit are carried whole, joined by a newline."""
    result = imported(alert(), schema, regions)
    assert isinstance(result, Imported) and result.cut is None
    assert result.decision.text == (
        "Besluit RBT: evacuatie Kanaleneiland-Zuid\nOpvang in Jaarbeurs hal 9. Start 16:30."
    )
    assert result.decision.data == {DATA_TAG: cap_tag("rbt@vru.nl", "NL-VR09-2026-0042")}


def test_uncarried_parts_are_listed(schema: CapSchema, regions: RegionTable) -> None:
    """Test that instruction, other languages and shapes are reported as not carried."""
    polygon = "<area><areaDesc>Utrecht</areaDesc><polygon>52,5 52,6 53,6 52,5</polygon></area>"
    infos = [
        info(language="en-US", areas=[area("Utrecht")]),
        info(extra="<instruction>Blijf binnen.</instruction>", areas=[polygon]),
    ]
    result = imported(alert(infos=infos), schema, regions)
    assert isinstance(result, Imported)
    assert result.not_carried == ("instruction", "polygon/circle", "info (en-US)")


def test_a_too_small_budget_is_refused(schema: CapSchema, regions: RegionTable) -> None:
    """Test that a budget the message cannot meet even with a short text is refused."""
    r = refused(imported(alert(), schema, regions, budget=100))
    assert r.reason == CapReason.TOO_LARGE and "--max-bytes" in r.detail


def _held(d: Decision, byte: int, signer: str = "vr09-rbt") -> Held:
    return Held(bytes([byte]) * 32, d, signer)


def test_references_resolve_by_id_and_by_tag(schema: CapSchema, regions: RegionTable) -> None:
    """Test that Cancel/Update references resolve by message id or an earlier import's tag."""
    first = ok(imported(alert(), schema, regions))
    by_tag = _held(first, 1)
    other = _held(ok(imported(alert(identifier="NL-VR09-2026-0043"), schema, regions)), 2)
    refs = f"rbt@vru.nl,NL-VR09-2026-0042,{'2026-05-12T14:00:00+02:00'}"
    d = ok(imported(alert(msg_type="Cancel", references=refs, infos=[]), schema, regions,
                    held=[other, by_tag]))  # fmt: skip
    assert d.kind == Kind.CANCEL and d.refs == (by_tag.id,)
    assert d.precedence == first.precedence and d.audience == first.audience and not d.text
    refs = f"vr09-rbt,{other.id.hex()},2026-05-12T14:00:00+02:00"
    d = ok(imported(alert(msg_type="Update", references=refs), schema, regions, held=[other]))
    assert d.kind == Kind.SUPERSEDE and d.refs == (other.id,)


def test_unknown_or_missing_references_are_refused(schema: CapSchema, regions: RegionTable) -> None:
    """Test that a reference this node does not hold, or none, is a clear refusal."""
    refs = "someone,NL-0001,2026-05-12T14:00:00+02:00"
    r = refused(imported(alert(msg_type="Cancel", references=refs), schema, regions))
    assert r.reason == CapReason.REFERENCE and "someone,NL-0001" in r.detail
    r = refused(imported(alert(msg_type="Update"), schema, regions))
    assert r.reason == CapReason.NO_REFERENCES


def test_a_real_cancel_of_an_exercise_is_refused(schema: CapSchema, regions: RegionTable) -> None:
    """Test that an Actual Cancel of an exercise message is refused (and the reverse)."""
    exercise = _held(ok(imported(alert(status="Exercise"), schema, regions)), 1)
    refs = f"vr09-rbt,{exercise.id.hex()},2026-05-12T14:00:00+02:00"
    data = alert(status="Actual", msg_type="Cancel", references=refs)
    r = refused(imported(data, schema, regions, held=[exercise]))
    assert r.reason == CapReason.EXERCISE_MISMATCH


def test_roles_decide_who_may_sign_real_alerts(
    world: World, schema: CapSchema, regions: RegionTable
) -> None:
    """Test that a coordinator may sign Exercise only, and scope limits the audience."""
    from relay.keys import kid_of, load_private

    trust = world.trust()
    coord = kid_of(load_private(world.key("coord")).public_key())
    issuer = kid_of(load_private(world.key("vr09")).public_key())
    real = ok(imported(alert(status="Actual"), schema, regions))
    drill = ok(imported(alert(status="Exercise"), schema, regions))
    refusal = signer_refusal(trust, coord, real)
    assert refusal is not None and refusal.reason == CapReason.EXERCISE_ONLY
    assert signer_refusal(trust, coord, drill) is None
    assert signer_refusal(trust, issuer, real) is None
    wide = ok(imported(alert(status="Actual", infos=[info(areas=[area("Zeeland")])]),
                       schema, regions))  # fmt: skip
    refusal = signer_refusal(trust, issuer, wide)
    assert refusal is not None and refusal.reason == CapReason.OUT_OF_SCOPE
    unknown = signer_refusal(trust, b"\0\0\0\0", real)
    assert unknown is not None and unknown.reason == CapReason.SIGNER
    trust.revoked[issuer] = "vr09-rbt"
    revoked = signer_refusal(trust, issuer, real)
    assert revoked is not None and revoked.reason == CapReason.REVOKED


def test_the_default_region_table_has_the_25_safety_regions(regions: RegionTable) -> None:
    """Test that the shipped table has VR01..VR25 with their CBS names."""
    assert [r.code for r in regions.regions] == [f"VR{i:02d}" for i in range(1, 26)]
    assert regions.by_code("VR09") is not None and regions.by_code("VR09").name == "Utrecht"  # type: ignore[union-attr]
    assert regions.area_audience(Area("x", (("VR", "vr05"),))) == Audience.parse("region:VR05")
    assert regions.area_audience(Area("  friesland ")) == Audience.parse("region:VR02")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (b"regions = 1", "[regions.CODE]"),
        (b'[regions.A]\nname = "x"\n[regions.B]\nname = "X"', "names both A and B"),
        (b'[regions.A]\nnaam = "x"', "needs name"),
        (b'[regions.A]\nname = "x"\ncolour = "red"', "unknown keys ['colour']"),
        (b'surprise = 1\n[regions.A]\nname = "x"', "unknown keys ['surprise']"),
        (b"[regions", "regions"),
    ],
)
def test_a_bad_region_table_is_refused(toml: bytes, message: str) -> None:
    """Test that a broken region table is refused with the key at fault."""
    with pytest.raises(RegionTableError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RegionTable.from_toml(toml)


def test_a_larger_budget_keeps_the_text_within_a_decisions_limit(
    schema: CapSchema, regions: RegionTable
) -> None:
    """Test that with a multi-frame budget a 6,000-character text is cut to 2,048 B, no crash."""
    data = alert(infos=[info(description="Dijkbewaking langs de Lek. " * 220)])
    result = imported(data, schema, regions, budget=4096)
    assert isinstance(result, Imported) and result.cut is not None
    assert len(result.decision.text.encode()) <= 2048 < len(info(description="x" * 2049))


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+14:00", "1969-12-31T23:59:59-00:00"])
def test_times_outside_what_the_relay_carries_are_refused(when: str, schema: CapSchema) -> None:
    """Test that a valid CAP time before 1970 or at the calendar's edge is refused, not raised."""
    data = alert()
    start, end = data.index(b"<sent>") + 6, data.index(b"</sent>")
    result = parse_alert(data[:start] + when.encode() + data[end:], schema)
    assert isinstance(result, CapRejection) and result.reason == CapReason.INVALID
    assert when in result.detail


def test_private_addresses_that_are_nodes_become_node_targets(
    schema: CapSchema, regions: RegionTable
) -> None:
    """Test that only the addresses of a Private alert that are roster nodes become targets."""
    data = alert(scope="Private").replace(
        b"<scope>Private</scope>",
        b"<scope>Private</scope><addresses>vr09-utrecht burgemeester@zeist.example</addresses>",
    )
    result = imported(data, schema, regions, known_nodes=frozenset({"vr09-utrecht"}))
    assert isinstance(result, Imported)
    assert result.decision.audience == Audience.parse("region:VR09,node:vr09-utrecht")
    assert "addresses" in result.not_carried
