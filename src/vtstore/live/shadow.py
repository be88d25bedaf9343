"""The two-way shadow: a real directory kept equal to an archive's latest state.

`Shadow(dirpath, archive).round(store)` does one step of keeping DIR and the
archive in step.  It remembers (in `.DIR.vt-shadow` beside DIR, so a restart
resumes) the archive state DIR was last in step with, `synced`, and DIR's own
tree at that moment, `local_base` (the same content; DIR's ctimes):

- only DIR changed since: its tree is recorded as a new state;
- only the archive moved on (a state recorded elsewhere and pushed or pulled
  here): the paths that state changed are written into DIR (removed ones
  removed), each through a temporary name and a rename;
- both: the archive's changes are written into DIR except at the paths DIR
  changed too; where both changed a file differently, DIR's version keeps the
  name and the archive's goes beside it as `NAME.vt-conflict`; the result is
  recorded as a new state.

Trees are compared without ctime (every write sets it anew) and without
directories' mtimes (writing an entry sets them), so applying a state is not
taken for a local change.  Not handled: hard-link groups changed on the other
side (their names are written as separate files), and an edit made in DIR in
the instant between a round's read of DIR and its writes to the same path.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil

from vtstore.archive import ArchiveEntry, parse_line
from vtstore.errors import VTError
from vtstore.fileio import write_private
from vtstore.transcribe import parse_all
from vtstore.tree.dirent import Dirent

log = logging.getLogger(__name__)

CONFLICT_SUFFIX = ".vt-conflict"


class ShadowError(VTError):
    """The shadow's own record (`.DIR.vt-shadow`) cannot be used."""


def base_path_for(dirpath: str) -> str:
    """Where the shadow of `dirpath` keeps its bases: `.NAME.vt-shadow` beside it."""
    d = os.path.normpath(os.path.abspath(dirpath))
    return os.path.join(os.path.dirname(d), "." + os.path.basename(d) + ".vt-shadow")


def changes(a: Dirent | None, b: Dirent, store) -> list:
    """The `Change`s from `a` (None: nothing) to `b` that count: not ctime, not
    a directory's mtime, not the top's own metadata."""
    from vtstore.tree.diff import MODIFIED, diff_trees

    if a is None:
        a = Dirent(b.type, b.name, b.meta, None) if b.is_dir else None
    if a is None:
        return []
    out = []
    for c in diff_trees(a, b, store, ctime=False)[0]:
        if c.path in (".", ""):
            continue
        if c.kind == MODIFIED and c.new is not None and c.new.is_dir:
            continue  # a directory's own metadata: not followed
        out.append(c)
    return out


class Shadow:
    """DIR and an archive (anything with `last()` and `update()`), in step."""

    def __init__(self, dirpath: str, archive, importer_kw: dict | None = None):
        self.dir = os.path.abspath(dirpath)
        self.archive = archive
        self.base_file = base_path_for(self.dir)
        self.importer_kw = importer_kw or {}

    def bases(self) -> tuple[ArchiveEntry | None, Dirent | None]:
        """`(synced, local_base)`, or Nones before the first round."""
        try:
            with open(self.base_file, "rb") as f:
                text = f.read().decode("utf-8")
            line, dirent = text.split("\n", 1)
            local = parse_all(dirent.strip())
            if not isinstance(local, Dirent):
                raise ValueError("the second line is not a dirent")
            return parse_line(line, self.base_file), local
        except FileNotFoundError:
            return None, None
        except (ValueError, VTError) as e:
            raise ShadowError(
                f"{self.base_file}: damaged ({e}); remove it to start again (DIR and the"
                " archive's latest state are then merged, nothing is lost)"
            ) from None

    def _set_bases(self, synced: ArchiveEntry, local: Dirent) -> None:
        write_private(self.base_file, f"{synced.to_line().rstrip()}\n{local}\n".encode())

    def _read_dir(self, store, previous: Dirent | None) -> Dirent:
        from vtstore.tree.fsimport import Importer

        return Importer(store, **self.importer_kw).import_path(self.dir, previous)

    def round(self, store) -> tuple[str | None, list[str]]:
        """One step: (what was done: None, 'recorded', 'applied' or 'merged';
        the paths where both sides changed a file differently).

        Rounds of shadows of the same archive file are serialized (a lock file
        beside it): a state appended between our look at the archive and our
        append would otherwise be taken as applied here when it is not."""
        path = str(getattr(self.archive, "path", ""))
        if not os.path.isabs(path) or not os.path.isdir(os.path.dirname(path)):
            return self._round(store)
        fd = os.open(path + ".shadow-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return self._round(store)
        finally:
            os.close(fd)

    def _round(self, store) -> tuple[str | None, list[str]]:
        synced, local_base = self.bases()
        remote = self.archive.last()
        local = self._read_dir(store, local_base)
        ours = {c.path: c for c in changes(local_base, local, store)}
        if remote is None or (synced is not None and remote.id == synced.id):
            if not ours and synced is not None:
                return None, []
            entry = self.archive.update(local)
            self._set_bases(entry, local)
            return "recorded", []
        theirs = changes(synced.dirent if synced else None, remote.dirent, store)
        conflicts = self._apply(theirs, ours, store)
        after = self._read_dir(store, local)
        if ours or conflicts:
            entry = self.archive.update(after)
            self._set_bases(entry, after)
            return "merged", conflicts
        self._set_bases(remote, after)
        return "applied", []

    def _apply(self, theirs: list, ours: dict, store) -> list[str]:
        """Write the archive's changes into DIR, except where DIR changed too."""
        from vtstore.tree.diff import REMOVED, compare_dirents

        conflicts: list[str] = []
        written: list[str] = []  # whole subtrees written or removed
        for c in theirs:
            p = c.path
            if any(p.startswith(w + "/") for w in written):
                continue
            mine = ours.get(p)
            if mine is None and any(p.startswith(q + "/") for q in ours):
                mine = next(ours[q] for q in ours if p.startswith(q + "/"))
            if mine is not None:
                same = (
                    mine.new is not None
                    and c.new is not None
                    and not compare_dirents(mine.new, c.new)
                )
                if not same and c.new is not None and not c.new.is_dir:
                    self._write(c.new, p + CONFLICT_SUFFIX, store)
                    conflicts.append(p)
                continue
            if c.kind == REMOVED:
                self._remove(p)
            else:
                self._write(c.new, p, store)
            written.append(p)
        return conflicts

    def _remove(self, rpath: str) -> None:
        full = os.path.join(self.dir, rpath)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        elif os.path.lexists(full):
            os.unlink(full)

    def _write(self, dirent: Dirent, rpath: str, store) -> None:
        """Put `dirent` (a whole subtree for a directory) at `rpath`, by a rename."""
        from vtstore.tree.fsexport import export_tree

        full = os.path.join(self.dir, rpath)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        tmp = os.path.join(os.path.dirname(full), f".{os.path.basename(full)}.vt-tmp")
        self._remove(os.path.relpath(tmp, self.dir))
        export_tree(dirent, store, tmp)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        os.replace(tmp, full)
