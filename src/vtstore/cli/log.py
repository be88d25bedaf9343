"""`vt log`: the history of an archive, one line per state, on 80 columns.

The totals of each state (files, bytes) are not recorded in the archive: the
first state's tree is walked, and each later one is the previous totals plus
what `vtstore.tree.diff` finds between the two, which reads only the
directories that changed.  So a log of many states of a big tree costs one
walk and the changes, not a walk per state.
"""

from __future__ import annotations

import sys

from vtstore.cli.common import CommandLog, open_store
from vtstore.cli.refs import archive_target, select_entry, split_selector, use_clause_of
from vtstore.errors import VTError

log = CommandLog(__name__)


def register(sub) -> None:
    p = sub.add_parser(
        "log",
        help="show the history of an archive",
        description=(
            "One line per state of X.vt (or [clause]NAME), oldest first: short state"
            " ID, local time, total file bytes, file count and comment (-m), cut to"
            " the terminal's width.  The ID, a unique prefix of it (4+ digits) or"
            " X.vt@-2, X.vt@2026-12-01 name the state in every command.  X.vt@SEL"
            " shows that state only.  --refs (-v) adds the full dirent ref on a line"
            " of its own; --json prints everything, one object per state.  --brief"
            " skips reading the trees.  A damaged line is skipped with a warning; a"
            " state whose tree cannot be read is listed without its totals, and the"
            " exit code is then 1."
        ),
    )
    p.add_argument("archive", metavar="X.vt")
    p.add_argument("--brief", action="store_true", help="no totals (no tree is read)")
    p.add_argument("--json", action="store_true", help="one JSON object per state")
    p.add_argument(
        "-v", "--refs", action="store_true", help="full comment and the dirent ref of each state"
    )
    p.set_defaults(func=run)


def local_time(when: float) -> str:
    """`when` as local `YYYY-MM-DD HH:MM:SS`, as listings show it."""
    import datetime

    return datetime.datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M:%S")


def add_change(stats: dict, old, new) -> None:
    """Move the totals `stats` (as `tree_stats` counts) from dirent `old` to `new`."""
    for d, sign in ((old, -1), (new, 1)):
        if d is None:
            continue
        kind = "files" if d.is_file else "dirs" if d.is_dir else "other"
        stats[kind] += sign
        if d.is_file:
            stats["bytes"] += sign * d.size


def stats_series(entries, store):
    """`(entry, totals or None, error or None)` for each state: the first tree
    walked, each next one by a diff with the one before (see the module docstring)."""
    from vtstore.tree.diff import TreeDiff
    from vtstore.tree.dir import tree_stats

    prev = prev_stats = None
    for e in entries:
        try:
            if prev_stats is None:
                stats = tree_stats(e.dirent, store)
            else:
                stats = dict(prev_stats)
                d = TreeDiff(store)
                for c in d.changes(prev.dirent, e.dirent):
                    add_change(stats, c.old, c.new)
                if d.stats.problems:
                    raise VTError(d.stats.problems[0])
        except VTError as err:
            prev = prev_stats = None
            yield e, None, err
            continue
        prev, prev_stats = e, stats
        yield e, stats, None


def entry_json(e, stats: dict | None) -> dict:
    """Everything about a state, for --json."""
    d: dict = {
        "id": e.id,
        "short_id": e.short_id,
        "when": e.when,
        "time": e.isotime,
        "local_time": local_time(e.when),
        "dirent": str(e.dirent),
    }
    if stats:
        d.update(stats)
    for k, v in (("comment", e.comment), ("name", e.name), ("store", e.store_id)):
        if v:
            d[k] = v
    if e.uuid is not None:
        d["uuid"] = str(e.uuid)
    return d


def state_line(e, stats: dict | None, width: int | None, brief: bool = False) -> str:
    """One state on one line: ID, local time, size, files, comment (cut to `width`)."""
    from vtstore.stores.progress import human_size

    if brief:
        size = files = ""
    elif stats is None:
        size = files = "?"
    else:
        size, files = human_size(stats["bytes"]), f"{stats['files']:,}"
    line = f"{e.short_id}  {local_time(e.when)}  {size:>9} {files:>7}".rstrip()
    comment = (e.comment or "").replace("\n", " ")
    if comment:
        line = f"{line:<46}  {comment}"
    if width and len(line) > width:
        line = line[: width - 3] + "..."
    return line


def run(args) -> int:
    import json
    import shutil

    use_clause_of(args, args.archive)
    full = args.refs or args.verbose
    width = None if full else shutil.get_terminal_size((80, 24)).columns
    with open_store(args, readonly=True) as store:
        archive, _inner, sel = archive_target(args.archive, store)
        if not archive.exists():
            raise VTError(f"{split_selector(args.archive)[0]}: no such archive")
        if sel is not None:
            entries = [select_entry(archive, sel, text=args.archive)]
        else:
            entries = archive.entries()
        if args.brief:
            series = ((e, None, None) for e in entries)
        else:
            series = stats_series(entries, store)
        if sys.stdout.isatty() and not args.json:
            print(f"{'ID':8}  {'TIME (local)':19}  {'SIZE':>9} {'FILES':>7}  COMMENT")
        unreadable = 0
        for e, stats, err in series:
            if err is not None:
                # one state whose tree is damaged or elsewhere: say so and go on
                log.warning("%s: state %s of %s: %s", archive.path, e.short_id, e.isotime, err)
                unreadable += 1
            if args.json:
                print(json.dumps(entry_json(e, stats)))
                continue
            print(state_line(e, stats, width, args.brief))
            if full:
                print(f"    {e.dirent}")
    if unreadable:
        raise VTError(f"the trees of {unreadable} state(s) could not be read")
    return 0
