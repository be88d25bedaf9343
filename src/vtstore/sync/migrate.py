"""Hash migration: copy trees and archives into a store of another hash class.

A `Migrator` re-hashes every block a tree reaches and rewrites every block that
holds refs, so the new tree references only hashes of the destination's class:

- a leaf (`HashCodeBlock`) maps 1:1: the same data under its new hash (the old
  hash is checked first, so damage is reported, not copied);
- an indirect block is rewritten with its children's new refs (same spans; in
  the rare case the new refs no longer fit one block, because the new digest is
  longer, the children get a fresh indirect tree over them);
- a sub-block keeps its offset and span over the migrated superblock; literal
  and RLE blocks carry no hash and stay as they are;
- a directory is decoded, each entry migrated and the directory re-encoded with
  the same salt by `encode_dir_block` (the same cutting rules, so the new tree
  has the shape an import into the new class would give it);
- a dirent's `prev` (a block holding the previous version's binary dirent) is
  migrated as a dirent, and the hard-link table a mount keeps in a directory's
  `ext` (`tree/links.py`) is migrated as the directory tree it is.  Other `ext`
  data is opaque and kept as it is.

Directories are walked with an explicit stack (any depth); indirect trees are
at most `MAX_INDIRECT_DEPTH` deep.  Every block mapped is memoised by
`(role, old hashcode)` (a role because the same octets can be a file's leaf and
an indirect block or a directory piece elsewhere) in a `MigrationMap`, which
can persist the memo in a file so that an interrupted migration resumes
without re-hashing what it had done.  Records reach that file only after the
destination was flushed, so a recorded mapping's blocks, and everything below
them, are in the destination; on loading, a record whose new block the
destination lacks is dropped anyway.

Map file format::

    "VTMIGRATE 1 <oldclass> <newclass>\\n" record*
    record := varint(len(body) + 4) body crc32(body, 4 octets little-endian)
    body   := role(1 octet: L leaf, I indirect, D directory, P prev dirent)
              hashcode(old, binary) blockref(new, binary)

A torn last record (a kill mid-write), or one whose checksum fails, is cut off
on loading with everything after it (that work is redone).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zlib
from dataclasses import dataclass, field

from vtstore.archive import archive_in, store_identity
from vtstore.blocks import (
    DEFAULT_MAX_BLOCK_SIZE,
    MAX_INDIRECT_DEPTH,
    Block,
    HashCodeBlock,
    IndirectBlock,
    LiteralBlock,
    RLEBlock,
    SubBlock,
    block_for,
    decode_blockrefs,
    read_blockref,
    top_block_of,
)
from vtstore.codec import Reader, encode_varint
from vtstore.errors import (
    CorruptBlockError,
    FormatError,
    MissingBlockError,
    StoreError,
    VTError,
)
from vtstore.hashes import read_hashcode
from vtstore.tree.dir import decode_dir_data, encode_dir_block, read_dir_data
from vtstore.tree.dirent import T_DIR, Dirent, decode_dirent
from vtstore.tree.links import decode_ext, encode_ext

log = logging.getLogger(__name__)

__all__ = [
    "MigrateBlockError",
    "MigrateError",
    "MigrationMap",
    "Migrator",
    "default_archive_output",
    "verify_trees",
]

ROLE_LEAF = ord("L")
ROLE_INDIRECT = ord("I")
ROLE_DIR = ord("D")
ROLE_PREV = ord("P")
_ROLES = (ROLE_LEAF, ROLE_INDIRECT, ROLE_DIR, ROLE_PREV)
MAP_VERSION = 1
#: how many octets of small files' leaves are read and added in one batch
PREFETCH_BYTES = 8 << 20
#: `prev` and link tables nest migrations inside a migration; this deep at most
MAX_NESTING = 64


class MigrateError(StoreError):
    """A migration that cannot be done as asked (same hash class, a map file of
    other classes, an output archive that does not match its source)."""


class MigrateBlockError(MigrateError):
    """A block of the tree being migrated is missing or corrupt in the source;
    the message names the entry, `cause` is the store's error."""

    def __init__(self, msg: str, cause: VTError):
        super().__init__(msg)
        self.cause = cause
        self.hashcode = getattr(cause, "hashcode", None)


def _hashcode_of(b: Block):
    while type(b) is SubBlock:
        b = b.superblock
    return getattr(b, "hashcode", None)


