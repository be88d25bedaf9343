"""Checking, repairing and re-indexing a datadir.

`fsck_datadir` reads every record of every data file, hashes every block and
checks that the index agrees, in one consistent index snapshot.  Damage is
anything wrong before the last complete record of a file, or anywhere in data
the index says was flushed; an incomplete record at the very end is crash residue
and only noted.  `repair=True` (which needs the datadir to itself) rewrites each
damaged data file without its bad records and indexes good blocks the index
lacked; when index entries disagree with the data, or the index itself is
damaged, the whole index is rebuilt from the data files, so a block whose record
is intact is never dropped.  Only blocks of bad records are lost, and listed.
`reindex_datadir` rebuilds the whole index from the data files alone, whatever
state the index directory is in.
"""

from __future__ import annotations

import bisect
import errno
import os
import stat
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vtstore.errors import CorruptBlockError, FormatError, StoreError
from vtstore.hashes import HashCode
from vtstore.stores.index import IndexEntry, probe_index
from vtstore.stores.lmdbenv import IndexDamagedError
from vtstore.stores.recovery import mapped, try_lock, walk_file
from vtstore.stores.vtd import MAGIC, FrameEncoder, read_header

if TYPE_CHECKING:
    from vtstore.stores.datadir import DataDir

Progress = Callable[[int], None] | None
COMMIT_EVERY = 4096


@dataclass
class Problem:
    """One piece of damage: where, what, and the block it costs if known."""

    where: str
    detail: str
    hashcode: HashCode | None = None

    def __str__(self) -> str:
        h = f" [{self.hashcode}]" if self.hashcode is not None else ""
        return f"{self.where}: {self.detail}{h}"


