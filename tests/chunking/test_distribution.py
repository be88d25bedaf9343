"""Block-size distributions and shift resistance of the chunker."""

from __future__ import annotations

import random
import statistics

import pytest

from vtstore.chunking import Chunker, cut_offsets
from vtstore.chunking import reference as ref
from vtstore.chunking.blockify import chunks_of
from vtstore.chunking.scanners.text import TextScanner

DEFAULT = (2048, 8192, 65536)


def sizes_of(cuts):
    return [b - a for a, b in zip([0, *cuts], cuts, strict=False)]


def expected_mean(mn: int, avg: int, mx: int) -> float:
    """The exact mean chunk size on random data, from the cut probabilities."""
    ps, pl = 2.0 ** -(avg.bit_length() - 1 + 2), 2.0 ** -(avg.bit_length() - 1 - 2)
    alive, mean = 1.0, 0.0
    for length in range(mn, mx):
        p = ps if length < avg else pl
        mean += alive * p * length
        alive *= 1 - p
    return mean + alive * mx


@pytest.mark.parametrize("params", [DEFAULT, (1024, 4096, 16384), (64, 256, 1024)])
def test_random_data_distribution(params, randbytes):
    want = expected_mean(*params)
    data = randbytes(int(5000 * want), 7)
    sizes = sizes_of(cut_offsets(data, *params))[:-1]
    mean = statistics.fmean(sizes)
    assert len(sizes) > 4000
    assert abs(mean - want) / want < 0.03, (mean, want)
    med = statistics.median(sizes)
    # normalised chunking: the median sits a little above avg (bounded by min + avg)
    assert params[1] <= med <= params[0] + params[1], med
    at_max = sum(1 for s in sizes if s == params[2]) / len(sizes)
    assert at_max < 0.001
    assert min(sizes) >= params[0]
    # few very small chunks: normalisation makes sizes below avg rare
    assert sum(1 for s in sizes if s < params[1]) / len(sizes) < 0.25


def test_default_mean_is_about_9k():
    # documented in docs/CHUNKING.md
    assert 9300 < expected_mean(*DEFAULT) < 9400


def test_source_text_distribution(source_text):
    text = source_text(8 << 20)
    sizes = sizes_of(cut_offsets(text))[:-1]
    mean = statistics.fmean(sizes)
    assert 0.8 * expected_mean(*DEFAULT) < mean < 1.25 * expected_mean(*DEFAULT), mean
    assert 8192 <= statistics.median(sizes) <= 10240
    assert sum(1 for s in sizes if s == 65536) / len(sizes) < 0.005


def test_source_text_with_the_text_scanner(source_text):
    text = source_text(8 << 20)
    sizes = [len(c) for c in chunks_of(text, scanner=TextScanner)][:-1]
    mean = statistics.fmean(sizes)
    # definitions pull cuts in: smaller blocks than hash cuts alone, but not tiny
    assert 2048 < mean < 0.8 * expected_mean(*DEFAULT), mean
    assert min(sizes) >= 64
    assert statistics.median(sizes) >= 2048


def test_zeros_are_cut_at_max():
    # the gear hash of a constant run is constant: for 0x00 it never matches
    h = ref.window_hash(b"\0" * 64, 63)
    mask_s, mask_l = ref.masks(8192)
    assert h & mask_s and h & mask_l
    sizes = sizes_of(cut_offsets(bytes(4 << 20)))
    assert set(sizes) == {65536}


def test_constant_runs_of_every_byte_value_have_fixed_sizes():
    for b in range(256):
        sizes = sizes_of(cut_offsets(bytes([b]) * (1 << 20)))[:-1]
        assert len(set(sizes)) == 1, b  # periodic: each run chunk is the same block


@pytest.mark.parametrize("edit", ["insert", "delete"])
def test_one_byte_shift_reuses_all_but_three_blocks(edit, randbytes):
    data = randbytes(16 << 20, 8)
    at = 1000 + random.Random(9).randrange(4096)
    if edit == "insert":
        changed = data[:at] + b"\x5a" + data[at:]
    else:
        changed = data[:at] + data[at + 1 :]

    def blocks(d):
        cuts = cut_offsets(d)
        return [d[a:b] for a, b in zip([0, *cuts], cuts, strict=False)]

    old = set(blocks(data))
    new = blocks(changed)
    fresh = [b for b in new if b not in old]
    assert len(fresh) <= 3, len(fresh)
    assert len(new) > 1000


def test_shift_test_can_fail_without_content_defined_cuts(randbytes):
    # the same measure on fixed-size blocks: every block after the edit is new
    data = randbytes(1 << 20, 10)
    changed = b"\x00" + data
    fixed = lambda d: {d[i : i + 8192] for i in range(0, len(d), 8192)}  # noqa: E731
    assert len(fixed(changed) - fixed(data)) > 100


def test_stream_matches_whole_at_default_params(randbytes):
    data = randbytes(20 << 20, 11)
    ch = Chunker()
    cuts = []
    for i in range(0, len(data), 1_000_003):
        cuts += ch.feed(memoryview(data)[i : i + 1_000_003])
    assert cuts + ch.finish() == cut_offsets(data)
