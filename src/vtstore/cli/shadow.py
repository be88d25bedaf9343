"""`vt shadow DIR X.vt`: keep a directory and an archive equal, both ways."""

from __future__ import annotations

import os
import time

from vtstore.cli.common import CommandLog, open_store
from vtstore.cli.refs import archive_of, use_clause_of
from vtstore.cli.watch import _seconds, add_live_options
from vtstore.errors import VTError

log = CommandLog(__name__)


def register(sub) -> None:
    p = sub.add_parser(
        "shadow",
        help="keep DIR equal to an archive's latest state, both ways",
        description=(
            "Keep the real directory DIR and the archive ARCHIVE (X.vt or"
            " [clause]NAME) equal in both directions: changes made in DIR are"
            " recorded as new states (once settled, at most one per --interval), and"
            " states recorded elsewhere (another machine's vt shadow, pushed or pulled"
            " here) are written into DIR.  When both sides changed, the archive's"
            " changes are written except where DIR changed too; a file both changed"
            " differently keeps DIR's version under its name and the archive's as"
            " NAME.vt-conflict, and the result is recorded.  What DIR was last in step"
            " with is kept in .DIR.vt-shadow beside DIR, so a restart resumes.  Prints"
            " one line per step (with --json a JSON object).  SIGTERM or SIGINT does a"
            " last step and exits 0."
        ),
    )
    p.add_argument("dir", metavar="DIR")
    p.add_argument("archive", metavar="ARCHIVE", help="X.vt or [clause]NAME")
    add_live_options(p, interval=10.0)
    p.add_argument(
        "--check",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="look for states recorded elsewhere every SECONDS (default 5)",
    )
    p.add_argument("--once", action="store_true", help="do one step and exit")
    p.add_argument("--json", action="store_true", help="one JSON object per step on stdout")
    p.set_defaults(func=run)


class _Stepper:
    def __init__(self, args):
        from vtstore.live.shadow import Shadow

        self.args = args
        self.shadow = Shadow(args.dir, None)

    def step(self) -> None:
        import json

        with open_store(self.args) as store:
            archive, inner = archive_of(self.args.archive, store)
            if inner:
                raise VTError(f"{self.args.archive}: give a whole archive, not a path in it")
            self.shadow.archive = archive
            done, conflicts = self.shadow.round(store)
            last = archive.last()
        if done is None:
            return
        out = {"step": done, "state": last.short_id if last else None, "conflicts": conflicts}
        if self.args.json:
            print(json.dumps(out), flush=True)
        else:
            extra = f" ({len(conflicts)} conflicts: {', '.join(conflicts)})" if conflicts else ""
            print(f"{done} {out['state']}{extra}", flush=True)

    def archive_moved(self) -> bool:
        synced, _ = self.shadow.bases()
        with open_store(self.args, readonly=True) as store:
            last, _ = archive_of(self.args.archive, store)
            last = last.last()
        return last is not None and (synced is None or last.id != synced.id)


def run(args) -> int:
    from vtstore.live.monitor import open_monitor, stop_on_signals

    if not os.path.isdir(args.dir) or os.path.islink(args.dir):
        raise VTError(f"{args.dir}: not a directory")
    use_clause_of(args, args.archive)
    st = _Stepper(args)
    st.step()
    if args.once:
        return 0
    with (
        open_monitor(args.dir, args.monitor, args.settle, args.poll_interval) as mon,
        stop_on_signals(mon) as stop,
    ):
        last_step = next_check = time.monotonic()
        dirty = False
        while not stop:
            now = time.monotonic()
            if dirty and now >= last_step + args.interval and not mon.pending:
                st.step()
                dirty, last_step = False, time.monotonic()
                continue
            if now >= next_check:
                if st.archive_moved():
                    st.step()
                    last_step = time.monotonic()
                next_check = time.monotonic() + args.check
                continue
            waits = [next_check - now]
            if dirty:
                waits.append(max(last_step + args.interval - now, args.settle / 4))
            if mon.changes(min(waits)):
                dirty = True
        st.step()
    return 0
