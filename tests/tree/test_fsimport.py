"""The importer's stat cache: a re-import of an unchanged tree reads nothing and
stores nothing, and any change (content, metadata, type, names) is picked up.

Every test runs with the C scanner and with the pure-Python one.
"""

import logging
import os

import pytest

from vtstore.blocks import LiteralBlock
from vtstore.codec import encode_bytes, encode_varint
from vtstore.stores.datadir import DataDir
from vtstore.stores.memory import MemoryStore
from vtstore.tree import Dirent, dirscan
from vtstore.tree.dir import dir_entries, encode_dir_entries, resolve, walk
from vtstore.tree.dirent import T_DIR, T_FILE, T_SYMLINK, fsenc
from vtstore.tree.fsimport import import_tree

from .conftest import make_rich_tree


@pytest.fixture(params=["c", "py"])
def scanner(request, monkeypatch):
    if request.param == "c":
        if dirscan.c_scan_dirent is None:
            pytest.skip("vtstore.tree._treecodec is not built")
        monkeypatch.setattr(dirscan, "scan_dirent", dirscan.c_scan_dirent)
    else:
        monkeypatch.setattr(dirscan, "scan_dirent", dirscan.py_scan_dirent)
    return request.param


def make_tree(root, dirs=5, files=12, size=700):
    for d in range(dirs):
        sub = root / f"d{d}" / "inner"
        sub.mkdir(parents=True)
        for f in range(files):
            (sub.parent / f"f{f:02d}").write_bytes(os.urandom(size))
            (sub / f"g{f:02d}").write_bytes(os.urandom(size // 2))
        os.symlink(f"f{d:02d}", sub.parent / "link")
    (root / "top.txt").write_text("top\n" * 100)


def content(d, S, path):
    return resolve(d, path, S).block.data(S)


def test_unchanged_tree_reads_and_stores_nothing(tmp_path, scanner):
    src = tmp_path / "t"
    make_tree(src)
    S = MemoryStore()
    d1, s1 = import_tree(str(src), S)
    n = len(S)
    d2, s2 = import_tree(str(src), S, previous=d1)
    assert d2 == d1 and len(S) == n
    assert s2.bytes_read == 0 and s2.files_reused == s1.files == 5 * 24 + 1
    assert (s2.files, s2.dirs, s2.others) == (s1.files, s1.dirs, s1.others)
    # exactly what reading everything again gives
    d3, s3 = import_tree(str(src), S)
    assert d3 == d1 and s3.bytes_read == s1.bytes_read


def test_a_changed_file_among_unchanged_ones_is_read(tmp_path, scanner):
    src = tmp_path / "t"
    make_tree(src)
    S = MemoryStore()
    d1, _ = import_tree(str(src), S)
    n = len(S)
    f = src / "d3" / "inner" / "g07"
    st = f.stat()
    new = os.urandom(st.st_size)
    f.write_bytes(new)
    # same size, same mtime: only the ctime tells
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(f).st_mtime_ns == st.st_mtime_ns
    d2, s2 = import_tree(str(src), S, previous=d1)
    assert s2.bytes_read == st.st_size and s2.files_reused == s2.files - 1
    assert content(d2, S, "d3/inner/g07") == new
    # the other directories keep their blocks; the path to the change is new
    for name in ("d0", "d1", "d2", "d4", "top.txt"):
        assert resolve(d2, name, S) == resolve(d1, name, S)
    assert resolve(d2, "d3", S) != resolve(d1, "d3", S)
    assert len(S) - n <= 4  # the content, inner, d3, the top directory
    for path, e in walk(d2, S):
        if path != "d3/inner/g07" and e.is_file:
            assert e == resolve(d1, path, S)


def test_metadata_type_and_name_changes_are_seen(tmp_path, scanner):
    src = tmp_path / "t"
    make_tree(src)
    S = MemoryStore()
    d1, _ = import_tree(str(src), S)
    os.chmod(src / "d0" / "f01", 0o600)  # ctime only
    (src / "d1" / "f02").unlink()  # a file becomes a symlink of the same name
    os.symlink("elsewhere", src / "d1" / "f02")
    (src / "d2" / "f03").unlink()  # removed
    (src / "d2" / "new").write_bytes(b"new file")  # added
    os.chmod(src / "d4" / "inner", 0o700)  # a directory's own metadata
    os.rename(src / "d4" / "f05", src / "d4" / "f05-renamed")
    d2, s2 = import_tree(str(src), S, previous=d1)
    assert resolve(d2, "d0/f01", S).meta.mode == 0o600
    assert resolve(d1, "d0/f01", S).meta.mode != 0o600
    link = resolve(d2, "d1/f02", S)
    assert link.type == T_SYMLINK and link.target == "elsewhere"
    names = [e.name for e in dir_entries(resolve(d2, "d2", S), S)]
    assert "f03" not in names and "new" in names
    assert content(d2, S, "d2/new") == b"new file"
    inner = resolve(d2, "d4/inner", S)
    assert inner.meta.mode == 0o700 and inner.block == resolve(d1, "d4/inner", S).block
    assert "f05-renamed" in [e.name for e in dir_entries(resolve(d2, "d4", S), S)]
    # (a rename changes the file's ctime, so it is read again under its new name)
    assert content(d2, S, "d4/f05-renamed") == content(d1, S, "d4/f05")
    # and a fresh import agrees with the incremental one
    d3, _ = import_tree(str(src), S)
    assert d3 == d2


def test_rich_tree_reimports_to_the_same_state(tmp_path, scanner):
    src = tmp_path / "src"
    make_rich_tree(str(src))
    S = MemoryStore()
    d1, s1 = import_tree(str(src), S)
    n = len(S)
    d2, s2 = import_tree(str(src), S, previous=d1)
    assert d2 == d1 and len(S) == n
    # hard-linked files are compared, not trusted blindly: their content is reused
    assert s2.bytes_read == 0
    os.setxattr(src / "with-xattrs", "user.comment", b"changed")
    d3, _ = import_tree(str(src), S, previous=d2)
    assert resolve(d3, "with-xattrs", S).meta.xattr("user.comment") == b"changed"
    assert d3 == import_tree(str(src), S)[0]


def test_unusual_previous_entries_are_rewritten_as_before(tmp_path, scanner):
    """An entry the stat cache cannot take as it is (here: a field from a newer
    writer) is kept while its directory is unchanged, and re-encoded like any
    decoded dirent when its directory changes."""
    src = tmp_path / "t"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(os.urandom(100))
    S = MemoryStore()
    d1, _ = import_tree(str(src), S)
    ents = dir_entries(d1, S)
    odd = ents[2].encode() + encode_varint(99) + encode_bytes(b"from the future")
    pairs = [(fsenc(e.name), e.encode()) for e in ents]
    pairs[2] = (pairs[2][0], odd)
    prev = d1.with_changes(block=encode_dir_entries(pairs, S))
    d2, s2 = import_tree(str(src), S, previous=prev)
    assert d2.block == prev.block and s2.bytes_read == 0
    (src / "f4").write_bytes(os.urandom(100))
    d3, s3 = import_tree(str(src), S, previous=prev)
    assert s3.bytes_read == 100
    raw = [e.encode() for e in dir_entries(d3, S)]
    assert raw[2] == ents[2].encode()  # the unknown field went, as it always did
    assert dir_entries(d3, S)[:4] == ents[:4]


def test_damaged_previous_state_costs_only_reuse(tmp_path, scanner, caplog):
    src = tmp_path / "t"
    make_tree(src, dirs=2)
    S = MemoryStore()
    d1, s1 = import_tree(str(src), S)
    bad = Dirent(T_DIR, name="t", meta=d1.meta, block=LiteralBlock(b"\x01\x00\x05\x00\x01\x01.."))
    with caplog.at_level(logging.WARNING):
        d2, s2 = import_tree(str(src), S, previous=bad)
    assert "previous state unreadable" in caplog.text
    assert d2 == d1 and s2.bytes_read == s1.bytes_read


def test_previous_of_another_kind_or_name(tmp_path, scanner):
    src = tmp_path / "t"
    make_tree(src, dirs=1)
    S = MemoryStore()
    d1, _ = import_tree(str(src), S)
    renamed = d1.renamed("other")
    d2, s2 = import_tree(str(src), S, previous=renamed)
    assert d2 == d1 and s2.bytes_read == 0
    as_file = Dirent(T_FILE, name="t", meta=d1.meta, block=d1.block)
    d3, s3 = import_tree(str(src), S, previous=as_file)
    assert d3 == d1 and s3.files_reused == 0
    # a single file with its previous state
    f, _ = import_tree(str(src / "top.txt"), S)
    f2, sf = import_tree(str(src / "top.txt"), S, previous=f)
    assert f2 == f and sf.files_reused == 1


def test_repack_into_a_datadir_adds_no_blocks(tmp_path, scanner):
    src = tmp_path / "t"
    make_tree(src)
    with DataDir(tmp_path / "store") as S:
        d1, _ = import_tree(str(src), S)
        S.flush()
        n = len(S)
        d2, s2 = import_tree(str(src), S, previous=d1)
        S.flush()
        assert d2 == d1 and len(S) == n and s2.bytes_read == 0


def test_small_files_are_one_block_larger_ones_are_chunked(tmp_path):
    from vtstore.blocks import HashCodeBlock, IndirectBlock, RLEBlock
    from vtstore.tree.fsimport import WHOLE_FILE_MAX

    src = tmp_path / "src"
    src.mkdir()
    text = b"".join(b"def f%d(x):\n    return x + %d\n\n" % (i, i) for i in range(3000))
    (src / "small.py").write_bytes(text[:WHOLE_FILE_MAX])
    (src / "large.py").write_bytes(text[: WHOLE_FILE_MAX + 1])
    (src / "zeros").write_bytes(bytes(9000))
    s = MemoryStore()
    d, _ = import_tree(str(src), s)
    blocks = {e.name: e.block for e in dir_entries(d, s)}
    assert type(blocks["small.py"]) is HashCodeBlock
    assert blocks["small.py"].span == WHOLE_FILE_MAX
    assert type(blocks["large.py"]) is IndirectBlock  # cut by the chunker
    assert type(blocks["zeros"]) is RLEBlock
    assert blocks["large.py"].data(s) == text[: WHOLE_FILE_MAX + 1]
