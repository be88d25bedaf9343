"""Reclaiming space in a datadir: the primitives `vt gc` uses.

Given the set of live (marked) blocks, a sealed data file is left alone, deleted
whole (no live block), or rewritten (too little of it live): its live blocks are
copied into a new data file and then the old file goes.  The order makes a kill
at any point harmless: the copies are written, fsynced and indexed (each index
entry replaced to point at the copy) before the old file's entries are deleted,
and the entries are deleted before the file is unlinked, so the index never
names a block that is not on the disk.  A file whose entries were deleted but
which was not unlinked yet is listed first in `gc-pending` (fsynced), and the
next `vt gc` removes it; a writer does not adopt it meanwhile.

A gc killed while copying leaves the files it was rewriting with superseded
copies (blocks whose entries now name their copies), and its new file with
copies not yet indexed (their entries still name the old file; a writer that
adopts the file, or the next gc sealing it, indexes only what the index lacks).
Both are listed in `gc-rewriting`, the old files before the first copy is
indexed, a new file when it is made: fsck counts such blocks as notes there,
and the next gc rewrites those files whatever their garbage.  A
record is copied whole only if its entries name every block in it, so a
superseded copy is never carried into a new file.
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import zstandard

from vtstore.codec import encode_varint
from vtstore.stores.index import FileInfo, IndexEntry
from vtstore.stores.recovery import PENDING, gc_dropped, recover_tail, try_lock
from vtstore.stores.vtd import FrameEncoder
from vtstore.stores.vtdio import SYNC_FILE_RANGE_WRITE, index_values, sync_file_range

if TYPE_CHECKING:
    from vtstore.stores.datadir import DataDir

log = logging.getLogger(__name__)

#: the data files a gc is rewriting: once one of their blocks is copied and
#: indexed, the old copy is superseded (no entry names it), so a gc killed
#: before dropping them leaves blocks fsck would take for lost index entries
REWRITING = "gc-rewriting"


@dataclass
class FileUsage:
    """How much of one data file is live (block octets, before compression)."""

    num: int
    size: int = 0  # on disk
    mtime: float = 0.0
    live_blocks: int = 0
    live_bytes: int = 0
    dead_blocks: int = 0
    dead_bytes: int = 0

    @property
    def unused(self) -> float:
        """The fraction of the file's block octets no live state needs."""
        total = self.live_bytes + self.dead_bytes
        return self.dead_bytes / total if total else 1.0

    def count(self, e: IndexEntry, live: bool) -> None:
        """Count the block of index entry `e` as live or dead."""
        if live:
            self.live_blocks += 1
            self.live_bytes += e.data_length
        else:
            self.dead_blocks += 1
            self.dead_bytes += e.data_length


def seal_idle(dd: DataDir, older_than: float) -> list[int]:
    """Seal the unsealed data files no writer holds whose last write is older
    than `older_than` (UNIX time): their tail indexed first, as a writer
    adopting them would.  A sealed file is never appended to again, so every
    block in it predates this call (what makes it a safe gc candidate)."""
    out = []
    for num, fi in sorted(dd._index.files().items()):
        if fi.sealed:
            continue
        path = dd.data_file_path(fi)
        try:
            if path.stat().st_mtime >= older_than:
                continue
        except FileNotFoundError:
            continue
        fd = try_lock(path)
        if fd is None:
            continue  # a live writer's
        try:
            end = recover_tail(dd, fd, fi)
            if end is not None:
                fi.sealed = True
                dd._index.commit(files=[fi])
            out.append(num)
        finally:
            os.close(fd)
    return out


def candidates(dd: DataDir, older_than: float) -> dict[int, FileInfo]:
    """The sealed data files last written before `older_than`."""
    out = {}
    for num, fi in dd._index.files().items():
        if not fi.sealed:
            continue
        try:
            if dd.data_file_path(fi).stat().st_mtime < older_than:
                out[num] = fi
        except FileNotFoundError:
            pass
    return out


def merge_marks(items: Iterator[tuple[bytes, IndexEntry]], marks: Iterator[bytes]):
    """`(digest, entry, live)` for each index item, `live` when the sorted
    `marks` (digests, or prefixes of one length, as `MarkSet` keeps them)
    hold the digest's prefix; both inputs ascending (a linear merge)."""
    m = next(marks, None)
    k = len(m) if m is not None else 0
    for d, e in items:
        p = d[:k]
        while m is not None and m < p:
            m = next(marks, None)
        yield d, e, m == p


