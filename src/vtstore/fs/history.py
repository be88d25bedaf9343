"""The history view (`vt mount -a`): one read-only directory per archive state.

The top directory holds an entry per state of the archive, named by the
state's ISO 8601 UTC time (a `~N` suffix keeps equal times apart).  It is
refreshed whenever the archive file changes, so states recorded while mounted
(by another mount, `vt pack`, ...) appear live.

The whole-store view (`vt mount -a --every-archive MNT`, `StoreHistory`) has one such
directory per archive of the store (`named_archives.list_archives`), each with
a `latest` symlink to its newest state; archives made meanwhile appear too.

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
from vtstore.tree.dirent import T_DIR, T_SYMLINK, Dirent
from vtstore.tree.meta import Meta

log = logging.getLogger(__name__)


def history_top() -> Dirent:
    """The (empty) top directory dirent of a history view."""
    now = time.time_ns()
    return Dirent(T_DIR, meta=Meta(mode=0o555, uid=os.getuid(), gid=os.getgid(), mtime_ns=now))


class History:
    """Refreshes a `FileSystem`'s top directory from an archive (call it with the fs).

    With `target` (a directory node) it fills that directory instead, and with
    `latest` keeps a `latest` symlink there to the newest state.
    """

    def __init__(self, archive, target=None, latest: bool = False):
        self.archive = archive
        self.target = target
        self.latest = latest
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
        top = self.target if self.target is not None else fs.root
        kids = fs.children(top)
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
            newest = name
        if added:
            top.meta = top.meta.with_changes(mtime_ns=time.time_ns())
            if self.latest:
                kids["latest"] = Dirent(T_SYMLINK, name="latest", target=newest, meta=_LINK_META)


_LINK_META = Meta(mode=0o777, uid=os.getuid(), gid=os.getgid(), mtime_ns=0)


class StoreHistory:
    """Refreshes the whole-store view: a directory per archive of `store`.

    Called before the top or an archive's directory is looked at: lists the
    store's archives (new ones appear) and refreshes each archive's `History`
    (a `stat` of its file when nothing changed).
    """

    def __init__(self, store):
        self.store = store
        self.archives: dict[str, History] = {}

    def __call__(self, fs) -> None:
        from vtstore.fs.nodes import DirNode
        from vtstore.named_archives import list_archives, open_archive

        kids = fs.children(fs.root)
        try:
            names = list_archives(self.store)
        except (VTError, OSError) as e:
            fs.note_read_error("the store's archives", e)
            names = []
        for name in names:
            if name in self.archives or name in kids or "/" in name or name in (".", ".."):
                continue
            try:
                archive = open_archive(self.store, name)
            except (VTError, OSError) as e:
                fs.note_read_error(f"archive {name}", e)
                continue
            d = DirNode(history_top().meta)  # made here, never stored (the view is read-only)
            d.parent = fs.root
            d.name = name
            kids[name] = d
            self.archives[name] = History(archive, target=d, latest=True)
        for h in self.archives.values():
            h(fs)


class HistoryLinks:
    """The hard-link groups of a history view: one `LinkTable` per state.

    Used as the `FileSystem`'s `links`; the view is read-only, so only finding
    groups and counting their names is needed.
    """

    def __init__(self, fs, depth: int = 1):
        self.fs = fs
        self.depth = depth  # states are this deep below the top (2: archive/state)
        self.tables: dict[tuple, LinkTable] = {}
        self.groups: dict[int, LinkGroup] = {}  # by number in the view
        self._numbers: dict[tuple[tuple, int], int] = {}
        self.changed: set[int] = set()
        self.dirty_buckets: set[int] = set()
        self.count = 0

    def __len__(self) -> int:
        return len(self.groups)

    def group_for(self, d, ino: int):
        """`(number in the view, group)` of link dirent `ino` met in directory node `d`."""
        chain = []  # d and its ancestors below the top, the top's child last
        n = d
        while n is not None and n is not self.fs.root:
            chain.append(n)
            n = n.parent
        if len(chain) < self.depth:
            return ino, None
        state = chain[-self.depth]
        if state.orig is None:
            return ino, None
        key = tuple(c.name for c in reversed(chain[-self.depth :]))
        table = self.tables.get(key)
        if table is None:
            table = self.tables[key] = LinkTable(self.fs.store, state.orig)
            prefix = "/" + "/".join(key)

            def on_error(what: str, err: Exception, prefix=prefix) -> None:
                kind, _, path = what.partition(" /")
                self.fs.note_read_error(f"{kind} {prefix}/{path}".rstrip("/"), err)

            table.on_error = on_error
        g = table.get(ino)
        if g is None:
            return ino, None
        number = (key, ino)
        n = self._numbers.get(number)
        if n is None:
            n = self._numbers[number] = len(self._numbers) + 1
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
