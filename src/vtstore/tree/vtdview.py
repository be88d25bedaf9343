"""A tree as a self-contained `.vtd` bundle that is never built: laid out from
the blocks' references, read from the blocks at any offset.

The bundle is a data file of the datadir format (FORMATS.md §8.1), so
`file:X.vtd` opens it as a store: MAGIC and the header record, then one plain
blocks record per block, in this order:

1. the top dirent's binary form (as a block: the bundle's *top block*, which
   `vt ar` reads to find the tree; its hash names it in the store too);
2. the metadata: every directory block of the tree (indirect ones included)
   in walk order, and the blocks of the mount's hard-link table if the top
   has one;
3. the data: every file content block (indirect blocks, then their leaves,
   file by file in walk order).

Each block is stored once (the first time it is met).  The header's uuid is
derived from the top block, so the same tree makes the same bundle.
`VtdView(root, store)` reads the directory and indirect blocks to lay the
bundle out (leaves only by their span, never read) and then serves any range
(`span`, `read`, `slices`, like a block): the mount's `vtd` archive-as view
and `vt export --format vtd`, `vt ar create` use it.  `read_top(path)` gives
a bundle's top dirent back.
"""

from __future__ import annotations

import bisect
import mmap
import os

import blake3

from vtstore.blocks import HashCodeBlock, IndirectBlock, SubBlock
from vtstore.codec import encode_varint
from vtstore.errors import FormatError
from vtstore.hashes import default_hashclass
from vtstore.stores.vtd import (
    CRC_SIZE,
    ENC_PLAIN,
    TYPE_BLOCKS,
    decode_payload,
    encode_header,
    encode_record,
    iter_entries,
    parse_record_at,
    read_header,
)
from vtstore.tree.dir import walk
from vtstore.tree.dirent import T_DIR, T_FILE, Dirent, decode_dirent
from vtstore.tree.links import decode_ext

_FLAGS = TYPE_BLOCKS | ENC_PLAIN


def _record_length(n: int) -> int:
    """Octets of a plain record holding one block of `n` octets."""
    payload = len(encode_varint(n)) + n
    return len(encode_varint(_FLAGS)) + len(encode_varint(payload)) + payload + CRC_SIZE


class VtdView:
    """The `.vtd` bundle of the tree under dirent `root`; see the module docstring."""

    def __init__(self, root: Dirent, store):
        self.root = root
        top = root.encode()
        self._items: list[tuple[object, int]] = [(top, len(top))]  # (bytes or block, data length)
        seen: set = set()
        hashname = None
        files = []

        def add(block) -> None:
            nonlocal hashname
            stack = [block]
            while stack:
                b = stack.pop()
                if isinstance(b, SubBlock):
                    stack.append(b.superblock)
                    continue
                if not isinstance(b, (HashCodeBlock, IndirectBlock)) or b.hashcode in seen:
                    continue  # inline blocks (RLE, literal) live in their references
                seen.add(b.hashcode)
                hashname = hashname or type(b.hashcode).hashname
                if isinstance(b, IndirectBlock):
                    self._items.append((b, len(store[b.hashcode])))
                    stack.extend(reversed(b.subblocks(store)))
                else:
                    self._items.append((b, b.span))

        table = decode_ext(root.ext) if root.is_dir else None
        for _, e in walk(root, store):
            if e.type == T_DIR and e.block is not None:
                add(e.block)
            elif e.type == T_FILE and e.block is not None:
                files.append(e.block)
        if table is not None and table[0] is not None:
            for _, e in walk(Dirent(T_DIR, block=table[0]), store):
                if e.block is not None:
                    add(e.block)
        for b in files:
            add(b)
        hashname = hashname or default_hashclass().hashname
        uuid = blake3.blake3(top).digest()[:16].hex()
        self._prefix = encode_header(hashname, uuid)
        self._starts: list[int] = []
        off = len(self._prefix)
        for _, n in self._items:
            self._starts.append(off)
            off += _record_length(n)
        self.span = off
        self._store = store

    def __repr__(self) -> str:
        return f"<VtdView of {len(self._items)} blocks, {self.span} octets>"

    def __len__(self) -> int:
        return len(self._items)

    def _record(self, store, i: int) -> bytes:
        obj, _ = self._items[i]
        data = obj if isinstance(obj, bytes) else store[obj.hashcode]
        return encode_record(_FLAGS, encode_varint(len(data)) + bytes(data))

    def read(self, store, start: int = 0, end: int | None = None) -> bytes:
        """The octets `[start:end)` of the bundle."""
        end = self.span if end is None else min(end, self.span)
        if start >= end:
            return b""
        out = []
        pos = start
        if pos < len(self._prefix):
            out.append(self._prefix[pos : min(end, len(self._prefix))])
            pos = len(self._prefix)
        i = bisect.bisect_right(self._starts, pos) - 1
        while pos < end and i < len(self._items):
            r0 = self._starts[i]
            rec = self._record(store, i)
            out.append(rec[pos - r0 : end - r0])
            pos = r0 + len(rec)
            i += 1
        return b"".join(out)

    def slices(self, store, start: int, end: int):
        """The leaf blocks stored in `[start, end)` (for readahead)."""
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        while i < len(self._items) and self._starts[i] < end:
            obj = self._items[i][0]
            if isinstance(obj, HashCodeBlock):
                yield obj, 0, obj.span
            i += 1

    def write_to(self, fileobj, chunk: int = 1 << 22) -> int:
        """Write the whole bundle to `fileobj`; return its length."""
        pos = 0
        while pos < self.span:
            data = self.read(self._store, pos, pos + chunk)
            fileobj.write(data)
            pos += len(data)
        return pos


def top_of(buf) -> Dirent:
    """The top dirent of a `.vtd` bundle given as a buffer (its first block).

    Raises `FormatError` for anything that is not a bundle: bad magic or
    header, no intact blocks record after it, a first block that is no dirent.
    """
    _, pos = read_header(buf)
    rec = parse_record_at(buf, pos, len(buf))
    if isinstance(rec, str):
        raise FormatError(f"no block record after the header: {rec}")
    if rec.flags & 0x0C != TYPE_BLOCKS:
        raise FormatError("the record after the header holds no blocks")
    stored = buf[rec.payload_offset : rec.payload_offset + rec.payload_length]
    payload = decode_payload(rec.flags, stored)
    doff, dlen = next(iter_entries(payload))
    try:
        return decode_dirent(payload[doff : doff + dlen])
    except FormatError as e:
        raise FormatError(f"the first block is not a dirent: {e}") from None


def read_top(path: str) -> Dirent:
    """The top dirent of the `.vtd` bundle at `path` (its first block)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise FormatError(f"{path}: empty file, not a .vtd bundle")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                return top_of(buf)
            except FormatError as e:
                raise FormatError(f"{path}: {e}") from None