# filenum, payload_offset, data_offset (big-endian: the packed octets sort in
# file order), payload_length, data_length, flags; the digest follows
_ITEM = struct.Struct(">IQIIIB")


class LiveItems:
    """The live blocks of one data file, packed: 53 octets and the digest a
    block, where a `(digest, IndexEntry)` tuple takes about 340 (1 GiB of
    small blocks: 8 MB rather than 50).  Kept by 16 MiB window of the file,
    so putting them in file order sorts one window at a time (a key a block
    for a window, not for a whole 1 GiB file: ~7 MB less at its peak)."""

    WINDOW = 24  # log2 of the octets of file a window covers

    def __init__(self, digest_size: int):
        self.n = _ITEM.size + digest_size
        self._w: dict[tuple[int, int], bytearray] = {}

    def add(self, d: bytes, e: IndexEntry) -> None:
        k = (e.filenum, e.payload_offset >> self.WINDOW)
        b = self._w.get(k)
        if b is None:
            b = self._w[k] = bytearray()
        b += _ITEM.pack(
            e.filenum, e.payload_offset, e.data_offset, e.payload_length, e.data_length, e.flags
        )
        b += d

    def __len__(self) -> int:
        return sum(len(b) for b in self._w.values()) // self.n

    def digests(self) -> Iterator[bytes]:
        """Each block's digest (in no particular order)."""
        n, h = self.n, _ITEM.size
        for buf in self._w.values():
            for i in range(0, len(buf), n):
                yield bytes(buf[i + h : i + n])

    def in_file_order(self) -> Iterator[tuple[bytes, IndexEntry]]:
        """`(digest, entry)` for each block, in the order they lie in the file."""
        for k in sorted(self._w):
            yield from self._sorted(self._w[k])

    def _sorted(self, buf: bytearray) -> Iterator[tuple[bytes, IndexEntry]]:
        n, h = self.n, _ITEM.size
        count = len(buf) // n
        # sort one int a block (offsets and the item's place), not the items
        at = struct.Struct(">IQI").unpack_from
        if count < 1 << 26:
            keys = []
            for i in range(count):
                f, po, do = at(buf, i * n)
                keys.append((((f << 64 | po) << 32 | do) << 26) | i)
            keys.sort()
            order = (k & ((1 << 26) - 1) for k in keys)
        else:
            order = sorted(range(count), key=lambda i: bytes(buf[i * n : i * n + h]))
        for i in order:
            f, po, do, pl, dl, fl = _ITEM.unpack_from(buf, i * n)
            yield bytes(buf[i * n + h : (i + 1) * n]), IndexEntry(f, fl, po, pl, do, dl)


@dataclass
class Survey:
    """What one pass over the index found for candidate files, by number:
    `use` (`FileUsage`), `live` (`LiveItems`), `dead` (digests), and the
    records `(filenum, payload_offset)` that hold a dead block (`partial`)."""

    use: dict[int, FileUsage]
    live: dict[int, LiveItems]
    dead: dict[int, list[bytes]]
    partial: set[tuple[int, int]]

    def keep_only(self, nums: set[int]) -> None:
        """Forget the lists of the files not in `nums` (kept files)."""
        for m in (self.live, self.dead):
            for n in [n for n in m if n not in nums]:
                del m[n]


def survey(dd: DataDir, files: dict[int, FileInfo], marks) -> Survey:
    """Live and dead blocks of each of `files`, by one pass over the index
    merged with `marks` (a `MarkSet`)."""
    use = {num: FileUsage(num) for num in files}
    for num, u in use.items():
        try:
            st = dd.data_file_path(files[num]).stat()
            u.size, u.mtime = st.st_size, st.st_mtime
        except FileNotFoundError:
            pass
    dsize = dd.hashclass.digest_size
    live = {n: LiveItems(dsize) for n in files}
    dead: dict[int, list[bytes]] = {n: [] for n in files}
    partial: set[tuple[int, int]] = set()
    for d, e, is_live in merge_marks(dd._index.iter_items(), marks.sorted_iter()):
        u = use.get(e.filenum)
        if u is None:
            continue
        u.count(e, is_live)
        if is_live:
            live[e.filenum].add(d, e)
        else:
            dead[e.filenum].append(d)
            partial.add((e.filenum, e.payload_offset))
    return Survey(use, live, dead, partial)


