"""Format scanners on real files: the boundaries they propose, and streaming."""

from __future__ import annotations

import io
import itertools
import random
import shutil
import struct
import subprocess
import tarfile
import zipfile

import pytest

from vtstore.chunking import ChunkParams
from vtstore.chunking.scanners.base import ParserScanner
from vtstore.chunking.scanners.gzip import GzipScanner
from vtstore.chunking.scanners.mail import EmailScanner, MboxScanner
from vtstore.chunking.scanners.mp3 import MP3Scanner, frame_length
from vtstore.chunking.scanners.mp4 import MP4Scanner
from vtstore.chunking.scanners.tar import TarScanner
from vtstore.chunking.scanners.text import KEYWORDS, TextScanner
from vtstore.chunking.scanners.vtd import VTDScanner
from vtstore.chunking.scanners.zip import ZipScanner

P = ChunkParams()
FIRST_WORDS = {k.split()[0].encode() for k in KEYWORDS}


def propose(cls, data: bytes, splits=(), params=P) -> list[int]:
    """All proposals of a fresh `cls` scanner fed `data` cut at `splits`."""
    sc = cls(params)
    out, prev = [], 0
    for at in [*splits, len(data)]:
        out += sc.feed(memoryview(data)[prev:at])
        prev = at
    return out + sc.finish()


def assert_split_invariant(cls, data: bytes, seed: int = 0) -> list[int]:
    whole = propose(cls, data)
    rnd = random.Random(seed)
    for k in (1, 3, 17):
        splits = sorted(rnd.randrange(len(data) + 1) for _ in range(k))
        assert propose(cls, data, splits) == whole, (cls.name, splits)
    if len(data) < 300_000:
        assert propose(cls, data, range(1, len(data), 997)) == whole
    assert whole == sorted(set(whole))
    return whole


