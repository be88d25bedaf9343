"""`vt ar`: self-contained `.vtd` bundles of a tree (create, list, extract).

A bundle is a data file of the datadir format holding exactly the blocks of
one tree, its top dirent first (`vtstore.tree.vtdview`): `file:X.vtd` opens it
as a store, `vt ar list` and `vt ar extract` read it without any other store.
"""

from __future__ import annotations

import json
import os
import sys

from vtstore.errors import VTError


def register(sub) -> None:
    p = sub.add_parser(
        "ar",
        help="create, list and extract self-contained .vtd bundles",
        description=(
            "A .vtd bundle holds one tree and every block it needs, top block first,"
            " then the directories, then the file data: copy it anywhere, open it as"
            " a store with -S file:X.vtd, or list and extract it with vt ar."
        ),
    )
    acts = p.add_subparsers(dest="ar_action", metavar="ACTION", required=True)
    c = acts.add_parser(
        "create",
        help="write a tree as a bundle",
        description=(
            "Write SOURCE as the bundle X.vtd: an archive's latest state (X.vt[/SUB],"
            " [clause]NAME) or a dirent ref from the store (-S), or a directory on"
            " disk (packed into memory first).  Prints the top dirent ref."
        ),
    )
    c.add_argument("bundle", metavar="X.vtd")
    c.add_argument("source", metavar="X.vt[/SUB]|REF|DIR")
    c.add_argument("--json", action="store_true", help="print a JSON summary")
    c.set_defaults(func=run_create)
    ls = acts.add_parser(
        "list",
        help="print a bundle's top ref and its paths",
        description="Print the bundle's top dirent ref, then every path in it (walk order).",
    )
    ls.add_argument("bundle", metavar="X.vtd")
    ls.add_argument("--json", action="store_true", help="the top ref and the entries as JSON")
    ls.set_defaults(func=run_list)
    x = acts.add_parser(
        "extract",
        help="restore a bundle's tree into DIR",
        description=(
            "Restore the bundle's tree into DIR (default: the top's name, else X), as"
            " vt unpack does.  An index X.vtd.index is made beside the bundle."
        ),
    )
    x.add_argument("bundle", metavar="X.vtd")
    x.add_argument("dir", nargs="?", metavar="DIR")
    x.add_argument("--json", action="store_true", help="print a JSON summary")
    x.set_defaults(func=run_extract)


def _tree_of(args, source: str):
    """`(top dirent, store, closer)` of SOURCE: a directory on disk or a ref/archive."""
    if os.path.isdir(source) and not source.rstrip("/").endswith(".vt"):
        from vtstore.stores.memory import MemoryStore
        from vtstore.tree.fsimport import import_tree

        store = MemoryStore()
        top, stats = import_tree(source, store)
        if stats.errors:
            raise VTError(f"{source}: {len(stats.errors)} objects could not be read")
        return top, store, None
    from vtstore.cli.common import open_store
    from vtstore.cli.refs import resolve_special, use_clause_of

    use_clause_of(args, source)
    ctx = open_store(args, readonly=True)
    store = ctx.__enter__()
    try:
        t = resolve_special(source, store)
        if t.dirent is None:
            raise VTError(f"{source}: a bare block ref has no tree; give a dirent ref")
    except BaseException:
        ctx.__exit__(*sys.exc_info())
        raise
    return t.dirent, store, ctx


def run_create(args) -> int:
    from vtstore.cli.progress import TreeProgress
    from vtstore.tree.vtdview import VtdView

    if not args.bundle.endswith(".vtd"):
        raise VTError(f"{args.bundle}: a bundle's name ends with .vtd")
    if os.path.lexists(args.bundle):
        raise VTError(f"{args.bundle} already exists")
    top, store, ctx = _tree_of(args, args.source)
    try:
        view = VtdView(top, store)
        tmp = args.bundle + ".part"
        try:
            with open(tmp, "wb") as f, TreeProgress(args, "ar create", total=view.span) as bar:
                n = 0
                while n < view.span:  # 4 MiB at a time: the bar moves, memory stays flat
                    n += f.write(view.read(store, n, n + (4 << 20)))
                    bar.update(n, 0, f" of {len(view):,} blocks")
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, args.bundle)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)
    if args.json:
        print(json.dumps({"bundle": args.bundle, "top": str(top), "blocks": len(view), "size": n}))
    else:
        print(top)
    if not args.quiet:
        print(f"vt ar: {args.bundle}: {len(view):,} blocks, {n:,} bytes", file=sys.stderr)
    return 0


def _open(bundle: str):
    from vtstore.stores.filestore import FileStore
    from vtstore.tree.vtdview import read_top

    if not os.path.isfile(bundle):
        raise VTError(f"{bundle}: no such bundle")
    top = read_top(bundle)
    return top, FileStore(bundle, readonly=True)


def run_list(args) -> int:
    from vtstore.tree.dir import walk

    top, store = _open(args.bundle)
    with store:
        if args.json:
            entries = [
                {"path": p, "type": e.type_name, "size": e.size} for p, e in walk(top, store)
            ]
            print(json.dumps({"top": str(top), "entries": entries}))
            return 0
        print(top)
        for p, e in walk(top, store):
            if p:
                print(p + ("/" if e.is_dir else ""))
    return 0


def run_extract(args) -> int:
    from vtstore.cli.progress import TreeProgress
    from vtstore.cli.unpack import finish
    from vtstore.tree.fsexport import Exporter

    top, store = _open(args.bundle)
    target = args.dir or top.name or os.path.basename(args.bundle)[: -len(".vtd")]
    with store, TreeProgress(args, "ar extract") as bar:
        exp = Exporter(
            store,
            on_file=lambda st: bar.update(st.bytes, st.files),
            on_total=bar.set_total,
        )
        stats = exp.export(top, target)
    return finish(args, stats, "extracted")
