"""ISO BMFF (MP4, MOV, M4A, 3GP, HEIF): box boundaries and mdat samples.

Proposes the start of every top-level box and of every box inside the
container boxes (moov, trak, mdia, minf, stbl, udta, meta, ilst, ...), so that
an edit to one box (a metadata tag, the chunk offset table) leaves its
siblings' blocks intact.  When the moov box comes before mdat (a "faststart"
file) its sample tables (stsz/stz2 + stsc + stco/co64) give every sample's
offset, and mdat is also cut at sample starts, at most one per `avg_size`
bytes, so the media data is cut at the same samples whatever precedes it.
"""

from __future__ import annotations

import bisect
import struct
from array import array

from vtstore.chunking.scanners.base import MAX_READ, ParserScanner

__all__ = ["MP4Scanner"]

#: boxes whose payload is a sequence of boxes
CONTAINERS = frozenset(
    b"moov trak mdia minf stbl udta edts dinf mvex moof traf mfra meta ilst sinf schi"
    b" tref iprp ipco".split()
)
#: the largest moov read into memory to find the sample tables
MOOV_MAX = min(MAX_READ, 64 << 20)
_MAX_DEPTH = 10


def _box_header(buf: bytes, i: int, end: int):
    """(size, type, header length) of the box at buf[i:], or None if invalid."""
    if i + 8 > end:
        return None
    size, typ = struct.unpack_from(">I4s", buf, i)
    hlen = 8
    if size == 1:
        if i + 16 > end:
            return None
        (size,) = struct.unpack_from(">Q", buf, i + 8)
        hlen = 16
    elif size == 0:
        size = end - i
    if size < hlen or i + size > end or not _plausible_type(typ):
        return None
    return size, typ, hlen


def _plausible_type(typ: bytes) -> bool:
    # box types are four printable characters (0xA9 starts iTunes tags: "\xa9nam")
    return all(32 <= c < 127 or c == 0xA9 for c in typ)


def _is_fullbox_meta(buf: bytes, i: int) -> bool:
    # ISO meta is a FullBox (4 bytes version+flags, zero); QuickTime meta is not
    return buf[i : i + 4] == b"\0\0\0\0"


class _SampleTables:
    """Sample offsets gathered from one moov, for every track."""

    def __init__(self):
        self.offsets = array("q")

    def add_track(self, stbl: dict) -> None:
        chunk_offsets = stbl.get("co")
        sizes = stbl.get("sizes")
        stsc = stbl.get("stsc")
        if chunk_offsets is None or sizes is None or not stsc:
            return
        if isinstance(sizes, tuple):
            const, n_samples = sizes
        else:
            const, n_samples = None, len(sizes)
        offsets = self.offsets
        sample = 0
        run = 0  # index of the stsc run that covers chunk ci
        for ci, off in enumerate(chunk_offsets, start=1):
            while run + 1 < len(stsc) and stsc[run + 1][0] <= ci:
                run += 1
            for _ in range(stsc[run][1]):
                if sample >= n_samples:
                    return
                offsets.append(off)
                off += const if const is not None else sizes[sample]
                sample += 1


