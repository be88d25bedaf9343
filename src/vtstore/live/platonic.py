"""The platonic store: blocks served from ordinary files where they are.

`platonic:/path` indexes the tree at `/path` as `vt pack` would cut it, without
copying a byte into a datadir: an LMDB index (in the cache directory) maps each
leaf block's hash to the places it was cut from, `(file, offset, length)`, and
keeps the few blocks no file holds (indirect blocks, directory blocks) itself.
Reads hash-check what they read, so a file changed behind the index's back
never returns wrong bytes: the block is refused (`CorruptBlockError`) until the
index is brought up to date.  `update()` re-reads the files whose size, mtime or
ctime changed and drops their old mappings (an incremental pack against the
last indexed state); `follow()` does so after each settled change the tree
monitor reports.  The tree's state is kept as the named archive `tree`.

Read-only as a store.  Use case: serve or push a media library or a download
mirror without doubling the disk.

Index tables: `leaves` (dupsort) hash -> fid(16) offset(8) length(4); `files`
fid -> size mtime_ns ctime_ns ino (8 each), len(rpath) (4), rpath, leaf hashes;
`meta` hash -> block data; fid = blake2b(rpath, 16).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import stat
import struct
import threading
from collections.abc import Iterator

import lmdb

from vtstore.archive import Archive
from vtstore.blocks import Block, HashCodeBlock, IndirectBlock, decode_blockrefs
from vtstore.errors import CorruptBlockError, FormatError, StoreError
from vtstore.stores.base import Store

log = logging.getLogger(__name__)

_LOC = struct.Struct(">16sQI")
_FILE = struct.Struct(">QqqQI")
ARCHIVE_NAME = "tree"


def fid_of(rpath: str) -> bytes:
    """The index's key of a file: a hash of its path (paths can be too long for keys)."""
    return hashlib.blake2b(os.fsencode(rpath), digest_size=16).digest()


class _Capture(Store):
    """The store one file is blockified into: keeps nothing of the leaves (the
    file holds them), only what decodes as an indirect block."""

    add_copies = True

    def __init__(self, hashclass, params):
        super().__init__("platonic-capture", hashclass)
        self.kept: dict = {}
        self._params = params

    @property
    def chunk_params(self):
        return self._params

    def _contains(self, h) -> bool:
        return False

    def _add_new(self, h, data) -> None:
        try:
            for _ in decode_blockrefs(data):
                pass
        except (FormatError, ValueError, IndexError):
            return
        self.kept[h] = bytes(data)

    def _get(self, h):
        return self.kept.get(h)

    def __len__(self) -> int:
        return len(self.kept)


class _MetaWriter(Store):
    """The store an index run gives the importer: directory blocks are kept
    (written to `meta` at the end); reads see the index too."""

    add_copies = True

    def __init__(self, owner: PlatonicStore):
        super().__init__("platonic-meta", owner.hashclass)
        self.owner = owner
        self.new: dict = {}

    @property
    def chunk_params(self):
        return None

    def _contains(self, h) -> bool:
        return h in self.new or self.owner._get(h) is not None

    def _add_new(self, h, data) -> None:
        self.new[h] = bytes(data)

    def _get(self, h):
        d = self.new.get(h)
        return d if d is not None else self.owner._get(h)

    def __len__(self) -> int:
        return len(self.new)


def leaf_places(block: Block, blocks, offset: int = 0) -> Iterator[tuple]:
    """`(hashcode, offset, length)` of each stored leaf of a file's top `block`;
    `blocks(h)` gives an indirect block's data."""
    if isinstance(block, IndirectBlock):
        for sub in decode_blockrefs(blocks(block.hashcode)):
            yield from leaf_places(sub, blocks, offset)
            offset += sub.span
    elif isinstance(block, HashCodeBlock):
        yield block.hashcode, offset, block.span


