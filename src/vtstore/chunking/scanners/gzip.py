"""gzip: member starts.

A gzip file may hold several members one after another (pigz --independent,
bgzip/BGZF, concatenated logs); each member decompresses alone, so its start
is a natural block boundary.  Members have no length field (BGZF blocks do,
but every member starts with the same magic anyway), so the scanner looks for
the member header signature — 1f 8b 08, a valid flag byte — and confirms a
candidate by starting to inflate it.  A false match only costs one extra cut.
"""

from __future__ import annotations

import re
import zlib

from vtstore.chunking.params import DEFAULT_PARAMS, ChunkParams
from vtstore.chunking.scanners.base import Scanner

__all__ = ["GzipScanner", "is_member_start"]

_MAGIC = b"\x1f\x8b\x08"
_CHECK = 512  # bytes inflated to confirm a candidate
#: the inflate budget: one per this many bytes, plus a credit (see _may_inflate)
_INFLATE_EVERY = 64
_INFLATE_CREDIT = 64
#: the magic, then a flag byte, XFL and OS bytes a member header can have (and
#: with no flags, a first deflate block of a valid type): the regular
#: expression engine finds these without a Python step per magic
_BTYPE_OK = b"".join(re.escape(bytes([c])) for c in range(256) if (c >> 1) & 3 != 3)
_CANDIDATE = re.compile(
    rb"\x1f\x8b\x08(?=\x00[\s\S]{4}[\x00\x02\x04][\x00-\x0d\xff][" + _BTYPE_OK + rb"]"
    rb"|[\x01-\x1f][\s\S]{4}[\x00\x02\x04][\x00-\x0d\xff])"
)


def _cheap_reject(data, i: int) -> bool:
    """Whether the candidate at data[i:] is surely not a member (no zlib needed).

    Looks at what a member header fixes (XFL 0, 2 or 4; OS 0-13 or 255) and,
    with no optional header fields, at the first deflate block's type (3 is
    invalid) and a stored block's length check, so that garbage full of the
    magic (one every few bytes) costs a few byte tests per candidate.
    """
    if len(data) - i < 12:
        return False  # short: zlib decides
    flags, xfl, os_ = data[i + 3], data[i + 8], data[i + 9]
    if flags & 0xE0 or xfl not in (0, 2, 4) or (os_ > 13 and os_ != 255):
        return True
    if flags:
        return False
    b = data[i + 10]
    btype = (b >> 1) & 3
    if btype == 3:
        return True
    if btype == 0 and len(data) - i >= 15:
        n, nn = data[i + 11] | data[i + 12] << 8, data[i + 13] | data[i + 14] << 8
        return n ^ nn != 0xFFFF
    return False


def is_member_start(data: bytes) -> bool:
    """Whether `data` (up to _CHECK bytes) starts like a gzip member."""
    if len(data) < 10 or data[:3] != _MAGIC or data[3] & 0xE0 or _cheap_reject(data, 0):
        return False
    d = zlib.decompressobj(wbits=31)
    try:
        d.decompress(data, 64)
    except zlib.error:
        return False
    return True


class GzipScanner(Scanner):
    """Starts of the second and later members of a gzip stream."""

    name = "gzip"

    def __init__(self, params: ChunkParams = DEFAULT_PARAMS):
        super().__init__(params)
        self._tail = b""
        self._base = 0
        # the next offset a member may start at: not the first byte, and not
        # within `forced_min` of the last proposal (the chunker would drop it;
        # and every member is at least 20 bytes), so a stream of tiny members
        # costs one check per forced_min bytes, not one per member
        self._next = 1
        self._gap = max(20, params.forced_min)
        self._inflates = 0  # candidates inflated so far

    def _may_inflate(self, off: int) -> bool:
        """Whether a candidate at `off` may be confirmed by inflating it.

        At most one inflate per `_INFLATE_EVERY` bytes of stream on average
        (plus a start credit): a stream built of member headers that pass
        the cheap checks would otherwise cost a zlib setup every 16 bytes.
        Real members are far apart, so the budget never binds on them.
        """
        if self._inflates >= off // _INFLATE_EVERY + _INFLATE_CREDIT:
            return False
        self._inflates += 1
        return True

    def feed(self, buf) -> list[int]:
        data = self._tail + bytes(buf)
        base = self._base
        out = []
        # candidates need _CHECK bytes after them; later ones wait for more data
        limit = len(data) - _CHECK
        search = _CANDIDATE.search
        m = search(data)
        while m is not None and m.start() < limit:
            i = m.start()
            off = base + i
            if off >= self._next and not _cheap_reject(data, i) and self._may_inflate(off):
                if is_member_start(data[i : i + _CHECK]):
                    out.append(off)
                    self._next = off + self._gap
            m = search(data, max(i + 1, self._next - base))
        keep = min(len(data), _CHECK + len(_MAGIC))
        self._tail = data[len(data) - keep :]
        self._base = base + len(data) - keep
        return out

    def finish(self) -> list[int]:
        out = []
        data, base = self._tail, self._base
        i = data.find(_MAGIC)
        while i >= 0:
            off = base + i
            if off >= self._next and self._may_inflate(off) and is_member_start(data[i:]):
                out.append(off)
                self._next = off + self._gap
            i = data.find(_MAGIC, max(i + 1, self._next - base))
        self._tail = b""
        return out