@dataclass
class CopyStats:
    blocks: int = 0
    bytes: int = 0
    files: list[int] = field(default_factory=list)
    whole_records: int = 0  # copied as stored, without decoding


class _RawFile:
    """A new data file that whole records are appended to."""

    def __init__(self, fd: int, fi: FileInfo):
        self.fd, self.fi = fd, fi
        self.off = self.committed = self.kicked = fi.indexed_to
        self.pairs: list[tuple[bytes, bytes]] = []  # (digest, encoded entry)
        self.nbytes = 0  # block octets of `pairs`


#: copies made on this many threads (reading, checking and compressing);
#: the calling thread appends them in order
COPY_THREADS = 2
#: octets appended between index commits (each after an fdatasync)
COMMIT_BYTES = 64 << 20
#: octets appended before their writeback is started (so the fdatasync
#: before a commit finds little left to write)
WRITEBACK_BYTES = 8 << 20


class Copier:
    """Writes copies of blocks into new data files of `dd` (under each file's
    flock, as a writer does), pointing the index at the copies.

    Two threads prepare records, in order: a record that holds no dead block
    is copied as stored (its CRC checked: no decompression, no compression);
    the live blocks of the others are read in native batches (each frame
    decoded once, every block checked against its hash), gathered a frame's
    worth at a time and encoded into a new record.  The calling thread appends
    the records, and every `COMMIT_BYTES` fdatasyncs the file and then points
    the index at the copies (the old entries replaced), so the index never
    names a copy that is not on the disk."""

    def __init__(self, dd: DataDir, threads: int = COPY_THREADS):
        self.dd = dd
        self.threads = max(1, threads)
        self.stats = CopyStats()
        #: the new files' uuids: listed in `gc-rewriting` from their creation
        self.made: list[str] = []
        self._raw: _RawFile | None = None
        self._local = threading.local()

    def copy(
        self,
        items: Iterable[tuple[bytes, IndexEntry]],
        progress=None,
        partial=frozenset(),
        presorted: bool = False,
    ) -> None:
        """Copy each block `(digest, entry)` (read and verified from where
        `entry` points) into the new file(s).  A record not in `partial`
        (`(filenum, payload_offset)` of the records holding dead blocks) is
        copied whole, as stored, once its CRC checks.  `presorted`: `items`
        come in file order already (streamed, not held)."""
        # in file order: each frame is read and decompressed once (in digest
        # order every block would decompress its whole frame again)
        if not presorted:
            items = sorted(
                items, key=lambda x: (x[1].filenum, x[1].payload_offset, x[1].data_offset)
            )
        ex = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="vt-gc-copy")
        pending: deque = deque()
        try:
            for job in self._jobs(items, partial):
                pending.append(ex.submit(self._prepare, job))
                while len(pending) > 2 * self.threads:
                    self._append(*pending.popleft().result(), progress)
            while pending:
                self._append(*pending.popleft().result(), progress)
        finally:
            ex.shutdown(wait=True, cancel_futures=True)

    def _jobs(self, items, partial) -> Iterator[tuple[bool, list]]:
        """`(whole, group)`: a whole record's indexed blocks to copy as it
        is, or the live blocks of records with dead ones, about a frame's
        worth (`frame_size`) at a time."""
        limit = self.dd.frame_size
        batch: list = []
        size = 0
        for key, run in itertools.groupby(items, key=lambda x: (x[1].filenum, x[1].payload_offset)):
            group = list(run)
            if key not in partial:
                yield True, group
                continue
            n = sum(e.data_length for _, e in group)
            if batch and size + n > limit + (limit >> 2):
                yield False, batch
                batch, size = [], 0
            batch += group
            size += n
            if size >= limit:
                yield False, batch
                batch, size = [], 0
        if batch:
            yield False, batch

    def _prepare(self, job: tuple[bool, list]) -> tuple:
        """On a copying thread: `(group, record octets, None)` for a whole
        record that checks, else `(group, Frame, datas)` of a new record."""
        whole, group = job
        if whole:
            rec = self._read_record(group)
            if rec is not None:
                return group, rec, None
        dd = self.dd
        hc = dd.hashclass
        hs = [hc(d) for d, _ in group]
        datas = _read_group(dd, hs, [e for _, e in group])
        for i, data in enumerate(datas):
            if data is None:  # not served by the batch: the one-block read names why
                datas[i] = dd._read_entry(hs[i], group[i][1])
        enc = getattr(self._local, "enc", None)
        if enc is None:  # zstd contexts are not thread safe: one a thread
            enc = self._local.enc = FrameEncoder(dd.zstd_level, dd.compress)
        return group, enc.encode(datas), datas

    def _read_record(self, group: list) -> bytes | None:
        """The stored record holding `group` (all its indexed blocks), if its
        header and CRC check; None to copy it block by block."""
        dd = self.dd
        e0 = group[0][1]
        hdr = encode_varint(e0.flags) + encode_varint(e0.payload_length)
        start = e0.payload_offset - len(hdr)
        length = len(hdr) + e0.payload_length + 4
        if start < 0 or e0.payload_length > (64 << 20):
            return None
        try:
            with dd._fds.fd(e0.filenum) as fd:
                rec = os.pread(fd, length, start)
        except OSError:
            return None
        if (
            len(rec) != length
            or rec[: len(hdr)] != hdr
            or zlib.crc32(memoryview(rec)[:-4]) != int.from_bytes(rec[-4:], "big")
        ):
            return None
        if not _whole(group, rec, len(hdr)):
            return None  # it holds a block no entry names: copy the named ones
        return rec

    def _append(self, group: list, rec, datas, progress) -> None:
        """Append a prepared record (see `_prepare`) and note its entries."""
        dd = self.dd
        r = self._raw or self._open_raw()
        off, num = r.off, r.fi.num
        if datas is None:  # a whole record: the blocks keep their place in it
            self.stats.whole_records += 1
            os.pwrite(r.fd, rec, off)
            r.off += len(rec)
            e0 = group[0][1]
            poff = off + len(rec) - 4 - e0.payload_length  # after the header
            nbytes = 0
            for d, e in group:
                r.pairs.append((d, e._replace(filenum=num, payload_offset=poff).encode()))
                nbytes += e.data_length
        else:
            os.pwritev(r.fd, rec.parts, off)
            r.off += sum(map(len, rec.parts))
            vals = index_values(num, rec.flags, off + rec.payload_offset, rec.payload_length, datas)
            r.pairs += zip([d for d, _ in group], vals, strict=True)
            nbytes = sum(map(len, datas))
        r.nbytes += nbytes
        self.stats.blocks += len(group)
        self.stats.bytes += nbytes
        if progress is not None:
            progress(nbytes)
        if r.off - r.kicked >= WRITEBACK_BYTES:
            try:
                sync_file_range(r.fd, r.kicked, r.off - r.kicked, SYNC_FILE_RANGE_WRITE)
            except OSError:
                pass  # only a hint: the fdatasync still makes it durable
            r.kicked = r.off
        if r.off >= dd.data_file_size:
            self._commit_raw(seal=True)
        elif r.off - r.committed >= COMMIT_BYTES:
            self._commit_raw(seal=False)

    def _open_raw(self) -> _RawFile:
        fd, fi = self.dd.new_data_file()
        # listed before any copy is written: if this gc is killed, the file's
        # unindexed copies (of blocks indexed elsewhere) would outlive their
        # block once a writer or the next gc indexed the rest of the file
        mark_rewriting(self.dd, rewriting(self.dd) | {fi.uuid})
        self.made.append(fi.uuid)
        self.stats.files.append(fi.num)
        self._raw = _RawFile(fd, fi)
        return self._raw

    def _commit_raw(self, seal: bool) -> None:
        r = self._raw
        if r is None:
            return
        os.fdatasync(r.fd)  # the records are durable before the index names them
        r.fi.indexed_to = r.off
        r.fi.sealed = r.fi.sealed or seal
        # replacing an entry is not a block added: keep the counters as they were
        self.dd._index.commit_values(
            r.pairs,
            r.nbytes,
            files=[r.fi],
            counters={"blocks_added": -len(r.pairs), "bytes_added": -r.nbytes},
            replace=True,
        )
        self.dd._index.release_pages()  # the replaced entries' pages: not read again
        r.pairs, r.nbytes = [], 0
        r.committed = r.off
        if seal:
            os.close(r.fd)
            self._raw = None

    def finish(self) -> None:
        """Make every copy durable and indexed; seal the files written."""
        self._commit_raw(seal=True)