class PlatonicStore(Store):
    """A read-only store over the files of `root`, through an index at `index_dir`."""

    def __init__(self, root: str, index_dir: str, hashclass=None, refresh: bool = True):
        super().__init__(f"platonic:{root}", hashclass, readonly=True)
        self.root = os.path.abspath(root)
        if not os.path.isdir(self.root):
            raise StoreError(f"platonic:{root}: not a directory")
        self.index_dir = os.path.join(index_dir, self.hashclass.hashname)
        self.env = self._open_index()
        self._leaves = self.env.open_db(b"leaves", dupsort=True)
        self._files = self.env.open_db(b"files")
        self._meta = self.env.open_db(b"meta")
        self.archive = Archive(os.path.join(self.index_dir, ARCHIVE_NAME + ".vt"))
        self._update_lock = threading.Lock()  # guards _results (worker threads)
        self._index_lock = threading.Lock()  # one update at a time (follow() runs in a thread)
        self._results: list = []
        if refresh:
            self.update()

    def _open_index(self) -> lmdb.Environment:
        """The index, checked before LMDB maps it; a damaged one is only a
        cache of the tree: it is dropped and built again."""
        from vtstore.stores.lmdbenv import IndexDamagedError, check_meta_pages

        path = os.path.join(self.index_dir, "index")
        try:
            os.makedirs(self.index_dir, mode=0o700, exist_ok=True)
            try:
                check_meta_pages(path)
            except IndexDamagedError as e:
                log.warning("%s; building it again", e)
                shutil.rmtree(path, ignore_errors=True)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.index_dir, ARCHIVE_NAME + ".vt"))
            # 64 GiB of address space, not of disk: the map only grows as used
            return lmdb.open(path, map_size=1 << 36, max_dbs=4, mode=0o600)
        except (OSError, lmdb.Error) as e:
            raise StoreError(f"platonic:{self.root}: index {path}: {e}") from None

    # -- indexing ------------------------------------------------------------

    def _blockify(self, path: str, store, name, mime_type, size: int) -> Block:
        from vtstore.tree.fsimport import default_file_blockifier

        st = os.stat(path)
        cap = _Capture(self.hashclass, None)
        top = default_file_blockifier(path, cap, name, mime_type, size)
        rpath = os.path.relpath(path, self.root)
        with self._update_lock:
            self._results.append((rpath, st, top, cap.kept))
        return top

    def update(self):
        """Bring the index up to date with the tree: re-read changed files, drop
        the mappings of changed and vanished ones.  Returns the tree's dirent."""
        with self._index_lock:
            return self._update()

    def _update(self):
        from vtstore.live.monitor import scan
        from vtstore.tree.fsimport import Importer

        last = self.archive.last()
        meta = _MetaWriter(self)
        self._results = []
        imp = Importer(meta, blockifier=self._blockify)
        dirent = imp.import_path(self.root, last.dirent if last else None)
        present = {rp for rp, s in scan(self.root).items() if stat.S_ISREG(s.mode)}
        with self.env.begin(write=True) as txn:
            for h, data in meta.new.items():
                txn.put(bytes(h), data, db=self._meta)
            for rpath, st, top, kept in self._results:
                for h, data in kept.items():
                    txn.put(bytes(h), data, db=self._meta)
                self._drop(txn, rpath)
                fid = fid_of(rpath)
                hashes = []
                for h, off, ln in leaf_places(top, lambda h, k=kept: k.get(h) or self._get(h)):
                    hb = bytes(h)
                    txn.put(hb, _LOC.pack(fid, off, ln), db=self._leaves, dupdata=True)
                    hashes.append(hb)
                rp = os.fsencode(rpath)
                head = _FILE.pack(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, len(rp))
                txn.put(fid, head + rp + b"".join(hashes), db=self._files)
            gone = []
            for _fid, value in txn.cursor(db=self._files):
                rp = self._rpath(value)
                if rp not in present:
                    gone.append(rp)
            for rp in gone:
                self._drop(txn, rp)
        if last is None or str(last.dirent) != str(dirent):
            self.archive.update(dirent)
        self._results = []
        return dirent

    def _rpath(self, value: bytes) -> str:
        n = _FILE.unpack_from(value)[4]
        return os.fsdecode(value[_FILE.size : _FILE.size + n])

    def _drop(self, txn, rpath: str) -> None:
        """Forget where the blocks of `rpath` were."""
        fid = fid_of(rpath)
        value = txn.get(fid, db=self._files)
        if value is None:
            return
        n = _FILE.unpack_from(value)[4]
        body = value[_FILE.size + n :]
        size = self.hashclass.digest_size
        cur = txn.cursor(db=self._leaves)
        for i in range(0, len(body), size):
            hb = body[i : i + size]
            if cur.set_key(hb):
                for loc in list(cur.iternext_dup()):
                    if loc[:16] == fid:
                        txn.delete(hb, loc, db=self._leaves)
        txn.delete(fid, db=self._files)

    def follow(self, stop: threading.Event, backend: str = "auto", settle: float = 1.0) -> None:
        """Keep the index current until `stop` is set: update after each settled
        change the tree monitor reports."""
        from vtstore.live.monitor import open_monitor

        with open_monitor(self.root, backend, settle=settle, interval=max(settle, 1.0)) as mon:
            while not stop.is_set():
                if mon.changes(0.5):
                    self.update()

    # -- the store -----------------------------------------------------------

    def _get(self, h):
        hb = bytes(h)
        with self.env.begin() as txn:
            data = txn.get(hb, db=self._meta)
            if data is not None:
                return bytes(data)
            cur = txn.cursor(db=self._leaves)
            locs = list(cur.iternext_dup()) if cur.set_key(hb) else []
            places = []
            try:
                for loc in locs:
                    fid, off, ln = _LOC.unpack(loc)
                    value = txn.get(fid, db=self._files)
                    if value is not None:
                        places.append((self._rpath(value), off, ln))
            except (struct.error, ValueError) as e:
                raise StoreError(
                    f"{self.name}: index {self.index_dir} is damaged ({e}): remove it"
                ) from None
        if not places:
            return None
        for rpath, off, ln in places:
            try:
                fd = os.open(os.path.join(self.root, rpath), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    data = os.pread(fd, ln, off)
                finally:
                    os.close(fd)
            except OSError:
                continue
            if len(data) == ln and h.check(data):
                return data
        raise CorruptBlockError(
            h, f"{places[0][0]} changed since it was indexed (the index needs an update)"
        )

    def _contains(self, h) -> bool:
        hb = bytes(h)
        with self.env.begin() as txn:
            return (
                txn.get(hb, db=self._meta) is not None or txn.get(hb, db=self._leaves) is not None
            )

    def _iter_sorted(self, start):
        seen = []
        with self.env.begin() as txn:
            for db in (self._meta, self._leaves):
                cur = txn.cursor(db=db)
                for k in cur.iternext_nodup():
                    seen.append(bytes(k))
        out = sorted({self.hashclass(k) for k in seen})
        return iter([h for h in out if start is None or h >= start])

    def __len__(self) -> int:
        return sum(1 for _ in self._iter_sorted(None))

    def _add_new(self, h, data) -> None:  # pragma: no cover - read-only
        raise StoreError("platonic stores are read-only")

    # -- archives --------------------------------------------------------------

    def archive_names(self) -> list[str]:
        """The one archive: the tree's indexed states."""
        return [ARCHIVE_NAME]

    def named_archive(self, name: str, create: bool = False):
        """The archive `tree` (the only one)."""
        from vtstore.named_archives import NoArchivesError

        if name != ARCHIVE_NAME:
            raise NoArchivesError(f"{self.name} keeps one archive, {ARCHIVE_NAME!r}")
        return self.archive

    def _close(self) -> None:
        self.env.close()


def default_index_dir(root: str) -> str:
    """Where the index of the tree at `root` lives: the cache directory's
    `platonic/<hash of the path>`."""
    from vtstore.config.loader import default_cachedir

    key = hashlib.blake2b(os.fsencode(os.path.abspath(root)), digest_size=8).hexdigest()
    return os.path.join(os.path.expanduser(default_cachedir()), "platonic", key)


def _open(spec, ctx) -> PlatonicStore:
    from vtstore.stores.spec import _expand, _hashclass

    p = spec.params
    root = _expand(p["path"])
    return PlatonicStore(
        root,
        _expand(p["index"]) if "index" in p else default_index_dir(root),
        hashclass=_hashclass(spec, ctx) or ctx.default_hashclass,
        refresh=p.get("refresh", True),
    )


def _register() -> None:
    from vtstore.stores.spec import _str, parse_bool, register_scheme, register_store_type

    register_scheme("platonic:", "platonic", lambda rest: {"path": _str(rest)})
    register_store_type(
        "platonic",
        _open,
        {"path": _str, "index": _str, "refresh": parse_bool},
        "ordinary files served in place (read-only)",
        required=("path",),
    )


_register()
