"""`vt snapshots`: every archive of a store and its states, in one table."""

from __future__ import annotations

import argparse
import os
import sys

from vtstore.cli.common import CommandLog, open_store
from vtstore.cli.refs import archive_target, select_entry, split_selector
from vtstore.errors import VTError

log = CommandLog(__name__)

#: the widest the archive column gets on an 80-column line
NAME_WIDTH = 20


def register(sub) -> None:
    p = sub.add_parser(
        "snapshots",
        aliases=["archives"],
        help="list the archives of a store and their states",
        description=(
            "List the archives a store keeps (its named archives, [clause]NAME) and"
            " their states, oldest first: archive, short state ID, local time and"
            " comment, one line each, cut to the terminal's width.  Each WHERE is a"
            " store (a datadir path, [clause], unix:..., any store spec) whose"
            " archives are listed, or one archive (X.vt, [clause]NAME, X.vt@SEL for"
            " one state); none: the archives of the command's store (-S).  The ID"
            " (or 4+ of its digits) picks the state in every command: X.vt@ID,"
            " [clause]NAME@ID.  --sizes adds files and bytes (a walk of each"
            " archive's first tree and a diff per later state)."
        ),
    )
    p.add_argument("where", nargs="*", metavar="WHERE", help="a store or an archive")
    p.add_argument("--json", action="store_true", help="one JSON array of archives and states")
    p.add_argument("-s", "--sizes", action="store_true", help="add each state's files and bytes")
    p.add_argument("--latest", action="store_true", help="only the latest state of each archive")
    p.set_defaults(func=run)


def _is_archive(text: str) -> bool:
    plain = split_selector(text)[0]
    if text.startswith("["):
        return "]" in text and bool(text[text.index("]") + 1 :].strip())
    return plain.endswith(".vt") or ".vt/" in plain


def _store_args(args, spec: str | None):
    a = argparse.Namespace(**vars(args))
    if spec is not None:
        if os.path.isdir(spec) and not spec.startswith(("/", "./", "../")):
            spec = "./" + spec  # a datadir named like a word is still a path here
        a.store_spec = spec
    return a


def _archives_of_store(store) -> list[tuple[str, object]]:
    from vtstore.named_archives import list_archives, open_archive

    return [(name, open_archive(store, name)) for name in list_archives(store)]


def _rows(name: str, archive, store, args, sel: str | None = None) -> tuple[dict, list]:
    """The JSON object of one archive and its table rows."""
    from vtstore.cli.log import entry_json, stats_series

    if sel is not None:
        entries = [select_entry(archive, sel, text=name)]
    else:
        entries = list(archive.entries())
        if args.latest:
            entries = entries[-1:]
    if args.sizes:
        series = list(stats_series(entries, store))
    else:
        series = [(e, None, None) for e in entries]
    obj = {
        "archive": name,
        "path": str(archive.path),
        "states": [entry_json(e, stats) for e, stats, _ in series],
    }
    for e, _stats, err in series:
        if err is not None:
            log.warning("%s: state %s: %s", name, e.short_id, err)
    return obj, series


def _line(name: str, e, stats, args, width: int) -> str:
    from vtstore.cli.log import local_time
    from vtstore.stores.progress import human_size

    shown = name if len(name) <= NAME_WIDTH else name[: NAME_WIDTH - 3] + "..."
    line = f"{shown:<{NAME_WIDTH}}  {e.short_id}  {local_time(e.when)}"
    if args.sizes:
        size, files = ("?", "?") if stats is None else (human_size(stats["bytes"]), stats["files"])
        line += f"  {size:>9} {files:>7}"
    comment = (e.comment or "").replace("\n", " ")
    if comment:
        line += "  " + comment
    if len(line) > width:
        line = line[: width - 3] + "..."
    return line


def run(args) -> int:
    import json
    import shutil

    width = shutil.get_terminal_size((80, 24)).columns
    out: list[dict] = []
    failed = 0
    if sys.stdout.isatty() and not args.json:
        sizes = f"  {'SIZE':>9} {'FILES':>7}" if args.sizes else ""
        print(f"{'ARCHIVE':<{NAME_WIDTH}}  {'ID':8}  {'TIME (local)':19}{sizes}  COMMENT")
    for where in args.where or [None]:
        try:
            failed += _one(args, where, out, width)
        except VTError as e:
            print(f"vt {args.command}: {where or 'the store'}: {e}", file=sys.stderr)
            failed += 1
    if args.json:
        print(json.dumps(out, indent=1))
    return 1 if failed else 0


def _one(args, where: str | None, out: list, width: int) -> int:
    """List what `where` names (None: the command's store); return how many failed."""
    archive_arg = where is not None and _is_archive(where)
    spec = None
    if archive_arg and where.startswith("[") and not args.store_spec:
        spec = where[: where.index("]") + 1]
    elif where is not None and not archive_arg:
        spec = where
    failed = 0
    with open_store(_store_args(args, spec), readonly=True) as store:
        if archive_arg:
            archive, inner, sel = archive_target(where, store)
            if inner.strip("/"):
                raise VTError(f"{where}: an archive, not a path inside one")
            if not archive.exists():
                raise VTError("no such archive")
            found = [(split_selector(where)[0], archive, sel)]
        else:
            found = [(n, a, None) for n, a in _archives_of_store(store)]
            if not found and not args.json:
                print(f"vt {args.command}: {store.name} keeps no archives", file=sys.stderr)
        for name, archive, sel in found:
            try:
                obj, series = _rows(name, archive, store, args, sel)
            except VTError as e:
                print(f"vt {args.command}: {name}: {e}", file=sys.stderr)
                failed += 1
                continue
            out.append(obj)
            failed += any(err is not None for _, _, err in series)
            if not args.json:
                for e, stats, _err in series:
                    print(_line(name, e, stats, args, width))
    return failed
