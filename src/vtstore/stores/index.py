"""The LMDB block index of a datadir (and of a `file:` store).

One LMDB environment with three named databases:

- `blocks`: digest → `IndexEntry` (six varints: file number, record flags,
  payload offset, payload length, data offset in the decoded payload, data length)
- `files`: 4-octet big-endian file number → JSON `{"uuid", "sealed", "indexed_to"}`
- `meta`: counter name → 8-octet big-endian integer

The map starts small and grows when a write finds it full (see
`vtstore.stores.lmdbenv`, which also checks the file before LMDB maps it and
opens read-only media without a lock file).  Every value read is validated; a
damaged index raises `IndexDamagedError`, one line naming the index and the
cure (`vt reindex`).  LMDB allows one open of an environment per process, so
opens are shared, reference counted, by real path.  Writes are batched by the caller into
one transaction per `commit`; readers start a fresh read transaction per call and
so always see what other processes have committed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import threading
from collections import namedtuple
from collections.abc import Iterable, Iterator

import lmdb

from vtstore.codec import encode_varint
from vtstore.errors import FormatError, StoreError
from vtstore.stores.lmdbenv import (
    IndexDamagedError,
    Reading,
    SharedEnv,
    initial_map_size,
    lmdb_error,
    open_env,
    probe_index,
    reraise,
)

log = logging.getLogger(__name__)

__all__ = ["IndexDamagedError", "IndexEntry", "FileInfo", "LMDBIndex", "Snapshot", "probe_index"]
#: entries per write transaction.  A transaction of random keys dirties (and
#: copies, and writes) nearly one leaf page per entry until it has touched them
#: all, so larger ones write far less per entry; LMDB holds the dirty pages in
#: memory, so this also bounds the index's memory (8192 pages: 32 MiB).
TXN_ENTRIES = 8192
_FILENUM = struct.Struct(">I")
_SIX = struct.Struct("6Q")  # what _vtdread.decode_entries packs an entry as
try:
    from vtstore.stores._vtdread import decode_entries as _decode_entries
except ImportError:  # pragma: no cover - the extension is built by setup.py
    _decode_entries = None
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


# collections.namedtuple, not typing.NamedTuple: no `typing` import at start-up
class IndexEntry(
    namedtuple(
        "IndexEntry",
        "filenum flags payload_offset payload_length data_offset data_length",
    )
):
    """Where a block lives: a record of a data file and a span of its payload
    (`filenum`, `flags`, `payload_offset`, `payload_length`, `data_offset`,
    `data_length`: ints)."""

    __slots__ = ()

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

        Natively when `_vtdread` is built (every lookup decodes an entry);
        else, and to name what is wrong with a malformed value, one pass over
        the octets in Python with the checks of `decode_varint`: canonical, at
        most 10 octets a number.
        """
        if _decode_entries is not None:
            try:
                return cls._make(_SIX.unpack(_decode_entries((buf,))[0]))
            except ValueError:
                pass
        return cls._decode_py(buf)

    @classmethod
    def decode_many(cls, bufs: list) -> list[IndexEntry]:
        """`decode` of each of `bufs`, in one native call when it can."""
        if _decode_entries is not None:
            try:
                packed = _decode_entries(bufs)[0]
            except ValueError:
                pass
            else:
                make = cls._make
                return [make(t) for t in _SIX.iter_unpack(packed)]
        return [cls.decode(b) for b in bufs]

    @classmethod
    def _decode_py(cls, buf) -> IndexEntry:
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


