"""The native `.vtd` writer helpers: CRC-32 (every implementation against
zlib), blocks payloads, whole records written with pwritev, index values and
sync_file_range."""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import sys
import tempfile
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

_vtdio = pytest.importorskip("vtstore.stores._vtdio")

from vtstore.codec import encode_varint  # noqa: E402
from vtstore.stores import vtd  # noqa: E402
from vtstore.stores.index import IndexEntry  # noqa: E402

IMPLS = _vtdio.crc_implementations()


@pytest.fixture(params=IMPLS)
def impl(request):
    """Run the test under each CRC implementation this CPU has."""
    before = _vtdio.crc_implementation()
    _vtdio.set_crc_implementation(request.param)
    yield request.param
    _vtdio.set_crc_implementation(before)


def test_implementations():
    assert "table" in IMPLS
    assert _vtdio.crc_implementation() == IMPLS[0]
    assert IMPLS[-1] == "table"
    assert set(IMPLS) <= {"vpclmul", "pclmul", "table"}


def test_set_implementation_rejects():
    before = _vtdio.crc_implementation()
    with pytest.raises(ValueError):
        _vtdio.set_crc_implementation("nope")
    with pytest.raises(TypeError):
        _vtdio.set_crc_implementation(3)
    assert _vtdio.crc_implementation() == before
    _vtdio.set_crc_implementation(None)
    assert _vtdio.crc_implementation() == IMPLS[0]
    _vtdio.set_crc_implementation(before)


def test_unsupported_implementation_rejected():
    missing = [name for name in ("vpclmul", "pclmul") if name not in IMPLS]
    if not missing:
        pytest.skip("this CPU runs every implementation")
    with pytest.raises(ValueError):
        _vtdio.set_crc_implementation(missing[0])


# ---- crc32 ----------------------------------------------------------------------


def test_crc32_known_values(impl):
    assert _vtdio.crc32(b"") == 0
    assert _vtdio.crc32(b"123456789") == 0xCBF43926
    assert _vtdio.crc32(b"", 0x12345678) == 0x12345678


def test_crc32_every_small_length(impl):
    rng = random.Random(1)
    data = rng.randbytes(300)
    for n in range(301):
        assert _vtdio.crc32(data[:n]) == zlib.crc32(data[:n]), n
        assert _vtdio.crc32(data[:n], 0xDEADBEEF) == zlib.crc32(data[:n], 0xDEADBEEF), n


def test_crc32_random_lengths(impl):
    rng = random.Random(2)
    for _ in range(60):
        n = rng.randrange(1 << 20)
        data = rng.randbytes(n)
        value = rng.randrange(1 << 32)
        assert _vtdio.crc32(data) == zlib.crc32(data), n
        assert _vtdio.crc32(data, value) == zlib.crc32(data, value), n
    big = rng.randbytes(1 << 20)
    assert _vtdio.crc32(big) == zlib.crc32(big)


def test_crc32_unaligned(impl):
    rng = random.Random(3)
    data = rng.randbytes(70000)
    mv = memoryview(data)
    for off in range(1, 16):
        for n in (0, 1, 15, 16, 63, 64, 65, 255, 256, 511, 512, 513, 1000, 4096, 65536):
            piece = mv[off : off + n]
            assert _vtdio.crc32(piece) == zlib.crc32(piece), (off, n)


def test_crc32_chaining(impl):
    rng = random.Random(4)
    data = rng.randbytes(200000)
    for cut in (0, 1, 7, 64, 1000, 65536, 199999, 200000):
        a, b = data[:cut], data[cut:]
        assert _vtdio.crc32(b, _vtdio.crc32(a)) == zlib.crc32(data), cut


def test_crc32_constant_data(impl):
    for n in (1, 16, 64, 100, 512, 4096, 100000, 1 << 20):
        for fill in (b"\x00", b"\xff"):
            data = fill * n
            assert _vtdio.crc32(data) == zlib.crc32(data), (n, fill)
            assert _vtdio.crc32(data, 0xFFFFFFFF) == zlib.crc32(data, 0xFFFFFFFF)


