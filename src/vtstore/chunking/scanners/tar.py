"""tar archives (ustar, GNU, pax): member header and data starts.

Proposes the start of each member (its first header, so a pax or GNU long-name
header stays in one block with the header it extends), the start of the
member's data when it is at least `DATA_SPLIT` bytes (so a change of mtime or
mode rewrites only the 512-byte header block), and the end-of-archive marker.
"""

from __future__ import annotations

from vtstore.chunking._cdc import tar_scan
from vtstore.chunking.params import DEFAULT_PARAMS, ChunkParams
from vtstore.chunking.scanners.base import ParserScanner, Scanner

__all__ = ["TarScanner", "TarScannerReference", "DATA_SPLIT"]

BLOCK = 512
DATA_SPLIT = 4096
#: type flags of headers that describe the next header's member
_EXTENSIONS = frozenset(b"xgLKX")


def _number(field: bytes) -> int | None:
    """A tar numeric field: octal text, or GNU base-256 (high bit set)."""
    if field and field[0] & 0x80:
        v = field[0] & 0x3F
        for c in field[1:]:
            v = v << 8 | c
        return v
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        return None


def _checksum_ok(hdr: bytes) -> bool:
    stored = _number(hdr[148:156])
    if stored is None:
        return False
    unsigned = sum(hdr[:148]) + 8 * 32 + sum(hdr[156:])
    return stored == unsigned


class TarScanner(Scanner):
    """Member and data starts of a tar stream.

    The walk from header to header is native (`_cdc.tar_scan`, without the
    GIL); this class only carries its state across buffers and joins a header
    cut by the end of one.  `TarScannerReference` is the same walk in Python,
    which the tests hold it to.
    """

    name = "tar"

    def __init__(self, params: ChunkParams = DEFAULT_PARAMS):
        super().__init__(params)
        self.pos = 0  # absolute offset of the next octet the walk has not passed
        self._skip = 0  # member data still to pass over
        self._member = -1  # start of a member whose extension headers were read
        self._held = b""  # the start of a header cut by the end of a buffer
        self._done = False

    def _walk(self, data, start: int) -> tuple[list[int], int]:
        out, stop, self.pos, self._skip, self._member, self._done = tar_scan(
            data, start, self.pos, self._skip, self._member
        )
        return out, stop

    def feed(self, buf) -> list[int]:
        if self._done:
            return []
        mv = memoryview(buf).cast("B")
        out: list[int] = []
        i = 0
        if self._held:
            i = BLOCK - len(self._held)
            hdr = self._held + bytes(mv[:i])
            if len(hdr) < BLOCK:
                self._held = hdr
                return out
            self._held = b""
            out, _ = self._walk(hdr, 0)
            if self._done:
                return out
        more, stop = self._walk(mv, i)
        out += more
        if not self._done and not self._skip:
            self._held = bytes(mv[stop:])
        return out


class TarScannerReference(ParserScanner):
    """The tar walk in Python: what `TarScanner` must propose, for the tests."""

    name = "tar"

    def parse(self):
        member_start = None  # start of the pending run of extension headers
        while True:
            start = self.pos
            hdr = yield self.read(BLOCK)
            if len(hdr) < BLOCK:
                return
            if hdr.count(0) == BLOCK:
                self.propose(start)  # end-of-archive marker
                return
            if not _checksum_ok(hdr):
                return
            size = _number(hdr[124:136])
            if size is None:
                return
            typeflag = hdr[156]
            if member_start is None:
                member_start = start
            if typeflag in _EXTENSIONS:
                # the extension's data belongs to the header that follows
                yield self.skip(-(-size // BLOCK) * BLOCK)
                continue
            self.propose(member_start)
            member_start = None
            if typeflag in b"1256":  # links, devices, fifos: no data
                size = 0 if typeflag != ord("S") else size
            if size >= DATA_SPLIT:
                self.propose(self.pos)
            yield self.skip(-(-size // BLOCK) * BLOCK)
