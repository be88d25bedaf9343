"""`file:PATH.vtd`: a store in one data file, with its index beside it.

The data file has the datadir's format (`vtstore.stores.vtd`), so any data file
of a datadir, or a `.vtd` made by `vt` for transport, can be opened as a store.
The index is an LMDB file `PATH.vtd.index` (plus `PATH.vtd.index-lock`).  When it
is missing or behind the data file, a background thread scans the records it
lacks; a fetch or membership test that misses while the scan runs waits for the
scan before answering.  One process at a time may append (it holds an exclusive
`flock` on the data file); readers in other processes see what it commits.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

from vtstore.errors import FormatError, HashClassMismatchError, StoreError
from vtstore.hashes import HashCode, hashclass_by_name
from vtstore.stores.base import Store
from vtstore.stores.index import FileInfo, LMDBIndex, iter_index_and_pending
from vtstore.stores.readcache import FrameCache, read_block
from vtstore.stores.recovery import mapped, try_lock, walk_file
from vtstore.stores.vtd import (
    DEFAULT_FRAME_SIZE,
    DEFAULT_ZSTD_LEVEL,
    MAX_BLOCK_SIZE,
    encode_header,
    read_header,
)
from vtstore.stores.writer import RecordWriter

log = logging.getLogger(__name__)
FILENUM = 1
SCAN_BATCH = 4096


class FileStore(Store):
    """A store in a single `.vtd` data file."""

    def __init__(
        self,
        path,
        hashclass: type[HashCode] | None = None,
        readonly: bool = False,
        *,
        name: str | None = None,
        default_hashclass: type[HashCode] | None = None,
        frame_size: int = DEFAULT_FRAME_SIZE,
        zstd_level: int = DEFAULT_ZSTD_LEVEL,
        compress: bool = True,
    ):
        self.path = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
        self.index_path = Path(str(self.path) + ".index")
        super().__init__(
            name=name or f"file:{self.path}",
            hashclass=hashclass or default_hashclass,
            readonly=readonly,
        )
        self.frame_size = frame_size
        self.zstd_level = zstd_level
        self.compress = compress
        self._frames = FrameCache()
        self._lock = threading.RLock()
        self._rfd = -1
        self._wfd = -1
        self._writer: RecordWriter | None = None
        self._fi: FileInfo | None = None
        self._index: LMDBIndex | None = None
        self._scan_thread: threading.Thread | None = None
        self._scan_done = threading.Event()
        self._scan_done.set()
        self._scan_error: BaseException | None = None
        self._stop = False
        if self.path.exists():
            self._open_existing(hashclass)
        elif not self.path.parent.is_dir():
            raise StoreError(f"{self.path.parent} is not a directory")

    def _open_existing(self, want: type[HashCode] | None) -> None:
        try:
            self._rfd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise StoreError(f"{self.path}: {e.strerror}") from None
        try:
            with mapped(self._rfd, min(os.fstat(self._rfd).st_size, 1 << 16)) as buf:
                meta, hend = read_header(buf)
            hc = hashclass_by_name(meta["hashclass"])
        except (FormatError, KeyError) as e:
            os.close(self._rfd)
            self._rfd = -1
            raise StoreError(f"{self.path}: {e}") from None
        if want is not None and want is not hc:
            os.close(self._rfd)
            self._rfd = -1
            raise HashClassMismatchError(
                f"{self.path} holds {hc.hashname} blocks, not {want.hashname}"
            )
        self.hashclass = hc
        self._index = LMDBIndex(str(self.index_path), subdir=False)
        fi = self._index.file_info(FILENUM)
        if fi is None or fi.uuid != meta.get("uuid"):
            if fi is not None:
                log.info("%s: index is for another file, rebuilding it", self.path)
                self._index.clear()
            fi = FileInfo(FILENUM, meta.get("uuid", ""), False, hend)
            self._index.commit(files=[fi])
        self._fi = fi
        self._start_scan_if_behind()

    # -- background scan ------------------------------------------------

    def _start_scan_if_behind(self) -> bool:
        with self._lock:
            if not self._scan_done.is_set():
                return True
            fi = self._index.file_info(FILENUM) or self._fi
            self._fi = fi
            if os.fstat(self._rfd).st_size <= fi.indexed_to or self._writer is not None:
                return False
            self._scan_done.clear()
            self._scan_thread = threading.Thread(
                target=self._scan, name=f"vt-scan-{self.path.name}", daemon=True
            )
            self._scan_thread.start()
            return True

    def _scan(self) -> None:
        try:
            fi = self._fi
            size = os.fstat(self._rfd).st_size
            with mapped(self._rfd, size) as buf:
                batch = []
                end = fi.indexed_to
                for kind, ev, found in walk_file(
                    buf, FILENUM, self.hashclass, fi.indexed_to, size, fi.indexed_to
                ):
                    if self._stop:
                        break
                    if kind != "blocks":
                        if kind == "damage":
                            log.warning("%s: damage at %d: %s", self.path, ev.offset, ev.reason)
                            continue
                        break
                    batch.extend(found)
                    end = ev.end
                    if len(batch) >= SCAN_BATCH:
                        fi.indexed_to = end
                        self._index.commit(batch, files=[fi])
                        batch = []
                fi.indexed_to = end
                self._index.commit(batch, files=[fi])
        except BaseException as e:  # noqa: BLE001 - reported to the waiting caller
            self._scan_error = e
        finally:
            self._scan_done.set()

    def wait_scanned(self, timeout: float | None = None) -> bool:
        """Wait for the background scan, if one runs; True when it is done."""
        ok = self._scan_done.wait(timeout)
        if self._scan_error is not None:
            e, self._scan_error = self._scan_error, None
            raise StoreError(f"scanning {self.path}: {e}") from e
        return ok

    # -- writing -------------------------------------------------------------

    def _open_writer(self) -> RecordWriter:
        self.wait_scanned()
        if not self.path.exists():
            u = uuidlib.uuid4().hex
            tmp = self.path.with_name(f".{self.path.name}.{u}.tmp")
            hdr = encode_header(self.hashclass.hashname, u)
            try:
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                try:
                    os.write(fd, hdr)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                try:
                    os.link(tmp, self.path)
                except FileExistsError:
                    pass
                finally:
                    tmp.unlink()
            except OSError as e:
                raise StoreError(f"creating {self.path}: {e.strerror}") from None
            self._open_existing(self.hashclass)
            self.wait_scanned()
        fd = try_lock(self.path)
        if fd is None:
            raise StoreError(f"{self.path} is being written by another process")
        try:
            # now that no one else appends, index what we lack and drop a torn tail
            self._start_scan_if_behind()
            self.wait_scanned()
            fi = self._index.file_info(FILENUM)
            size = os.fstat(fd).st_size
            if size > fi.indexed_to:
                os.ftruncate(fd, fi.indexed_to)
        except BaseException:
            os.close(fd)
            raise
        self._wfd = fd
        self._fi = fi
        self._writer = RecordWriter(
            fd,
            str(self.path),
            FILENUM,
            fi.indexed_to,
            self._commit_batch,
            frame_size=self.frame_size,
            zstd_level=self.zstd_level,
            compress=self.compress,
        )
        return self._writer

    def _commit_batch(self, pairs: list[tuple[bytes, bytes]], nbytes: int, end: int) -> None:
        self._fi.indexed_to = end
        self._index.commit_values(pairs, nbytes, files=[self._fi])

    def add(self, data) -> HashCode:
        """Store `data`; return its hashcode."""
        self._check_writable()
        if len(data) > MAX_BLOCK_SIZE:
            raise StoreError(f"block of {len(data)} octets exceeds the maximum of {MAX_BLOCK_SIZE}")
        h = self.hashclass.from_data(data)
        with self._lock:
            w = self._writer or self._open_writer()
            if not self._index.contains(h):
                w.add(h, bytes(data))
        return h

    def add_many(self, datas) -> list[HashCode]:
        """Store each of `datas`; return their hashcodes."""
        return [self.add(d) for d in datas]

    # -- reading ----------------------------------------------------------------

    def _ensure_index(self) -> bool:
        """Open the index if the data file exists (another process may have made it)."""
        if self._index is None:
            if not self.path.exists():
                return False
            with self._lock:
                if self._index is None:
                    self._open_existing(self.hashclass)
        return True

    def _lookup(self, h: HashCode):
        w = self._writer
        if w is not None:
            x = w.lookup(h)
            if x is not None:
                return x
        if not self._ensure_index():
            return None
        e = self._index.get(h)
        if e is None and self._writer is None:
            # not scanned yet, or appended by another process since
            if self._start_scan_if_behind():
                self.wait_scanned()
                e = self._index.get(h)
        return e

    def _get(self, h: HashCode) -> bytes | None:
        x = self._lookup(h)
        if x is None or isinstance(x, bytes):
            return x
        try:
            return read_block(self._rfd, self._frames, h, x)
        except OSError as e:
            raise StoreError(f"reading {self.path}: {e.strerror}") from None

    def _contains(self, h: HashCode) -> bool:
        return self._lookup(h) is not None

    def _settled(self) -> bool:
        """Open and fully scanned, or False if there is no data file yet."""
        if not self._ensure_index():
            return False
        if self._writer is None:
            self._start_scan_if_behind()
        self.wait_scanned()
        return True

    def __len__(self) -> int:
        self._check_open()
        if not self._settled():
            return 0
        n = self._index.count()
        if self._writer is not None:
            pend = self._writer.pending_keys()
            n += sum(1 for p in self._index.contains_many(pend) if not p)
        return n

    def _iter_sorted(self, start: HashCode | None) -> Iterator[HashCode]:
        if not self._settled():
            return iter(())
        return iter_index_and_pending(self.hashclass, self._index, self._writer, start)

    def flush(self) -> None:
        """fsync the data file, then commit the index."""
        if self.readonly or self.closed:
            return
        with self._lock:
            if self._writer is not None:
                self._writer.flush()

    def _close(self) -> None:
        self._stop = True
        if self._scan_thread is not None:
            self._scan_thread.join()
            self._scan_thread = None
        with self._lock:
            if self._writer is not None:
                try:
                    if self._writer.failed is None:
                        self._writer.flush()
                finally:
                    self._writer.close()
                    self._writer = None
                    os.close(self._wfd)
                    self._wfd = -1
        self._frames.clear()
        if self._rfd >= 0:
            os.close(self._rfd)
            self._rfd = -1
        if self._index is not None:
            self._index.close()
            self._index = None

    def info(self) -> dict:
        """A description for `vt info`."""
        d = {"type": "file", "path": str(self.path), "hashclass": self.hashclass.hashname}
        if self._settled():
            self.flush()
            d.update(
                blocks=len(self),
                bytes_stored=self._index.counters().get("bytes_added", 0),
                bytes_on_disk=self.path.stat().st_size,
                index=str(self.index_path),
            )
        return d
