"""Garbage collection of object stores: the pack layout (`s3://`) and one
object per block (`s3+blocks://`).

No lock keeps other machines from writing into a bucket, so the protocol
rests on time and on order (docs/GC.md says it for users):

1. *One gc at a time*: the object `gc/lock`, made with a conditional create.
   A lock left by a gc of this host that is no longer running, or older than
   `STALE_LOCK`, is taken over (a kill -9 leaves one behind).
2. *List and age*: every object of the layout is listed and its first
   sighting by a gc kept in `gc/seen`; the object's own time (S3's
   Last-Modified, by the server's clock), when the backend gives it, counts
   if older, so a first gc can collect old objects.  Only objects
   older than the grace period are candidates: the packs and blocks a writer
   is uploading, which no archive state names yet, are young and stay.
3. *Mark* every state of every named archive in the store (`archives/`),
   every `--archive` X.vt elsewhere and every `--root`.  An interior block
   that cannot be read, or a state object that does not parse, stops gc
   before anything is deleted.
4. *Plan and copy*: block objects not marked go.  A pack with no live block
   goes; one with more than `--threshold` of garbage is rewritten: its live
   blocks are copied into new packs, uploaded (data object, then index
   object) and the local index pointed at them before anything is deleted.
   A data object without an index object (a killed writer's or gc's) goes
   once old.
5. *Mark again* (only what states were recorded meanwhile cost anything)
   and spare what that found; then *delete*, a pack's index object before its
   data object (readers trust index objects only), so a kill at any point
   leaves only garbage, which the next gc removes.

What remains open without writers announcing themselves (restic's lock
objects): a writer that found an old, unreferenced block present *before* the
deletes and records a state naming it *after* the second mark (a window of
the deletes' duration) names a block that is gone; `vt fsck` reports it and a
new pack of the same tree uploads it again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import time
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from vtstore.archive import parse_line
from vtstore.errors import FormatError
from vtstore.lifecycle.gc import (
    GCError,
    GCOptions,
    GCReport,
    Phases,
    mark_archive_file,
    mark_roots,
    plan,
    refuse_on_problems,
)
from vtstore.lifecycle.marks import Marker
from vtstore.stores.compact import FileUsage, merge_marks

log = logging.getLogger(__name__)

LOCK = "gc/lock"
LEDGER = "gc/seen"
STALE_LOCK = 86400.0
#: live block octets read and copied at a time when rewriting packs
COPY_BATCH = 16 << 20
DELETES = 16  # requests at once


def layout_store_of(store):
    """The object store (`LayoutStore`) under `store` (through cache and
    progress wrappers), or None.  An encrypting store in between is refused:
    its blocks are named by other hashes than the states'."""
    from vtstore.stores.backends.layout import LayoutStore

    s, seen = store, 0
    while s is not None and seen < 8:
        if isinstance(s, LayoutStore):
            return s
        if type(s).__name__ == "CryptStore":
            raise GCError(f"{store.name}: vt gc of an encrypted store is not supported yet")
        s = getattr(s, "backend", None) or getattr(s, "inner", None)
        seen += 1
    return None


# -- the lock and the ledger ---------------------------------------------------


def _read_json(backend, name: str):
    body = backend.get(name)
    if body is None:
        return None
    try:
        return json.loads(zlib.decompress(body) if body[:1] == b"x" else body)
    except (ValueError, zlib.error):
        return None


def _stale(held) -> bool:
    """Whether lock body `held` belongs to no running gc."""
    if not isinstance(held, dict):
        return True  # unreadable: a torn write
    if time.time() - float(held.get("time", 0)) > STALE_LOCK:
        return True
    if held.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(held.get("pid", 0)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


@contextlib.contextmanager
def bucket_lock(backend):
    """Hold `gc/lock` (see the module docstring)."""
    body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})
    if not backend.put_if_absent(LOCK, body.encode()):
        held = _read_json(backend, LOCK)
        if not _stale(held):
            who = f"{held.get('host')} pid {held.get('pid')}" if isinstance(held, dict) else "?"
            raise GCError(
                f"another vt gc is running on {backend.url} ({who}); if it is not,"
                f" delete the object {LOCK} there"
            )
        backend.delete(LOCK)
        if not backend.put_if_absent(LOCK, body.encode()):
            raise GCError(f"another vt gc started on {backend.url} just now")
    try:
        yield
    finally:
        backend.delete(LOCK)