class MigrationMap:
    """The memo `(role, old hashcode) -> new block`, optionally kept in a file.

    `put` records in memory; `commit()` flushes the destination store and then
    appends the records made since the last commit to the file (fsync'd).
    """

    def __init__(self, dst, oldclass, newclass, path: str | None = None):
        self.dst = dst
        self.path = path
        self.memo: dict[tuple[int, bytes], Block] = {}
        self._pending: list[bytes] = []
        self._header = f"VTMIGRATE {MAP_VERSION} {oldclass.hashname} {newclass.hashname}\n".encode()
        self.loaded = 0
        self.dropped = 0
        if path is not None:
            self._load()

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        except OSError as e:
            raise MigrateError(f"{self.path}: {e.strerror}") from None
        if not data:
            return
        if not data.startswith(self._header):
            first = data.split(b"\n", 1)[0][:60]
            raise MigrateError(
                f"{self.path} is not a map of this migration (it starts {first!r},"
                f" expected {self._header.strip().decode()})"
            )
        r = Reader(memoryview(data)[len(self._header) :])
        good = len(self._header)
        recs: list[tuple[int, bytes, Block]] = []
        while not r.at_end():
            try:
                rec = r.lbytes()
                body = rec[:-4]
                if len(rec) < 4 or zlib.crc32(body) != int.from_bytes(rec[-4:], "little"):
                    raise FormatError("record checksum")
                br = Reader(body)
                role = br.byte()
                old = read_hashcode(br)
                new = read_blockref(br)
                if role not in _ROLES or not br.at_end():
                    raise FormatError("bad record")
            except (FormatError, ValueError):
                break  # a torn (or damaged) tail: redo from there
            recs.append((role, old, new))
            good = len(self._header) + r.pos
        if good != len(data):
            log.warning("%s: cutting off %d octets of a torn tail", self.path, len(data) - good)
            with open(self.path, "r+b") as f:
                f.truncate(good)
        hcs = [_hashcode_of(n) for _, _, n in recs]
        want = [h for h in hcs if h is not None]
        present = iter(self.dst.contains_many(want)) if want else iter(())
        for (role, old, new), h in zip(recs, hcs, strict=True):
            if h is not None and not next(present):
                self.dropped += 1
                continue
            self.memo[(role, old)] = new
        self.loaded = len(self.memo)

    def get(self, role: int, old) -> Block | None:
        """The new block recorded for `old` in `role`, or None."""
        return self.memo.get((role, old))

    def put(self, role: int, old, new: Block) -> None:
        """Record a mapping (written to the file at the next `commit`)."""
        self.memo[(role, old)] = new
        if self.path is not None:
            body = bytes((role,)) + old.encode() + new.encode()
            rec = body + zlib.crc32(body).to_bytes(4, "little")
            self._pending.append(encode_varint(len(rec)) + rec)

    def commit(self) -> None:
        """Flush the destination, then make the pending records durable."""
        self.dst.flush()
        if self.path is None or not self._pending:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if os.fstat(fd).st_size == 0:
                    os.write(fd, self._header)
                os.write(fd, b"".join(self._pending))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise MigrateError(f"{self.path}: {e.strerror}") from None
        self._pending = []


@dataclass
class MigrateStats:
    """What a migration did."""

    leaves_hashed: int = 0
    leaf_bytes: int = 0
    indirect: int = 0
    dirs: int = 0
    reused: int = 0
    states: int = 0
    mapping: list = field(default_factory=list)