@dataclass
class FsckReport:
    """What a check or re-index found."""

    store: str
    files: int = 0
    records: int = 0
    blocks: int = 0
    bytes: int = 0
    index_entries: int = 0
    uncommitted: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no damage was found (crash residue is not damage)."""
        return not self.problems

    def summary(self) -> str:
        state = "ok" if self.ok else f"{len(self.problems)} problem(s)"
        return (
            f"{self.store}: {state}; {self.files} data files, {self.records} records,"
            f" {self.blocks} blocks ({self.bytes} octets), {self.index_entries} index entries"
        )

    def lines(self) -> list[str]:
        """Every problem, note and repair, then the summary."""
        out = [f"damage: {p}" for p in self.problems]
        out += [f"note: {n}" for n in self.notes]
        out += [f"repaired: {r}" for r in self.repaired]
        out.append(self.summary())
        return out


def _where(dd: DataDir, fi, offset: int | None = None) -> str:
    rel = os.path.relpath(dd.data_file_path(fi), dd.path)
    return rel if offset is None else f"{rel}@{offset}"


def fsck_datadir(dd: DataDir, repair: bool = False, progress: Progress = None) -> FsckReport:
    """Check the whole datadir; with `repair`, fix what can be fixed."""
    rep = FsckReport(dd.name)
    if not dd.initialized:
        rep.notes.append("datadir not created yet (no blocks)")
        return rep
    if repair:
        dd.check_can_write("repair")
    if dd.index_damage is None:
        # walk the whole index in a child first: a damaged page may crash a reader
        why = probe_index(str(dd.path / "index"))
        if why is not None:
            dd.index_damage = IndexDamagedError(str(dd.path / "index"), why)
    if dd.index_damage is not None and not repair:
        return _damaged_index(dd, rep, dd.index_damage)
    if repair:
        if dd.index_damage is not None:
            _rebuild(dd, rep, dd.index_damage)
        else:
            dd.lock_exclusive()
    else:
        dd.flush()
    try:
        try:
            _check(dd, rep, progress, repair)
        except IndexDamagedError as e:
            if not repair:
                return _damaged_index(dd, FsckReport(dd.name), e)
            rep = FsckReport(dd.name)
            _rebuild(dd, rep, e)
            _check(dd, rep, progress, repair)
    finally:
        if repair:
            dd.unlock_exclusive()
    return rep


def _damaged_index(dd: DataDir, rep: FsckReport, e: IndexDamagedError) -> FsckReport:
    rep.problems.append(Problem("index", f"damaged: {e.why}"))
    rep.notes.append("the data files were not checked; `vt fsck --repair` or `vt reindex` rebuilds")
    return rep


def _rebuild(dd: DataDir, rep: FsckReport, why: IndexDamagedError | str) -> FsckReport:
    """Rebuild the index from the data files (under the exclusive lock)."""
    what = f"damaged: {why.why}" if isinstance(why, IndexDamagedError) else why
    if isinstance(why, IndexDamagedError):
        rep.problems.append(Problem("index", what))
    r = reindex_datadir(dd, keep_lock=True)
    rep.repaired.append(
        f"rebuilt the index from the data files ({r.index_entries} entries, {r.files} files)"
    )
    return r


def _check(dd: DataDir, rep: FsckReport, progress: Progress, repair: bool) -> None:
    hc = dd.hashclass
    idx = dd._index
    valid: dict[tuple[int, int], array] = {}
    damaged: set[int] = set()
    unindexed = []
    bad_entries = []
    confirmed = 0
    superseded = 0
    from vtstore.stores.compact import rewriting

    unfinished = rewriting(dd)
    with idx.snapshot() as snap:
        files = snap.files()
        rep.index_entries = snap.count()
        rep.files = len(files)
        on_disk = {p.stem for p in (dd.path / "data").glob("*.vtd")}
        for u in sorted(on_disk - {fi.uuid for fi in files.values()}):
            rep.notes.append(f"data/{u}.vtd is not in the index yet (an interrupted writer's)")
        for num in sorted(files):
            fi = files[num]
            try:
                fd = os.open(dd.data_file_path(fi), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                rep.problems.append(Problem(_where(dd, fi), "data file is missing"))
                damaged.add(num)
                continue
            try:
                with mapped(fd) as buf:
                    size = len(buf)
                    try:
                        meta, start = read_header(buf)
                        if meta.get("hashclass") != hc.hashname:
                            rep.problems.append(
                                Problem(_where(dd, fi), f"holds {meta.get('hashclass')} blocks")
                            )
                            damaged.add(num)
                            continue
                    except FormatError as e:
                        rep.problems.append(Problem(_where(dd, fi, 0), str(e)))
                        damaged.add(num)
                        start = min(len(MAGIC), size)
                    if size < fi.indexed_to:
                        rep.problems.append(
                            Problem(
                                _where(dd, fi),
                                f"file has {size} octets but {fi.indexed_to} were flushed",
                            )
                        )
                        damaged.add(num)
                    for kind, ev, found in walk_file(buf, num, hc, start, size, fi.indexed_to):
                        if kind == "blocks":
                            rep.records += 1
                            spans = array("Q")
                            for digest, e in found:
                                rep.blocks += 1
                                rep.bytes += e.data_length
                                spans.append(e.data_offset)
                                cur = snap.get(digest)
                                if cur == e:
                                    confirmed += 1
                                elif cur is None:
                                    if fi.uuid in unfinished:
                                        superseded += 1
                                    elif ev.end <= fi.indexed_to:
                                        unindexed.append((digest, e))
                                        rep.problems.append(
                                            Problem(
                                                _where(dd, fi, ev.offset),
                                                "flushed block missing from the index",
                                                hc(digest),
                                            )
                                        )
                                    else:
                                        rep.uncommitted += 1
                            valid[(num, ev.payload_offset)] = spans
                        elif kind == "damage":
                            damaged.add(num)
                            rep.problems.append(
                                Problem(
                                    _where(dd, fi, ev.offset),
                                    f"{ev.end - ev.offset} bad octets: {ev.reason}",
                                )
                            )
                        else:
                            rep.notes.append(
                                f"{_where(dd, fi, ev.offset)}: {ev.end - ev.offset} octets of"
                                f" crash residue ({ev.reason})"
                            )
            finally:
                os.close(fd)
            if progress:
                progress(size)
        if superseded:
            rep.notes.append(
                f"{superseded} superseded copies in files an interrupted gc was"
                " rewriting (the next vt gc removes them)"
            )
        if rep.uncommitted:
            rep.notes.append(f"{rep.uncommitted} blocks written after the last flush of their file")
        if confirmed != rep.index_entries:
            bad_entries = _find_bad_entries(dd, snap, valid, confirmed)
        for digest, e, why in bad_entries:
            fi = None if e is None else files.get(e.filenum)
            if fi is not None:
                where = _where(dd, fi, e.payload_offset)
            else:
                where = "index" if e is None else f"data file #{e.filenum}"
            rep.problems.append(Problem(where, f"index entry {why}", hc(digest)))
    if repair and rep.problems:
        _repair(dd, rep, files, damaged, unindexed, bad_entries)


def _find_bad_entries(dd: DataDir, snap, valid, confirmed: int) -> list:
    """Index entries that point at no good block (the slow path, when the counts
    of pass one disagree)."""
    bad = []
    unsure = []
    for digest, raw in snap.raw_items():
        try:
            e = IndexEntry.decode(raw)
        except FormatError as x:
            bad.append((digest, None, f"does not decode ({x})"))
            continue
        spans = valid.get((e.filenum, e.payload_offset))
        if spans is None:
            bad.append((digest, e, "points at a damaged or missing record"))
            continue
        i = bisect.bisect_left(spans, e.data_offset)
        if i == len(spans) or spans[i] != e.data_offset:
            bad.append((digest, e, "points inside a record but at no block"))
        else:
            unsure.append((digest, e))
    if confirmed + len(bad) < snap.count():
        for digest, e in unsure:
            try:
                dd._read_entry(dd.hashclass(digest), e)
            except (CorruptBlockError, KeyError, StoreError) as x:
                bad.append((digest, e, f"does not match its data ({x})"))
    return bad


def _repair(dd: DataDir, rep: FsckReport, files, damaged, unindexed, bad_entries) -> None:
    """Rewrite the damaged data files; then, if any index entry disagreed with
    the data (or a data file is gone), rebuild the index from the data files,
    which re-derives every intact block's entry instead of dropping it."""
    hc = dd.hashclass
    by_file: dict[int, list] = {}
    for d, e, _ in bad_entries:
        if e is not None:
            by_file.setdefault(e.filenum, []).append((d, e))
    rebuild = bool(bad_entries)
    for num in sorted(damaged):
        fi = files[num]
        path = dd.data_file_path(fi)
        fd = try_lock(path)
        if fd is None:
            if not path.exists():
                rebuild = True
                rep.repaired.append(f"forgot missing {_where(dd, fi)}")
            continue
        # blocks of a bad record that still decode and verify are worth keeping
        salvage = []
        for d, e in by_file.get(num, ()):
            try:
                salvage.append((d, dd._read_entry(hc(d), e)))
            except (CorruptBlockError, KeyError, StoreError):
                pass
        try:
            kept, dropped, new_fi = _rewrite(dd, fd, fi, salvage)
        finally:
            os.close(fd)
        # the entries still pointing into it are bad entries: a rebuild follows
        dd._index.delete_file_entries(num, ())
        path.unlink(missing_ok=True)
        dd._fds.forget(num)
        dd._frames.discard_file(num)
        rep.repaired.append(
            f"rewrote {_where(dd, fi)} as {_where(dd, new_fi)}: kept {kept} blocks"
            f" ({len(salvage)} salvaged from bad records), dropped {dropped} bad regions"
        )
    if rebuild:
        why = f"{len(bad_entries)} index entries disagreed with the data files"
        _rebuild(dd, rep, why)
    else:
        fresh = [(d, e) for d, e in unindexed if e.filenum not in damaged]
        if fresh:
            dd._index.commit(fresh)
            rep.repaired.append(f"indexed {len(fresh)} flushed blocks the index lacked")
    idx = dd._index
    for d in dict.fromkeys(d for d, _, _ in bad_entries):
        if not idx.contains(d):
            rep.repaired.append(f"lost block {hc(d)} (fetch it from another store)")
    dd._files = idx.files()