def test_tar_members_and_data_starts(tmp_path, formats):
    path = tmp_path / "t.tar"
    formats.build_tar(path)
    data = path.read_bytes()
    props = assert_split_invariant(TarScanner, data)
    with tarfile.open(path) as tf:
        members = tf.getmembers()
    for m in members:
        assert m.offset in props  # the first header of the member (pax header included)
        assert (m.offset_data in props) == (m.size >= 4096)
    last = members[-1]
    assert props[-1] == last.offset_data + -(-last.size // 512) * 512  # end-of-archive


def test_zip_entries(tmp_path, randbytes):
    path = tmp_path / "z.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(12):
            method = zipfile.ZIP_DEFLATED if i % 2 else zipfile.ZIP_STORED
            zf.writestr(
                zipfile.ZipInfo(f"f{i}.bin", (2020, 1, 1, 0, 0, 0)),
                randbytes(1000 * i + 10, i),
                method,
            )
    data = path.read_bytes()
    props = assert_split_invariant(ZipScanner, data)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    for zi in infos:
        assert zi.header_offset in props
    central = data.index(b"PK\x01\x02")
    assert props[-1] == central


def test_zip_streamed_entries_end_the_walk():
    buf = io.BytesIO()

    class Unseekable(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            return buf.write(b)

    with zipfile.ZipFile(Unseekable(), "w") as zf:
        zf.writestr("a", b"x" * 10000)
        zf.writestr("b", b"y" * 10000)
    props = propose(ZipScanner, buf.getvalue())
    assert props == [0] or props[0] == 0  # the walk stops; nothing wrong is proposed
    assert all(p < len(buf.getvalue()) for p in props)


def test_mbox_messages_and_bodies(tmp_path, formats):
    path = tmp_path / "m.mbox"
    formats.build_mbox(path, 40)
    data = path.read_bytes()
    props = assert_split_invariant(MboxScanner, data)
    starts = [0] + [i + 2 for i in range(len(data)) if data.startswith(b"\n\nFrom ", i)]
    assert len(starts) == 40
    bodies = [data.index(b"\n\n", s) + 2 for s in starts]
    assert props == sorted(set(starts[1:] + bodies))


def test_mbox_crlf_and_from_quoting():
    msg = b"From a@b Thu Jan  1 00:00:00 2026\r\nSubject: x\r\n\r\nbody\r\nnot From here\r\n\r\n"
    data = msg + msg.replace(b"body", b"other body")
    props = propose(MboxScanner, data)
    assert props == [msg.index(b"body"), len(msg), len(msg) + msg.index(b"body")]


def test_eml_header_body_boundary():
    data = b"From: a@b\nSubject: s\n\nline\n\nFrom the body, not a message\n"
    assert propose(EmailScanner, data) == [data.index(b"line")]
    assert propose(EmailScanner, data, range(1, len(data))) == [data.index(b"line")]


def test_text_definitions(source_text):
    text = source_text(2 << 20)
    props = assert_split_invariant(TextScanner, text)
    assert len(props) > 100
    for a, b in zip(props, props[1:], strict=False):
        assert b - a >= P.avg_size // 2
    for p in props:
        assert text[p - 1 : p] == b"\n"
        line = text[p : p + 40].lstrip(b" \t")
        assert line[:1] == b"@" or line.split(None, 1)[0] in FIRST_WORDS, line


def test_gzip_members(formats, randbytes):
    parts = [randbytes(30_000 + 1000 * i, i) for i in range(6)] + [
        formats.prose(random.Random(1), 50_000).encode()
    ]
    data, starts = formats.gzip_members(parts)
    props = assert_split_invariant(GzipScanner, data)
    assert props == starts[1:]


def _varint(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def _record(flags: int, payload: bytes) -> bytes:
    import zlib

    head = _varint(flags) + _varint(len(payload))
    return head + payload + zlib.crc32(payload, zlib.crc32(head)).to_bytes(4, "big")


def test_vtd_records(randbytes):
    rnd = random.Random(5)
    data = b"VTD\x01" + _record(4, b'{"hashclass":"blake3","uuid":"0"}')
    starts = [4]
    for i in range(300):
        payload = randbytes(rnd.randrange(1, 20000), i)
        starts.append(len(data))
        data += _record(i % 2, payload)
    props = assert_split_invariant(VTDScanner, data)
    assert props == starts


def test_vtd_matches_the_stores_layer_format(tmp_path, randbytes):
    vtd = pytest.importorskip("vtstore.stores.vtd")
    data = vtd.encode_header("blake3", "00" * 16)
    starts = [4]
    for i in range(50):
        starts.append(len(data))
        payload, _ = vtd.encode_entries([randbytes(3000, i), randbytes(5000, i + 100)])
        data += vtd.encode_record(vtd.TYPE_BLOCKS | vtd.ENC_PLAIN, payload)
    assert propose(VTDScanner, data) == starts


def test_vtd_stops_at_garbage(randbytes):
    good = _record(0, randbytes(5000))
    data = good + b"\xff" * 30 + randbytes(10000)
    assert propose(VTDScanner, data) == [0]
    assert propose(VTDScanner, _record(9, b"x") + good) == []  # unknown flags


def _mp3_frames(n: int, seed: int = 0) -> bytes:
    rnd = random.Random(seed)
    out = b""
    for _ in range(n):
        pad = rnd.randrange(2)
        hdr = bytes([0xFF, 0xFB, 0x90 | (pad << 1), 0x64])  # MPEG1 L3 128k 44.1k
        size = frame_length(hdr)
        assert size == 417 + pad
        out += hdr + rnd.randbytes(size - 4)
    return out


def test_mp3_frame_length_of_known_headers():
    assert frame_length(b"\xff\xfb\x90\x64") == 417
    assert frame_length(b"\xff\xfb\x92\x64") == 418
    assert frame_length(b"\xff\xf3\x90\x64") == 261  # MPEG2 L3 80k 22.05k: 72*80000/22050
    assert frame_length(b"\xff\xfb\xf0\x64") == 0  # bad bitrate index
    assert frame_length(b"ID3\x04") == 0


def test_mp3_tag_and_frames():
    tag_body = b"\0" * 2000
    size = len(tag_body)
    syncsafe = bytes([(size >> 21) & 127, (size >> 14) & 127, (size >> 7) & 127, size & 127])
    tag = b"ID3\x04\x00\x00" + syncsafe + tag_body
    frames = _mp3_frames(400)
    v1 = b"TAG" + b"\0" * 125
    data = tag + frames + v1
    props = assert_split_invariant(MP3Scanner, data)
    assert props[0] == len(tag)
    assert props[-1] == len(tag) + len(frames)
    # frame starts in between, spaced, each a real frame header
    mids = props[1:-1]
    assert len(mids) > 3
    for a, b in zip(props, mids, strict=False):
        assert b - a >= 2 * P.avg_size
    for p in mids:
        assert frame_length(data[p : p + 4]) > 0


@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="no ffmpeg")
def test_mp3_made_by_ffmpeg(tmp_path):
    path = tmp_path / "a.mp3"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
         "sine=frequency=440:duration=20", "-c:a", "libmp3lame", "-metadata", "title=t", str(path)],
        check=True,
    )  # fmt: skip
    data = path.read_bytes()
    props = assert_split_invariant(MP3Scanner, data)
    assert data[:3] == b"ID3" and props[0] > 10
    assert (
        frame_length(data[props[0] : props[0] + 4]) > 0 or data[props[0] : props[0] + 3] != b"ID3"
    )
    assert len(props) > 5


