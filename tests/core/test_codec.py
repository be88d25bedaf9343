"""Varints, length-prefixed bytes and the Reader."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vtstore.codec import Reader, decode_varint, encode_bytes, encode_varint
from vtstore.errors import FormatError


@pytest.mark.parametrize(
    "n,hexform",
    [(0, "00"), (1, "01"), (127, "7f"), (128, "8100"), (16383, "ff7f"), (16384, "818000")],
)
def test_varint_vectors(n, hexform):
    assert encode_varint(n).hex() == hexform
    assert decode_varint(bytes.fromhex(hexform)) == (n, len(hexform) // 2)


@given(st.integers(min_value=0, max_value=2**64))
def test_varint_round_trip(n):
    enc = encode_varint(n)
    assert decode_varint(enc) == (n, len(enc))
    assert decode_varint(b"\x99" + enc, 1) == (n, len(enc) + 1)


@given(st.integers(min_value=128, max_value=2**64))
def test_truncated_varint_is_format_error(n):
    enc = encode_varint(n)
    for cut in range(len(enc)):
        with pytest.raises(FormatError, match="truncated"):
            decode_varint(enc[:cut])


def test_non_canonical_and_overlong_varints_refused():
    with pytest.raises(FormatError, match="non-canonical"):
        decode_varint(b"\x80\x01")
    with pytest.raises(FormatError, match="longer than"):
        decode_varint(b"\xff" * 11 + b"\x01")


def test_negative_varint_refused():
    with pytest.raises(ValueError):
        encode_varint(-1)


@given(st.binary(max_size=40))
def test_random_bytes_decode_or_format_error(data):
    r = Reader(data)
    try:
        while not r.at_end():
            r.lbytes()
    except FormatError:
        pass


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_lbytes_round_trip_zero_copy(items):
    buf = b"".join(encode_bytes(x) for x in items)
    r = Reader(buf)
    got = []
    while not r.at_end():
        mv = r.lbytes()
        assert isinstance(mv, memoryview)
        got.append(bytes(mv))
    assert got == items


def test_reader_truncation_messages_name_offset():
    r = Reader(encode_varint(10) + b"abc")
    with pytest.raises(FormatError, match="offset 0"):
        r.lbytes()
    r = Reader(b"ab")
    r.take(1)
    with pytest.raises(FormatError, match="offset 1"):
        r.take(5)
