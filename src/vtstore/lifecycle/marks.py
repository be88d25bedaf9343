"""Marking: the set of blocks reachable from a set of roots.

`MarkSet` keeps the first 8 octets of each digest in 256 sorted arrays (one
per first octet), de-duplicated a bucket at a time as they grow, so its memory
is 8 octets a reachable block plus a little, not a Python object per block.  `Marker` walks dirents and blocks top-down,
reading only interior blocks (indirect blocks and directory data), never file
content: a leaf is marked by the hashcode its parent names.  An indirect block
or directory met before is not walked again, so unchanged subtrees shared by
many states cost one set lookup each (those sets hold only interior blocks).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator

from vtstore.blocks import (
    HashCodeBlock,
    IndirectBlock,
    LiteralBlock,
    SubBlock,
    decode_blockrefs,
)
from vtstore.codec import decode_varint
from vtstore.errors import FormatError, VTError
from vtstore.tree.dir import read_dir_data
from vtstore.tree.dirent import F_PREV, T_DIR, Dirent
from vtstore.tree.dirscan import FB_BLOCK, scan_dir_data

_FB_PREV = 1 << F_PREV


class MarkSet:
    """The marked digests, compact (see the module docstring): each kept as
    its first `PREFIX` octets, in 256 buckets (by first octet) of a sorted
    `array('Q')` and a short unsorted tail that is merged in when it grows.

    `add` any time; `sorted_iter` yields each prefix once, ascending, as
    `bytes`.  A prefix answers "marked" for every digest that begins with it:
    a collision (about one in 10^9 for 10^5 marks and 10^5 unmarked blocks)
    keeps a garbage block, never loses a live one.  8 octets a block rather
    than 32 (blake3), and a tail bounded by the sorted part: 157k marks with
    ~1M adds (10 states of a 1 GiB tree) take 1.6 MiB, not 17."""

    PREFIX = 8
    #: octets of unsorted tail a bucket holds at least before merging
    MIN_TAIL = 4096

    def __init__(self, digest_size: int):
        self.n = min(digest_size, self.PREFIX)
        self._b = [bytearray() for _ in range(256)]
        self._s = [array("Q") for _ in range(256)]  # sorted unique prefixes, as ints

    def add(self, d) -> None:
        """Mark digest `d` (a `HashCode` or its octets)."""
        i = d[0]
        b = self._b[i]
        b += d[: self.n]
        if len(b) > max(self.MIN_TAIL, len(self._s[i]) * self.n):
            self._compact(i)

    def add_many(self, ds) -> None:
        """`add` each digest of `ds` (one call for an indirect block's leaves)."""
        b, s, n, lim = self._b, self._s, self.n, self.MIN_TAIL
        for d in ds:
            i = d[0]
            bi = b[i]
            bi += d[:n]
            if len(bi) > lim and len(bi) > len(s[i]) * n:
                self._compact(i)

    def _compact(self, i: int) -> None:
        tail = self._b[i]
        if not tail:
            return
        n = self.n
        if n != 8:  # short digests: pad each prefix to 8 octets
            tail = b"".join(bytes(tail[j : j + n]) + bytes(8 - n) for j in range(0, len(tail), n))
        a = array("Q")
        a.frombytes(tail)
        if _LITTLE:
            a.byteswap()  # big-endian octets: the ints sort as the octets do
        self._s[i] = array("Q", sorted(set(a).union(self._s[i])))
        self._b[i] = bytearray()

    def __len__(self) -> int:
        for i in range(256):
            self._compact(i)
        return sum(len(s) for s in self._s)

    def nbytes(self) -> int:
        """The memory the marks take (sorted and not yet sorted)."""
        return sum(len(s) for s in self._s) * self.n + sum(len(b) for b in self._b)

    def sorted_iter(self) -> Iterator[bytes]:
        """Every marked prefix once, ascending (compacting each bucket on the
        way); compare a digest's first `len(prefix)` octets with it."""
        n = self.n
        for i in range(256):
            self._compact(i)
            a = array("Q", self._s[i])
            if _LITTLE:
                a.byteswap()
            raw = a.tobytes()
            for j in range(0, len(raw), 8):
                yield raw[j : j + n]


_LITTLE = sys.byteorder == "little"


def _scan_refs(raw: bytes, hashid: int, dsize: int):
    """The children of an indirect block whose refs are all plain hashcode
    refs of this hash class (what the writers make): `(leaf digests,
    [(indirect digest, span)])`; None for anything else, which the full
    decoder (`decode_blockrefs`) then reads or rejects.  About 3x faster than
    building a `Block` per child, for the walk's bulk: the leaves."""
    leaves, inner = [], []
    pos, n = 0, len(raw)
    try:
        while pos < n:
            ln = raw[pos]
            start, end = pos + 1, pos + 1 + ln
            if ln >= 0x80 or end > n:
                return None
            flags = raw[start]
            if flags > 1:  # typed (run, literal, sub-block) or unknown flags
                return None
            p = start + 1
            while raw[p] & 0x80:  # the span, not needed to mark
                p += 1
            if raw[p + 1] != hashid or p + 2 + dsize != end:
                return None
            d = raw[p + 2 : end]
            if flags:
                span, _ = decode_varint(raw, start + 1, p + 1)
                inner.append((d, span))
            else:
                leaves.append(d)
            pos = end
    except (IndexError, FormatError):
        return None
    return leaves, inner


class _ReadAhead:
    """The marker's store, with the interior blocks a directory names read in
    batches (`get_many`: one index transaction and few preads for hundreds of
    blocks) before the walk asks for them one by one.  What a batch could not
    read is left to the single read, which reports the damage where it is.
    Bounded: at most `cap` octets read ahead and not yet asked for."""

    BATCH = 512

    def __init__(self, store, cap: int = 8 << 20):
        self.store = store
        self.cap = cap
        self._pre: dict[bytes, bytes] = {}
        self._bytes = 0

    def fetch(self, hashcodes) -> None:
        pre = self._pre
        want = list({bytes(h): h for h in hashcodes if bytes(h) not in pre}.values())
        for i in range(0, len(want), self.BATCH):
            if self._bytes >= self.cap:
                return
            part = want[i : i + self.BATCH]
            try:
                datas = self.store.get_many(part)
            except VTError:
                continue  # read one by one when asked: each problem named
            for h, d in zip(part, datas, strict=True):
                pre[bytes(h)] = d
                self._bytes += len(d)

    def clear(self) -> None:
        self._pre.clear()
        self._bytes = 0

    def __getitem__(self, h):
        d = self._pre.pop(bytes(h), None)
        if d is None:
            return self.store[h]
        self._bytes -= len(d)
        return d

    def get_many(self, hashcodes) -> list:
        return [self[h] for h in hashcodes]

    def __getattr__(self, name):
        return getattr(self.store, name)


class Marker:
    """Mark every block reachable from the dirents and blocks given.

    `problems` lists the interior blocks that could not be read (missing,
    corrupt, undecodable): below them nothing is known, so a collector must not
    delete anything when there are any.  `new` (when a set is given) collects
    the digests marked by this marker for the first time."""

    def __init__(self, store, marks: MarkSet | None = None, on_block=None):
        self.store = store
        self._ahead = _ReadAhead(store)
        self.marks = marks if marks is not None else MarkSet(store.hashclass.digest_size)
        self.on_block = on_block
        self.problems: list[str] = []
        self.interior: set[bytes] = set()  # indirect blocks walked
        self.dirs: set[bytes] = set()  # directories whose entries were walked
        self.new: set[bytes] | None = None
        self.reads = 0

    def _mark(self, h) -> None:
        self.marks.add(h)  # a HashCode or its digest as bytes
        if self.new is not None:
            self.new.add(bytes(h))

    def _read(self, h, where: str) -> bytes | None:
        try:
            data = self._ahead[h]
        except VTError as e:
            self.problems.append(f"{where}: {e}")
            return None
        self.reads += 1
        if self.on_block is not None:
            self.on_block(len(data))
        return data

    def block(self, b, where: str = "") -> None:
        """Mark `b` and every block under it (as data: a directory's entries
        are not walked; see `dirent`)."""
        hc = self.store.hashclass
        todo = [b]
        while todo:
            b = todo.pop()
            while isinstance(b, SubBlock):
                b = b.superblock
            if isinstance(b, HashCodeBlock):
                self._mark(b.hashcode)
            elif isinstance(b, IndirectBlock):
                h = b.hashcode
                key = bytes(h)
                if key in self.interior:
                    continue
                self.interior.add(key)
                self._mark(key)
                raw = self._read(h, where)
                if raw is None:
                    continue
                fast = _scan_refs(raw, hc.hashid, hc.digest_size)
                if fast is not None:
                    leaves, inner = fast
                    self.marks.add_many(leaves)
                    if self.new is not None:
                        self.new.update(leaves)
                    todo.extend(IndirectBlock(hc(d), span) for d, span in inner)
                    continue
                try:
                    todo.extend(decode_blockrefs(raw))
                except FormatError as e:
                    self.problems.append(f"{where}: indirect block {h} does not decode: {e}")

    def dirent(self, root: Dirent, where: str = "") -> None:
        """Mark everything `root` reaches: its blocks, a previous version's,
        and for a directory every entry's, recursively.  Directory entries are
        read with the stat cache's scanner (`scan_dir_data`): only the content
        blockref of each is decoded, not its metadata."""
        hc = self.store.hashclass
        hid, dsize = hc.hashid, hc.digest_size
        todo = [(root.is_dir, root.block, root.prev, where or root.name or "/")]
        while todo:
            is_dir, b, prev, path = todo.pop()
            if prev is not None:
                self.block(prev, path)
            if b is None:
                continue
            if not is_dir:
                self.block(b, path)
                continue
            top = b
            while isinstance(top, SubBlock):
                top = top.superblock
            key = getattr(top, "hashcode", None)
            if key is not None:
                key = bytes(key) + b.span.to_bytes(8, "big")
                if key in self.dirs:
                    continue
                self.dirs.add(key)
            elif not isinstance(top, LiteralBlock):
                continue  # a run: no entries
            self.block(b, path)
            try:
                entries, _ = scan_dir_data(read_dir_data(b, self._ahead))
            except VTError as e:
                self.problems.append(f"{path}: directory {b}: {e}")
                continue
            self.reads += 1
            base = path.rstrip("/")
            n0 = len(todo)
            try:
                for e in entries:
                    if e.fields & _FB_PREV:
                        d = e.dirent()
                        todo.append((d.is_dir, d.block, d.prev, f"{base}/{d.name}"))
                    elif e.fields & FB_BLOCK:
                        if e.type != T_DIR:
                            # a file's content ref, read without a Block: a
                            # leaf is marked, an indirect block queued
                            fast = _scan_refs(e.block_octets() or b"", hid, dsize)
                            if fast is not None and len(fast[0]) + len(fast[1]) == 1:
                                if fast[0]:
                                    self.marks.add_many(fast[0])
                                    if self.new is not None:
                                        self.new.update(fast[0])
                                else:
                                    (dg, span), path_e = fast[1][0], f"{base}/{e.name}"
                                    todo.append((False, IndirectBlock(hc(dg), span), None, path_e))
                                continue
                        todo.append((e.type == T_DIR, e.block(), None, f"{base}/{e.name}"))
            except VTError as err:
                self.problems.append(f"{path}: directory {b}: {err}")
            self._read_ahead(todo[n0:])
        self._ahead.clear()

    def _read_ahead(self, items) -> None:
        """Read in batches the interior blocks of a directory's entries that
        the walk will ask for (not those of subtrees walked before)."""
        want = []
        for is_dir, b, _prev, _path in items:
            top = b
            while isinstance(top, SubBlock):
                top = top.superblock
            if isinstance(top, IndirectBlock):
                if bytes(top.hashcode) not in self.interior:
                    want.append(top.hashcode)
            elif is_dir and isinstance(top, HashCodeBlock):
                if bytes(top.hashcode) + b.span.to_bytes(8, "big") not in self.dirs:
                    want.append(top.hashcode)
        if want:
            self._ahead.fetch(want)
