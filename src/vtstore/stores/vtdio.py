"""Appending data-file records in one call per frame.

The native `vtstore.stores._vtdio` when it is built, else the same functions in
Python (slower, same results).  `write_record` writes one frame's record: the
native one computes the CRC (PCLMULQDQ folding) and writes the record with
`pwritev`, straight from the blocks' buffers, releasing the GIL once for all
of it.  The native `Appender` does the same from a thread of its own that
never takes the GIL (None without the extension).  `index_values` encodes a
frame's index entries at once.
"""

from __future__ import annotations

import os
import zlib

from vtstore.codec import encode_varint

try:
    from vtstore.stores._vtdio import (  # noqa: F401 - re-exported
        SYNC_FILE_RANGE_WRITE,
        Appender,
        crc32,
        entries_payload,
        index_values,
        sample_entropy,
        sync_file_range,
        write_record,
    )

    NATIVE = True
except ImportError:  # not built: the same in Python
    NATIVE = False
    SYNC_FILE_RANGE_WRITE = 2
    Appender = None  # the writer then appends from a Python thread
    sample_entropy = None  # every frame is then tried with zstd
    _MAX_PAYLOAD = 64 * 1024 * 1024

    crc32 = zlib.crc32

    def entries_payload(datas) -> bytes:
        """`varint(len(d)) + d` for each of `datas`, concatenated."""
        parts = []
        for d in datas:
            parts.append(encode_varint(len(d)))
            parts.append(d)
        return b"".join(parts)

    def write_record(
        fd: int, offset: int, flags: int, parts, entries: bool
    ) -> tuple[int, int, int]:
        """Write one record at `offset` of `fd`; return `(record_size,
        payload_offset, payload_length)` (the payload offset within the record)."""
        if not 0 <= flags < 128:
            raise ValueError(f"bad record flags {flags}")
        payload = entries_payload(parts) if entries else b"".join(parts)
        n = len(payload)
        if not 0 < n <= _MAX_PAYLOAD:
            raise ValueError(f"record payload of {n} octets out of range")
        head = encode_varint(flags) + encode_varint(n)
        crc = zlib.crc32(payload, zlib.crc32(head))
        rec = memoryview(b"".join((head, payload, crc.to_bytes(4, "big"))))
        pos = offset
        while rec:
            k = os.pwrite(fd, rec, pos)
            if k == 0:
                raise OSError(5, "short write")
            pos += k
            rec = rec[k:]
        return len(head) + n + 4, len(head), n

    def index_values(filenum: int, flags: int, payload_offset: int, payload_length: int, datas):
        """The encoded index entry of each of `datas` in a frame (see
        `vtstore.stores.index.IndexEntry`)."""
        prefix = b"".join(
            encode_varint(v) for v in (filenum, flags, payload_offset, payload_length)
        )
        out = []
        pos = 0
        for d in datas:
            n = len(d)
            v = encode_varint(n)
            pos += len(v)
            out.append(prefix + encode_varint(pos) + v)
            pos += n
        return out

    def sync_file_range(fd: int, offset: int, nbytes: int, flags: int) -> None:
        """Not available without the extension: a no-op (writeback starts later)."""


try:  # an extension built before the map guard existed has none
    from vtstore.stores._vtdio import guard_map, unguard_map
except ImportError:

    def guard_map(address: int, size: int, message: bytes) -> None:
        """Without the extension a fault in a damaged map kills the process."""

    def unguard_map(address: int) -> None:
        """See `guard_map`."""
