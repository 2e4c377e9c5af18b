"""The HTML report in a real headless Chromium: it renders offline and shows the timeline."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from relay.drill.page import STATE_COLOURS
from relay.drill.report import Verdict, write_report
from tests.drill.test_report import synthetic

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip
WIDTH, HEIGHT = 1280, 2000


def browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no chromium on this machine: deploy/dev-setup.sh installs it (apt chromium)")
    return found


def run_browser(exe: str, tmp: Path, *args: str) -> str:
    profile = tmp / "profile"
    profile.mkdir(exist_ok=True)
    done = subprocess.run(
        [exe, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return done.stdout.decode(errors="replace")


def png_pixels(data: bytes) -> tuple[int, int, set[bytes]]:
    """Width, height and the distinct pixel values of an 8-bit RGB(A) PNG (no interlace)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    i, idat, w, h, bpp = 8, [], 0, 0, 0
    while i < len(data):
        (n,) = struct.unpack(">I", data[i : i + 4])
        kind, body = data[i + 4 : i + 8], data[i + 8 : i + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        i += 12 + n
    raw, stride = zlib.decompress(b"".join(idat)), w * bpp
    prev, pixels = bytearray(stride), set[bytes]()
    for y in range(h):
        row = y * (stride + 1)
        filt, cur = raw[row], bytearray(raw[row + 1 : row + 1 + stride])
        if filt == 1:  # Sub
            for x in range(bpp, stride):
                cur[x] = (cur[x] + cur[x - bpp]) & 255
        elif filt == 2:  # Up
            cur = bytearray((a + b) & 255 for a, b in zip(cur, prev, strict=True))
        elif filt in (3, 4):  # Average, Paeth
            for x in range(stride):
                a = cur[x - bpp] if x >= bpp else 0
                b, c = prev[x], (prev[x - bpp] if x >= bpp else 0)
                if filt == 3:
                    pred = (a + b) >> 1
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[x] = (cur[x] + pred) & 255
        pixels.update(bytes(cur[x : x + 3]) for x in range(0, stride, bpp))
        prev = cur
    return w, h, pixels


def test_report_renders_in_headless_chromium_with_the_timeline(tmp_path: Path) -> None:
    """Test that Chromium renders the report offline with timeline lanes in the link colours."""
    exe = browser()
    _, page = write_report(tmp_path / "report", title="Drill broker-loss", events=synthetic(),
                           verdicts=[Verdict("all delivered", False, "n3 lacks bb")],
                           meta={"scenario": "broker-loss"})  # fmt: skip
    url = page.resolve().as_uri()
    dom = run_browser(exe, tmp_path, "--dump-dom", url)
    assert 'id="timeline"' in dom and 'id="timeline-svg"' in dom
    assert dom.count('class="seg seg-up"') == 6 and dom.count('class="seg seg-down"') == 1
    assert dom.count('class="delivery"') == 5  # one dot per delivery, a duplicate once
    shot = tmp_path / "shot.png"
    run_browser(exe, tmp_path, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", url)
    data = shot.read_bytes()
    assert len(data) > 20_000, f"screenshot is only {len(data)} bytes"
    w, h, pixels = png_pixels(data)
    assert (w, h) == (WIDTH, HEIGHT)
    assert len(pixels) > 50, f"only {len(pixels)} distinct colours: a blank page?"
    for state in ("up", "down"):
        rgb = bytes.fromhex(STATE_COLOURS[state].removeprefix("#"))
        assert rgb in pixels, f"no pixel in the colour of a link {state} segment"
