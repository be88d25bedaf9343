"""The native chunker: validation, buffers, streaming, parity with the reference."""

from __future__ import annotations

import array
import mmap
import random
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vtstore.chunking import Chunker, ChunkParams, _cdc, cut_offsets
from vtstore.chunking import reference as ref


def randbytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


SMALL = (64, 256, 1024)  # min, avg, max: many cuts in little data
PARAMS = [SMALL, (100, 512, 600), (64, 256, 256), (2048, 8192, 65536), (256, 256, 4096)]


def stream_cuts(data, params, pieces, boundaries=()):
    """Cuts from feeding `data` split at `pieces` offsets, each boundary given in time."""
    ch = Chunker(*params)
    bounds = sorted(boundaries)
    cuts = []
    prev = 0
    for at in [*pieces, len(data)]:
        # give every boundary that lies in or before this piece's data, not earlier
        ready = [b for b in bounds if b < at or at == len(data)]
        bounds = bounds[len(ready) :]
        cuts += ch.feed(data[prev:at], ready)
        prev = at
    return cuts + ch.finish()


# -- the gear table and the parameters ------------------------------------------


def test_gear_table_is_splitmix64_of_the_seed():
    assert _cdc.GEAR_SEED == ref.GEAR_SEED == int.from_bytes(b"vtstgear", "big")
    assert _cdc.gear_table() == ref.gear_table()
    # the first value, pinned: a change of generator is a format change
    assert ref.gear_table()[0] == next(ref.splitmix64(ref.GEAR_SEED))
    assert len(set(ref.GEAR)) == 256


def test_gear_table_values_pinned():
    # written down in docs/CHUNKING.md: cuts are part of the store format
    g = _cdc.gear_table()
    assert [f"{v:016x}" for v in g[:4]] == [
        "c82a16d4b50646fe",
        "7ac3a2ca4c8136eb",
        "d1e98482e5c602b2",
        "e6c559dc18713264",
    ]
    assert f"{g[255]:016x}" == "f354fe825eeff79d"


def test_cuts_pinned():
    # a change that moves any cut is a format change: these must never change
    data = random.Random(1).randbytes(1 << 20)
    cuts = cut_offsets(data)
    assert (len(cuts), cuts[:3], cuts[-2]) == PINNED_CUTS


PINNED_CUTS = (112, [8961, 17937, 27163], 1040077)


@pytest.mark.parametrize(
    "args, word",
    [
        ((2048, 8000, 65536), "power of two"),
        ((2048, 128, 65536), "avg_size"),
        ((32, 8192, 65536), "min_size"),
        ((9000, 8192, 65536), "min_size"),
        ((2048, 8192, 4096), "max_size"),
        ((2048, 8192, (1 << 30) + 1), "max_size"),
        ((2048, 8192, 65536, 0), "forced_min"),
        ((2048, 8192, 65536, 70000), "forced_min"),
    ],
)
def test_bad_parameters_are_clear_value_errors(args, word):
    with pytest.raises(ValueError, match=word):
        Chunker(*args)
    with pytest.raises(ValueError, match=word):
        cut_offsets(b"x" * 100, *args[:3], forced_min=args[3] if len(args) > 3 else 64)
    with pytest.raises(ValueError, match=word.split()[0]):
        ref.validate(*args, *(() if len(args) > 3 else (64,)))


def test_chunk_params_validate_and_round_trip():
    p = ChunkParams(1024, 4096, 32768)
    assert ChunkParams.from_dict(p.as_dict()) == p
    assert p.chunker().avg_size == 4096
    with pytest.raises(ValueError):
        ChunkParams(1024, 5000, 32768)
    with pytest.raises(TypeError):
        ChunkParams(1024.0, 4096, 32768)


# -- buffers --------------------------------------------------------------------


def test_any_contiguous_buffer_is_accepted(tmp_path):
    data = randbytes(200_000, 1)
    want = cut_offsets(data)
    assert cut_offsets(bytearray(data)) == want
    assert cut_offsets(memoryview(data)) == want
    assert cut_offsets(array.array("B", data)) == want
    p = tmp_path / "f"
    p.write_bytes(data)
    with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert cut_offsets(m) == want
        ch = Chunker()
        assert ch.feed(m) + ch.finish() == want


def test_non_buffers_and_non_contiguous_views_are_type_errors():
    with pytest.raises(TypeError):
        cut_offsets("text")
    with pytest.raises(TypeError, match="contiguous"):
        cut_offsets(memoryview(b"abcdef")[::2])
    with pytest.raises(TypeError):
        Chunker().feed(12)


