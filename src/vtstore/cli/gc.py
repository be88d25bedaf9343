"""`vt gc`: reclaim the blocks no state needs any more (also `vt forget --prune`)."""

from __future__ import annotations

import json
import re
import sys

from vtstore.cli.common import open_store, progress_bar
from vtstore.errors import VTError

_INTERVAL = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class UsageError(VTError):
    exit_code = 2


def parse_interval(text: str, what: str) -> float:
    """`90s`, `30m`, `1h`, `2d` or plain seconds."""
    m = _INTERVAL.fullmatch(text.strip())
    if m is None:
        raise UsageError(f"{what}: bad time {text!r} (write e.g. 0, 90s, 30m, 1h, 2d)")
    return float(m[1]) * _UNIT[m[2]]


def add_gc_options(p) -> None:
    """The options `vt gc` and `vt forget --prune` share."""
    g = p.add_argument_group("garbage collection")
    g.add_argument(
        "--grace",
        default="1h",
        metavar="TIME",
        help="leave the data files written in the last TIME alone (default 1h): the"
        " blocks of a `vt save` whose ref no archive records yet; 0 collects everything",
    )
    g.add_argument(
        "--threshold",
        type=float,
        default=10.0,
        metavar="PERCENT",
        help="rewrite a data file when at least PERCENT of it is garbage (default 10);"
        " files that are all garbage are always deleted",
    )
    g.add_argument(
        "--max-unused",
        type=float,
        default=5.0,
        metavar="PERCENT",
        help="stop rewriting once the garbage left is at most PERCENT of the collected"
        " files' blocks (default 5, as restic); the most wasteful files go first;"
        " 0 rewrites every file over --threshold",
    )
    g.add_argument(
        "--root",
        action="append",
        default=[],
        metavar="REF",
        help="a dirent or block ref held outside any archive whose blocks must stay"
        " (repeatable; give trees as dirent refs, vt save -F)",
    )
    g.add_argument("--roots-from", metavar="FILE", help="more roots, one ref per line ('-': stdin)")
    g.add_argument(
        "--archive",
        action="append",
        default=[],
        dest="gc_archives",
        metavar="X.vt",
        help="also keep what this archive's states need (archives that recorded states"
        " into the store are known to it already; repeatable)",
    )
    g.add_argument(
        "--wait",
        default="10m",
        metavar="TIME",
        help="how long the final step may wait for other processes to close the store"
        " (default 10m)",
    )
    g.add_argument(
        "--ignore-damaged",
        action="store_true",
        help="go on although an archive has damaged lines (whose blocks may then go)",
    )


