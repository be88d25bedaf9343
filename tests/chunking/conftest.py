"""Shared fixtures of the chunking tests: real data made on the spot."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest


def _source_text(limit: int) -> bytes:
    root = Path(sys.modules["random"].__file__).parent
    out = bytearray()
    for p in sorted(root.rglob("*.py")):
        out += p.read_bytes()
        if len(out) >= limit:
            break
    return bytes(out[:limit])


def _new_bytes(old_chunks, new_chunks) -> int:
    have = {bytes(c) for c in old_chunks}
    seen = set()
    n = 0
    for c in new_chunks:
        c = bytes(c)
        if c not in have and c not in seen:
            seen.add(c)
            n += len(c)
    return n


@pytest.fixture(scope="session")
def source_text():
    """source_text(limit): real source code (the stdlib's .py files), up to `limit` bytes."""
    return _source_text


@pytest.fixture(scope="session")
def new_bytes():
    """new_bytes(old_chunks, new_chunks): bytes of the new chunks a store would add."""
    return _new_bytes


@pytest.fixture(scope="session")
def randbytes():
    """randbytes(n, seed): deterministic pseudo-random bytes."""
    return lambda n, seed=0: random.Random(seed).randbytes(n)


# -- real files of the formats -------------------------------------------------------

import gzip as _gzip  # noqa: E402
import io as _io  # noqa: E402
import mailbox as _mailbox  # noqa: E402
import shutil as _shutil  # noqa: E402
import struct as _struct  # noqa: E402
import subprocess as _subprocess  # noqa: E402
import tarfile as _tarfile  # noqa: E402
from email.message import EmailMessage as _EmailMessage  # noqa: E402

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at"
    " which but have an they you were their one all we can her has there been if more"
    " when will would who so no block store hash chunk tree archive mount data file"
).split()


def _prose(rnd: random.Random, n: int) -> str:
    out, size = [], 0
    while size < n:
        line = " ".join(rnd.choice(_WORDS) for _ in range(rnd.randrange(5, 14)))
        out.append(line)
        size += len(line) + 1
        if rnd.random() < 0.15:
            out.append("")
    return "\n".join(out) + "\n"


def _box(typ: bytes, payload: bytes) -> bytes:
    return _struct.pack(">I4s", 8 + len(payload), typ) + payload


def _full(typ: bytes, payload: bytes) -> bytes:
    return _box(typ, b"\0\0\0\0" + payload)


def build_mp4(title: bytes, seed: int = 0, per_chunk: int = 4) -> bytes:
    """A minimal valid faststart MP4: ftyp, moov (2 tracks, sample tables, a title), mdat."""
    rnd = random.Random(seed)
    tracks = [
        [rnd.randbytes(rnd.randrange(2000, 30000)) for _ in range(120)],  # "video"
        [rnd.randbytes(rnd.randrange(200, 420)) for _ in range(300)],  # "audio"
    ]
    # interleave chunks of per_chunk samples: v, a, a, v, a, a, ...
    layout = []  # (track, [samples])
    vi = ai = 0
    while vi < len(tracks[0]) or ai < len(tracks[1]):
        if vi < len(tracks[0]):
            layout.append((0, tracks[0][vi : vi + per_chunk]))
            vi += per_chunk
        for _ in range(2):
            if ai < len(tracks[1]):
                layout.append((1, tracks[1][ai : ai + per_chunk]))
                ai += per_chunk

    def moov(chunk_offsets):
        traks = b""
        for t, handler in ((0, b"vide"), (1, b"soun")):
            samples = tracks[t]
            offs = chunk_offsets[t]
            stbl = _box(
                b"stbl",
                _full(b"stsd", _struct.pack(">I", 0))
                + _full(b"stts", _struct.pack(">III", 1, len(samples), 1))
                + _full(b"stsc", _struct.pack(">IIII", 1, 1, per_chunk, 1))
                + _full(
                    b"stsz",
                    _struct.pack(">II", 0, len(samples))
                    + b"".join(_struct.pack(">I", len(s)) for s in samples),
                )
                + _full(
                    b"stco",
                    _struct.pack(">I", len(offs)) + b"".join(_struct.pack(">I", o) for o in offs),
                ),
            )
            mdia = _box(
                b"mdia",
                _full(b"mdhd", bytes(20))
                + _full(b"hdlr", bytes(4) + handler + bytes(12) + b"\0")
                + _box(b"minf", _box(b"dinf", _full(b"dref", _struct.pack(">I", 0))) + stbl),
            )
            traks += _box(b"trak", _full(b"tkhd", bytes(80)) + mdia)
        ilst = _box(b"ilst", _box(b"\xa9nam", _box(b"data", _struct.pack(">II", 1, 0) + title)))
        udta = _box(
            b"udta", _full(b"meta", _full(b"hdlr", bytes(4) + b"mdir" + bytes(12) + b"\0") + ilst)
        )
        return _box(b"moov", _full(b"mvhd", bytes(96)) + traks + udta)

    ftyp = _box(b"ftyp", b"isom\0\0\2\0isomiso2mp41")
    n_chunks = [sum(1 for t, _ in layout if t == k) for k in (0, 1)]
    size = len(moov([[0] * n_chunks[0], [0] * n_chunks[1]]))
    pos = len(ftyp) + size + 8
    offsets = [[], []]
    for t, samples in layout:
        offsets[t].append(pos)
        pos += sum(map(len, samples))
    mdat = _box(b"mdat", b"".join(b"".join(s) for _, s in layout))
    return ftyp + moov(offsets) + mdat


