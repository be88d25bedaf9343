"""`vt watch`: follow a directory and record a new state after each settled change."""

from __future__ import annotations

import os
import sys
import time

from vtstore.cli.common import CommandLog, add_filter_options, filters_from_args, open_store
from vtstore.cli.refs import use_clause_of
from vtstore.errors import VTError

log = CommandLog(__name__)


def register(sub) -> None:
    p = sub.add_parser(
        "watch",
        help="follow DIR and record a new state after each change (continuous backup)",
        description=(
            "Follow the tree at DIR and append a new state to its archive (DIR.vt, or"
            " -a ARCHIVE, as for vt pack) after each change, once the change has"
            " settled (no file changed for --settle seconds) and at most one state per"
            " --interval seconds.  Only what changed is read and stored: each state is"
            " an incremental pack against the last one.  At start it catches up: a"
            " tree that changed while vt watch was not running gets a state at once;"
            " an unchanged tree gets none.  It runs at low priority (nice 10, idle I/O"
            " class) unless --normal-priority.  SIGTERM or SIGINT records a final"
            " state of what changed since the last one and exits 0.  Each state's"
            " dirent ref is printed on stdout as it is recorded (with --json a JSON"
            " summary per line, its 'reason' being catch-up, change or final)."
        ),
    )
    p.add_argument("dir", metavar="DIR")
    p.add_argument(
        "-a", "--archive", metavar="ARCHIVE", help="archive to append to: X.vt or [clause]NAME"
    )
    add_live_options(p, interval=60.0)
    p.add_argument("-m", "--comment", help="a comment stored with each state")
    p.add_argument(
        "-x", "--one-file-system", action="store_true", help="do not cross filesystem boundaries"
    )
    p.add_argument(
        "--normal-priority",
        action="store_true",
        help="do not lower the CPU and I/O priority",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary per state on stdout")
    add_filter_options(p)
    p.set_defaults(func=run)


def add_live_options(p, interval: float) -> None:
    """--interval, --settle, --monitor and --poll-interval (vt watch, vt shadow)."""
    p.add_argument(
        "--interval",
        type=_seconds,
        default=interval,
        metavar="SECONDS",
        help=f"at most one state of local changes per SECONDS (default {interval:g})",
    )
    p.add_argument(
        "--settle",
        type=_seconds,
        default=2.0,
        metavar="SECONDS",
        help="a change is taken once nothing changed for SECONDS (default 2)",
    )
    p.add_argument(
        "--monitor",
        choices=("auto", "inotify", "poll"),
        default="auto",
        help="how changes are seen: kernel events (inotify), a stat walk (poll; for"
        " network and FUSE filesystems), or auto (inotify if it can; default)",
    )
    p.add_argument(
        "--poll-interval",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="with the poll monitor, walk the tree every SECONDS (default 10)",
    )


def _seconds(text: str) -> float:
    import argparse

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (0 < v < 1e7):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of seconds")
    return v


class Recorder:
    """Records states of `args.dir` into its archive, each against the last."""

    def __init__(self, args):
        self.args = args
        self.states = 0

    def record(self, reason: str) -> bool:
        """Pack the tree against the archive's last state; append the result
        unless it equals that state.  True when a state was appended."""
        import json

        from vtstore.archive import store_identity
        from vtstore.cli.pack import _human, _summary, choose_archive, data_bytes, dir_salt_for
        from vtstore.tree.fsimport import Importer

        args = self.args
        t0 = time.monotonic()
        with open_store(args) as store:
            archive = choose_archive(args, store)
            filters = filters_from_args(args, store, str(archive.path))
            last = archive.last()
            if last is not None and not archive.check_store(store, last=last):
                last = None
            before = data_bytes(store)
            salt, reuse_dirs = dir_salt_for(False, last.dirent if last else None, store)
            imp = Importer(
                store,
                salt=salt,
                reuse_dir_blocks=reuse_dirs,
                one_filesystem=args.one_file_system,
                filters=filters,
            )
            dirent = imp.import_path(args.dir, last.dirent if last else None)
            if last is not None and str(dirent) == str(last.dirent):
                log.info("%s: unchanged since the last state", args.dir)
                return False
            store.flush()
            apath = str(archive.path)
            if os.path.isabs(apath) and not os.path.isdir(os.path.dirname(apath)):
                os.makedirs(os.path.dirname(apath), mode=0o700)
            entry = archive.update(dirent, comment=args.comment, store_id=store_identity(store))
            after = data_bytes(store)
        self.states += 1
        summary = _summary(imp.stats, time.monotonic() - t0, archive, entry, before, after)
        summary["reason"] = reason
        print(json.dumps(summary) if args.json else entry.dirent, flush=True)
        if not args.quiet:
            print(_human(summary).replace("vt pack:", f"vt watch ({reason}):"), file=sys.stderr)
        if imp.stats.errors:
            log.warning(
                "%d objects could not be read; the state was saved without them",
                len(imp.stats.errors),
            )
        return True


def run(args) -> int:
    from vtstore.live.monitor import open_monitor, stop_on_signals
    from vtstore.live.priority import lower_priority

    if not os.path.isdir(args.dir) or os.path.islink(args.dir):
        raise VTError(f"{args.dir}: not a directory")
    use_clause_of(args, args.archive)
    if not args.normal_priority:
        lower_priority()
    rec = Recorder(args)
    # the monitor starts before the catch-up, so nothing changed during it is missed
    with (
        open_monitor(
            args.dir, args.monitor, args.settle, args.poll_interval, args.one_file_system
        ) as mon,
        stop_on_signals(mon) as stop,
    ):
        rec.record("catch-up")
        log.info("watching %s (%s)", args.dir, mon.backend)
        _follow(args, mon, rec, stop)
        recorded = rec.record("final")
        log.info("stopped by signal %d%s", stop[0], "" if recorded else "; nothing new")
    return 0


def _follow(args, mon, rec: Recorder, stop: list) -> None:
    """Wait for settled changes and record them, at most one state per interval."""
    last_record = time.monotonic()
    dirty_since: float | None = None
    while not stop:
        now = time.monotonic()
        due = last_record + args.interval
        # a file still being written is waited for, but not for ever
        waited_enough = dirty_since is not None and now - dirty_since >= 4 * args.interval
        if dirty_since is not None and now >= due and (not mon.pending or waited_enough):
            try:
                rec.record("change")
            except (VTError, OSError) as e:
                log.warning("could not record a state (trying again in %gs): %s", args.interval, e)
            else:
                dirty_since = None
            last_record = time.monotonic()
            continue
        if dirty_since is None:
            timeout = None
        elif now < due:
            timeout = due - now
        else:
            timeout = args.settle  # changes still settling
        if mon.changes(timeout) and dirty_since is None:
            dirty_since = time.monotonic()