class FileInfo:
    """A data file known to the index: its number, uuid, whether it is sealed,
    and `indexed_to` (every record before this offset is committed).  A plain
    class, not a dataclass: no `dataclasses` import at start-up."""

    __slots__ = ("num", "uuid", "sealed", "indexed_to")

    def __init__(self, num: int, uuid: str, sealed: bool = False, indexed_to: int = 0):
        self.num = num
        self.uuid = uuid
        self.sealed = sealed
        self.indexed_to = indexed_to

    def _key(self) -> tuple:
        return (self.num, self.uuid, self.sealed, self.indexed_to)

    def __eq__(self, other) -> bool:
        return self._key() == other._key() if type(other) is FileInfo else NotImplemented

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return (
            f"FileInfo(num={self.num!r}, uuid={self.uuid!r}, sealed={self.sealed!r},"
            f" indexed_to={self.indexed_to!r})"
        )

    def encode(self) -> bytes:
        return json.dumps(
            {"uuid": self.uuid, "sealed": self.sealed, "indexed_to": self.indexed_to},
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, num: int, buf) -> FileInfo:
        """The inverse of `encode`; raises `FormatError` on anything else (the
        uuid names a file, so it must be 32 hex digits)."""
        try:
            d = json.loads(bytes(buf).decode("ascii"))
        except ValueError as e:  # UnicodeDecodeError and JSONDecodeError too
            raise FormatError(f"file table entry {num}: {e}") from None
        if not isinstance(d, dict):
            raise FormatError(f"file table entry {num}: not an object")
        u, sealed, to = d.get("uuid"), d.get("sealed", False), d.get("indexed_to", 0)
        if not isinstance(u, str) or not _UUID.fullmatch(u):
            raise FormatError(f"file table entry {num}: bad uuid {u!r:.40}")
        if not isinstance(sealed, bool) or type(to) is not int or not 0 <= to < 1 << 48:
            raise FormatError(f"file table entry {num}: bad values")
        return cls(num, u, sealed, to)


_UUID = re.compile(r"[0-9a-f]{32}")


def _filenum(k) -> int:
    if len(k) != 4:
        raise FormatError(f"file table key of {len(k)} octets")
    return _FILENUM.unpack(k)[0]


def _counter(v) -> int:
    if len(v) != 8:
        raise FormatError(f"counter of {len(v)} octets")
    return _COUNTER.unpack(v)[0]


_ENVS: dict[str, SharedEnv] = {}
_ENVS_LOCK = threading.Lock()


def _madvise_dontneed(path: str) -> None:
    """`madvise(MADV_DONTNEED)` every mapping of file `path` in this process
    (read from /proc/self/maps); nothing where that is not Linux."""
    try:
        with open("/proc/self/maps") as f:
            spans = []
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].rstrip("\n") == path:
                    a, b = parts[0].split("-")
                    spans.append((int(a, 16), int(b, 16)))
    except OSError:
        return
    if not spans:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for a, b in spans:
        libc.madvise(ctypes.c_void_p(a), ctypes.c_size_t(b - a), 4)  # MADV_DONTNEED


def _first(item):
    return item[0]


class _SomePresent(Exception):
    """A `putmulti` found some keys present: redo the transaction entry by entry."""


