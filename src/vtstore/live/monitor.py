"""The tree monitor: `(rpath, old_state, new_state)` changes of a directory tree.

One interface, two backends:

- `InotifyMonitor` follows kernel events (a watch on every directory, added as
  directories appear; a queue overflow is answered by a rescan of the whole tree);
- `PollMonitor` walks the tree with `lstat` every `interval` seconds, for
  filesystems without events (network and FUSE mounts).

Both feed what they see to a `Settler`, which debounces: a path is reported once
its state has stayed the same for `settle` seconds, so a file being written is
taken when it settles, and a path that changed and changed back is not reported.
`rpath` is relative to the root, `/`-separated, `""` for the root itself; a state
is a `FileState`, `None` when the path does not exist.  A rename is reported as
the old path gone and the new one created (the same `ino`).  A directory's state
leaves out its mtime: it changes when its own metadata does, not its entries.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import stat
import time
from contextlib import contextmanager
from typing import NamedTuple

from vtstore.live import inotify

log = logging.getLogger(__name__)


class FileState(NamedTuple):
    """What the monitor compares: the kind and the stat fields that change with
    content or metadata."""

    mode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    uid: int
    gid: int

    @property
    def is_dir(self) -> bool:
        """Whether this is a directory."""
        return stat.S_ISDIR(self.mode)


Change = tuple[str, "FileState | None", "FileState | None"]


def state_of(st: os.stat_result) -> FileState:
    """The `FileState` of an lstat result (a directory's times left out)."""
    if stat.S_ISDIR(st.st_mode):
        return FileState(st.st_mode, 0, 0, 0, st.st_ino, st.st_uid, st.st_gid)
    return FileState(
        st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_uid, st.st_gid
    )


def join(rpath: str, name: str) -> str:
    """`rpath/name` (just `name` under the root)."""
    return f"{rpath}/{name}" if rpath else name


def scan(root: str, rpath: str = "", one_filesystem: bool = False) -> dict[str, FileState]:
    """The states of `rpath` and everything under it (empty if it is gone).

    Does not follow symbolic links; unreadable directories are listed as
    themselves, without their entries."""
    out: dict[str, FileState] = {}
    top = os.path.join(root, rpath) if rpath else root
    try:
        st = os.lstat(top)
    except OSError:
        return out
    out[rpath] = state_of(st)
    if not stat.S_ISDIR(st.st_mode):
        return out
    dev = st.st_dev
    stack = [rpath]
    while stack:
        rp = stack.pop()
        try:
            it = os.scandir(os.path.join(root, rp) if rp else root)
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    est = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                child = join(rp, e.name)
                out[child] = state_of(est)
                if stat.S_ISDIR(est.st_mode) and not (one_filesystem and est.st_dev != dev):
                    stack.append(child)
    return out


class Settler:
    """Debounces observations: a path is ready once its observed state has not
    changed for `settle` seconds and differs from the state last reported."""

    def __init__(self, reported: dict[str, FileState], settle: float):
        self.reported = reported
        self.settle = settle
        # rpath -> (last observed state, monotonic time it was first seen so)
        self._seen: dict[str, tuple[FileState | None, float]] = {}

    def observe(self, rpath: str, state: FileState | None, now: float) -> None:
        """Record what `rpath` looks like at `now`."""
        prev = self._seen.get(rpath)
        if prev is not None and prev[0] == state:
            return
        if prev is None and self.reported.get(rpath) == state:
            return  # an event that changed nothing we compare
        self._seen[rpath] = (state, now)

    def observe_tree(self, rpath: str, found: dict[str, FileState], now: float) -> None:
        """Record a scan of the subtree at `rpath`: `found`, and every path under
        it that was known and is not in `found` as gone."""
        for rp, s in found.items():
            self.observe(rp, s, now)
        prefix = rpath + "/" if rpath else ""
        for rp in [rp for rp in self.reported if rp.startswith(prefix) or rp == rpath]:
            if rp not in found and rp != "":
                self.observe(rp, None, now)
        for rp in [rp for rp in self._seen if rp.startswith(prefix) or rp == rpath]:
            if rp not in found and rp != "":
                self.observe(rp, None, now)

    @property
    def pending(self) -> int:
        """How many paths changed and have not settled yet."""
        return len(self._seen)

    def next_due(self) -> float | None:
        """When the earliest pending path settles (monotonic), or None."""
        if not self._seen:
            return None
        return min(t for _, t in self._seen.values()) + self.settle

    def ready(self, now: float) -> list[Change]:
        """The settled changes, sorted by path; they become the reported states."""
        out: list[Change] = []
        for rp, (s, t) in list(self._seen.items()):
            if now - t < self.settle:
                continue
            del self._seen[rp]
            old = self.reported.get(rp)
            if old == s:
                continue
            if s is None:
                del self.reported[rp]
            else:
                self.reported[rp] = s
            out.append((rp, old, s))
        out.sort(key=lambda c: c[0])
        return out


class Monitor:
    """A directory tree followed for changes; use as a context manager.

    `changes(timeout)` blocks until some changes have settled (or `timeout`
    seconds pass, or `wake()` is called) and returns them; `states` is the tree
    as last reported."""

    backend = "none"

    def __init__(self, root: str, settle: float = 1.0, one_filesystem: bool = False):
        self.root = os.path.abspath(root)
        if not os.path.isdir(self.root):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", root)
        self.one_filesystem = one_filesystem
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.settler = Settler({}, settle)

    @property
    def states(self) -> dict[str, FileState]:
        """The tree as last reported (rpath -> state)."""
        return self.settler.reported

    @property
    def pending(self) -> int:
        """How many paths changed and have not settled yet."""
        return self.settler.pending

    def wake(self) -> None:
        """Make a waiting `changes()` return now (safe from a signal handler)."""
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def changes(self, timeout: float | None = None) -> list[Change]:
        """Settled changes, waiting at most `timeout` seconds (None: until some)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            now = time.monotonic()
            out = self.settler.ready(now)
            if out:
                return out
            waits = [t - now for t in (self.settler.next_due(), end) if t is not None]
            wait = max(0.0, min(waits)) if waits else None
            if end is not None and now >= end:
                return []
            if self._wait(wait):
                self._drain_wake()
                return self.settler.ready(time.monotonic())

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except OSError:
            pass

    def _wait(self, timeout: float | None) -> bool:
        """Wait for news (observing it); True when woken by `wake()`."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the pipe (and the backend's resources)."""
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class PollMonitor(Monitor):
    """A monitor that walks the tree every `interval` seconds."""

    backend = "poll"

    def __init__(
        self, root: str, settle: float = 1.0, interval: float = 2.0, one_filesystem: bool = False
    ):
        super().__init__(root, settle, one_filesystem)
        self.interval = interval
        self.settler.reported.update(scan(self.root, one_filesystem=one_filesystem))
        self._next_walk = time.monotonic() + interval

    def _wait(self, timeout: float | None) -> bool:
        now = time.monotonic()
        until_walk = max(0.0, self._next_walk - now)
        t = until_walk if timeout is None else min(timeout, until_walk)
        r, _, _ = select.select([self._wake_r], [], [], t)
        if r:
            return True
        now = time.monotonic()
        if now >= self._next_walk:
            self.settler.observe_tree("", scan(self.root, one_filesystem=self.one_filesystem), now)
            self._next_walk = time.monotonic() + self.interval
        return False


class InotifyMonitor(Monitor):
    """A monitor driven by inotify events, a watch on every directory."""

    backend = "inotify"

    def __init__(self, root: str, settle: float = 1.0, one_filesystem: bool = False):
        super().__init__(root, settle, one_filesystem)
        self._fd = inotify.init()
        self._paths: dict[int, str] = {}  # wd -> rpath of the watched directory
        self.overflows = 0
        try:
            self._dev = os.lstat(self.root).st_dev
            found = scan(self.root, one_filesystem=one_filesystem)
            # watches first, then the states: an event in between is only a re-stat
            self._watch_dirs(found)
            self.settler.reported.update(scan(self.root, one_filesystem=one_filesystem))
        except BaseException:
            self.close()
            raise

    def _watch_dirs(self, found: dict[str, FileState]) -> None:
        for rp, s in found.items():
            if s.is_dir:
                self._watch(rp)

    def _watch(self, rpath: str) -> None:
        path = os.path.join(self.root, rpath) if rpath else self.root
        try:
            if self.one_filesystem and os.lstat(path).st_dev != self._dev:
                return
            wd = inotify.add_watch(self._fd, os.fsencode(path))
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise inotify.InotifyError(
                    f"{path}: out of inotify watches (fs.inotify.max_user_watches);"
                    " raise it or use the polling backend"
                ) from None
            return  # gone or unreadable: its parent's events still tell
        # a directory moved keeps its wd: the same number now names the new path
        self._paths[wd] = rpath

    def _wait(self, timeout: float | None) -> bool:
        r, _, _ = select.select([self._fd, self._wake_r], [], [], timeout)
        if self._fd in r:
            self._read()
        return self._wake_r in r

    def _read(self) -> None:
        dirty: dict[str, bool] = {}  # rpath -> rescan its subtree
        overflow = False
        while True:
            try:
                buf = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                break
            if not buf:
                break
            for wd, mask, _cookie, name in inotify.parse(buf):
                if mask & inotify.IN_Q_OVERFLOW:
                    overflow = True
                    continue
                base = self._paths.get(wd)
                if base is None:
                    continue
                if mask & inotify.IN_IGNORED:
                    if self._paths.get(wd) == base:
                        del self._paths[wd]
                    continue
                rp = join(base, os.fsdecode(name)) if name else base
                sub = bool(mask & inotify.IN_ISDIR) and bool(
                    mask & (inotify.IN_CREATE | inotify.IN_MOVED_TO | inotify.IN_MOVED_FROM)
                )
                dirty[rp] = dirty.get(rp, False) or sub
        now = time.monotonic()
        if overflow:
            self.overflows += 1
            log.info("%s: inotify queue overflowed; rescanning the tree", self.root)
            found = scan(self.root, one_filesystem=self.one_filesystem)
            self._watch_dirs(found)
            self.settler.observe_tree("", found, now)
            return
        for rp, sub in dirty.items():
            if sub:
                found = scan(self.root, rp, self.one_filesystem)
                self._watch_dirs(found)
                self.settler.observe_tree(rp, found, now)
            else:
                try:
                    s = state_of(os.lstat(os.path.join(self.root, rp) if rp else self.root))
                except OSError:
                    s = None
                self.settler.observe(rp, s, now)

    def close(self) -> None:
        """Close the inotify instance (every watch goes with it)."""
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1
        super().close()


def open_monitor(
    root: str,
    backend: str = "auto",
    settle: float = 1.0,
    interval: float = 2.0,
    one_filesystem: bool = False,
) -> Monitor:
    """A monitor of `root`: `inotify`, `poll`, or `auto` (inotify, else polling)."""
    if backend not in ("auto", "inotify", "poll"):
        raise ValueError(f"unknown monitor backend {backend!r}")
    if backend in ("auto", "inotify"):
        try:
            return InotifyMonitor(root, settle, one_filesystem)
        except inotify.InotifyError as e:
            if backend == "inotify":
                raise
            log.warning("%s; polling every %gs instead", e, interval)
    return PollMonitor(root, settle, interval, one_filesystem)


@contextmanager
def stop_on_signals(mon: Monitor, signals=(signal.SIGTERM, signal.SIGINT)):
    """Within the block, the `signals` append their number to the list yielded
    and wake `mon`'s waiting `changes()`: a daemon's loop ends cleanly."""
    stop: list[int] = []

    def on_signal(signum, frame):
        stop.append(signum)
        mon.wake()

    old = {s: signal.signal(s, on_signal) for s in signals}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)
