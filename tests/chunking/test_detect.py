"""Type detection: by name, rsync temporary name, MIME type and first bytes."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile

import pytest

from vtstore.chunking.scanners import SCANNERS, scanner_for
from vtstore.chunking.scanners.detect import real_name


def name_of(**kw):
    cls = scanner_for(**kw)
    return cls.name if cls else None


@pytest.mark.parametrize(
    "name, want",
    [
        ("movie.mp4", "mp4"),
        ("clip.MOV", "mp4"),
        ("song.m4a", "mp4"),
        ("song.mp3", "mp3"),
        ("INBOX.mbox", "mbox"),
        ("mbox", "mbox"),
        ("note.eml", "email"),
        ("a.tar", "tar"),
        ("b.zip", "zip"),
        ("c.docx", "zip"),
        ("lib.jar", "zip"),
        ("x.py", "text"),
        ("main.go", "text"),
        ("lib.rs", "text"),
        ("Makefile", "text"),
        ("data/0a1b.vtd", "vtd"),
        ("pic.jpeg", None),
        ("noext", None),
        ("x.tar.bz2", None),
        # rsync's temporary names keep the real extension inside
        (".movie.mp4.Ab12Cd", "mp4"),
        ("/some/dir/.INBOX.mbox.XyZ987", "mbox"),
        (".hidden", None),
    ],
)
def test_by_name(name, want):
    assert name_of(name=name) == want


def test_real_name():
    assert real_name("/a/.x.tar.q1w2e3") == "x.tar"
    assert real_name(".bashrc") == ".bashrc"
    assert real_name("plain.mp4") == "plain.mp4"


@pytest.mark.parametrize(
    "mime, want",
    [
        ("video/mp4", "mp4"),
        ("audio/mp4", "mp4"),
        ("video/quicktime", "mp4"),
        ("audio/mpeg", "mp3"),
        ("application/mbox", "mbox"),
        ("message/rfc822", "email"),
        ("application/x-tar", "tar"),
        ("application/zip", "zip"),
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document+zip", "zip"),
        ("text/x-python; charset=utf-8", "text"),
        ("text/plain", "text"),
        ("image/png", None),
    ],
)
def test_by_mime_type(mime, want):
    assert name_of(mime_type=mime) == want


def _tar_head():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        ti = tarfile.TarInfo("x")
        ti.size = 3
        tf.addfile(ti, io.BytesIO(b"abc"))
    return buf.getvalue()


def _zip_head():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a", b"b")
    return buf.getvalue()


@pytest.mark.parametrize(
    "head, want",
    [
        (b"\0\0\0\x20ftypisom\0\0\2\0", "mp4"),
        (b"\0\0\0\x08free\0\0\0\x10moov", "mp4"),
        (b"ID3\x04\0\0\0\0\0\x10" + b"\0" * 20, "mp3"),
        (b"\xff\xfb\x90\x64" + b"\0" * 413 + b"\xff\xfb\x90\x64", "mp3"),
        (b"From someone@example.org Thu Jan  1 00:00:00 2026\nSubject: x\n\n", "mbox"),
        (b"Received: from x\nSubject: y\n\nbody", "email"),
        (_tar_head(), "tar"),
        (_zip_head(), "zip"),
        (gzip.compress(b"x" * 1000 + bytes(range(256)) * 4), "gzip"),
        (b"def f():\n    return 1\n", "text"),
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", None),
        (bytes(range(256)) * 4, None),
        (b"", None),
    ],
)
def test_by_sniffing(head, want):
    assert name_of(head=head) == want


def test_tar_needs_a_good_checksum_to_be_sniffed():
    head = bytearray(_tar_head())
    head[0] ^= 1
    assert name_of(head=bytes(head)) != "tar"


def test_name_wins_then_mime_then_content():
    mp4 = b"\0\0\0\x20ftypisom\0\0\2\0"
    assert name_of(name="a.tar", mime_type="video/mp4", head=mp4) == "tar"
    assert name_of(name="a.bin", mime_type="application/mbox", head=mp4) == "mbox"
    assert name_of(name="a.bin", mime_type="image/png", head=mp4) == "mp4"


def test_gz_by_name_is_checked_against_content():
    assert name_of(name="x.gz", head=b"not gzip at all") is None
    assert name_of(name="x.gz", head=gzip.compress(b"y" * 100)) == "gzip"


def test_every_scanner_is_registered_by_its_name():
    for name, cls in SCANNERS.items():
        assert cls.name == name