def test_crc32_buffer_types(impl):
    data = random.Random(5).randbytes(5000)
    want = zlib.crc32(data)
    assert _vtdio.crc32(bytearray(data)) == want
    assert _vtdio.crc32(memoryview(data)) == want
    assert _vtdio.crc32(memoryview(bytearray(data))[10:]) == zlib.crc32(data[10:])


def test_crc32_value_like_zlib():
    # zlib takes any int for `value`, modulo 2**32
    for value in (0, 1, 0xFFFFFFFF, 2**32, 2**40 + 5, -1, -(2**33)):
        assert _vtdio.crc32(b"abc", value) == zlib.crc32(b"abc", value), value


def test_crc32_rejects():
    with pytest.raises(TypeError):
        _vtdio.crc32("text")
    with pytest.raises(TypeError):
        _vtdio.crc32(memoryview(b"abcdef")[::2])
    with pytest.raises(TypeError):
        _vtdio.crc32()
    with pytest.raises(TypeError):
        _vtdio.crc32(b"", 0, 0)
    with pytest.raises(TypeError):
        _vtdio.crc32(b"", 1.5)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.integers(0, 2**32 - 1), st.sampled_from(IMPLS))
def test_crc32_property(data, value, name):
    before = _vtdio.crc_implementation()
    _vtdio.set_crc_implementation(name)
    try:
        assert _vtdio.crc32(data, value) == zlib.crc32(data, value)
    finally:
        _vtdio.set_crc_implementation(before)


# ---- entries_payload --------------------------------------------------------------


def test_entries_payload_edges():
    assert _vtdio.entries_payload([]) == b""
    assert _vtdio.entries_payload(()) == b""
    assert _vtdio.entries_payload([b""]) == b"\x00"
    datas = [b"", b"x" * 127, b"y" * 128, b"z" * 16384, b"w" * 16383, b"hello"]
    assert _vtdio.entries_payload(datas) == vtd.encode_entries(datas)[0]
    assert _vtdio.entries_payload(tuple(datas)) == vtd.encode_entries(datas)[0]
    assert _vtdio.entries_payload([b"a" * 128])[:2] == b"\x81\x00"
    assert _vtdio.entries_payload([b"a" * 16384])[:3] == b"\x81\x80\x00"


def test_entries_payload_buffer_types():
    datas = [b"abc", bytearray(b"defg"), memoryview(b"0123456789")[2:5]]
    assert _vtdio.entries_payload(datas) == vtd.encode_entries([bytes(d) for d in datas])[0]


def test_entries_payload_large():
    rng = random.Random(6)
    datas = [rng.randbytes(rng.randrange(70000)) for _ in range(40)]  # over 1 MiB: GIL released
    assert _vtdio.entries_payload(datas) == vtd.encode_entries(datas)[0]


