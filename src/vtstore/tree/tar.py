"""Streamed tar (pax) export of a tree.

Members are written in the tree's walk order with pax headers carrying
nanosecond mtimes, long names, user/group names and xattrs (`SCHILY.xattr.*`, POSIX
ACLs included).  Hard links become tar hard links to the first name of their inode
group.  Sockets cannot be represented in tar and are skipped with a warning.
"""

from __future__ import annotations

import io
import logging
import struct
import tarfile

from vtstore.tree.dir import walk
from vtstore.tree.dirent import T_DEVICE, T_DIR, T_FIFO, T_FILE, T_HARDLINK, T_SOCKET, T_SYMLINK

log = logging.getLogger(__name__)


class BlockReader(io.RawIOBase):
    """A readable stream over a block's content (read sequentially, in leaf pieces)."""

    def __init__(self, block, store):
        super().__init__()
        self._chunks = block.chunks(store) if block is not None else iter(())
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            try:
                self._buf = memoryview(next(self._chunks))
            except StopIteration:
                return 0
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


def write_tar(root, store, fileobj) -> None:
    """Write the tree under dirent `root` as a pax tar stream to `fileobj`."""
    links: dict[int, str] = {}
    with tarfile.open(
        fileobj=fileobj,
        mode="w|",
        format=tarfile.PAX_FORMAT,
        encoding="utf-8",
        errors="surrogateescape",
    ) as tf:
        for path, e in walk(root, store):
            ti = _info(path, e)
            t = e.type
            if t == T_DIR:
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif t == T_FILE:
                ti.type = tarfile.REGTYPE
                ti.size = e.size
                if e.ino is not None:
                    links.setdefault(e.ino, path)
                tf.addfile(ti, io.BufferedReader(BlockReader(e.block, store), 1 << 20))
            elif t == T_HARDLINK:
                target = links.get(e.ino)
                if target is None:
                    log.warning("%s: hard link to an unknown inode group, skipped", path)
                    continue
                ti.type = tarfile.LNKTYPE
                ti.linkname = target
                tf.addfile(ti)
            elif t == T_SYMLINK:
                ti.type = tarfile.SYMTYPE
                ti.linkname = e.target or ""
                tf.addfile(ti)
            elif t == T_FIFO:
                ti.type = tarfile.FIFOTYPE
                tf.addfile(ti)
            elif t == T_DEVICE:
                kind, major, minor = e.rdev
                ti.type = tarfile.CHRTYPE if kind == "c" else tarfile.BLKTYPE
                ti.devmajor, ti.devminor = major, minor
                tf.addfile(ti)
            elif t == T_SOCKET:
                log.warning("%s: sockets cannot be stored in tar, skipped", path)
