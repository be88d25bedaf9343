"""The pack layout over a local-directory backend (fast, no server): reading in
order costs one request per read-ahead window, prefetched; damage in a pack
or an index object is found by fsck and by reads, never returned as data."""

from __future__ import annotations

import os
import random

import pytest

from vtstore.errors import CorruptBlockError
from vtstore.stores.backends.localdir import LocalDirBackend
from vtstore.stores.backends.packs import PackStore


class CountingBackend(LocalDirBackend):
    """A local backend that counts ranged reads."""

    ranges = 0

    def get_range(self, name, start, end):
        CountingBackend.ranges += 1
        return super().get_range(name, start, end)


def blocks(n: int, seed: int = 1) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(rnd.randrange(2000, 12000)) for _ in range(n)]


def test_reading_in_order_is_one_request_per_window(tmp_path):
    data = blocks(600)  # about 4 MiB
    with PackStore(LocalDirBackend(tmp_path / "o"), tmp_path / "c1", pack_size=2 << 20) as s:
        hs = s.add_many(data)
    CountingBackend.ranges = 0
    with PackStore(
        CountingBackend(tmp_path / "o"), tmp_path / "c2", readahead=1 << 20, read_cache=32 << 20
    ) as s:
        for h, d in zip(hs, data, strict=True):
            assert s[h] == d
        total = sum(o.size for o in s.backend.list("data/"))
    windows = total // (1 << 20) + 2 * 3  # plus a partial window per pack
    assert CountingBackend.ranges <= windows, (CountingBackend.ranges, windows)


def test_random_reads_and_a_small_cache(tmp_path):
    data = blocks(300, seed=2)
    with PackStore(LocalDirBackend(tmp_path / "o"), tmp_path / "c1", pack_size=1 << 20) as s:
        hs = s.add_many(data)
    with PackStore(
        LocalDirBackend(tmp_path / "o"), tmp_path / "c2", readahead=64 * 1024, read_cache=256 * 1024
    ) as s:
        order = list(range(len(hs)))
        random.Random(3).shuffle(order)
        for i in order:
            assert s[hs[i]] == data[i]


def test_flipped_pack_byte_is_damage_not_data(tmp_path):
    data = blocks(200, seed=4)
    with PackStore(LocalDirBackend(tmp_path / "o"), tmp_path / "c1", compress=False) as s:
        hs = s.add_many(data)
    (pack,) = (tmp_path / "o" / "data").iterdir()
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    os.chmod(pack, 0o600)
    pack.write_bytes(bytes(raw))
    with PackStore(LocalDirBackend(tmp_path / "o"), tmp_path / "c2") as s:
        rep = s.fsck()
        assert not rep.ok and rep.blocks < len(data)
        bad = 0
        for h, d in zip(hs, data, strict=True):
            try:
                assert s[h] == d
            except CorruptBlockError:
                bad += 1
        assert 0 < bad < len(data)


def test_damaged_index_object_is_skipped_and_reported(tmp_path, caplog):
    data = blocks(50, seed=5)
    with PackStore(LocalDirBackend(tmp_path / "o"), tmp_path / "c1") as s:
        hs = s.add_many(data)
    (idx,) = (tmp_path / "o" / "index").iterdir()
    raw = bytearray(idx.read_bytes())
    raw[10] ^= 1
    idx.write_bytes(bytes(raw))
    with PackStore(LocalDirBackend(tmp_path / "o"), tmp_path / "c2") as s:
        assert hs[0] not in s  # the blocks of that pack are not known: not wrong
        assert "CRC" in caplog.text
        rep = s.fsck()
        assert not rep.ok and "CRC" in str(rep.problems[0])


def test_hashclass_and_layout_are_kept(tmp_path):
    from vtstore.errors import HashClassMismatchError, StoreError
    from vtstore.hashes import Hash_SHA1
    from vtstore.stores.backends.objects import BlockObjectStore

    with PackStore(LocalDirBackend(tmp_path / "o"), tmp_path / "c", hashclass=Hash_SHA1) as s:
        s.add(b"x")
    with pytest.raises(HashClassMismatchError):
        PackStore(LocalDirBackend(tmp_path / "o"), tmp_path / "c2", hashclass=None).close() or (
            PackStore(
                LocalDirBackend(tmp_path / "o"),
                tmp_path / "c3",
                hashclass=__import__("vtstore.hashes").hashes.Hash_BLAKE3,
            )
        )
    with pytest.raises(StoreError, match="not blocks"):
        BlockObjectStore(LocalDirBackend(tmp_path / "o"))