def test_entries_payload_rejects():
    with pytest.raises(TypeError):
        _vtdio.entries_payload([b"ok", "text"])
    with pytest.raises(TypeError):
        _vtdio.entries_payload(b"not a list")
    with pytest.raises(TypeError):
        _vtdio.entries_payload(x for x in [b"a"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_entries_payload_property(datas):
    assert _vtdio.entries_payload(datas) == vtd.encode_entries(datas)[0]


# ---- write_record -------------------------------------------------------------------


@pytest.fixture
def datafile(tmp_path):
    fd = os.open(tmp_path / "data.vtd", os.O_RDWR | os.O_CREAT, 0o644)
    yield fd
    os.close(fd)


def _read_all(fd) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0)


def _check_records(buf, written):
    """`written`: (offset, flags, payload, result) per record."""
    for offset, flags, payload, (size, poff, plen) in written:
        assert plen == len(payload)
        assert poff == len(encode_varint(flags)) + len(encode_varint(plen))
        assert size == poff + plen + 4
        assert buf[offset : offset + size] == vtd.encode_record(flags, payload)
        rec = vtd.parse_record_at(buf, offset, len(buf))
        assert isinstance(rec, vtd.Record), rec
        assert rec == vtd.Record(offset, offset + size, flags, offset + poff, plen)


def test_write_record_frames(datafile, impl):
    rng = random.Random(7)
    os.write(datafile, b"MAGI")  # records start after some prefix
    offset = 4
    written = []
    for i in range(12):
        datas = [rng.randbytes(rng.choice((0, 1, 127, 128, 5000, 8192))) for _ in range(32)]
        entries = i % 2 == 0
        if entries:
            payload = vtd.encode_entries(datas)[0]
            flags = vtd.TYPE_BLOCKS | vtd.ENC_PLAIN
        else:
            payload = b"".join(datas) or b"\x01"
            datas = datas if any(datas) else [b"\x01"]
            flags = vtd.TYPE_BLOCKS | vtd.ENC_ZSTD
        result = _vtdio.write_record(datafile, offset, flags, datas, entries)
        written.append((offset, flags, payload, result))
        offset += result[0]
    buf = _read_all(datafile)
    assert len(buf) == offset
    _check_records(buf, written)
    records = list(vtd.scan_records(buf, 4))
    assert [r.offset for r in records] == [w[0] for w in written]


def test_write_record_zstd_frame(datafile):
    import zstandard

    datas = [b"block %d " % i * 500 for i in range(32)]
    z = zstandard.ZstdCompressor(write_content_size=True).compress(_vtdio.entries_payload(datas))
    flags = vtd.TYPE_BLOCKS | vtd.ENC_ZSTD
    size, poff, plen = _vtdio.write_record(datafile, 0, flags, [z], False)
    buf = _read_all(datafile)
    rec = vtd.parse_record_at(buf, 0, len(buf))
    assert isinstance(rec, vtd.Record)
    stored = buf[rec.payload_offset : rec.payload_offset + rec.payload_length]
    assert vtd.decode_payload(rec.flags, stored) == vtd.encode_entries(datas)[0]


def test_write_record_header_record(datafile):
    payload = b'{"hashclass":"blake3","uuid":"00","version":1}'
    res = _vtdio.write_record(datafile, 4, vtd.TYPE_HEADER, [payload], False)
    os.pwrite(datafile, vtd.MAGIC, 0)
    buf = _read_all(datafile)
    assert buf == vtd.encode_header("blake3", "00")
    assert res == (len(buf) - 4, 2, len(payload))


def test_write_record_buffer_types(datafile):
    parts = [b"abc", bytearray(b"defg"), memoryview(b"0123456789")[2:5], b""]
    res = _vtdio.write_record(datafile, 0, 0, parts, True)
    payload = vtd.encode_entries([bytes(p) for p in parts])[0]
    _check_records(_read_all(datafile), [(0, 0, payload, res)])


def test_write_record_many_parts(datafile, impl):
    """More iovecs than IOV_MAX: written in several pwritev calls."""
    rng = random.Random(8)
    datas = [rng.randbytes(rng.randrange(1, 4)) for _ in range(3000)]
    res = _vtdio.write_record(datafile, 0, 0, datas, True)
    payload = vtd.encode_entries(datas)[0]
    res2 = _vtdio.write_record(datafile, res[0], 1, datas, False)
    _check_records(_read_all(datafile), [(0, 0, payload, res), (res[0], 1, b"".join(datas), res2)])


def test_write_record_large_payload(datafile):
    big = random.Random(9).randbytes(3 << 20)
    parts = [big[i : i + (1 << 20)] for i in range(0, len(big), 1 << 20)]
    res = _vtdio.write_record(datafile, 0, 0, parts, True)
    _check_records(_read_all(datafile), [(0, 0, vtd.encode_entries(parts)[0], res)])


def test_write_record_max_payload(datafile):
    n = vtd.MAX_PAYLOAD
    data = bytes(n)
    res = _vtdio.write_record(datafile, 0, 0, [data], False)
    assert res == (1 + 4 + n + 4, 5, n)
    buf = _read_all(datafile)
    assert isinstance(vtd.parse_record_at(buf, 0, len(buf)), vtd.Record)
    with pytest.raises(ValueError):
        _vtdio.write_record(datafile, 0, 0, [data, b"x"], False)
    with pytest.raises(ValueError):
        _vtdio.write_record(datafile, 0, 0, [data], True)  # its varint makes it too long
    with pytest.raises(ValueError):
        _vtdio.write_record(datafile, 0, 0, [bytes(n + 1)], False)


def test_write_record_value_errors(datafile):
    with pytest.raises(ValueError):
        _vtdio.write_record(datafile, 0, 200, [b"x"], False)
    with pytest.raises(ValueError):
        _vtdio.write_record(datafile, 0, 128, [b"x"], False)
    with pytest.raises(ValueError):
        _vtdio.write_record(datafile, 0, -1, [b"x"], False)
    with pytest.raises(ValueError):
        _vtdio.write_record(datafile, 0, 2**70, [b"x"], False)
    with pytest.raises(ValueError):
        _vtdio.write_record(datafile, 0, 0, [], False)
    with pytest.raises(ValueError):
        _vtdio.write_record(datafile, 0, 0, [b"", b""], False)
    with pytest.raises(ValueError):
        _vtdio.write_record(datafile, 0, 0, [], True)
    with pytest.raises((ValueError, OverflowError)):
        _vtdio.write_record(datafile, -1, 0, [b"x"], False)
    assert os.fstat(datafile).st_size == 0
    # the empty block is a valid (one-octet) entries payload
    assert _vtdio.write_record(datafile, 0, 0, [b""], True) == (1 + 1 + 1 + 4, 2, 1)


def test_write_record_type_errors(datafile):
    with pytest.raises(TypeError):
        _vtdio.write_record(datafile, 0, 0, [b"x", "text"], False)
    with pytest.raises(TypeError):
        _vtdio.write_record(datafile, 0, 0, b"x", False)
    with pytest.raises(TypeError):
        _vtdio.write_record(datafile, 0, 0, [b"x"])
    with pytest.raises(TypeError):
        _vtdio.write_record(datafile, "0", 0, [b"x"], False)


def test_write_record_bad_fd(tmp_path):
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    os.close(fd)
    with pytest.raises(OSError) as e:
        _vtdio.write_record(fd, 0, 0, [b"hello"], True)
    assert e.value.errno == errno.EBADF


def test_write_record_read_only_fd(tmp_path):
    path = tmp_path / "ro"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            _vtdio.write_record(fd, 0, 0, [b"hello"], True)
        assert e.value.errno == errno.EBADF
    finally:
        os.close(fd)


def test_write_record_dev_full():
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as e:
            _vtdio.write_record(fd, 0, 0, [b"x" * 8192] * 32, True)
        assert e.value.errno == errno.ENOSPC
    finally:
        os.close(fd)


@pytest.fixture
def small_tmpfs():
    if sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a tmpfs")
    mnt = tempfile.mkdtemp(prefix="vtdio-tmpfs-")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt], capture_output=True, text=True
    )
    if r.returncode != 0:
        os.rmdir(mnt)
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", mnt], check=False)
    os.rmdir(mnt)


