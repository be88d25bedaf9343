"""File content while mounted: a stored block plus layers of written bytes.

A file's content is a chain ending in a `Block`.  Writes go to the top
`Layer`: a scratch file (written and read with `pwrite`/`pread` at the file's
own offsets, so it is sparse where nothing was written) and the sorted list of
extents it holds.  Below the extents a layer shows its base (the block, or an
older frozen layer) up to `base_len`, and zeros from there to `size` (what a
truncate-then-extend leaves).

When a file is closed or synced its top layer is *frozen* and turned into a
block in the background by `splice_block`: only the dirty extents, widened to
the leaves of the base they touch, are re-chunked; every untouched leaf of the
base is kept by reference, so a 1-byte change to a 10 GB file stores about one
leaf and the indirect blocks above it.  Meanwhile a new layer over the frozen
one takes further writes, so closing never waits for storing.
"""

from __future__ import annotations

import bisect
import os
import tempfile
import threading

from vtstore.blocks import (
    Block,
    LiteralBlock,
    RLEBlock,
    SubBlock,
    leaf_blocks,
    top_block_of,
)

EMPTY = LiteralBlock(b"")
_READ_PIECE = 4 * 1024 * 1024
#: zero runs at least this long that no write touched become one RLE leaf
_ZERO_RUN = 64 * 1024


class Scratch:
    """An anonymous temporary file addressed by file offset (pread/pwrite only)."""

    __slots__ = ("fd",)

    def __init__(self, dirpath: str | None = None):
        d = dirpath or tempfile.gettempdir()
        try:
            self.fd = os.open(d, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError:
            fd, path = tempfile.mkstemp(dir=d, prefix=".vt-scratch-")
            os.unlink(path)
            self.fd = fd

    def pwrite(self, data, offset: int) -> None:
        mv = memoryview(data)
        while mv:
            n = os.pwrite(self.fd, mv, offset)
            mv = mv[n:]
            offset += n

    def pread(self, n: int, offset: int) -> bytes:
        data = os.pread(self.fd, n, offset)
        if len(data) < n:  # never written past here: zeros
            data += bytes(n - len(data))
        return data

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self):
        # readers may still hold a layer after it was replaced: close only when
        # the last reference goes, so an fd number is never reused under them
        self.close()


class Layer:
    """Written bytes over a base; see the module docstring."""

    def __init__(self, base, size: int, scratch_dir: str | None = None):
        self.base = base  # Block or Layer
        self.base_len = size
        self.size = size
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.scratch: Scratch | None = None
        self.scratch_dir = scratch_dir
        self.written = 0  # octets written into this layer (streaming stores it past a bound)
        self.frozen = False
        self.block: Block | None = None  # set when the frozen layer has been stored
        self.error: BaseException | None = None
        self.done = threading.Event()

    @property
    def dirty(self) -> bool:
        return bool(self.starts) or self.base_len != self.size or self.size != _span(self.base)

    def write(self, offset: int, data) -> None:
        n = len(data)
        if not n:
            return
        if self.scratch is None:
            self.scratch = Scratch(self.scratch_dir)
        self.scratch.pwrite(data, offset)
        self.written += n
        self._add_extent(offset, offset + n)
        if offset + n > self.size:
            self.size = offset + n

    def _add_extent(self, s: int, e: int) -> None:
        starts, ends = self.starts, self.ends
        i = bisect.bisect_left(ends, s)  # first extent ending at or after s
        j = bisect.bisect_right(starts, e)  # extents starting after e are untouched
        if i < j:
            s = min(s, starts[i])
            e = max(e, ends[j - 1])
        starts[i:j] = [s]
        ends[i:j] = [e]

    def truncate(self, size: int) -> None:
        if size < self.size:
            i = bisect.bisect_left(self.starts, size)  # extents starting before size
            del self.starts[i:]
            del self.ends[i:]
            if self.ends and self.ends[-1] > size:
                self.ends[-1] = size
            self.base_len = min(self.base_len, size)
        self.size = size

    def read(self, store, offset: int, n: int) -> bytes:
        return b"".join(self.pieces(store, offset, min(offset + n, self.size)))

    def pieces(self, store, start: int, end: int):
        """The bytes of `[start:end)` as a sequence of pieces."""
        pos = start
        starts, ends = self.starts, self.ends
        i = bisect.bisect_right(ends, pos)
        while pos < end:
            if i < len(starts) and starts[i] <= pos:
                stop = min(ends[i], end)
                yield self.scratch.pread(stop - pos, pos)
                i += 1
            else:
                stop = min(starts[i], end) if i < len(starts) else end
                yield from self._base_pieces(store, pos, stop)
            pos = stop

    def _base_pieces(self, store, start: int, end: int):
        cut = min(end, self.base_len)
        if start < cut:
            base = self.base
            if isinstance(base, Layer):
                yield from base.pieces(store, start, cut)
            else:
                yield from base.chunks(store, start, cut)
            start = cut
        if start < end:
            yield bytes(end - start)

    def base_block(self) -> Block | None:
        """The base as a block, if it is one (or a stored frozen layer)."""
        b = self.base
        while isinstance(b, Layer):
            if b.block is None:
                return None
            b = b.block
        return b


def _span(b) -> int:
    return b.size if isinstance(b, Layer) else b.span


