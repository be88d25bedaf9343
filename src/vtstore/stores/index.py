"""The LMDB block index of a datadir (and of a `file:` store).

One LMDB environment with three named databases:

- `blocks`: digest → `IndexEntry` (six varints: file number, record flags,
  payload offset, payload length, data offset in the decoded payload, data length)
- `files`: 4-octet big-endian file number → JSON `{"uuid", "sealed", "indexed_to"}`
- `meta`: counter name → 8-octet big-endian integer

The map is 1 TiB of sparse address space, so it never needs resizing in
normal use.  LMDB allows one open of an environment per process, so opens are
shared, reference counted, by real path.  Writes are batched by the caller into
one transaction per `commit`; readers start a fresh read transaction per call and
so always see what other processes have committed.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import lmdb

from vtstore.codec import encode_varint
from vtstore.errors import FormatError, StoreError

MAP_SIZE = 1 << 40
#: entries per write transaction.  A transaction of random keys dirties (and
#: copies, and writes) nearly one leaf page per entry until it has touched them
#: all, so larger ones write far less per entry; LMDB holds the dirty pages in
#: memory, so this also bounds the index's memory (8192 pages: 32 MiB).
TXN_ENTRIES = 8192
_FILENUM = struct.Struct(">I")
_COUNTER = struct.Struct(">Q")
_VARINT1 = [bytes((i,)) for i in range(128)]
_last_prefix: tuple = ((), b"")


def _fast_varint(n: int) -> bytes:
    """`encode_varint`, quicker for the small values index entries hold."""
    if n < 0x80:
        return _VARINT1[n]
    if n < 0x4000:
        return bytes((0x80 | n >> 7, n & 0x7F))
    if n < 0x200000:
        return bytes((0x80 | n >> 14, 0x80 | (n >> 7) & 0x7F, n & 0x7F))
    return encode_varint(n)


class IndexEntry(NamedTuple):
    """Where a block lives: a record of a data file and a span of its payload."""

    filenum: int
    flags: int
    payload_offset: int
    payload_length: int
    data_offset: int
    data_length: int

    def encode(self) -> bytes:
        """Six varints, in field order."""
        global _last_prefix
        key = self[:4]
        last = _last_prefix  # the blocks of one frame share the first four fields
        if last[0] == key:
            prefix = last[1]
        else:
            prefix = b"".join([_fast_varint(v) for v in key])
            _last_prefix = (key, prefix)
        return prefix + _fast_varint(self[4]) + _fast_varint(self[5])

    @classmethod
    def decode(cls, buf) -> IndexEntry:
        """The inverse of `encode`; raises `FormatError` on a malformed value.

        One pass over the octets (every lookup decodes an entry), with the
        checks of `decode_varint`: canonical, at most 10 octets a number.
        """
        vals = []
        n = used = 0
        for b in bytes(buf):
            if used == 0 and b == 0x80:
                raise FormatError(f"index entry: non-canonical varint {len(vals) + 1}")
            n = (n << 7) | (b & 0x7F)
            used += 1
            if b & 0x80:
                if used >= 10:
                    raise FormatError(f"index entry: varint {len(vals) + 1} too long")
                continue
            vals.append(n)
            n = used = 0
        if used or len(vals) != 6:
            raise FormatError(
                f"index entry of {len(vals)} numbers{' and a partial one' if used else ''}"
            )
        return cls(*vals)


@dataclass
class FileInfo:
    """A data file known to the index."""

    num: int
    uuid: str
    sealed: bool = False
    indexed_to: int = 0  # every record before this offset is committed

    def encode(self) -> bytes:
        return json.dumps(
            {"uuid": self.uuid, "sealed": self.sealed, "indexed_to": self.indexed_to},
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, num: int, buf) -> FileInfo:
        d = json.loads(bytes(buf))
        return cls(num, d["uuid"], bool(d.get("sealed")), int(d.get("indexed_to", 0)))


class _SharedEnv:
    def __init__(self, key: str, env: lmdb.Environment):
        self.key = key
        self.env = env
        self.refs = 0
        self.write_lock = threading.Lock()
        self.blocks = env.open_db(b"blocks")
        self.files = env.open_db(b"files")
        self.meta = env.open_db(b"meta")


_ENVS: dict[str, _SharedEnv] = {}
_ENVS_LOCK = threading.Lock()


def _lmdb_error(path: str, e: Exception) -> StoreError:
    # LMDB reports a short write (a full disk) as EIO: say what it most likely is
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)) or ".")
        full = st.f_bavail * st.f_frsize < max(1 << 20, st.f_blocks * st.f_frsize // 100)
    except OSError:
        full = False
    if full and "No space left" not in str(e):
        return StoreError(f"index {path}: No space left on device ({e})")
    return StoreError(f"index {path}: {e}")


def _first(item):
    return item[0]


class _SomePresent(Exception):
    """A `putmulti` found some keys present: redo the transaction entry by entry."""


class LMDBIndex:
    """The block index; every method is safe to call from several threads."""

    def __init__(self, path: str, subdir: bool = True):
        self.path = path
        key = os.path.realpath(path)
        with _ENVS_LOCK:
            shared = _ENVS.get(key)
            if shared is None:
                try:
                    env = lmdb.open(
                        path,
                        map_size=MAP_SIZE,
                        subdir=subdir,
                        max_dbs=4,
                        readahead=False,
                        max_readers=512,
                        max_spare_txns=4,
                        # one data sync per transaction, the meta page synced by
                        # `commit` at its end: integrity after a crash, and
                        # durability when `commit` returns, for fewer syncs
                        metasync=False,
                    )
                except lmdb.Error as e:
                    raise _lmdb_error(path, e) from None
                try:
                    env.reader_check()  # clear slots of dead processes
                    shared = _SharedEnv(key, env)
                except lmdb.Error as e:
                    env.close()
                    raise _lmdb_error(path, e) from None
                _ENVS[key] = shared
            shared.refs += 1
        self._shared = shared
        self._env = shared.env
        self.closed = False

    def close(self) -> None:
        """Release this handle; the environment closes with its last handle."""
        with _ENVS_LOCK:
            self.close_locked()

    def bloat(self) -> tuple[int, int]:
        """`(file_pages, packed_pages)`: the pages the index file holds, and
        about how many its entries fill when packed.  The difference is free
        pages copy-on-write left behind (the file never shrinks by itself) and
        pages random inserts left a third empty."""
        sh = self._shared
        info = self._env.info()
        with self._env.begin() as txn:
            entries = sum(txn.stat(db)["entries"] for db in (sh.blocks, sh.files, sh.meta))
        # an entry: 8-octet node header, 2-octet pointer, 32-octet key, ~16-octet value
        packed = 4 + entries * 58 // (info.get("psize", 4096) or 4096)
        return info["last_pgno"] + 1, packed

    def close_compacted(self) -> bool:
        """Close this handle, rewriting the index file without its free pages.

        Only when this is the environment's last handle in the process; the
        caller must hold the datadir exclusively (no other process has the
        index open).  The compact copy is made beside the file, synced, and
        renamed over it, so a crash leaves one or the other.  Return whether
        it compacted.
        """
        sh = self._shared
        with _ENVS_LOCK:
            if self.closed or sh.refs != 1 or not os.path.isdir(self.path):
                self.close_locked()
                return False
            tmp = os.path.join(self.path, ".compact")
            try:
                shutil.rmtree(tmp, ignore_errors=True)
                os.mkdir(tmp)
                self._rebuild_into(tmp)
            except (OSError, lmdb.Error):
                shutil.rmtree(tmp, ignore_errors=True)
                self.close_locked()
                return False
            self.close_locked()
            try:
                os.rename(os.path.join(tmp, "data.mdb"), os.path.join(self.path, "data.mdb"))
                dfd = os.open(self.path, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            except OSError:
                return False
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return True

    def _rebuild_into(self, path: str) -> None:
        """Write every table, in key order, into a new environment at `path`.

        Appending sorted keys fills every page (LMDB's own compacting copy
        keeps pages as full as they were, about two thirds for random keys).
        """
        sh = self._shared
        dst = lmdb.open(path, map_size=MAP_SIZE, subdir=True, max_dbs=4, metasync=False)
        try:
            with self._env.begin() as src, dst.begin(write=True) as out:
                for name, db in ((b"blocks", sh.blocks), (b"files", sh.files), (b"meta", sh.meta)):
                    ddb = dst.open_db(name, txn=out)
                    out.cursor(db=ddb).putmulti(src.cursor(db=db), append=True)
            dst.sync(True)
        finally:
            dst.close()
        os.unlink(os.path.join(path, "lock.mdb"))

    def close_locked(self) -> None:
        """`close`, with `_ENVS_LOCK` already held."""
        if self.closed:
            return
        self.closed = True
        self._shared.refs -= 1
        if self._shared.refs == 0:
            del _ENVS[self._shared.key]
            self._env.close()

    # -- blocks --------------------------------------------------------------

    def get(self, digest) -> IndexEntry | None:
        """The entry for `digest`, or None."""
        with self._env.begin(db=self._shared.blocks) as txn:
            v = txn.get(digest)
        return None if v is None else IndexEntry.decode(v)

    def contains(self, digest) -> bool:
        """Whether `digest` is indexed."""
        with self._env.begin(db=self._shared.blocks) as txn:
            return txn.get(digest) is not None

    def contains_many(self, digests: Iterable) -> list[bool]:
        """For each digest, whether it is indexed (one read transaction)."""
        with self._env.begin(db=self._shared.blocks) as txn:
            return [txn.get(d) is not None for d in digests]

    def count(self) -> int:
        """The number of indexed blocks."""
        with self._env.begin() as txn:
            return txn.stat(self._shared.blocks)["entries"]

    def iter_keys(self, start=None, batch: int = 1024) -> Iterator[bytes]:
        """Indexed digests >= `start` in ascending order, read `batch` per transaction
        so that a slow consumer does not pin an old snapshot."""
        key = None if start is None else bytes(start)
        inclusive = True
        while True:
            keys = []
            with self._env.begin(db=self._shared.blocks) as txn:
                cur = txn.cursor()
                ok = cur.first() if key is None else cur.set_range(key)
                if ok and not inclusive and cur.key() == key:
                    ok = cur.next()
                while ok and len(keys) < batch:
                    keys.append(cur.key())
                    ok = cur.next()
            yield from keys
            if len(keys) < batch:
                return
            key = keys[-1]
            inclusive = False

    def iter_items(self, batch: int = 1024) -> Iterator[tuple[bytes, IndexEntry]]:
        """Every `(digest, entry)` in key order, in batches as `iter_keys`."""
        key = None
        while True:
            items = []
            with self._env.begin(db=self._shared.blocks) as txn:
                cur = txn.cursor()
                ok = cur.first() if key is None else cur.set_range(key)
                if ok and key is not None and cur.key() == key:
                    ok = cur.next()
                while ok and len(items) < batch:
                    items.append((cur.key(), IndexEntry.decode(cur.value())))
                    ok = cur.next()
            yield from items
            if len(items) < batch:
                return
            key = items[-1][0]

    def commit(
        self,
        entries: Iterable[tuple[bytes, IndexEntry]] = (),
        files: Iterable[FileInfo] = (),
        counters: dict[str, int] | None = None,
        delete: Iterable[bytes] = (),
        replace: bool = False,
    ) -> tuple[int, int]:
        """Write new entries (kept if already present unless `replace`), then in
        the last transaction the file table updates, counter increments and
        deletions.  Return `(new_blocks, new_bytes)`.

        Entries go `TXN_ENTRIES` to a transaction: LMDB keeps the pages a write
        transaction dirtied in memory, so one huge transaction of random keys
        would cost memory in proportion to the index.  A crash between them
        leaves entries without their file's `indexed_to`; recovery re-puts them.
        """
        # in key order: neighbouring puts share B-tree pages
        return self._commit_sorted(
            sorted(entries, key=_first), files, counters, delete, replace, None
        )

    def commit_values(
        self,
        pairs: list[tuple[bytes, bytes]],
        nbytes: int,
        files: Iterable[FileInfo] = (),
        counters: dict[str, int] | None = None,
    ) -> tuple[int, int]:
        """`commit` for entries already encoded: `(digest, IndexEntry.encode())`
        pairs (digests exact `bytes`) of `nbytes` block octets in all, as the
        datadir's writer makes them a frame at a time.  Kept if present, like
        `commit`; return `(new_blocks, new_bytes)`.

        Each transaction's entries go in with one `putmulti` call rather than a
        Python call per entry.
        """
        pairs.sort()  # in key order: neighbouring puts share B-tree pages
        return self._commit_sorted(pairs, files, counters, (), False, nbytes)

    def _commit_sorted(self, entries, files, counters, delete, replace, nbytes):
        """`commit` (`nbytes` None) or `commit_values` of sorted entries,
        `TXN_ENTRIES` to a transaction, the rest in the last one."""
        chunks = [entries[i : i + TXN_ENTRIES] for i in range(0, len(entries), TXN_ENTRIES)]
        new = octets = 0
        for i, chunk in enumerate(chunks or [[]]):
            last = i == len(chunks) - 1 or not chunks
            encoded = None
            if nbytes is not None:
                # the last transaction adds the octets counter: all but those present
                encoded = nbytes - octets if last else -1
            n, nb = self._commit_txn(
                chunk,
                files if last else (),
                counters if last else None,
                delete if last else (),
                replace,
                encoded,
            )
            new += n
            octets += nb
        self._sync()
        return new, octets if nbytes is None else nbytes - octets

    def _sync(self) -> None:
        """Make every committed transaction durable (the env is opened without
        metasync)."""
        try:
            self._env.sync(True)
        except lmdb.Error as e:
            raise _lmdb_error(self.path, e) from None

    def _commit_txn(
        self, entries, files, counters, delete, replace, encoded: int | None = None
    ) -> tuple[int, int]:
        """One write transaction; return `(new_blocks, octets)`.

        `entries` are `(digest, IndexEntry)` pairs and `octets` those of the
        new ones; or, if `encoded` is given, encoded pairs and `octets` those
        of the ones present already, with `encoded` (if not negative) the
        octets counter's increment before subtracting them.
        """
        try:
            return self._txn(entries, files, counters, delete, replace, encoded, True)
        except _SomePresent:  # rare: another process stored some of these blocks
            return self._txn(entries, files, counters, delete, replace, encoded, False)

    def _txn(self, entries, files, counters, delete, replace, encoded, multi) -> tuple[int, int]:
        sh = self._shared
        new = octets = 0
        try:
            with sh.write_lock, self._env.begin(write=True) as txn:
                for digest in delete:
                    txn.delete(digest, db=sh.blocks)
                cur = txn.cursor(db=sh.blocks)
                if encoded is None:
                    for digest, entry in entries:
                        if cur.put(digest, entry.encode(), overwrite=replace):
                            new += 1
                            octets += entry.data_length
                    added = octets
                else:
                    if multi:
                        new = cur.putmulti(entries, overwrite=False)[1]
                        if new != len(entries):
                            raise _SomePresent  # aborts the transaction
                    else:
                        for digest, value in entries:
                            if cur.put(digest, value, overwrite=False):
                                new += 1
                            else:
                                octets += IndexEntry.decode(value).data_length
                    added = encoded - octets if encoded >= 0 else 0
                for fi in files:
                    # indexed_to only grows and a seal is for ever, whoever commits
                    k = _FILENUM.pack(fi.num)
                    old = txn.get(k, db=sh.files)
                    if old is not None:
                        prev = FileInfo.decode(fi.num, old)
                        if prev.uuid == fi.uuid:
                            fi.indexed_to = max(fi.indexed_to, prev.indexed_to)
                            fi.sealed = fi.sealed or prev.sealed
                    txn.put(k, fi.encode(), db=sh.files)
                incs = dict(counters or {})
                if new:
                    incs["blocks_added"] = incs.get("blocks_added", 0) + new
                if added:
                    incs["bytes_added"] = incs.get("bytes_added", 0) + added
                for name, inc in incs.items():
                    if inc:
                        k = name.encode()
                        old = txn.get(k, db=sh.meta)
                        val = (_COUNTER.unpack(old)[0] if old else 0) + inc
                        txn.put(k, _COUNTER.pack(max(val, 0)), db=sh.meta)
        except lmdb.Error as e:
            raise _lmdb_error(self.path, e) from None
        return new, octets

    def delete_file_entries(self, num: int, digests: Iterable[bytes]) -> int:
        """Delete those of `digests` whose entry points into file `num`; drop the
        file from the table.  Return how many entries were deleted."""
        sh = self._shared
        n = 0
        try:
            with sh.write_lock, self._env.begin(write=True) as txn:
                for d in digests:
                    v = txn.get(d, db=sh.blocks)
                    if v is not None and IndexEntry.decode(v).filenum == num:
                        txn.delete(d, db=sh.blocks)
                        n += 1
                txn.delete(_FILENUM.pack(num), db=sh.files)
        except lmdb.Error as e:
            raise _lmdb_error(self.path, e) from None
        self._sync()
        return n

    def clear(self) -> None:
        """Empty the blocks and files tables and the block counters (before a reindex)."""
        sh = self._shared
        try:
            with sh.write_lock, self._env.begin(write=True) as txn:
                txn.drop(sh.blocks, delete=False)
                txn.drop(sh.files, delete=False)
                for k in (b"blocks_added", b"bytes_added"):
                    txn.delete(k, db=sh.meta)
        except lmdb.Error as e:
            raise _lmdb_error(self.path, e) from None
        self._sync()

    # -- files and counters ----------------------------------------------

    def files(self) -> dict[int, FileInfo]:
        """The data file table."""
        out = {}
        with self._env.begin(db=self._shared.files) as txn:
            for k, v in txn.cursor():
                num = _FILENUM.unpack(k)[0]
                out[num] = FileInfo.decode(num, v)
        return out

    def file_info(self, num: int) -> FileInfo | None:
        """One entry of the file table, or None."""
        with self._env.begin(db=self._shared.files) as txn:
            v = txn.get(_FILENUM.pack(num))
        return None if v is None else FileInfo.decode(num, v)

    def new_file(self, uuid_hex: str, indexed_to: int) -> FileInfo:
        """Allocate the next file number for `uuid_hex` and record it."""
        sh = self._shared
        try:
            with sh.write_lock, self._env.begin(write=True) as txn:
                old = txn.get(b"next_file", db=sh.meta)
                num = _COUNTER.unpack(old)[0] if old else 1
                txn.put(b"next_file", _COUNTER.pack(num + 1), db=sh.meta)
                fi = FileInfo(num, uuid_hex, False, indexed_to)
                txn.put(_FILENUM.pack(num), fi.encode(), db=sh.files)
        except lmdb.Error as e:
            raise _lmdb_error(self.path, e) from None
        self._sync()
        return fi

    def counters(self) -> dict[str, int]:
        """Every counter in `meta`."""
        with self._env.begin(db=self._shared.meta) as txn:
            return {bytes(k).decode(): _COUNTER.unpack(v)[0] for k, v in txn.cursor()}

    def snapshot(self) -> Snapshot:
        """A consistent read-only view (one read transaction) for long walks such
        as fsck; use it as a context manager."""
        return Snapshot(self)


class Snapshot:
    """One read transaction over the whole index."""

    def __init__(self, index: LMDBIndex):
        self._sh = index._shared
        self._txn = index._env.begin()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._txn.abort()
        return False

    def get(self, digest) -> IndexEntry | None:
        v = self._txn.get(digest, db=self._sh.blocks)
        return None if v is None else IndexEntry.decode(v)

    def count(self) -> int:
        return self._txn.stat(self._sh.blocks)["entries"]

    def files(self) -> dict[int, FileInfo]:
        out = {}
        for k, v in self._txn.cursor(db=self._sh.files):
            num = _FILENUM.unpack(k)[0]
            out[num] = FileInfo.decode(num, v)
        return out

    def items(self) -> Iterator[tuple[bytes, IndexEntry]]:
        for k, v in self._txn.cursor(db=self._sh.blocks):
            yield bytes(k), IndexEntry.decode(v)


def iter_index_and_pending(hashclass, index, writer, start=None):
    """Hashcodes >= `start` held by `index` or still pending in `writer`, ascending,
    each once: what a store with a background writer lists."""
    import heapq

    pend = []
    if writer is not None:
        pend = sorted(bytes(h) for h in writer.pending_keys())
        if start is not None:
            pend = [p for p in pend if p >= start]
    merged = heapq.merge(index.iter_keys(start), pend)

    def gen():
        last = None
        for k in merged:
            if k != last:
                yield hashclass(k)
                last = k

    return gen()
