"""`vt fsck --repair` never drops a block whose data record is intact: index
entries that disagree with the data are re-derived from the data files, not
declared lost."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from vtstore.stores.datadir import DataDir
from vtstore.stores.index import IndexEntry


def vt(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-q", *args],
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
    )


def fill(path, n):
    rnd = random.Random(n)
    blocks = [
        rnd.randbytes(2000 + i % 3000) if i % 3 else b"text %d\n" % i * (50 + i % 200)
        for i in range(n)
    ]
    with DataDir(path, data_file_size=4 << 20) as s:
        hs = s.add_many(blocks)
    return dict(zip(hs, blocks, strict=True))


def damage_values(mdb, victims: dict, how: str) -> int:
    """Change the stored value of each victim's entry (every copy of it in the
    file, live or stale); return how many were changed."""
    raw = bytearray(open(mdb, "rb").read())
    changed = 0
    for digest, e in victims.items():
        key = bytes(digest) + e.encode()
        at = raw.find(key)
        hit = False
        while at >= 0:
            v = at + len(bytes(digest))
            if how == "pointing-elsewhere":
                # same length, other numbers: a payload offset 1 further on
                bad = e._replace(payload_offset=e.payload_offset + 1).encode()
                if len(bad) != len(e.encode()):
                    bad = e._replace(data_offset=e.data_offset ^ 1).encode()
                if len(bad) != len(e.encode()):
                    break
                raw[v : v + len(bad)] = bad
            else:  # not even decodable: a non-canonical varint
                raw[v] = 0x80
            hit = True
            at = raw.find(key, at + 1)
        changed += hit
    open(mdb, "wb").write(bytes(raw))
    return changed


@pytest.mark.parametrize("how", ["pointing-elsewhere", "undecodable"])
def test_repair_rederives_entries_from_the_data(tmp_path, vt_env, how):
    path = tmp_path / "dd"
    blocks = fill(path, 3000)
    with DataDir(path, readonly=True) as s:
        ents = {h: s._index.get(h) for h in blocks}
    rnd = random.Random(how)
    victims = {h: ents[h] for h in rnd.sample(sorted(blocks, key=bytes), 200)}
    n = damage_values(path / "index" / "data.mdb", victims, how)
    assert n > 100, n
    r = vt(vt_env, "-S", str(path), "fsck")
    assert r.returncode == 1 and "damage" in r.stdout, r.stdout + r.stderr
    r = vt(vt_env, "-S", str(path), "fsck", "--repair")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "lost block" not in r.stdout, r.stdout
    r = vt(vt_env, "-S", str(path), "fsck")
    assert r.returncode == 0, r.stdout + r.stderr
    with DataDir(path, readonly=True) as s:
        assert len(s) == len(blocks)
        bad = [h for h, b in blocks.items() if s.get(h) != b]
    assert not bad, f"{len(bad)} intact blocks lost by the repair"


def test_repair_keeps_intact_blocks_and_drops_only_bad_records(tmp_path, vt_env):
    """Data damage and index damage at once: only the blocks of the damaged
    record are lost, and they are listed."""
    path = tmp_path / "dd"
    blocks = fill(path, 2000)
    with DataDir(path, readonly=True) as s:
        ents = {h: s._index.get(h) for h in blocks}
        files = {n: s.data_file_path(fi) for n, fi in s._index.files().items()}
    hs = sorted(blocks, key=bytes)
    # one record's payload damaged
    e: IndexEntry = ents[hs[7]]
    with open(files[e.filenum], "r+b") as f:
        f.seek(e.payload_offset + 5)
        b = f.read(1)
        f.seek(e.payload_offset + 5)
        f.write(bytes([b[0] ^ 0xFF]))
    in_bad_record = {
        h for h in hs if (ents[h].filenum, ents[h].payload_offset) == (e.filenum, e.payload_offset)
    }
    # and index entries of blocks elsewhere pointing elsewhere
    others = [h for h in hs if h not in in_bad_record]
    victims = {h: ents[h] for h in others[100:160]}
    assert damage_values(path / "index" / "data.mdb", victims, "pointing-elsewhere") > 30
    r = vt(vt_env, "-S", str(path), "fsck", "--repair")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "lost block" in r.stdout
    assert vt(vt_env, "-S", str(path), "fsck").returncode == 0
    with DataDir(path, readonly=True) as s:
        lost = {h for h in hs if s.get(h) is None}
        # only blocks of the bad record (those that still verify are salvaged)
        assert lost and lost <= in_bad_record
        for h in others:
            assert s.get(h) == blocks[h]


def test_a_data_file_replaced_by_a_directory(tmp_path, vt_env):
    """A data file replaced by a directory: one clear line, never a traceback;
    fsck --repair forgets it and keeps every other block."""
    path = tmp_path / "dd"
    blocks = fill(path, 3000)
    with DataDir(path, readonly=True) as s:
        files = {n: s.data_file_path(fi) for n, fi in s._index.files().items()}
        ents = {h: s._index.get(h) for h in blocks}
    assert len(files) >= 2
    victim = files[1]
    os.unlink(victim)
    os.mkdir(victim)
    h = next(h for h in blocks if ents[h].filenum == 1)
    for args in (["cat", f"B{{{h}}}"], ["fsck"], ["reindex"], ["fsck", "--repair"]):
        r = vt(vt_env, "-S", str(path), *args)
        assert r.returncode >= 0 and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) <= 1, (args, r.stderr)
    with DataDir(path, readonly=True) as s:
        for h, b in blocks.items():
            if ents[h].filenum != 1:
                assert s.get(h) == b