def _whole(group: list, rec: bytes, hlen: int) -> bool:
    """Whether the entries of `group` name every block of the record `rec`
    (`hlen` octets of record header, then the payload): entries abut from the
    payload's start to its (decoded) end.  A block no entry names is a copy
    superseded by an interrupted gc; copying the record whole would carry it
    into a new file where nothing could ever remove it."""
    es = sorted((e for _, e in group), key=lambda e: e.data_offset)
    pos = 0
    for e in es:
        pos += len(encode_varint(e.data_length))
        if e.data_offset != pos:
            return False
        pos += e.data_length
    if es[0].flags & 3 == 0:  # plain
        end = es[0].payload_length
    else:
        try:
            end = zstandard.get_frame_parameters(rec[hlen : hlen + 18]).content_size
        except zstandard.ZstdError:
            return False
    return pos == end


def rewriting(dd: DataDir) -> set[str]:
    """The data files (uuids) an interrupted gc was rewriting: they may hold
    superseded copies, so the next gc rewrites them whatever their garbage."""
    try:
        return set((dd.path / REWRITING).read_text().split())
    except FileNotFoundError:
        return set()


def mark_rewriting(dd: DataDir, uuids: Iterable[str]) -> None:
    """Record (durably) that `uuids` are being rewritten, or that no file is
    (empty): before the first copy is indexed, after the last file is dropped."""
    from vtstore.fileio import write_durably

    uuids = sorted(set(uuids))
    p = dd.path / REWRITING
    if uuids:
        write_durably(p, "".join(u + "\n" for u in uuids).encode())
    else:
        p.unlink(missing_ok=True)


