"""The audit chain itself, pure: the hash of a row, chaining new rows, and following the chain
row by row to its first broken link (docs/store.md, "The audit chain").

    hash(n) = SHA-256(CBOR([DOMAIN, hash(n-1), n, at, event, msg_id, link, node, detail]))

with ``hash(0)`` 32 zero bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

DOMAIN = "relay-audit-1"
ZERO = bytes(32)

Row = tuple[Any, ...]  # (n, at, event, msg_id, link, node, detail, hash)


@dataclass(frozen=True, slots=True)
class Head:
    """The chain after row ``n``: that row's hash (``ZERO`` before the first row)."""

    n: int
    hash: bytes


GENESIS = Head(0, ZERO)


def row_hash(prev: bytes, n: int, content: Sequence[Any]) -> bytes:
    """The hash of row ``n`` with ``content`` (at, event, msg_id, link, node, detail)."""
    at, *rest = content
    if isinstance(at, int) and not isinstance(at, bool):
        at = float(at)  # a REAL column gives floats back; the writer may hold an int
    return hashlib.sha256(cbor2.dumps([DOMAIN, prev, n, at, *rest])).digest()


def extend(head: Head, rows: Iterable[Sequence[Any]]) -> tuple[Head, list[Row]]:
    """Chain ``rows`` (as ``AUDIT_INSERT`` takes them) after ``head``: the new head and the rows
    for ``CHAINED_INSERT``."""
    n, h = head.n, head.hash
    out: list[Row] = []
    for at, *rest in rows:
        n += 1
        content = (float(at), *rest)
        h = row_hash(h, n, content)
        out.append((n, *content, h))
    return Head(n, h), out


def legacy_range(detail: object) -> tuple[int, int]:
    """(A, B) of a ``chain`` row's ``legacy=A-B`` (0, 0 when it is not one)."""
    if isinstance(detail, str) and detail.startswith("legacy="):
        a, _, b = detail[7:].partition("-")
        if a.isdigit() and b.isdigit():
            return int(a), int(b)
    return 0, 0


def _span(a: int, b: int) -> str:
    return f"{a}" if a == b else f"{a}-{b}"


class Walk:
    """Follow the chain row by row from ``start``; stops at the first broken link.

    ``anchors`` are signed heads (row -> head, label) the chain must pass through."""

    def __init__(self, start: Head, anchors: dict[int, tuple[bytes, str]]) -> None:
        self.head = start
        self.anchors = anchors
        self.problem: str | None = None
        self.pruned_to = 0
        self.legacy = (0, 0)  # the rows the upgrade to the chain found (legacy_range)

    def step(self, row: Row, ahead: Callable[[int], list[Row]]) -> bool:
        n, *content, stored = row
        content = content[:6]
        want = self.head.n + 1
        if n != want:
            gap = _span(want, n - 1)
            self.problem = (f"rij(en) {gap} ontbreken (verwijderd) / row(s) {gap} are missing "
                            "(deleted)")  # fmt: skip
            return False
        if not isinstance(stored, bytes):
            self.problem = (f"rij {n} heeft geen hash (buiten de relay geschreven) / row {n} has "
                            "no hash (written outside the relay)")  # fmt: skip
            return False
        if row_hash(self.head.hash, n, content) != stored:
            self.problem = self._mismatch(n, stored, ahead(n))
            return False
        if n in self.anchors and self.anchors[n][0] != stored:
            label = self.anchors[n][1]
            self.problem = (
                f"{label} bij rij {n} klopt niet met de keten (rijen t/m {n} zijn gewijzigd en "
                f"opnieuw gehasht) / the {label} at row {n} does not match the chain (rows up to "
                f"{n} were changed and their hashes recomputed)"
            )
            return False
        event, detail = content[1], content[5]
        if event == "pruned" and isinstance(detail, str) and detail.startswith("n<="):
            with contextlib.suppress(ValueError):
                self.pruned_to = int(detail[3:])
        if event == "chain" and legacy_range(detail) != (0, 0):
            self.legacy = legacy_range(detail)
        self.head = Head(n, stored)
        return True

    def _mismatch(self, n: int, stored: bytes, later: list[Row]) -> str:
        # A swap leaves each event's hash where it was written: row n's content may be found
        # in a later row, or row n's own hash may have moved along with its content.
        for other in later:
            m, *content, its_hash = other
            if row_hash(self.head.hash, n, content[:6]) in (stored, its_hash):
                return (f"rijen {n} en {m} zijn van plaats verwisseld / rows {n} and {m} are out "
                        "of order (reordered)")  # fmt: skip
        return (f"rij {n} is gewijzigd: de inhoud past niet bij de hash / row {n} was changed: "
                "its content does not match its hash")  # fmt: skip
