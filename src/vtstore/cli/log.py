"""`vt log`: the history of an archive."""

from __future__ import annotations

import json
import logging

from vtstore.cli.common import open_store
from vtstore.cli.refs import archive_of, use_clause_of
from vtstore.errors import VTError

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser(
        "log",
        help="show the history of an archive",
        description=(
            "One line per state of X.vt, oldest first: time, total file bytes, file"
            " count and the dirent ref.  --brief skips reading the trees.  A damaged"
            " line is skipped with a warning; a state whose tree cannot be read is"
            " listed without its totals, and the exit code is then 1."
        ),
    )
    p.add_argument("archive", metavar="X.vt")
    p.add_argument("--brief", action="store_true", help="time and ref only (no tree walk)")
    p.add_argument("--json", action="store_true", help="one JSON object per state")
    p.set_defaults(func=run)


def run(args) -> int:
    from vtstore.tree.dir import tree_stats

    use_clause_of(args, args.archive)
    with open_store(args, readonly=True) as store:
        archive, _ = archive_of(args.archive, store)
        if not archive.exists():
            raise VTError(f"{args.archive}: no such archive")
        unreadable = 0
        for e in archive.entries():
            stats = None
            if not args.brief:
                try:
                    stats = tree_stats(e.dirent, store)
                except VTError as err:
                    # one state whose tree is damaged or elsewhere: say so and go on
                    log.warning("%s: state of %s: %s", archive.path, e.isotime, err)
                    unreadable += 1
            if args.json:
                d = {"when": e.when, "time": e.isotime, "dirent": str(e.dirent)}
                if stats:
                    d.update(stats)
                if e.comment:
                    d["comment"] = e.comment
                if e.store_id:
                    d["store"] = e.store_id
                print(json.dumps(d))
            elif stats:
                print(f"{e.isotime} {stats['bytes']:>14} {stats['files']:>8} {e.dirent}")
            elif not args.brief:
                print(f"{e.isotime} {'?':>14} {'?':>8} {e.dirent}")
            else:
                print(f"{e.isotime} {e.dirent}")
    if unreadable:
        raise VTError(f"the trees of {unreadable} state(s) could not be read")
    return 0