class Migrator:
    """Copies trees from `src` into `dst`, a store of another hash class.

    `mapfile`: where to keep the memo for resuming (None: memory only).
    `commit_every`: seconds between commits of the memo to the map file.
    """

    def __init__(self, src, dst, mapfile: str | None = None, commit_every: float = 2.0):
        if src.hashclass is dst.hashclass:
            raise MigrateError(
                f"{src.name} and {dst.name} both hold {src.hashclass.hashname} blocks:"
                " nothing to migrate (vt push copies between stores of one class)"
            )
        self.src = src
        self.dst = dst
        self.map = MigrationMap(dst, src.hashclass, dst.hashclass, mapfile)
        self.stats = MigrateStats()
        self.commit_every = commit_every
        self._fresh: dict = {}  # leaves just migrated by `_prefetch`, met next by their entry
        self._last_commit = time.monotonic()

    # -- blocks ----------------------------------------------------------------

    def _read(self, b: HashCodeBlock | IndirectBlock) -> bytes:
        h = b.hashcode
        data = self.src[h]
        if not h.check(data):
            raise CorruptBlockError(h, f"data in {self.src.name} does not match its hash")
        return data

    def _leaves(self, leaves: list[HashCodeBlock]) -> list[Block]:
        """New blocks for leaf blocks, the unmapped ones read and added in one batch."""
        out: list[Block | None] = []
        todo: dict = {}
        fresh = self._fresh
        for b in leaves:
            hit = fresh.pop(b.hashcode, None) if fresh else None
            if hit is None:
                hit = self.map.get(ROLE_LEAF, b.hashcode)
                if hit is not None and hit.span == b.span:
                    self.stats.reused += 1
            if hit is not None and hit.span == b.span:
                out.append(hit)
            else:
                todo.setdefault(b.hashcode, b)
                out.append(None)
        if todo:
            olds = list(todo.values())
            datas = self.src.get_many([b.hashcode for b in olds])
            for b, data in zip(olds, datas, strict=True):
                if len(data) != b.span:
                    raise CorruptBlockError(
                        b.hashcode, f"stored length {len(data)} but the ref says {b.span}"
                    )
                if not b.hashcode.check(data):
                    raise CorruptBlockError(
                        b.hashcode, f"data in {self.src.name} does not match its hash"
                    )
            news = self.dst.add_many(datas)
            for b, h in zip(olds, news, strict=True):
                self.map.put(ROLE_LEAF, b.hashcode, HashCodeBlock(h, b.span))
                self.stats.leaves_hashed += 1
                self.stats.leaf_bytes += b.span
            for i, b in enumerate(leaves):
                if out[i] is None:
                    out[i] = self.map.get(ROLE_LEAF, b.hashcode)
            self._maybe_commit()
        return out  # type: ignore[return-value]

    def block(self, b: Block | None) -> Block | None:
        """The block in `dst` with the same content as `b` in `src`."""
        if b is None:
            return None
        t = type(b)
        if t is LiteralBlock or t is RLEBlock:
            return b
        if t is SubBlock:
            chain = []
            while type(b) is SubBlock:
                chain.append(b)
                b = b.superblock
            new = self.block(b)
            for s in reversed(chain):
                new = SubBlock(new, s.offset, s.span)
            return new
        if t is HashCodeBlock:
            return self._leaves([b])[0]
        if t is IndirectBlock:
            return self._indirect(b)
        raise TypeError(f"not a block: {b!r}")  # pragma: no cover

    def _indirect(self, top: IndirectBlock) -> Block:
        """Rewrite an indirect tree bottom-up (an explicit stack, bounded depth)."""
        hit = self.map.get(ROLE_INDIRECT, top.hashcode)
        if hit is not None and hit.span == top.span:
            self.stats.reused += 1
            return hit
        stack: list[list] = [self._frame(top)]
        while True:
            frame = stack[-1]
            b, subs, leafmap, i, out = frame
            descend = None
            while i < len(subs):
                c = subs[i]
                i += 1
                t = type(c)
                if t is HashCodeBlock:
                    out.append(leafmap[c])
                elif t is IndirectBlock:
                    hit = self.map.get(ROLE_INDIRECT, c.hashcode)
                    if hit is not None and hit.span == c.span:
                        self.stats.reused += 1
                        out.append(hit)
                    else:
                        descend = c
                        break
                else:
                    out.append(self.block(c))
            frame[3] = i
            if descend is not None:
                if len(stack) >= MAX_INDIRECT_DEPTH:
                    raise CorruptBlockError(
                        descend.hashcode,
                        f"indirect blocks nested more than {MAX_INDIRECT_DEPTH} deep",
                    )
                stack.append(self._frame(descend))
                continue
            new = self._store_indirect(b, out)
            stack.pop()
            if not stack:
                return new
            stack[-1][4].append(new)

    def _frame(self, b: IndirectBlock) -> list:
        try:
            subs = list(decode_blockrefs(self._read(b)))
        except FormatError as e:
            raise CorruptBlockError(b.hashcode, f"indirect block does not decode: {e}") from None
        if sum(s.span for s in subs) != b.span:
            raise CorruptBlockError(b.hashcode, f"children do not span the {b.span} of the ref")
        leaves = [s for s in subs if type(s) is HashCodeBlock]
        leafmap = dict(zip(leaves, self._leaves(leaves), strict=True)) if leaves else {}
        return [b, subs, leafmap, 0, []]

    def _store_indirect(self, old: IndirectBlock, children: list[Block]) -> Block:
        data = b"".join(c.encode() for c in children)
        if len(data) <= DEFAULT_MAX_BLOCK_SIZE:
            new: Block = IndirectBlock(self.dst.add(data), old.span)
        else:  # longer digests: the refs no longer fit one block
            new = top_block_of(children, self.dst)
        self.map.put(ROLE_INDIRECT, old.hashcode, new)
        self.stats.indirect += 1
        return new

    # -- dirents ---------------------------------------------------------------

    def dirent(self, top: Dirent, _nesting: int = 0) -> Dirent:
        """The dirent in `dst` naming the same tree as `top` in `src`."""
        if _nesting > MAX_NESTING:
            raise FormatError(f"previous versions or link tables nested over {MAX_NESTING} deep")
        if top.type != T_DIR:
            return self._simple(top, _nesting)
        first = self._open_dir(top, _nesting)
        if isinstance(first, Dirent):
            return first
        stack = [first]  # frames: [dirent, entries, index, new entries, salt]
        while True:
            frame = stack[-1]
            d, entries, i, out, salt = frame
            pushed = False
            try:
                while i < len(entries):
                    e = entries[i]
                    i += 1
                    if e.type == T_DIR:
                        got = self._open_dir(e, _nesting)
                        if isinstance(got, Dirent):
                            out.append(got)
                        else:
                            frame[2] = i
                            stack.append(got)
                            pushed = True
                            break
                    else:
                        out.append(self._simple(e, _nesting))
            except (MissingBlockError, CorruptBlockError) as err:
                where = "/".join([f[0].name for f in stack[1:]] + [e.name])
                raise MigrateBlockError(f"{where}: {err}", err) from err
            if pushed:
                continue
            stack.pop()
            new = self._close_dir(d, out, salt, _nesting)
            if not stack:
                return new
            stack[-1][3].append(new)

    def _open_dir(self, d: Dirent, nesting: int):
        """A finished dirent when the directory needs no walk, else its frame."""
        b = d.block
        if b is None:
            return self._finish(d, None, nesting)
        h = _hashcode_of(b) if type(b) is not SubBlock else None
        if h is not None:
            hit = self.map.get(ROLE_DIR, h)
            if hit is not None:
                self.stats.reused += 1
                return self._finish(d, hit, nesting)
        try:
            entries, salt = decode_dir_data(read_dir_data(b, self.src))
        except FormatError as e:
            raise FormatError(f"directory {d.name or '(top)'!r}: {e}") from None
        self._prefetch(entries)
        return [d, entries, 0, [], salt]

    def _prefetch(self, entries: list[Dirent]) -> None:
        """Migrate the one-leaf files of a directory in batches (one round trip
        to a network store per batch, not per file).  A batch that fails is
        left to the entries' own pass, which names the entry at fault."""
        batch: list[HashCodeBlock] = []
        size = 0
        self._fresh.clear()
        for e in entries:
            b = e.block
            if e.type != T_DIR and type(b) is HashCodeBlock:
                if self.map.get(ROLE_LEAF, b.hashcode) is None:
                    batch.append(b)
                    size += b.span
            if batch and (size >= PREFETCH_BYTES or e is entries[-1]):
                try:
                    for old, new in zip(batch, self._leaves(batch), strict=True):
                        self._fresh[old.hashcode] = new  # not "reused" when met next
                except (MissingBlockError, CorruptBlockError):
                    pass
                batch, size = [], 0

    def _close_dir(self, d: Dirent, out: list[Dirent], salt, nesting: int) -> Dirent:
        b = d.block
        if not out and not salt and _hashcode_of(b) is None:
            new = b  # an empty directory carries no hash
        else:
            new = encode_dir_block(out, self.dst, salt=salt)
        h = _hashcode_of(b) if type(b) is not SubBlock else None
        if h is not None:
            self.map.put(ROLE_DIR, h, new)
        self.stats.dirs += 1
        self._maybe_commit()
        return self._finish(d, new, nesting)

    def _finish(self, d: Dirent, block: Block | None, nesting: int) -> Dirent:
        changes: dict = {}
        if block is not None and block is not d.block:
            changes["block"] = block
        if d.prev is not None:
            changes["prev"] = self._prev(d.prev, nesting)
        if d.ext is not None and d.type == T_DIR:
            try:
                table = decode_ext(d.ext)
            except (FormatError, ValueError):
                table = None  # not a link table: opaque, kept
            if table is not None and table[0] is not None:
                tb, nxt, count = table
                t = self.dirent(Dirent(T_DIR, block=tb), nesting + 1)
                changes["ext"] = encode_ext(t.block, nxt, count)
        return d.with_changes(**changes) if changes else d

    def _simple(self, e: Dirent, nesting: int) -> Dirent:
        return self._finish(e, self.block(e.block), nesting)

    def _prev(self, b: Block, nesting: int) -> Block:
        h = _hashcode_of(b) if type(b) is not SubBlock else None
        if h is not None:
            hit = self.map.get(ROLE_PREV, h)
            if hit is not None:
                return hit
        try:
            old = decode_dirent(b.data(self.src))
        except FormatError as e:
            raise FormatError(f"previous version {b}: {e}") from None
        new = block_for(self.dirent(old, nesting + 1).encode(), self.dst)
        if h is not None:
            self.map.put(ROLE_PREV, h, new)
        return new

    # -- commits and archives ------------------------------------------------------

    def _maybe_commit(self) -> None:
        now = time.monotonic()
        if now - self._last_commit >= self.commit_every:
            self.commit()

    def commit(self) -> None:
        """Make what was migrated so far durable in `dst` and in the map file."""
        self.map.commit()
        self._last_commit = time.monotonic()

    def archive(self, src_path: str, out_path: str) -> list[tuple[Dirent, Dirent]]:
        """Migrate every state of archive `src_path` into a new archive `out_path`.

        Each state keeps its `when`, `uuid`, `name` and `comment`; `out_path` +
        `.map` gets one NDJSON line per state with the old and new top dirents.
        Resumable: the states `out_path` already holds (the same `when`s, in the
        same order) are not written again.
        """
        import json

        old_arch = archive_in(src_path, self.src)
        if not old_arch.exists():
            raise MigrateError(f"{src_path}: no such archive")
        out = archive_in(out_path, self.dst)
        done = list(out.entries()) if out.exists() else []
        states = list(old_arch.entries())
        if len(done) > len(states) or any(
            a.when != b.when for a, b in zip(done, states, strict=False)
        ):
            raise MigrateError(f"{out_path} exists and is not a migration of {src_path}")
        refs_path = out_path + ".map"
        recorded = _complete_lines(refs_path)
        pairs = []
        for i, st in enumerate(states):
            new = self.dirent(st.dirent)
            self.commit()  # the state's blocks are in dst before its line is
            pairs.append((st.dirent, new))
            if i >= recorded:
                rec = {
                    "when": st.when,
                    "old": str(st.dirent),
                    "new": str(new),
                    "from": self.src.hashclass.hashname,
                    "to": self.dst.hashclass.hashname,
                }
                _append_line(refs_path, json.dumps(rec, ensure_ascii=False) + "\n")
            if i >= len(done):
                out.update(
                    new,
                    when=st.when,
                    uuid=st.uuid,
                    name=st.name,
                    comment=st.comment,
                    # asked after the commit: a new datadir has its uuid once written
                    store_id=store_identity(self.dst),
                )
            self.stats.states += 1
        return pairs


