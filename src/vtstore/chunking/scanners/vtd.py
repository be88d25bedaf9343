"""vtstore data files (.vtd): record starts.

A .vtd file (the stores layer's format, `vtstore.stores.vtd` and
docs/FORMATS.md) is `MAGIC` ("VTD\\x01") then records, each
`varint(flags) varint(n) payload[n] crc32[4]` (varints big-endian base-128,
high bit = more).  Proposing every record start makes each record (a header,
or a frame of blocks, usually zstd-compressed) its own block or blocks, so
storing a datadir's data files in vt dedups them record by record.  Flags
outside the known set, a length over `MAX_PAYLOAD` or a malformed varint end
the scan (the rest is cut by hash).

This parser repeats the record framing rather than importing it, because the
chunking layer sits below the stores layer; keep the two in step.
"""

from __future__ import annotations

from vtstore.chunking.scanners.base import LOOKAHEAD, ParserScanner

__all__ = ["VTDScanner", "read_varint", "MAGIC"]

MAGIC = b"VTD\x01"
#: flag values a record may have (type | encoding), as in vtstore.stores.vtd
VALID_FLAGS = frozenset({0x00, 0x01, 0x04})
MAX_PAYLOAD = 64 << 20
CRC_SIZE = 4
_MAX_VARINT = 10


def read_varint(buf: bytes, i: int) -> tuple[int, int] | None:
    """(value, next index) of the varint at buf[i:], or None if incomplete/invalid."""
    v = 0
    for k in range(_MAX_VARINT):
        if i + k >= len(buf):
            return None
        b = buf[i + k]
        v = v << 7 | (b & 0x7F)
        if not b & 0x80:
            return v, i + k + 1
    return None


class VTDScanner(ParserScanner):
    """Record starts of a .vtd data file."""

    name = "vtd"

    def parse(self):
        head = yield self.peek(len(MAGIC))
        if head == MAGIC:
            yield self.skip(len(MAGIC))
        # records are walked a window at a time (one request per window, not
        # per record: a record may be 7 bytes); a window is at most LOOKAHEAD
        # so that every record start is proposed in time
        header = 2 * _MAX_VARINT
        while True:
            win = yield self.peek(LOOKAHEAD)
            base, n, i = self.pos, len(win), 0
            full = n == LOOKAHEAD
            while i < n and (n - i >= header or not full):
                flags = win[i]
                if flags < 0x80 and i + 1 < n and win[i + 1] < 0x80:
                    length, j = win[i + 1], i + 2  # the common one-byte varints
                else:
                    r = read_varint(win, i)
                    if r is None:
                        return
                    flags, j = r
                    r = read_varint(win, j)
                    if r is None or r[1] - i > header:
                        return
                    length, j = r
                if flags not in VALID_FLAGS or not 0 < length <= MAX_PAYLOAD:
                    return
                self.propose(base + i)
                i = j + length + CRC_SIZE
            if not i:
                return  # nothing at all after the magic
            yield self.skip(i)
            if self.pos != base + i:
                return  # the stream ended inside a record
