"""CAP 1.2 (OASIS Common Alerting Protocol) in and out: see docs/cap.md.

Pure code: every function takes the bytes, tables and times it needs (the schema and the region
table are package data that the caller reads, ``relay.resources``) and returns data or a
``CapRejection``; the command line (relay/cli/cap.py) does the reading, signing and writing.

- ``parse.parse_alert``: hardened XML parsing (defusedxml), schema check (xmlschema), plain data;
- ``mapping.import_alert`` / ``export.export_alert``: the documented mapping tables;
- ``write.alert_xml``: an alert as XML.
"""

from relay.cap.export import export_alert
from relay.cap.mapping import Held, Imported, import_alert
from relay.cap.model import NS, Alert, CapReason, CapRejection
from relay.cap.parse import MAX_DOCUMENT, parse_alert, parse_xml
from relay.cap.regions import RegionTable, RegionTableError
from relay.cap.schema import CapSchema
from relay.cap.write import alert_element, alert_xml

__all__ = [
    "MAX_DOCUMENT",
    "NS",
    "Alert",
    "CapReason",
    "CapRejection",
    "CapSchema",
    "Held",
    "Imported",
    "RegionTable",
    "RegionTableError",
    "alert_element",
    "alert_xml",
    "export_alert",
    "import_alert",
    "parse_alert",
    "parse_xml",
]
