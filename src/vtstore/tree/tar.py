"""Streamed tar (pax) export of a tree.

Members are written in the tree's walk order with pax headers carrying
nanosecond mtimes, long names, user/group names and xattrs (`SCHILY.xattr.*`, POSIX
ACLs included).  Hard links become tar hard links to the first name of their inode
group.  Sockets cannot be represented in tar and are skipped with a warning.
The walk is iterative (any depth) and goes on past damage (see `write_tar`).
"""

from __future__ import annotations

import io
import logging
import struct
import tarfile
from collections.abc import Iterator

from vtstore.tree.dir import walk
from vtstore.tree.dirent import (
    GROUP_TYPES,
    T_DEVICE,
    T_DIR,
    T_FIFO,
    T_FILE,
    T_HARDLINK,
    T_SOCKET,
    T_SYMLINK,
)
from vtstore.tree.fsexport import ExportStats
from vtstore.tree.salvage import (
    BAD,
    DATA,
    FILL,
    Damage,
    LimitError,
    damage_text,
    iter_content,
    read_entries,
    tree_totals,
)

log = logging.getLogger(__name__)


class BlockReader(io.RawIOBase):
    """A readable stream over a block's content, read sequentially, past damage.

    Runs (RLE) and unreadable ranges read as zeros, produced a MiB at a time so a
    hostile run of a terabyte costs no memory; what could not be read is
    collected in `bad` (one line per range) and `lost` (bytes).
    """

    def __init__(self, block, store):
        super().__init__()
        self._pieces = iter_content(block, store)
        self._buf = memoryview(b"")
        self._fill = 0  # bytes of `_octet` still to produce
        self._octet = 0
        self._pos = 0
        self.bad: list[str] = []
        self.lost = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            if self._fill:
                k = min(self._fill, 1 << 20)
                self._fill -= k
                self._buf = memoryview(bytes((self._octet,)) * k if self._octet else bytes(k))
                break
            try:
                kind, n, value = next(self._pieces)
            except StopIteration:
                return 0
            if kind == DATA:
                self._buf = memoryview(value)
            else:
                if kind == BAD:
                    self.bad.append(f"{damage_text(value)} (bytes {self._pos}-{self._pos + n - 1})")
                    self.lost += n
                self._fill, self._octet = n, value if kind == FILL else 0
            self._pos += n
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


# GNU tar's --acls reads ACLs from these keys, in acl_to_text form
_ACL_KEYS = {
    "system.posix_acl_access": "SCHILY.acl.access",
    "system.posix_acl_default": "SCHILY.acl.default",
}
_ACL_TAGS = {0x01: "user", 0x02: "user", 0x04: "group", 0x08: "group", 0x10: "mask", 0x20: "other"}


def acl_to_text(value: bytes) -> str | None:
    """The text form (`user::rw-,user:1000:r--,...`) of a binary POSIX ACL xattr."""
    if len(value) < 4 or (len(value) - 4) % 8 or struct.unpack_from("<I", value)[0] != 2:
        return None
    parts = []
    for off in range(4, len(value), 8):
        tag, perm, qid = struct.unpack_from("<HHI", value, off)
        name = _ACL_TAGS.get(tag)
        if name is None:
            return None
        qual = str(qid) if tag in (0x02, 0x08) else ""
        rwx = ("r" if perm & 4 else "-") + ("w" if perm & 2 else "-") + ("x" if perm & 1 else "-")
        parts.append(f"{name}:{qual}:{rwx}")
    return ",".join(parts)


