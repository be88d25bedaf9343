"""The FUSE adapter: pyfuse3 request handlers over a `FileSystem`.

Every handler is wrapped so that an `FSError` becomes its errno and any other
exception is logged and answered with EIO: an exception escaping a pyfuse3
handler would end the mount.  Cheap operations run in the trio thread; reads
that miss the block cache, fsync and the `x-vt-*` controls (which wait for
storing) run in worker threads so the loop keeps serving.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import queue
import threading

import pyfuse3
import trio

from vtstore.fs.control import PREFIX
from vtstore.fs.errors import FSError
from vtstore.fs.filesystem import RENAME_EXCHANGE, RENAME_NOREPLACE, FileSystem
from vtstore.tree.dirent import fsdec, fsenc

log = logging.getLogger(__name__)

BLKSIZE = 128 * 1024


def _handler(fn):
    @functools.wraps(fn)
    async def wrapper(self, *args):
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except FSError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        except OSError as e:
            log.warning("%s: %s", fn.__name__, e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class Operations(pyfuse3.Operations):
    """pyfuse3 operations of one mount; `syncer` records states (a `Mount`)."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, fs: FileSystem, syncer=None, timeout: float = 1.0):
        super().__init__()
        self.fs = fs
        self.syncer = syncer
        self.timeout = timeout
        self._notes: queue.Queue = queue.Queue()
        self._notifier = threading.Thread(
            target=self._notify_loop, name="vt-fuse-notify", daemon=True
        )
        self._notifier.start()

    # -- helpers ---------------------------------------------------------------

    def _entry(self, a) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = a.ino
        e.generation = 0
        e.entry_timeout = self.timeout
        e.attr_timeout = self.timeout
        e.st_mode = a.mode
        e.st_nlink = a.nlink
        e.st_uid = a.uid
        e.st_gid = a.gid
        e.st_rdev = a.rdev
        e.st_size = a.size
        e.st_blksize = BLKSIZE
        e.st_blocks = a.blocks
        e.st_atime_ns = a.atime_ns
        e.st_mtime_ns = a.mtime_ns
        e.st_ctime_ns = a.ctime_ns
        return e

    def _notify_loop(self) -> None:
        # kernel cache invalidations must not be sent from inside a handler
        while True:
            ino = self._notes.get()
            if ino is None:
                return
            try:
                pyfuse3.invalidate_inode(ino, attr_only=False)
            except Exception as e:  # the kernel may have forgotten it already
                log.debug("invalidate %d: %s", ino, e)

    def close(self) -> None:
        """Stop the notifier thread."""
        self._notes.put(None)
        self._notifier.join(timeout=5)

    async def _sync(self) -> None:
        if self.syncer is not None:
            await trio.to_thread.run_sync(self.syncer.sync)
        else:
            await trio.to_thread.run_sync(self.fs.sync)

    # -- handlers --------------------------------------------------------------

    @_handler
    async def lookup(self, parent_inode, name, ctx=None):
        return self._entry(self.fs.lookup(parent_inode, fsdec(name)))

    @_handler
    async def forget(self, inode_list):
        for ino, n in inode_list:
            self.fs.forget(ino, n)

    @_handler
    async def getattr(self, inode, ctx=None):
        return self._entry(self.fs.getattr(inode))

    @_handler
    async def setattr(self, inode, attr, fields, fh, ctx):
        kw = {}
        if fields.update_mode:
            kw["mode"] = attr.st_mode
        if fields.update_uid:
            kw["uid"] = attr.st_uid
        if fields.update_gid:
            kw["gid"] = attr.st_gid
        if fields.update_size:
            kw["size"] = attr.st_size
        if fields.update_atime:
            kw["atime_ns"] = attr.st_atime_ns
        if fields.update_mtime:
            kw["mtime_ns"] = attr.st_mtime_ns
        return self._entry(self.fs.setattr(inode, **kw))

    @_handler
    async def readlink(self, inode, ctx):
        return fsenc(self.fs.readlink(inode))

    @_handler
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        a = self.fs.mknod(parent_inode, fsdec(name), mode, rdev, ctx.uid, ctx.gid)
        return self._entry(a)

    @_handler
    async def mkdir(self, parent_inode, name, mode, ctx):
        return self._entry(self.fs.mkdir(parent_inode, fsdec(name), mode, ctx.uid, ctx.gid))

    @_handler
    async def unlink(self, parent_inode, name, ctx):
        self.fs.unlink(parent_inode, fsdec(name))

    @_handler
    async def rmdir(self, parent_inode, name, ctx):
        self.fs.rmdir(parent_inode, fsdec(name))

    @_handler
    async def symlink(self, parent_inode, name, target, ctx):
        a = self.fs.symlink(parent_inode, fsdec(name), fsdec(target), ctx.uid, ctx.gid)
        return self._entry(a)

    @_handler
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        f = 0
        if flags & pyfuse3.RENAME_EXCHANGE:
            f |= RENAME_EXCHANGE
        if flags & pyfuse3.RENAME_NOREPLACE:
            f |= RENAME_NOREPLACE
        self.fs.rename(parent_inode_old, fsdec(name_old), parent_inode_new, fsdec(name_new), f)

    @_handler
    async def link(self, inode, new_parent_inode, new_name, ctx):
        return self._entry(self.fs.link(inode, new_parent_inode, fsdec(new_name)))

    @_handler
    async def open(self, inode, flags, ctx):
        return pyfuse3.FileInfo(fh=self.fs.open(inode, flags))

    @_handler
    async def create(self, parent_inode, name, mode, flags, ctx):
        fh, a = self.fs.create(parent_inode, fsdec(name), mode, flags, ctx.uid, ctx.gid)
        return pyfuse3.FileInfo(fh=fh), self._entry(a)

    @_handler
    async def read(self, fh, off, size):
        data = self.fs.read(fh, off, size, peek=True)
        if data is None:
            data = await trio.to_thread.run_sync(self.fs.read, fh, off, size)
        return data

    @_handler
    async def write(self, fh, off, buf):
        return self.fs.write(fh, off, buf)

    @_handler
    async def flush(self, fh):
        self.fs.flush(fh)

    @_handler
    async def release(self, fh):
        self.fs.release(fh)

    @_handler
    async def fsync(self, fh, datasync):
        await trio.to_thread.run_sync(self.fs.fsync, fh)
        await self._sync()

    @_handler
    async def opendir(self, inode, ctx):
        return self.fs.opendir(inode)

    @_handler
    async def readdir(self, fh, start_id, token):
        start = start_id
        while True:
            batch = self.fs.readdir(fh, start)
            if not batch:
                return
            for name, a, nxt, node in batch:
                if not pyfuse3.readdir_reply(token, fsenc(name), self._entry(a), nxt):
                    return
                if node is not None:
                    self.fs.remember(node.ino)
                start = nxt

    @_handler
    async def releasedir(self, fh):
        self.fs.releasedir(fh)

    @_handler
    async def fsyncdir(self, fh, datasync):
        await self._sync()

    @_handler
    async def statfs(self, ctx):
        s = self.fs.statfs()
        st = pyfuse3.StatvfsData()
        st.f_bsize = s["bsize"]
        st.f_frsize = s["frsize"]
        st.f_blocks = s["blocks"]
        st.f_bfree = s["bfree"]
        st.f_bavail = s["bavail"]
        st.f_files = s["files"]
        st.f_ffree = s["ffree"]
        st.f_favail = s["favail"]
        st.f_namemax = s["namemax"]
        return st

    @_handler
    async def getxattr(self, inode, name, ctx):
        n = fsdec(name)
        if n.startswith(PREFIX):
            return await trio.to_thread.run_sync(self.fs.getxattr, inode, n)
        return self.fs.getxattr(inode, n)

    @_handler
    async def setxattr(self, inode, name, value, ctx):
        n = fsdec(name)
        if n.startswith(PREFIX):
            await trio.to_thread.run_sync(self.fs.setxattr, inode, n, value)
            self._notes.put(inode)
            return
        self.fs.setxattr(inode, n, value)

    @_handler
    async def listxattr(self, inode, ctx):
        return [fsenc(n) for n in self.fs.listxattr(inode)]

    @_handler
    async def removexattr(self, inode, name, ctx):
        self.fs.removexattr(inode, fsdec(name))


def mount_options(readonly: bool, allow_other: bool, fsname: str = "vtstore") -> set[str]:
    """The FUSE mount options of a vt mount."""
    opts = {"default_permissions", f"fsname={fsname}", "subtype=vt"}
    if readonly:
        opts.add("ro")
    if allow_other:
        opts.add("allow_other")
    return opts


def is_mountpoint(path: str) -> bool:
    try:
        return os.path.ismount(path)
    except OSError:
        return True  # a dead FUSE mount: "transport endpoint is not connected"
