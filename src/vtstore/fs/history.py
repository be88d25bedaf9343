"""The history view (`vt mount -a`): one read-only directory per archive state.

The top directory holds an entry per state of the archive, named by the
state's ISO 8601 UTC time (a `~N` suffix keeps equal times apart).  It is
refreshed whenever the archive file changes, so states recorded while mounted
(by another mount, `vt pack`, ...) appear live.
"""

from __future__ import annotations

import os
import time

from vtstore.tree.dirent import T_DIR, Dirent
from vtstore.tree.meta import Meta


def history_top() -> Dirent:
    """The (empty) top directory dirent of a history view."""
    now = time.time_ns()
    return Dirent(T_DIR, meta=Meta(mode=0o555, uid=os.getuid(), gid=os.getgid(), mtime_ns=now))


class History:
    """Refreshes a `FileSystem`'s top directory from an archive (call it with the fs)."""

    def __init__(self, archive):
        self.archive = archive
        self._seen = None
        self._count = 0
        self._names: set[str] = set()

    def __call__(self, fs) -> None:
        try:
            st = os.stat(self.archive.path)
            sig = (st.st_size, st.st_mtime_ns, st.st_ino)
        except FileNotFoundError:
            sig = None
        if sig == self._seen:
            return
        self._seen = sig
        kids = fs.children(fs.root)
        added = False
        for i, entry in enumerate(self.archive.entries()):
            if i < self._count:
                continue
            self._count = i + 1
            name = entry.isotime
            n = 1
            while name in self._names:
                n += 1
                name = f"{entry.isotime}~{n}"
            self._names.add(name)
            kids[name] = entry.dirent.renamed(name)
            added = True
        if added:
            fs.root.meta = fs.root.meta.with_changes(mtime_ns=time.time_ns())