def test_empty_and_tiny_inputs():
    assert cut_offsets(b"") == []
    assert cut_offsets(b"a") == [1]
    ch = Chunker()
    assert ch.feed(b"") == []
    assert ch.finish() == []
    assert ch.finished
    with pytest.raises(RuntimeError, match="finished"):
        ch.feed(b"x")


def test_cuts_are_within_min_and_max():
    data = randbytes(3 << 20, 2)
    cuts = cut_offsets(data, *SMALL)
    sizes = [b - a for a, b in zip([0, *cuts], cuts, strict=False)]
    assert cuts[-1] == len(data)
    assert min(sizes[:-1]) >= SMALL[0]
    assert max(sizes) <= SMALL[2]


# -- parity with the reference ------------------------------------------------------


def test_reference_rolling_hash_is_the_window_hash():
    data = randbytes(400, 3)
    h = 0
    for q in range(len(data)):
        h = ((h << 1) + ref.GEAR[data[q]]) & ref.M64
        assert h == ref.window_hash(data, q)


@pytest.mark.parametrize("params", PARAMS)
def test_parity_with_reference_on_random_data(params):
    for seed, n in [(10, 0), (11, 1), (12, 63), (13, 5000), (14, 150_000)]:
        data = randbytes(n, seed)
        assert cut_offsets(data, *params) == ref.cut_offsets(data, *params), (seed, n)


def test_parity_kinds_with_reference():
    data = randbytes(300_000, 20)
    bounds = list(range(1000, 300_000, 7919))
    want = ref.cuts_with_kinds(data, *SMALL, boundaries=bounds)
    ch = Chunker(*SMALL)
    got = ch.feed(data, bounds) + ch.finish()
    assert got == [e for e, _ in want]
    counts = ch.counts
    for kind in ("hash", "format", "max", "end"):
        assert counts[kind] == sum(1 for _, k in want if k == kind), kind
    assert counts["format"] > 10 and counts["hash"] > 10


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=6000),
    params=st.sampled_from(PARAMS[:3]),
    bounds=st.lists(st.integers(0, 6100), unique=True, max_size=30),
    forced_min=st.sampled_from([1, 64, 200]),
)
def test_parity_hypothesis(data, params, bounds, forced_min):
    bounds = sorted(bounds)
    want = ref.cut_offsets(data, *params, boundaries=bounds, forced_min=forced_min)
    assert cut_offsets(data, *params, boundaries=bounds, forced_min=forced_min) == want


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(0, 60_000), pieces=st.integers(0, 12))
def test_streaming_random_splits_hypothesis(seed, n, pieces):
    rnd = random.Random(seed)
    data = rnd.randbytes(n)
    splits = sorted(rnd.randrange(n + 1) for _ in range(pieces))
    bounds = sorted(set(rnd.randrange(n + 1) for _ in range(rnd.randrange(20))))
    want = ref.cut_offsets(data, *SMALL, boundaries=bounds)
    assert stream_cuts(data, SMALL, splits, bounds) == want


def test_every_two_way_split_gives_the_same_cuts():
    data = randbytes(2500, 30)
    bounds = [700, 701, 1500, 2499]
    want = ref.cut_offsets(data, *SMALL, boundaries=bounds)
    assert want == cut_offsets(data, *SMALL, boundaries=bounds)
    for at in range(len(data) + 1):
        assert stream_cuts(data, SMALL, [at], bounds) == want, at


def test_every_three_way_split_gives_the_same_cuts():
    data = randbytes(300, 31)
    params = (64, 256, 256)
    want = ref.cut_offsets(data, *params)
    assert len(want) >= 2
    for a in range(len(data) + 1):
        for b in range(a, len(data) + 1):
            assert stream_cuts(data, params, [a, b]) == want, (a, b)


def test_byte_at_a_time_stream():
    data = randbytes(20_000, 32)
    ch = Chunker(*SMALL)
    cuts = []
    for i in range(len(data)):
        cuts += ch.feed(data[i : i + 1])
    assert cuts + ch.finish() == ref.cut_offsets(data, *SMALL)


# -- forced boundaries ----------------------------------------------------------------


def _strong(data, f: int) -> bool:
    """Whether boundary `f` is strong: the gear hash of the 64 bytes from f, top bits 0."""
    return ref.window_hash(data, f + ref.WINDOW - 1) >> (64 - ref.FORMAT_BITS) == 0