def _info(path: str, e) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(path or ".")
    m = e.meta
    if m is not None:
        ti.mode = m.mode if m.mode is not None else 0o644
        ti.uid = m.uid or 0
        ti.gid = m.gid or 0
        ti.uname = m.user or ""
        ti.gname = m.group or ""
        if m.mtime_ns is not None:
            ti.mtime = m.mtime_ns // 1_000_000_000
            sec, ns = divmod(m.mtime_ns, 1_000_000_000)
            ti.pax_headers["mtime"] = f"{sec}.{ns:09d}"
        for name, value in m.xattrs:
            if name in _ACL_KEYS:
                text = acl_to_text(value)
                if text is not None:
                    ti.pax_headers[_ACL_KEYS[name]] = text
                    continue
            ti.pax_headers["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return ti


def walk_past_damage(root, store, stats: ExportStats, filters=None) -> Iterator[tuple[str, object]]:
    """`(relative path, dirent)` depth-first in name order, each dir before its
    entries, iteratively (any depth); damaged directories yield what can be read
    and are recorded in `stats.damaged`.  With `filters`, only the entries the
    rules keep (an excluded directory is not read)."""

    def entries_of(d, path):
        entries, problems = read_entries(d, store)
        if problems:
            log.warning("directory %s is damaged: %s", path or ".", "; ".join(problems[:3]))
            stats.damaged.append(Damage(path or ".", problems, kind="dir"))
        if filters is not None:
            entries = filters.keep_entries(entries, path)
        return entries

    return walk(root, store, entries=entries_of)


def tar_members(
    root,
    store,
    stats: ExportStats,
    *,
    links=None,
    max_files: int | None = None,
    max_size: int | None = None,
    filters=None,
) -> Iterator[tuple[tarfile.TarInfo, object]]:
    """The members of the tar of the tree under `root`, in walk order.

    Yields `(TarInfo, dirent)` for a regular file (its content, `dirent.block`,
    follows the header) and `(TarInfo, None)` for every other member; counts
    them in `stats`.  The one place that decides what a tree is as tar: both
    `write_tar` and the mount's tar view (`tree.tarview`) are made from it.
    Arguments as for `write_tar`.
    """
    seen: dict[int, str] = {}
    if filters is not None and links is None and root.is_dir:
        from vtstore.tree.links import LinkResolver

        links = LinkResolver(root, store)  # a group's first name may be left out
    for path, e in walk_past_damage(root, store, stats, filters):
        if max_files is not None and stats.entries >= max_files:
            raise LimitError(f"more than {max_files:,} entries exported (--max-files)")
        t = e.type
        if t == T_HARDLINK and e.ino not in seen and links is not None:
            first = links.resolve(e.ino)
            if first is not None and first.type in GROUP_TYPES:
                e, t = first.with_changes(name=e.name, ino=e.ino), first.type
        if e.ino is not None and t in GROUP_TYPES and t != T_SOCKET:
            seen.setdefault(e.ino, path)  # later names of the group link to this one
        ti = _info(path, e)
        if t == T_DIR:
            ti.type = tarfile.DIRTYPE
            yield ti, None
            stats.dirs += 1
        elif t == T_FILE:
            if max_size is not None and stats.bytes + e.size > max_size:
                raise LimitError(f"{path}: exporting it would pass {max_size:,} bytes (--max-size)")
            ti.type = tarfile.REGTYPE
            ti.size = e.size
            yield ti, e
            stats.files += 1
            stats.bytes += e.size
        elif t == T_HARDLINK:
            target = seen.get(e.ino)
            if target is None:
                msg = f"{path}: hard link to an unknown inode group {e.ino}, skipped"
                log.warning("%s", msg)
                stats.errors.append(msg)
                continue
            ti.type = tarfile.LNKTYPE
            ti.linkname = target
            yield ti, None
            stats.files += 1
        elif t == T_SYMLINK:
            ti.type = tarfile.SYMTYPE
            ti.linkname = e.target or ""
            yield ti, None
            stats.others += 1
        elif t == T_FIFO:
            ti.type = tarfile.FIFOTYPE
            yield ti, None
            stats.others += 1
        elif t == T_DEVICE:
            kind, major, minor = e.rdev
            ti.type = tarfile.CHRTYPE if kind == "c" else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = major, minor
            yield ti, None
            stats.others += 1
        elif t == T_SOCKET:
            log.warning("%s: sockets cannot be stored in tar, skipped", path)


def write_tar(
    root,
    store,
    fileobj,
    *,
    links=None,
    max_files: int | None = None,
    max_size: int | None = None,
    filters=None,
) -> ExportStats:
    """Write the tree under dirent `root` as a pax tar stream to `fileobj`.

    Goes on past damage: a file whose content cannot all be read is written
    whole, its unreadable ranges as zeros, and recorded in the returned stats'
    `damaged` (its size is in the header before the damage is found, so the
    member cannot be dropped or cut short).  `links` (with `resolve(ino)`) gives
    the content of a hard-link group whose first name is outside `root`; that
    group's first name here becomes a regular member.  `max_files`/`max_size`
    limit entries and file bytes (checked before anything is written, and as
    members are written); hitting one raises `LimitError`.  `filters`
    (`vtstore.tree.filters.Filters`) writes only the entries its rules keep.
    """
    stats = ExportStats()
    if max_files is not None or max_size is not None:
        tree_totals(root, store, max_files, max_size)
    with tarfile.open(
        fileobj=fileobj,
        mode="w|",
        format=tarfile.PAX_FORMAT,
        encoding="utf-8",
        errors="surrogateescape",
    ) as tf:
        members = tar_members(
            root,
            store,
            stats,
            links=links,
            max_files=max_files,
            max_size=max_size,
            filters=filters,
        )
        for ti, e in members:
            if e is None:
                tf.addfile(ti)
                continue
            reader = BlockReader(e.block, store)
            tf.addfile(ti, io.BufferedReader(reader, 1 << 20))
            if reader.bad:
                log.warning("%s is damaged: %s", ti.name, "; ".join(reader.bad[:3]))
                stats.damaged.append(Damage(ti.name, reader.bad, lost_bytes=reader.lost))
    return stats
