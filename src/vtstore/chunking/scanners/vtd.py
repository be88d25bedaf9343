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

from vtstore.chunking.scanners.base import ParserScanner

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
        while True:
            head = yield self.peek(2 * _MAX_VARINT)
            r = read_varint(head, 0)
            if r is None:
                return
            flags, i = r
            r = read_varint(head, i)
            if r is None:
                return
            length, i = r
            if flags not in VALID_FLAGS or not 0 < length <= MAX_PAYLOAD:
                return
            self.propose(self.pos)
            yield self.skip(i + length + CRC_SIZE)
