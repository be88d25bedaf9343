"""A gc killed after some of its copies were indexed leaves the old file with
blocks whose entries point at the copies (superseded copies).  The next gc
must not carry those copies into a new file as part of a whole record: once
the indexed copy dies, the carried one would be a flushed block the index
lacks (fsck's "flushed block missing from the index"), forever."""

from __future__ import annotations

from vtstore.archive import Archive
from vtstore.lifecycle.forget import forget
from vtstore.lifecycle.gc import GCOptions, collect
from vtstore.lifecycle.marks import Marker
from vtstore.lifecycle.policy import Policy
from vtstore.stores import compact
from vtstore.stores.datadir import DataDir

from .conftest import check_archive, pack, write_version


def _marks(dd, state) -> set[bytes]:
    m = Marker(dd)
    m.dirent(state.dirent)
    return set(m.marks.sorted_iter())


def _records(dd) -> dict[tuple[int, int], list]:
    """Every indexed block by record: (filenum, payload_offset) -> [(digest, entry)]."""
    out: dict[tuple[int, int], list] = {}
    for d, e in dd._index.iter_items():
        out.setdefault((e.filenum, e.payload_offset), []).append((d, e))
    return out


def _copies_indexed(dd, items) -> None:
    """Copy the blocks `items` (digest, entry) block by block into a new file
    and point the index at the copies, leaving the old file as it is: what a
    gc killed after its first index commit leaves."""
    c = compact.Copier(dd)
    try:
        c.copy(items, partial={(e.filenum, e.payload_offset) for _, e in items})
    finally:
        c.finish()


def _fsck_problems(dd_path):
    with DataDir(dd_path) as s:
        return s.fsck().problems


def test_superseded_copies_are_not_carried_by_a_whole_record_copy(tmp_path):
    dd_path, arch, tree = tmp_path / "dd", str(tmp_path / "t.vt"), tmp_path / "t"
    with DataDir(dd_path, data_file_size=1 << 20) as s:
        for v in range(4):
            write_version(tree, v, files=40, size=24_000)
            pack(s, arch, tree)
    opts = GCOptions(grace=0, threshold=0.0)
    with DataDir(dd_path, data_file_size=1 << 20) as s:
        states = list(Archive(arch).entries())
        marks = [_marks(s, st) for st in states]
        # X: reachable from states 0 and 1 only (dies when both are forgotten);
        # Y: from every state; Z: from state 0 only (dies first)
        only01 = (marks[0] & marks[1]) - marks[2] - marks[3]
        every = marks[0] & marks[1] & marks[2] & marks[3]
        only0 = marks[0] - marks[1] - marks[2] - marks[3]
        p = len(next(iter(every)))  # marks may keep digest prefixes
        recs = _records(s)
        by_file: dict[int, list] = {}
        for key, items in recs.items():
            by_file.setdefault(key[0], []).append((key, items))
        pick = None
        for _num, rs in sorted(by_file.items()):
            has_z = any(d[:p] in only0 for _, items in rs for d, _ in items)
            for key, items in rs:
                kinds = [d[:p] in only01 for d, _ in items]
                fine = all(d[:p] in every or d[:p] in only01 for d, _ in items)
                if has_z and fine and any(kinds) and not all(kinds):
                    pick = (key, items)
                    break
            if pick:
                break
        assert pick is not None, "no record with both kinds of block in a file with garbage"
        key, items = pick
        xs = [(d, e) for d, e in items if d[:p] in only01]
        # the state a gc killed after indexing its copies of the Xs leaves behind
        _copies_indexed(s, xs)
        assert all(s._index.get(d).filenum != key[0] for d, _ in xs)
    assert _fsck_problems(dd_path) == []
    # forget state 0: Z dies, X's old file is rewritten (X still live)
    forget(Archive(arch), Policy(last=3))
    with DataDir(dd_path, data_file_size=1 << 20) as s:
        collect(s, opts)
    assert check_archive(dd_path, arch) == 3
    assert _fsck_problems(dd_path) == []
    # forget state 1: X dies; its indexed copy goes
    forget(Archive(arch), Policy(last=2))
    with DataDir(dd_path, data_file_size=1 << 20) as s:
        collect(s, opts)
    assert check_archive(dd_path, arch) == 2
    assert _fsck_problems(dd_path) == []


def _history(tmp_path, states=4):
    dd_path, arch, tree = tmp_path / "dd", str(tmp_path / "t.vt"), tmp_path / "t"
    with DataDir(dd_path, data_file_size=1 << 20) as s:
        for v in range(states):
            write_version(tree, v, files=40, size=24_000)
            pack(s, arch, tree)
    return dd_path, arch


