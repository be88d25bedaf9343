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

from vtstore.chunking.scanners.base import LOOKAHEAD, MAX_READ, ParserScanner

__all__ = ["MP4Scanner"]

#: boxes whose payload is a sequence of boxes
CONTAINERS = frozenset(
    b"moov trak mdia minf stbl udta edts dinf mvex moof traf mfra meta ilst sinf schi"
    b" tref iprp ipco".split()
)
#: boxes the parser reads or looks into rather than skips
_SPECIAL = CONTAINERS | {b"moov", b"mdat"}
_HEADER = struct.Struct(">I4s")
#: the largest moov read into memory to find the sample tables
MOOV_MAX = min(MAX_READ, 64 << 20)
_MAX_DEPTH = 10
#: sample offsets at or past this are ignored (no file is that large, and an
#: array of int64 cannot hold them)
_OFFSET_LIMIT = 1 << 62


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


# box types are four printable characters (0xA9 starts iTunes tags: "\xa9nam")
_TYPE_CHARS = bytes(range(32, 127)) + b"\xa9"


def _plausible_type(typ: bytes) -> bool:
    return not typ.translate(None, _TYPE_CHARS)


def _is_fullbox_meta(buf: bytes, i: int) -> bool:
    # ISO meta is a FullBox (4 bytes version+flags, zero); QuickTime meta is not
    return buf[i : i + 4] == b"\0\0\0\0"


class _SampleTables:
    """Sample offsets gathered from one moov, for every track.

    Samples of varying size are listed one by one (there are at most as many
    as the stsz table has entries, so the list is bounded by the moov read).
    A chunk of constant-size samples is kept as a run (first offset, count,
    size) and never expanded: its claimed count is a 32-bit field that a tiny
    moov may set to 2**32-1.
    """

    def __init__(self):
        self.offsets = array("q")
        self.runs: list[tuple[int, int, int]] = []  # (first offset, samples, size)

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
            if sample >= n_samples:
                return
            k = min(stsc[run][1], n_samples - sample)
            if k and const is not None:
                self.runs.append((off, k, const))
            else:
                for size in sizes[sample : sample + k]:
                    if off >= _OFFSET_LIMIT:
                        break
                    offsets.append(off)
                    off += size
            sample += k

    def finish(self) -> _Samples | None:
        """The samples, ready for lookups; None if there are none."""
        if not self.offsets and not self.runs:
            return None
        return _Samples(self.offsets, self.runs)


class _Samples:
    """`next_at(t)`: the first sample start at or after offset `t`."""

    def __init__(self, offsets: array, runs: list[tuple[int, int, int]]):
        self.offsets = array("q", sorted(set(offsets)))
        runs = sorted(set(runs))
        self.run_starts = [r[0] for r in runs]
        self.runs = runs

    def next_at(self, t: int) -> int | None:
        best = None
        k = bisect.bisect_left(self.offsets, t)
        if k < len(self.offsets):
            best = self.offsets[k]
        k = bisect.bisect_right(self.run_starts, t) - 1
        if k >= 0:
            first, count, size = self.runs[k]
            if size > 0:
                step = -(-(t - first) // size)
                if step < count:
                    off = first + step * size
                    best = off if best is None else min(best, off)
            elif first >= t:  # zero-size samples all start at `first`
                best = first if best is None else min(best, first)
        if k + 1 < len(self.runs):
            off = self.run_starts[k + 1]
            best = off if best is None else min(best, off)
        return best


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
    #: boxes inside a moov are proposed once the whole moov is read, maybe
    #: after the chunker passed them (see GuardedScanner)
    may_propose_late = True

    def parse(self):
        samples: _Samples | None = None
        while True:
            # fast path: a run of plain boxes walked inside one window (a
            # request per window, not per box: a box may be 8 bytes); at most
            # LOOKAHEAD so that every box start is proposed in time
            win = yield self.peek(LOOKAHEAD)
            base, n, i = self.pos, len(win), 0
            out = self._out
            while n - i >= 8:
                size, typ = _HEADER.unpack_from(win, i)
                if size < 8 or typ in _SPECIAL or typ.translate(None, _TYPE_CHARS):
                    break
                out.append(base + i)  # self.propose, inlined
                i += size
            if i:
                yield self.skip(i)
                if self.pos != base + i:
                    return
                continue
            # one box at a time
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
                samples = tables.finish()
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
                    # one sample start per avg_size bytes, proposed as the data
                    # goes by: the box and the tables may claim far more than
                    # the stream holds
                    spacing = self.params.avg_size
                    end = start + size
                    last = data_start
                    while True:
                        off = samples.next_at(last + spacing)
                        if off is None or off >= end:
                            break
                        yield self.skip(off - self.pos)
                        if self.pos != off:
                            return  # the stream ended first
                        self.propose(off)
                        last = off
                yield self.skip(start + size - self.pos)
            else:
                yield self.skip(size - hlen)

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
