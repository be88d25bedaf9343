"""Archive-as views outside the mount (issue 19, item 3): `tree.tarview.TarView`.

The view is laid out from the dirents and read from the blocks: every octet
equals what `write_tar` (`vt export --format tar`) writes, any range reads
alone, GNU tar extracts it to the directory it came from, and building it
reads no file content.
"""

from __future__ import annotations

import io
import os
import random
import subprocess

import pytest

from vtstore.stores.memory import MemoryStore
from vtstore.tree.fsimport import import_tree
from vtstore.tree.tar import write_tar
from vtstore.tree.tarview import TarView

from .conftest import rsync_diff


class CountingStore(MemoryStore):
    """A memory store that counts block reads."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def __getitem__(self, h):
        self.reads += 1
        return super().__getitem__(h)


def _export(top, S) -> bytes:
    buf = io.BytesIO()
    write_tar(top, S, buf)
    return buf.getvalue()


@pytest.fixture
def packed(rich_tree):
    src, _ = rich_tree
    S = MemoryStore()
    top, _ = import_tree(src, S)
    return src, S, top


def test_view_equals_the_export_octet_for_octet(packed):
    _, S, top = packed
    v = TarView(top, S)
    want = _export(top, S)
    assert v.span == len(want)
    assert v.read(S, 0, v.span) == want


def test_any_range_reads_alone(packed):
    _, S, top = packed
    v = TarView(top, S)
    want = _export(top, S)
    rnd = random.Random(7)
    for _ in range(300):
        a = rnd.randrange(0, v.span)
        b = min(v.span, a + rnd.choice([1, 17, 511, 512, 513, 4096, 100_000, 1 << 22]))
        assert v.read(S, a, b) == want[a:b], (a, b)
    assert v.read(S, v.span, v.span + 10) == b""
    assert v.read(S, v.span - 5, v.span + 10) == want[-5:]


def test_gnu_tar_extracts_the_view_to_the_directory(packed, tmp_path):
    src, S, top = packed
    v = TarView(top, S)
    tarpath = tmp_path / "v.tar"
    with open(tarpath, "wb") as f:
        pos = 0
        while pos < v.span:  # in odd pieces, as a reader through the mount would
            n = 65_537
            f.write(v.read(S, pos, pos + n))
            pos += n
    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "--acls", "-xpf", str(tarpath), "-C", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert [line for line in rsync_diff(src, str(out)) if not line.endswith(" sock")] == []


def test_building_the_view_reads_no_file_content(tmp_path):
    src = tmp_path / "src"
    for i in range(20):
        (src / f"d{i}").mkdir(parents=True)
        for j in range(50):
            (src / f"d{i}" / f"f{j}").write_bytes(os.urandom(3000 + j))
    S = CountingStore()
    top, _ = import_tree(str(src), S)
    S.reads = 0
    v = TarView(top, S)
    assert len(v) == 20 + 20 * 50 + 1
    # directory blocks only: at most a few per directory, never the 1,000 files
    assert S.reads <= 3 * 21, S.reads
    assert v.read(S, 0, v.span) == _export(top, S)


def test_a_large_file_view_is_seekable(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(24 << 20)
    (src / "big.bin").write_bytes(data)
    S = MemoryStore()
    top, _ = import_tree(str(src), S)
    v = TarView(top, S)
    want = _export(top, S)
    assert v.span == len(want)
    # the content starts after the two headers ("." and big.bin)
    off = want.index(data[:4096])
    assert (
        v.read(S, off + (20 << 20), off + (20 << 20) + 1000) == data[20 << 20 : (20 << 20) + 1000]
    )


# -- the .vtd bundle view ------------------------------------------------------


def test_vtd_view_is_a_store_with_the_whole_tree(packed, tmp_path):
    from vtstore.blocks import HashCodeBlock
    from vtstore.stores.filestore import FileStore
    from vtstore.tree.dir import walk as walk_tree
    from vtstore.tree.fsexport import export_tree
    from vtstore.tree.vtdview import VtdView, read_top

    src, S, top = packed
    v = VtdView(top, S)
    path = tmp_path / "t.vtd"
    with open(path, "wb") as f:
        assert v.write_to(f, chunk=100_003) == v.span
    whole = path.read_bytes()
    rnd = random.Random(3)
    for _ in range(200):
        a = rnd.randrange(v.span)
        b = a + rnd.choice([1, 13, 4096, 70_000, 1 << 21])
        assert v.read(S, a, b) == whole[a:b], (a, b)
    assert read_top(str(path)) == top
    # top block first, then every directory block, then the data
    kinds = [
        "top" if isinstance(o, bytes) else ("leaf" if isinstance(o, HashCodeBlock) else "ind")
        for o, _ in v._items
    ]
    assert kinds[0] == "top"
    dirs = {
        e.block.hashcode for _, e in walk_tree(top, S) if e.is_dir and hasattr(e.block, "hashcode")
    }
    pos = {o.hashcode: i for i, (o, _) in enumerate(v._items) if not isinstance(o, bytes)}
    first_data = min(i for h, i in pos.items() if h not in dirs)
    assert all(pos[h] < first_data for h in dirs)
    with FileStore(str(path), readonly=True) as fs:
        out = str(tmp_path / "out")
        stats = export_tree(read_top(str(path)), fs, out)
        assert not stats.errors and not stats.damaged
    assert rsync_diff(src, out) == []


def test_the_same_tree_makes_the_same_bundle(packed):
    from vtstore.tree.vtdview import VtdView

    _, S, top = packed
    a, b = VtdView(top, S), VtdView(top, S)
    assert a.span == b.span and a.read(S, 0, 4096) == b.read(S, 0, 4096)


def test_a_bad_bundle_is_one_format_error(tmp_path):
    from vtstore.errors import FormatError
    from vtstore.tree.vtdview import read_top

    for data in (b"", b"not a bundle", b"VTD\x01\x04\x05{}abc"):
        p = tmp_path / "bad.vtd"
        p.write_bytes(data)
        with pytest.raises(FormatError):
            read_top(str(p))
