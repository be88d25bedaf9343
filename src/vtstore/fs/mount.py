"""Running a mount: recording states in the archive, the ticker, signals, `-e`.

A `Mount` owns a `FileSystem` and where its states go: an archive (`X.vt`)
gets a new line whenever a sync finds the tree changed; a mount of a dirent
ref only remembers its newest state (printed at unmount).  States are recorded
on fsync/fsyncdir, by the ticker every `sync_interval` seconds, on an explicit
`x-vt-control sync`, and at unmount -- each time only if something changed.
With exclude rules, what they match lives in the mount's scratch only and is
absent from the recorded states.
For a mount of a sub-path the new subtree is put back into the archive's top.
"""

from __future__ import annotations

import logging
import signal
import threading

import trio

from vtstore.archive import store_identity
from vtstore.errors import FormatError, VTError
from vtstore.tree.dir import decode_dir_data, make_dir, read_dir_data
from vtstore.tree.dirent import Dirent

log = logging.getLogger(__name__)


def replace_at(top: Dirent, path: tuple[str, ...], new: Dirent, store) -> Dirent:
    """`top` with the dirent at `path` below it replaced by `new` (renamed to fit).

    A loop, not recursion: `path` may be thousands of levels deep.
    """
    if not path:
        return new.renamed(top.name)
    # down: each directory on the way and its entries
    chain: list[tuple[Dirent, list[Dirent], bytes | None, int]] = []
    d = top
    for part in path:
        if not d.is_dir:
            raise FormatError(f"{'/'.join(path)}: {d.name or 'top'} is not a directory")
        entries, salt = (
            decode_dir_data(read_dir_data(d.block, store)) if d.block is not None else ([], None)
        )
        i = next((k for k, e in enumerate(entries) if e.name == part), None)
        if i is None:
            raise FormatError(f"{'/'.join(path)}: no entry {part!r}")
        chain.append((d, entries, salt, i))
        d = entries[i]
    # up: re-encode each directory with its changed entry
    cur = new
    for d, entries, salt, i in reversed(chain):
        entries[i] = cur.renamed(entries[i].name)
        cur = make_dir(entries, store, name=d.name, meta=d.meta, salt=salt, uuid=d.uuid, ext=d.ext)
    return cur


class Mount:
    """A `FileSystem` and the place its states are recorded."""

    def __init__(
        self, fs, archive=None, top: Dirent | None = None, subpath=(), comment=None, filters=None
    ):
        self.fs = fs
        # exclude rules (`vtstore.tree.filters.Filters`): what they match is
        # never stored, its writes stay in the scratch (`Storing.left_out`)
        fs.filters = filters
        self.archive = archive
        self.top = top  # the archive state the mount started from
        self.subpath = tuple(subpath)
        self.comment = comment
        self.last: Dirent | None = top
        # three-way merge with states others record meanwhile (docs/FILESYSTEM.md):
        # `own` is this mount's tree as last recorded (the merge base of its next
        # change), `recorded` what it appended last (its own tree, or a merge)
        self.own: Dirent | None = top
        self.recorded: Dirent | None = top
        self.merged = False
        self.conflicts: list[str] = []
        self.states = 0
        self._lock = threading.Lock()
        fs.on_sync = None

    def _merged(self, full: Dirent) -> tuple[Dirent, str | None]:
        """What to record for the mount's tree `full`: itself, or, once another
        writer recorded a state since this mount's last one, the three-way merge
        of this mount's changes into the archive's latest state."""
        from vtstore.tree.merge import merge3

        latest = self.archive.last()
        theirs = latest.dirent if latest is not None else None
        if theirs is None or (not self.merged and theirs == self.recorded):
            self.own = self.recorded = full
            return full, self.comment
        merged, conflicts = merge3(self.own, full, theirs, self.fs.store)
        self.fs.backend.flush()
        self.merged = True
        self.own, self.recorded = full, merged
        self.conflicts += conflicts
        note = f"merged with state {latest.short_id}" if hasattr(latest, "short_id") else "merged"
        if conflicts:
            shown = ", ".join(conflicts[:5]) + (", ..." if len(conflicts) > 5 else "")
            note += f"; conflicts kept as *.vt-conflict: {shown}"
            log.warning("%s: %s", self.archive.path, note)
        return merged, f"{self.comment}; {note}" if self.comment else note

    def sync(self) -> bool:
        """Store every change and record a new state if the tree changed."""
        with self._lock:
            if self.fs.readonly:
                return False
            sub = self.fs.sync()
            full = sub
            if self.subpath and self.top is not None:
                full = replace_at(self.top, self.subpath, sub, self.fs.store)
                # hard-linked files outside the sub-path whose content changed in it
                outside, self.fs.outside_changes = self.fs.outside_changes, {}
                for path, d in sorted(outside.items()):
                    full = replace_at(full, path, d, self.fs.store)
                self.fs.backend.flush()
            if full == self.last:
                return False
            if self.archive is not None:
                state, comment = self._merged(full)
                self.archive.update(state, comment=comment, store_id=store_identity(self.fs.store))
            self.last = full
            if self.subpath:
                self.top = full
            self.states += 1
            log.info("recorded state %s", full)
            return True


