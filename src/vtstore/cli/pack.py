"""`vt pack`: store a directory tree and append its state to an archive."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys

from vtstore.cli.common import add_filter_options, filters_from_args, open_store
from vtstore.cli.progress import TreeProgress
from vtstore.cli.refs import archive_of, use_clause_of
from vtstore.errors import VTError

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser(
        "pack",
        help="store DIR and append its state to DIR.vt",
        description=(
            "Store the tree at DIR and append its new state to the archive DIR.vt"
            " (or -a ARCHIVE).  When DIR.vt cannot be written (say DIR is your home"
            " and its parent is /home), the state goes to the archive named after"
            " DIR in the store instead ([default]NAME: NAME.vt in the datadir), and"
            " the summary says so; the check comes before anything is read.  Files"
            " unchanged since the archive's last state (same size, mtime and ctime)"
            " are not read again.  vt's own files (datadirs, its cache, archives of"
            " the store) are left out unless --no-default-excludes; see"
            " docs/FILTERS.md for the rules.  Prints the new state's dirent ref (or"
            " with --json a summary) on stdout and a short summary on stderr.  An"
            " archive belongs to the store its states were written to: appending a"
            " state of another store is refused unless --force."
        ),
    )
    p.add_argument("dir", metavar="DIR")
    p.add_argument(
        "-a", "--archive", metavar="ARCHIVE", help="archive to append to: X.vt or [clause]NAME"
    )
    p.add_argument("-m", "--comment", help="a comment stored with the state")
    p.add_argument("--rm", action="store_true", help="remove DIR after a successful pack")
    p.add_argument(
        "-x", "--one-file-system", action="store_true", help="do not cross filesystem boundaries"
    )
    p.add_argument("--full", action="store_true", help="read every file (ignore the stat cache)")
    p.add_argument(
        "--salt-dirs",
        action="store_true",
        help="salt every directory block with random chaff, so equal directories of"
        " different trees share no block (an archive whose latest state is salted"
        " keeps its salt, with or without this option)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="append even if the archive's latest state belongs to another store"
        " (every file is read again)",
    )
    p.add_argument(
        "--json", action="store_true", help="print a JSON summary on stdout (the ref included)"
    )
    add_filter_options(p)
    p.set_defaults(func=run)


def dir_salt_for(wanted: bool, previous, store) -> tuple[bytes | None, bool]:
    """`(salt, reuse the previous state's directory blocks)` for a new state.

    A salted previous state keeps its salt (its unchanged directories are
    reused); `wanted` on an unsalted one starts a salt (every directory is
    written again, salted).
    """
    from vtstore.tree.dir import new_salt, salt_of

    old = salt_of(previous, store)
    if old is not None:
        return old, True
    if wanted:
        return new_salt(), previous is None
    return None, True


def archive_path_for(dirpath: str) -> str:
    """The default archive of a directory: `DIR.vt` beside it."""
    return os.path.normpath(os.path.abspath(dirpath)) + ".vt"


def _unwritable(path: str) -> str | None:
    """Why the archive file `path` cannot be appended to (None if it can)."""
    if os.path.exists(path):
        return None if os.access(path, os.W_OK) else "not writable"
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent):  # made when the store is (a datadir's archive)
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"{parent} is not a directory"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"{parent} is not writable"


def archive_name_for(dirpath: str) -> str:
    """The name of DIR's archive in the store: DIR's own name (`root` for /)."""
    name = os.path.basename(os.path.normpath(os.path.abspath(dirpath)))
    return name.lstrip(".") or "root"


def choose_archive(args, store):
    """The archive this pack appends to, checked writable before anything is read."""
    if args.archive:
        archive, inner = archive_of(args.archive, store)
        if inner:
            raise VTError(f"{args.archive}: pack appends to a whole archive, not a path in it")
        where = getattr(archive, "path", None)
        if not args.archive.startswith("[") and (why := _unwritable(str(where))):
            raise VTError(f"{where}: cannot append to the archive: {why}")
        return archive
    path = archive_path_for(args.dir)
    why = _unwritable(path)
    if why is None:
        from vtstore.archive import archive_in

        return archive_in(path, store)
    from vtstore.named_archives import NoArchivesError, open_archive

    name = archive_name_for(args.dir)
    try:
        archive = open_archive(store, name, create=True)
    except (NoArchivesError, VTError) as e:
        raise VTError(f"{path}: {why}, and the store has no place for it ({e}): give -a") from None
    apath = str(archive.path)
    if os.path.isabs(apath) and (why2 := _unwritable(apath)):
        raise VTError(f"{path}: {why}; {apath}: {why2}: give -a ARCHIVE")
    log.info("%s: %s; the state goes to the store's archive %s", path, why, name)
    return archive


def data_bytes(store) -> int | None:
    """The bytes a datadir's data files take on disk (through wrappers), else None."""
    for _ in range(8):
        if store is None:
            return None
        f = getattr(store, "data_bytes", None)
        if callable(f):
            try:
                return f()
            except OSError:
                return None
        store = getattr(store, "backend", None) or getattr(store, "inner", None)
    return None


