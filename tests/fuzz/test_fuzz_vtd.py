"""Fuzz the `.vtd` data file decoders (vtstore.stores.vtd): the magic and header
record, record scanning, payload decoding (plain and zstd) and the entries of a
blocks payload.

Two decoders: a whole file as the stores read one (`read_header`, `scan_records`,
then every good record decoded and its entries listed), and a single record whose
CRC is made right after mutating, so that the mutations reach the payload
decoders (a flipped zstd frame header, a lying entry length) instead of stopping
at the CRC.  A zstd frame claiming a huge content size must be refused before
anything of that size is allocated.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc

import pytest
import zstandard

from vtstore.codec import encode_varint
from vtstore.errors import FormatError
from vtstore.stores import vtd
from vtstore.stores.vtdio import crc32

UUID = "00112233445566778899aabbccddeeff"


def _blocks(seed: int) -> list[bytes]:
    text = b"the quick brown fox jumps over the lazy dog " * (7 + seed)
    return [b"hello", b"", text, bytes(range(256)), os.urandom(0) + b"\x00" * 300]


def _record(flags: int, payload: bytes) -> bytes:
    """A record with a right CRC for any flags (even ones `encode_record` refuses)."""
    head = encode_varint(flags) + encode_varint(len(payload))
    return head + payload + crc32(payload, crc32(head)).to_bytes(4, "big")


def _file_seeds() -> list[bytes]:
    header = vtd.encode_header("blake3", UUID)
    plain = vtd.FrameEncoder(compress=False)
    packed = vtd.FrameEncoder(level=3)
    seeds = [header]
    for i in range(3):
        frames = [plain.encode(_blocks(i)).record, packed.encode(_blocks(i) * 4).record]
        assert frames[1][0] == vtd.TYPE_BLOCKS | vtd.ENC_ZSTD
        seeds.append(header + b"".join(frames))
        seeds.append(header + frames[1] + frames[0] + frames[1][: len(frames[1]) // 2])
    seeds.append(vtd.encode_header("sha1", UUID, note="x" * 50) + plain.encode([b"a"]).record)
    return seeds


def _record_seeds() -> list[bytes]:
    """`flags octet + payload`: what `_one_record` wraps in a record with a right CRC."""
    payload, _ = vtd.encode_entries(_blocks(1))
    z = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(payload * 3)
    header = json.dumps({"hashclass": "blake3", "uuid": UUID, "version": 1}).encode()
    return [
        bytes([vtd.TYPE_BLOCKS | vtd.ENC_PLAIN]) + payload,
        bytes([vtd.TYPE_BLOCKS | vtd.ENC_ZSTD]) + z,
        bytes([vtd.TYPE_HEADER | vtd.ENC_PLAIN]) + header,
        bytes([vtd.TYPE_BLOCKS | vtd.ENC_PLAIN]) + b"\x00",
    ]


def _decode_records(buf, start: int) -> int:
    n = 0
    for ev in vtd.scan_records(buf, start, committed=len(buf) // 2):
        if isinstance(ev, vtd.Record):
            stored = buf[ev.payload_offset : ev.payload_offset + ev.payload_length]
            payload = vtd.decode_payload(ev.flags, stored)
            for off, length in vtd.iter_entries(payload):
                assert 0 <= off and off + length <= len(payload)
                n += 1
        else:
            assert 0 <= ev.offset < ev.end <= len(buf) and ev.reason
    return n


def _whole_file(data: bytes) -> None:
    meta, start = vtd.read_header(data)
    assert isinstance(meta["hashclass"], str) and start <= len(data)
    _decode_records(data, start)


def _one_record(data: bytes) -> None:
    if not data:
        raise FormatError("empty")
    flags, payload = data[0], data[1:]
    rec = _record(flags, payload)
    if flags & vtd.TYPE_MASK == vtd.TYPE_HEADER:
        vtd.read_header(vtd.MAGIC + rec)
    else:
        _decode_records(rec, 0)


def test_fuzz_vtd_files(fuzz):
    t0 = time.perf_counter()
    res = fuzz(_whole_file, _file_seeds())
    assert res.failures == [], res.summary() + "\n" + "\n".join(map(repr, res.failures[:10]))
    assert res.accepted > res.tried // 20, res.summary()
    print(res.summary(), f"{time.perf_counter() - t0:.1f} s")


def test_fuzz_vtd_records(fuzz):
    t0 = time.perf_counter()
    res = fuzz(_one_record, _record_seeds())
    assert res.failures == [], res.summary() + "\n" + "\n".join(map(repr, res.failures[:10]))
    assert res.accepted > res.tried // 20, res.summary()
    print(res.summary(), f"{time.perf_counter() - t0:.1f} s")


# -- the cases the fuzzer is after, pinned --------------------------------------


def _zstd_claiming(content_size: int) -> bytes:
    """A small zstd frame whose header claims `content_size` octets."""
    z = zstandard.ZstdCompressor(write_content_size=True).compress(b"\x05hello")
    params = zstandard.get_frame_parameters(z)
    assert params.content_size == 6
    # rewrite the frame header: magic, descriptor with an 8-octet content size
    fhd = 0xC0 | 0x20  # FCS field 8 octets, single segment
    body = z[4 + 2 :]  # skip magic, descriptor and the 1-octet FCS of the original
    assert z[4] & 0xC0 == 0 and z[4] & 0x20  # a 1-octet FCS, single segment
    return z[:4] + bytes([fhd]) + content_size.to_bytes(8, "little") + body


@pytest.mark.parametrize("claim", [vtd.MAX_PAYLOAD + 1, 1 << 40, (1 << 64) - 2])
def test_a_zstd_bomb_is_refused_without_allocating(claim):
    z = _zstd_claiming(claim)
    assert zstandard.get_frame_parameters(z).content_size == claim
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="content size"):
            vtd.decode_payload(vtd.TYPE_BLOCKS | vtd.ENC_ZSTD, z)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


def test_a_lying_content_size_is_a_format_error():
    """The frame says 6 octets less than it holds, or more: refused either way."""
    real = zstandard.ZstdCompressor(write_content_size=True).compress(b"x" * 1000)
    for claim in (6, 5000):
        body = real[4 + 2 + 1 :] if real[4] & 0xC0 == 0x40 else None
        if body is None:
            pytest.skip("frame header layout changed")
        z = real[:4] + bytes([0xC0 | 0x20]) + claim.to_bytes(8, "little") + body
        with pytest.raises(FormatError):
            vtd.decode_payload(vtd.TYPE_BLOCKS | vtd.ENC_ZSTD, z)


@pytest.mark.parametrize(
    "meta",
    [
        {"hashclass": 5, "uuid": UUID},
        {"hashclass": ["blake3"], "uuid": UUID},
        {"hashclass": "blake3", "uuid": 7},
        {"hashclass": ""},
        [1, 2],
    ],
)
def test_header_fields_of_the_wrong_type(meta):
    rec = _record(vtd.TYPE_HEADER, json.dumps(meta).encode())
    with pytest.raises(FormatError):
        vtd.read_header(vtd.MAGIC + rec)


def test_a_deeply_nested_header_is_a_format_error():
    rec = _record(vtd.TYPE_HEADER, b"[" * 200_000)
    with pytest.raises(FormatError):
        vtd.read_header(vtd.MAGIC + rec)