def first_seen(backend, infos: Iterable, now: float, write: bool) -> dict[str, float]:
    """When a gc first listed each of `infos` (now for a new one; an object
    time the backend gives, if older); the ledger is rewritten with exactly
    these names unless not `write`."""
    old = _read_json(backend, LEDGER)
    old = old.get("seen", {}) if isinstance(old, dict) else {}
    seen = {}
    for o in infos:
        t = old.get(o.name, now)
        mt = getattr(o, "mtime", None)
        seen[o.name] = min(t, mt) if mt is not None else t
    if write:
        body = json.dumps({"version": 1, "seen": seen}, separators=(",", ":")).encode()
        backend.put(LEDGER, zlib.compress(body, 6))
    return seen


# -- marking -------------------------------------------------------------------


def _mark_named(marker: Marker, store, opts: GCOptions, rep: GCReport) -> None:
    """Mark every state object of every named archive kept in the store."""
    uuid = store.meta.get("uuid")
    backend = store.backend
    for name in store.archive_names():
        a = store.named_archive(name)
        names = [o.name for o in backend.list(a.prefix)]
        with ThreadPoolExecutor(max_workers=min(16, max(1, len(names)))) as ex:
            bodies = list(ex.map(backend.get, names))
        for oname, body in zip(names, bodies, strict=True):
            if body is None:
                continue  # forgotten since the listing
            where = f"{backend.url}/{oname}"
            try:
                if a.codec is not None:
                    body = a.codec.decode(body.rstrip(b"\n"))
                e = parse_line(body.decode("utf-8"), f"{where}: ")
            except (FormatError, UnicodeDecodeError, ValueError) as err:
                if not opts.ignore_damaged:
                    marker.problems.append(
                        f"{where}: a damaged state ({err}) may need blocks (or use --ignore-damaged)"
                    )
                continue
            if e.store_id is not None and e.store_id != uuid:
                continue
            rep.states += 1
            marker.dirent(e.dirent, where)


def mark_everything(marker: Marker, store, opts: GCOptions, rep: GCReport) -> None:
    """Mark the named archives' states, `--archive` files' and `--root`s."""
    rep.archives = len(store.archive_names()) + len(opts.archives)
    rep.states = 0
    _mark_named(marker, store, opts, rep)
    for path in opts.archives:
        mark_archive_file(marker, path, store, opts, rep)
    mark_roots(marker, opts, rep)


def _unmarked(digests: list[bytes], marks) -> list[bytes]:
    """Those of the sorted `digests` that `marks` lacks (a linear merge)."""
    return [
        d
        for d, _, live in merge_marks(((d, None) for d in digests), marks.sorted_iter())
        if not live
    ]


def _delete_all(backend, names: list[str]) -> None:
    if not names:
        return
    with ThreadPoolExecutor(max_workers=min(DELETES, len(names))) as ex:
        list(ex.map(backend.delete, names))


# -- the two layouts -------------------------------------------------------------


def collect_objects(store, opts: GCOptions | None = None, on_phase=None, on_bytes=None) -> GCReport:
    """Collect the garbage of object store `store` (a `PackStore` or
    `BlockObjectStore`; see the module docstring).  `on_phase(name, total)`
    and `on_bytes(n)` as for `vtstore.lifecycle.gc.collect`."""
    opts = opts or GCOptions()
    rep = GCReport(dry_run=opts.dry_run)
    if store.config is None:
        return rep  # nothing was ever written
    if not opts.dry_run:
        store._check_writable()  # the one check every store has
    work = _collect_packs if store.layout == "packs" else _collect_blocks
    if opts.dry_run:
        return work(store, opts, rep, on_phase, on_bytes)
    with bucket_lock(store.backend):
        return work(store, opts, rep, on_phase, on_bytes)