def test_write_record_enospc(small_tmpfs):
    fd = os.open(os.path.join(small_tmpfs, "data.vtd"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        datas = [random.randbytes(8192) for _ in range(32)]
        offset = 0
        with pytest.raises(OSError) as e:
            for _ in range(10):  # 2.5 MiB into a 1 MiB file system
                offset += _vtdio.write_record(fd, offset, 0, datas, True)[0]
        assert e.value.errno == errno.ENOSPC
        assert 0 < offset < 1 << 20
        # what was written before the full disk is intact
        buf = _read_all(fd)
        recs = [r for r in vtd.scan_records(buf, 0, offset) if isinstance(r, vtd.Record)]
        assert recs and recs[-1].end == offset
    finally:
        os.close(fd)


SHORT_WRITE_SCRIPT = r"""
import errno, os, resource, signal, sys
from vtstore.stores import _vtdio, vtd
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
path = sys.argv[1]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
datas = [bytes([i]) * 8192 for i in range(32)]
size = _vtdio.write_record(fd, 0, 0, datas, True)[0]
# the next record crosses the limit: a short write, then EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100000, resource.RLIM_INFINITY))
try:
    _vtdio.write_record(fd, size, 0, datas, True)
except OSError as e:
    assert e.errno == errno.EFBIG, e
else:
    raise SystemExit("no error")
assert os.fstat(fd).st_size == size + 100000
# a record that fits exactly is written in full
resource.setrlimit(resource.RLIMIT_FSIZE, (2 * size, resource.RLIM_INFINITY))
assert _vtdio.write_record(fd, size, 0, datas, True)[0] == size
buf = os.pread(fd, 2 * size, 0)
assert buf == vtd.encode_record(0, vtd.encode_entries(datas)[0]) * 2
print("ok")
"""


def test_write_record_short_write(tmp_path):
    """A pwritev cut short by RLIMIT_FSIZE (in a child process): the rest is
    retried and fails with EFBIG."""
    r = subprocess.run(
        [sys.executable, "-c", SHORT_WRITE_SCRIPT, str(tmp_path / "f")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.binary(max_size=200), min_size=1, max_size=40),
    st.booleans(),
    st.integers(0, 1000),
)
def test_write_record_property(datas, entries, offset):
    payload = vtd.encode_entries(datas)[0] if entries else b"".join(datas)
    with tempfile.TemporaryFile() as f:
        fd = f.fileno()
        if not payload:
            with pytest.raises(ValueError):
                _vtdio.write_record(fd, offset, 0, datas, entries)
            return
        res = _vtdio.write_record(fd, offset, 1, datas, entries)
        buf = os.pread(fd, offset + res[0] + 10, 0)
        assert len(buf) == offset + res[0]
        _check_records(buf, [(offset, 1, payload, res)])


# ---- index_values ------------------------------------------------------------------


def _expected_index(filenum, flags, poff, plen, datas):
    spans = vtd.encode_entries(datas)[1]
    return [IndexEntry(filenum, flags, poff, plen, off, n).encode() for off, n in spans]


def test_index_values_edges():
    assert _vtdio.index_values(0, 0, 0, 0, []) == []
    datas = [b"", b"x" * 127, b"y" * 128, b"z" * 16384, b"hello"]
    got = _vtdio.index_values(3, 1, 2**40, 300000, datas)
    assert got == _expected_index(3, 1, 2**40, 300000, datas)
    prefix = encode_varint(3) + b"\x01" + encode_varint(2**40) + encode_varint(300000)
    assert got[0] == prefix + b"\x01\x00"
    big = 2**63 - 1
    assert _vtdio.index_values(big, big, big, big, [b"a"]) == _expected_index(
        big, big, big, big, [b"a"]
    )
    assert _vtdio.index_values(1, 0, 5, 9, (bytearray(b"ab"), memoryview(b"cde"))) == (
        _expected_index(1, 0, 5, 9, [b"ab", b"cde"])
    )


def test_index_values_decode():
    datas = [b"a" * 1000, b"b" * 10]
    for value, (off, n) in zip(
        _vtdio.index_values(7, 0, 123, 456, datas), vtd.encode_entries(datas)[1], strict=True
    ):
        assert IndexEntry.decode(value) == IndexEntry(7, 0, 123, 456, off, n)


def test_index_values_rejects():
    with pytest.raises((OverflowError, ValueError)):
        _vtdio.index_values(-1, 0, 0, 0, [b"x"])
    with pytest.raises((OverflowError, ValueError)):
        _vtdio.index_values(0, 0, -5, 0, [b"x"])
    with pytest.raises((OverflowError, ValueError)):
        _vtdio.index_values(0, 0, 0, 2**64, [b"x"])
    with pytest.raises(TypeError):
        _vtdio.index_values(0, 0, 0, 0, [b"x", "y"])
    with pytest.raises(TypeError):
        _vtdio.index_values(0, 0, 0, 0.5, [b"x"])
    with pytest.raises(TypeError):
        _vtdio.index_values(0, 0, 0, 0)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**63 - 1),
    st.integers(0, 127),
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**63 - 1),
    st.lists(st.binary(max_size=300), max_size=20),
)
def test_index_values_property(filenum, flags, poff, plen, datas):
    assert _vtdio.index_values(filenum, flags, poff, plen, datas) == _expected_index(
        filenum, flags, poff, plen, datas
    )