def _complete_lines(path: str) -> int:
    """How many complete lines `path` holds; a torn last line (a crash in the
    middle of an append) is cut off, so the next append starts a line."""
    try:
        with open(path, "r+b") as f:
            data = f.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                f.truncate(end)
    except FileNotFoundError:
        return 0
    except OSError as e:
        raise MigrateError(f"{path}: {e.strerror}") from None
    return data.count(b"\n")


def _append_line(path: str, line: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise MigrateError(f"{path}: {e.strerror}") from None


def default_archive_output(path: str, newclass) -> str:
    """`X.vt` migrated to class `sha1` goes to `X.sha1.vt`."""
    base = path[:-3] if path.endswith(".vt") else path
    return f"{base}.{newclass.hashname}.vt"


def verify_trees(old: Dirent, src, new: Dirent, dst) -> int:
    """Check that `new` in `dst` is the tree `old` is in `src`: the same entries
    in the same order, the same metadata, targets, devices and link groups, and
    the same content (compared by a SHA-256 of each file's bytes).  Return the
    number of entries compared; raise `MigrateError` at the first difference."""
    from itertools import zip_longest

    from vtstore.tree.links import iter_tree

    n = 0
    for a, b in zip_longest(iter_tree(old, src), iter_tree(new, dst)):
        if a is None or b is None or a[0] != b[0]:
            where = "/".join((a or b)[0]) or "(top)"
            raise MigrateError(f"verify: the trees differ at {where}: entries differ")
        path, x = a
        y = b[1]
        where = "/".join(path) or "(top)"
        for k in ("type", "name", "meta", "uuid", "target", "ino", "rdev"):
            if getattr(x, k) != getattr(y, k):
                raise MigrateError(f"verify: {where}: {k} differs")
        if x.type != T_DIR:
            if (x.block is None) != (y.block is None):
                raise MigrateError(f"verify: {where}: content differs")
            if x.block is not None:
                if x.block.span != y.block.span or _digest(x.block, src) != _digest(y.block, dst):
                    raise MigrateError(f"verify: {where}: content differs")
        n += 1
    return n


def _digest(b: Block, store) -> bytes:
    h = hashlib.sha256()
    try:
        for piece in b.chunks(store):
            h.update(piece)
    except KeyError as e:
        raise VTError(f"verify: {e}") from None
    return h.digest()