def test_mp4_boxes_and_samples(formats):
    data = formats.build_mp4(b"title")
    props = assert_split_invariant(MP4Scanner, data)
    boxes = formats.boxes_named(
        data, {b"moov", b"trak", b"stbl", b"stsz", b"stco", b"udta", b"ilst", b"mdat"}
    )
    for off, _ in boxes:
        assert off in props
    mdat_off, mdat_size = boxes[-1]
    inside = [p for p in props if p > mdat_off + 8]
    assert len(inside) > 50
    assert all(b - a >= P.avg_size for a, b in zip([mdat_off + 8, *inside], inside, strict=False))
    assert max(inside) < mdat_off + mdat_size


def test_mp4_moov_at_end_gets_box_cuts_only(formats):
    data = formats.build_mp4(b"t")
    ftyp_len = struct.unpack(">I", data[:4])[0]
    moov_len = struct.unpack(">I", data[ftyp_len : ftyp_len + 4])[0]
    moov = data[ftyp_len : ftyp_len + moov_len]
    rest = data[ftyp_len + moov_len :]
    moved = data[:ftyp_len] + rest + moov  # offsets now wrong, but only boxes matter
    props = propose(MP4Scanner, moved)
    assert ftyp_len in props and ftyp_len + 8 in props
    assert ftyp_len + len(rest) in props
    assert not [p for p in props if ftyp_len + 8 < p < ftyp_len + len(rest)]


@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="no ffmpeg")
def test_mp4_made_by_ffmpeg(tmp_path, formats):
    path = tmp_path / "v.mp4"
    formats.ffmpeg_mp4(path, "x")
    data = path.read_bytes()
    props = assert_split_invariant(MP4Scanner, data)
    for off, _ in formats.boxes_named(data, {b"moov", b"trak", b"stco", b"mdat"}):
        assert off in props


def test_parser_scanner_requests():
    class Echo(ParserScanner):
        name = "echo"

        def parse(self):
            a = yield self.peek(3)
            b = yield self.read(3)
            assert a == b
            yield self.skip(10)
            self.propose(self.pos)
            c = yield self.read(100)
            self.got = c

    sc = Echo()
    data = bytes(range(50))
    for i in range(len(data)):
        assert sc.feed(data[i : i + 1]) == ([13] if i == 12 else [])
    assert sc.finish() == []
    assert sc.got == data[13:]
    with pytest.raises(ValueError):
        ParserScanner.read(-1)


def test_mp4_moov_longer_than_a_buffer_keeps_the_scanner(formats):
    """Boxes inside a moov read whole are proposed only once it is read: those the
    chunker has passed are dropped, not the whole scanner (a faststart moov past a
    buffer switched the scanner off, and mdat lost its sample cuts)."""
    from vtstore.chunking import BlockifyStats, chunks_of

    data = formats.build_mp4(b"x" * 300_000)  # a moov of 300 KB, buffers of 64 KiB
    stats = BlockifyStats()
    chunks = list(chunks_of(data, scanner="mp4", buffer_size=65536, stats=stats))
    assert b"".join(chunks) == data
    assert stats.scanner_failed is None
    mdat_off, _ = formats.boxes_named(data, {b"mdat"})[-1]
    ends = set(itertools.accumulate(map(len, chunks)))
    assert mdat_off in ends
    assert len([e for e in ends if e > mdat_off + 8]) > 50
