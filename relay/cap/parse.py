"""Reading a CAP 1.2 alert from bytes: hardened parsing, then the schema, then plain data.

Every step refuses with a ``CapRejection`` and never raises on any input:

1. more than ``MAX_DOCUMENT`` bytes: ``oversized``, before any parsing;
2. defusedxml's parser with entity declarations and external references forbidden (entity
   expansion bombs and external entities are refused when declared, before any expansion), and a
   DOCTYPE refused once it is read (a CAP alert has none; an external DTD is never fetched);
3. nesting deeper than ``MAX_DEPTH``: ``too-deep`` (a CAP alert is five levels deep);
4. the root must be ``alert`` in the CAP 1.2 namespace: ``wrong-namespace`` or ``not-an-alert``;
5. the schema (relay/data/cap/cap-1.2.xsd, see relay.cap.schema): ``schema-invalid`` with the
   path of the first fault.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET  # types only: parsing is defusedxml
from datetime import datetime
from typing import Any

import defusedxml
from defusedxml.ElementTree import DefusedXMLParser

from relay.cap.model import NS, Alert, Area, CapReason, CapRejection, Info, Reference
from relay.cap.schema import CapSchema

MAX_DOCUMENT = 64 * 1024
MAX_DEPTH = 8
_Q = "{" + NS + "}"
_ADDRESS = re.compile(r'"([^"]*)"|(\S+)')
# Elements of <info> the relay reads into fields; any other child is reported as not carried.
_INFO_CARRIED = frozenset(
    {"language", "category", "event", "urgency", "severity", "certainty", "expires",
     "senderName", "headline", "description", "area"}
)  # fmt: skip


class _Parser(DefusedXMLParser):
    """defusedxml's parser, which also refuses a DOCTYPE once it has been read to its end: by
    then any entity declaration inside it has been refused with its own, more specific reason."""

    def __init__(self) -> None:
        super().__init__(forbid_dtd=False, forbid_entities=True, forbid_external=True)
        expat: Any = self.parser  # the pyexpat parser of ElementTree's pure-Python XMLParser
        self._doctype: tuple[str, str | None] | None = None
        expat.StartDoctypeDeclHandler = self._start_doctype
        expat.EndDoctypeDeclHandler = self._end_doctype

    def _start_doctype(
        self, name: str, sysid: str | None, pubid: str | None, has_internal_subset: bool
    ) -> None:
        self._doctype = (name, sysid)

    def _end_doctype(self) -> None:
        name, sysid = self._doctype or ("?", None)
        raise defusedxml.DTDForbidden(name, sysid, None)


def parse_xml(data: bytes) -> ET.Element | CapRejection:
    """Steps 1-4: the root element of a CAP 1.2 alert, or why not."""
    if len(data) > MAX_DOCUMENT:
        return CapRejection(
            CapReason.OVERSIZED, f"{len(data)} bytes exceeds the limit of {MAX_DOCUMENT}"
        )
    parser = _Parser()
    try:
        parser.feed(data)
        root: ET.Element = parser.close()
    except defusedxml.EntitiesForbidden as exc:
        where = f" (system id {exc.sysid})" if exc.sysid else ""
        return CapRejection(CapReason.ENTITY, f"entity {exc.name!r} declared{where}")
    except defusedxml.ExternalReferenceForbidden as exc:
        return CapRejection(CapReason.EXTERNAL, f"external reference to {exc.sysid!r}")
    except defusedxml.DTDForbidden as exc:
        where = f" with external DTD {exc.sysid!r}" if exc.sysid else ""
        return CapRejection(CapReason.DTD, f"DOCTYPE {exc.name!r}{where}")
    except ET.ParseError as exc:
        return CapRejection(CapReason.NOT_XML, str(exc))
    except (ValueError, LookupError) as exc:  # e.g. an encoding declaration Python lacks
        return CapRejection(CapReason.NOT_XML, str(exc))
    if _depth(root) > MAX_DEPTH:
        return CapRejection(CapReason.TOO_DEEP, f"elements nested more than {MAX_DEPTH} deep")
    ns, _, local = root.tag[1:].partition("}") if root.tag.startswith("{") else ("", "", root.tag)
    if ns != NS:
        found = f"namespace {ns!r}" if ns else "no namespace"
        return CapRejection(CapReason.NAMESPACE, f"<{local}> has {found}, not {NS!r} (CAP 1.2)")
    if local != "alert":
        return CapRejection(CapReason.NOT_ALERT, f"root element is <{local}>, not <alert>")
    return root


def _depth(root: ET.Element) -> int:
    """The nesting depth up to MAX_DEPTH + 1, found without recursion (a hostile document may
    nest thousands of levels)."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        elem, level = stack.pop()
        deepest = max(deepest, level)
        if level <= MAX_DEPTH:
            stack.extend((child, level + 1) for child in elem)
    return deepest


