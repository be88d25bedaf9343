"""Corrupt bytes in data files: detected on read, found by fsck, fixed by
--repair; the `vt fsck` and `vt reindex` exit codes."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from vtstore.errors import CorruptBlockError, StoreError
from vtstore.stores.datadir import DataDir
from vtstore.stores.index import IndexEntry


def text_block(i: int) -> bytes:
    line = b"%05d: all work and no play makes jack a dull boy\n" % i
    return line * (40 + i % 90)


def fill(path, n=200, plain=False):
    """A datadir with `n` blocks; `plain` makes them incompressible."""
    rnd = random.Random(n)
    blocks = [rnd.randbytes(3000 + i) if plain else text_block(i) for i in range(n)]
    with DataDir(path) as s:
        hs = s.add_many(blocks)
    return hs, blocks


def entries(path, hs):
    with DataDir(path, readonly=True) as s:
        return {h: s._index.get(h) for h in hs}, {
            n: s.data_file_path(fi) for n, fi in s._index.files().items()
        }


def flip(file, offset: int) -> None:
    with open(file, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def vt(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", *args], env=env, capture_output=True, text=True
    )


@pytest.mark.parametrize("plain", [False, True], ids=["zstd", "plain"])
def test_flipped_byte_detected_on_read_and_by_fsck(tmp_path, plain):
    path = tmp_path / "dd"
    hs, blocks = fill(path, plain=plain)
    ents, files = entries(path, hs)
    e: IndexEntry = ents[hs[57]]
    assert (e.flags & 3 == 0) == plain
    if plain:  # a byte of block 57 itself
        flip(files[e.filenum], e.payload_offset + e.data_offset + 5)
    else:  # a byte of the compressed frame holding block 57
        flip(files[e.filenum], e.payload_offset + e.payload_length // 3)
    in_record = [h for h in hs if ents[h].payload_offset == e.payload_offset]
    with DataDir(path) as s:
        bad = []
        for h in in_record:
            try:
                s[h]
            except CorruptBlockError as x:
                assert str(h) in str(x)
                bad.append(h)
        assert bad, "no block of the damaged record failed its check"
        if plain:
            assert bad == [hs[57]]
        victim = bad[0]
        # blocks in other records are untouched
        others = [h for h in hs if ents[h].payload_offset != e.payload_offset]
        assert others and all(s[h] == blocks[hs.index(h)] for h in others)
        rep = s.fsck()
        assert not rep.ok
        assert any(p.hashcode == victim for p in rep.problems)
        assert any("CRC" in p.detail for p in rep.problems)
        rep = s.fsck(repair=True)
        assert rep.repaired
        # the repaired store is clean, keeps every block that still verified
        rep2 = s.fsck()
        assert rep2.ok, rep2.lines()
        for h in bad:
            assert h not in s
        for h, b in zip(hs, blocks, strict=True):
            if h not in bad:
                assert s[h] == b
        # and the victim can simply be added again
        s.add(blocks[hs.index(victim)])
        assert s[victim] == blocks[hs.index(victim)]


def test_damaged_record_header_resyncs(tmp_path):
    path = tmp_path / "dd"
    hs, blocks = fill(path, n=400)
    ents, files = entries(path, hs)
    offs = sorted({e.payload_offset for e in ents.values()})
    assert len(offs) >= 3
    # clobber the length varint of the second record: the scan must find the third
    file = files[ents[hs[0]].filenum]
    with open(file, "r+b") as f:
        f.seek(offs[1] - 2)
        f.write(b"\xff\xff")
    with DataDir(path) as s:
        rep = s.fsck()
        assert not rep.ok
        lost = {p.hashcode for p in rep.problems if p.hashcode is not None}
        assert lost == {h for h in hs if ents[h].payload_offset == offs[1]}
        s.fsck(repair=True)
        assert s.fsck().ok
        survivors = [h for h in hs if h in s]
        assert len(survivors) >= len(hs) - len(lost)
        assert all(s[h] == blocks[hs.index(h)] for h in survivors)


def test_reindex_rebuilds_a_lost_index(tmp_path):
    import shutil

    path = tmp_path / "dd"
    hs, blocks = fill(path, n=300)
    shutil.rmtree(path / "index")
    with DataDir(path) as s:
        # data files without their index: damage to report, never an empty store
        with pytest.raises(StoreError, match="vt reindex"):
            len(s)
        rep = s.reindex()
        assert rep.ok, rep.lines()
        assert len(s) == 300
        assert all(s[h] == b for h, b in zip(hs, blocks, strict=True))
        assert s.fsck().ok


def test_reindex_reports_damage(tmp_path):
    path = tmp_path / "dd"
    hs, blocks = fill(path, n=300)
    ents, files = entries(path, hs)
    e = ents[hs[10]]
    flip(files[e.filenum], e.payload_offset + 3)
    with DataDir(path) as s:
        rep = s.reindex()
        assert not rep.ok
        assert hs[10] not in s
        assert len(s) < 300


def test_reindex_needs_the_datadir_to_itself(tmp_path):
    from vtstore.errors import StoreError

    path = tmp_path / "dd"
    fill(path, n=5)
    with DataDir(path) as a, DataDir(path) as b:
        assert len(b) == 5
        with pytest.raises(StoreError, match="in use"):
            a.reindex()


def test_cli_fsck_and_reindex_exit_codes(tmp_path, vt_env):
    path = tmp_path / "dd"
    hs, _ = fill(path, n=120)
    r = vt(vt_env, "-S", str(path), "fsck")
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout
    r = vt(vt_env, "-S", str(path), "reindex")
    assert r.returncode == 0, r.stderr
    ents, files = entries(path, hs)
    e = ents[hs[3]]
    flip(files[e.filenum], e.payload_offset + 9)
    victims = [h for h in hs if ents[h].payload_offset == e.payload_offset]
    r = vt(vt_env, "-S", str(path), "fsck")
    assert r.returncode == 1
    assert "damage" in r.stdout and any(str(h) in r.stdout for h in victims)
    r = vt(vt_env, "-S", str(path), "reindex")
    assert r.returncode == 1
    r = vt(vt_env, "-S", str(path), "fsck", "--repair")
    assert r.returncode == 1  # damage was found, even though it is now repaired
    assert "repaired" in r.stdout
    r = vt(vt_env, "-S", str(path), "fsck")
    assert r.returncode == 0, r.stdout
    r = vt(vt_env, "-S", str(path), "fsck", str(tmp_path / "none.vt"))
    assert r.returncode != 0 and "none.vt" in r.stderr


def test_truncated_data_file_is_damage(tmp_path):
    path = tmp_path / "dd"
    hs, _ = fill(path, n=200)
    _, files = entries(path, hs)
    (f,) = files.values()
    size = os.path.getsize(f)
    os.truncate(f, size - 100)  # flushed data gone: not crash residue
    with DataDir(path, readonly=True) as s:
        rep = s.fsck()
        assert not rep.ok
        assert any("flushed" in p.detail for p in rep.problems)


def test_torn_tail_after_flush_is_residue(tmp_path):
    path = tmp_path / "dd"
    hs, blocks = fill(path, n=50)
    _, files = entries(path, hs)
    (f,) = files.values()
    with open(f, "ab") as fh:
        fh.write(b"\x01\x83\xff\x00partial record of a writer that died")
    with DataDir(path) as s:
        rep = s.fsck()
        assert rep.ok, rep.lines()
        assert any("residue" in n for n in rep.notes)
        torn = os.path.getsize(f)
        s.add(b"appended after adoption")  # the writer truncates the residue first
        s.flush()
        assert os.path.getsize(f) < torn + 60
        rep = s.fsck()
        assert rep.ok and not any("residue" in n for n in rep.notes), rep.lines()
        assert all(s[h] == b for h, b in zip(hs, blocks, strict=True))


def test_repair_output_keeps_the_repairs_visible_past_a_long_damage_list(tmp_path, vt_env):
    """Hundreds of damage lines are elided in the middle, but never the lines
    saying what the repair did, nor the summary."""
    path = tmp_path / "dd"
    hs, _ = fill(path, n=1200, plain=True)
    ents, files = entries(path, hs)
    for h in hs[::4]:
        e = ents[h]
        flip(files[e.filenum], e.payload_offset + 7)
    r = vt(vt_env, "-S", str(path), "fsck", "--repair")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    out = r.stdout.splitlines()
    assert sum(x.startswith("damage: ") for x in out) > 10
    assert any(x.startswith("repaired: ") for x in out), r.stdout[-3000:]
    assert "more lines" in r.stdout  # the long list was elided
    assert not out[-1].startswith(("damage: ", "repaired: "))  # the summary last
