"""A directory as a tar file that is never built: laid out from its dirents,
read from the blocks at any offset.

`TarView(root, store)` walks the tree once (directory blocks only, no file
content) through `tree.tar.tar_members`, the member logic of `vt export
--format tar`, and keeps for each member its offset and its `TarInfo`; the
bytes are made on demand: a member's header again from its `TarInfo`, its
content from its file's block (`Block.read` of the range asked), padding and
the end-of-archive zeros as zeros.  So `TarView.read(store, 0, span)` is
exactly what `write_tar` writes, any range can be read first, and memory is
one `TarInfo` per member, not the archive.

A `TarView` looks like a block to its readers (`span`, `read`, `slices`), so
the mount serves it as a read-only file with its cache and readahead.
"""

from __future__ import annotations

import bisect
import tarfile

from vtstore.tree.fsexport import ExportStats
from vtstore.tree.tar import tar_members

BLOCKSIZE = tarfile.BLOCKSIZE  # 512
RECORDSIZE = tarfile.RECORDSIZE  # 10240
_FORMAT = (tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padded(n: int) -> int:
    return -(-n // BLOCKSIZE) * BLOCKSIZE


class TarView:
    """The pax tar of the tree under directory dirent `root`; see the module docstring.

    `links` (with `resolve(ino)`) finds hard-link groups whose first name lies
    outside `root`, as for `write_tar`.  `stats` tells what the walk met
    (damaged directories are in `stats.damaged`; their readable entries are
    in the view).
    """

    def __init__(self, root, store, links=None):
        self.root = root
        self.stats = ExportStats()
        self._starts: list[int] = []
        self._members: list[tuple[tarfile.TarInfo, object, int]] = []  # (ti, block, header length)
        off = 0
        for ti, e in tar_members(root, store, self.stats, links=links):
            hlen = len(ti.tobuf(*_FORMAT))
            self._starts.append(off)
            self._members.append((ti, e.block if e is not None else None, hlen))
            off += hlen + (_padded(ti.size) if e is not None else 0)
        self._content_end = off
        end = off + 2 * BLOCKSIZE
        self.span = -(-end // RECORDSIZE) * RECORDSIZE
        self._header_cache: tuple[int, bytes] | None = None

    def __repr__(self) -> str:
        return f"<TarView of {len(self._members)} members, {self.span} octets>"

    def __len__(self) -> int:
        return len(self._members)

    def _header(self, i: int) -> bytes:
        c = self._header_cache
        if c is not None and c[0] == i:
            return c[1]
        buf = self._members[i][0].tobuf(*_FORMAT)
        self._header_cache = (i, buf)
        return buf

    def _pieces(self, start: int, end: int):
        """`(kind, offset in the view, a, b, member)` covering `[start, end)`.

        kind is "header" (bytes `[a:b)` of member's header), "data" (bytes
        `[a:b)` of its block) or "zeros" (b - a zero octets).
        """
        end = min(end, self.span)
        pos = start
        i = max(0, bisect.bisect_right(self._starts, pos) - 1)
        while pos < end and i < len(self._members):
            ti, block, hlen = self._members[i]
            m0 = self._starts[i]
            if pos < m0 + hlen:
                a = pos - m0
                b = min(hlen, end - m0)
                yield "header", pos, a, b, i
                pos = m0 + b
                continue
            if block is not None:
                d0 = m0 + hlen
                if pos < d0 + ti.size:
                    a = pos - d0
                    b = min(ti.size, end - d0)
                    yield "data", pos, a, b, i
                    pos = d0 + b
                    continue
                pad_end = d0 + _padded(ti.size)
                if pos < pad_end:
                    b = min(pad_end, end)
                    yield "zeros", pos, 0, b - pos, i
                    pos = b
                    continue
            i += 1
        if pos < end:
            yield "zeros", pos, 0, end - pos, None

    def read(self, store, start: int = 0, end: int | None = None) -> bytes:
        """The octets `[start:end)` of the tar."""
        end = self.span if end is None else min(end, self.span)
        if start >= end:
            return b""
        out = []
        for kind, _, a, b, i in self._pieces(start, end):
            if kind == "header":
                out.append(self._header(i)[a:b])
            elif kind == "data":
                out.append(self._members[i][1].read(store, a, b))
            else:
                out.append(bytes(b - a))
        return b"".join(out)

    def slices(self, store, start: int, end: int):
        """The leaves of member contents in `[start, end)` (for readahead)."""
        for kind, _, a, b, i in self._pieces(start, end):
            if kind == "data":
                yield from self._members[i][1].slices(store, a, b)