def gc_options(args, dry_run: bool):
    """`GCOptions` from the parsed command line."""
    from vtstore.cli.refs import parse_ref
    from vtstore.lifecycle.gc import GCOptions

    texts = list(args.root)
    if args.roots_from:
        try:
            f = sys.stdin if args.roots_from == "-" else open(args.roots_from, encoding="utf-8")
            with f:
                texts += [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
        except OSError as e:
            raise UsageError(f"--roots-from {args.roots_from}: {e.strerror}") from None
    roots = []
    for t in texts:
        value, rest = parse_ref(t)
        if rest.strip("/"):
            raise UsageError(f"--root {t[:60]}: a root is a whole ref, not a path inside one")
        roots.append(value)
    if not 0 <= args.threshold <= 100:
        raise UsageError(f"--threshold {args.threshold:g}: a percentage from 0 to 100")
    if not 0 <= args.max_unused <= 100:
        raise UsageError(f"--max-unused {args.max_unused:g}: a percentage from 0 to 100")
    return GCOptions(
        grace=parse_interval(args.grace, "--grace"),
        threshold=args.threshold / 100,
        max_unused=args.max_unused / 100,
        wait=parse_interval(args.wait, "--wait"),
        dry_run=dry_run,
        roots=roots,
        archives=list(args.gc_archives),
        ignore_damaged=args.ignore_damaged,
    )


def datadir_of(store):
    """The datadir under `store` (through cache and progress wrappers), or an error."""
    from vtstore.stores.datadir import DataDir

    s, seen = store, 0
    while s is not None and seen < 8:
        if isinstance(s, DataDir):
            return s
        s = getattr(s, "backend", None) or getattr(s, "inner", None)
        seen += 1
    raise UsageError(f"{store.name} is not a datadir or an object store: vt gc collects those only")


def lean_malloc() -> None:
    """Ask glibc for two malloc arenas, buffers over 1 MiB mmapped, and free
    heap tops over 4 MiB given back.  gc decodes and encodes ~256 KiB frames
    on several threads: with an arena each and glibc's adaptive thresholds,
    freed frames stay resident in every thread's heap (peak RSS at 1 GiB x 20:
    82 -> 77-80 MiB; a 128 KiB mmap threshold saved as much but doubled the
    system time, faulting fresh pages for every frame).  Nothing where there
    is no `mallopt` (not glibc)."""
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(-8, 2)  # M_ARENA_MAX
    mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (fixed: no adaptive growth)
    mallopt(-1, 4 << 20)  # M_TRIM_THRESHOLD


def run_gc(args, store, dry_run: bool):
    """Collect `store`'s garbage as the command line says; print the report."""
    from vtstore.lifecycle.gc import collect
    from vtstore.lifecycle.gc_objects import collect_objects, layout_store_of

    lean_malloc()
    opts = gc_options(args, dry_run)
    objects = layout_store_of(store)
    target = objects if objects is not None else datadir_of(store)
    bar = None

    def on_phase(name, total):
        nonlocal bar
        if bar is not None:
            bar.close()
        bar = progress_bar(args, total=total, desc=f"gc {name}")

    def on_bytes(n):
        if bar is not None:
            bar.update(n)

    try:
        work = collect_objects if objects is not None else collect
        rep = work(target, opts, on_phase=on_phase, on_bytes=on_bytes)
    finally:
        if bar is not None:
            bar.close()
    return rep


def register(sub) -> None:
    p = sub.add_parser(
        "gc",
        help="reclaim the space of blocks no state needs any more",
        description=(
            "Mark every block reachable from every state of every archive the store"
            " knows (its named archives, the X.vt files that recorded states into a"
            " datadir, --archive, --root), then delete the data files (or packs, or"
            " block objects of an s3+blocks:// store) that hold only garbage and"
            " rewrite those with more than --threshold of it.  On an object store, only"
            " objects older than --grace (by their time on the server, or else since a"
            " gc first listed them) are collected.  Safe beside a"
            " running vt pack: the marking and copying run alongside it; only the"
            " last step takes the datadir to itself, briefly, and marks again what"
            " was recorded meanwhile.  Safe against kill -9 at any point.  Run"
            " 'vt forget' first to drop states; 'vt forget --prune' does both."
        ),
    )
    p.add_argument("-n", "--dry-run", action="store_true", help="say what would go; change nothing")
    p.add_argument("--json", action="store_true", help="the report as one JSON object")
    add_gc_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    with open_store(args, readonly=False) as store:
        rep = run_gc(args, store, args.dry_run)
    if args.json:
        print(json.dumps(rep.to_json()))
    elif not args.quiet:
        for line in rep.lines():
            print(line)
    return 0


def run_push_move(args, open_fn) -> int:
    """`vt push --move SRC DST`: push the named archives and every sealed data
    file of datadir SRC to DST, dropping each file once DST confirms all its
    blocks (`vtstore.lifecycle.pool`).  `open_fn(args, spec, readonly)` opens
    a store as vt push does."""
    from vtstore.archive import archive_in
    from vtstore.lifecycle.pool import move
    from vtstore.sync.archives import dest_archive, push_archive

    if args.what:
        raise UsageError("--move pushes whole data files and the named archives: give no WHAT")
    if args.dry_run:
        raise UsageError("--move cannot be a dry run; vt push -n SRC DST shows what SRC holds")
    with open_fn(args, args.src, False) as src, open_fn(args, args.dst, False) as dst:
        dd = datadir_of(src)

        def push_archives() -> list[str]:
            names = []
            for name, path in dd.exports.items():
                push_archive(
                    src, dst, archive_in(path, src), dest_archive(dst, name), force=args.force
                )
                names.append(name)
            return names

        with progress_bar(args, total=dd.data_bytes(), desc="push --move") as bar:
            rep = move(dd, dst, push_archives, bar.update)
    if not args.quiet:
        for line in rep.lines():
            print(line)
    return 0