def parse_alert(data: bytes, schema: CapSchema) -> Alert | CapRejection:
    """A CAP 1.2 alert from bytes, checked against ``schema``, or why not. Never raises."""
    root = parse_xml(data)
    if isinstance(root, CapRejection):
        return root
    fault = schema.first_error(root)
    if fault is not None:
        return CapRejection(CapReason.INVALID, fault)
    try:
        return _alert(root)
    except (ValueError, OverflowError) as exc:  # valid CAP, but not a value the relay reads
        return CapRejection(CapReason.INVALID, str(exc))


def _text(elem: ET.Element, name: str) -> str:
    child = elem.find(_Q + name)
    return "" if child is None or child.text is None else child.text.strip()


def _all(elem: ET.Element, name: str) -> list[ET.Element]:
    return elem.findall(_Q + name)


def parse_time(text: str) -> datetime:
    """A CAP dateTime (the schema has checked its form) as an aware datetime."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"time {text!r} has no offset")
    if not 0 <= value.timestamp() < 2**40:  # OverflowError too, at the ends of the calendar
        raise ValueError(f"time {text!r} is outside 1970 … 36812")
    return value


def _references(text: str) -> tuple[Reference, ...]:
    refs = []
    for triple in text.split():
        parts = triple.split(",")
        if len(parts) != 3:
            raise ValueError(f"reference {triple!r} is not sender,identifier,sent")
        refs.append(Reference(*parts))
    return tuple(refs)


def _area(elem: ET.Element) -> Area:
    geocodes = tuple((_text(g, "valueName"), _text(g, "value")) for g in _all(elem, "geocode"))
    shapes = len(_all(elem, "polygon")) + len(_all(elem, "circle"))
    return Area(_text(elem, "areaDesc"), geocodes, shapes)


def _info(elem: ET.Element) -> Info:
    expires = _text(elem, "expires")
    uncarried = []
    for child in elem:
        local = child.tag.rpartition("}")[2]
        if local not in _INFO_CARRIED and local not in uncarried:
            uncarried.append(local)
    return Info(
        event=_text(elem, "event"),
        urgency=_text(elem, "urgency"),
        severity=_text(elem, "severity"),
        certainty=_text(elem, "certainty"),
        categories=tuple(c.text.strip() for c in _all(elem, "category") if c.text),
        language=_text(elem, "language") or "en-US",
        expires=parse_time(expires) if expires else None,
        sender_name=_text(elem, "senderName"),
        headline=_text(elem, "headline"),
        description=_text(elem, "description"),
        areas=tuple(_area(a) for a in _all(elem, "area")),
        uncarried=tuple(uncarried),
    )


def _alert(root: ET.Element) -> Alert:
    addresses = tuple(q or p for q, p in _ADDRESS.findall(_text(root, "addresses")))
    return Alert(
        identifier=_text(root, "identifier"),
        sender=_text(root, "sender"),
        sent=parse_time(_text(root, "sent")),
        status=_text(root, "status"),
        msg_type=_text(root, "msgType"),
        scope=_text(root, "scope"),
        restriction=_text(root, "restriction"),
        addresses=addresses,
        codes=tuple(c.text.strip() for c in _all(root, "code") if c.text),
        note=_text(root, "note"),
        references=_references(_text(root, "references")),
        infos=tuple(_info(i) for i in _all(root, "info")),
    )
