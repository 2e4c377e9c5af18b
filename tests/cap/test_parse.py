"""Reading CAP 1.2 alerts: hostile documents are refused with their own reason, never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay import resources
from relay.cap import MAX_DOCUMENT, Alert, CapReason, CapRejection, CapSchema, parse_alert
from tests.cap.conftest import alert, info

BOMB = (
    b'<?xml version="1.0"?>\n<!DOCTYPE alert [\n<!ENTITY a "aaaaaaaaaa">\n'
    + b"".join(
        b'<!ENTITY %s "%s">\n' % (bytes([98 + i]), (b"&" + bytes([97 + i]) + b";") * 10)
        for i in range(9)
    )
    + b']>\n<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">'
    + b"<identifier>&j;</identifier></alert>"
)
XXE = (
    b'<?xml version="1.0"?>\n<!DOCTYPE alert [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&x;</identifier></alert>'
)
PARAMETER = (
    b'<?xml version="1.0"?>\n<!DOCTYPE alert [<!ENTITY % p SYSTEM "http://127.0.0.1:9/e"> %p;]>'
    b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"/>'
)
EXTERNAL_DTD = (
    b'<?xml version="1.0"?>\n<!DOCTYPE alert SYSTEM "http://127.0.0.1:9/cap.dtd">\n'
    + alert(head="")
)

SCHEMA = CapSchema(resources.read_bytes("cap/cap-1.2.xsd"))  # hypothesis tests take no fixtures


def reason(data: bytes, schema: CapSchema) -> CapReason:
    result = parse_alert(data, schema)
    assert isinstance(result, CapRejection), result
    return result.reason


def test_a_valid_alert_parses(schema: CapSchema) -> None:
    """Test that a valid CAP 1.2 alert parses into its fields."""
    result = parse_alert(alert(), schema)
    assert isinstance(result, Alert)
    assert (result.identifier, result.status, result.msg_type) == (
        "NL-VR09-2026-0042",
        "Exercise",
        "Alert",
    )
    assert result.infos[0].areas[0].geocodes == (("veiligheidsregio", "VR09"),)


@pytest.mark.parametrize(
    ("data", "expected", "detail"),
    [
        (BOMB, CapReason.ENTITY, "entity 'a' declared"),
        (XXE, CapReason.ENTITY, "file:///etc/passwd"),
        (PARAMETER, CapReason.ENTITY, "http://127.0.0.1:9/e"),
        (EXTERNAL_DTD, CapReason.DTD, "http://127.0.0.1:9/cap.dtd"),
        (b"<alert><info></alert>", CapReason.NOT_XML, "mismatched tag"),
        (b"", CapReason.NOT_XML, "no element found"),
        (alert() + b"<trailing/>", CapReason.NOT_XML, "junk after document element"),
        (
            alert(ns="urn:oasis:names:tc:emergency:cap:1.1"),
            CapReason.NAMESPACE,
            "urn:oasis:names:tc:emergency:cap:1.1",
        ),
        (alert().replace(b' xmlns="urn:oasis:names:tc:emergency:cap:1.2"', b""),
         CapReason.NAMESPACE, "no namespace"),
        (b'<feed xmlns="urn:oasis:names:tc:emergency:cap:1.2"/>', CapReason.NOT_ALERT, "<feed>"),
        (b"<a>" * 50 + b"</a>" * 50, CapReason.TOO_DEEP, "more than 8 deep"),
        (b" " * (MAX_DOCUMENT + 1), CapReason.OVERSIZED, str(MAX_DOCUMENT)),
    ],
)  # fmt: skip
def test_hostile_documents_are_refused_with_their_reason(
    data: bytes, expected: CapReason, detail: str, schema: CapSchema
) -> None:
    """Test that each hostile or broken document is refused with its own reason and detail."""
    result = parse_alert(data, schema)
    assert isinstance(result, CapRejection)
    assert result.reason == expected
    assert detail in result.detail


def test_deep_nesting_within_the_size_limit_is_refused_without_recursion(
    schema: CapSchema,
) -> None:
    """Test that 9,000 nested elements (inside 64 KiB) are refused as too-deep, not a crash."""
    data = b"<a>" * 9_000 + b"</a>" * 9_000
    assert len(data) <= MAX_DOCUMENT
    assert reason(data, schema) == CapReason.TOO_DEEP


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ((b"<sender>rbt@vru.nl</sender>", b""), "sender"),
        ((b"<status>Exercise</status>", b"<status>Oefening</status>"), "status"),
        ((b"NL-VR09-2026-0042", b"NL VR09 0042"), "identifier"),
        ((b"<category>Safety</category>", b"<category>Crisis</category>"), "category"),
        ((b"<urgency>Immediate</urgency>", b""), "info"),
        ((b"<identifier>", b"<unknown/><identifier>"), "alert"),
    ],
)
def test_schema_faults_name_the_element(
    change: tuple[bytes, bytes], where: str, schema: CapSchema
) -> None:
    """Test that a document that breaks the CAP 1.2 schema is refused, naming where."""
    data = alert().replace(*change)
    assert data != alert()
    result = parse_alert(data, schema)
    assert isinstance(result, CapRejection) and result.reason == CapReason.INVALID
    assert where in result.detail


def test_a_utc_time_written_with_z_is_refused(schema: CapSchema) -> None:
    """Test that a time with "Z" (CAP 1.2 demands "-00:00") is refused by the schema."""
    data = alert(infos=[info(expires=None)])
    start = data.index(b"<sent>") + 6
    end = data.index(b"</sent>")
    data = data[:start] + b"2026-05-12T12:00:00Z" + data[end:]
    assert reason(data, schema) == CapReason.INVALID


def test_every_truncation_and_trailing_garbage_is_a_rejection(schema: CapSchema) -> None:
    """Test that every prefix of an alert and the alert with trailing bytes are refused."""
    whole = alert()
    for cut in range(len(whole.rstrip())):
        assert isinstance(parse_alert(whole[:cut], schema), CapRejection), cut
    for garbage in (b"\x00", b"<", b"</alert>", b"&amp;"):
        assert reason(whole + garbage, schema) == CapReason.NOT_XML


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    """Test that any bytes at all give an alert or a rejection, never an exception."""
    result = parse_alert(data, SCHEMA)
    assert isinstance(result, Alert | CapRejection)


@settings(max_examples=200, deadline=None)
@given(at=st.integers(min_value=0), byte=st.integers(min_value=0, max_value=255))
def test_a_changed_byte_never_raises(at: int, byte: int) -> None:
    """Test that a valid alert with any one byte changed parses or is refused, never raises."""
    whole = bytearray(alert())
    whole[at % len(whole)] = byte
    result = parse_alert(bytes(whole), SCHEMA)
    assert isinstance(result, Alert | CapRejection)


FULL = b"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>urn:oid:2.49.0.1.528.0.2026.7</identifier>
  <sender>meldkamer@vr09.example</sender>
  <sent>2026-07-01T09:30:00-00:00</sent>
  <status>Actual</status>
  <msgType>Update</msgType>
  <source>LCMS</source>
  <scope>Private</scope>
  <addresses>vr09-utrecht "Gemeentehuis Zeist"</addresses>
  <code>IPAWSv1.0</code>
  <code>crisis-relay:notice</code>
  <note>Aanvulling op het eerdere bericht</note>
  <references>m@vr09.example,NL-1,2026-07-01T08:00:00+02:00
    a,b,2026-07-01T08:05:00+02:00</references>
  <incidents>GRIP3-2026-07</incidents>
  <info>
    <language>nl-NL</language>
    <category>Met</category>
    <category>Infra</category>
    <event>Hoogwater</event>
    <responseType>Prepare</responseType>
    <responseType>Monitor</responseType>
    <urgency>Expected</urgency>
    <severity>Severe</severity>
    <certainty>Likely</certainty>
    <audience>crisisteams</audience>
    <eventCode><valueName>profiel</valueName><value>hoogwater</value></eventCode>
    <effective>2026-07-01T09:30:00+02:00</effective>
    <onset>2026-07-01T18:00:00+02:00</onset>
    <expires>2026-07-02T09:30:00+02:00</expires>
    <senderName>Veiligheidsregio Utrecht</senderName>
    <headline>Hoogwater Lek</headline>
    <description>De waterstand stijgt.</description>
    <instruction>Bereid evacuatie voor.</instruction>
    <web>https://example.org/hoogwater</web>
    <contact>ROT, 030-0000000</contact>
    <parameter><valueName>peil</valueName><value>NAP+6,10</value></parameter>
    <resource>
      <resourceDesc>kaart</resourceDesc>
      <mimeType>image/png</mimeType>
      <size>1024</size>
      <uri>https://example.org/kaart.png</uri>
      <digest>0000</digest>
    </resource>
    <area>
      <areaDesc>Uiterwaarden Lek</areaDesc>
      <polygon>51.95,5.10 51.96,5.30 51.90,5.30 51.95,5.10</polygon>
      <circle>51.95,5.20 4.5</circle>
      <geocode><valueName>veiligheidsregio</valueName><value>VR09</value></geocode>
      <altitude>0</altitude>
      <ceiling>100.5</ceiling>
    </area>
  </info>
  <info>
    <language>en-US</language>
    <category>Met</category>
    <event>High water</event>
    <urgency>Expected</urgency>
    <severity>Severe</severity>
    <certainty>Likely</certainty>
  </info>
  <Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo/></Signature>
</alert>
"""


