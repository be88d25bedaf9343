"""Small files written whole, privately and durably: key files, keyrings.

`write_private` is the one way vtstore writes a file holding a secret: mode
0600 from its creation (never readable by others, even for a moment), written
to a temporary name beside it and fsynced, then renamed over the old file or
linked to a name that must not exist yet, and the directory fsynced, so a crash
leaves the old file or the new one, never a torn or empty one.
"""

from __future__ import annotations

import os


def write_private(path, data: bytes, replace: bool = True) -> None:
    """Write `data` to `path`, mode 0600, atomically and durably.

    With `replace`, over any file at `path`; else `FileExistsError` if `path`
    exists (a `link`, so two writers racing cannot both succeed).  Missing
    parent directories are created 0700."""
    write_durably(path, data, replace=replace)


def write_durably(
    path, data: bytes, replace: bool = True, like: os.stat_result | None = None
) -> None:
    """`write_private`, or with `like` (the stat of the file being replaced)
    the new file gets that file's mode and, where allowed, its owner."""
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    d = os.path.dirname(path)
    os.makedirs(d, mode=0o700, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if like is not None:
                os.fchmod(fd, like.st_mode & 0o7777)
                try:
                    os.fchown(fd, like.st_uid, like.st_gid)
                except PermissionError:
                    pass  # not ours to give away: the new file stays the writer's
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
