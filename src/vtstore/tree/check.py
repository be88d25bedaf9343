"""Checking a tree: every reachable block present and correct."""

from __future__ import annotations

from collections.abc import Callable

from vtstore.blocks import Block, IndirectBlock, decode_blockrefs
from vtstore.errors import CorruptBlockError, FormatError, MissingBlockError
from vtstore.tree.dir import decode_dir_data
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
        """Check `b` and everything below it; return its data if `want_data`."""
        from vtstore.blocks import HashCodeBlock, SubBlock

        if isinstance(b, SubBlock):
            data = self.block_data(b.superblock, where, want_data)
            return None if data is None else data[b.offset : b.offset + b.span]
        if isinstance(b, IndirectBlock | HashCodeBlock):
            key = (b.hashcode, want_data)
            if not want_data and key in self._seen:
                return None
            self._seen.add(key)
            raw = self._fetch(b.hashcode, where)
            if raw is None:
                return None
            if isinstance(b, HashCodeBlock):
                if len(raw) != b.span:
                    self.problems.append(
                        f"{where}: block {b.hashcode} has {len(raw)} octets, ref says {b.span}"
                    )
                    return None
                return raw
            try:
                subs = list(decode_blockrefs(raw))
            except FormatError as e:
                self.problems.append(f"{where}: indirect block {b.hashcode} does not decode: {e}")
                return None
            if sum(s.span for s in subs) != b.span:
                self.problems.append(
                    f"{where}: indirect block {b.hashcode} children do not add up to its span"
                )
                return None
            parts = [self.block_data(s, where, want_data) for s in subs]
            if not want_data or any(p is None for p in parts):
                return None
            return b"".join(parts)
        return b.data(self.store) if want_data else None

    def dirent(self, e: Dirent, path: str = "") -> None:
        """Check dirent `e` and its subtree."""
        where = path or e.name or "/"
        if e.prev is not None:
            self.block_data(e.prev, f"{where} (previous version)", False)
        if e.block is None:
            return
        if e.is_dir:
            # a directory block already walked has had its whole subtree checked
            # (content addressing): successive states of an archive share most
            # of theirs, so checking every state costs what changed
            key = _dir_key(e.block)
            if key is not None:
                if key in self._dirs_done:
                    return
                self._dirs_done.add(key)
            data = self.block_data(e.block, where, True)
            if data is None:
                return
            try:
                entries, _ = decode_dir_data(data)
            except FormatError as err:
                self.problems.append(f"{where}: directory does not decode: {err}")
                return
            for sub in entries:
                self.dirent(sub, f"{path}/{sub.name}" if path else sub.name)
        else:
            self.block_data(e.block, where, False)


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
