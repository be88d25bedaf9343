"""The one error the filesystem layer raises for POSIX failures: `FSError(errno)`.

The FUSE adapter turns it into the reply errno; anything else escaping an
operation is a bug, logged and answered with EIO so the mount survives.
"""

from __future__ import annotations

import errno as errnomod
import os


class FSError(OSError):
    """A POSIX error from a filesystem operation, carrying its `errno`."""

    def __init__(self, errno: int, detail: str | None = None):
        super().__init__(errno, detail or os.strerror(errno))


def fail(errno: int, detail: str | None = None) -> FSError:
    """Shorthand to build an `FSError` (used as `raise fail(ENOENT)`)."""
    return FSError(errno, detail)


ENOENT = errnomod.ENOENT
