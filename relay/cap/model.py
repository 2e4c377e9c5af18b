"""A CAP 1.2 alert as plain data: what the importer reads and the exporter writes.

Only the parts the relay maps are typed fields; what it reads but does not carry is kept as the
names of the elements found (``Info.uncarried``), so the importer can say what it left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

NS = "urn:oasis:names:tc:emergency:cap:1.2"


class CapReason(StrEnum):
    """Why a CAP document was refused. Shown as ``relay: rejected: REASON: DETAIL``."""

    OVERSIZED = "oversized"
    NOT_XML = "not-xml"
    ENTITY = "entity-forbidden"  # any entity declaration: expansion bombs, external entities
    EXTERNAL = "external-reference"
    DTD = "dtd-forbidden"  # a DOCTYPE (a CAP alert has none; an external DTD is never fetched)
    TOO_DEEP = "too-deep"
    NAMESPACE = "wrong-namespace"
    NOT_ALERT = "not-an-alert"
    INVALID = "schema-invalid"
    STATUS = "status-refused"
    MSGTYPE = "msgtype-refused"
    NO_INFO = "no-info"
    NO_TEXT = "no-text"
    AREA = "unknown-area"
    NO_AUDIENCE = "no-audience"
    NO_REFERENCES = "no-references"
    REFERENCE = "unknown-reference"
    EXERCISE_MISMATCH = "exercise-mismatch"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    TOO_LARGE = "too-large"
    SIGNER = "unknown-signer"
    REVOKED = "revoked-signer"
    EXERCISE_ONLY = "exercise-only"
    OUT_OF_SCOPE = "out-of-scope"
    NOT_AN_ALERT_KIND = "not-exportable"


@dataclass(frozen=True, slots=True)
class CapRejection:
    reason: CapReason
    detail: str


@dataclass(frozen=True, slots=True)
class Reference:
    """One ``sender,identifier,sent`` triple of ``<references>``."""

    sender: str
    identifier: str
    sent: str

    def __str__(self) -> str:
        return f"{self.sender},{self.identifier},{self.sent}"


@dataclass(frozen=True, slots=True)
class Area:
    desc: str
    geocodes: tuple[tuple[str, str], ...] = ()
    shapes: int = 0  # polygons and circles: read, not carried


@dataclass(frozen=True, slots=True)
class Info:
    event: str
    urgency: str
    severity: str
    certainty: str
    categories: tuple[str, ...] = ("Other",)
    language: str = "en-US"  # the CAP default when <language> is absent
    expires: datetime | None = None
    sender_name: str = ""
    headline: str = ""
    description: str = ""
    areas: tuple[Area, ...] = ()
    uncarried: tuple[str, ...] = ()  # elements read but not carried, e.g. "instruction"


@dataclass(frozen=True, slots=True)
class Alert:
    identifier: str
    sender: str
    sent: datetime
    status: str
    msg_type: str
    scope: str
    restriction: str = ""
    addresses: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()
    note: str = ""
    references: tuple[Reference, ...] = ()
    infos: tuple[Info, ...] = field(default=())