def _collect_blocks(store, opts: GCOptions, rep: GCReport, on_phase, on_bytes) -> GCReport:
    rep.unit = "block objects"
    phase = Phases(rep, on_phase, "list")
    backend = store.backend
    suffix = "." + store.hashclass.hashname
    name_re = re.compile(rf"[0-9a-f]{{{2 * store.hashclass.digest_size}}}{re.escape(suffix)}")
    infos = [o for o in backend.list("") if name_re.fullmatch(o.name)]
    now = time.time()
    seen = first_seen(backend, infos, now, write=not opts.dry_run)
    older = now - opts.grace
    old = sorted((o for o in infos if seen[o.name] <= older), key=lambda o: o.name)
    size = {o.name: o.size for o in infos}
    rep.disk_before = sum(size.values())
    rep.candidate_files = len(old)
    rep.young = len(infos) - len(old)
    phase("mark")
    marker = Marker(store, on_block=on_bytes)
    mark_everything(marker, store, opts, rep)
    refuse_on_problems(marker)
    rep.interior_reads, rep.marked, rep.mark_bytes = marker.reads, len(marker.marks), 0
    rep.mark_bytes = marker.marks.nbytes()
    phase("plan")
    digests = [bytes.fromhex(o.name[: -len(suffix)]) for o in old]
    dead = _unmarked(digests, marker.marks)
    rep.dead_bytes = sum(size[d.hex() + suffix] for d in dead)
    rep.live_bytes = sum(size[o.name] for o in old) - rep.dead_bytes
    rep.deleted_files = len(dead)
    rep.kept_files = len(old) - len(dead)
    if opts.dry_run or not dead:
        phase("done")
        rep.disk_after = rep.disk_before
        return rep
    phase("sweep")
    marker.new = set()  # what was recorded meanwhile
    mark_everything(marker, store, opts, rep)
    refuse_on_problems(marker)
    gone = [d for d in dead if d not in marker.new]
    rep.late_copies = len(dead) - len(gone)  # spared, not copied: they stay where they are
    rep.deleted_files = len(gone)
    _delete_all(backend, [d.hex() + suffix for d in gone])
    rep.disk_after = rep.disk_before - sum(size[d.hex() + suffix] for d in gone)
    phase("done")
    return rep


def _pack_usage(store, nums: set[int], marks):
    """Live/dead block octets of the local packs `nums` and, per pack, its
    live `(digest, entry)` items and dead digests (one pass over the index)."""
    use = {n: FileUsage(n) for n in nums}
    live: dict[int, list] = {n: [] for n in nums}
    dead: dict[int, list] = {n: [] for n in nums}
    for d, e, is_live in merge_marks(store.index.iter_items(), marks.sorted_iter()):
        u = use.get(e.filenum)
        if u is None:
            continue
        u.count(e, is_live)
        if is_live:
            live[e.filenum].append((d, e))
        else:
            dead[e.filenum].append(d)
    return use, live, dead


def _copy_live(store, items: list, on_bytes) -> tuple[int, int]:
    """Copy the live blocks `items` (`(digest, entry)`) into new packs, in pack
    order, a batch at a time; upload them; point the local index at them."""
    hc = store.hashclass
    items = sorted(items, key=lambda x: (x[1].filenum, x[1].payload_offset, x[1].data_offset))
    before = set(store.index.files())
    blocks = nbytes = 0
    i = 0
    while i < len(items):
        j, size = i, 0
        while j < len(items) and (size < COPY_BATCH or j == i):
            size += items[j][1].data_length
            j += 1
        hs = [hc(d) for d, _ in items[i:j]]
        datas = store.get_many(hs)  # each checked against its hash
        store.write_copies(hs, datas)
        blocks += len(hs)
        nbytes += size
        if on_bytes is not None:
            on_bytes(size)
        i = j
    store.flush()
    store.reload_packs(sorted(set(store.index.files()) - before))
    return blocks, nbytes


