"""The native tar walk (`_cdc.tar_scan` behind `TarScanner`) proposes exactly
what the Python parser (`TarScannerReference`) does: on real archives made by
`tarfile` in every format, fed in buffers of any size, and on headers whose
numeric fields hold what `int(text, 8)` parses in its own ways (signs, "0o",
underscores, tabs, base-256, numbers too large for 64 bits), with checksums
made valid so that the walk goes on past them."""

from __future__ import annotations

import io
import random
import tarfile
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vtstore.chunking._cdc import tar_scan

from vtstore.chunking.scanners.tar import BLOCK, TarScanner, TarScannerReference


def _run(cls, data: bytes, sizes: list[int]) -> list:
    """Per feed: the proposals, or "raise" (and the end) when the feed raised."""
    sc = cls()
    mv = memoryview(data)
    out: list = []
    i = k = 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        k += 1
        try:
            out.append(sc.feed(mv[i : i + n]))
        except ValueError:
            out.append("raise")
            return out
        i += n
    out.append(sc.finish())
    return out


def _same(data: bytes, sizes: list[int]) -> list:
    native = _run(TarScanner, data, sizes)
    ref = _run(TarScannerReference, data, sizes)
    assert native == ref
    return native


def _tar(fmt: int, n_files: int, seed: int, big: int = 70000) -> bytes:
    rng = random.Random(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for i in range(n_files):
            long = rng.randrange(0, 15 if fmt != tarfile.USTAR_FORMAT else 8)
            name = f"dir{i % 7}/" + "long-name-" * long + f"f{i}"
            size = rng.choice((0, 1, 100, 511, 512, 513, 4095, 4096, 5000, big))
            info = tarfile.TarInfo(name)
            info.size = size
            info.mtime = 1_700_000_000 + i
            if fmt == tarfile.PAX_FORMAT and i % 5 == 0:
                info.pax_headers = {"comment": "x" * rng.randrange(1, 3000)}
            if i % 11 == 3:
                info.type = tarfile.SYMTYPE
                info.linkname = "target" * rng.randrange(
                    1, 30 if fmt != tarfile.USTAR_FORMAT else 16
                )
                info.size = 0
                tf.addfile(info)
                continue
            tf.addfile(info, io.BytesIO(rng.randbytes(size)))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_real_archives_any_buffer_sizes(fmt):
    data = _tar(fmt, 200, fmt, big=9000)
    whole = _same(data, [len(data)])
    flat = [p for feed in whole for p in feed]
    assert len(flat) > 200  # member starts, data starts, the end marker
    for sizes in ([1], [511], [512], [513], [4096], [1000, 7, 512, 3]):
        got = _same(data, sizes)
        assert [p for feed in got for p in feed] == flat


def _with_field(hdr: bytearray, off: int, width: int, value: bytes) -> None:
    hdr[off : off + width] = value[:width].ljust(width, b"\0")


def _fix_checksum(hdr: bytearray, style: str) -> None:
    hdr[148:156] = b" " * 8
    s = sum(hdr)
    text = {
        "octal": b"%06o\0 " % s,
        "tab": b"\t%o\0" % s,
        "plus": b"+%o" % s,
        "prefix": b"0o%o" % s,
        "under": f"{s:o}".replace("", "_")[1:-1].encode()[:8],
    }[style]
    _with_field(hdr, 148, 8, text)


_SIZES = st.one_of(
    st.integers(0, 99999).map(lambda v: b"%011o" % v),
    st.sampled_from(
        [
            b"-1",
            b"-600",
            b"-1000000",
            b"+17",
            b"0o17",
            b"0O7_7",
            b"1_0",
            b"1__0",
            b"_1",
            b" \t12\n",
            b"\t",
            b"8",
            b"12 34",
            b"77777777777",
            b"\x80" + b"\x00" * 10 + b"\x10",
            b"\xff" * 12,
            b"\x80\x7f" + b"\xff" * 10,
            b"",
            b"\x001",
        ]
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 40),
            _SIZES,
            st.sampled_from(["octal", "tab", "plus", "prefix", "under"]),
            st.sampled_from(b"0125xgLKXS\0"),
        ),
        max_size=6,
    ),
    st.lists(st.integers(100, 5000), min_size=1, max_size=4),
)
def test_odd_fields_agree(edits, sizes):
    data = bytearray(_tar(tarfile.GNU_FORMAT, 40, 1, big=9000))
    # the header offsets of the archive, from the reference walk
    starts = [0]
    pos = 0
    while pos + BLOCK <= len(data) and any(data[pos : pos + BLOCK]):
        size = int(data[pos + 124 : pos + 136].split(b"\0")[0].strip() or b"0", 8)
        pos += BLOCK + -(-size // BLOCK) * BLOCK
        starts.append(pos)
    for which, size, style, typeflag in edits:
        at = starts[which % len(starts)]
        if at + BLOCK > len(data):
            continue
        hdr = bytearray(data[at : at + BLOCK])
        _with_field(hdr, 124, 12, size)
        hdr[156] = typeflag
        _fix_checksum(hdr, style)
        data[at : at + BLOCK] = hdr
    _same(bytes(data), sizes)


def test_arguments_checked():
    with pytest.raises(ValueError):
        tar_scan(b"\0" * 512, 600, 0, 0, -1)
    with pytest.raises(ValueError):
        tar_scan(b"\0" * 512, 0, 0, -1, -1)
    assert tar_scan(b"", 0, 0, 0, -1) == ([], 0, 0, 0, -1, False)


def test_large_archive_is_fast():
    """A tar of 20,000 members (the size of a real sdist's): the native walk
    costs a few ms (the Python parser ~50x that)."""
    data = _tar(tarfile.USTAR_FORMAT, 20000, 7)
    sc = TarScanner()
    t = time.thread_time()
    out = []
    for i in range(0, len(data), 4 << 20):
        out += sc.feed(data[i : i + (4 << 20)])
    took = time.thread_time() - t
    assert len(out) > 20000
    assert took < 0.25, took