def boxes_named(data: bytes, names: set[bytes]) -> list[tuple[int, int]]:
    """(offset, size) of every box called one of `names`, walking containers."""
    containers = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"udta", b"ilst", b"dinf"}
    out = []

    def walk(i, end):
        while i + 8 <= end:
            size, typ = _struct.unpack_from(">I4s", data, i)
            if size < 8:
                return
            if typ in names:
                out.append((i, size))
            if typ in containers:
                walk(i + 8, i + size)
            elif typ == b"meta":
                walk(i + 12, i + size)
            i += size

    walk(0, len(data))
    return out


def ffmpeg_mp4(path, title: str) -> bool:
    """Write a real faststart MP4 with ffmpeg (False if there is no ffmpeg)."""
    if not _shutil.which("ffmpeg"):
        return False
    _subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc=duration=8:size=320x240:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:duration=8",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-c:a", "aac",
         "-movflags", "+faststart", "-metadata", f"title={title}", "-fflags", "+bitexact",
         "-map_metadata", "-1", "-metadata", f"title={title}", str(path)],
        check=True,
    )  # fmt: skip
    return True


def ffmpeg_retitle(src, dst, title: str) -> None:
    """Copy an MP4 with another title (streams copied: only metadata and offsets change)."""
    _subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(src),
         "-c", "copy", "-map_metadata", "-1", "-metadata", f"title={title}",
         "-fflags", "+bitexact", "-movflags", "+faststart", str(dst)],
        check=True,
    )  # fmt: skip


def _message(rnd: random.Random, i: int) -> _EmailMessage:
    m = _EmailMessage()
    m["From"] = f"user{i % 17}@example.org"
    m["To"] = "list@example.org"
    m["Subject"] = " ".join(rnd.choice(_WORDS) for _ in range(6))
    m["Date"] = f"Thu, {1 + i % 28:02d} Jan 2026 12:00:00 +0000"
    m["Message-ID"] = f"<{i}.{rnd.randrange(10**9)}@example.org>"
    m.set_content(_prose(rnd, rnd.randrange(1000, 12000)))
    return m