def _journal(dd: DataDir, uuids: list[str]) -> None:
    from vtstore.fileio import write_durably

    write_durably(dd.path / PENDING, "".join(u + "\n" for u in uuids).encode())


def finish_pending(dd: DataDir) -> int:
    """Unlink the data files a killed gc had dropped from the index but not yet
    removed (listed in `gc-pending` and in no index file entry); return how many."""
    uuids = gc_dropped(dd)
    if not uuids:
        return 0
    known = {fi.uuid for fi in dd._index.files().values()}
    n = 0
    for u in uuids:
        if u in known or len(u) != 32:
            continue
        try:
            (dd.path / "data" / f"{u}.vtd").unlink()
            n += 1
        except FileNotFoundError:
            pass
    (dd.path / PENDING).unlink(missing_ok=True)
    return n


def drop_files(dd: DataDir, dead: dict[int, list[bytes]], files: dict[int, FileInfo]) -> int:
    """Delete the data files `dead` names: their index entries (those listed,
    which must be every entry still pointing into the file) and the file table
    entry, then the file.  Return the octets freed on disk."""
    if not dead:
        return 0
    _journal(dd, [files[n].uuid for n in dead])
    freed = 0
    for num, digests in dead.items():
        fi = files[num]
        path = dd.data_file_path(fi)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        n, nbytes = dd._index.delete_file_entries(num, digests, sizes=True)
        dd._index.commit(counters={"blocks_added": -n, "bytes_added": -nbytes})
        path.unlink(missing_ok=True)
        dd._frames.discard_file(num)
        dd._fds.forget(num)
        dd._files.pop(num, None)
        freed += size
    from vtstore.stores.datadir import _fsync_dir

    _fsync_dir(dd.path / "data")
    (dd.path / PENDING).unlink(missing_ok=True)
    return freed


def now() -> float:
    return time.time()


def _read_group(dd: DataDir, hs: list, entries: list) -> list:
    """The verified data of the blocks of one record, read in one native batch
    (`readcache.read_many`: the frame decoded once, the hashes checked without
    the GIL); None for each block the batch could not serve."""
    from vtstore.stores.readcache import read_many

    try:
        return read_many(dd._fds, _NO_FRAMES, hs, [e.encode() for e in entries])
    except (ImportError, ValueError):
        return [None] * len(hs)


class _NoFrames:
    """A frame cache that keeps nothing: the copy reads each frame once, in
    file order, so caching the decoded frames would only hold memory."""

    def get(self, key):
        return None

    def put(self, key, payload) -> None:
        pass


_NO_FRAMES = _NoFrames()
