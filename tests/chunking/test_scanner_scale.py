"""Every format scanner is linear in its input, on large adversarial inputs.

Each case builds an input of its format at a base size N (4 MB) and at 4N
(16 MB: tens or hundreds of thousands of records), shaped to hit the scanner's worst
case: many tiny records, records claiming huge lengths, a candidate boundary
every few bytes, long lines or none, deep nesting, a truncated tail.  It runs
the real chunking path (`chunks_of` with the scanner forced) and asserts:

- linear: time(4N) / time(N) < RATIO_MAX (ratios, not absolute times: the
  machine is shared and noisy).  The scanner is fed the whole input as one
  buffer there, so a search that restarts to the end of the buffer per record
  (the mbox bug: ~1 MB/s on a `git format-patch` mbox) is quadratic in N and
  fails the ratio instead of hiding inside fixed 4 MiB buffers;
- a throughput floor at 4N, relative to the plain chunker on the same bytes
  measured in the same run (FLOOR_FACTOR);
- the scanner was not switched off by the guard (its proposals were valid),
  and the chunks put together are the input.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
import struct
import time

import pytest

from vtstore.chunking import BlockifyStats, chunks_of
from vtstore.chunking.scanners.detect import SNIFF_BYTES, scanner_for

#: time(4N) / time(N) must stay under this: linear is 4, quadratic 16; linear
#: scanners measured 2.5-6.6 while seven jobs shared the 2-core machine
RATIO_MAX = 8.0
#: the scanned rate at 4N must be at least the plain chunker's rate / this: a
#: scanner does Python work per record, and the worst cases here have a record
#: every 7-16 bytes, where the chunker hashes at GB/s (measured: 1-324x, see
#: docs/PERFORMANCE.md); a per-record search to the end of the buffer is far
#: beyond it
FLOOR_FACTOR = 2000.0
#: base size of every case; each is also run at 4 * BASE
BASE = 4 << 20
#: runs of each size (the best counts), and more runs allowed while a bound fails
TRIES = 2
MORE_TRIES = 2
#: seconds under which a time is noise, not a finding
SLACK = 0.05

pytestmark = pytest.mark.slow


# -- adversarial builders: n is the target size in bytes --------------------------------


def _fill(n: int, piece: bytes, head: bytes = b"") -> bytes:
    reps = max(1, (n - len(head)) // len(piece))
    return head + piece * reps


def mbox_format_patch(n: int) -> bytes:
    """`git format-patch --stdout` of many small commits: LF, no CRLF anywhere."""
    rnd = random.Random(1)
    out = bytearray()
    k = 0
    while len(out) < n:
        k += 1
        h = hashlib.sha1(b"%d" % k).hexdigest()
        f = f"src/m{k % 97}.py"
        body = "".join(
            f" context line {j} of f{k} = {rnd.random():.6f}\n" for j in range(rnd.randrange(3, 12))
        )
        out += (
            f"From {h} Mon Sep 17 00:00:00 2001\n"
            f"From: A U Thor <author@example.com>\n"
            f"Date: Mon, {1 + k % 28} Jan 2024 12:{k % 60:02d}:00 +0000\n"
            f"Subject: [PATCH {k}] change {k}\n\n"
            f"Change {k}.\n---\n {f} | 2 +-\n 1 file changed\n\n"
            f"diff --git a/{f} b/{f}\nindex {h[:7]}..{h[7:14]} 100644\n--- a/{f}\n+++ b/{f}\n"
            f"@@ -{k},7 +{k},7 @@\n{body}-    return {k}\n+    return {k + 1}\n-- \n2.43.0\n\n"
        ).encode()
    return bytes(out)


def mbox_tiny_crlf(n: int) -> bytes:
    """A CRLF message every 14 bytes (no LF-only blank line anywhere)."""
    return _fill(n, b"From a\r\n\r\nb\r\n\r\n")


def mbox_from_lines(n: int) -> bytes:
    """One header, then a body that is nothing but unquoted "From " lines, no blank line."""
    return _fill(n, b"From x\n", b"From a\nSubject: s\n\n")


def mbox_no_blank_line(n: int) -> bytes:
    """A header that never ends: long lines, no blank line."""
    return _fill(n, b"X-Long: " + b"y" * 1000 + b"\n", b"From a\n")


def text_definitions(n: int) -> bytes:
    """A definition on every line (a proposal candidate every 9 bytes)."""
    return _fill(n, b"def f():\n")


def text_indent_runs(n: int) -> bytes:
    """Every line a long run of blanks that does not end in a keyword."""
    return _fill(n, b"\n" + b" \t" * 300 + b"x")


def text_one_line(n: int) -> bytes:
    """No line end at all."""
    return _fill(n, b"abcdefgh")


def gzip_empty_members(n: int) -> bytes:
    """Concatenated gzip members of nothing: a real member start every 20 bytes."""
    import gzip

    return _fill(n, gzip.compress(b"", mtime=0))


def gzip_false_magic(n: int) -> bytes:
    """The member magic every 4 bytes, never a valid member."""
    return _fill(n, b"\x1f\x8b\x08\x00", b"\x1f\x8b\x08\x00" + bytes(8))


def gzip_valid_headers(n: int) -> bytes:
    """A valid member header every 10 bytes, each followed by bad deflate data."""
    return _fill(n, b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03")


def gzip_stored_headers(n: int) -> bytes:
    """Member headers with a plausible stored block every 16 bytes (zlib must look)."""
    return _fill(n, b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x00\x01\x00\xfe\xff\x1f")


def _tar_header(name: bytes, size: int, typeflag: bytes = b"0") -> bytes:
    h = bytearray(512)
    h[0 : len(name)] = name
    h[100:108] = b"0000644\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % 0
    h[156:157] = typeflag
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def tar_empty_members(n: int) -> bytes:
    """Empty members only: a header every 512 bytes, plus pax headers."""
    pax = _tar_header(b"PaxHeader", 0, b"x")
    return _fill(n, pax + _tar_header(b"f", 0) + _tar_header(b"g", 0))


def tar_huge_claim(n: int) -> bytes:
    """Many empty members, then one claiming far more data than there is (truncated)."""
    return tar_empty_members(n - 1024) + _tar_header(b"big", 8**11 - 1) + b"x" * 512


def zip_empty_entries(n: int) -> bytes:
    """Stored empty entries with one-letter names: a local header every 31 bytes."""
    hdr = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, 1, 0) + b"a"
    return _fill(n, hdr)


def _frame_header() -> bytes:
    # MPEG2 layer III, 8 kbit/s, 24 kHz: the shortest frames there are (24 bytes)
    return bytes([0xFF, 0xF3, 0x14, 0x00])


def mp3_tiny_frames(n: int) -> bytes:
    """The shortest valid frames, back to back, after an ID3 tag."""
    from vtstore.chunking.scanners.mp3 import frame_length

    hdr = _frame_header()
    frame = hdr + bytes(frame_length(hdr) - 4)
    return _fill(n, frame, b"ID3\x04\x00\x00\x00\x00\x00\x10" + bytes(16))


def mp3_many_tags(n: int) -> bytes:
    """ID3v2 tags back to back, each with an empty body."""
    return _fill(n, b"ID3\x04\x00\x00\x00\x00\x00\x00")


def _box(typ: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), typ) + payload


def mp4_tiny_boxes(n: int) -> bytes:
    """Empty top-level boxes: a box every 8 bytes."""
    return _fill(n, _box(b"free"), _box(b"ftyp", b"isom\0\0\0\0"))


def mp4_nested(n: int) -> bytes:
    """moov boxes full of containers nested ten deep, each holding tiny boxes."""
    inner = _box(b"free") * 8
    for typ in (b"stbl", b"minf", b"mdia", b"trak", b"udta", b"dinf", b"edts", b"mvex", b"ilst"):
        inner = _box(typ, inner + _box(b"free"))
    moov = _box(b"moov", inner * 4)
    return _fill(n, moov, _box(b"ftyp", b"isom\0\0\0\0"))


def _full(typ: bytes, payload: bytes) -> bytes:
    return _box(typ, b"\0\0\0\0" + payload)


def mp4_huge_claims(n: int) -> bytes:
    """A moov whose tables claim 2**32-1 one-byte samples, then an mdat claiming 2**62 bytes
    (truncated): the scanner must not expand the claims, only what is there."""
    stbl = _box(
        b"stbl",
        _full(b"stsc", struct.pack(">IIII", 1, 1, 0xFFFFFFFF, 1))
        + _full(b"stsz", struct.pack(">II", 1, 0xFFFFFFFF))
        + _full(b"stco", struct.pack(">II", 1, 64)),
    )
    moov = _box(b"moov", _box(b"trak", _box(b"mdia", _box(b"minf", stbl))))
    head = _box(b"ftyp", b"isom\0\0\0\0") + moov
    mdat = struct.pack(">I4sQ", 1, b"mdat", 1 << 62)
    return head + mdat + bytes(max(0, n - len(head) - 16))


def vtd_tiny_records(n: int) -> bytes:
    """.vtd records of one payload byte: a record every 7 bytes."""
    return _fill(n, b"\x00\x01x" + bytes(4), b"VTD\x01")


CASES = {
    "mbox-format-patch": ("mbox", mbox_format_patch),
    "mbox-tiny-crlf": ("mbox", mbox_tiny_crlf),
    "mbox-from-lines": ("mbox", mbox_from_lines),
    "mbox-no-blank-line": ("mbox", mbox_no_blank_line),
    "email-no-blank-line": ("email", mbox_no_blank_line),
    "text-definitions": ("text", text_definitions),
    "text-indent-runs": ("text", text_indent_runs),
    "text-one-line": ("text", text_one_line),
    "gzip-empty-members": ("gzip", gzip_empty_members),
    "gzip-false-magic": ("gzip", gzip_false_magic),
    "gzip-valid-headers": ("gzip", gzip_valid_headers),
    "gzip-stored-headers": ("gzip", gzip_stored_headers),
    "tar-empty-members": ("tar", tar_empty_members),
    "tar-huge-claim": ("tar", tar_huge_claim),
    "zip-empty-entries": ("zip", zip_empty_entries),
    "mp3-tiny-frames": ("mp3", mp3_tiny_frames),
    "mp3-many-tags": ("mp3", mp3_many_tags),
    "mp4-tiny-boxes": ("mp4", mp4_tiny_boxes),
    "mp4-nested": ("mp4", mp4_nested),
    "mp4-huge-claims": ("mp4", mp4_huge_claims),
    "vtd-tiny-records": ("vtd", vtd_tiny_records),
}


def _run(data: bytes, scanner, buffer_size: int | None = None) -> tuple[float, BlockifyStats]:
    """Seconds to cut `data` with `scanner` (None: hash cuts only), and the stats."""
    stats = BlockifyStats()
    kw = {"buffer_size": buffer_size} if buffer_size else {}
    t0 = time.perf_counter()
    total = 0
    for c in chunks_of(data, scanner=scanner, stats=stats, **kw):
        total += len(c)
    dt = time.perf_counter() - t0
    assert total == len(data)
    return dt, stats


@pytest.mark.parametrize("case", sorted(CASES))
def test_scanner_is_linear(case):
    """time(4N) / time(N) < RATIO_MAX with the whole input in one buffer; a floor at 4N."""
    scanner, build = CASES[case]
    small, large = build(BASE), build(4 * BASE)
    # interleaved, best of TRIES each (and up to MORE_TRIES when the bounds are not
    # met yet): other work on the machine slows single runs
    t_small = t_large = t_plain = float("inf")
    for k in range(TRIES + MORE_TRIES):
        if k >= TRIES and t_large < RATIO_MAX * t_small + SLACK:
            if t_large < FLOOR_FACTOR * t_plain + SLACK:
                break
        t, _ = _run(small, scanner, buffer_size=len(small))
        t_small = min(t_small, t)
        t, stats = _run(large, scanner, buffer_size=len(large))
        t_large = min(t_large, t)
        assert stats.scanner == scanner
        assert stats.scanner_failed is None, stats.scanner_failed
        t, _ = _run(large, None, buffer_size=len(large))
        t_plain = min(t_plain, t)
    # below SLACK seconds at 4N a scanner is fast whatever the ratio says
    assert t_large < RATIO_MAX * t_small + SLACK, (
        f"{case}: {t_small:.3f} s at {len(small)} bytes, {t_large:.3f} s at {len(large)}"
    )
    assert t_large < FLOOR_FACTOR * t_plain + SLACK, (
        f"{case}: {len(large) / t_large / 1e6:.1f} MB/s scanned,"
        f" {len(large) / t_plain / 1e6:.1f} MB/s plain"
    )


def test_detection_is_bounded():
    """scanner_for looks at SNIFF_BYTES of the head and at the name only: a huge head or
    name (4 MB, 16 MB) costs no more than a small one, and a hostile name is linear."""
    head = mp3_tiny_frames(1 << 20)
    t0 = time.perf_counter()
    for _ in range(200):
        scanner_for(head=head[:SNIFF_BYTES])
    t_small = time.perf_counter() - t0
    big = head * 16
    t0 = time.perf_counter()
    for _ in range(200):
        scanner_for(head=big)
    t_big = time.perf_counter() - t0
    assert t_big < 4 * t_small + 0.05
    # names: the rsync temporary-name pattern backtracks over the name once
    for n in (1 << 20, 4 << 20):
        for name in ("." + "a." * (n // 2) + "Ab12C!", "x" * n + ".mp4", "." * n):
            t0 = time.perf_counter()
            scanner_for(name=name, mime_type=name[:100000])
            assert time.perf_counter() - t0 < 1.0 + n / 4e6, (len(name), name[:20])


def test_real_git_format_patch_mbox(tmp_path, formats):
    """A real `git format-patch` mbox (LF, ~6,000 messages): every message start is
    proposed, and its second half costs what its first half does."""
    import shutil

    if not shutil.which("git"):
        pytest.skip("no git")
    data = formats.git_format_patch(tmp_path, 6000)
    starts = [m.start() for m in re.finditer(rb"(?m)^From [0-9a-f]{40} Mon Sep 17 ", data)]
    assert len(starts) == 6000 and b"\r\n" not in data
    stats = BlockifyStats()
    chunks = list(chunks_of(data, scanner="mbox", stats=stats))
    assert stats.scanner_failed is None
    from vtstore.chunking.scanners.mail import MboxScanner

    sc = MboxScanner()
    props = set(sc.feed(data) + sc.finish())
    assert set(starts[1:]) <= props
    ends = set(itertools.accumulate(map(len, chunks)))
    # messages of ~1.3 KB are merged into blocks of at least the minimum (2 KiB),
    # most of them ending at a message start or a body start
    assert min(map(len, chunks[:-1])) >= 2048
    assert len(ends & props) > 0.7 * len(chunks)
    assert len(ends & set(starts)) > 0.3 * len(chunks)
    half = data[: len(data) // 4]
    t_quarter = min(_run(half, "mbox", len(half))[0] for _ in range(TRIES))
    t_whole = min(_run(data, "mbox", len(data))[0] for _ in range(TRIES))
    assert t_whole < RATIO_MAX * t_quarter + SLACK


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_format_cut_below_min(case):
    """However dense the records, no block but the last is below the minimum, and
    the cuts do not depend on the buffer size."""
    scanner, build = CASES[case]
    data = build(1 << 20)
    first = None
    for bs in (None, 64 << 10):
        stats = BlockifyStats()
        kw = {"buffer_size": bs} if bs else {}
        sizes = [len(c) for c in chunks_of(data, scanner=scanner, stats=stats, **kw)]
        assert stats.scanner_failed is None and sum(sizes) == len(data)
        assert min(sizes[:-1], default=2048) >= 2048, (case, bs, sorted(sizes)[:5])
        assert first is None or sizes == first, case
        first = sizes