def build_mbox(path, n: int = 200, insert_at: int | None = None, seed: int = 0) -> bytes:
    """An mbox of `n` messages (plus one extra at `insert_at`); returns the extra message's text."""
    rnd = random.Random(seed)
    msgs = [_message(rnd, i) for i in range(n)]
    extra = _message(random.Random(seed + 1000), 10_000)
    if insert_at is not None:
        msgs.insert(insert_at, extra)
    box = _mailbox.mbox(str(path), create=True)
    box.lock()
    try:
        for m in msgs:
            mm = _mailbox.mboxMessage(m)
            mm.set_from("MAILER-DAEMON", (2026, 1, 1, 0, 0, 0, 3, 1, 0))
            box.add(mm)
        box.flush()
    finally:
        box.unlock()
        box.close()
    buf = _io.BytesIO()
    one = _mailbox.mboxMessage(extra)
    one.set_from("MAILER-DAEMON", (2026, 1, 1, 0, 0, 0, 3, 1, 0))
    buf.write(one.as_bytes(unixfrom=True))
    return buf.getvalue()


def build_tar(path, changed: int | None = None, seed: int = 0) -> int:
    """A tar of 40 members; member `changed` gets other content. Returns that member's size."""
    rnd = random.Random(seed)
    size_changed = 0
    with _tarfile.open(path, "w", format=_tarfile.PAX_FORMAT) as tf:
        for i in range(40):
            if i % 3:
                data = _prose(rnd, rnd.randrange(500, 60000)).encode()
            else:
                data = rnd.randbytes(rnd.randrange(500, 100000))
            if i == changed:
                data = random.Random(seed + 99).randbytes(len(data) + 777)
                size_changed = len(data)
            ti = _tarfile.TarInfo(f"dir/member-{i:03d}.dat")
            ti.size = len(data)
            ti.mtime = 1_700_000_000 + (1 if i == changed else 0)
            ti.mode = 0o644
            tf.addfile(ti, _io.BytesIO(data))
    return size_changed


def gzip_members(parts: list[bytes]) -> tuple[bytes, list[int]]:
    """Concatenated gzip members of `parts`, and each member's start offset."""
    out, starts = b"", []
    for p in parts:
        starts.append(len(out))
        out += _gzip.compress(p, mtime=0)
    return out, starts


def git_format_patch(tmp_path, commits: int, seed: int = 3, points=None):
    """`git format-patch --stdout --root` of a repository of `commits` small commits
    (made with git fast-import: seconds, not minutes); with `points` (commit
    counts), a list: the patch series up to each point, as successive versions."""
    repo = tmp_path / f"repo{seed}"
    _subprocess.run(["git", "init", "-q", str(repo)], check=True)
    rnd = random.Random(seed)
    files = {
        f"m{i}.py": [f"def f{i}_{j}(x):\n    return {j}\n" for j in range(30)] for i in range(50)
    }
    stream = bytearray()
    for k in range(1, commits + 1):
        name = f"m{k % 50}.py"
        j = rnd.randrange(30)
        files[name][j] = f"def f{k}_{j}(x):\n    return {rnd.randrange(999)}\n"
        body = "".join(files[name]).encode()
        msg = b"change %d\n\nWhy.\n" % k
        stream += (
            b"commit refs/heads/main\ncommitter A <a@example.com> %d +0000\n"
            b"data %d\n%s\nM 100644 inline %s\ndata %d\n%s\n"
            % (1_700_000_000 + k, len(msg), msg, name.encode(), len(body), body)
        )
    _subprocess.run(
        ["git", "-C", str(repo), "fast-import", "--quiet"], input=bytes(stream), check=True
    )

    def series(rev):
        cmd = ["git", "-C", str(repo), "format-patch", "--stdout", "--root", rev]
        return _subprocess.run(cmd, capture_output=True, check=True).stdout

    if points is None:
        return series("main")
    return [series(f"main~{commits - k}") for k in points]


@pytest.fixture(scope="session")
def formats():
    """The builders of real format files above, as attributes."""
    import types

    return types.SimpleNamespace(
        build_mp4=build_mp4,
        boxes_named=boxes_named,
        ffmpeg_mp4=ffmpeg_mp4,
        ffmpeg_retitle=ffmpeg_retitle,
        build_mbox=build_mbox,
        build_tar=build_tar,
        gzip_members=gzip_members,
        git_format_patch=git_format_patch,
        prose=_prose,
    )
