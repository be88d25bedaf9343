"""`vt fsck --repair` on the pack layout, with real damage to real objects in
SeaweedFS: an index object deleted or byte-flipped, a pack byte-flipped or
truncated, a pack gone, a local index cache that is garbage or names packs
that are gone.  Repair keeps every block that can still be read, says which
are lost, and leaves a store that checks clean (and unpacks, when nothing was
lost)."""

from __future__ import annotations

import random

import pytest

from vtstore.errors import CorruptBlockError, MissingBlockError, ReadOnlyError, StoreError
from vtstore.stores.backends.base import Retrying
from vtstore.stores.backends.packs import PackStore

from .conftest import BUCKET, vt
from .test_s3_cli import make_tree, same_tree


def blocks(n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(rnd.randrange(3000, 9000)) for _ in range(n)]


@pytest.fixture
def packed(tmp_path, weed, prefix):
    """A store of 3 packs (about 1 MiB each) and what is in it."""
    data = blocks(450, seed=11)
    with PackStore(weed.backend(prefix), tmp_path / "c0", pack_size=1 << 20) as s:
        hs = s.add_many(data)
    raw = weed.backend(prefix)
    pids = sorted(o.name[6:] for o in raw.list("index/"))
    assert len(pids) == 3
    return raw, pids, hs, data


def open_store(weed, prefix, tmp_path, cache="c1", **kw):
    return PackStore(Retrying(weed.backend(prefix), max_time=20), tmp_path / cache, **kw)


def readable(s, hs, data) -> list[int]:
    """The positions whose block reads back right (never wrong data)."""
    ok = []
    for i, h in enumerate(hs):
        try:
            got = s[h]
        except (MissingBlockError, CorruptBlockError):
            continue
        assert got == data[i]
        ok.append(i)
    return ok


def test_deleted_index_object_is_written_again_from_its_pack(tmp_path, weed, prefix, packed):
    raw, pids, hs, data = packed
    raw.delete(f"index/{pids[1]}")
    with open_store(weed, prefix, tmp_path) as s:
        assert len(readable(s, hs, data)) < len(hs)  # a fresh cache cannot find them
        rep = s.fsck()
        assert rep.ok and any("without an index object" in n for n in rep.notes)
    with open_store(weed, prefix, tmp_path) as s:
        rep = s.fsck(repair=True)
        assert any(f"index/{pids[1]}: written from its pack" in r for r in rep.repaired), rep
        assert readable(s, hs, data) == list(range(len(hs)))
    with open_store(weed, prefix, tmp_path, cache="c2") as s:
        assert s.fsck().ok
        assert readable(s, hs, data) == list(range(len(hs)))


