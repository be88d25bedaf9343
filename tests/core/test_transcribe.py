"""The text form: exact round trips and located parse errors."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vtstore.blocks import LiteralBlock, RLEBlock
from vtstore.errors import FormatError
from vtstore.hashes import Hash_SHA1
from vtstore.transcribe import (
    Binary,
    parse_all,
    parse_block,
    quote_bytes,
    quote_text,
    transcribe_value,
)


@given(st.text())
def test_text_round_trip(s):
    assert parse_all(quote_text(s)) == s


@given(st.binary())
def test_bytes_round_trip(b):
    q = quote_bytes(b)
    assert q.isascii()
    assert parse_all(q).encode("latin-1") == b


@given(st.binary(max_size=32))
def test_literal_blocks_round_trip(b):
    lb = LiteralBlock(b)
    assert parse_block(str(lb)) == lb


def test_literal_with_awkward_content():
    lb = LiteralBlock('{}",:\\é\0'.encode())
    assert parse_block(str(lb)) == lb


values = st.recursive(
    st.one_of(st.integers(-(10**20) + 1, 10**20 - 1), st.text(), st.booleans(), st.none()),
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True), kids, max_size=4),
    ),
    max_leaves=10,
)


@given(values)
def test_generic_values_round_trip(v):
    assert parse_all(transcribe_value(v)) == v


@given(st.text(max_size=60))
def test_random_text_only_format_error(s):
    try:
        parse_all(s)
    except FormatError:
        pass


@pytest.mark.parametrize(
    "text,where",
    [
        ("B{hash:blake3:00,span:1}", "offset 7"),
        ("RLE{span:3,octet:300}", "offset 0"),
        ('LB{data:"abc}', "offset 8"),
        ("RLE{span:3 octet:1}", "offset 10"),
        ("XX{a:1}", "offset 0"),
        ("RLE{span:3,octet:1}junk", "offset 19"),
        ("RLE{span:3,span:1}", "offset 11"),
        ("RLE{span:3}", "missing"),
        ("RLE{span:3,octet:1,extra:2}", "unknown fields"),
        ('LB{data:"\\q"}', "bad escape"),
        ('LB{data:"\\u0100"}', "above"),
    ],
)
def test_parse_errors_are_located(text, where):
    with pytest.raises(FormatError, match=where):
        parse_block(text)


def test_hashcode_values_and_binary_marker():
    h = Hash_SHA1.from_data(b"")
    assert parse_all(transcribe_value({"h": h})) == {"h": h}
    assert transcribe_value(Binary(b"\x00a")) == '"\\x00a"'
    assert parse_block(" RLE{span:0,octet:0}\n") == RLEBlock(0, 0)