def _rewrite(dd: DataDir, fd: int, fi, salvage) -> tuple[int, int, object]:
    """Copy the good records of a damaged file, and the `salvage` blocks, into a
    new sealed file and point the index at the copies."""
    idx = dd._index
    hc = dd.hashclass
    new_fd, new_fi = dd.new_data_file()
    kept = dropped = 0
    try:
        with mapped(fd) as buf:
            try:
                _, start = read_header(buf)
            except FormatError:
                start = min(len(MAGIC), len(buf))
            off = new_fi.indexed_to
            batch = []
            for kind, ev, found in walk_file(buf, fi.num, hc, start, len(buf), fi.indexed_to):
                if kind != "blocks":
                    dropped += kind == "damage"
                    continue
                raw = buf[ev.offset : ev.end]
                pos = 0
                while pos < len(raw):
                    pos += os.pwrite(new_fd, raw[pos:], off + pos)
                shift = off - ev.offset
                for digest, e in found:
                    try:
                        cur = idx.get(digest)
                    except IndexDamagedError:
                        cur = None  # a rebuild of the index follows
                    if cur is None or cur.filenum == fi.num:
                        batch.append(
                            (
                                digest,
                                e._replace(
                                    filenum=new_fi.num, payload_offset=e.payload_offset + shift
                                ),
                            )
                        )
                        kept += 1
                off += len(raw)
        if salvage:
            enc = FrameEncoder(dd.zstd_level, dd.compress).encode([d for _, d in salvage])
            rec = enc.record
            pos = 0
            while pos < len(rec):
                pos += os.pwrite(new_fd, rec[pos:], off + pos)
            for (digest, _), (doff, dlen) in zip(salvage, enc.spans, strict=True):
                e = IndexEntry(
                    new_fi.num, enc.flags, off + enc.payload_offset, enc.payload_length, doff, dlen
                )
                batch.append((digest, e))
                kept += 1
            off += len(rec)
        os.fdatasync(new_fd)
        new_fi.indexed_to = off
        new_fi.sealed = True
        for i in range(0, max(len(batch), 1), COMMIT_EVERY):
            idx.commit(batch[i : i + COMMIT_EVERY], files=[new_fi], replace=True)
    finally:
        os.close(new_fd)
    return kept, dropped, new_fi