def _parse_stbl_child(typ: bytes, buf: bytes, i: int, end: int, stbl: dict) -> None:
    p = i
    try:
        if typ == b"stco" or typ == b"co64":
            (count,) = struct.unpack_from(">I", buf, p + 4)
            w = 4 if typ == b"stco" else 8
            if p + 8 + count * w > end:
                return
            a = array("I" if w == 4 else "Q")
            a.frombytes(buf[p + 8 : p + 8 + count * w])
            if a.itemsize != w:
                return
            a.byteswap()
            stbl["co"] = a
        elif typ == b"stsz":
            size, count = struct.unpack_from(">II", buf, p + 4)
            if size:
                stbl["sizes"] = (size, count)
            else:
                if p + 12 + 4 * count > end:
                    return
                a = array("I")
                a.frombytes(buf[p + 12 : p + 12 + 4 * count])
                a.byteswap()
                stbl["sizes"] = a
        elif typ == b"stz2":
            (field,) = struct.unpack_from(">B", buf, p + 7)
            (count,) = struct.unpack_from(">I", buf, p + 8)
            raw = buf[p + 12 : end]
            if field == 8:
                a = array("I", raw[:count])
            elif field == 16:
                h = array("H")
                h.frombytes(raw[: 2 * count])
                h.byteswap()
                a = array("I", h)
            elif field == 4:
                a = array("I")
                for b in raw[: (count + 1) // 2]:
                    a.append(b >> 4)
                    a.append(b & 15)
                del a[count:]
            else:
                return
            if len(a) == count:
                stbl["sizes"] = a
        elif typ == b"stsc":
            (count,) = struct.unpack_from(">I", buf, p + 4)
            if p + 8 + 12 * count > end:
                return
            stbl["stsc"] = [struct.unpack_from(">II", buf, p + 8 + 12 * k) for k in range(count)]
    except struct.error:
        return


class MP4Scanner(ParserScanner):
    """Box boundaries of ISO BMFF files, and sample starts in mdat."""

    name = "mp4"

    def parse(self):
        samples: array | None = None
        while True:
            start = self.pos
            hdr = yield self.read(8)
            if len(hdr) < 8:
                return
            size, typ = struct.unpack(">I4s", hdr)
            hlen = 8
            if size == 1:
                ext = yield self.read(8)
                if len(ext) < 8:
                    return
                (size,) = struct.unpack(">Q", ext)
                hlen = 16
            if not _plausible_type(typ) or (size and size < hlen):
                return  # not (or no longer) a box stream
            self.propose(start)
            if size == 0:  # the box runs to the end of the file
                if typ == b"mdat":
                    self.propose(start + hlen)
                return
            if typ == b"moov" and size - hlen <= MOOV_MAX:
                payload = yield self.read(size - hlen)
                if len(payload) < size - hlen:
                    return
                tables = _SampleTables()
                self._walk(payload, 0, len(payload), start + hlen, 1, tables, None)
                if tables.offsets:
                    samples = array("q", sorted(set(tables.offsets)))
            elif typ in CONTAINERS:
                # other top-level containers (moof, mfra, meta): read and walk them too
                if size - hlen <= MOOV_MAX:
                    payload = yield self.read(size - hlen)
                    if len(payload) < size - hlen:
                        return
                    self._walk(payload, 0, len(payload), start + hlen, 1, None, typ)
                else:
                    yield self.skip(size - hlen)
            elif typ == b"mdat":
                data_start = start + hlen
                self.propose(data_start)
                if samples is not None:
                    self._propose_samples(samples, data_start, start + size)
                yield self.skip(size - hlen)
            else:
                yield self.skip(size - hlen)

    def _propose_samples(self, samples: array, lo: int, hi: int) -> None:
        """Propose sample starts in (lo, hi), at most one per avg_size bytes."""
        spacing = self.params.avg_size
        last = lo
        first = bisect.bisect_right(samples, lo)
        for k in range(first, len(samples)):
            off = samples[k]
            if off >= hi:
                break
            if off - last >= spacing:
                self.propose(off)
                last = off

    def _walk(self, buf, i, end, base, depth, tables, parent) -> None:
        """Propose the boxes in buf[i:end] (buf[0] is at absolute `base`)."""
        stbl: dict | None = {} if parent == b"stbl" else None
        while i + 8 <= end:
            hdr = _box_header(buf, i, end)
            if hdr is None:
                return
            size, typ, hlen = hdr
            self.propose(base + i)
            body = i + hlen
            if stbl is not None and tables is not None:
                _parse_stbl_child(typ, buf, body, i + size, stbl)
            if typ in CONTAINERS and depth < _MAX_DEPTH:
                if typ == b"meta" and _is_fullbox_meta(buf, body):
                    body += 4
                self._walk(buf, body, i + size, base, depth + 1, tables, typ)
            i += size
        if stbl is not None and tables is not None:
            tables.add_track(stbl)