class LMDBIndex:
    """The block index; every method is safe to call from several threads."""

    def __init__(self, path: str, subdir: bool = True, readonly: bool = False):
        """Open (sharing this process's open) or create the index at `path`.

        `readonly` opens of an index this process cannot write (read-only
        media, no permission) go without a lock file; others create it.
        """
        self.path = path
        key = os.path.realpath(path)
        with _ENVS_LOCK:
            shared = _ENVS.get(key)
            if shared is None:
                try:
                    env, can_write = open_env(
                        path,
                        subdir,
                        readonly,
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
                    raise lmdb_error(path, e) from None
                except OSError as e:
                    raise StoreError(f"index {path}: {e.strerror or e}") from None
                try:
                    if can_write:
                        env.reader_check()  # clear slots of dead processes
                    shared = SharedEnv(key, path, env, can_write, subdir)
                except lmdb.Error as e:
                    env.close()
                    raise lmdb_error(path, e) from None
                except StoreError:
                    env.close()
                    raise
                _ENVS[key] = shared
            shared.refs += 1
        self._shared = shared
        self._env = shared.env
        self.closed = False

    @property
    def writable(self) -> bool:
        """Whether this process can write the index (false on read-only media)."""
        return self._shared.writable

    def _reading(self, db=None) -> Reading:
        return Reading(self._shared, db)

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
        with self._reading() as txn:
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
                os.mkdir(tmp, 0o700)
                self._rebuild_into(tmp)
            except (OSError, lmdb.Error, StoreError):
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
        size = (self._env.info()["last_pgno"] + 1) * self._env.stat()["psize"]
        dst = lmdb.open(
            path,
            map_size=initial_map_size(size),
            subdir=True,
            max_dbs=4,
            metasync=False,
            mode=0o600,
        )
        try:
            with self._reading() as src, dst.begin(write=True) as out:
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
            self._shared.unguard()
            self._env.close()

    # -- blocks --------------------------------------------------------------

    def _get_raw(self, digest):
        """The stored value for `digest`, or None: every lookup's path, so the
        gate and the transaction are inlined (see `_Reading` for the rest)."""
        sh = self._shared
        gate = sh.gate
        gate.enter()
        try:
            txn = sh.env.begin(db=sh.blocks)
        except lmdb.MapResizedError:
            gate.exit()
            with self._reading(sh.blocks) as txn:
                return txn.get(digest)
        except BaseException as e:
            gate.exit()
            reraise(sh.path, e)
            raise
        try:
            return txn.get(digest)
        except BaseException as e:
            reraise(sh.path, e)
            raise
        finally:
            txn.abort()
            gate.exit()

    def get(self, digest) -> IndexEntry | None:
        """The entry for `digest`, or None."""
        v = self._get_raw(digest)
        if v is None:
            return None
        try:
            return IndexEntry.decode(v)
        except FormatError as e:
            raise IndexDamagedError(self.path, str(e)) from None

    def get_many_raw(self, digests: Iterable) -> list:
        """The stored value (bytes) for each digest, or None; one read
        transaction.  Undecoded: a batched reader decodes them natively
        (`vtstore.stores.readcache.read_many`)."""
        with self._reading(self._shared.blocks) as txn:
            get = txn.get
            return [get(d) for d in digests]

    def get_many(self, digests: Iterable) -> list[IndexEntry | None]:
        """The entry for each digest, or None; one read transaction."""
        out = []
        for v in self.get_many_raw(digests):
            try:
                out.append(None if v is None else IndexEntry.decode(v))
            except FormatError as e:
                raise IndexDamagedError(self.path, str(e)) from None
        return out

    def contains(self, digest) -> bool:
        """Whether `digest` is indexed."""
        return self._get_raw(digest) is not None

    def contains_many(self, digests: Iterable) -> list[bool]:
        """For each digest, whether it is indexed (one read transaction)."""
        with self._reading(self._shared.blocks) as txn:
            return [txn.get(d) is not None for d in digests]

    def count(self) -> int:
        """The number of indexed blocks."""
        with self._reading() as txn:
            return txn.stat(self._shared.blocks)["entries"]

    def iter_keys(self, start=None, batch: int = 1024) -> Iterator[bytes]:
        """Indexed digests >= `start` in ascending order, read `batch` per transaction
        so that a slow consumer does not pin an old snapshot."""
        key = None if start is None else bytes(start)
        inclusive = True
        while True:
            keys = []
            with self._reading(self._shared.blocks) as txn:
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
            with self._reading(self._shared.blocks) as txn:
                cur = txn.cursor()
                ok = cur.first() if key is None else cur.set_range(key)
                if ok and key is not None and cur.key() == key:
                    ok = cur.next()
                while ok and len(items) < batch:
                    items.append((cur.key(), cur.value()))
                    ok = cur.next()
                entries = IndexEntry.decode_many([v for _, v in items])
                items = [(k, e) for (k, _), e in zip(items, entries, strict=True)]
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
        replace: bool = False,
    ) -> tuple[int, int]:
        """`commit` for entries already encoded: `(digest, IndexEntry.encode())`
        pairs (digests exact `bytes`) of `nbytes` block octets in all, as the
        datadir's writer makes them a frame at a time.  Kept if present, like
        `commit`, unless `replace` (then every pair counts as new, as in
        `commit`); return `(new_blocks, new_bytes)`.

        Each transaction's entries go in with one `putmulti` call rather than a
        Python call per entry.
        """
        pairs.sort()  # in key order: neighbouring puts share B-tree pages
        return self._commit_sorted(pairs, files, counters, (), replace, nbytes)

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
        gate = self._shared.gate
        gate.enter()  # msync touches the map: not while it is remapped
        try:
            self._env.sync(True)
        except lmdb.Error as e:
            raise lmdb_error(self.path, e) from None
        finally:
            gate.exit()

    def _write(self, body):
        """Run `body(txn)` in a write transaction and commit; return its result.

        A full map is grown and the transaction run again from the start, so
        `body` must be repeatable.  An undecodable value read on the way is
        index damage.
        """
        sh = self._shared
        if not sh.writable:
            raise StoreError(
                f"index {self.path} is read-only (read-only media or no write permission)"
            )
        while True:
            try:
                with sh.write_lock:
                    sh.gate.enter()
                    try:
                        txn = sh.begin(write=True)
                        try:
                            out = body(txn)
                        except BaseException:
                            txn.abort()
                            raise
                        txn.commit()
                        return out
                    finally:
                        sh.gate.exit()
            except lmdb.MapFullError:
                sh.grow()
            except FormatError as e:
                raise IndexDamagedError(self.path, str(e)) from None
            except lmdb.Error as e:
                raise lmdb_error(self.path, e) from None

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

        def body(txn):
            new = octets = 0
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
                if replace:  # gc pointing entries at copies: no lookups
                    cur.putmulti(entries, overwrite=True)
                    new = len(entries)
                elif multi:
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
                    val = (_counter(old) if old else 0) + inc
                    txn.put(k, _COUNTER.pack(max(val, 0)), db=sh.meta)
            return new, octets

        return self._write(body)

    def delete_file_entries(self, num: int, digests: Iterable[bytes], sizes: bool = False):
        """Delete those of `digests` whose entry points into file `num`; drop the
        file from the table.  Return how many entries were deleted (`sizes`:
        and their block octets, `(n, octets)`)."""
        sh = self._shared
        digests = list(digests)

        def body(txn):
            n = octets = 0
            for d in digests:
                v = txn.get(d, db=sh.blocks)
                if v is not None:
                    e = IndexEntry.decode(v)
                    if e.filenum == num:
                        txn.delete(d, db=sh.blocks)
                        n += 1
                        octets += e.data_length
            txn.delete(_FILENUM.pack(num), db=sh.files)
            return n, octets

        n, octets = self._write(body)
        self._sync()
        return (n, octets) if sizes else n

    def release_pages(self) -> None:
        """Unmap the index pages this process has read (`madvise(MADV_DONTNEED)`
        on the map, Linux): they stay in the page cache and fault back in when
        read again, but stop counting in this process's RSS.  For a pass that
        reads the whole index once (vt gc's survey and copy) on a big index; a
        no-op where it cannot."""
        data = os.path.realpath(
            os.path.join(self.path, "data.mdb") if os.path.isdir(self.path) else self.path
        )
        gate = self._shared.gate
        gate.enter()  # not while the map is being replaced
        try:
            _madvise_dontneed(data)
        finally:
            gate.exit()

    def filenums(self, digests: Iterable[bytes]) -> list[int]:
        """The data file each digest's entry points into (-1: not indexed), in
        one read transaction; only the entry's first varint is decoded."""
        out = []
        with self._reading(self._shared.blocks) as txn:
            get = txn.get
            for d in digests:
                v = get(d)
                if v is None:
                    out.append(-1)
                elif v[0] < 0x80:
                    out.append(v[0])
                else:
                    out.append(IndexEntry.decode(v).filenum)
        return out

    def clear(self) -> None:
        """Empty the blocks and files tables and the block counters (before a reindex)."""
        sh = self._shared

        def body(txn):
            txn.drop(sh.blocks, delete=False)
            txn.drop(sh.files, delete=False)
            for k in (b"blocks_added", b"bytes_added"):
                txn.delete(k, db=sh.meta)

        self._write(body)
        self._sync()

    # -- files and counters ----------------------------------------------

    def files(self) -> dict[int, FileInfo]:
        """The data file table."""
        out = {}
        with self._reading(self._shared.files) as txn:
            for k, v in txn.cursor():
                num = _filenum(k)
                out[num] = FileInfo.decode(num, v)
        return out

    def file_info(self, num: int) -> FileInfo | None:
        """One entry of the file table, or None."""
        with self._reading(self._shared.files) as txn:
            v = txn.get(_FILENUM.pack(num))
            return None if v is None else FileInfo.decode(num, v)

    def new_file(self, uuid_hex: str, indexed_to: int) -> FileInfo:
        """Allocate the next file number for `uuid_hex` and record it."""
        sh = self._shared

        def body(txn):
            old = txn.get(b"next_file", db=sh.meta)
            num = _counter(old) if old else 1
            txn.put(b"next_file", _COUNTER.pack(num + 1), db=sh.meta)
            fi = FileInfo(num, uuid_hex, False, indexed_to)
            txn.put(_FILENUM.pack(num), fi.encode(), db=sh.files)
            return fi

        fi = self._write(body)
        self._sync()
        return fi

    def counters(self) -> dict[str, int]:
        """Every counter in `meta`."""
        out = {}
        with self._reading(self._shared.meta) as txn:
            for k, v in txn.cursor():
                try:
                    name = bytes(k).decode("ascii")
                except UnicodeDecodeError:
                    raise FormatError("a counter name is not ASCII") from None
                out[name] = _counter(v)
        return out

    def snapshot(self) -> Snapshot:
        """A consistent read-only view (one read transaction) for long walks such
        as fsck; use it as a context manager."""
        return Snapshot(self)