def test_index_values_of_written_record(datafile):
    rng = random.Random(10)
    datas = [rng.randbytes(rng.randrange(9000)) for _ in range(32)]
    size, poff, plen = _vtdio.write_record(datafile, 100, 0, datas, True)
    values = _vtdio.index_values(5, 0, 100 + poff, plen, datas)
    buf = _read_all(datafile)
    for value, data in zip(values, datas, strict=True):
        e = IndexEntry.decode(value)
        start = e.payload_offset + e.data_offset
        assert buf[start : start + e.data_length] == data


# ---- sync_file_range -------------------------------------------------------------------


def test_sync_file_range(datafile):
    size = _vtdio.write_record(datafile, 0, 0, [b"x" * 100000], True)[0]
    flags = (
        _vtdio.SYNC_FILE_RANGE_WAIT_BEFORE
        | _vtdio.SYNC_FILE_RANGE_WRITE
        | _vtdio.SYNC_FILE_RANGE_WAIT_AFTER
    )
    assert _vtdio.sync_file_range(datafile, 0, size, flags) is None
    assert _vtdio.sync_file_range(datafile, 0, 0, _vtdio.SYNC_FILE_RANGE_WRITE) is None


def test_sync_file_range_constants():
    assert _vtdio.SYNC_FILE_RANGE_WAIT_BEFORE == 1
    assert _vtdio.SYNC_FILE_RANGE_WRITE == 2
    assert _vtdio.SYNC_FILE_RANGE_WAIT_AFTER == 4


