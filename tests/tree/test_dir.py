"""Directory encoding: sorted, chunked at entry boundaries, salted."""

import pytest

from vtstore.blocks import LiteralBlock
from vtstore.codec import encode_bytes, encode_varint
from vtstore.errors import FormatError
from vtstore.stores.memory import MemoryStore
from vtstore.tree import Dirent, Meta
from vtstore.tree.dir import (
    decode_dir_data,
    dir_entries,
    encode_dir_block,
    make_dir,
    new_salt,
    resolve,
    walk,
)
from vtstore.tree.dirent import T_DIR, T_FILE


def files(n, tag=b""):
    return [
        Dirent(
            T_FILE,
            name=f"file{i:06d}",
            block=LiteralBlock(tag + str(i).encode()),
            meta=Meta(mode=0o644),
        )
        for i in range(n)
    ]


def test_entries_sorted_and_unique():
    S = MemoryStore()
    d = make_dir(reversed(files(50)), S)
    got = dir_entries(d, S)
    assert [e.name for e in got] == sorted(e.name for e in files(50))
    with pytest.raises(FormatError, match="duplicate"):
        make_dir(files(3) + files(1), S)


def test_empty_dir():
    S = MemoryStore()
    d = make_dir([], S)
    assert dir_entries(d, S) == []
    assert list(walk(d, S)) == [("", d)]


def test_one_change_in_a_huge_directory_rewrites_few_blocks():
    S = MemoryStore()
    entries = files(100_000)
    b1 = encode_dir_block(entries, S)
    before = len(S)
    assert before > 50  # the directory is spread over many blocks
    changed = list(entries)
    changed[54_321] = changed[54_321].with_changes(block=LiteralBlock(b"new content"))
    b2 = encode_dir_block(changed, S)
    assert b1 != b2
    assert len(S) - before <= 5, len(S) - before
    # inserting an entry is just as cheap
    n = len(S)
    encode_dir_block(changed + [Dirent(T_FILE, name="file054321a")], S)
    assert len(S) - n <= 5


def test_a_small_directory_is_one_block_whatever_its_names():
    from vtstore.blocks import HashCodeBlock
    from vtstore.tree.dir import MIN_PIECE

    S = MemoryStore()
    # 40 entries of ~50 octets: some names are boundary names, but the data is
    # under MIN_PIECE, so it stays whole
    entries = files(40)
    assert sum(len(e.encode()) for e in entries) < MIN_PIECE
    b = encode_dir_block(entries, S)
    assert type(b) in (HashCodeBlock, LiteralBlock)
    assert len(S) <= 1
    # a big one is still cut at boundary names into several leaves
    big = encode_dir_block(files(3000), S)
    assert type(big).__name__ == "IndirectBlock"


def test_salt_changes_hash_keeps_listing_and_dedup():
    S = MemoryStore()
    entries = files(5000)
    plain = encode_dir_block(entries, S)
    salt = new_salt()
    s1 = encode_dir_block(entries, S, salt=salt)
    s2 = encode_dir_block(entries, S, salt=new_salt())
    assert len({plain, s1, s2}) == 3
    got, got_salt = decode_dir_data(s1.data(S))
    assert got_salt == salt and [e.name for e in got] == [e.name for e in entries]
    n = len(S)
    changed = list(entries)
    changed[100] = changed[100].with_changes(block=LiteralBlock(b"zz"))
    encode_dir_block(changed, S, salt=salt)
    assert len(S) - n <= 5


def test_decode_refuses_disorder_and_bad_headers():
    a = Dirent(T_FILE, name="a").encode()
    b = Dirent(T_FILE, name="b").encode()
    head = encode_varint(1) + encode_varint(0)
    assert [e.name for e in decode_dir_data(head + encode_bytes(a) + encode_bytes(b))[0]] == [
        "a",
        "b",
    ]
    with pytest.raises(FormatError, match="out of order"):
        decode_dir_data(head + encode_bytes(b) + encode_bytes(a))
    with pytest.raises(FormatError, match="out of order"):
        decode_dir_data(head + encode_bytes(a) + encode_bytes(a))
    with pytest.raises(FormatError, match="version"):
        decode_dir_data(encode_varint(9) + encode_varint(0))
    with pytest.raises(FormatError, match="without a name"):
        decode_dir_data(head + encode_bytes(Dirent(T_FILE).encode()))


def test_resolve_and_walk():
    S = MemoryStore()
    inner = make_dir(files(3), S, name="inner")
    top = make_dir([inner, Dirent(T_FILE, name="z")], S)
    assert resolve(top, "inner/file000001", S).name == "file000001"
    assert resolve(top, "/inner/", S) == inner
    with pytest.raises(FormatError, match="no such entry"):
        resolve(top, "nope", S)
    with pytest.raises(FormatError, match="climbs"):
        resolve(top, "inner/../z", S)
    paths = [p for p, _ in walk(top, S)]
    assert paths == ["", "inner", "inner/file000000", "inner/file000001", "inner/file000002", "z"]
    assert resolve(top, "", S).type == T_DIR
