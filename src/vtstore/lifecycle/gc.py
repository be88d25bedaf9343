"""Garbage collection of a datadir: mark, copy, then a short exclusive sweep.

The protocol (docs/GC.md says it for users):

1. *Seal and snapshot.*  Idle unsealed data files last written before the grace
   period are sealed; the candidates are the sealed files last written before
   it, listed now.  No block is ever added to a sealed file, so every block in
   a candidate predates the mark: blocks written after gc started are never
   touched, and neither is anything written within the grace period (blocks a
   `vt save` may have printed a ref to that no archive records yet).
2. *Mark* (no lock beyond the shared one every open store holds; packs go on):
   every state of every archive the store knows (`registry.known_archives`:
   named archives and the registered `X.vt` files, plus `--archive`), and every
   `--root`.  Any interior block that cannot be read stops gc before anything
   is deleted.
3. *Copy* (still shared): the live blocks of the candidates that are mostly
   garbage are copied into new data files, the index pointed at the copies.
4. *Sweep* (the datadir lock taken exclusively: it waits for the stores open
   elsewhere, such as a running `vt pack`, to close, and holds new ones off
   only for this step): the archives and roots are marked again (only what was
   added since costs anything), so a state recorded meanwhile, even one whose
   pack deduplicated against a block of a doomed file, is seen; such blocks are
   copied too.  Then the doomed files' index entries are deleted and the files
   unlinked.  A pack holds its store open until its state is in the archive,
   so no pack can be between "found the block present" and "recorded it".
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import time
from dataclasses import dataclass, field

from vtstore.archive import archive_in
from vtstore.errors import StoreError, VTError
from vtstore.lifecycle.marks import Marker, MarkSet
from vtstore.lifecycle.registry import known_archives
from vtstore.stores import compact
from vtstore.stores.progress import human_size as _size
from vtstore.tree.dirent import Dirent

log = logging.getLogger(__name__)

DEFAULT_GRACE = 3600.0
DEFAULT_THRESHOLD = 0.10
DEFAULT_MAX_UNUSED = 0.05
DEFAULT_WAIT = 600.0


class GCError(VTError):
    """Garbage collection that stopped before deleting anything."""

    exit_code = 1


@dataclass
class GCOptions:
    """What `collect` does: see `vt gc --help`."""

    grace: float = DEFAULT_GRACE
    threshold: float = DEFAULT_THRESHOLD
    #: the share of garbage the collected files may keep (restic's --max-unused)
    max_unused: float = DEFAULT_MAX_UNUSED
    wait: float = DEFAULT_WAIT
    dry_run: bool = False
    roots: list = field(default_factory=list)  # Dirent or Block values
    archives: list[str] = field(default_factory=list)
    ignore_damaged: bool = False


@dataclass
class GCReport:
    """What `collect` found and did (sizes in octets)."""

    dry_run: bool = False
    archives: int = 0
    states: int = 0
    roots: int = 0
    marked: int = 0
    mark_bytes: int = 0
    interior_reads: int = 0
    candidate_files: int = 0
    deleted_files: int = 0
    rewritten_files: int = 0
    kept_files: int = 0
    live_bytes: int = 0
    dead_bytes: int = 0
    left_dead_bytes: int = 0  # garbage in kept files, allowed by max_unused or threshold
    blocks_copied: int = 0
    bytes_copied: int = 0
    late_copies: int = 0
    disk_before: int = 0
    disk_after: int = 0
    seconds: dict = field(default_factory=dict)
    #: what `candidate_files` and the others count: data files, packs, block objects
    unit: str = "data files"
    young: int = 0  # left alone: written within the grace period

    @property
    def freed(self) -> int:
        return max(self.disk_before - self.disk_after, 0)

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["freed"] = self.freed
        return d

    def lines(self) -> list[str]:
        verb = "would delete" if self.dry_run else "deleted"
        out = [
            f"marked {self.marked:,} blocks reachable from {self.states:,} states of"
            f" {self.archives} archives and {self.roots} roots"
            f" ({self.interior_reads:,} interior blocks read)",
            f"{self.candidate_files} {self.unit} old enough to collect: {verb}"
            f" {self.deleted_files}, {'would rewrite' if self.dry_run else 'rewrote'}"
            f" {self.rewritten_files}, kept {self.kept_files}",
            f"garbage {_size(self.dead_bytes)} of {_size(self.live_bytes + self.dead_bytes)}"
            f" in those files; copied {self.blocks_copied:,} live blocks"
            f" ({_size(self.bytes_copied)})"
            + (f"; {_size(self.left_dead_bytes)} garbage left" if self.left_dead_bytes else ""),
        ]
        if self.young:
            out.append(
                f"{self.young:,} {self.unit} first seen within the grace period: left alone"
                " (run vt gc again later)"
            )
        if not self.dry_run:
            out.append(
                f"{self.unit}: {_size(self.disk_before)} -> {_size(self.disk_after)}"
                f" ({_size(self.freed)} freed)"
            )
        return out


def _mark_all(marker: Marker, dd, opts: GCOptions, report: GCReport) -> None:
    """Mark every state of every known archive of this store, and the roots."""
    paths = known_archives(dd) + list(opts.archives)
    report.archives = len(paths)
    report.states = 0
    for path in paths:
        mark_archive_file(marker, path, dd, opts, report)
    mark_roots(marker, opts, report)


def mark_archive_file(marker: Marker, path: str, store, opts: GCOptions, report: GCReport) -> None:
    """Mark the states of archive file `path` recorded into `store` (a damaged
    line is a problem unless `--ignore-damaged`)."""
    uuid = store.meta.get("uuid")
    scan = archive_in(path, store).scan()
    damaged = [d for d in scan.damaged if not d.torn]
    if damaged and not opts.ignore_damaged:
        marker.problems.append(
            f"{path} line {damaged[0].lineno}: a damaged state ({damaged[0].reason}) may"
            f" need blocks of this store; vt fsck --repair {path} sets it aside"
            " (or use --ignore-damaged)"
        )
    for n, e in scan.states:
        if e.store_id is not None and e.store_id != uuid:
            continue  # its blocks live in another store
        report.states += 1
        marker.dirent(e.dirent, f"{path} line {n}")


def mark_roots(marker: Marker, opts: GCOptions, report: GCReport) -> None:
    """Mark the `--root` refs."""
    report.roots = len(opts.roots)
    for r in opts.roots:
        if isinstance(r, Dirent):
            marker.dirent(r, "--root")
        else:
            marker.block(r, "--root")


class Phases:
    """`phase(name, total)`: phase `name` starts, the one before it ends (its
    seconds into `rep.seconds`); `on_phase(name, total)` is told."""

    def __init__(self, rep: GCReport, on_phase, first: str):
        self.rep, self.on_phase = rep, on_phase
        self.t, self.current = time.monotonic(), first

    def __call__(self, name: str, total=None) -> None:
        now = time.monotonic()
        self.rep.seconds[self.current] = round(now - self.t, 3)
        self.t, self.current = now, name
        if self.on_phase is not None and name != "done":
            self.on_phase(name, total)


def _lock_exclusive(dd, wait: float) -> None:
    deadline = time.monotonic() + wait
    delay = 0.01
    while True:
        try:
            dd._flock_exclusive()
            return
        except StoreError:
            if time.monotonic() >= deadline:
                dd.unlock_exclusive()
                raise GCError(
                    f"datadir {dd.path} stayed in use by another process (a pack, a mount,"
                    f" a server) for {wait:g}s; nothing was deleted (live blocks already"
                    " copied stay); run vt gc again when it is idle, or give --wait"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def collect(dd, opts: GCOptions | None = None, on_phase=None, on_bytes=None) -> GCReport:
    """Collect the garbage of datadir `dd` (see the module docstring).

    `on_phase(name, total)` is called as each phase starts (`total` in octets
    when known), `on_bytes(n)` as work is done."""
    from vtstore.stores.datadir import DataDir

    opts = opts or GCOptions()
    if not isinstance(dd, DataDir):
        raise GCError(f"vt gc collects datadirs; {dd.name} is not one")
    if not dd.initialized:
        return GCReport(dry_run=opts.dry_run)
    if not opts.dry_run:
        dd.check_can_write("collect garbage")
    if dd.index_damage is not None:
        raise dd.index_damage
    rep = GCReport(dry_run=opts.dry_run)
    if opts.dry_run:
        return _collect(dd, opts, rep, on_phase, on_bytes)
    with one_collector(dd):
        return _collect(dd, opts, rep, on_phase, on_bytes)


@contextlib.contextmanager
def one_collector(dd):
    """One gc at a time per datadir (`gc-lock`, flock'd): two would copy the
    same blocks twice."""
    path = dd.path / "gc-lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GCError(f"another vt gc is running on {dd.path}") from None
        yield
    finally:
        os.close(fd)


def _collect(dd, opts: GCOptions, rep: GCReport, on_phase, on_bytes) -> GCReport:
    phase = Phases(rep, on_phase, "setup")
    rep.disk_before = dd.data_bytes()
    older = time.time() - opts.grace
    if not opts.dry_run:
        compact.seal_idle(dd, older)
    cands = compact.candidates(dd, older)
    rep.candidate_files = len(cands)
    phase("mark")
    marker = Marker(dd, on_block=on_bytes)
    _mark_all(marker, dd, opts, rep)
    refuse_on_problems(marker)
    rep.interior_reads = marker.reads
    marks = marker.marks
    dd._frames.clear()  # the directories' frames: not read again
    phase("plan")
    rep.marked, rep.mark_bytes = len(marks), marks.nbytes()
    sv = compact.survey(dd, cands, marks)
    dd._index.release_pages()  # the survey read every index page once
    use = sv.use
    # the sweep's marking needs only `new` (and the walked-subtree sets)
    marker.marks = marks = MarkSet(dd.hashclass.digest_size)
    # files an interrupted gc was rewriting hold superseded copies: finish them
    unfinished = compact.rewriting(dd)
    forced = {n for n, fi in cands.items() if fi.uuid in unfinished}
    delete, rewrite = plan(use, opts.threshold, rep, forced, opts.max_unused)
    if opts.dry_run or not (delete or rewrite):
        phase("done")
        rep.disk_after = rep.disk_before
        return rep
    doomed = delete | rewrite
    phase("copy", sum(use[n].live_bytes for n in rewrite))
    sv.keep_only(doomed)
    live, dead = sv.live, sv.dead
    if not opts.dry_run:
        compact.mark_rewriting(dd, unfinished | {cands[n].uuid for n in doomed})
    copier = compact.Copier(dd)
    copiers = [copier]
    try:
        in_order = (x for n in sorted(rewrite) for x in live[n].in_file_order())
        copier.copy(in_order, on_bytes, sv.partial, presorted=True)
    finally:
        copier.finish()
    rep.blocks_copied, rep.bytes_copied = copier.stats.blocks, copier.stats.bytes
    phase("sweep")
    _lock_exclusive(dd, opts.wait)
    try:
        compact.finish_pending(dd)
        # what was recorded while we marked and copied
        marker.new = set()
        _mark_all(marker, dd, opts, rep)
        refuse_on_problems(marker)
        late = []
        late_in: dict[int, list[bytes]] = {n: [] for n in doomed}
        with dd._index.snapshot() as snap:
            for num in doomed:
                keep = []
                for d in dead[num]:
                    if d in marker.new:
                        e = snap.get(d)
                        if e is not None and e.filenum == num:
                            late.append((d, e))
                            late_in[num].append(d)
                            continue
                    keep.append(d)
                dead[num] = keep
        if late:
            c2 = compact.Copier(dd)
            copiers.append(c2)
            try:
                c2.copy(late)
            finally:
                c2.finish()
            rep.late_copies = len(late)
            rep.blocks_copied += c2.stats.blocks
            rep.bytes_copied += c2.stats.bytes
        drop = {}
        for num in doomed:
            ds = itertools.chain(live[num].digests(), late_in[num])
            stuck = 0
            while part := list(itertools.islice(ds, 16384)):
                stuck += sum(f == num for f in dd._index.filenums(part))
                dd._index.release_pages()  # a 1 GiB file's lookups touch every page
            if stuck:  # a copy did not land: keep the file (never lose a block)
                log.warning("gc: data file %d keeps %d live blocks; kept", num, stuck)
                continue
            drop[num] = dead[num]
        dd._index.release_pages()
        compact.drop_files(dd, drop, cands)
        dd._index.release_pages()
        # what is still being rewritten: a file kept because a copy did not
        # land (and then this gc's new files too), or an earlier gc's files
        # that were not collectable yet
        known = {fi.uuid for fi in dd._index.files().values()}
        still = compact.rewriting(dd) & known
        if len(drop) == len(doomed):  # no file kept: every copy this gc wrote is indexed
            still -= {u for c in copiers for u in c.made}
        compact.mark_rewriting(dd, still)
    finally:
        dd.unlock_exclusive()
    rep.disk_after = dd.data_bytes()
    phase("done")
    return rep


def plan(
    use: dict,
    threshold: float,
    rep: GCReport,
    forced: set[int] = frozenset(),
    max_unused: float = 0.0,
) -> tuple[set[int], set[int]]:
    """The files (`FileUsage` by number) to delete (no live block) and to
    rewrite; the rest are kept.  Counted into `rep`.

    Files with no live block go.  Of those with at least `threshold` of
    garbage, the most wasteful are rewritten first (the most octets freed per
    octet copied) until the garbage left in all these files is at most
    `max_unused` of their block octets, as restic's `--max-unused` does: the
    last few percent of garbage would cost a copy of nearly whole files.
    `forced` files are always rewritten."""
    delete, rewrite, wanted = set(), set(), []
    for num, u in use.items():
        rep.live_bytes += u.live_bytes
        rep.dead_bytes += u.dead_bytes
        if u.dead_blocks == 0 and u.live_blocks and num not in forced:
            continue
        if u.live_blocks == 0:
            delete.add(num)
        elif num in forced:
            rewrite.add(num)
        elif u.unused >= threshold:
            wanted.append(num)
    left = sum(u.dead_bytes for n, u in use.items() if n not in delete and n not in rewrite)
    allowed = max_unused * (rep.live_bytes + left)
    wanted.sort(key=lambda n: (-use[n].unused, n))
    for num in wanted:
        if left <= allowed:
            break
        rewrite.add(num)
        left -= use[num].dead_bytes
        allowed -= max_unused * use[num].dead_bytes
    rep.left_dead_bytes = left
    rep.deleted_files, rep.rewritten_files = len(delete), len(rewrite)
    rep.kept_files = len(use) - len(delete) - len(rewrite)
    return delete, rewrite


def refuse_on_problems(marker: Marker) -> None:
    """Stop (`GCError`) if marking met a block it could not read."""
    if marker.problems:
        more = f" (and {len(marker.problems) - 1} more)" if len(marker.problems) > 1 else ""
        raise GCError(
            f"marking found a problem, so nothing was deleted: {marker.problems[0]}{more};"
            " run vt fsck"
        )
