"""Walking data files: adopting a dead writer's file, recovering its tail, eviction.

`walk_file` turns the records of a data file into index entries (decoding each
frame and hashing each block); it is what lets the index be rebuilt from the
data files alone.  `adopt_or_create` picks the data file a new writer appends
to: an unsealed file no live process has locked (its tail recovered first: the
complete records indexed, a torn last record truncated) or else a new one.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from vtstore.errors import FormatError
from vtstore.stores.index import FileInfo, IndexEntry
from vtstore.stores.vtd import (
    Damage,
    Record,
    decode_payload,
    iter_entries,
    map_file,
    read_header,
    scan_records,
)

if TYPE_CHECKING:
    from vtstore.stores.datadir import DataDir

log = logging.getLogger(__name__)


@contextmanager
def mapped(fd: int, length: int | None = None):
    """A read-only map of a file, closed on exit."""
    m = map_file(fd, length)
    try:
        yield m
    finally:
        if not isinstance(m, bytes):
            m.close()


def walk_file(
    buf, filenum: int, hashclass, start: int, end: int, committed: int = 0
) -> Iterator[tuple[str, object, list]]:
    """Yield `("blocks", Record, [(digest, IndexEntry), ...])` per good record,
    `("damage", Damage, [])` and a final `("residue", Residue, [])` if any."""
    for ev in scan_records(buf, start, end, committed):
        if isinstance(ev, Record):
            stored = buf[ev.payload_offset : ev.payload_offset + ev.payload_length]
            try:
                payload = decode_payload(ev.flags, stored)
                spans = list(iter_entries(payload))
            except FormatError as e:
                yield "damage", Damage(ev.offset, ev.end, f"record does not decode: {e}"), []
                continue
            found = []
            for doff, dlen in spans:
                digest = hashclass.hash_function(payload[doff : doff + dlen])
                found.append(
                    (
                        digest,
                        IndexEntry(
                            filenum, ev.flags, ev.payload_offset, ev.payload_length, doff, dlen
                        ),
                    )
                )
            yield "blocks", ev, found
        elif isinstance(ev, Damage):
            yield "damage", ev, []
        else:
            yield "residue", ev, []


def try_lock(path, write: bool = True) -> int | None:
    """Open `path` and take a non-blocking exclusive flock; None if another holds it."""
    try:
        fd = os.open(path, (os.O_RDWR if write else os.O_RDONLY) | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


def recover_tail(dd: DataDir, fd: int, fi: FileInfo) -> int | None:
    """Index the complete records after `fi.indexed_to` and truncate a torn tail.

    Return the new end of the file, or None if the file must not be appended to
    (damaged, foreign); then it is sealed and fsck will say why.
    """
    size = os.fstat(fd).st_size
    batch = []
    bad = None
    with mapped(fd, size) as buf:
        try:
            meta, hend = read_header(buf)
        except FormatError as e:
            bad = str(e)
            hend = size
            meta = {"hashclass": dd.hashclass.hashname}
        if meta.get("hashclass") != dd.hashclass.hashname:
            bad = f"holds {meta.get('hashclass')} blocks"
        start = max(fi.indexed_to, hend)
        good_end = start
        if bad is None and start > size:
            bad = f"shorter ({size}) than its flushed length ({fi.indexed_to})"
        if bad is None:
            for kind, ev, found in walk_file(buf, fi.num, dd.hashclass, start, size, fi.indexed_to):
                if kind == "blocks":
                    batch.extend(found)
                    good_end = ev.end
                elif kind == "damage":
                    bad = f"damaged at offset {ev.offset}: {ev.reason}"
                    break
                else:
                    break
    if bad is not None:
        log.warning("data file %s %s; sealing it (run vt fsck)", dd.data_file_path(fi), bad)
        fi.sealed = True
        if batch:
            os.fdatasync(fd)
            fi.indexed_to = max(fi.indexed_to, good_end)
        dd._index.commit(batch, files=[fi])
        return None
    if good_end != fi.indexed_to or batch:
        os.fdatasync(fd)
        fi.indexed_to = good_end
        dd._index.commit(batch, files=[fi])
    if good_end < size:
        os.ftruncate(fd, good_end)
        os.fsync(fd)
    return good_end


#: the data files (uuids) a gc dropped from the index and is about to unlink,
#: one a line (`compact.drop_files` writes it; the next gc finishes the job)
PENDING = "gc-pending"


def gc_dropped(dd: DataDir) -> list[str]:
    """The uuids listed in `PENDING` (none if there is no such file)."""
    try:
        return (dd.path / PENDING).read_text().split()
    except FileNotFoundError:
        return []


def adopt_or_create(dd: DataDir) -> tuple[int, FileInfo, int]:
    """The data file this process will append to: `(locked fd, info, end offset)`."""
    idx = dd._index
    files = idx.files()
    dd._files = files
    known = {fi.uuid for fi in files.values()}
    known.update(gc_dropped(dd))  # garbage: the next gc unlinks them
    ddir = dd.path / "data"
    # a file renamed into place by a writer that died before registering it
    for p in sorted(ddir.glob("*.vtd")):
        if p.stem in known:
            continue
        fd = try_lock(p)
        if fd is None:
            continue
        try:
            with mapped(fd) as buf:
                meta, hend = read_header(buf)
            if meta.get("hashclass") == dd.hashclass.hashname and meta.get("uuid") == p.stem:
                fi = idx.new_file(p.stem, hend)
                files[fi.num] = fi
            else:
                log.warning("ignoring foreign data file %s", p)
        except FormatError as e:
            log.warning("ignoring data file %s: %s", p, e)
        finally:
            os.close(fd)
    chosen = None
    for num in sorted(files):
        fi = files[num]
        if fi.sealed:
            continue
        fd = try_lock(dd.data_file_path(fi))
        if fd is None:
            continue
        try:
            end = recover_tail(dd, fd, fi)
        except BaseException:
            os.close(fd)
            raise
        if chosen is None and end is not None and end < dd.data_file_size:
            chosen = (fd, fi, end)
            continue
        if end is not None and end >= dd.data_file_size:
            fi.sealed = True
            idx.commit(files=[fi])
        os.close(fd)
    if chosen is None:
        fd, fi = dd.new_data_file()
        chosen = (fd, fi, fi.indexed_to)
    dd._files[chosen[1].num] = chosen[1]
    return chosen


def evict_oldest(dd: DataDir) -> int:
    """Remove the oldest sealed data files until the datadir is under
    `dd.max_size`; return how many files went."""
    idx = dd._index
    files = idx.files()
    sizes = {}
    for num, fi in files.items():
        try:
            sizes[num] = dd.data_file_path(fi).stat().st_size
        except FileNotFoundError:
            sizes[num] = 0
    total = sum(sizes.values())
    gone = 0
    for num in sorted(files):
        if total <= dd.max_size:
            break
        fi = files[num]
        if not fi.sealed:
            continue
        path = dd.data_file_path(fi)
        fd = try_lock(path)
        if fd is None:
            continue
        try:
            digests = []
            with mapped(fd) as buf:
                try:
                    _, hend = read_header(buf)
                except FormatError:
                    hend = len(buf)
                for kind, _ev, found in walk_file(buf, num, dd.hashclass, hend, len(buf)):
                    if kind == "blocks":
                        digests.extend(d for d, _ in found)
            idx.delete_file_entries(num, digests)
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
        dd._frames.discard_file(num)
        dd._fds.forget(num)
        dd._files.pop(num, None)
        total -= sizes[num]
        gone += 1
    return gone
