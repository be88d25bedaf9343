"""`vt unpack`: restore a state of an archive, or a dirent ref, to a directory."""

from __future__ import annotations

import datetime
import json
import os
import re
import sys

from vtstore.cli.common import add_filter_options, filters_from_args, open_store
from vtstore.cli.progress import TreeProgress
from vtstore.cli.refs import resolve_special, use_clause_of
from vtstore.errors import VTError

#: exit status of a restore that finished but could not restore everything whole
#: (the one of any failure: scripts that test for success need no change)
EXIT_DAMAGED = 1
#: --max-size for a target we cannot measure (and for a tar on a pipe)
DEFAULT_MAX_SIZE = 16 << 40
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


class DamagedRestoreError(VTError):
    """A restore went to its end, but some objects could not be restored whole."""

    exit_code = EXIT_DAMAGED


def parse_size(text: str) -> int | None:
    """Bytes from `123`, `10K`, `1.5G`, `2TiB`...; `0` or `none` means no limit (None)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?\s*", text, re.IGNORECASE)
    if text.strip().lower() in ("none", "unlimited"):
        return None
    if not m:
        raise VTError(f"bad size {text!r}: give bytes with an optional K, M, G, T or P")
    n = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    return n or None


def parse_count(text: str) -> int | None:
    """A count (`10000000`, `10M` in powers of 1000); `0` or `none` means no limit."""
    if text.strip().lower() in ("none", "unlimited"):
        return None
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)\s*", text, re.IGNORECASE)
    if not m:
        raise VTError(f"bad count {text!r}")
    n = int(m.group(1)) * {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}[m.group(2).upper()]
    return n or None


def free_space(path: str, total: bool = False) -> int:
    """Free (or, with `total`, all) bytes of the filesystem `path` is or would be on."""
    p = os.path.abspath(path)
    while not os.path.exists(p) and p != os.path.dirname(p):
        p = os.path.dirname(p)
    try:
        st = os.statvfs(p)
    except OSError:
        return DEFAULT_MAX_SIZE
    blocks = st.f_blocks if total else (st.f_bfree if os.geteuid() == 0 else st.f_bavail)
    return blocks * st.f_frsize


def add_limit_options(p, size_default: str) -> None:
    """--max-size and --max-files, shared with `vt export`."""
    p.add_argument(
        "--max-size",
        metavar="SIZE",
        help=(
            "stop before restoring more than SIZE bytes of file content (suffixes K, M,"
            f" G, T; 0 or none: no limit; default {size_default})"
        ),
    )
    p.add_argument(
        "--max-files",
        metavar="N",
        default=str(10_000_000),
        help="stop before restoring more than N entries (0 or none: no limit; default 10000000)",
    )


def register(sub) -> None:
    p = sub.add_parser(
        "unpack",
        help="restore the latest state of an archive",
        description=(
            "Restore X.vt's latest state (or the state at --at TIME), or a dirent ref"
            " printed by 'vt save -F' / 'vt pack', into DIR (default: X for X.vt, or"
            " the dirent's name).  DIR must not exist or be empty, unless --resume."
            "  Nothing is ever written outside DIR.  A missing or corrupt block does"
            " not stop the restore: a file that cannot be read whole is written as"
            " NAME.vt-damaged (unreadable ranges are holes), a damaged directory"
            " gets the entries that can be read, and the command ends with a summary"
            f" and exit status {EXIT_DAMAGED}."
        ),
    )
    p.add_argument("special", metavar="X.vt|DIRENT-REF")
    p.add_argument("dir", nargs="?", metavar="DIR")
    p.add_argument(
        "--at", metavar="TIME", help="ISO time or UNIX seconds: newest state not after it"
    )
    p.add_argument("--numeric-ids", action="store_true", help="restore owners by number only")
    p.add_argument(
        "--resume",
        "--continue",
        action="store_true",
        help=(
            "complete an existing (interrupted) restore in DIR: keep what is already"
            " in place (files of the same size and mtime), rewrite the rest"
        ),
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="with --resume (implied): keep a file only if its content matches too",
    )
    p.add_argument(
        "--safe",
        action="store_true",
        help=(
            "for archives from elsewhere: create no device nodes, clear setuid/setgid"
            " on files, restore no security.* or trusted.* xattrs (file capabilities)"
        ),
    )
    add_limit_options(p, "the free space of DIR's filesystem")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    add_filter_options(p, source=False)
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


def finish(args, stats, verb: str) -> int:
    """Print the summary of a restore; raise if anything was not restored whole."""
    if getattr(args, "json", False):
        print(json.dumps(stats.to_json()))
    restored = f"{stats.files:,} file{'' if stats.files == 1 else 's'} {verb}"
    if stats.skipped:
        restored += f" ({stats.skipped:,} already in place)"
    if stats.unsafe_skipped:
        restored += f", {stats.unsafe_skipped:,} device nodes skipped (--safe)"
    if args.verbose:
        for d in stats.damaged:
            print(f"vt {args.command}: damaged: {d.path}: {'; '.join(d.what)}", file=sys.stderr)
        for msg in stats.errors:
            print(f"vt {args.command}: not restored: {msg}", file=sys.stderr)
    if not stats.damaged and not stats.errors:
        if args.verbose:
            print(f"vt {args.command}: {restored}", file=sys.stderr)
        return 0
    parts = [restored]
    if stats.damaged:
        shown = [d.line() for d in stats.damaged[:5]]
        more = len(stats.damaged) - len(shown)
        tail = f", and {more:,} more (-v lists all)" if more else ""
        parts.append(f"{len(stats.damaged):,} damaged: {', '.join(shown)}{tail}")
    if stats.errors:
        tail = f": {stats.errors[0]}" + (", ..." if len(stats.errors) > 1 else "")
        parts.append(f"{len(stats.errors):,} could not be {verb}{tail}")
        raise VTError(", ".join(parts))
    raise DamagedRestoreError(", ".join(parts))


def run(args) -> int:
    use_clause_of(args, args.special)
    from vtstore.tree.fsexport import Exporter
    from vtstore.tree.salvage import LimitError

    when = parse_time(args.at) if args.at else None
    max_files = parse_count(args.max_files)
    filters = filters_from_args(args)
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
        if args.max_size is not None:
            max_size = parse_size(args.max_size)
        else:  # with --resume much of the tree may be there already
            max_size = free_space(target, total=args.resume or args.verify)
        with TreeProgress(args, "unpack") as progress:
            exp = Exporter(
                store,
                numeric_ids=args.numeric_ids,
                on_file=lambda st: progress.update(st.bytes, st.files),
                resume="verify" if args.verify else ("quick" if args.resume else None),
                safe=args.safe,
                links=getattr(t, "links", None),
                max_files=max_files,
                max_size=max_size,
                filters=filters,
                on_total=progress.set_total,
            )
            try:
                stats = exp.export(d, target)
            except LimitError as e:
                if args.max_size is None and "--max-size" in str(e):
                    what = "total size" if (args.resume or args.verify) else "free space"
                    msg = f"{e} (the default: the {what} of {target}'s filesystem)"
                    raise LimitError(msg) from None
                raise
    return finish(args, stats, "restored")
