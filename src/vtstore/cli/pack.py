"""`vt pack`: store a directory tree and append its state to an archive."""

from __future__ import annotations

import logging
import os
import shutil

from vtstore.archive import archive_in, store_identity
from vtstore.cli.common import open_store
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
            " (or -a ARCHIVE).  Files unchanged since the archive's last state (same"
            " size, mtime and ctime) are not read again.  Prints the new state's"
            " dirent ref.  An archive belongs to the store its states were written"
            " to: appending a state of another store is refused unless --force."
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
        "--force",
        action="store_true",
        help="append even if the archive's latest state belongs to another store"
        " (every file is read again)",
    )
    p.set_defaults(func=run)


def archive_path_for(dirpath: str) -> str:
    """The default archive of a directory: `DIR.vt` beside it."""
    return os.path.normpath(os.path.abspath(dirpath)) + ".vt"


def run(args) -> int:
    from vtstore.tree.fsimport import Importer

    if not os.path.isdir(args.dir) or os.path.islink(args.dir):
        raise VTError(f"{args.dir}: not a directory")
    use_clause_of(args, args.archive)
    with open_store(args) as store, TreeProgress(args, "pack", store=store) as progress:
        if args.archive:
            archive, inner = archive_of(args.archive, store)
            if inner:
                raise VTError(f"{args.archive}: pack appends to a whole archive, not a path in it")
        else:
            archive = archive_in(archive_path_for(args.dir), store)
        last = archive.last()
        # a state whose blocks live in another store must not be built on: its
        # unchanged files would name blocks this store does not have
        if not archive.check_store(store, force=args.force, last=last) or args.full:
            last = None
        imp = Importer(
            progress.store,
            one_filesystem=args.one_file_system,
            on_file=lambda st: progress.update(
                st.bytes_read + st.bytes_reused, st.files, f", {st.files_reused} unchanged"
            ),
        )
        dirent = imp.import_path(args.dir, last.dirent if last else None)
        store.flush()
        entry = archive.update(dirent, comment=args.comment, store_id=store_identity(store))
    st = imp.stats
    if not args.quiet:
        log.info(
            "packed %d files, %d dirs: %d bytes read, %d files unchanged, %.2fs",
            st.files,
            st.dirs,
            st.bytes_read,
            st.files_reused,
            progress.elapsed,
        )
    print(entry.dirent)
    if st.errors:
        raise VTError(
            f"{len(st.errors)} objects could not be read; the state was saved without them"
        )
    if args.rm:
        shutil.rmtree(args.dir)
    return 0
