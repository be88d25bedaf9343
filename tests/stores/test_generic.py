"""The generic store suite: every test over every store kind of
`tests/conftest.py:STORE_FACTORIES` and every hash class of `HASHCLASSES`."""

from __future__ import annotations

import bisect
import os
import random

import pytest

from vtstore.errors import HashClassMismatchError, MissingBlockError, ReadOnlyError, StoreError
from vtstore.hashes import Hash_BLAKE3, Hash_SHA1, Hash_SHA256, hash_of_hashcodes


def random_blocks(n: int, seed: int = 1, max_size: int = 20000) -> list[bytes]:
    """`n` distinct blocks: random octets, text-like runs and a few tiny ones."""
    rnd = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"\n", b"    ", b"def ", b"return "]
    out = []
    for i in range(n):
        size = rnd.choice((0, 1, 31, 32, 33)) if i % 50 == 0 else rnd.randrange(1, max_size)
        if i % 3 == 0:
            b = rnd.randbytes(size)
        else:
            parts = []
            total = 0
            while total < size:
                w = rnd.choice(words)
                parts.append(w)
                total += len(w)
            b = b"".join(parts)[:size]
        out.append(b + i.to_bytes(4, "big") if size else b)
    return list(dict.fromkeys(out))


def other_hashclass(hc):
    return Hash_SHA256 if hc is not Hash_SHA256 else Hash_BLAKE3


def test_empty(store_factory):
    with store_factory.open() as s:
        hc = s.hashclass
        assert s.hashclass is store_factory.hashclass
        assert len(s) == 0
        assert list(s.hashcodes()) == []
        h = hc.from_data(b"nothing here")
        assert h not in s
        assert s.get(h) is None
        with pytest.raises(MissingBlockError):
            s[h]
        with pytest.raises(KeyError):
            s[h]
        assert s.hash_of_hashcodes() == (hash_of_hashcodes(hc, []), None)
        assert list(s.hashcodes(start=h, length=5)) == []


def test_add_get_contains(store_factory):
    with store_factory.open() as s:
        hc = s.hashclass
        h = s.add(b"hello, world")
        assert h == hc.from_data(b"hello, world")
        assert type(h) is hc
        assert h in s
        assert s[h] == b"hello, world"
        assert s.get(h) == b"hello, world"
        assert s.add(b"hello, world") == h
        assert len(s) == 1
        # any buffer goes in; the empty block is a block
        h2 = s.add(bytearray(b"from a bytearray"))
        h3 = s.add(memoryview(b"xxfrom a memoryviewxx")[2:-2])
        h0 = s.add(b"")
        assert s[h2] == b"from a bytearray"
        assert s[h3] == b"from a memoryview"
        assert s[h0] == b""
        assert len(s) == 4
        # a hashcode of another class is never there, and fetching it is an error
        foreign = other_hashclass(hc).from_data(b"hello, world")
        assert foreign not in s
        with pytest.raises(HashClassMismatchError):
            s[foreign]
        with pytest.raises(TypeError):
            s[b"not a hashcode"]


def test_many_random_blocks(store_factory):
    blocks = random_blocks(1000)
    with store_factory.open() as s:
        hs = s.add_many(blocks[:500])
        hs += [s.add(b) for b in blocks[500:]]
        assert hs == [s.hashclass.from_data(b) for b in blocks]
        assert len(s) == len(blocks)
        for h, b in zip(hs, blocks, strict=True):
            assert s[h] == b
        assert s.get_many(hs[::7]) == blocks[::7]
        absent = [s.hashclass.from_data(b"absent %d" % i) for i in range(10)]
        assert s.contains_many(hs[:10] + absent) == [True] * 10 + [False] * 10
        s.flush()
        assert len(s) == len(blocks)
        # adding them all again stores nothing new
        s.add_many(blocks[:100])
        assert len(s) == len(blocks)


def _window(model, start, after, length):
    i = 0 if start is None else bisect.bisect_left(model, start)
    if start is not None and after and i < len(model) and model[i] == start:
        i += 1
    out = model[i:]
    return out if length is None else out[:length]


