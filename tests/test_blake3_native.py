"""vtstore._blake3, the native batch BLAKE3, against the `blake3` package.

Every test that hashes runs once per implementation this CPU can run
(avx512, avx2, portable), forced with set_implementation().
"""

from __future__ import annotations

import array
import mmap
import os
import random
import threading

import blake3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vtstore import _blake3

IMPLS = _blake3.implementations()
ALL_NAMES = ("avx512", "avx2", "portable")

EMPTY_HEX = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"

# lengths around block (64), chunk (1024), tree and unit (64 KiB) boundaries
LENGTHS = [
    0,
    1,
    63,
    64,
    65,
    1023,
    1024,
    1025,
    2047,
    2048,
    2049,
    3072,
    4095,
    4096,
    4097,
    8191,
    8192,
    8193,
    16385,
    31 * 1024 + 7,
    65535,
    65536,
    65537,
    2 * 65536 - 1,
    2 * 65536,
    2 * 65536 + 1,
    3 * 65536 + 5 * 1024 + 3,
    (1 << 20) + 1,
]

DATA = random.Random(1234).randbytes(3 << 20)


def ref(b) -> bytes:
    return blake3.blake3(bytes(b)).digest()


def refs(blocks) -> bytes:
    return b"".join(ref(b) for b in blocks)


def blocks_of(buf, start, cuts, base=0):
    out, prev = [], start
    for c in cuts:
        out.append(buf[prev - base : c - base])
        prev = c
    return out


@pytest.fixture(params=IMPLS)
def impl(request):
    _blake3.set_implementation(request.param)
    yield request.param
    _blake3.set_implementation(None)


# ---- implementations ------------------------------------------------------


def test_implementations_listed():
    assert "portable" in IMPLS
    assert set(IMPLS) <= set(ALL_NAMES)
    assert _blake3.implementation() == IMPLS[0]  # the fastest is the default


def test_set_implementation(impl):
    assert _blake3.implementation() == impl


def test_set_implementation_none_picks_fastest():
    _blake3.set_implementation("portable")
    _blake3.set_implementation(None)
    assert _blake3.implementation() == IMPLS[0]


def test_set_implementation_bad_names():
    before = _blake3.implementation()
    with pytest.raises(ValueError, match="unknown"):
        _blake3.set_implementation("sse9")
    with pytest.raises(TypeError):
        _blake3.set_implementation(3)
    for name in ALL_NAMES:
        if name not in IMPLS:
            with pytest.raises(ValueError, match="cannot run|unknown"):
                _blake3.set_implementation(name)
    assert _blake3.implementation() == before


# ---- single digests ---------------------------------------------------------


def test_empty(impl):
    assert _blake3.digest(b"").hex() == EMPTY_HEX
    assert _blake3.digest_list([b""]).hex() == EMPTY_HEX
    assert _blake3.digest_cuts(b"", 0, [0]).hex() == EMPTY_HEX
    assert _blake3.digest_list([]) == b""
    assert _blake3.digest_cuts(b"abc", 1, []) == b""


def test_known_vector(impl):
    # the specification's test vectors use input bytes i % 251
    data = bytes(i % 251 for i in range(1024 + 1))
    assert _blake3.digest(data) == ref(data)
    assert _blake3.digest(b"abc").hex().startswith("6437b3ac38465133")


@pytest.mark.parametrize("n", LENGTHS)
def test_lengths(impl, n):
    data = DATA[:n]
    assert _blake3.digest(data) == ref(data)


def test_lengths_batched(impl):
    # all the lengths in one batch, so lanes mix chunks of different blocks
    blocks = [DATA[i : i + n] for i, n in enumerate(LENGTHS)]
    assert _blake3.digest_list(blocks) == refs(blocks)
    buf = b"".join(blocks)
    cuts, pos = [], 0
    for n in LENGTHS:
        pos += n
        cuts.append(pos)
    assert _blake3.digest_cuts(buf, 0, cuts) == refs(blocks)


def test_large_single(impl):
    data = DATA[: (3 << 20) - 17]
    assert _blake3.digest(data) == ref(data)


@pytest.mark.slow
def test_huge_block(impl):
    # over 72 MiB, the top of the tree is combined in several slices of jobs
    data = DATA * 27 + b"tail"
    assert _blake3.digest(data) == ref(data)


@pytest.mark.parametrize(
    "make",
    [
        bytes,
        bytearray,
        memoryview,
        lambda b: memoryview(b"xx" + b + b"yy")[2:-2],
        lambda b: array.array("B", b),
    ],
    ids=["bytes", "bytearray", "memoryview", "memoryview-slice", "array"],
)
def test_buffer_types(impl, make):
    data = DATA[:5000]
    assert _blake3.digest(make(data)) == ref(data)
    assert _blake3.digest_list([make(data), make(data[:10])]) == ref(data) + ref(data[:10])