class ContentChunker:
    """Cuts byte streams into leaf blocks with the store's content-defined chunker.

    A region that starts a file is cut with the format scanner chosen from the
    file's name, MIME type or first bytes (`vtstore.chunking.blockify`); a region
    in mid-file is cut by content hashes alone, since a scanner needs the start.
    """

    def __init__(self, params=None):
        from vtstore.chunking.params import DEFAULT_PARAMS

        self.params = params or DEFAULT_PARAMS

    @classmethod
    def for_store(cls, store) -> ContentChunker:
        from vtstore.chunking.params import ChunkParams

        p = getattr(store, "chunk_params", None)
        if p is None:
            cp = getattr(store, "chunker", None)
            if cp is not None and hasattr(cp, "avg"):
                try:
                    p = ChunkParams(min_size=cp.min, avg_size=cp.avg, max_size=cp.max)
                except (TypeError, ValueError):
                    p = None
        return cls(p)

    def leaves(self, source, store, name=None, mime_type=None, scanner=None) -> list[Block]:
        """Leaf blocks for `source` (bytes or a stream with `read`)."""
        from vtstore.chunking.blockify import chunks_of

        out: list[Block] = []
        batch: list[bytes] = []
        nbytes = 0
        for chunk in chunks_of(
            source, self.params, scanner=scanner, name=name, mime_type=mime_type
        ):
            batch.append(chunk)
            nbytes += len(chunk)
            if nbytes >= _READ_PIECE:
                out.extend(leaf_blocks(batch, store))
                batch, nbytes = [], 0
        if batch:
            out.extend(leaf_blocks(batch, store))
        return out


class RegionReader:
    """A read-only stream over `[start:end)` of a layer."""

    def __init__(self, layer: Layer, store, start: int, end: int):
        self.layer, self.store, self.pos, self.end = layer, store, start, end

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.end - self.pos
        n = min(n, self.end - self.pos, _READ_PIECE)
        if n <= 0:
            return b""
        data = self.layer.read(self.store, self.pos, n)
        self.pos += len(data)
        return data


def _leaf_map(block: Block, store, end: int) -> tuple[list[Block], list[int]]:
    """The leaves of `block` covering `[0:end)` and their start offsets."""
    leaves, offsets = [], []
    pos = 0
    for leaf, s, e in block.slices(store, 0, end):
        if s != 0 or e != leaf.span:
            leaf = SubBlock(leaf, s, e - s)
        leaves.append(leaf)
        offsets.append(pos)
        pos += e - s
    return leaves, offsets


def splice_block(
    layer: Layer, base: Block, store, chunker: ContentChunker, name=None, mime_type=None
) -> Block:
    """The block of frozen `layer` over its stored `base`, reusing untouched leaves.

    `name` and `mime_type` choose the format scanner for a region at offset 0.
    """
    size = layer.size
    visible = min(layer.base_len, size, base.span)
    if not layer.starts and visible == size:
        if size == base.span:
            return base
        # a pure truncation: keep the leaves before the cut, re-chunk the cut one
    leaves, offsets = _leaf_map(base, store, visible) if visible else ([], [])
    # regions to re-chunk: each extent widened to whole leaves of the base,
    # plus the zeros past the visible base and a leaf cut short by a truncation
    raw = list(zip(layer.starts, layer.ends, strict=True))
    if visible < size or visible < base.span:
        raw.append((max(visible - 1, 0), size))
    raw.sort()
    regions: list[list[int]] = []
    for s, e in raw:
        if s < visible:
            s = offsets[bisect.bisect_right(offsets, s) - 1]
        if e < visible:
            j = bisect.bisect_right(offsets, e) - 1
            if offsets[j] != e:
                e = offsets[j] + leaves[j].span
        if regions and s <= regions[-1][1]:
            regions[-1][1] = max(regions[-1][1], e)
        elif s < e:
            regions.append([s, e])
    out: list[Block] = []
    li = 0
    for s, e in regions:
        while li < len(leaves) and offsets[li] + leaves[li].span <= s:
            out.append(leaves[li])
            li += 1
        out.extend(_region_leaves(layer, store, s, e, chunker, name, mime_type))
        while li < len(leaves) and offsets[li] < e:
            li += 1
    out.extend(leaves[li:])
    if not out:
        return EMPTY
    return top_block_of(out, store)


def _region_leaves(layer, store, s, e, chunker, name=None, mime_type=None) -> list[Block]:
    """Leaves for `[s:e)`, long untouched zero runs as single RLE blocks."""
    out: list[Block] = []
    pos = s
    for zs, ze in [*_zero_gaps(layer, s, e), (e, e)]:
        if pos < zs:
            scanner = "auto" if pos == 0 else None
            reader = RegionReader(layer, store, pos, zs)
            out.extend(chunker.leaves(reader, store, name, mime_type, scanner))
        if zs < ze:
            out.append(RLEBlock(ze - zs, 0))
        pos = ze
    return out


def _zero_gaps(layer: Layer, s: int, e: int):
    """Long runs in `[s:e)` past the visible base that no extent covers."""
    starts, ends = layer.starts, layer.ends
    n = len(starts)
    pos = max(s, layer.base_len)
    i = bisect.bisect_right(ends, pos)
    while pos < e:
        if i < n and starts[i] <= pos:  # inside extent i
            pos = ends[i]
            i += 1
            continue
        nxt = min(starts[i] if i < n else e, e)
        if nxt - pos >= _ZERO_RUN:
            yield pos, nxt
        pos = nxt