async def _ticker(mount: Mount, interval: float) -> None:
    while True:
        await trio.sleep(interval)
        try:
            await trio.to_thread.run_sync(mount.sync)
        except Exception:
            log.exception("periodic sync failed")


async def _signals(stopped: list) -> None:
    import pyfuse3

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as sigs:
        async for sig in sigs:
            log.info("signal %d: unmounting", sig)
            stopped.append(sig)
            pyfuse3.terminate()


async def _command(command: str, status: list) -> None:
    import pyfuse3

    try:
        r = await trio.run_process(command, shell=True, check=False)
        status.append(r.returncode)
    except Exception as e:
        log.error("running %r: %s", command, e)
        status.append(127)
    finally:
        pyfuse3.terminate()


def _control_server(mount: Mount | None, mountpoint: str):
    """The mount's control socket (`vtstore.control.live`), listening; None if
    there is no mount to control or the socket cannot be made (logged)."""
    if mount is None:
        return None
    from vtstore.control.live import ControlServer

    server = ControlServer(mount, mountpoint)
    try:
        server.start()
    except (OSError, VTError) as e:
        log.warning("no control socket: %s", e)
        return None
    return server


def serve(
    ops,
    mount: Mount | None,
    mountpoint: str,
    options: set[str],
    sync_interval: float = 60.0,
    command: str | None = None,
    on_ready=None,
) -> int:
    """Mount, serve until unmounted or signalled (or `command` exits), sync, unmount.

    Returns the command's exit status with `command`, else 0.
    """
    import pyfuse3

    status: list = []
    stopped: list = []

    async def main():
        async with trio.open_nursery() as n:
            n.start_soon(_signals, stopped)
            if mount is not None and sync_interval and sync_interval > 0:
                n.start_soon(_ticker, mount, sync_interval)
            if command is not None:
                n.start_soon(_command, command, status)
            if on_ready is not None:
                on_ready()
            await pyfuse3.main()
            n.cancel_scope.cancel()

    # made before the mount exists: looking at the mount point afterwards would
    # wait for this process to answer the kernel
    control = _control_server(mount, mountpoint)
    try:
        pyfuse3.init(ops, mountpoint, options)
    except BaseException:
        if control is not None:
            control.stop()
        raise
    try:
        trio.run(main)
    finally:
        try:
            if control is not None:
                control.stop()
            if mount is not None:
                mount.sync()
        finally:
            ops.close()
            try:
                pyfuse3.close(unmount=True)
            finally:
                ops.fs.close()
    return status[0] if status else 0