def test_damaged_index_object_of_an_intact_pack_is_rebuilt(tmp_path, weed, prefix, packed):
    raw, pids, hs, data = packed
    body = bytearray(raw.get(f"index/{pids[0]}"))
    body[40] ^= 0x10
    raw.put(f"index/{pids[0]}", bytes(body))
    with open_store(weed, prefix, tmp_path) as s:
        assert not s.fsck().ok
        rep = s.fsck(repair=True)
        assert any(f"index/{pids[0]}: written from its pack" in r for r in rep.repaired), rep
    with open_store(weed, prefix, tmp_path, cache="c2") as s:
        assert s.fsck().ok
        assert readable(s, hs, data) == list(range(len(hs)))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_pack_is_set_aside_and_its_readable_blocks_kept(
    tmp_path, weed, prefix, packed, damage
):
    raw, pids, hs, data = packed
    pack = bytearray(raw.get(f"data/{pids[2]}"))
    if damage == "flip":
        for at in (len(pack) // 3, len(pack) // 3 + 1):
            pack[at] ^= 0xFF
    else:
        pack = pack[: len(pack) * 2 // 3]
    raw.put(f"data/{pids[2]}", bytes(pack))
    with open_store(weed, prefix, tmp_path) as s:
        before = readable(s, hs, data)
        assert len(before) < len(hs)
        rep = s.fsck()
        assert not rep.ok
    with open_store(weed, prefix, tmp_path) as s:
        rep = s.fsck(repair=True)
        lost = {p.hashcode for p in rep.problems if "block lost" in p.detail}
        assert lost and len(lost) == len(hs) - len(before), (len(lost), len(hs), len(before))
        assert any("set aside" in r for r in rep.repaired)
        assert any("readable blocks written into a new pack" in r for r in rep.repaired)
        after = readable(s, hs, data)
        assert after == before  # every block that could be read still can
        assert {hs[i] for i in range(len(hs)) if i not in after} == lost
    names = {o.name for o in raw.list("")}
    assert f"damaged/{pids[2]}" in names and f"damaged/{pids[2]}.index" in names
    assert f"data/{pids[2]}" not in names and f"index/{pids[2]}" not in names
    with open_store(weed, prefix, tmp_path, cache="c2") as s:
        rep = s.fsck()
        assert rep.ok, rep.lines()
        assert readable(s, hs, data) == before
        s.add_many([data[i] for i in range(len(hs)) if i not in before])  # pushed again
    with open_store(weed, prefix, tmp_path, cache="c3") as s:
        assert s.fsck().ok and readable(s, hs, data) == list(range(len(hs)))


def test_pack_gone_its_index_set_aside_and_blocks_lost(tmp_path, weed, prefix, packed):
    raw, pids, hs, data = packed
    raw.delete(f"data/{pids[0]}")
    with open_store(weed, prefix, tmp_path) as s:
        assert any("missing" in p.detail for p in s.fsck().problems)
        rep = s.fsck(repair=True)
        lost = [p for p in rep.problems if "block lost" in p.detail]
        assert 100 < len(lost) < 200
        assert f"damaged/{pids[0]}.index" in {o.name for o in raw.list("damaged/")}
    with open_store(weed, prefix, tmp_path) as s:
        assert s.fsck().ok
        assert len(readable(s, hs, data)) == len(hs) - len(lost)


def test_local_cache_garbage_or_stale(tmp_path, weed, prefix, packed):
    raw, pids, hs, data = packed
    with open_store(weed, prefix, tmp_path) as s:
        assert readable(s, hs, data) == list(range(len(hs)))
    mdb = tmp_path / "c1" / "index" / "data.mdb"
    mdb.write_bytes(random.Random(1).randbytes(mdb.stat().st_size))
    with open_store(weed, prefix, tmp_path) as s:  # only a cache: rebuilt at open
        assert readable(s, hs, data) == list(range(len(hs)))
    # a pack removed behind an open store's back (another machine's gc or repair)
    with open_store(weed, prefix, tmp_path) as s:
        raw.delete(f"index/{pids[1]}")
        raw.delete(f"data/{pids[1]}")
        rep = s.fsck()
        assert any("names 1 packs that are gone" in n for n in rep.notes), rep.lines()
        rep = s.fsck(repair=True)
        assert any("local index rebuilt" in r for r in rep.repaired)
        assert len(s.index.files()) == 2
    # another removed while no store was open: the next open sees that its
    # cache names a pack without an index object, and loads the cache again
    raw.delete(f"index/{pids[2]}")
    raw.delete(f"data/{pids[2]}")
    with open_store(weed, prefix, tmp_path) as s:
        assert len(s.index.files()) == 1
        rep = s.fsck()
        assert rep.ok, rep.lines()
        gone = [i for i, h in enumerate(hs) if h not in s]
        assert gone
        assert sorted(set(readable(s, hs, data)) | set(gone)) == list(range(len(hs)))


def test_repair_needs_a_writable_store(tmp_path, weed, prefix, packed):
    with open_store(weed, prefix, tmp_path, readonly=True) as s:
        with pytest.raises((ReadOnlyError, StoreError)):
            s.fsck(repair=True)


def test_vt_fsck_repair_cli(tmp_path, s3_env, weed, prefix):
    """As a user: fsck finds the damage (exit 1), --repair fixes what it can and
    says so, then fsck is clean (exit 0) and the tree unpacks whole."""
    src = tmp_path / "src"
    make_tree(src, files=40)
    S = ["-S", f"s3://{BUCKET}/{prefix}"]
    vt(s3_env, *S, "-q", "pack", str(src))
    raw = weed.backend(prefix)
    (pid, *_) = sorted(o.name[6:] for o in raw.list("index/"))
    body = bytearray(raw.get(f"index/{pid}"))
    body[-1] ^= 1  # its CRC
    raw.put(f"index/{pid}", bytes(body))
    fresh = {**s3_env, "XDG_CACHE_HOME": str(tmp_path / "other-machine")}
    r = vt(fresh, *S, "fsck", check=False)
    assert r.returncode == 1 and "damage:" in r.stdout and "CRC" in r.stdout, r.stdout
    r = vt(fresh, *S, "fsck", "--repair", check=False)
    assert "Traceback" not in r.stderr
    assert f"repaired: s3://{BUCKET}/{prefix}/index/{pid}: written from its pack" in r.stdout
    r = vt(fresh, *S, "fsck")
    assert r.returncode == 0 and "ok" in r.stdout
    vt(fresh, *S, "-q", "unpack", f"{src}.vt", str(tmp_path / "out"))
    assert same_tree(src, tmp_path / "out")
