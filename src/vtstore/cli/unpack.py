"""`vt unpack`: restore a state of an archive, or a dirent ref, to a directory."""

from __future__ import annotations

import datetime
import os

from vtstore.cli.common import open_store
from vtstore.cli.progress import TreeProgress
from vtstore.cli.refs import resolve_special, use_clause_of
from vtstore.errors import VTError


def register(sub) -> None:
    p = sub.add_parser(
        "unpack",
        help="restore the latest state of an archive",
        description=(
            "Restore X.vt's latest state (or the state at --at TIME), or a dirent ref"
            " printed by 'vt save -F' / 'vt pack', into DIR (default: X for X.vt, or"
            " the dirent's name).  DIR must not exist or be empty.  Nothing is ever"
            " written outside DIR."
        ),
    )
    p.add_argument("special", metavar="X.vt|DIRENT-REF")
    p.add_argument("dir", nargs="?", metavar="DIR")
    p.add_argument(
        "--at", metavar="TIME", help="ISO time or UNIX seconds: newest state not after it"
    )
    p.add_argument("--numeric-ids", action="store_true", help="restore owners by number only")
    p.set_defaults(func=run)


def parse_time(text: str) -> float:
    """UNIX seconds from a number or an ISO 8601 time (UTC unless it says otherwise)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise VTError(f"bad time {text!r}: give UNIX seconds or an ISO 8601 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.timestamp()


def run(args) -> int:
    use_clause_of(args, args.special)
    from vtstore.tree.fsexport import Exporter

    when = parse_time(args.at) if args.at else None
    with open_store(args, readonly=True) as store:
        t = resolve_special(args.special, store, when=when)
        d = t.dirent
        if d is None:
            raise VTError(f"{args.special}: a bare block ref has no tree; use vt cat")
        target = args.dir
        if target is None:
            if t.archive is not None:
                target = os.path.basename(t.archive.path)[: -len(".vt")]
            elif d.name:
                target = d.name
            else:
                raise VTError("the ref has no name: give DIR")
        with TreeProgress(args, "unpack") as progress:
            exp = Exporter(
                store,
                numeric_ids=args.numeric_ids,
                on_file=lambda st: progress.update(st.bytes, st.files),
            )
            stats = exp.export(d, target)
    if stats.errors:
        raise VTError(f"{len(stats.errors)} objects could not be restored")
    return 0
