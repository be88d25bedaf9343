"""Archives moving by state: copy the trees of an archive's states to another
store and append them to the destination's archive of the same name.

The order rule: an archive's lines are in time order and stay so.  Only the
source states newer than the destination archive's latest state are appended
(oldest first, after it); a source state at or before that time is not
appended, even if the destination never had it, because appending it would put
an older state after a newer one.  This also deduplicates: pushing the same
archive twice appends nothing the second time, and two sources pushing into one
archive interleave by time as far as the order allows (a state older than what
the other source already pushed is reported as `older`, not appended).  Only
the latest state of the destination is read, so a remote archive (a block
server's `archive_last`/`archive_update`) works as well as a local file.

Two pushes into one archive at once cannot interleave out of time order: the
check and the append are one step under the archive's lock (`Archive.update`
with `if_newer`; for a server's archive, ARCHIVE_UPDATE with `if_newer`).

A state is appended only after its whole tree arrived; a state whose tree had a
bad source block stops the appending there (later states would leave it behind
for good), and is reported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from vtstore.archive import ArchiveEntry, store_identity
from vtstore.errors import VTError
from vtstore.sync.tree import DEFAULT_BATCH, SyncStats, TreeSync


@dataclass
class ArchivePush:
    """What pushing one archive did."""

    source: str
    dest: str
    appended: list[ArchiveEntry] = field(default_factory=list)
    #: states already in the destination (the same when and dirent as one there)
    present: int = 0
    #: states not newer than the destination's latest one, so not appended
    older: int = 0
    #: states held back because their trees could not be copied whole
    held_back: int = 0
    stats: list[SyncStats] = field(default_factory=list)


def dest_archive(dst, name: str):
    """The archive called `name` kept by store `dst` (`vtstore.named_archives`:
    a datadir's `.vt` file, a block server's archive, ...; created by the first
    append), or None when `dst` keeps no named archives."""
    from vtstore.named_archives import NoArchivesError, open_archive

    try:
        return open_archive(dst, name, create=True)
    except NoArchivesError:
        return None


def archive_name(text: str) -> str:
    """The name an archive given as `X.vt` or `[clause]NAME` has in the destination."""
    if text.startswith("[") and "]" in text:
        return text[text.index("]") + 1 :].split("/", 1)[0]
    base = os.path.basename(text.rstrip("/"))
    return base[:-3] if base.endswith(".vt") else base


def source_states(archive) -> list[ArchiveEntry]:
    """Every state of a source archive (local or a server's), oldest first."""
    if not archive.exists():
        raise VTError(f"{archive.path}: no such archive")
    return sorted(archive.entries(), key=lambda e: e.when)


def _last_of(archive) -> ArchiveEntry | None:
    """The latest state of a destination archive; None for none (a missing
    archive too: the first update creates it)."""
    return None if archive is None else archive.last()


def push_archive(
    src,
    dst,
    src_archive,
    dst_archive,
    *,
    full: bool = False,
    dry_run: bool = False,
    force: bool = False,
    batch: int = DEFAULT_BATCH,
    on_progress: Callable[[SyncStats], None] | None = None,
) -> ArchivePush:
    """Copy the states of `src_archive` (blocks in `src`) that `dst_archive` lacks
    into `dst` and append them (see the module docstring).  `dst_archive` None:
    copy the trees of every state, append nothing."""
    res = ArchivePush(str(src_archive), str(dst_archive))
    states = source_states(src_archive)
    last = _last_of(dst_archive)
    todo = []
    for e in states:
        if last is not None and e.when <= last.when:
            if e.when == last.when and str(e.dirent) == str(last.dirent):
                res.present += 1
            else:
                res.older += 1
            continue
        todo.append(e)
    if todo and dst_archive is not None and not dry_run:
        dst_archive.check_store(dst, force=force, last=last)
    # a tree the destination holds whole: each state's walk compares its
    # directories with it (TreeSync.add_dirent), then with the state before
    base = None if last is None or full else _held_whole(dst, last.dirent)
    for i, e in enumerate(todo):
        ts = TreeSync(src, dst, full=full, dry_run=dry_run, batch=batch, on_progress=on_progress)
        label = getattr(src_archive, "path", None) or str(src_archive)
        ts.add_dirent(e.dirent, f"{label}@{e.isotime}", base=base)
        st = ts.run()
        res.stats.append(st)
        if st.problems or st.failed:
            res.held_back = len(todo) - i
            break
        if not dry_run:
            base = e.dirent  # its whole tree is in dst now
        if dst_archive is None or dry_run:
            if dry_run:
                res.appended.append(e)
            continue
        if _append_in_order(dst, dst_archive, e):
            res.appended.append(e)
        else:  # another writer appended a newer state meanwhile
            res.older += 1
    return res


def _held_whole(dst, d):
    """`d` if `dst` holds its top block (and so, as vt writes, its whole
    tree), else None."""
    from vtstore.blocks import HashCodeBlock, IndirectBlock

    b = d.block
    if not isinstance(b, HashCodeBlock | IndirectBlock):
        return None
    return d if dst.contains_many([b.hashcode])[0] else None


def _append_in_order(dst, archive, e: ArchiveEntry) -> bool:
    """Append `e` unless the archive's latest state is now at or after it
    (another push got there first); return whether it was appended.  The check
    and the append are one step under the archive's lock: `Archive.update`
    with `if_newer` for a local archive, ARCHIVE_UPDATE with `if_newer` (the
    server's own lock) for a server's."""
    # asked now: a datadir made by this push has its uuid once written to (a
    # server records its own store's identity and ignores this)
    ident = store_identity(dst)
    done = archive.update(
        e.dirent, e.when, e.uuid, e.name, e.comment, store_id=ident, if_newer=True
    )
    return done is not None