def test_an_alert_with_every_optional_element_is_valid(schema: CapSchema) -> None:
    """Test that an alert using every element of the data dictionary passes the schema."""
    result = parse_alert(FULL, schema)
    assert isinstance(result, Alert), result
    assert result.addresses == ("vr09-utrecht", "Gemeentehuis Zeist")
    assert [str(r) for r in result.references][1] == "a,b,2026-07-01T08:05:00+02:00"
    assert result.infos[0].uncarried == (
        "responseType", "audience", "eventCode", "effective", "onset", "instruction", "web",
        "contact", "parameter", "resource",
    )  # fmt: skip
    assert result.infos[0].areas[0].shapes == 2


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ((b"51.95,5.10 51.96,5.30 51.90,5.30 51.95,5.10", b"51.95,5.10 51.96,5.30"), "polygon"),
        ((b"51.95,5.20 4.5", b"51.95,5.20"), "circle"),
        ((b"a,b,2026-07-01T08:05:00+02:00", b"a,b"), "references"),
        ((b"<size>1024</size>", b"<size>groot</size>"), "size"),
    ],
)
def test_dictionary_rules_beyond_element_order_are_checked(
    change: tuple[bytes, bytes], where: str, schema: CapSchema
) -> None:
    """Test that polygon, circle, references and sizes must have the form the standard gives."""
    result = parse_alert(FULL.replace(*change), schema)
    assert isinstance(result, CapRejection) and result.reason == CapReason.INVALID
    assert where in result.detail
