"""gzip: member starts.

A gzip file may hold several members one after another (pigz --independent,
bgzip/BGZF, concatenated logs); each member decompresses alone, so its start
is a natural block boundary.  Members have no length field (BGZF blocks do,
but every member starts with the same magic anyway), so the scanner looks for
the member header signature — 1f 8b 08, a valid flag byte — and confirms a
candidate by starting to inflate it.  A false match only costs one extra cut.
"""

from __future__ import annotations

import zlib

from vtstore.chunking.params import DEFAULT_PARAMS, ChunkParams
from vtstore.chunking.scanners.base import Scanner

__all__ = ["GzipScanner", "is_member_start"]

_MAGIC = b"\x1f\x8b\x08"
_CHECK = 512  # bytes inflated to confirm a candidate


def is_member_start(data: bytes) -> bool:
    """Whether `data` (up to _CHECK bytes) starts like a gzip member."""
    if len(data) < 10 or data[:3] != _MAGIC or data[3] & 0xE0:
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
        self._last = 0

    def feed(self, buf) -> list[int]:
        data = self._tail + bytes(buf)
        base = self._base
        out = []
        # candidates need _CHECK bytes after them; later ones wait for more data
        limit = len(data) - _CHECK
        i = data.find(_MAGIC)
        while 0 <= i < limit:
            off = base + i
            if off > self._last and is_member_start(data[i : i + _CHECK]):
                out.append(off)
                self._last = off
            i = data.find(_MAGIC, i + 1)
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
            if off > self._last and is_member_start(data[i:]):
                out.append(off)
                self._last = off
            i = data.find(_MAGIC, i + 1)
        self._tail = b""
        return out
