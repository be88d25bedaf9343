"""Hostile refs (issue 12, items 10-12): huge spans stream, deep nesting and
over-long numbers are one FormatError line, never a traceback, a RecursionError,
a MemoryError or a hang.  Real `vt` processes where a user would meet them."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from vtstore.blocks import (
    CHUNK_SIZE,
    MAX_SUBBLOCK_DEPTH,
    HashCodeBlock,
    IndirectBlock,
    LiteralBlock,
    RLEBlock,
    SubBlock,
    decode_blockref,
)
from vtstore.codec import encode_bytes, encode_varint
from vtstore.errors import CorruptBlockError, FormatError
from vtstore.hashes import Hash_BLAKE3, Hash_SHA1
from vtstore.stores.memory import MemoryStore
from vtstore.transcribe import parse_all
from vtstore.tree.dir import MAX_DIR_DATA, dir_entries, make_dir, read_dir_data
from vtstore.tree.dirent import DirDirent, FileDirent, decode_dirent, parse_dirent

HUGE = 99999999999999


def vt(*args, check_rc=None):
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-S", "memory:", *args],
        capture_output=True,
        timeout=120,
    )
    err = r.stderr.decode(errors="replace")
    assert "Traceback" not in err, err[-3000:]
    if check_rc is not None:
        assert r.returncode == check_rc, (r.returncode, err)
    return r


def nested_binary_subblocks(depth: int) -> bytes:
    """A binary ref of `depth` sub-blocks around a one-octet literal (5 octets a level)."""
    ref = LiteralBlock(b"x").encode()
    for _ in range(depth):
        body = encode_varint(2) + encode_varint(1) + encode_varint(3) + encode_varint(0) + ref
        ref = encode_bytes(body)
    return ref


# -- item 10: huge spans are streamed --------------------------------------------


def test_vt_cat_of_a_huge_run_streams_with_bounded_memory(tmp_path):
    """`vt cat 'RLE{span:99999999999999,octet:65}' | head -c 100M | wc -c`: quick,
    under 200 MB of RSS, and vt exits 141 (SIGPIPE) quietly."""
    timing = tmp_path / "time.txt"
    script = (
        f"/usr/bin/time -v -o {timing} {sys.executable} -m vtstore.cli.main -S memory:"
        f" cat 'RLE{{span:{HUGE},octet:65}}' 2>{tmp_path}/err | head -c 100M | wc -c;"
        ' echo "rc=${PIPESTATUS[0]}"'
    )
    r = subprocess.run(["bash", "-c", script], capture_output=True, timeout=120, text=True)
    count, rc = r.stdout.split()
    assert int(count) == 100 * 1024 * 1024
    assert rc == "rc=141"
    assert (tmp_path / "err").read_text() == ""
    t = timing.read_text()
    rss_kb = int(next(x for x in t.splitlines() if "Maximum resident" in x).split()[-1])
    wall = next(x for x in t.splitlines() if "Elapsed (wall clock)" in x).split()[-1]
    assert rss_kb < 200 * 1024, t
    minutes, seconds = wall.split(":")[-2:]
    assert int(minutes) * 60 + float(seconds) < 30, t


@pytest.mark.parametrize(
    "block",
    [
        RLEBlock(HUGE, 65),
        SubBlock(RLEBlock(HUGE, 1), 12345, HUGE - 20000),
        SubBlock(SubBlock(RLEBlock(2**64 - 1, 7), 1, 2**64 - 3), 5, 2**63),
    ],
    ids=["rle", "sub-of-rle", "sub-of-sub"],
)
def test_chunks_of_huge_spans_are_bounded_pieces(block):
    pieces = list(itertools.islice(block.chunks(None), 5))
    assert [len(p) for p in pieces] == [CHUNK_SIZE] * 5
    # a range inside the block too, crossing no piece boundary on purpose
    part = list(block.chunks(None, 3, 3 + 3 * CHUNK_SIZE + 1))
    assert sum(map(len, part)) == 3 * CHUNK_SIZE + 1 and max(map(len, part)) <= CHUNK_SIZE


def test_indirect_block_of_huge_runs_streams():
    store = MemoryStore()
    kids = [RLEBlock(HUGE, 1), LiteralBlock(b"middle"), RLEBlock(HUGE, 2)]
    top = IndirectBlock(store.add(b"".join(k.encode() for k in kids)), 2 * HUGE + 6)
    first = list(itertools.islice(top.chunks(store), 3))
    assert [len(p) for p in first] == [CHUNK_SIZE] * 3
    mid = b"".join(top.chunks(store, HUGE - 2, HUGE + 8))
    assert mid == b"\x01\x01middle\x02\x02"


def test_indirect_block_whose_children_do_not_add_up_is_corrupt():
    store = MemoryStore()
    kids = [LiteralBlock(b"abc"), RLEBlock(10, 1)]
    h = store.add(b"".join(k.encode() for k in kids))
    assert IndirectBlock(h, 13).read(store) == b"abc" + b"\x01" * 10  # now cached
    for claimed in (12, 14, HUGE):
        with pytest.raises(CorruptBlockError, match="children span 13"):
            b"".join(IndirectBlock(h, claimed).chunks(store))


def test_self_referencing_indirect_block_stops_at_the_depth_limit():
    """A store that does not check hashes could hold an indirect block whose child
    is itself (its span adds up): the walk stops with CorruptBlockError."""
    h = Hash_BLAKE3.from_data(b"loop")
    me = IndirectBlock(h, 5)
    store = {h: me.encode()}
    with pytest.raises(CorruptBlockError, match="nested more than 64"):
        me.read(store)


def test_fsck_of_a_deep_chain_of_indirect_blocks_is_a_problem_not_a_crash():
    """1,000 real indirect blocks, each the only child of the next (every hash
    right): the checker reports the nesting instead of recursing 2,000 frames."""
    from vtstore.tree.check import check

    store = MemoryStore()
    b = HashCodeBlock(store.add(b"leaf data"), 9)
    for _ in range(1000):
        b = IndirectBlock(store.add(b.encode()), 9)
    c = check(b, store)
    assert any("nested more than 64" in p for p in c.problems), c.problems
    shallow = IndirectBlock(store.add(HashCodeBlock(store.add(b"x"), 1).encode()), 1)
    assert check(shallow, store).problems == []


def test_vt_cat_of_an_indirect_claiming_the_wrong_span(tmp_path):
    datadir = tmp_path / "store"
    kids = LiteralBlock(b"abcdefghij").encode() * 5 + RLEBlock(10, 1).encode()
    f = tmp_path / "kids"
    f.write_bytes(kids)
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-S", str(datadir), "save", str(f)],
        capture_output=True,
        text=True,
        check=True,
    )
    stored = parse_all(r.stdout.strip())
    assert isinstance(stored, HashCodeBlock)
    bad = IndirectBlock(stored.hashcode, HUGE)
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-S", str(datadir), "cat", str(bad)],
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 1 and r.stdout == b""
    assert b"Traceback" not in r.stderr and b"children span 60" in r.stderr


def test_directory_claiming_a_huge_run_is_refused_before_allocation():
    store = MemoryStore()
    for block in (RLEBlock(HUGE, 1), RLEBlock(1000, 1), SubBlock(RLEBlock(HUGE, 1), 0, 4096)):
        with pytest.raises(FormatError):
            dir_entries(DirDirent("d", block=block), store)
    # an indirect block repeating one real directory leaf past the limit
    leaf = make_dir([FileDirent("a")], store).block
    n = MAX_DIR_DATA // leaf.span + 1
    h = store.add(leaf.encode() * 2)
    with pytest.raises(FormatError, match="over the limit"):
        read_dir_data(IndirectBlock(h, leaf.span * n), store)
    vt("ls", str(DirDirent("d", block=RLEBlock(HUGE, 1))), check_rc=1)


# -- item 11: deep nesting ----------------------------------------------------------


def test_subblocks_up_to_the_limit_round_trip_in_both_forms():
    b = LiteralBlock(b"hello, world")
    for _ in range(MAX_SUBBLOCK_DEPTH):
        b = SubBlock(b, 1, b.span - 1) if b.span > 1 else SubBlock(b, 0, 1)
    assert decode_blockref(b.encode()) == b
    assert parse_all(str(b)) == b
    d = FileDirent("f", block=b, prev=b)
    assert decode_dirent(d.encode()) == d
    assert parse_dirent(str(d)) == d
    with pytest.raises(ValueError, match="nested more than"):
        SubBlock(b, 0, 1)


@pytest.mark.parametrize("depth", [MAX_SUBBLOCK_DEPTH + 1, 600, 5000])
def test_hostile_nested_binary_ref_is_a_format_error(depth):
    raw = nested_binary_subblocks(depth)
    with pytest.raises(FormatError, match="nested more than 64"):
        decode_blockref(raw)
    # inside a dirent, and inside a directory
    raw_d = encode_varint(0) + encode_varint(1) + encode_bytes(b"f")
    raw_d += encode_varint(4) + encode_bytes(raw)
    with pytest.raises(FormatError):
        decode_dirent(raw_d)


def test_nested_binary_ref_at_the_limit_decodes():
    assert decode_blockref(nested_binary_subblocks(MAX_SUBBLOCK_DEPTH)).span == 1


@pytest.mark.parametrize(
    "text",
    [
        "SubB{block:" * 300 + 'LB{data:"x"}' + ",offset:0,span:1}" * 300,  # ~8 KB
        "SubB{block:" * 70 + 'LB{data:"x"}' + ",offset:0,span:1}" * 70,  # 65 sub-blocks
        "D{name:" + "[" * 3000,
        "x-vt:/" + "F{block:" * 500,
    ],
    ids=["subb-300", "subb-70", "lists", "x-vt"],
)
def test_hostile_nested_text_ref_is_one_error_line(text):
    with pytest.raises(FormatError):
        parse_all(text.removeprefix("x-vt:/"))
    r = vt("cat", text, check_rc=1)
    assert r.stderr.count(b"\n") == 1 and b"nested more than" in r.stderr


# -- item 12: over-long numbers -------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "RLE{span:" + "9" * 5000 + ",octet:65}",
        "RLE{span:-" + "1" * 5000 + ",octet:65}",
        "RLE{span:1,octet:" + "0" * 5000 + "}",
        "RLE{span:18446744073709551616,octet:65}",
        "SubB{block:RLE{span:18446744073709551615,octet:1},offset:18446744073709551616,span:0}",
        "F{meta:{mtime_ns:" + "7" * 4301 + "}}",
        "F{meta:{uid:4294967296}}",
        "F{meta:{mtime_ns:9223372036854775808}}",
        'Dev{name:"x",rdev:["c",4294967296,1]}',
        'HardLink{name:"x",ino:18446744073709551616}',
        "B{hash:sha1:" + "ab" * 32 + ",span:1}",
        "B{hash:blake3:" + "ab" * 20 + ",span:1}",
        'LB{data:"' + "x" * 2049 + '"}',  # longer than the binary reader takes
    ],
)
def test_numbers_out_of_range_are_format_errors(text):
    with pytest.raises(FormatError):
        parse_all(text)
    r = vt("cat", text, check_rc=1)
    assert r.stderr.count(b"\n") == 1


def test_largest_numbers_still_parse():
    assert parse_all("RLE{span:18446744073709551615,octet:255}").span == 2**64 - 1
    d = parse_dirent(
        'F{name:"x",meta:{uid:4294967295,gid:0,mtime_ns:-9223372036854775808,'
        "ctime_ns:9223372036854775807}}"
    )
    assert decode_dirent(d.encode()) == d
    assert parse_all("-" + "9" * 20) == -int("9" * 20)
    lit = parse_all('LB{data:"' + "x" * 2048 + '"}')
    assert decode_blockref(lit.encode()) == lit


def test_binary_varint_longer_than_ten_octets_is_a_format_error():
    body = encode_varint(2) + b"\xff" * 10 + b"\x01" + encode_varint(1) + b"A"
    with pytest.raises(FormatError, match="longer than 10"):
        decode_blockref(encode_bytes(body))


# -- the rest of its kind -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["..", ".", "a/b", "/", "nul\0x", "../../etc"])
def test_unsafe_names_stay_refused_in_both_forms(name):
    raw = encode_varint(0) + encode_varint(1) + encode_bytes(name.encode())
    with pytest.raises(FormatError, match="unsafe dirent name"):
        decode_dirent(raw)
    with pytest.raises(FormatError):
        parse_dirent(str(FileDirent("ok")).replace('"ok"', repr(name).replace("'", '"')))


def test_wrong_hash_length_for_its_class_in_binary():
    # a sha1 id followed by a blake3-sized digest: the extra octets are not a hashcode
    body = encode_varint(0) + encode_varint(5) + Hash_SHA1.from_data(b"").encode() + b"\0" * 12
    b = decode_blockref(encode_bytes(body))  # extra octets in a body are skipped...
    assert isinstance(b.hashcode, Hash_SHA1)
    body = encode_varint(0) + encode_varint(5) + encode_varint(2) + b"\0" * 20  # ...short ones not
    with pytest.raises(FormatError, match="truncated"):
        decode_blockref(encode_bytes(body))


@pytest.mark.parametrize(
    "text",
    [
        'SymLink{name:"l",target:"a\\x00b"}',
        'F{name:"f",meta:{user:"ro\\x00ot"}}',
        'F{name:"f",meta:{group:"\\x00"}}',
        'F{name:"f",meta:{xattrs:[["user.a\\x00b","v"]]}}',
        'F{name:"f",meta:{xattrs:[["","v"]]}}',
    ],
)
def test_names_no_system_call_takes_are_refused_in_both_forms(text):
    """A NUL in a symlink target, owner or xattr name would be a ValueError in
    export's symlink/getpwnam/setxattr: it is a FormatError at decode instead,
    in text and in binary, where both stat-cache scanners defer to the decoder."""
    from vtstore.tree import dirscan

    with pytest.raises(FormatError, match="NUL|empty"):
        parse_dirent(text)
    if "\\x00" in text:  # the same dirent in binary, the NUL put back
        raw = parse_dirent(text.replace("\\x00", "x")).encode()
        i = raw.index(b"x")
        bad = raw[:i] + b"\0" + raw[i + 1 :]
    else:  # a metadata field list with one xattr of an empty name
        xattr = encode_varint(8) + encode_bytes(encode_bytes(b"") + b"v")
        bad = encode_varint(0) + encode_varint(1) + encode_bytes(b"f")
        bad += encode_varint(2) + encode_bytes(xattr)
    assert dirscan.py_scan_dirent(bad) is None
    if dirscan.c_scan_dirent is not None:
        assert dirscan.c_scan_dirent(bad, 0, len(bad)) is None
    with pytest.raises(FormatError, match="NUL|empty"):
        decode_dirent(bad)
