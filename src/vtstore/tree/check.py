"""Checking a tree: every reachable block present and correct."""

from __future__ import annotations

from collections.abc import Callable

from vtstore.blocks import Block, IndirectBlock, decode_blockrefs
from vtstore.errors import CorruptBlockError, FormatError, MissingBlockError
from vtstore.tree.dir import MAX_DIR_DATA, decode_dir_data
from vtstore.tree.dirent import Dirent


class TreeChecker:
    """Walk everything reachable from dirents and blocks, verifying each stored block once.

    One checker can walk many roots (every state of an archive): blocks and
    directory subtrees seen before are not walked again, and `problems`
    accumulates."""

    def __init__(self, store, on_block: Callable[[int], None] | None = None):
        self.store = store
        self.on_block = on_block
        self.problems: list[str] = []
        self.blocks = 0
        self.bytes = 0
        self._seen: set = set()
        self._dirs_done: set = set()

    def _fetch(self, h, where: str) -> bytes | None:
        try:
            data = self.store[h]
        except MissingBlockError:
            self.problems.append(f"{where}: missing block {h}")
            return None
        except CorruptBlockError as e:
            self.problems.append(f"{where}: {e}")
            return None
        if not h.check(data):
            self.problems.append(f"{where}: corrupt block {h}: data does not match its hash")
            return None
        self.blocks += 1
        self.bytes += len(data)
        if self.on_block:
            self.on_block(len(data))
        return data

    def block_data(self, b: Block, where: str, want_data: bool) -> bytes | None:
        """Check `b` and everything below it; return its data if `want_data`
        (a directory's: bounded by `MAX_DIR_DATA`, and never a run).

        The walk keeps its own stack, at most `MAX_INDIRECT_DEPTH` levels, so a
        hostile chain of indirect blocks (even one naming itself) is a problem
        reported, not a `RecursionError`."""
        from vtstore.blocks import MAX_INDIRECT_DEPTH, HashCodeBlock, RLEBlock, SubBlock

        if want_data and b.span > MAX_DIR_DATA:
            self.problems.append(f"{where}: directory data of {b.span:,} octets is over the limit")
            return None
        out = bytearray() if want_data else None
        ok = True
        stack = [(b, 0, b.span, 0)]
        while stack:
            blk, s, e, depth = stack.pop()
            if depth > MAX_INDIRECT_DEPTH:
                self.problems.append(
                    f"{where}: blocks nested more than {MAX_INDIRECT_DEPTH} levels deep"
                )
                return None
            if isinstance(blk, SubBlock):
                stack.append((blk.superblock, blk.offset + s, blk.offset + e, depth + 1))
                continue
            if isinstance(blk, IndirectBlock | HashCodeBlock):
                key = (blk.hashcode, want_data)
                if not want_data and key in self._seen:
                    continue
                self._seen.add(key)
                raw = self._fetch(blk.hashcode, where)
                if raw is None:
                    ok = False
                    continue
                if isinstance(blk, HashCodeBlock):
                    if len(raw) != blk.span:
                        self.problems.append(
                            f"{where}: block {blk.hashcode} has {len(raw)} octets,"
                            f" ref says {blk.span}"
                        )
                        ok = False
                    elif want_data:
                        out += raw[s:e]
                    continue
                try:
                    subs = list(decode_blockrefs(raw))
                except FormatError as err:
                    self.problems.append(
                        f"{where}: indirect block {blk.hashcode} does not decode: {err}"
                    )
                    ok = False
                    continue
                if sum(x.span for x in subs) != blk.span:
                    self.problems.append(
                        f"{where}: indirect block {blk.hashcode} children do not add up to its span"
                    )
                    ok = False
                    continue
                todo = []
                off = 0
                for sub in subs:  # children in order; only the range wanted when reading
                    end = off + sub.span
                    if not want_data:
                        todo.append((sub, 0, sub.span, depth + 1))
                    elif end > s and off < e:
                        todo.append((sub, max(s, off) - off, min(e, end) - off, depth + 1))
                    off = end
                stack.extend(reversed(todo))
            elif want_data:
                if isinstance(blk, RLEBlock):  # no writer puts a run in a directory
                    self.problems.append(f"{where}: directory data holds a run of {e - s} octets")
                    return None
                out += blk.data(self.store)[s:e]
        return bytes(out) if ok and want_data else None

    def dirent(self, root: Dirent, path: str = "") -> None:
        """Check dirent `root` and its subtree (iteratively: depth is unbounded)."""
        todo = [(root, path)]
        while todo:
            e, path = todo.pop()
            where = path or e.name or "/"
            if e.prev is not None:
                self.block_data(e.prev, f"{where} (previous version)", False)
            if e.block is None:
                continue
            if not e.is_dir:
                self.block_data(e.block, where, False)
                continue
            # a directory block already walked has had its whole subtree checked
            # (content addressing): successive states of an archive share most
            # of theirs, so checking every state costs what changed
            key = _dir_key(e.block)
            if key is not None:
                if key in self._dirs_done:
                    continue
                self._dirs_done.add(key)
            data = self.block_data(e.block, where, True)
            if data is None:
                continue
            try:
                entries, _ = decode_dir_data(data)
            except FormatError as err:
                self.problems.append(f"{where}: directory does not decode: {err}")
                continue
            for sub in reversed(entries):
                todo.append((sub, f"{path}/{sub.name}" if path else sub.name))


def _dir_key(b: Block):
    """The identity of a directory's block for `TreeChecker._dirs_done`: its
    hashcode (with the slice of a sub-block), or None for literal data."""
    from vtstore.blocks import SubBlock

    if isinstance(b, SubBlock):
        inner = _dir_key(b.superblock)
        return None if inner is None else (inner, b.offset, b.span)
    h = getattr(b, "hashcode", None)
    return None if h is None else (h, b.span)


def check(obj, store, on_block=None) -> TreeChecker:
    """Check a dirent or block; the result lists `problems` (empty when all is well)."""
    c = TreeChecker(store, on_block)
    if isinstance(obj, Dirent):
        c.dirent(obj)
    else:
        c.block_data(obj, str(obj)[:40], False)
    return c