def test_sync_file_range_errors(tmp_path):
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    os.close(fd)
    with pytest.raises(OSError) as e:
        _vtdio.sync_file_range(fd, 0, 0, _vtdio.SYNC_FILE_RANGE_WRITE)
    assert e.value.errno == errno.EBADF
    fd = os.open(tmp_path / "f", os.O_RDWR)
    try:
        with pytest.raises(OSError) as e:
            _vtdio.sync_file_range(fd, 0, 0, 1 << 10)  # unknown flag
        assert e.value.errno == errno.EINVAL
        with pytest.raises((OverflowError, ValueError)):
            _vtdio.sync_file_range(fd, -1, 0, 0)
    finally:
        os.close(fd)


def test_docstrings():
    assert "record" in _vtdio.__doc__
    for name in (
        "crc32",
        "crc_implementation",
        "set_crc_implementation",
        "entries_payload",
        "write_record",
        "index_values",
        "sample_entropy",
        "sync_file_range",
    ):
        assert getattr(_vtdio, name).__doc__, name


def test_write_record_threads(datafile):
    """Calls from several threads at once (the GIL is released while writing)."""
    import threading

    rng = random.Random(11)
    frames = [[rng.randbytes(8192) for _ in range(32)] for _ in range(16)]
    size = 1 + 3 + len(vtd.encode_entries(frames[0])[0]) + 4
    errors = []

    def work(k):
        try:
            for i in range(k, len(frames), 4):
                assert _vtdio.write_record(datafile, i * size, 0, frames[i], True)[0] == size
                _vtdio.crc32(frames[i][0] * 8)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    buf = _read_all(datafile)
    recs = list(vtd.scan_records(buf, 0))
    assert [r.offset for r in recs] == [i * size for i in range(len(frames))]
    for rec, datas in zip(recs, frames, strict=True):
        assert buf[rec.payload_offset : rec.end - 4] == vtd.encode_entries(datas)[0]


