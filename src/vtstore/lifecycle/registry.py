"""The archives a datadir knows: its named archives and a registry of the
`X.vt` files elsewhere that recorded states into it.

A datadir cannot see an archive kept beside a packed directory, yet `vt gc`
must mark everything such an archive's states reach.  So `Archive.update`
calls `note_archive` after appending a state whose `store` is a datadir this
process has open; the archive's absolute path is then appended, once, to the
datadir's `archive-paths` file (one path per line, under an exclusive flock,
fsynced).  `known_archives` lists the named archives and the registered paths that
still exist.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

REGISTRY = "archive-paths"
_noted: set[tuple[str, str]] = set()


def note_archive(archive_path: str, store_id: str | None) -> None:
    """Register `archive_path` with the datadir whose uuid is `store_id`, if
    this process has it open.  Never raises: a pack must not fail because the
    registry could not be written (gc then needs `--archive` for it)."""
    if not store_id:
        return
    try:
        from vtstore.stores.datadir import open_datadir_path

        ddpath = open_datadir_path(store_id)
        if ddpath is None:
            return
        path = os.path.abspath(archive_path)
        if os.path.dirname(path) == str(ddpath):
            return  # a named archive: the datadir lists those itself
        key = (str(ddpath), path)
        if key in _noted:
            return
        register(Path(ddpath), path)
        _noted.add(key)
    except Exception as e:  # noqa: BLE001 - see the docstring
        log.debug("could not register archive %s: %s", archive_path, e)


def _encode(path: str) -> bytes:
    return os.fsencode(path)


def register(ddpath: Path, archive_path: str) -> bool:
    """Append `archive_path` to the registry of the datadir at `ddpath` unless
    listed; return whether it was added."""
    line = _encode(os.path.abspath(archive_path))
    if b"\n" in line:
        return False  # a path no line can hold; gc needs --archive for it
    fd = os.open(ddpath / REGISTRY, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with open(fd, "rb", closefd=False) as f:
            f.seek(0)
            if line in f.read().split(b"\n"):
                return False
        os.write(fd, line + b"\n")
        os.fsync(fd)
        return True
    finally:
        os.close(fd)


def registered(ddpath: Path) -> list[str]:
    """The archive paths registered with the datadir at `ddpath`, in order,
    each once (a torn last line ignored)."""
    try:
        with open(ddpath / REGISTRY, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    lines.pop()
    out, seen = [], set()
    for raw in lines:
        if raw and raw not in seen:
            seen.add(raw)
            out.append(os.fsdecode(raw))
    return out


def known_archives(store) -> list[str]:
    """Every archive file `store` (a datadir) knows: its named archives
    (`NAME.vt` beside its data), then the registered ones that still exist,
    each once."""
    out = [str(p) for p in getattr(store, "exports", {}).values()]
    ddpath = getattr(store, "path", None)
    if ddpath is not None:
        out += [p for p in registered(Path(ddpath)) if os.path.isfile(p)]
    seen, uniq = set(), []
    for p in out:
        rp = os.path.realpath(p)
        if rp not in seen:
            seen.add(rp)
            uniq.append(p)
    return uniq
