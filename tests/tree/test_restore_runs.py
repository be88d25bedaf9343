"""A restore reads a large file's leaves as runs (`blocks.leaf_refs`, `RUN`
batch entries, one `pwritev` a run): the runs decode exactly as the general
decoder does, a file of two indirect levels and holes comes back byte for byte
across many batches, and a bad leaf inside a run (missing, or of a length its
ref does not claim) still costs only its own range.  Real datadirs
and files."""

from __future__ import annotations

import os
import random
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtstore.blocks import (
    HashCodeBlock,
    IndirectBlock,
    LiteralBlock,
    RLEBlock,
    decode_blockrefs,
    leaf_refs,
)
from vtstore.hashes import Hash_BLAKE3
from vtstore.stores.datadir import DataDir
from vtstore.tree.dir import resolve
from vtstore.tree.dirent import FileDirent
from vtstore.tree.fsexport import DAMAGED_SUFFIX, Exporter
from vtstore.tree.fsimport import import_tree
from vtstore.tree.salvage import LEAF, iter_content

from .test_export_batched import CountingStore
from .test_restore_damage import delete_blocks, leaf_hashcodes

_spans = st.integers(min_value=0, max_value=(1 << 64) - 1)
_digests = st.binary(min_size=32, max_size=32)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_digests, _spans), min_size=1, max_size=40))
def test_leaf_refs_agree_with_the_general_decoder(leaves):
    blocks = [HashCodeBlock(Hash_BLAKE3(d), s) for d, s in leaves]
    data = b"".join(b.encode() for b in blocks)
    got = leaf_refs(data)
    assert got is not None
    assert [HashCodeBlock(h, s) for h, s in zip(*got, strict=True)] == list(decode_blockrefs(data))
    assert all(type(h) is Hash_BLAKE3 for h in got[0])


@pytest.mark.parametrize(
    "other",
    [
        IndirectBlock(Hash_BLAKE3(bytes(32)), 10),  # the level above leaves
        RLEBlock(5000),
        LiteralBlock(b"x" * 20),
    ],
)
def test_leaf_refs_refuse_anything_but_leaves(other):
    leaf = HashCodeBlock(Hash_BLAKE3(b"\1" * 32), 4096).encode()
    data = leaf + other.encode() + leaf
    assert leaf_refs(data) is None
    assert leaf_refs(leaf[:-1]) is None  # cut short
    assert leaf_refs(b"") is None


def _big_file(path, mb: int, seed: int = 7) -> bytes:
    """Text-like content (small, compressible leaves) with a 3 MiB hole amid it."""
    rnd = random.Random(seed)
    words = [rnd.randbytes(rnd.randint(2, 9)).hex().encode() for _ in range(3000)]
    out = bytearray()
    hole = False
    while len(out) < mb << 20:
        out += b" ".join(rnd.choice(words) for _ in range(2000)) + b"\n"
        if not hole and len(out) > (mb << 20) // 2:
            out += bytes(3 << 20)
            hole = True
    data = bytes(out[: mb << 20])
    with open(path, "wb") as f:
        f.write(data)
    return data


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A datadir holding a 40 MiB file of two indirect levels and a hole."""
    tmp = tmp_path_factory.mktemp("runs")
    src = tmp / "src"
    src.mkdir()
    data = _big_file(src / "big.txt", 40)
    dd = str(tmp / "dd")
    with DataDir(dd) as S:
        d, _ = import_tree(str(src), S)
        f = resolve(d, "big.txt", S)
        top = f.block
        assert type(top) is IndirectBlock
        assert any(type(b) is IndirectBlock for b in top.subblocks(S)), "wants 2 levels"
        assert len(leaf_hashcodes(top, S)) > 3000
    return dd, d, data


@pytest.mark.parametrize("threads", [0, 2])
def test_a_file_of_two_levels_comes_back_whole(big, tmp_path, threads):
    dd, d, data = big
    out = tmp_path / "out"
    with DataDir(dd, readonly=True) as S:
        counting = CountingStore(S)
        stats = Exporter(counting, threads=threads).export(d, str(out))
        nleaves = len(leaf_hashcodes(resolve(d, "big.txt", S).block, S))
    assert stats.damaged == [] and stats.errors == []
    assert (out / "big.txt").read_bytes() == data
    # runs of leaves read in batches, not leaf by leaf
    assert sum(counting.batches) == nleaves
    assert len(counting.batches) <= len(data) // (4 << 20) + 3
    assert counting.single < 40  # the indirect blocks and the directory only
    assert os.stat(out / "big.txt").st_blocks * 512 < len(data) - (2 << 20)  # the hole


@pytest.mark.parametrize("threads", [0, 2])
def test_bad_leaves_inside_runs_cost_only_their_range(big, tmp_path, threads):
    dd0, d, data = big
    dd = tmp_path / "dd"
    shutil.copytree(dd0, dd)
    with DataDir(str(dd), readonly=True) as S:
        f = resolve(d, "big.txt", S)
        leaves = [
            (v[0].hashcode, v[0].span)
            for k, _, v in iter_content(f.block, S, fetch_leaves=False)
            if k == LEAF
        ]
    gone = leaves[10][0]
    delete_blocks(str(dd), [gone])
    out = tmp_path / "out"
    with DataDir(str(dd), readonly=True) as S:
        stats = Exporter(S, threads=threads).export(d, str(out))
    assert not (out / "big.txt").exists()
    got = (out / ("big.txt" + DAMAGED_SUFFIX)).read_bytes()
    assert len(got) == len(data)
    lost = sum(s for h, s in leaves if h == gone)
    assert stats.damaged[0].lost_bytes == lost
    # everything but the missing leaf's range(s) is in place
    pos = 0
    for h, s in leaves:
        if h == gone:
            assert got[pos : pos + s] == bytes(s)
        pos += s
    assert sum(a != b for a, b in zip(got, data, strict=True)) <= lost


def test_a_leaf_shorter_than_its_ref_is_damage_not_a_shift(tmp_path):
    """A run whose stored leaf is not the length its ref claims: that leaf's
    range is a hole in NAME.vt-damaged, the others are in place."""
    rnd = random.Random(3)
    pieces = [rnd.randbytes(5000) for _ in range(30)]
    dd = str(tmp_path / "dd")
    with DataDir(dd) as S:
        hs = S.add_many(pieces)
        spans = [len(p) for p in pieces]
        spans[7] += 100  # the ref claims more than is stored
        spans[8] -= 100  # and less: the total is still right
        refs = [HashCodeBlock(h, s) for h, s in zip(hs, spans, strict=True)]
        top = IndirectBlock(S.add(b"".join(r.encode() for r in refs)), sum(spans))
    out = tmp_path / "f.bin"
    with DataDir(dd, readonly=True) as S:
        stats = Exporter(S, threads=2).export(FileDirent("f.bin", block=top), str(out))
    assert not out.exists()
    got = (tmp_path / ("f.bin" + DAMAGED_SUFFIX)).read_bytes()
    assert len(got) == sum(spans)
    assert stats.damaged[0].lost_bytes == spans[7] + spans[8]
    pos = 0
    for i, (p, s) in enumerate(zip(pieces, spans, strict=True)):
        assert got[pos : pos + s] == (bytes(s) if i in (7, 8) else p)
        pos += s
