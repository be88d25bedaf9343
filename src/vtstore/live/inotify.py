"""A thin ctypes surface over Linux inotify (no dependency beyond libc).

Only what the tree monitor needs: an instance fd, adding and removing watches,
and parsing the events a read returns."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from collections.abc import Iterator

from vtstore.errors import VTError

IN_ACCESS = 0x1
IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x1000000
IN_DONT_FOLLOW = 0x2000000
IN_EXCL_UNLINK = 0x4000000
IN_ISDIR = 0x40000000

IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

#: what a tree monitor asks for on every directory
TREE_MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
    | IN_EXCL_UNLINK
)

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len of the name that follows


class InotifyError(VTError):
    """inotify is missing or out of resources (watches, instances)."""


_libc = None


def _lib():
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c") or "libc.so.6"
        lib = ctypes.CDLL(name, use_errno=True)
        if not hasattr(lib, "inotify_init1"):
            raise InotifyError("this libc has no inotify")
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        lib.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        _libc = lib
    return _libc


def init() -> int:
    """A new non-blocking, close-on-exec inotify instance (its fd)."""
    fd = _lib().inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        e = ctypes.get_errno()
        raise InotifyError(f"inotify_init1: {os.strerror(e)}")
    return fd


def add_watch(fd: int, path: bytes, mask: int = TREE_MASK) -> int:
    """Watch directory `path`; the watch descriptor (the same one again for a
    directory already watched, even under another name).  Raises OSError."""
    wd = _lib().inotify_add_watch(fd, path, mask)
    if wd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), os.fsdecode(path))
    return wd


def rm_watch(fd: int, wd: int) -> None:
    """Stop watching `wd` (errors ignored: the kernel may have dropped it)."""
    _lib().inotify_rm_watch(fd, wd)


def parse(buf: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """The `(wd, mask, cookie, name)` events of one read's buffer."""
    off, n = 0, len(buf)
    while off + _HEADER.size <= n:
        wd, mask, cookie, ln = _HEADER.unpack_from(buf, off)
        off += _HEADER.size
        name = bytes(buf[off : off + ln]).rstrip(b"\0")
        off += ln
        yield wd, mask, cookie, name