# -- Appender: records written by a native thread --------------------------------------


def _frames(seed, n, blocks=32):
    rng = random.Random(seed)
    return [
        [rng.randbytes(rng.choice((1, 127, 128, 5000, 8192))) for _ in range(blocks)]
        for _ in range(n)
    ]


def test_appender_writes_in_order(datafile, impl):
    os.write(datafile, b"MAGI")
    frames = _frames(21, 20)
    app = _vtdio.Appender(datafile, 4, writeback=1 << 16, max_pending=3)
    tokens = [object() for _ in frames]
    reaped = []
    for tok, datas in zip(tokens, frames, strict=True):
        app.submit(tok, 0, datas, True)  # waits while 3 are queued
        reaped += app.reap()[0]
    app.drain()
    assert app.pending == 0
    written, failed, err = app.reap()
    reaped += written
    assert (failed, err) == ([], 0)
    app.close()
    app.close()  # idempotent
    assert [r[0] for r in reaped] == tokens
    buf = _read_all(datafile)
    assert app.end == len(buf)
    offset = 4
    for (_, flags, off, size, poff, plen), datas in zip(reaped, frames, strict=True):
        assert off == offset and flags == 0
        payload = vtd.encode_entries(datas)[0]
        _check_records(buf, [(off, 0, payload, (size, poff, plen))])
        # the index values point at each block
        for v, d in zip(_vtdio.index_values(3, 0, off + poff, plen, datas), datas, strict=True):
            e = IndexEntry.decode(v)
            start = e.payload_offset + e.data_offset
            assert buf[start : start + e.data_length] == d
        offset += size
    with pytest.raises(ValueError):
        app.submit(None, 0, [b"x"], True)  # closed


def test_appender_parts_and_compressed(datafile):
    app = _vtdio.Appender(datafile, 0)
    payload = vtd.encode_entries([b"abc" * 1000])[0]
    import zstandard

    z = zstandard.ZstdCompressor().compress(payload)
    app.submit("z", vtd.TYPE_BLOCKS | vtd.ENC_ZSTD, (z,), False)
    app.submit("p", 0, [bytearray(b"q" * 10), memoryview(b"r" * 20)], True)
    app.drain()
    written, failed, err = app.reap()
    app.close()
    assert [w[0] for w in written] == ["z", "p"] and not failed and not err
    buf = _read_all(datafile)
    recs = list(vtd.scan_records(buf, 0))
    assert vtd.decode_payload(recs[0].flags, buf[recs[0].payload_offset : recs[0].end - 4]) == (
        payload
    )
    assert recs[1].offset == written[1][2]


def test_appender_rejects(datafile):
    with pytest.raises(ValueError):
        _vtdio.Appender(datafile, 0, max_pending=0)
    with pytest.raises(OverflowError):
        _vtdio.Appender(datafile, -1)
    app = _vtdio.Appender(datafile, 0)
    with pytest.raises(ValueError):
        app.submit(None, 200, [b"x"], True)
    with pytest.raises(ValueError):
        app.submit(None, 0, [], True)
    with pytest.raises(TypeError):
        app.submit(None, 0, [b"x", 3], True)
    with pytest.raises(TypeError):
        app.submit(None, 0, "xyz", True)
    app.close()
    assert app.reap() == ([], [], 0) and os.fstat(datafile).st_size == 0


def test_appender_failure_stops_writing(tmp_path):
    """A failed write (a read-only descriptor here) fails that record and every
    later one; `end` stays past the last good record."""
    p = tmp_path / "ro.vtd"
    p.write_bytes(b"")
    fd = os.open(p, os.O_RDONLY)
    try:
        app = _vtdio.Appender(fd, 0)
        for i in range(5):
            app.submit(i, 0, [b"x" * 100], True)
        app.drain()
        written, failed, err = app.reap()
        app.close()
        assert written == [] and failed == [0, 1, 2, 3, 4] and err == errno.EBADF
        assert app.end == 0
    finally:
        os.close(fd)