def test_mmap(impl, tmp_path):
    p = tmp_path / "f"
    p.write_bytes(DATA[:100_000])
    with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert _blake3.digest(mm) == ref(DATA[:100_000])
        cuts = [3000, 3000, 40_000, 100_000]
        assert _blake3.digest_cuts(mm, 0, cuts) == refs(blocks_of(DATA, 0, cuts))
        with memoryview(mm) as mv:
            assert _blake3.digest(mv[10:70_000]) == ref(DATA[10:70_000])


def test_mmap_at_page_end(impl):
    # a block ending right at the end of a mapping: nothing may read past it
    size = mmap.PAGESIZE * 4
    with mmap.mmap(-1, size) as mm:
        mm[:] = DATA[:size]
        for n in (1, 63, 64, 65, 1000, 1025, size - 1, size):
            assert _blake3.digest(memoryview(mm)[size - n :]) == ref(DATA[size - n : size])


# ---- digest_cuts / digest_list ----------------------------------------------


def test_digest_cuts_base(impl):
    buf = DATA[:50_000]
    base = 1_000_000
    cuts = [base + 7000, base + 7000, base + 9000, base + 50_000]
    got = _blake3.digest_cuts(buf, base + 100, cuts, base)
    assert got == refs(blocks_of(buf, base + 100, cuts, base))
    assert _blake3.digest_cuts(buf, base + 100, cuts, base=base) == got


def test_digest_cuts_memoryview_slice(impl):
    mv = memoryview(DATA)[12345:200_000]
    cuts = [12345 + 8192, 12345 + 8192 * 2 + 1, 200_000]
    got = _blake3.digest_cuts(mv, 12345, cuts, 12345)
    assert got == refs(blocks_of(DATA, 12345, cuts))


def test_digest_cuts_accepts_sequences(impl):
    buf = DATA[:10_000]
    expect = refs(blocks_of(buf, 0, [100, 5000, 10_000]))
    assert _blake3.digest_cuts(buf, 0, (100, 5000, 10_000)) == expect
    assert _blake3.digest_cuts(buf, 0, range(2500, 10_001, 2500)) == refs(
        blocks_of(buf, 0, range(2500, 10_001, 2500))
    )
    assert _blake3.digest_cuts(buf, 0, array.array("Q", [100, 5000, 10_000])) == expect


def test_many_small_blocks(impl):
    # thousands of blocks across many batches, every size 0..3100
    rng = random.Random(7)
    sizes = [rng.randrange(0, 3100) for _ in range(3000)]
    blocks, pos = [], 0
    for n in sizes:
        blocks.append(DATA[pos : pos + n])
        pos = (pos + n) % (1 << 20)
    assert _blake3.digest_list(blocks) == refs(blocks)


def test_big_blocks_between_small(impl):
    # blocks of more than one 64 KiB unit flush the batch in the middle
    sizes = [5, 2048, (1 << 20) + 1, 0, 3000, 65536 * 3 + 1, 1, 65537, 8192]
    buf = DATA[: sum(sizes)]
    cuts, pos = [], 0
    for n in sizes:
        pos += n
        cuts.append(pos)
    assert _blake3.digest_cuts(buf, 0, cuts) == refs(blocks_of(buf, 0, cuts))


# ---- hypothesis ---------------------------------------------------------------

HSET = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@HSET
@given(data=st.binary(max_size=20_000))
def test_random_data(impl, data):
    assert _blake3.digest(data) == ref(data)


@HSET
@given(
    size=st.integers(0, 40_000),
    seed=st.integers(0, 2**32),
    cuts=st.lists(st.floats(0, 1), max_size=40),
    start=st.floats(0, 1),
)
def test_random_cuts(impl, size, seed, cuts, start):
    buf = random.Random(seed).randbytes(size)
    offs = sorted(int(c * size) for c in cuts)  # may repeat: zero-length blocks
    s = int(start * (offs[0] if offs else size))
    base = seed % 5000
    got = _blake3.digest_cuts(buf, s + base, [o + base for o in offs], base)
    assert got == refs(blocks_of(buf, s, offs))


# sizes that put chunks of every block count and every tail length in lanes
MIXED_SIZE = st.one_of(
    st.integers(0, 70_000),
    st.sampled_from([0, 1, 64, 1024, 2048, 8192, 65536]),
    st.builds(lambda k, d: max(0, 1024 * k + d), st.integers(0, 20), st.integers(-65, 65)),
)


@HSET
@given(sizes=st.lists(MIXED_SIZE, max_size=60), seed=st.integers(0, 2**32))
def test_mixed_batches(impl, sizes, seed):
    buf = random.Random(seed).randbytes(sum(sizes))
    cuts, pos = [], 0
    for n in sizes:
        pos += n
        cuts.append(pos)
    blocks = blocks_of(buf, 0, cuts)
    expect = refs(blocks)
    assert _blake3.digest_cuts(buf, 0, cuts) == expect
    assert _blake3.digest_list(blocks) == expect


