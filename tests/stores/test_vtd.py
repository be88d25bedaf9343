"""The data file format: encoding, the test vector of docs/FORMATS.md, scanning,
and what scanning says about torn tails and damage."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtstore.errors import FormatError
from vtstore.stores import vtd
from vtstore.stores.index import FileInfo, IndexEntry

# A whole data file: MAGIC, a header record, one plain blocks record holding the
# blocks b"hello" and b"" (docs/FORMATS.md has the same octets).
HEADER_JSON = b'{"hashclass":"blake3","uuid":"00112233445566778899aabbccddeeff","version":1}'
VECTOR = bytes.fromhex(
    "56544401"  # MAGIC "VTD\x01"
    "04"  # flags: header record, plain
    "4c"  # payload length 76
    + HEADER_JSON.hex()
    + "{:08x}".format(zlib.crc32(b"\x04\x4c" + HEADER_JSON))
    + "00"  # flags: blocks record, plain
    "07"  # payload length 7
    "0568656c6c6f"  # entry: varint(5) "hello"
    "00"  # entry: varint(0) (the empty block)
     + "{:08x}".format(zlib.crc32(bytes.fromhex("00070568656c6c6f00")))
)


FILE_HEX = (
    "56544401044c7b2268617368636c617373223a22626c616b6533222c2275756964223a2230303131"
    "32323333343435353636373738383939616162626363646465656666222c2276657273696f6e223a"
    "317d99d63f6f00070568656c6c6f00d9d94a8d"
)


def test_vector_matches_docs():
    assert VECTOR.hex() == FILE_HEX


def test_vector_encodes():
    hdr = vtd.encode_header("blake3", "00112233445566778899aabbccddeeff")
    frame = vtd.FrameEncoder(compress=False).encode([b"hello", b""])
    assert hdr + frame.record == VECTOR
    assert frame.spans == [(1, 5), (7, 0)]
    assert len(HEADER_JSON) == 0x4C


def test_vector_decodes():
    meta, end = vtd.read_header(VECTOR)
    assert meta == {"hashclass": "blake3", "uuid": "00112233445566778899aabbccddeeff", "version": 1}
    (rec,) = list(vtd.scan_records(VECTOR, end))
    assert isinstance(rec, vtd.Record)
    assert (rec.offset, rec.flags, rec.payload_offset, rec.payload_length) == (end, 0, end + 2, 7)
    payload = vtd.decode_payload(rec.flags, VECTOR[rec.payload_offset : rec.payload_offset + 7])
    assert [payload[o : o + n] for o, n in vtd.iter_entries(payload)] == [b"hello", b""]


def test_index_entry_vector():
    e = IndexEntry(
        filenum=1,
        flags=1,
        payload_offset=130,
        payload_length=70000,
        data_offset=3,
        data_length=8192,
    )
    assert e.encode() == bytes.fromhex("01 01 8102 84a270 03 c000".replace(" ", ""))
    assert IndexEntry.decode(e.encode()) == e
    with pytest.raises(FormatError):
        IndexEntry.decode(e.encode() + b"\x00")
    for bad in (
        e.encode()[:-1],  # a number cut short
        e.encode()[:-2],  # five numbers
        b"\x80\x01" + e.encode()[1:],  # non-canonical
        b"\x81" * 10 + b"\x01" + e.encode()[1:],  # too long
    ):
        with pytest.raises(FormatError):
            IndexEntry.decode(bad)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**62), min_size=6, max_size=6))
def test_index_entry_round_trip(vals):
    e = IndexEntry(*vals)
    assert IndexEntry.decode(e.encode()) == e
    assert IndexEntry.decode(memoryview(e.encode())) == e
    fi = FileInfo(3, "ab" * 16, True, 4096)
    assert FileInfo.decode(3, fi.encode()) == fi


def test_compression_only_when_it_pays():
    enc = vtd.FrameEncoder()
    text = enc.encode([b"the same line again\n" * 500])
    assert text.flags == vtd.TYPE_BLOCKS | vtd.ENC_ZSTD
    assert len(text.record) < 1000
    import os

    rnd = enc.encode([os.urandom(5000)])
    assert rnd.flags == vtd.TYPE_BLOCKS | vtd.ENC_PLAIN
    assert vtd.FrameEncoder(level=0).encode([b"a" * 1000]).flags == vtd.ENC_PLAIN


def test_bad_magic_and_version():
    with pytest.raises(FormatError, match="magic"):
        vtd.read_header(b"NOPE" + VECTOR[4:])
    with pytest.raises(FormatError, match="version"):
        vtd.read_header(b"VTD\x02" + VECTOR[4:])
    with pytest.raises(FormatError):
        vtd.read_header(VECTOR[:10])


def records_file(blocks_per_record: list[list[bytes]], compress=True) -> tuple[bytes, list[int]]:
    enc = vtd.FrameEncoder(compress=compress)
    out = bytearray(vtd.encode_header("blake3", "ab" * 16))
    ends = []
    for blocks in blocks_per_record:
        out += enc.encode(blocks).record
        ends.append(len(out))
    return bytes(out), ends


block_lists = st.lists(
    st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=4), min_size=1, max_size=6
)


@settings(max_examples=60, deadline=None)
@given(block_lists, st.data())
def test_any_torn_tail_is_residue_never_damage(blocks, data):
    buf, ends = records_file(blocks)
    _, start = vtd.read_header(buf)
    cut = data.draw(st.integers(min_value=start, max_value=len(buf)))
    evs = list(vtd.scan_records(buf[:cut], start))
    assert not any(isinstance(e, vtd.Damage) for e in evs)
    good = [e for e in evs if isinstance(e, vtd.Record)]
    assert [r.end for r in good] == [e for e in ends if e <= cut]
    residue = [e for e in evs if isinstance(e, vtd.Residue)]
    assert bool(residue) == (cut not in ends and cut != start)


@settings(max_examples=60, deadline=None)
@given(block_lists, st.data())
def test_a_flipped_byte_before_the_last_record_is_damage(blocks, data):
    blocks = [*blocks, [b"a final record"]]
    buf, ends = records_file(blocks, compress=data.draw(st.booleans()))
    _, start = vtd.read_header(buf)
    pos = data.draw(st.integers(min_value=start, max_value=ends[-2] - 1))
    bad = bytearray(buf)
    bad[pos] ^= 1 << data.draw(st.integers(0, 7))
    evs = list(vtd.scan_records(bytes(bad), start))
    assert any(isinstance(e, vtd.Damage) for e in evs)
    # the scan found its way back to the final record
    assert isinstance(evs[-1], vtd.Record) and evs[-1].end == len(buf)
    # and flagged in flushed data, even a final bad record is damage
    cut = bytes(bad)[: ends[-2]]
    evs = list(vtd.scan_records(cut, start, committed=len(cut)))
    assert any(isinstance(e, vtd.Damage) for e in evs)


def test_resync_over_a_run_of_zeros_is_fast():
    """A crash often leaves zero-filled octets in a file: 32 MiB of them between
    two good records is one Damage, found in well under a second per 16 MiB (each
    zero octet was a candidate record start: 11 s per 16 MiB before)."""
    import os
    import time

    header = vtd.encode_header("blake3", "00" * 16)
    rec = vtd.FrameEncoder(compress=False).encode([os.urandom(1000)]).record
    buf = header + rec + bytes(32 << 20) + rec
    _, start = vtd.read_header(buf)
    t0 = time.perf_counter()
    events = list(vtd.scan_records(buf, start))
    dt = time.perf_counter() - t0
    assert [type(e).__name__ for e in events] == ["Record", "Damage", "Record"]
    assert events[1].end - events[1].offset == 32 << 20
    assert dt < 4, dt