def reindex_datadir(dd: DataDir, progress: Progress = None, keep_lock: bool = False) -> FsckReport:
    """Rebuild the index of `dd` from its data files into a new, empty index
    (whatever state the old one is in); the report lists damage.  Takes the
    datadir exclusively; `keep_lock` leaves it so (for fsck's repair)."""
    rep = FsckReport(dd.name)
    dd.reset_index()
    try:
        idx = dd._index
        hc = dd.hashclass
        for p in dd._data_files():
            try:
                fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    os.close(fd)
                    raise IsADirectoryError(errno.EISDIR, "not a regular file")
            except OSError as e:
                rep.problems.append(Problem(f"data/{p.name}", f"unreadable: {e.strerror or e}"))
                continue
            try:
                size = _index_file(dd, idx, hc, fd, p, rep)
            finally:
                os.close(fd)
            if progress:
                progress(size)
        rep.index_entries = idx.count()
        dd._files = idx.files()
    finally:
        if not keep_lock:
            dd.unlock_exclusive()
    return rep


def _index_file(dd: DataDir, idx, hc, fd: int, p, rep: FsckReport) -> int:
    """Index every good record of one data file; return its size."""
    with mapped(fd) as buf:
        size = len(buf)
        damaged = False
        try:
            meta, start = read_header(buf)
            if meta.get("hashclass") != hc.hashname:
                rep.problems.append(
                    Problem(f"data/{p.name}", f"holds {meta.get('hashclass')} blocks")
                )
                return size
        except FormatError as e:
            rep.problems.append(Problem(f"data/{p.name}@0", str(e)))
            start = min(len(MAGIC), size)
            damaged = True
        fi = idx.new_file(p.stem, start)
        rep.files += 1
        batch = []
        good_end = start
        for kind, ev, found in walk_file(buf, fi.num, hc, start, size):
            if kind == "blocks":
                rep.records += 1
                rep.blocks += len(found)
                rep.bytes += sum(e.data_length for _, e in found)
                batch.extend(found)
                good_end = ev.end
                if len(batch) >= COMMIT_EVERY:
                    idx.commit(batch)
                    batch = []
            elif kind == "damage":
                damaged = True
                rep.problems.append(
                    Problem(
                        f"data/{p.name}@{ev.offset}",
                        f"{ev.end - ev.offset} bad octets: {ev.reason}",
                    )
                )
            else:
                rep.notes.append(
                    f"data/{p.name}@{ev.offset}: {ev.end - ev.offset} octets of"
                    f" crash residue ({ev.reason})"
                )
        fi.indexed_to = good_end
        fi.sealed = damaged or size >= dd.data_file_size
        idx.commit(batch, files=[fi])
    return size


def check_generic(store, progress: Progress = None) -> FsckReport:
    """Check a store without a fsck of its own: fetch every listed block and
    verify its hash."""
    rep = FsckReport(store.name)
    for h in store.hashcodes():
        rep.index_entries += 1
        try:
            data = store[h]
        except CorruptBlockError as e:
            rep.problems.append(Problem(store.name, e.detail, h))
            continue
        except KeyError:
            rep.problems.append(Problem(store.name, "listed but not fetchable", h))
            continue
        rep.blocks += 1
        rep.bytes += len(data)
        if not h.check(data):
            rep.problems.append(Problem(store.name, "data does not match its hash", h))
        if progress:
            progress(1)
    return rep


def fsck_targets(store) -> list:
    """The stores underneath wrappers (cache, progress, proxy) that hold data."""
    from vtstore.stores.cache import CacheStore
    from vtstore.stores.progress import ProgressStore
    from vtstore.stores.proxy import ProxyStore

    if isinstance(store, CacheStore):
        return fsck_targets(store.backend) + fsck_targets(store.cache)
    if isinstance(store, ProgressStore):
        return fsck_targets(store.inner)
    if isinstance(store, ProxyStore):
        out = []
        for s in store._stores:
            for t in fsck_targets(s):
                if all(t is not o for o in out):
                    out.append(t)
        return out
    return [store]


def fsck_store(store, repair: bool = False, progress: Progress = None) -> list[FsckReport]:
    """Check every data-holding store under `store`; one report each."""
    reports = []
    for t in fsck_targets(store):
        if hasattr(t, "fsck"):
            reports.append(t.fsck(repair=repair, progress=progress))
        else:
            rep = check_generic(t, progress)
            if repair and rep.problems:
                rep.notes.append(f"{type(t).__name__} stores cannot be repaired")
            reports.append(rep)
    return reports