def run(args) -> int:
    from vtstore.archive import store_identity
    from vtstore.tree.fsimport import Importer

    if not os.path.isdir(args.dir) or os.path.islink(args.dir):
        raise VTError(f"{args.dir}: not a directory")
    use_clause_of(args, args.archive)
    with open_store(args) as store, TreeProgress(args, "pack", store=store) as progress:
        archive = choose_archive(args, store)
        filters = filters_from_args(args, store, str(archive.path))
        last = archive.last()
        # a state whose blocks live in another store must not be built on: its
        # unchanged files would name blocks this store does not have
        if not archive.check_store(store, force=args.force, last=last) or args.full:
            last = None
        before = data_bytes(store)
        progress.scan_tree(args.dir, filters, args.one_file_system)
        salt, reuse_dirs = dir_salt_for(args.salt_dirs, last.dirent if last else None, store)
        imp = Importer(
            progress.store,
            salt=salt,
            reuse_dir_blocks=reuse_dirs,
            one_filesystem=args.one_file_system,
            filters=filters,
            on_file=lambda st: progress.update(
                st.bytes_read + st.bytes_reused, st.files, f", {st.files_reused} unchanged"
            ),
        )
        dirent = imp.import_path(args.dir, last.dirent if last else None)
        store.flush()
        apath = str(archive.path)
        if os.path.isabs(apath) and not os.path.isdir(os.path.dirname(apath)):
            os.makedirs(os.path.dirname(apath), mode=0o700)  # a store that stored nothing yet
        entry = archive.update(dirent, comment=args.comment, store_id=store_identity(store))
        after = data_bytes(store)
    summary = _summary(imp.stats, progress.elapsed, archive, entry, before, after)
    if filters is not None and filters.skip is not None and filters.skip.found:
        summary["own_files_left_out"] = sorted(filters.skip.found)
    if args.json:
        print(json.dumps(summary))
    else:
        print(entry.dirent)
    if not args.quiet:
        print(_human(summary), file=sys.stderr)
    if imp.stats.errors:
        raise VTError(
            f"{len(imp.stats.errors)} objects could not be read; the state was saved without them"
        )
    if args.rm:
        if imp.stats.excluded:
            # what the rules left out is not in the store: removing DIR would lose it
            raise VTError(
                f"--rm: {imp.stats.excluded:,} entries were excluded (not stored); {args.dir} is kept"
            )
        shutil.rmtree(args.dir)
    return 0


def _summary(st, elapsed: float, archive, entry, before, after) -> dict:
    return {
        "archive": str(archive.path),
        "dirent": str(entry.dirent),
        "files": st.files,
        "files_new": st.files_new,
        "files_changed": st.files_changed,
        "files_unchanged": st.files_reused,
        "dirs": st.dirs,
        "others": st.others,
        "excluded": st.excluded,
        "bytes_read": st.bytes_read,
        "bytes_unchanged": st.bytes_reused,
        # what the data files grew by: after dedup and compression (datadirs only)
        "bytes_added": after - before if before is not None and after is not None else None,
        "errors": len(st.errors),
        "seconds": round(elapsed, 3),
    }


def _human(s: dict) -> str:
    from vtstore.stores.progress import human_size

    added = (
        "" if s["bytes_added"] is None else f", {human_size(s['bytes_added'])} added to the store"
    )
    excl = f", {s['excluded']:,} excluded" if s["excluded"] else ""
    return (
        f"vt pack: {s['archive']}: {s['files']:,} files ({s['files_new']:,} new,"
        f" {s['files_changed']:,} changed, {s['files_unchanged']:,} unchanged),"
        f" {s['dirs']:,} dirs{excl}; {human_size(s['bytes_read'])} read{added}"
        f" in {s['seconds']:.1f}s"
    )
