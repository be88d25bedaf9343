"""Hash classes: registry, text/binary/file-name forms, hash of hashcodes."""

import hashlib

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vtstore.errors import FormatError, HashClassMismatchError
from vtstore.hashes import (
    DEFAULT_HASHCLASS,
    Hash_BLAKE3,
    Hash_SHA1,
    Hash_SHA3_256,
    Hash_SHA256,
    HashCode,
    decode_hashcode,
    hash_of_hashcodes,
    hashclass_by_id,
    hashclass_by_name,
    hashclasses,
    parse_hashcode,
    parse_hashcode_filename,
)

ALL = hashclasses()
REFERENCE = {
    "sha1": lambda d: hashlib.sha1(d).digest(),
    "sha256": lambda d: hashlib.sha256(d).digest(),
    "sha3_256": lambda d: hashlib.sha3_256(d).digest(),
    "blake3": lambda d: blake3.blake3(d).digest(),
}


def test_registry_ids_and_default():
    assert [(h.hashname, h.hashid) for h in ALL] == [
        ("sha1", 0),
        ("sha256", 1),
        ("blake3", 2),
        ("sha3_256", 3),
    ]
    assert DEFAULT_HASHCLASS is Hash_BLAKE3
    assert hashclass_by_name("sha3_256") is Hash_SHA3_256
    assert hashclass_by_id(1) is Hash_SHA256
    with pytest.raises(FormatError, match="unknown hash class"):
        hashclass_by_name("md5")
    with pytest.raises(FormatError):
        hashclass_by_id(99)


@pytest.mark.parametrize("H", ALL, ids=lambda h: h.hashname)
@given(data=st.binary(max_size=200))
def test_forms_round_trip(H, data):
    h = H.from_data(data)
    assert bytes(h) == REFERENCE[H.hashname](data)
    assert len(h) == H.digest_size
    assert parse_hashcode(str(h)) == h
    assert parse_hashcode_filename(h.filename) == h
    assert h.filename == f"{h.hex()}.{H.hashname}"
    enc = h.encode()
    assert decode_hashcode(enc) == (h, len(enc))
    assert h.check(data) and not h.check(data + b"x")


@pytest.mark.parametrize("H", ALL, ids=lambda h: h.hashname)
def test_truncated_binary_hashcode(H):
    enc = H.from_data(b"x").encode()
    for cut in range(len(enc)):
        with pytest.raises(FormatError):
            decode_hashcode(enc[:cut])


def test_classes_never_equal_across_hashes():
    # sha256 and blake3 digests have the same length; equal bytes, different hashes
    d = bytes(32)
    assert Hash_SHA256(d) != Hash_BLAKE3(d)
    assert len({Hash_SHA256(d), Hash_BLAKE3(d)}) == 2


def test_bad_text_forms():
    for bad in ["blake3", "blake3:xyz", "blake3:" + "00" * 31, "nohash:00", "sha1:" + "AB" * 20]:
        with pytest.raises(FormatError):
            parse_hashcode(bad)
    with pytest.raises(FormatError):
        Hash_SHA1(b"short")
    with pytest.raises(TypeError):
        HashCode(b"")


@pytest.mark.parametrize("H", ALL, ids=lambda h: h.hashname)
def test_hash_of_hashcodes(H):
    hs = sorted(H.from_data(bytes([i])) for i in range(10))
    expect = H.from_data(b"".join(hs))
    assert hash_of_hashcodes(H, hs) == expect
    assert hash_of_hashcodes(H, []) == H.from_data(b"")
    other = Hash_SHA1 if H is not Hash_SHA1 else Hash_BLAKE3
    with pytest.raises(HashClassMismatchError):
        hash_of_hashcodes(H, [other.from_data(b"")])


@given(st.binary(max_size=50))
def test_random_binary_hashcode_only_format_error(data):
    try:
        decode_hashcode(data)
    except FormatError:
        pass
