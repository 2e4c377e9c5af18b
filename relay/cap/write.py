"""Writing a CAP 1.2 alert as XML (ElementTree builds it; nothing is parsed here)."""

from __future__ import annotations

import xml.etree.ElementTree as ET  # building only, never parsing
from datetime import datetime

from relay.cap.mapping import cap_time
from relay.cap.model import NS, Alert, Info

_Q = "{" + NS + "}"


def _add(parent: ET.Element, name: str, text: str | None = None) -> ET.Element:
    elem = ET.SubElement(parent, _Q + name)
    if text is not None:
        elem.text = text
    return elem


def _time(value: datetime) -> str:
    return cap_time(value.timestamp())


def _info(parent: ET.Element, info: Info) -> None:
    elem = _add(parent, "info")
    _add(elem, "language", info.language)
    for category in info.categories:
        _add(elem, "category", category)
    _add(elem, "event", info.event)
    _add(elem, "urgency", info.urgency)
    _add(elem, "severity", info.severity)
    _add(elem, "certainty", info.certainty)
    if info.expires is not None:
        _add(elem, "expires", _time(info.expires))
    if info.sender_name:
        _add(elem, "senderName", info.sender_name)
    if info.headline:
        _add(elem, "headline", info.headline)
    if info.description:
        _add(elem, "description", info.description)
    for area in info.areas:
        a = _add(elem, "area")
        _add(a, "areaDesc", area.desc)
        for name, value in area.geocodes:
            g = _add(a, "geocode")
            _add(g, "valueName", name)
            _add(g, "value", value)


def alert_element(alert: Alert) -> ET.Element:
    root = ET.Element(_Q + "alert")
    _add(root, "identifier", alert.identifier)
    _add(root, "sender", alert.sender)
    _add(root, "sent", _time(alert.sent))
    _add(root, "status", alert.status)
    _add(root, "msgType", alert.msg_type)
    _add(root, "scope", alert.scope)
    if alert.restriction:
        _add(root, "restriction", alert.restriction)
    if alert.addresses:
        _add(root, "addresses", " ".join(f'"{a}"' if " " in a else a for a in alert.addresses))
    for code in alert.codes:
        _add(root, "code", code)
    if alert.note:
        _add(root, "note", alert.note)
    if alert.references:
        _add(root, "references", " ".join(str(r) for r in alert.references))
    for info in alert.infos:
        _info(root, info)
    return root


def alert_xml(alert: Alert) -> bytes:
    """The alert as an indented UTF-8 XML document in the CAP 1.2 default namespace."""
    root = alert_element(alert)
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode", default_namespace=NS)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'.encode()