def test_files_an_interrupted_gc_was_rewriting_are_finished(tmp_path):
    """Killed after indexing copies of a file's live blocks: fsck stays clean
    (the superseded copies are notes), and the next gc rewrites the file even
    below its threshold, leaving nothing superseded behind."""
    dd_path, arch = _history(tmp_path)
    with DataDir(dd_path, data_file_size=1 << 20) as s:
        files = s._index.files()
        num = min(files)
        items = [(d, e) for d, e in s._index.iter_items() if e.filenum == num]
        compact.mark_rewriting(s, [files[num].uuid])
        _copies_indexed(s, items[: len(items) // 2])
    # every state forgotten but the last: the copies die, the old ones with them
    forget(Archive(arch), Policy(last=1))
    with DataDir(dd_path, data_file_size=1 << 20) as s:
        # a gc that only deletes the copies' file (threshold 1: no rewrite)
        rep = collect(s, GCOptions(grace=0, threshold=1.0))
        assert num not in s._index.files(), "the unfinished file was kept"
        assert compact.rewriting(s) == set()
        assert rep.rewritten_files + rep.deleted_files >= 1
    assert check_archive(dd_path, arch) == 1
    assert _fsck_problems(dd_path) == []


def test_fsck_counts_superseded_copies_as_notes(tmp_path):
    dd_path, arch = _history(tmp_path, states=2)
    with DataDir(dd_path, data_file_size=1 << 20) as s:
        files = s._index.files()
        num = min(files)
        items = [(d, e) for d, e in s._index.iter_items() if e.filenum == num][:3]
        compact.mark_rewriting(s, [files[num].uuid])
        # the copies indexed, then gone (as if a later gc dropped them)
        _copies_indexed(s, items)
        copies = {s._index.get(d).filenum for d, _ in items}
        for n in copies:
            s._index.delete_file_entries(n, [d for d, _ in items])
            s._index.commit()
    with DataDir(dd_path) as s:
        rep = s.fsck()
    assert rep.problems == []
    assert any("superseded copies" in n for n in rep.notes), rep.notes
    # without the journal the same blocks are a problem (lost entries)
    (dd_path / compact.REWRITING).unlink()
    assert [p.detail for p in _fsck_problems(dd_path)] == [
        "flushed block missing from the index"
    ] * 3


def test_a_writer_does_not_adopt_a_file_a_killed_gc_dropped(tmp_path):
    dd_path, arch = _history(tmp_path, states=1)
    with DataDir(dd_path) as s:
        files = s._index.files()
        num = min(files)
        fi = files[num]
        path = s.data_file_path(fi)
        ds = [d for d, e in s._index.iter_items() if e.filenum == num]
        # drop_files killed between the index transaction and the unlink
        compact._journal(s, [fi.uuid])
        s._index.delete_file_entries(num, ds)
        s._index.commit()
    with DataDir(dd_path) as s:
        s.add(b"a new block, so that a writer opens")
        s.flush()
        assert fi.uuid not in {f.uuid for f in s._index.files().values()}
        assert all(not s._index.contains(d) for d in ds)
    assert path.exists()
    with DataDir(dd_path) as s:
        assert compact.finish_pending(s) == 1
    assert not path.exists()


def test_whole_records_are_still_copied_whole(tmp_path):
    """The completeness check passes complete records, plain and zstd."""
    import random

    rnd = random.Random(3)
    text = b"".join(b"line %d\n" % i for i in range(4000))
    blocks = [rnd.randbytes(8192) for _ in range(64)] + [
        text[i : i + 8000] + b"%d" % i for i in range(0, 30000, 1000)
    ]
    with DataDir(tmp_path / "dd") as s:
        s.add_many(blocks)
        s.flush()
        items = list(s._index.iter_items())
        recs = {(e.filenum, e.payload_offset) for _, e in items}
        flags = {e.flags & 3 for _, e in items}
        assert flags == {0, 1}
        c = compact.Copier(s)
        try:
            c.copy(items)
        finally:
            c.finish()
        assert c.stats.whole_records == len(recs)
        got = s.get_many([s.hashclass.from_data(b) for b in blocks])
    assert got == blocks


def test_copies_a_killed_gc_wrote_but_never_indexed_go_with_their_file(tmp_path):
    """A gc killed after writing copies into its new file but before indexing
    any: a writer then adopts that file (its tail indexed first, which skips
    blocks the index names elsewhere) and appends to it.  The unindexed copies
    must not outlive their block there: once it dies, each would be a flushed
    block the index lacks ("flushed block missing from the index", forever:
    the file stays live for what the writer appended)."""
    import os
    import time

    dd_path, arch = _history(tmp_path)
    tree = tmp_path / "t"
    with DataDir(dd_path, data_file_size=1 << 20) as s:
        compact.seal_idle(s, time.time() + 60)  # the copies' file: the one a writer adopts
        marks = [_marks(s, st) for st in Archive(arch).entries()]
        p = len(next(iter(marks[3])))
        only01 = (marks[0] & marks[1]) - marks[2] - marks[3]
        xs = [(d, e) for items in _records(s).values() for d, e in items if d[:p] in only01]
        assert xs, "no block reachable from states 0 and 1 only"
        num = xs[0][1].filenum
        xs = [(d, e) for d, e in xs if e.filenum == num]
        compact.mark_rewriting(s, {s._index.files()[num].uuid})  # as gc does first
        c = compact.Copier(s)
        c.copy(xs, partial={(e.filenum, e.payload_offset) for _, e in xs})
        raw = c._raw
        assert raw is not None and raw.committed < raw.off  # written, none indexed
        made = raw.fi.num
        os.close(raw.fd)  # the kill: nothing committed, the file's flock gone
        c._raw = None
    with DataDir(dd_path, data_file_size=1 << 20) as s:  # a writer adopts it
        write_version(tree, 4)
        pack(s, arch, tree)
        assert any(e.filenum == made for _, e in s._index.iter_items())
    opts = GCOptions(grace=0, threshold=0.0, max_unused=0.0)
    with DataDir(dd_path, data_file_size=1 << 20) as s:
        collect(s, opts)
    assert check_archive(dd_path, arch) == 5
    assert _fsck_problems(dd_path) == []
    forget(Archive(arch), Policy(last=3))  # the Xs die
    with DataDir(dd_path, data_file_size=1 << 20) as s:
        collect(s, opts)
    assert check_archive(dd_path, arch) == 3
    assert _fsck_problems(dd_path) == []