def _collect_packs(store, opts: GCOptions, rep: GCReport, on_phase, on_bytes) -> GCReport:
    rep.unit = "packs"
    phase = Phases(rep, on_phase, "list")
    backend = store.backend
    store.drop_gone_packs()
    store.refresh(force=True)
    idx = {o.name[len("index/") :]: o for o in backend.list("index/")}
    data = {o.name[len("data/") :]: o for o in backend.list("data/")}
    now = time.time()
    seen = first_seen(backend, [*idx.values(), *data.values()], now, write=not opts.dry_run)
    older = now - opts.grace

    def old(pid: str) -> bool:
        """Both of the pack's objects (those there are) older than the grace."""
        return all(seen[n] <= older for n in (f"index/{pid}", f"data/{pid}") if n in seen)

    orphans = [pid for pid in data if pid not in idx and old(pid)]
    files = {num: fi for num, fi in store.index.files().items() if fi.uuid in idx}
    cands = {num: fi for num, fi in files.items() if fi.uuid in data and old(fi.uuid)}
    rep.disk_before = sum(o.size for o in (*idx.values(), *data.values()))
    rep.candidate_files = len(cands)
    rep.young = len(files) - len(cands)
    phase("mark")
    marker = Marker(store, on_block=on_bytes)
    mark_everything(marker, store, opts, rep)
    refuse_on_problems(marker)
    rep.interior_reads, rep.marked = marker.reads, len(marker.marks)
    rep.mark_bytes = marker.marks.nbytes()
    phase("plan")
    use, live, dead = _pack_usage(store, set(cands), marker.marks)
    delete, rewrite = plan(use, opts.threshold, rep, max_unused=opts.max_unused)
    if opts.dry_run or not (delete or rewrite or orphans):
        phase("done")
        rep.disk_after = rep.disk_before
        return rep
    phase("copy", sum(use[n].live_bytes for n in rewrite))
    rep.blocks_copied, rep.bytes_copied = _copy_live(
        store, [x for n in sorted(rewrite) for x in live[n]], on_bytes
    )
    phase("sweep")
    marker.new = set()  # what was recorded meanwhile
    mark_everything(marker, store, opts, rep)
    refuse_on_problems(marker)
    doomed = delete | rewrite
    late = [(d, store.index.get(d)) for n in doomed for d in dead[n] if d in marker.new]
    late = [(d, e) for d, e in late if e is not None and e.filenum in doomed]
    if late:
        b, n = _copy_live(store, late, None)
        rep.late_copies = b
        rep.blocks_copied += b
        rep.bytes_copied += n
    drop = []
    for num in sorted(doomed):
        stuck = [d for d, _ in live[num] if (e := store.index.get(d)) and e.filenum == num]
        stuck += [d for d, _ in late if (e := store.index.get(d)) and e.filenum == num]
        if stuck:  # a copy did not land: keep the pack (never lose a block)
            log.warning("gc: pack %s keeps %d live blocks; kept", cands[num].uuid, len(stuck))
            continue
        drop.append(num)
    # index objects first: a kill between leaves data objects without one (garbage)
    _delete_all(backend, [f"index/{cands[n].uuid}" for n in drop])
    _delete_all(backend, [f"data/{cands[n].uuid}" for n in drop] + [f"data/{p}" for p in orphans])
    store.forget_packs(drop)
    rep.deleted_files = len([n for n in drop if n in delete])
    rep.rewritten_files = len([n for n in drop if n in rewrite])
    rep.disk_after = sum(o.size for k in ("index/", "data/") for o in backend.list(k))
    phase("done")
    return rep
