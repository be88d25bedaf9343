"""The history view (`vt mount -a`): one read-only directory per archive state.

The top directory holds an entry per state of the archive, named by the
state's ISO 8601 UTC time (a `~N` suffix keeps equal times apart).  It is
refreshed whenever the archive file changes, so states recorded while mounted
(by another mount, `vt pack`, ...) appear live.

Every state is a tree of its own, with its own hard-link groups whose numbers
collide from one state to the next: `HistoryLinks` keeps one link table per
state, made when a hard link of that state is first met, and gives each
(state, group) its own number in the view.
"""

from __future__ import annotations

import logging
import os
import time

from vtstore.errors import VTError
from vtstore.fs.links import LinkGroup, LinkTable
from vtstore.tree.dirent import T_DIR, Dirent
from vtstore.tree.meta import Meta

log = logging.getLogger(__name__)


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
        kids = fs.children(fs.root)
        added = False
        try:
            entries = list(self.archive.entries())
        except (VTError, OSError) as e:  # keep the states already shown
            fs.note_read_error(f"archive {self.archive.path}", e)
            return
        self._seen = sig
        for i, entry in enumerate(entries):
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


class HistoryLinks:
    """The hard-link groups of a history view: one `LinkTable` per state.

    Used as the `FileSystem`'s `links`; the view is read-only, so only finding
    groups and counting their names is needed.
    """

    def __init__(self, fs):
        self.fs = fs
        self.tables: dict[str, LinkTable] = {}
        self.groups: dict[int, LinkGroup] = {}  # by number in the view
        self._numbers: dict[tuple[str, int], int] = {}
        self.changed: set[int] = set()
        self.dirty_buckets: set[int] = set()
        self.count = 0

    def __len__(self) -> int:
        return len(self.groups)

    def group_for(self, d, ino: int):
        """`(number in the view, group)` of link dirent `ino` met in directory node `d`."""
        state = d
        while state.parent is not None and state.parent is not self.fs.root:
            state = state.parent
        if state is self.fs.root or state.orig is None:
            return ino, None
        table = self.tables.get(state.name)
        if table is None:
            table = self.tables[state.name] = LinkTable(self.fs.store, state.orig)
            prefix = f"/{state.name}"

            def on_error(what: str, err: Exception, prefix=prefix) -> None:
                kind, _, path = what.partition(" /")
                self.fs.note_read_error(f"{kind} {prefix}/{path}".rstrip("/"), err)

            table.on_error = on_error
        g = table.get(ino)
        if g is None:
            return ino, None
        key = (state.name, ino)
        n = self._numbers.get(key)
        if n is None:
            n = self._numbers[key] = len(self._numbers) + 1
            self.groups[n] = g
        return n, g

    def get(self, gid: int) -> LinkGroup | None:
        return self.groups.get(gid)

    def nlink(self, gid: int) -> int:
        g = self.groups.get(gid)
        return len(g.paths) if g is not None and g.paths else 1

    # a read-only view changes nothing: these are never asked for a change

    def touch(self, gid: int) -> None:
        pass

    def rename_prefix(self, old, new) -> None:
        pass

    def load_all(self) -> None:
        pass

    def encode_ext(self, old_ext):
        return old_ext
