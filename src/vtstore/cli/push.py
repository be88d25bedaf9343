"""`vt push` and `vt pull`: copy trees, archives or a whole store between stores.

Both take `SRC DST [WHAT...]` and copy from SRC into DST (the same order for
both, so a command line reads the same whichever verb it uses; `pull` is the
word for fetching from a remote store).  A store given as `-` is the command's
own store (`-S`, `$VT_STORE`, the config's `[default]`, the default datadir).
WHAT is a ref (`vt save` output, a dirent or block transcription, with an
optional `/path`), an archive file `X.vt`, or `[clause]NAME` (the archive NAME
kept by SRC; with SRC `-` and no `-S`, the clause is SRC); nothing means the
whole store.
"""

from __future__ import annotations

import argparse
import sys
import time

from vtstore.cli.common import progress_bar
from vtstore.cli.refs import is_ref_text, resolve_special
from vtstore.errors import VTError

TYPE_CHECKING = False  # the sync layer is imported in run(), not at start-up
if TYPE_CHECKING:
    from vtstore.sync.tree import SyncStats


def _add_parser(sub, cmd: str, help_: str) -> None:
    p = sub.add_parser(
        cmd,
        help=help_,
        description=(
            f"{help_}.  Copies everything reachable from each WHAT from SRC into DST,"
            " walking top-down and skipping every subtree whose top block DST already"
            " holds; archives move with their states (the states newer than DST's"
            " archive of the same name are appended to it, in time order).  A store"
            " given as '-' is the command's own store (-S, $VT_STORE, config)."
        ),
        epilog=(
            "WHAT: a ref as printed by 'vt save' (optionally REF/path), an archive file"
            " X.vt, or [clause]NAME (archive NAME of SRC); nothing: the whole store."
            " A subtree is skipped when DST holds its top block: DST written only by"
            " vt (children before parents) holds the rest too; --full checks every block."
        ),
    )
    p.add_argument("src", metavar="SRC", help="the store to copy from ('-': the default store)")
    p.add_argument("dst", metavar="DST", help="the store to copy into ('-': the default store)")
    p.add_argument("what", nargs="*", default=[], metavar="WHAT", help="refs, X.vt or [clause]NAME")
    p.add_argument("-n", "--dry-run", action="store_true", help="walk and count what would be sent")
    p.add_argument(
        "--full",
        action="store_true",
        help="do not trust a block DST holds for its subtree: check every block",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="append to a DST archive whose latest state belongs to another store",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=512,
        metavar="N",
        help="blocks per add request (default 512); the walk asks DST about 8 times as many"
        " per round trip",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (blocks and bytes sent, skipped, failed, states"
        " appended per archive, seconds, problems) instead of the summary",
    )
    p.add_argument(
        "--move",
        action="store_true",
        help="push-and-delete pool: send SRC's named archives and every sealed data file,"
        " and drop each file from SRC (a datadir) once DST confirms all its blocks",
    )
    p.set_defaults(func=run)


def register(sub) -> None:
    """`vt push` (the `vt pull` parser is registered by `vtstore.cli.pull`)."""
    _add_parser(sub, "push", "copy blocks, trees or archives to another store")


def register_pull(sub) -> None:
    """`vt pull`: the same copy as push, SRC into DST."""
    _add_parser(sub, "pull", "copy blocks, trees or archives from another store")


def _open(args, spec: str, readonly: bool):
    from vtstore.stores.spec import open_store_from_args

    if not spec.strip():
        raise VTError(f"vt {args.command}: empty store spec")
    a = argparse.Namespace(**vars(args))
    a.store_spec = args.store_spec if spec == "-" else spec
    a.cache_spec = None
    return open_store_from_args(a, readonly=readonly)


class _Bar:
    """Feeds `SyncStats` to a progress bar: blocks walked, then bytes sent."""

    def __init__(self, bar):
        self.bar = bar
        self.shown = 0

    def __call__(self, st: SyncStats) -> None:
        if st.phase == "walk":
            self.bar.set_postfix_str(f"walk: {st.checked} checked, {st.total} to send")
            return
        if getattr(self.bar, "total", None) != st.total_bytes and hasattr(self.bar, "refresh"):
            self.bar.total = st.total_bytes
        self.bar.update(st.bytes_sent - self.shown)
        self.shown = st.bytes_sent
        self.bar.set_postfix_str(f"{st.done}/{st.total} blocks, {st.outstanding} outstanding")


class _Totals:
    def __init__(self):
        self.sent = self.bytes = self.present = self.subtrees = self.failed = 0
        self.rounds = self.unchanged = 0
        self.problems: list[str] = []

    def add(self, st: SyncStats, dry_run: bool = False) -> None:
        self.sent += st.total if dry_run else st.done
        self.bytes += st.total_bytes if dry_run else st.bytes_sent
        self.present += st.present
        self.subtrees += st.subtrees_skipped
        self.failed += st.failed
        self.rounds += st.rounds
        self.unchanged += st.unchanged
        self.problems += st.problems

    def to_json(self, args, archives: list, elapsed: float) -> dict:
        """What `--json` prints."""
        return {
            "src": args.src,
            "dst": args.dst,
            "dry_run": args.dry_run,
            "sent_blocks": self.sent,
            "sent_bytes": self.bytes,
            "present_blocks": self.present,
            "subtrees_skipped": self.subtrees,
            "failed_blocks": self.failed,
            "walk_rounds": self.rounds,
            "unchanged_entries": self.unchanged,
            "archives": archives,
            "seconds": round(elapsed, 3),
            "problems": list(self.problems),
        }


def run(args) -> int:
    import json

    from vtstore.sync.archives import archive_name, dest_archive, push_archive
    from vtstore.sync.tree import SyncError, TreeSync

    if getattr(args, "move", False):
        from vtstore.cli.gc import run_push_move

        return run_push_move(args, _open)
    if args.batch < 1:
        raise VTError(f"--batch must be at least 1, got {args.batch}")
    t0 = time.monotonic()
    src_spec = args.src
    clauses = [w[: w.index("]") + 1] for w in args.what if w.startswith("[") and "]" in w]
    if src_spec == "-" and not args.store_spec and clauses:
        # `vt push - DST [home]docs`: the archive's clause is the source store
        src_spec = clauses[0]
    with _open(args, src_spec, readonly=True) as src, _open(args, args.dst, args.dry_run) as dst:
        if not args.what:
            return _whole_store(args, src, dst)
        totals = _Totals()
        notes: list[str] = []
        with progress_bar(args, desc=args.command, unit="B") as bar:
            prog = _Bar(bar)
            trees = TreeSync(
                src, dst, full=args.full, dry_run=args.dry_run, batch=args.batch, on_progress=prog
            )
            archives = []
            pushed: list[dict] = []  # for --json
            for text in args.what:
                if is_ref_text(text):
                    t = resolve_special(text, src)
                    if t.dirent is not None:
                        trees.add_dirent(t.dirent, text[:60])
                    else:
                        trees.add_block(t.block, text[:60])
                else:
                    archives.append(text)
            totals.add(trees.run(), args.dry_run)
            for text in archives:
                name = archive_name(text)
                src_archive = _source_archive(text, src)
                dst_archive = dest_archive(dst, name)
                if dst_archive is None:
                    notes.append(
                        f"{dst.name} keeps no named archives: the trees of {text} were copied,"
                        " no states appended"
                    )
                prog.shown = 0
                res = push_archive(
                    src,
                    dst,
                    src_archive,
                    dst_archive,
                    full=args.full,
                    dry_run=args.dry_run,
                    force=args.force,
                    batch=args.batch,
                    on_progress=prog,
                )
                for st in res.stats:
                    totals.add(st, args.dry_run)
                pushed.append(
                    {
                        "what": text,
                        "dest": _label(dst_archive, dst),
                        "appended": len(res.appended),
                        "present": res.present,
                        "older": res.older,
                        "held_back": res.held_back,
                    }
                )
                verb = "would append" if args.dry_run else "appended"
                notes.append(
                    f"{text}: {verb} {len(res.appended)} states to {_label(dst_archive, dst)},"
                    f" {res.present} already there, {res.older} older than its latest"
                    + (f", {res.held_back} held back" if res.held_back else "")
                )
    elapsed = time.monotonic() - t0
    if args.json:
        print(json.dumps(totals.to_json(args, pushed, elapsed)))
    else:
        _summary(args, totals, notes, elapsed)
    if totals.problems:
        for p in totals.problems[:20]:
            print(f"vt {args.command}: {p}", file=sys.stderr)
        if len(totals.problems) > 20:
            print(f"vt {args.command}: ... {len(totals.problems) - 20} more", file=sys.stderr)
        raise SyncError(
            f"{len(totals.problems)} problems in {args.src}: {totals.failed} blocks"
            " (and what is above them) not copied; the rest was"
        )
    return 0


def _label(archive, store) -> str:
    """How the summary names a destination archive: its path, or STORE:NAME."""
    if archive is None:
        return f"{store.name} (none kept)"
    return str(archive.path)


def _source_archive(text: str, src):
    """The archive WHAT names in the source store."""
    from vtstore.cli.refs import archive_of

    archive, inner = archive_of(text, src)
    if inner.strip("/"):
        raise VTError(f"{text}: an archive is pushed whole, not a path inside it")
    return archive


def _summary(args, t: _Totals, notes: list[str], elapsed: float) -> None:
    if args.quiet:
        return
    verb = "would send" if args.dry_run else "sent"
    print(
        f"{verb} {t.sent} blocks ({t.bytes:,} bytes), skipped {t.present} present"
        f" ({t.subtrees} subtrees not walked, {t.unchanged} entries as in DST's last state),"
        f" {t.failed} failed, {t.rounds} walk rounds,"
        f" in {elapsed:.2f} s"
    )
    for n in notes:
        print(n)


def _whole_store(args, src, dst) -> int:
    """No WHAT: every block of SRC that DST lacks, by `vtstore.sync.stores.sync_stores`
    (archives are not copied: name them)."""
    import json

    from vtstore.sync.tree import SyncError

    try:
        from vtstore.sync.stores import sync_stores
    except ImportError:
        raise VTError("whole-store sync is not available yet: name what to push") from None
    with progress_bar(args, desc=args.command, unit="blocks") as bar:
        shown = [0]

        def progress(done: int) -> None:
            bar.update(done - shown[0])
            shown[0] = done

        rep = sync_stores(src, dst, dry_run=args.dry_run, progress=progress)
    if args.json:
        print(json.dumps(rep.to_json()))
    elif not args.quiet:
        verb = "would send" if args.dry_run else "sent"
        print(
            f"{verb} {rep.sent_blocks} blocks ({rep.sent_bytes:,} bytes) of {rep.src_blocks},"
            f" whole store, {rep.round_trips} round trips, in {rep.seconds:.2f} s"
        )
    if rep.problems:
        for p in rep.problems[:20]:
            print(f"vt {args.command}: {p}", file=sys.stderr)
        raise SyncError(f"{len(rep.problems)} problems in {args.src}; the rest was copied")
    return 0
