"""Generate the worked example in docs/wire-format.md from the code, so the doc cannot drift.

``python bench/wire_example.py`` prints the generated section; ``--write`` replaces it in
docs/wire-format.md between the BEGIN/END markers. tests/test_wire_doc.py checks that the doc holds
exactly what this script generates.

The example is a real decision sealed with RFC 8032's first Ed25519 test key (section 7.1,
TEST 1); Ed25519 is deterministic, so the bytes are the same on every run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from relay import compress
from relay.envelope import (
    PAYLOAD_V2,
    Audience,
    Decision,
    Kind,
    Precedence,
    encode_payload,
    seal,
)
from relay.text import model as textmodel

RFC8032_TEST1_SECRET = bytes.fromhex(
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
)
DOC = Path(__file__).resolve().parent.parent / "docs" / "wire-format.md"
BEGIN = "<!-- BEGIN GENERATED EXAMPLE: python bench/wire_example.py --write -->"
END = "<!-- END GENERATED EXAMPLE -->"
BEGIN_V2 = "<!-- BEGIN GENERATED EXAMPLE V2: python bench/wire_example.py --write -->"
END_V2 = "<!-- END GENERATED EXAMPLE V2 -->"
HEX_COLUMN = 52  # where the annotations start


def example_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(RFC8032_TEST1_SECRET)


def example_decision() -> Decision:
    return Decision(
        issued_at=1_800_000_000,
        expires_at=1_800_000_000 + 2 * 3600,
        precedence=Precedence.IMMEDIATE,
        audience=Audience.parse("region:VR07"),
        seq=42,
        text=(
            "Besluit ROT: evacuatie van de wijk Transwijk. Opvang in Jaarbeurs hal 9. Start 16:30."
        ),
    )


# ---------------------------------------------------------------------------------------------
# CBOR diagnostic notation (RFC 8949 section 8) for the values that occur here


def diag(value: object) -> str:
    match value:
        case bool():
            return "true" if value else "false"
        case None:
            return "null"
        case int():
            return str(value)
        case bytes():
            return f"h'{value.hex()}'"
        case str():
            return json.dumps(value, ensure_ascii=False)
        case cbor2.CBORTag():
            return f"{value.tag}({diag(value.value)})"
        case list() | tuple():
            return "[" + ", ".join(diag(v) for v in value) + "]"
        case Mapping():
            return "{" + ", ".join(f"{diag(k)}: {diag(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no diagnostic notation for {type(value).__name__}")


# ---------------------------------------------------------------------------------------------
# Annotated hex: walk the bytes item by item, naming each one


def _utc(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


PROTECTED_LABELS: dict[int, tuple[str, Callable[[object], str]]] = {
    1: ("alg", lambda v: "Ed25519 (RFC 9864)" if v == -19 else str(v)),
    4: ("kid", lambda v: "key id: SHA-256(public key)[0:4]"),
}
PAYLOAD_LABELS: dict[int, tuple[str, Callable[[object], str]]] = {
    0: ("version", lambda v: f"version {v}"),
    1: ("issued-at", lambda v: _utc(v) if isinstance(v, int) else ""),
    2: ("lifetime-min", lambda v: f"{v} minutes"),
    3: ("precedence", lambda v: Precedence(v).name if isinstance(v, int) else ""),
    4: ("exercise", lambda v: "exercise message"),
    5: ("audience", lambda v: "regions, then @nodes"),
    6: ("kind", lambda v: Kind(v).name if isinstance(v, int) else ""),
    7: ("seq", lambda v: "issuer sequence number"),
    8: ("refs", lambda v: "referenced message ids"),
    9: ("text", lambda v: "plain UTF-8 text"),
    10: ("text-deflated", lambda v: "raw deflate, dictionary v1"),
    11: ("data", lambda v: "kind-specific data"),
}


class Annotator:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.lines: list[str] = []

    def emit(self, depth: int, chunk: bytes, comment: str) -> None:
        hexes = " ".join(f"{b:02x}" for b in chunk)
        left = "   " * depth + hexes
        self.lines.append(f"{left:<{HEX_COLUMN}}# {comment}" if comment else left.rstrip())

    def emit_bytes(self, depth: int, content: bytes, comment: str) -> None:
        for i in range(0, len(content), 16):
            self.emit(depth, content[i : i + 16], comment if i == 0 else "")

    def head(self) -> tuple[int, int, bytes]:
        start = self.pos
        ib = self.data[self.pos]
        major, ai = ib >> 5, ib & 31
        self.pos += 1
        arg = ai
        if ai >= 24:
            n = 1 << (ai - 24)
            arg = int.from_bytes(self.data[self.pos : self.pos + n], "big")
            self.pos += n
        return major, arg, self.data[start : self.pos]

    def item(self, depth: int, label: str = "", kind: str = "") -> object:
        """Annotate one item; ``kind`` selects the structure expected inside it."""
        major, arg, head = self.head()
        note = f": {label}" if label else ""
        if major == 0:
            self.emit(depth, head, f"unsigned({arg}){note}")
            return arg
        if major == 1:
            self.emit(depth, head, f"negative({-1 - arg}){note}")
            return -1 - arg
        if major == 2:
            content = self.data[self.pos : self.pos + arg]
            self.emit(depth, head, f"bytes({arg}){note}")
            if kind in ("protected", "payload"):
                inner = Annotator(content)
                inner.map(depth + 1, PROTECTED_LABELS if kind == "protected" else PAYLOAD_LABELS)
                self.lines += inner.lines
            else:
                self.emit_bytes(depth + 1, content, "")
            self.pos += arg
            return content
        if major == 3:
            text = self.data[self.pos : self.pos + arg].decode()
            self.emit(depth, head, f"text({arg}){note}")
            self.emit_bytes(depth + 1, self.data[self.pos : self.pos + arg], diag(text))
            self.pos += arg
            return text
        if major == 4:
            self.emit(depth, head, f"array({arg}){note}")
            return [self.item(depth + 1) for _ in range(arg)]
        if major == 5:
            self.pos -= len(head)
            return self.map(depth, {}, label)
        if major == 6:
            self.emit(depth, head, f"tag({arg}){note}")
            if arg == 18:
                return self.sign1(depth + 1)
            return self.item(depth + 1)
        if major == 7 and arg in (20, 21, 22):
            self.emit(depth, head, {20: "false", 21: "true", 22: "null"}[arg] + note)
            return {20: False, 21: True, 22: None}[arg]
        raise ValueError(f"unexpected CBOR head {head.hex()}")

    def map(
        self,
        depth: int,
        labels: Mapping[int, tuple[str, Callable[[object], str]]],
        label: str = "",
    ) -> dict[object, object]:
        major, arg, head = self.head()
        assert major == 5
        self.emit(depth, head, f"map({arg})" + (f": {label}" if label else ""))
        out: dict[object, object] = {}
        for _ in range(arg):
            start = self.pos
            key = cbor2.loads(self.data[start:])
            name, explain = labels.get(key, ("", None)) if isinstance(key, int) else ("", None)
            self.item(depth + 1, name)
            value_start = self.pos
            value = cbor2.loads(self.data[value_start:])
            meaning = explain(value) if explain else ""
            self.item(depth + 1, meaning)
            out[key] = value
        return out

    def sign1(self, depth: int) -> object:
        _, arg, head = self.head()
        self.emit(depth, head, f"array({arg})")
        return [
            self.item(depth + 1, "protected header, a CBOR map", "protected"),
            self.map(depth + 1, {}, "unprotected header (empty)"),
            self.item(depth + 1, "payload, a CBOR map", "payload"),
            self.item(depth + 1, "Ed25519 signature over Sig_structure"),
        ]


def annotate(raw: bytes) -> list[str]:
    a = Annotator(raw)
    a.item(0, "COSE_Sign1_Tagged")
    assert a.pos == len(raw)
    return a.lines


# ---------------------------------------------------------------------------------------------


def wrap_hex(data: bytes, width: int = 32) -> str:
    return "\n".join(data[i : i + width].hex() for i in range(0, len(data), width))


def generate() -> str:
    key = example_key()
    d = example_decision()
    raw = seal(d, key)
    payload = encode_payload(d)
    sign1 = cbor2.loads(raw)
    protected = cbor2.loads(sign1.value[0])
    payload_map = cbor2.loads(payload)
    public = key.public_key().public_bytes_raw()
    text_field = payload_map.get(10, b"")
    sig_structure = cbor2.dumps(["Signature1", sign1.value[0], b"", payload])
    out = [
        "Signer: RFC 8032 section 7.1 TEST 1 key,",
        f"secret `{RFC8032_TEST1_SECRET.hex()}`,",
        f"public `{public.hex()}`,",
        f"key id `{hashlib.sha256(public).digest()[:4].hex()}`.",
        "",
        "The decision:",
        "",
        "```python",
        "Decision(",
        f"    issued_at={d.issued_at},  # {_utc(d.issued_at)}",
        f"    expires_at={d.expires_at},  # {_utc(d.expires_at)}",
        f"    precedence=Precedence.{d.precedence.name},",
        f"    audience=Audience.parse({json.dumps(str(d.audience))}),",
        f"    seq={d.seq},",
        f"    text={json.dumps(d.text, ensure_ascii=False)},",
        ")",
        "```",
        "",
        f"Text: {len(d.text.encode())} B of UTF-8, "
        f"{len(text_field)} B deflated with dictionary v1.",
        f"Payload: {len(payload)} B. Signed message: {len(raw)} B "
        f"(envelope overhead {len(raw) - len(payload)} B).",
        "",
        "Diagnostic notation (RFC 8949 section 8):",
        "",
        "```",
        f"18([h'{sign1.value[0].hex()}', {{}}, h'{payload.hex()}', h'{sign1.value[3].hex()}'])",
        "",
        f"protected = {diag(protected)}",
        f"payload   = {diag(payload_map)}",
        "```",
        "",
        "The signed message, byte by byte:",
        "",
        "```",
        *annotate(raw),
        "```",
        "",
        f"Sig_structure, the {len(sig_structure)} bytes the signature covers "
        "(`[\"Signature1\", protected, h'', payload]`):",
        "",
        "```",
        wrap_hex(sig_structure),
        "```",
        "",
        "The whole message in hex (what travels):",
        "",
        "```",
        wrap_hex(raw),
        "```",
        "",
        f"Message id (SHA-256 of those bytes): `{hashlib.sha256(raw).hexdigest()}`",
        f"(short id `{hashlib.sha256(raw).hexdigest()[:16]}`).",
        "",
        f"Inflating the text field with dictionary v1 gives back "
        f"{compress.decompress(text_field, max_len=2048).decode()!r}.",
    ]
    return "\n".join(out)


def generate_v2() -> str:
    """The same decision in payload version 2 (section 2a)."""
    key = example_key()
    d = example_decision()
    raw = seal(d, key, version=PAYLOAD_V2)
    payload = encode_payload(d, version=PAYLOAD_V2)
    items = cbor2.loads(payload)
    stamp, life = items[0], items[1]
    one = seal(d, key)
    out = [
        "The decision above, sealed with `version=2` by the same key:",
        "",
        "```",
        f"payload = {diag(items)}",
        "```",
        "",
        f"- stamp {stamp} = minute {stamp >> 6} after 2026-01-01T00:00Z "
        f"({_utc(d.issued_at)}) << 6 | flags {stamp & 0x3F} "
        f"(precedence {d.precedence.name} = {stamp & 3}, exercise {bool(stamp & 4)}, "
        f"kind {Kind((stamp & 0x3F) >> 3).name})",
        f"- lifetime {life}: {-life} hours",
        f"- text: {len(d.text.encode())} B of UTF-8, {len(items[4])} B model-coded "
        f"(dictionary v1 deflate: {len(compress.compress(d.text.encode()))} B)",
        f"- payload {len(payload)} B, signed message {len(raw)} B "
        f"(version 1: {len(encode_payload(d))} B and {len(one)} B)",
        "",
        "The whole message in hex:",
        "",
        "```",
        wrap_hex(raw),
        "```",
        "",
        f"Message id: `{hashlib.sha256(raw).hexdigest()}`.",
        "",
        f"Decoding the text field with the model gives back "
        f"{textmodel.decode(items[4], max_len=2048)!r}.",
    ]
    return "\n".join(out)


def section_of(doc: str, begin: str = BEGIN, end: str = END) -> str:
    """The generated text currently in the doc, between the markers."""
    start = doc.index(begin) + len(begin)
    return doc[start : doc.index(end)].strip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the wire-format worked example.")
    parser.add_argument("--write", action="store_true", help=f"update {DOC.name} in place")
    args = parser.parse_args(argv)
    sections = ((BEGIN, END, generate()), (BEGIN_V2, END_V2, generate_v2()))
    if not args.write:
        print("\n\n".join(text for _, _, text in sections))
        return 0
    doc = DOC.read_text(encoding="utf-8")
    for begin, end, text in sections:
        before, after = doc[: doc.index(begin) + len(begin)], doc[doc.index(end) :]
        doc = f"{before}\n{text}\n{after}"
    DOC.write_text(doc, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
