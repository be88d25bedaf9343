"""`vt merge A B`: the three-way merge of two states or trees (`tree.merge.merge3`)."""

from __future__ import annotations

import json
import sys

from vtstore.errors import VTError


def register(sub) -> None:
    p = sub.add_parser(
        "merge",
        help="merge two states or trees three-way",
        description=(
            "Merge the changes of B into A against their common ancestor BASE: what"
            " only one side changed takes that change, directories both changed merge"
            " entry by entry, and a conflict keeps both versions (B's as"
            " NAME.vt-conflict) and is listed on stderr.  A and B are archive states"
            " (X.vt, X.vt@SEL, [clause]NAME@SEL, also below a path) or dirent refs."
            " Without --base, two states of one archive merge against the newest"
            " state older than both.  Prints the merged dirent ref; -a appends it"
            " to an archive as a new state."
        ),
    )
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--base", metavar="BASE", help="the common ancestor (a state or ref)")
    p.add_argument("-a", "--archive", metavar="ARCHIVE", help="append the merge to ARCHIVE")
    p.add_argument("-m", "--comment", help="the comment of the appended state")
    p.add_argument("--json", action="store_true", help="the ref and the conflicts as JSON")
    p.set_defaults(func=run)


def _base_of(ta, tb, args):
    """The newest state older than both, when A and B are states of one archive."""
    if ta.entry is None or tb.entry is None or str(ta.archive.path) != str(tb.archive.path):
        raise VTError("give --base: A and B are not two states of one archive")
    older = min(ta.entry.when, tb.entry.when)
    base = None
    for e in ta.archive.entries():
        if e.when < older:
            base = e
    if base is None:
        raise VTError(f"{args.a}, {args.b}: no state is older than both; give --base")
    return base.dirent


def run(args) -> int:
    from vtstore.cli.common import open_store
    from vtstore.cli.refs import resolve_special, use_clause_of
    from vtstore.tree.merge import merge3

    use_clause_of(args, args.a)
    with open_store(args, readonly=args.archive is None) as store:
        ta, tb = resolve_special(args.a, store), resolve_special(args.b, store)
        for text, t in ((args.a, ta), (args.b, tb)):
            if t.dirent is None or not t.dirent.is_dir:
                raise VTError(f"{text}: not a directory tree")
        if args.base is not None:
            base = resolve_special(args.base, store).dirent
        else:
            base = _base_of(ta, tb, args)
        merged, conflicts = merge3(base, ta.dirent, tb.dirent, store)
        store.flush()
        if args.archive:
            from vtstore.archive import store_identity
            from vtstore.cli.pack import choose_archive

            archive = choose_archive(args, store)
            archive.update(merged, comment=args.comment, store_id=store_identity(store))
    if args.json:
        print(json.dumps({"ref": str(merged), "conflicts": conflicts}))
    else:
        print(merged)
    if conflicts and not args.quiet:
        shown = ", ".join(conflicts[:10]) + (", ..." if len(conflicts) > 10 else "")
        print(
            f"vt merge: {len(conflicts)} conflicts, both versions kept (*.vt-conflict): {shown}",
            file=sys.stderr,
        )
    return 0
