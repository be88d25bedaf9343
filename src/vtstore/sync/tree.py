"""Tree sync: copy everything reachable from dirents and blocks to another store.

The walk goes top-down, one batch of blocks per round (`WALK_ROUND_FACTOR`
times the send batch, 4096 by default): a `contains_many` on the destination
for each batch (one round trip for a network store, whose client pipelines
its CONTAINS requests), a `get_many` on the source for the interior blocks
whose children it needs.  A
block the destination already holds ends the walk below it: its whole subtree
is taken to be there too.  The blocks found missing are then sent bottom-up
(children before parents, a post-order of the missing part of the DAG), in
batches, each block hashed against its hashcode first.

Why "parent present => subtree present" holds: this module only adds a block
once every block below it has been added (and `flush` is called every
`flush_bytes`, so a kill loses at most the unflushed tail, parents included),
and `vt pack`/`vt save` write children before the blocks that name them (a
file's `IndirectBuilder` emits each indirect block after its leaves, a
directory is encoded after its entries' blocks are stored).  A destination
written only that way never holds a parent without its subtree, which also
makes an interrupted sync resumable: run it again and the finished subtrees
are skipped at their tops.  A destination written otherwise (blocks copied by
hand, a datadir that lost data files) can break the assumption; `full=True`
(`vt push --full`) walks every block and asks for each one instead.

A source block that is missing or does not match its hashcode is reported
(path and hashcode) and never sent, and neither is any block above it, so the
destination keeps the invariant; the rest is copied.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from vtstore.blocks import (
    Block,
    HashCodeBlock,
    IndirectBlock,
    SubBlock,
    decode_blockrefs,
)
from vtstore.errors import FormatError, MissingBlockError, VTError
from vtstore.tree.diff import raw_entries
from vtstore.tree.dir import MAX_DIR_DATA, decode_dir_data, read_dir_data
from vtstore.tree.dirent import T_DIR, Dirent, decode_dirent

#: how many blocks one send batch holds at most
DEFAULT_BATCH = 512
#: one round of the walk asks about this many times as many blocks: a round is a
#: round trip to a remote destination (its CONTAINS requests are pipelined), so
#: the walk of a tree whose directories changed costs few of them
WALK_ROUND_FACTOR = 8
#: one send batch holds at most this many octets
BATCH_BYTES = 8 << 20
#: interior blocks kept from the walk for the send (else fetched again)
CACHE_BYTES = 64 << 20

_DATA, _DIR = 0, 1


@dataclass
class SyncStats:
    """What a sync did (or, dry, would do).  `total`/`done` count the blocks to
    send (`outstanding` is their difference); `present` counts the blocks the
    walk found in the destination, `subtrees_skipped` those of them with
    children that were therefore not walked."""

    total: int = 0
    total_bytes: int = 0
    done: int = 0
    bytes_sent: int = 0
    checked: int = 0
    #: rounds of the walk (each one `contains_many` on the destination)
    rounds: int = 0
    #: directory entries equal to the base tree's (`TreeSync.add_dirent`), not walked
    unchanged: int = 0
    present: int = 0
    subtrees_skipped: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    phase: str = "walk"

    @property
    def outstanding(self) -> int:
        """Blocks found missing and not sent yet."""
        return self.total - self.done - self.failed


class SyncError(VTError):
    """A sync that could not copy everything: some source blocks were missing
    or corrupt (the rest was copied)."""

    exit_code = 1


class TreeSync:
    """Copy the trees under the roots given with `add_dirent`/`add_block` from
    `src` to `dst` (see the module docstring); `run` does it and returns the
    `SyncStats`.

    `full`: do not trust a present block for its subtree, walk and ask for every
    block (a destination with `missing_blocks`, a block server, walks a file's
    tree itself and answers for all of it at once).  `dry_run`: walk and count, send nothing.  `on_progress(stats)` is
    called after each round of the walk and each batch sent."""

    def __init__(
        self,
        src,
        dst,
        *,
        full: bool = False,
        dry_run: bool = False,
        batch: int = DEFAULT_BATCH,
        flush_bytes: int = 64 << 20,
        on_progress: Callable[[SyncStats], None] | None = None,
    ):
        if src.hashclass is not dst.hashclass:
            raise VTError(
                f"{src.name} holds {src.hashclass.hashname} blocks and {dst.name}"
                f" {dst.hashclass.hashname}: copying between hash classes is vt migrate's job"
            )
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.src, self.dst = src, dst
        self.full, self.dry_run = full, dry_run
        self.batch, self.flush_bytes = batch, flush_bytes
        self.on_progress = on_progress
        self.stats = SyncStats()
        self._todo: deque = deque()  # (block, kind, where, parent node or -1)
        # the missing part of the DAG: node i is hashcode _hcs[i]
        self._index: dict = {}
        self._hcs: list = []
        self._size: list[int] = []
        self._where: list[str] = []
        self._children: list[list[int]] = []
        self._roots: list[int] = []
        self._bad: set[int] = set()
        self._cache: dict[int, bytes] = {}
        self._cache_bytes = 0
        self._present: set = set()
        self._dirs_walked: set = set()

    # -- roots -------------------------------------------------------------

    def add_dirent(self, d: Dirent, where: str = "", base: Dirent | None = None) -> None:
        """Copy `d` and everything below it.

        `base`, a tree the destination holds whole (the state of the archive
        this one follows, its top block present there), makes the walk compare
        each directory it has to read with the same directory of `base`: an
        entry equal to one there, octet for octet, names blocks the destination
        holds, so it is neither decoded nor asked about (a second push of a
        tree with a few changed files asks about those files only).  Ignored
        with `full`."""
        if base is not None and (self.full or not (base.is_dir and d.is_dir)):
            base = None
        self._add_entry(d, where or d.name or "/", -1, base.block if base else None)

    def add_block(self, b: Block, where: str = "", is_dir: bool = False) -> None:
        """Copy block `b` and the blocks below it (a directory's entries too if `is_dir`)."""
        self._todo.append((b, _DIR if is_dir else _DATA, where or str(b)[:40], -1, None))

    def _add_entry(self, d: Dirent, where: str, parent: int, base: Block | None = None) -> None:
        """Queue `d`'s blocks; `base`: the block of the directory of the base tree
        at the same path, if `d` is a directory and there is one."""
        if d.prev is not None:
            self._todo.append((d.prev, _DATA, f"{where} (previous version)", parent, None))
        if d.block is not None:
            kind = _DIR if d.is_dir else _DATA
            self._todo.append((d.block, kind, where, parent, base if kind == _DIR else None))

    # -- the walk ------------------------------------------------------------

    def _problem(self, node: int, what: str) -> None:
        if node >= 0:
            self._bad.add(node)
        self.stats.problems.append(what)

    def _link(self, parent: int, child: int) -> None:
        (self._children[parent] if parent >= 0 else self._roots).append(child)

    def _new_node(self, h, size: int, where: str) -> int:
        i = len(self._hcs)
        self._index[h] = i
        self._hcs.append(h)
        self._size.append(size)
        self._where.append(where)
        self._children.append([])
        self.stats.total += 1
        self.stats.total_bytes += size
        return i

    def _walk(self) -> None:
        while self._todo:
            self._walk_round()
            self._report()

    def _walk_round(self) -> None:
        n = min(self.batch * WALK_ROUND_FACTOR, len(self._todo))
        items = [self._todo.popleft() for _ in range(n)]
        ask: dict = {}  # hashcode -> first item naming it this round
        later: list = []  # (item, stored block) for the walk below, once answered
        for item in items:
            blk, kind, where, parent, base = item
            if kind == _DIR and not isinstance(blk, HashCodeBlock | IndirectBlock):
                # literal or sub-block directory data: no block of its own vouches
                # for the entries, so they are always walked
                self._walk_dir(blk, where, parent, base=base)
                if isinstance(blk, SubBlock):
                    self._todo.append((blk.superblock, _DATA, where, parent, None))
                continue
            while isinstance(blk, SubBlock):
                blk = blk.superblock
            if not isinstance(blk, HashCodeBlock | IndirectBlock):
                continue  # literal and run blocks are in the ref itself
            h = blk.hashcode
            node = self._index.get(h)
            if node is not None:  # already found missing: one more parent
                self._link(parent, node)
                if kind == _DIR and (h, blk.span) not in self._dirs_walked:
                    # its blocks are queued already; the entries are not
                    self._dirs_walked.add((h, blk.span))
                    self._walk_dir(blk, where, node, base=base)
                continue
            if h in self._present:
                if self.full and kind == _DIR and (h, blk.span) not in self._dirs_walked:
                    later.append((item, blk, -1))
                continue
            ask.setdefault(h, []).append((item, blk))
        if ask:
            hcs = list(ask)
            answers = self.dst.contains_many(hcs)
            self.stats.checked += len(hcs)
            self.stats.rounds += 1
            for h, there in zip(hcs, answers, strict=True):
                pairs = ask[h]
                (blk_item, blk) = pairs[0]
                if there:
                    self._present.add(h)
                    self.stats.present += 1
                    if not self.full:
                        if isinstance(blk, IndirectBlock) or blk_item[1] == _DIR:
                            self.stats.subtrees_skipped += 1
                        continue
                    if blk_item[1] == _DATA and self._vouched(blk):
                        continue
                    node = -1
                else:
                    size = blk.span if isinstance(blk, HashCodeBlock) else 0
                    node = self._new_node(h, size, blk_item[2])
                for item, b in pairs:
                    if node >= 0:
                        self._link(item[3], node)
                    later.append((item, b, node))
        self._descend(later)

    def _vouched(self, blk) -> bool:
        """With `full`: whether the destination itself checked that every block
        under the data block `blk` is present (a block server answers
        INDIRECT_COMPLETE walking next to its store: one request instead of a
        walk across the network)."""
        ask = getattr(self.dst, "missing_blocks", None)
        if ask is None or not isinstance(blk, IndirectBlock):
            return False
        try:
            checked, missing = ask(blk)
        except VTError:
            return False  # it cannot tell (an old server, a corrupt block): walk
        if missing:
            return False
        self.stats.checked += checked
        self.stats.subtrees_skipped += 1
        return True

    def _descend(self, later: list) -> None:
        """Queue the children of the interior blocks of one round (their data
        fetched from the source in one batch, hashed, and kept for the send)."""
        need = []
        for item, blk, node in later:
            # indirect blocks, and one-block directories (most): read in one batch
            if isinstance(blk, IndirectBlock) or (item[1] == _DIR and blk.span <= MAX_DIR_DATA):
                if node < 0 or node not in self._cache:
                    need.append((blk.hashcode, node, item[2]))
        datas = self._fetch(need)
        for item, blk, node in later:
            _, kind, where, _parent, base = item
            if node in self._bad:
                continue
            raw = datas.get(blk.hashcode)
            if raw is None and node >= 0:
                raw = self._cache.get(node)
            if isinstance(blk, IndirectBlock):
                if raw is None:
                    continue
                try:
                    subs = list(decode_blockrefs(raw))
                except FormatError as e:
                    self._problem(
                        node, f"{where}: indirect block {blk.hashcode} does not decode: {e}"
                    )
                    continue
                if sum(s.span for s in subs) != blk.span:
                    self._problem(
                        node, f"{where}: indirect block {blk.hashcode} children do not add up"
                    )
                    continue
                # a directory's data blocks are plain data below its top block
                for s in subs:
                    self._todo.append((s, _DATA, where, node, None))
            if kind == _DIR:
                key = (blk.hashcode, blk.span)
                if key in self._dirs_walked:
                    continue
                self._dirs_walked.add(key)
                if isinstance(blk, HashCodeBlock):
                    if raw is None:
                        continue  # _fetch reported it
                    if len(raw) != blk.span:
                        self._problem(
                            node, f"{where}: block {blk.hashcode} is not {blk.span} octets"
                        )
                        continue
                data = raw if isinstance(blk, HashCodeBlock) else None
                self._walk_dir(blk, where, node, data, base)

    def _walk_dir(self, blk: Block, where: str, node: int, data=None, base=None) -> None:
        bases: dict = {}
        try:
            if data is None:
                data = read_dir_data(blk, _VerifyingReader(self.src))
            changed = self._changed_entries(data, base, bases) if base is not None else None
            entries = decode_dir_data(data)[0] if changed is None else changed
        except VTError as e:  # missing, corrupt, or not directory data
            self._problem(node, f"{where}: directory {blk}: {e}")
            if node < 0:
                self.stats.failed += 1
            return
        for e in entries:
            self._add_entry(e, f"{where.rstrip('/')}/{e.name}", node, bases.get(e.name))

    def _changed_entries(self, data, base: Block, bases: dict) -> list[Dirent] | None:
        """The entries of directory `data` that differ from those of the base
        directory `base` (None when the base cannot be read or decoded: then
        every entry is walked); `bases` gets, for each changed entry, the block
        of the base's directory of the same name.  An entry equal to one of
        the base's, octet for octet, is the same object down to its content,
        which the destination holds (`add_dirent`)."""
        new = raw_entries(data)
        try:
            old = raw_entries(read_dir_data(base, _VerifyingReader(self.src)))
            in_new = set(new)
            # only directories matter here, and a dirent starts with its type
            gone = (r for r in old if r[0] == T_DIR and r not in in_new)
            for e in map(decode_dirent, gone):
                if e.is_dir and e.block is not None:
                    bases[e.name] = e.block
        except VTError:
            bases.clear()
            return None
        in_old = set(old)
        out = []
        for r in new:
            if r in in_old:
                self.stats.unchanged += 1
                continue
            e = decode_dirent(r)
            if not e.name:
                raise FormatError("a directory entry without a name")
            out.append(e)
        return out

    def _fetch(self, need: list) -> dict:
        """The verified data of `need` ((hashcode, node, where) ...) from the source."""
        out: dict = {}
        if not need:
            return out
        hcs = [h for h, _, _ in need]
        errors: dict = {}
        try:
            datas = self.src.get_many(hcs)
        except VTError:  # find which: one at a time
            datas = []
            for h in hcs:
                try:
                    datas.append(self.src[h])
                except VTError as e:  # missing, or caught corrupt by the store itself
                    datas.append(None)
                    errors[h] = e
        good = [d for d in datas if d is not None]
        sums = iter(self.src.hashclass.from_data_many(good))
        for (h, node, where), data in zip(need, datas, strict=True):
            if data is None:
                why = errors.get(h)
                if why is None or isinstance(why, MissingBlockError):
                    self._problem(node, f"{where}: missing block {h} in {self.src.name}")
                else:
                    self._problem(node, f"{where}: {self.src.name}: {why}")
                continue
            if next(sums) != h:
                self._problem(node, f"{where}: corrupt block {h} in {self.src.name}")
                continue
            out[h] = data
            if node < 0:
                continue
            if not self._size[node]:  # an indirect block: its size is known now
                self._size[node] = len(data)
                self.stats.total_bytes += len(data)
            # what the walk read is kept for the send (up to a bound), not read twice
            if self.stats.phase == "walk" and self._cache_bytes + len(data) <= CACHE_BYTES:
                self._cache[node] = data
                self._cache_bytes += len(data)
        return out

    # -- the send ------------------------------------------------------------

    def _post_order(self) -> list[int]:
        """The missing nodes, every one after all its children."""
        out: list[int] = []
        state = bytearray(len(self._hcs))  # 0 new, 1 open, 2 done
        for root in self._roots:
            if state[root]:
                continue
            stack = [(root, iter(self._children[root]))]
            state[root] = 1
            while stack:
                node, it = stack[-1]
                for c in it:
                    if not state[c]:
                        state[c] = 1
                        stack.append((c, iter(self._children[c])))
                        break
                else:
                    stack.pop()
                    state[node] = 2
                    out.append(node)
        return out

    def _send(self) -> None:
        order = self._post_order()
        ok = bytearray(len(self._hcs))
        unflushed = 0
        i = 0
        while i < len(order):
            j, nbytes = i, 0
            while j < len(order) and j - i < self.batch and nbytes < BATCH_BYTES:
                nbytes += self._size[order[j]]
                j += 1
            part = order[i:j]
            i = j
            uncached = [n for n in part if n not in self._cache and n not in self._bad]
            fetched = self._fetch([(self._hcs[n], n, self._where[n]) for n in uncached])
            send = []
            for n in part:
                if n in self._bad or not all(ok[c] for c in self._children[n]):
                    self._bad.add(n)  # a block below is bad: never send what names it
                    self.stats.failed += 1
                    continue
                data = self._cache.pop(n, None)
                if data is None:
                    data = fetched.get(self._hcs[n])
                if data is None:  # _fetch reported it
                    self.stats.failed += 1
                    continue
                ok[n] = 1
                send.append(data)
            if send and not self.dry_run:
                self.dst.add_many(send)
            sent = sum(len(d) for d in send)
            self.stats.done += len(send)
            self.stats.bytes_sent += sent
            unflushed += sent
            if unflushed >= self.flush_bytes and not self.dry_run:
                self.dst.flush()  # what arrived survives a kill: the resume skips it
                unflushed = 0
            self._report()
        if not self.dry_run:
            self.dst.flush()

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.stats)

    def run(self) -> SyncStats:
        """Walk, then send; return the stats (problems listed, not raised)."""
        t0 = time.monotonic()
        self._walk()
        self.stats.phase = "send"
        if self.dry_run:
            self.stats.elapsed = time.monotonic() - t0
            self.stats.failed += len(self._bad)
            return self.stats
        self._send()
        self.stats.elapsed = time.monotonic() - t0
        return self.stats


class _VerifyingReader:
    """The source as `read_dir_data` reads it, each stored block hashed against
    its hashcode (a directory must not be decoded from corrupt data)."""

    def __init__(self, store):
        self.store = store

    def __getitem__(self, h):
        data = self.store[h]
        if not h.check(data):
            from vtstore.errors import CorruptBlockError

            raise CorruptBlockError(h)
        return data

    def get_many(self, hcs):
        return [self[h] for h in hcs]


def sync_tree(src, dst, roots, **kw) -> SyncStats:
    """Copy each of `roots` (dirents or blocks) from `src` to `dst`; see `TreeSync`."""
    ts = TreeSync(src, dst, **kw)
    for r in roots:
        if isinstance(r, Dirent):
            ts.add_dirent(r)
        else:
            ts.add_block(r)
    return ts.run()


__all__ = ["SyncError", "SyncStats", "TreeSync", "sync_tree"]