@HSET
@given(sizes=st.lists(MIXED_SIZE, min_size=1, max_size=30), seed=st.integers(0, 2**32))
def test_implementations_agree(sizes, seed):
    # the portable code as a cross-check of the SIMD ones, on the same batch
    rng = random.Random(seed)
    blocks = [rng.randbytes(n) for n in sizes]
    results = set()
    try:
        for name in IMPLS:
            _blake3.set_implementation(name)
            results.add(_blake3.digest_list(blocks))
    finally:
        _blake3.set_implementation(None)
    assert len(results) == 1


# ---- bad arguments ---------------------------------------------------------------


@pytest.mark.parametrize(
    "start, cuts, base, match",
    [
        (0, [10, 5], 0, "before the previous"),
        (20, [10], 0, "before the previous"),
        (0, [101], 0, "past the end"),
        (0, [50, 100, 101], 0, "past the end"),
        (5, [10], 10, "start 5 outside"),
        (111, [], 10, "start 111 outside"),
        (0, [-1], 0, "non-negative"),
        (-1, [10], 0, "non-negative"),
        (0, [10], -1, "non-negative"),
        (0, [2**64], 0, "non-negative"),
        (2**64 - 50, [2**64 - 1], 2**64 - 50, "past 2..64"),
    ],
)
def test_digest_cuts_bad_offsets(start, cuts, base, match):
    with pytest.raises(ValueError, match=match):
        _blake3.digest_cuts(bytes(100), start, cuts, base)


@pytest.mark.parametrize(
    "args",
    [
        ("text", 0, [1]),
        (bytes(10), 0, 5),
        (bytes(10), 0, ["5"]),
        (bytes(10), 0, [1.5]),
        (bytes(10), "0", [5]),
        (bytes(10), 0, [5], None),
        (memoryview(bytes(10))[::2], 0, [5]),
        (None, 0, []),
    ],
)
def test_digest_cuts_bad_types(args):
    with pytest.raises(TypeError):
        _blake3.digest_cuts(*args)


def test_digest_cuts_missing_args():
    with pytest.raises(TypeError):
        _blake3.digest_cuts(bytes(10), 0)
    with pytest.raises(TypeError):
        _blake3.digest_cuts(bytes(10), 0, [1], 0, 0)


@pytest.mark.parametrize("arg", ["text", 12, None, memoryview(bytes(10))[::2], [b"a"]])
def test_digest_bad_types(arg):
    with pytest.raises(TypeError):
        _blake3.digest(arg)


@pytest.mark.parametrize("arg", [None, 5, [b"a", "b"], [b"a", None], (memoryview(b"abcd")[::2],)])
def test_digest_list_bad(arg):
    with pytest.raises(TypeError):
        _blake3.digest_list(arg)


def test_views_released_after_errors():
    # a bytearray with an export cannot be resized: every view must be released
    a = bytearray(b"x" * 100)
    with pytest.raises(TypeError):
        _blake3.digest_list([a, a, None])
    with pytest.raises(ValueError):
        _blake3.digest_cuts(a, 0, [200])
    _blake3.digest_list([a])
    _blake3.digest_cuts(a, 0, [50, 100])
    _blake3.digest(a)
    a.extend(b"more")  # BufferError if a view leaked
    assert len(a) == 104


# ---- threads ---------------------------------------------------------------------


def test_threads():
    rng = random.Random(99)
    jobs = []
    for _ in range(6):
        buf = rng.randbytes(rng.randrange(100_000, 600_000))
        cuts = sorted(rng.randrange(0, len(buf) + 1) for _ in range(rng.randrange(1, 80)))
        jobs.append((buf, cuts, refs(blocks_of(buf, 0, cuts)), ref(buf)))
    errors = []
    stop = threading.Event()

    def worker(i):
        try:
            for k in range(20):
                buf, cuts, expect, whole = jobs[(i + k) % len(jobs)]
                assert _blake3.digest_cuts(buf, 0, cuts) == expect
                assert _blake3.digest_list(blocks_of(buf, 0, cuts)) == expect
                assert _blake3.digest(buf) == whole
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    def switcher():
        # switching implementations under running calls changes no result
        while not stop.is_set():
            for name in IMPLS:
                _blake3.set_implementation(name)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    sw = threading.Thread(target=switcher)
    sw.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    sw.join()
    _blake3.set_implementation(None)
    assert not errors, errors[0]


def test_bytearray_held_while_hashing():
    # the buffer stays exported during the call: growing it from another thread
    # fails with BufferError or happens wholly before or after the hashing
    a = bytearray(os.urandom(8 << 20))
    before, after = ref(a), ref(a + b"x")
    results = []
    t = threading.Thread(target=lambda: results.append(_blake3.digest(a)))
    t.start()
    try:
        a.extend(b"x")
    except BufferError:
        pass
    t.join()
    assert results[0] in (before, after)