def test_hashcodes_ordered_windows(store_factory):
    blocks = random_blocks(300, seed=2, max_size=3000)
    rnd = random.Random(3)
    with store_factory.open() as s:
        hs = s.add_many(blocks)
        model = sorted(hs)
        assert list(s.hashcodes()) == model
        assert list(s) == model
        starts = [None, model[0], model[-1], *rnd.sample(model, 5)]
        starts += [s.hashclass.from_data(b"not stored %d" % i) for i in range(5)]
        starts.append(s.hashclass(bytes(s.hashclass.digest_size)))
        starts.append(s.hashclass(b"\xff" * s.hashclass.digest_size))
        for start in starts:
            for after in (False, True):
                for length in (None, 0, 1, 17):
                    got = list(s.hashcodes(start=start, after=after, length=length))
                    assert got == _window(model, start, after, length), (start, after, length)
        with pytest.raises(ValueError):
            list(s.hashcodes(length=-1))
        with pytest.raises(HashClassMismatchError):
            list(s.hashcodes(start=other_hashclass(s.hashclass).from_data(b"x")))


def test_hash_of_hashcodes_windows(store_factory):
    blocks = random_blocks(200, seed=4, max_size=2000)
    with store_factory.open() as s:
        hc = s.hashclass
        model = sorted(s.add_many(blocks))
        assert s.hash_of_hashcodes() == (hash_of_hashcodes(hc, model), model[-1])
        # walk the store in windows of 37, continuing after each window's last
        seen = []
        start, after = None, False
        while True:
            h, last = s.hash_of_hashcodes(start=start, after=after, length=37)
            window = _window(model, start, after, 37)
            assert h == hash_of_hashcodes(hc, window)
            if last is None:
                assert window == []
                break
            assert last == window[-1]
            seen += window
            start, after = last, True
        assert seen == model
        # windows of two stores differ exactly where their contents do
        mid = model[len(model) // 2]
        h1, _ = s.hash_of_hashcodes(start=mid, length=10)
        s.add(b"one more block")
        h2, _ = s.hash_of_hashcodes(start=mid, length=10)
        new = hc.from_data(b"one more block")
        inside = _window(sorted([*model, new]), mid, False, 10)
        assert (h1 == h2) == (new not in inside)


def test_close_and_reopen(store_factory):
    if not store_factory.persistent:
        pytest.skip("not a persistent store")
    blocks = random_blocks(150, seed=5)
    s = store_factory.open()
    hs = s.add_many(blocks[:100])
    s.close()
    s.close()  # closing twice is harmless
    with pytest.raises(StoreError):
        s.add(b"after close")
    with store_factory.open() as s:
        assert len(s) == 100
        assert all(s[h] == b for h, b in zip(hs, blocks, strict=False))
        hs += s.add_many(blocks[100:])
    with store_factory.open(readonly=True) as s:
        assert s.readonly
        assert len(s) == 150
        assert sorted(hs) == list(s.hashcodes())
        assert all(s[h] == b for h, b in zip(hs, blocks, strict=True))
        with pytest.raises(ReadOnlyError):
            s.add(b"read only")


def test_no_leftover_threads_or_fds(store_factory, leftovers):
    blocks = random_blocks(200, seed=6)
    s = store_factory.open()
    hs = s.add_many(blocks)
    for h in hs[::3]:
        assert s[h] is not None
    s.flush()
    list(s.hashcodes(length=10))
    len(s)
    s.close()
    if store_factory.persistent:
        with store_factory.open(readonly=True) as s:
            assert s[hs[0]] == blocks[0]
    leftovers.check()


def test_flush_then_more(store_factory):
    with store_factory.open() as s:
        a = s.add(os.urandom(1000))
        s.flush()
        s.flush()
        b = s.add(os.urandom(1000))
        assert a in s and b in s
        assert len(s) == 2
        assert sorted([a, b]) == list(s.hashcodes())


@pytest.mark.parametrize("hc", [Hash_SHA1])
def test_hashclass_is_per_store(tmp_path, hc):
    from vtstore.stores.datadir import DataDir

    with DataDir(tmp_path / "d", hashclass=hc) as s:
        h = s.add(b"x")
        assert type(h) is hc
    with DataDir(tmp_path / "d") as s:  # no hash class asked: the store's own
        assert s.hashclass is hc
        assert s[h] == b"x"
