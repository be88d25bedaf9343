"""zip archives (zip, jar, docx, odt, epub, whl): entry starts.

Walks the local file headers in order and proposes each entry's start, its
data start when the compressed data is at least `DATA_SPLIT` bytes, and the
start of the central directory.  An entry whose sizes are only in a trailing
data descriptor (a zip written to a pipe) ends the walk: its length is not
known without inflating it.
"""

from __future__ import annotations

import struct

from vtstore.chunking.scanners.base import LOOKAHEAD, ParserScanner

__all__ = ["ZipScanner"]

DATA_SPLIT = 4096
_LOCAL = b"PK\x03\x04"
_CENTRAL = b"PK\x01\x02"
_END = b"PK\x05\x06"
_END64 = b"PK\x06\x06"
#: flags, compressed and uncompressed sizes, name and extra lengths
_LOCAL_FIELDS = struct.Struct("<6xH10xIIHH")


def _zip64_sizes(extra: bytes, csize: int, usize: int) -> tuple[int, int]:
    i = 0
    while i + 4 <= len(extra):
        tag, n = struct.unpack_from("<HH", extra, i)
        if tag == 1:
            body = extra[i + 4 : i + 4 + n]
            vals = [struct.unpack_from("<Q", body, k)[0] for k in range(0, len(body) - 7, 8)]
            if usize == 0xFFFFFFFF and vals:
                usize = vals.pop(0)
            if csize == 0xFFFFFFFF and vals:
                csize = vals.pop(0)
            break
        i += 4 + n
    return csize, usize


class ZipScanner(ParserScanner):
    """Local header, data and central directory starts of a zip stream."""

    name = "zip"

    def parse(self):
        while True:
            # fast path: entries walked inside one window (a request per
            # window, not per entry: an empty entry is 31 bytes); at most
            # LOOKAHEAD so that every entry start is proposed in time
            win = yield self.peek(LOOKAHEAD)
            base, n, i = self.pos, len(win), 0
            while n - i >= 30 and win[i : i + 4] == _LOCAL:
                (flags, csize, usize, nlen, xlen) = _LOCAL_FIELDS.unpack_from(win, i)
                data = i + 30 + nlen + xlen
                if flags & 0x08 or data > n:
                    break  # the one-entry path below handles these
                if csize == 0xFFFFFFFF or usize == 0xFFFFFFFF:
                    csize, usize = _zip64_sizes(win[i + 30 + nlen : data], csize, usize)
                self.propose(base + i)
                if csize >= DATA_SPLIT:
                    self.propose(base + data)
                i = data + csize
            if i:
                yield self.skip(i)
                if self.pos != base + i:
                    return
                continue
            # one entry at a time
            start = self.pos
            sig = yield self.peek(4)
            if sig in (_CENTRAL, _END, _END64):
                self.propose(start)
                return
            if sig != _LOCAL:
                return
            hdr = yield self.read(30)
            if len(hdr) < 30:
                return
            (flags, _method, _t, _d, _crc, csize, usize, nlen, xlen) = struct.unpack_from(
                "<HHHHIIIHH", hdr, 6
            )
            self.propose(start)
            name_extra = yield self.read(nlen + xlen)
            if len(name_extra) < nlen + xlen:
                return
            csize, usize = _zip64_sizes(name_extra[nlen:], csize, usize)
            if flags & 0x08 and csize == 0:
                return  # sizes in a data descriptor: unknown here
            if csize >= DATA_SPLIT:
                self.propose(self.pos)
            yield self.skip(csize)
            if flags & 0x08:
                # data descriptor: optional signature, crc, sizes (4 or 8 bytes each)
                d = yield self.peek(4)
                n = 16 if d == b"PK\x07\x08" else 12
                if csize > 0xFFFFFFFF or usize > 0xFFFFFFFF:
                    n += 8
                yield self.skip(n)