def test_appender_enospc(small_tmpfs):
    fd = os.open(os.path.join(small_tmpfs, "data.vtd"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        app = _vtdio.Appender(fd, 0)
        datas = [random.randbytes(8192) for _ in range(32)]
        for i in range(10):  # 2.5 MiB into a 1 MiB file system
            app.submit(i, 0, datas, True)
        app.drain()
        written, failed, err = app.reap()
        app.close()
        assert err == errno.ENOSPC
        assert written and failed and [w[0] for w in written] + failed == list(range(10))
        good = written[-1][2] + written[-1][3]
        assert app.end == good
        buf = os.pread(fd, good, 0)
        recs = [r for r in vtd.scan_records(buf, 0) if isinstance(r, vtd.Record)]
        assert len(recs) == len(written) and recs[-1].end == good
    finally:
        os.close(fd)


def test_appender_dealloc_without_close(datafile):
    """Dropping an Appender writes what was queued and stops its thread."""
    import gc

    def tasks():
        return len(os.listdir("/proc/self/task"))

    before = tasks()
    app = _vtdio.Appender(datafile, 0)
    assert tasks() == before + 1  # its own thread
    for i in range(8):
        app.submit(i, 0, [bytes([i]) * 4096], True)
    del app
    gc.collect()
    assert tasks() == before
    recs = list(vtd.scan_records(_read_all(datafile), 0))
    assert len(recs) == 8


def test_sample_entropy():
    rng = random.Random(5)
    assert _vtdio.sample_entropy([]) == 8.0
    assert _vtdio.sample_entropy([b""]) == 8.0
    assert _vtdio.sample_entropy([b"a" * 100]) == 0.0
    assert _vtdio.sample_entropy([bytes(range(256))]) == pytest.approx(8.0)
    random_frame = [rng.randbytes(8192) for _ in range(32)]
    assert 7.95 < _vtdio.sample_entropy(random_frame) <= 8.0
    assert _vtdio.sample_entropy([rng.randbytes(64) for _ in range(4000)]) > 7.95
    text = open(vtd.__file__, "rb").read()
    assert _vtdio.sample_entropy([text[i : i + 8192] for i in range(0, len(text), 8192)]) < 6
    # random and text alternating in every block, at a fixed phase: still seen
    mixed = [rng.randbytes(4096) + text[:4096] for _ in range(32)]
    assert _vtdio.sample_entropy(mixed) < 7.5
    # spread over the frame: a text tail after random blocks is sampled
    tail = random_frame[:24] + [text[:8192]] * 8
    assert _vtdio.sample_entropy(tail) < _vtdio.sample_entropy(random_frame) - 0.3
    assert _vtdio.sample_entropy([bytearray(b"ab" * 50), memoryview(b"cd" * 50)]) == 2.0
    with pytest.raises(TypeError):
        _vtdio.sample_entropy([1])
    with pytest.raises(TypeError):
        _vtdio.sample_entropy(b"abc")


def test_appender_close_while_others_submit(datafile):
    """Threads blocked in submit() while another closes the Appender: each call
    returns or raises ValueError, none hangs, and what was queued is written."""
    import threading

    app = _vtdio.Appender(datafile, 0, max_pending=1)
    block = [b"z" * 65536] * 16  # 1 MiB records: submitters wait for each other
    outcome = []

    def submit(k):
        try:
            for i in range(20):
                app.submit((k, i), 0, block, True)
            outcome.append("done")
        except ValueError:
            outcome.append("closed")

    threads = [threading.Thread(target=submit, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    app.close()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a submit() hung after close()"
    assert len(outcome) == 4
    written, failed, err = app.reap()
    assert not failed and err == 0
    recs = list(vtd.scan_records(_read_all(datafile), 0))
    assert len(recs) == len(written)
