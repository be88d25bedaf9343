"""Appending to a data file with O_DIRECT: around the page cache.

A datadir writes every block once and rarely reads it back soon, so pushing
the bytes through the page cache buys nothing and costs a copy and a fresh
page per 4 KiB.  On the VMs we measure on that cost is extreme: a GiB written
buffered took 1.6-2.6 s of CPU and ran at 320-500 MB/s, the same GiB with
O_DIRECT 0.13-0.2 s of CPU at 1.4-1.5 GB/s (`docs/PERFORMANCE.md`).

O_DIRECT wants page-aligned offsets, lengths and buffers, and records are
not aligned: so each write starts at the page holding the end of the file,
rewriting the partial page kept in memory (`_tail`), and is padded with zeros
to a whole page.  The padding sits after the last record, where a crash
leaves residue anyway; the writer truncates it away whenever it goes idle
(flush, close), so a data file at rest ends with its last record.

It is off unless `$VT_DIRECT_IO=1`: the writes then wait for the disk, and in
a whole pack that cost more than the page cache did (a 1 GiB tree packed in
5.3-9.5 s with it, 4.6-5.0 s without), and blocks read right after being
written come from the disk (24.7 instead of 13 us per 8 KiB get).
"""

from __future__ import annotations

import mmap
import os

__all__ = ["ALIGN", "DirectAppender", "DirectUnsupported"]

#: the alignment O_DIRECT needs on every Linux file system we meet
ALIGN = 4096


class DirectUnsupported(OSError):
    """This file system or write cannot use O_DIRECT: write buffered instead."""


class DirectAppender:
    """O_DIRECT appends to the file `path`, whose current end is `offset`.

    `fd` is an ordinary descriptor of the same file, used to read the partial
    last page.  Raises `DirectUnsupported` if the file system refuses O_DIRECT.
    """

    def __init__(self, path: str, fd: int, offset: int):
        flag = getattr(os, "O_DIRECT", 0)
        if not flag:
            raise DirectUnsupported("O_DIRECT is not available here")
        try:
            self._dfd = os.open(path, os.O_WRONLY | flag | os.O_CLOEXEC)
        except OSError as e:
            raise DirectUnsupported(e.errno, f"O_DIRECT refused: {e.strerror}") from None
        try:
            head = offset - offset % ALIGN
            self._tail = os.pread(fd, offset - head, head) if offset > head else b""
            if len(self._tail) != offset - head:
                raise DirectUnsupported(f"data file shorter than its end {offset}")
        except BaseException:
            os.close(self._dfd)
            raise
        self._buf: mmap.mmap | None = None
        self._end = offset
        #: the file holds zero padding after `_end` (since the last write)
        self.padded = False

    def write(self, parts, offset: int, size: int) -> None:
        """Write the record made of `parts` (`size` octets) at `offset`, the end."""
        if offset != self._end:
            raise DirectUnsupported(f"append at {offset} but the file ends at {self._end}")
        tail = self._tail
        head = offset - len(tail)
        total = len(tail) + size
        padded = -(-total // ALIGN) * ALIGN
        buf = self._buf
        if buf is None or len(buf) < padded:
            if buf is not None:
                buf.close()
            buf = self._buf = mmap.mmap(-1, max(padded, 1 << 20))  # page aligned
        mv = memoryview(buf)
        try:
            mv[: len(tail)] = tail
            pos = len(tail)
            for p in parts:
                n = len(p)
                mv[pos : pos + n] = p
                pos += n
            if pos != total:
                raise ValueError(f"record parts make {pos - len(tail)} octets, not {size}")
            mv[total:padded] = bytes(padded - total)
            try:
                n = os.pwrite(self._dfd, mv[:padded], head)
            except OSError as e:
                if e.errno in (22, 95):  # EINVAL, EOPNOTSUPP: not for this file
                    raise DirectUnsupported(e.errno, e.strerror) from None
                raise
            if n != padded:
                raise DirectUnsupported(f"short O_DIRECT write ({n} of {padded})")
            end = offset + size
            keep = end % ALIGN
            self._tail = bytes(mv[total - keep : total])
            self._end = end
            self.padded = padded != total
        finally:
            mv.release()

    def trimmed(self) -> None:
        """The caller cut the file back to its end."""
        self.padded = False

    def close(self) -> None:
        """Close the O_DIRECT descriptor and free the staging buffer."""
        if self._dfd >= 0:
            os.close(self._dfd)
            self._dfd = -1
        if self._buf is not None:
            self._buf.close()
            self._buf = None
