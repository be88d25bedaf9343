"""Push-and-delete pools: a datadir used as a spool (a laptop's store that
syncs when online) sends its sealed data files to another store and drops
them once the destination has confirmed every block.

For each sealed data file, oldest first: the blocks the index places in it are
asked of the destination (`contains_many`, a batch at a time), the missing
ones sent (`add_many`), the destination flushed, and then *every* block of the
file asked again; only when all are confirmed is the file dropped (its index
entries deleted, then the file unlinked: `stores.compact.drop_files`).  The
named archives are pushed first, with their states (`sync.archives`), so the
destination has the trees before the pool forgets their blocks.  The file a
writer has open (unsealed) stays.  A kill at any point loses nothing: a file
is gone locally only after the destination said it holds all of its blocks,
and a killed run just sends again what the destination lacks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from vtstore.errors import StoreError, VTError
from vtstore.stores import compact

BATCH = 512
BATCH_BYTES = 8 << 20


class PoolError(VTError):
    """A push-and-delete that stopped (the files not confirmed were kept)."""

    exit_code = 1


@dataclass
class MoveReport:
    """What `move` did."""

    files: int = 0
    files_dropped: int = 0
    blocks: int = 0
    blocks_sent: int = 0
    bytes_sent: int = 0
    archives: list[str] = field(default_factory=list)
    bytes_freed: int = 0

    def to_json(self) -> dict:
        return dict(self.__dict__)

    def lines(self) -> list[str]:
        return [
            f"pushed {len(self.archives)} archives; {self.files} sealed data files:"
            f" {self.blocks:,} blocks, {self.blocks_sent:,} sent ({self.bytes_sent:,} bytes),"
            f" the rest already there",
            f"dropped {self.files_dropped} data files once confirmed"
            f" ({self.bytes_freed:,} bytes freed locally)",
        ]


def _entries_by_file(dd, nums: set[int]) -> dict[int, list]:
    out: dict[int, list] = {n: [] for n in nums}
    for d, e in dd._index.iter_items():
        lst = out.get(e.filenum)
        if lst is not None:
            lst.append((d, e))
    return out


def _push_file(dd, dst, items: list, rep: MoveReport, on_bytes) -> None:
    hc = dd.hashclass
    i = 0
    while i < len(items):
        chunk, size = [], 0
        while i < len(items) and len(chunk) < BATCH and size < BATCH_BYTES:
            chunk.append(items[i])
            size += items[i][1].data_length
            i += 1
        there = dst.contains_many([hc(d) for d, _ in chunk])
        want = [(d, e) for (d, e), ok in zip(chunk, there, strict=True) if not ok]
        if want:
            datas = [dd._read_entry(hc(d), e) for d, e in want]
            got = dst.add_many(datas)
            if [bytes(h) for h in got] != [d for d, _ in want]:
                raise PoolError(f"{dst.name} stored the blocks under other hashcodes")
            rep.blocks_sent += len(want)
            rep.bytes_sent += sum(len(x) for x in datas)
        if on_bytes is not None:
            on_bytes(size)


def move(
    dd,
    dst,
    push_archives: Callable[[], list[str]] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> MoveReport:
    """Push the sealed data files of datadir `dd` to `dst` and drop each once
    `dst` confirms all its blocks (see the module docstring).
    `push_archives()`, called first, pushes the archives and names them."""
    from vtstore.lifecycle.gc import one_collector

    dd.check_can_write("drop pushed data files")
    with one_collector(dd):
        return _move(dd, dst, push_archives, on_bytes)


def _move(dd, dst, push_archives, on_bytes) -> MoveReport:
    rep = MoveReport()
    if push_archives is not None:
        rep.archives = push_archives()
    files = {n: fi for n, fi in dd._index.files().items() if fi.sealed}
    rep.files = len(files)
    by_file = _entries_by_file(dd, set(files))
    hc = dd.hashclass
    for num in sorted(files):
        items = by_file.pop(num)
        rep.blocks += len(items)
        _push_file(dd, dst, items, rep, on_bytes)
        dst.flush()
        digests = [d for d, _ in items]
        confirmed = all(
            all(dst.contains_many([hc(d) for d in digests[j : j + BATCH]]))
            for j in range(0, len(digests), BATCH)
        )
        if not confirmed:
            raise PoolError(
                f"{dst.name} does not confirm every block of data file"
                f" {dd.data_file_path(files[num]).name}: kept it (and the later ones)"
            )
        try:
            rep.bytes_freed += compact.drop_files(dd, {num: digests}, files)
        except OSError as e:
            raise StoreError(f"dropping a pushed data file: {e.strerror}") from None
        rep.files_dropped += 1
    return rep