class Snapshot:
    """One read transaction over the whole index.  Damage met while walking it
    raises `IndexDamagedError`; `raw_items` lets fsck see undecodable values."""

    def __init__(self, index: LMDBIndex):
        self._sh = index._shared
        self._r = Reading(self._sh)
        self._txn = self._r.__enter__()

    def __enter__(self):
        return self

    def __exit__(self, et, e, tb):
        return self._r.__exit__(et, e, tb)

    def get(self, digest) -> IndexEntry | None:
        try:
            v = self._txn.get(digest, db=self._sh.blocks)
            return None if v is None else IndexEntry.decode(v)
        except Exception as e:
            reraise(self._sh.path, e)
            raise

    def count(self) -> int:
        return self._txn.stat(self._sh.blocks)["entries"]

    def files(self) -> dict[int, FileInfo]:
        out = {}
        try:
            for k, v in self._txn.cursor(db=self._sh.files):
                num = _filenum(k)
                out[num] = FileInfo.decode(num, v)
        except Exception as e:
            reraise(self._sh.path, e)
            raise
        return out

    def raw_items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every `(digest, encoded entry)` in key order."""
        try:
            for k, v in self._txn.cursor(db=self._sh.blocks):
                yield bytes(k), bytes(v)
        except Exception as e:
            reraise(self._sh.path, e)
            raise

    def items(self) -> Iterator[tuple[bytes, IndexEntry]]:
        for k, v in self.raw_items():
            try:
                e = IndexEntry.decode(v)
            except FormatError as x:
                raise IndexDamagedError(self._sh.path, str(x)) from None
            yield k, e


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
