"""One validation path for our TOML files (relay.toml and drill scenarios).

The checks raise ``TomlProblem(path, problem)`` naming the key by its path in the document
(``("mesh", "radio", 0, "preset")``, shown as ``mesh.radio[0].preset``); each loader turns that
into its own error with the file and line: ``FILE:LINE: key.path: problem``.

tomllib reports line numbers only for syntax errors, so ``Lines`` finds the line of each key in
the text itself. Good enough for the layouts people write: one key per line, table headers on
their own lines (inline tables and multi-line arrays count as their key's line).
"""

from __future__ import annotations

import math
import re
import tomllib
from typing import Any

KeyPath = tuple[str | int, ...]

_SEGMENT = r"[A-Za-z_][A-Za-z0-9_-]*(?:\[\d+\])*"
_DOTTED = re.compile(rf"^{_SEGMENT}(?:\.{_SEGMENT})*$")


class TomlProblem(ValueError):
    """A key that is unknown, of the wrong type, out of range or missing."""

    def __init__(self, path: KeyPath, problem: str) -> None:
        super().__init__(f"{dotted(path)}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


def dotted(path: KeyPath) -> str:
    """``("mesh", "radio", 0, "preset")`` -> ``mesh.radio[0].preset``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def key_path(text: str) -> KeyPath | None:
    """The inverse of ``dotted``, or None when ``text`` is not a key path."""
    if not _DOTTED.match(text):
        return None
    out: list[str | int] = []
    for segment in text.split("."):
        name, *indexes = segment.split("[")
        out.append(name)
        out += [int(i.rstrip("]")) for i in indexes]
    return tuple(out)


def number_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


class Lines:
    """Line numbers of keys and table headers, found in the TOML text.

    Paths look like ``("node", 2, "name")`` for the third ``[[node]]``'s ``name``, or
    ``("mesh", "preset")``.
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"]+)\s*=")

    def __init__(self, text: str) -> None:
        self.lines: dict[KeyPath, int] = {}
        counts: dict[str, int] = {}
        current: KeyPath = ()
        depth = 0  # open brackets of a multi-line value
        quote: str | None = None  # the delimiter of an open multi-line string
        for no, line in enumerate(text.splitlines(), start=1):
            if quote is not None:
                if line.count(quote) % 2:
                    quote = None
                continue
            if depth > 0:
                depth += _brackets(line)
                continue
            if m := self._HEADER.match(line):
                name = m.group(2).replace('"', "").replace(" ", "")
                parts: list[str | int] = list(name.split("."))
                if m.group(1) == "[[":
                    index = counts.get(name, 0)
                    counts[name] = index + 1
                    parts.append(index)
                current = tuple(parts)
                self.lines.setdefault(current, no)
                continue
            if m := self._KEY.match(line):
                key = m.group(1).strip('"')
                self.lines.setdefault((*current, key), no)
                value = line.split("=", 1)[1]
                quote = next((q for q in ('"""', "'''") if value.count(q) % 2), None)
                depth = 0 if quote else max(0, _brackets(value))

    def find(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of the nearest enclosing table that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


def _brackets(text: str) -> int:
    """Net open brackets on a line, strings and comments left out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'', "", text).split("#", 1)[0]
    return text.count("[") + text.count("{") - text.count("]") - text.count("}")


def syntax_error(exc: tomllib.TOMLDecodeError, source: str) -> str:
    """``FILE:LINE: not valid TOML: …`` for a tomllib error."""
    m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
    at = f"{source}:{m.group(1)}" if m else source
    return f"{at}: not valid TOML: {exc}"


# ------------------------------------------------------------------------------------ checks


def table(doc: dict[str, Any], path: KeyPath, key: str, *, required: bool) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        if required:
            raise TomlProblem((), f"[{dotted((*path, key))}]: missing section")
        return {}
    if not isinstance(value, dict):
        raise TomlProblem((*path, key), "must be a table")
    return value


def known(t: dict[str, Any], path: KeyPath, keys: set[str]) -> None:
    extra = sorted(set(t) - keys)
    if extra:
        key = extra[0]
        raise TomlProblem((*path, key), f"unknown key {key!r} (known: {', '.join(sorted(keys))})")


def tables(doc: dict[str, Any], path: KeyPath, key: str) -> list[dict[str, Any]]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise TomlProblem((*path, key), f"must be an array of tables ([[{dotted((*path, key))}]])")
    return value


def string(t: dict[str, Any], path: KeyPath, key: str, default: str | None = None,
           *, pattern: re.Pattern[str] | None = None, what: str = "valid") -> str:  # fmt: skip
    value = t.get(key, default)
    if value is None:
        raise TomlProblem((*path, key), "missing (required)")
    if not isinstance(value, str) or not value:
        raise TomlProblem((*path, key), f"must be a non-empty string, got {value!r}")
    if pattern is not None and not pattern.match(value):
        raise TomlProblem((*path, key), f"{value!r} is not {what}")
    return value


def number(t: dict[str, Any], path: KeyPath, key: str, default: float | None,
           *, lo: float, hi: float) -> float:  # fmt: skip
    value = t.get(key, default)
    if value is None:
        raise TomlProblem((*path, key), "missing (required)")
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not lo <= value <= hi:
        raise TomlProblem(
            (*path, key),
            f"must be a number from {number_text(lo)} to {number_text(hi)}, got {value!r}",
        )
    return float(value)


def boolean(t: dict[str, Any], path: KeyPath, key: str, default: bool) -> bool:
    value = t.get(key, default)
    if not isinstance(value, bool):
        raise TomlProblem((*path, key), f"must be true or false, got {value!r}")
    return value


def strings(t: dict[str, Any], path: KeyPath, key: str) -> tuple[str, ...]:
    value = t.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TomlProblem((*path, key), f"must be a list of strings, got {value!r}")
    if len(set(value)) != len(value):
        raise TomlProblem((*path, key), f"lists a name twice: {value!r}")
    return tuple(value)


def locate(text: str, source: str, problem: TomlProblem) -> str:
    """``FILE:LINE: key.path: problem`` (just ``FILE: …`` when the key has no line)."""
    line = Lines(text).find(problem.path)
    at = f"{source}:{line}" if line is not None else source
    return f"{at}: {problem}"
