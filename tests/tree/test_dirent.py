"""Dirents and metadata: binary and text round trips, hostile names, future fields."""

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vtstore.blocks import LiteralBlock, RLEBlock
from vtstore.codec import encode_bytes, encode_varint
from vtstore.errors import FormatError
from vtstore.hashes import Hash_SHA1
from vtstore.transcribe import quote_text
from vtstore.tree import Dirent, Meta, decode_dirent, parse_dirent
from vtstore.tree.dirent import F_NAME, T_DEVICE, T_FILE, TYPE_NAMES

names = st.text(min_size=1, max_size=20).filter(
    lambda s: s not in (".", "..") and "/" not in s and "\0" not in s
)
c_text = st.text(max_size=8).filter(lambda s: "\0" not in s)  # names a system call takes
metas = st.builds(
    Meta,
    mode=st.none() | st.integers(0, 0o7777),
    uid=st.none() | st.integers(0, 2**32 - 1),
    gid=st.none() | st.integers(0, 2**32 - 1),
    user=st.none() | c_text,
    group=st.none() | c_text,
    mtime_ns=st.none() | st.integers(-(2**62), 2**62),
    ctime_ns=st.none() | st.integers(-(2**62), 2**62),
    xattrs=st.lists(st.tuples(c_text.filter(bool), st.binary(max_size=20)), max_size=3).map(
        lambda xs: tuple(sorted(dict(xs).items()))
    ),
    mime_type=st.none() | st.text(max_size=10),
)
blocks = st.one_of(
    st.builds(RLEBlock, st.integers(0, 2**40), st.integers(0, 255)),
    st.builds(LiteralBlock, st.binary(max_size=32)),
)


@st.composite
def dirents(draw):
    t = draw(st.sampled_from(sorted(TYPE_NAMES)))
    kw = {"name": draw(names | st.just("")), "meta": draw(st.none() | metas)}
    if draw(st.booleans()):
        kw["uuid"] = uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))
    if draw(st.booleans()):
        kw["block"] = draw(blocks)
    if draw(st.booleans()):
        kw["prev"] = draw(blocks)
    if draw(st.booleans()):
        kw["target"] = draw(st.text(max_size=30).filter(lambda s: "\0" not in s))
    if draw(st.booleans()):
        kw["ino"] = draw(st.integers(0, 2**40))
    if t == T_DEVICE:
        kw["rdev"] = (
            draw(st.sampled_from("cb")),
            draw(st.integers(0, 4095)),
            draw(st.integers(0, 2**20)),
        )
    if draw(st.booleans()):
        kw["ext"] = draw(st.binary(max_size=10))
    return Dirent(t, **kw)


@given(dirents())
def test_round_trips(e):
    assert decode_dirent(e.encode()) == e
    assert parse_dirent(str(e)) == e


@given(st.binary(max_size=80))
def test_random_bytes_only_format_error(raw):
    try:
        decode_dirent(raw)
    except FormatError:
        pass


@pytest.mark.parametrize("bad", ["..", ".", "a/b", "/abs", "nul\0", "../x"])
def test_hostile_names_rejected_on_decode(bad):
    raw = encode_varint(T_FILE) + encode_varint(F_NAME) + encode_bytes(bad.encode())
    with pytest.raises(FormatError, match="unsafe dirent name"):
        decode_dirent(raw)
    with pytest.raises(FormatError):
        parse_dirent("F{name:" + quote_text(bad) + "}")


def test_unknown_fields_skipped_unknown_type_refused():
    e = Dirent(T_FILE, name="x", block=LiteralBlock(b"hi"))
    raw = e.encode() + encode_varint(99) + encode_bytes(b"future")
    assert decode_dirent(raw) == e
    with pytest.raises(FormatError, match="unknown dirent type"):
        decode_dirent(encode_varint(42))
    meta = Meta(mode=0o644)
    assert Meta.decode(meta.encode() + encode_varint(77) + encode_bytes(b"zz")) == meta


def test_meta_mode_bits_and_hashcodes_in_text():
    h = Hash_SHA1.from_data(b"x")
    from vtstore.blocks import HashCodeBlock

    e = Dirent(T_FILE, name="f", block=HashCodeBlock(h, 1), meta=Meta(mode=0o7777, mtime_ns=-1))
    assert parse_dirent(str(e)) == e
    with pytest.raises(FormatError):
        Meta.decode(encode_varint(1) + encode_bytes(encode_varint(0o17777)))
