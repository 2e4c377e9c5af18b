"""The CAP 1.2 schema check (xmlschema), on an element tree already parsed by defusedxml.

The schema is relay/data/cap/cap-1.2.xsd, written from the standard's data dictionary; the
caller reads its bytes (``relay.resources``) and hands them in, so this module does no I/O.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET  # types only: nothing is parsed here

import xmlschema

SCHEMA_RESOURCE = "cap/cap-1.2.xsd"


class CapSchema:
    """A compiled CAP 1.2 schema."""

    def __init__(self, xsd: bytes) -> None:
        # The schema text is ours (package data); xmlschema parses it with its own defused
        # settings and never fetches anything (no imports or includes in it).
        self._schema = xmlschema.XMLSchema(io.BytesIO(xsd))

    def first_error(self, root: ET.Element) -> str | None:
        """None when ``root`` is a valid CAP 1.2 alert, else where and why it is not."""
        for error in self._schema.iter_errors(root):
            reason = error.reason or str(error.message)
            return f"{_short_path(error.path)}: {reason}"
        return None

    def is_valid(self, root: ET.Element) -> bool:
        return self.first_error(root) is None


def _short_path(path: str | None) -> str:
    """``/{urn:…:1.2}alert/{urn:…:1.2}info`` as ``/alert/info``."""
    if not path:
        return "/alert"
    return "/".join(part.rpartition("}")[2] for part in path.split("/"))