def test_forced_boundaries_merge_below_min_and_judge_up_to_avg():
    # a boundary every 700 bytes, as small records (mail messages) give
    data = randbytes(300_000, 40)
    bounds = list(range(10, 290_000, 700))
    cuts = cut_offsets(data, boundaries=bounds)
    assert _cdc.FORMAT_BITS == ref.FORMAT_BITS
    prev = 0
    formats = 0
    for c in cuts:
        size = c - prev
        # no block below the minimum but the last, none over the maximum
        assert 2048 <= size <= 65536 or c == len(data)
        if c in bounds and c != bounds[-1]:  # (the last starts a long record)
            formats += 1
            # between min and avg only a strong boundary ends a block
            assert size >= 8192 or _strong(data, c), (prev, c)
        # and the first boundary that qualifies does (but those within min
        # before the last, which starts a long record and takes the cut)
        for f in bounds[:-1]:
            if prev + 2048 <= f < c and f < bounds[-1] - 2048:
                assert f - prev < 8192 and not _strong(data, f), (prev, f, c)
        prev = c
    assert formats > 20
    # blocks near the average, not at the boundaries' 700 bytes
    assert 4000 < len(data) / len(cuts) < 9000


def test_forced_boundaries_a_long_record_after_small_ones_starts_a_block():
    # small boxes (an MP4's moov), then a long record (its mdat payload): the
    # long record's start is the cut, and no small box's boundary is cut within
    # min before it, whatever the hashes say
    data = randbytes(200_000, 43)
    small = list(range(100, 9000, 150))
    bounds = [*small, 9100, 9108, 150_000]
    cuts = cut_offsets(data, boundaries=bounds)
    assert 9108 in cuts and 150_000 in cuts
    assert not any(9108 - 2048 < c < 9108 for c in cuts)
    assert cuts == ref.cut_offsets(data, boundaries=bounds)


def test_forced_boundaries_sparse_ones_all_cut():
    # boundaries further apart than avg are all taken (unless a hash cut comes
    # first, when the next boundary is within min of it)
    data = randbytes(400_000, 41)
    bounds = list(range(10_000, 390_000, 20_000))
    cuts = cut_offsets(data, boundaries=bounds)
    for f in bounds:
        assert f in cuts or any(f - 2048 < c < f for c in cuts), f
    assert sum(f in cuts for f in bounds) >= len(bounds) * 2 // 3
    assert all(b - a <= 65536 for a, b in zip([0, *cuts], cuts, strict=False))


def test_forced_min_above_min_still_drops():
    data = randbytes(100_000, 40)
    bounds = [10, 5000, 5030, 9100, 70_000]
    cuts = cut_offsets(data, min_size=256, avg_size=1024, boundaries=bounds, forced_min=4096)
    assert 10 not in cuts and 5030 not in cuts and 9100 not in cuts
    assert cuts == ref.cut_offsets(data, 256, 1024, 65536, boundaries=bounds, forced_min=4096)


def test_bad_boundaries_are_value_errors():
    ch = Chunker(*SMALL)
    ch.feed(randbytes(5000, 41), [100, 200])
    with pytest.raises(ValueError, match="increasing"):
        ch.feed(b"", [150])
    with pytest.raises(ValueError, match="before"):
        ch.feed(b"", [4000])  # 4000 > 200 but already fed
    with pytest.raises(ValueError):
        ch.feed(b"", [-5])
    with pytest.raises(ValueError):
        ch.feed(b"", ["x"])
    with pytest.raises(ValueError, match="increasing"):
        cut_offsets(b"x" * 100, boundaries=[50, 50])
    # a rejected batch is not half-applied
    assert ch.feed(b"", [6000, 7000]) == []


def test_boundaries_beyond_the_end_are_dropped():
    data = randbytes(10_000, 42)
    ch = Chunker(*SMALL)
    cuts = ch.feed(data, [5000, 20_000]) + ch.finish()
    assert 5000 in cuts and cuts[-1] == len(data)
    assert ch.counts["dropped"] == 1


# -- the GIL ---------------------------------------------------------------------


def test_scan_releases_the_gil():
    data = randbytes(96 << 20, 50)
    span = {}

    def work():
        span["t0"] = time.perf_counter()
        cut_offsets(data)
        span["t1"] = time.perf_counter()

    t = threading.Thread(target=work)
    ticks = []
    t.start()
    while t.is_alive():
        ticks.append(time.perf_counter())
    t.join()
    inside = [x for x in ticks if span["t0"] < x < span["t1"]]
    # with the GIL held for the whole scan this thread could not tick at all
    assert len(inside) > 1000, (len(inside), span["t1"] - span["t0"])
