"""State selectors (`X.vt@SEL/path`, `[clause]NAME@SEL`) in every command that
reads a state, state IDs, and their errors: real `vt` processes, a real datadir."""

from __future__ import annotations

import datetime
import io
import json
import tarfile

import pytest

from vtstore.archive import (
    AmbiguousStateError,
    ArchiveEntry,
    StateNotFoundError,
    select_state,
    state_id,
)
from vtstore.tree.dirent import DirDirent

from ._history import make_history


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    return make_history(tmp_path_factory.mktemp("sel"))


def _forms(h):
    """(selector, index of the state it names) for every selector form."""
    s = h.states
    utc = datetime.datetime.fromtimestamp(s[1].when, datetime.UTC)
    return [
        ("latest", 2),
        ("-1", 2),
        ("-2", 1),
        ("-3", 0),
        ("0", 0),
        ("1", 1),
        ("oldest", 0),
        (s[1].short_id, 1),
        (s[0].id[:5], 0),
        (s[2].id, 2),
        (s[1].short_id.upper(), 1),
        (utc.strftime("%Y-%m-%d"), 2),  # the whole day: the last state of it
        (utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), 1),  # exactly the state's time
        # local time (TZ=UTC in the fixture's environment)
        (utc.strftime("%Y-%m-%dT%H:%M:%S.%f"), 1),
    ]


def test_each_form_in_cat_and_ls(h):
    for sel, i in _forms(h):
        assert h.vt("cat", f"src.vt@{sel}/sub/f").stdout == f"v{i}".encode(), sel
        listing = h.vt("ls", f"src.vt@{sel}").stdout.decode().split()
        assert f"only{i}" in listing and len([n for n in listing if "only" in n]) == 1, sel


def test_unpack_export_diff_log_take_selectors(h):
    out = h.tmp / "restored"
    h.vt("-q", "unpack", "src.vt@-2", str(out))
    assert (out / "sub" / "f").read_text() == "v1" and (out / "only1").exists()
    h.vt("-q", "unpack", f"src.vt@{h.states[0].short_id}/sub", str(h.tmp / "sub0"))
    assert (h.tmp / "sub0" / "f").read_text() == "v0"
    tar = h.vt("export", "src.vt@0", "-o", "-").stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        names = t.getnames()
        f = next(m for m in t.getmembers() if m.name.endswith("sub/f"))
        assert t.extractfile(f).read() == b"v0"
    assert any(n.endswith("only0") for n in names)
    r = h.vt("diff", "src.vt@0", "src.vt@-1", check=False)
    assert r.returncode == 1
    lines = r.stdout.decode().splitlines()
    assert "M sub/f" in lines and "- only0" in lines and "+ only2" in lines
    r = h.vt("log", f"src.vt@{h.states[1].id[:6]}")
    (line,) = r.stdout.decode().splitlines()
    assert line.startswith(h.states[1].short_id) and "the second state" in line


def test_named_archive_selectors(h):
    assert h.vt("cat", "[c]home@0/sub/f").stdout == b"v0"
    assert h.vt("cat", "[c]home@latest/sub/f").stdout == b"v1"
    assert h.vt("cat", "[c]home/sub/f").stdout == b"v1"
    assert len(h.vt("log", "[c]home@-2").stdout.splitlines()) == 1
    assert h.vt("diff", "[c]home@0", "@1", check=False).returncode == 1


def test_old_forms_keep_working(h):
    assert h.vt("cat", "src.vt/sub/f").stdout == b"v2"
    when = h.states[0].isotime
    out = h.tmp / "at-old"
    h.vt("-q", "unpack", "--at", when, "src.vt", str(out))
    assert (out / "sub" / "f").read_text() == "v0"
    r = h.vt("unpack", "--at", when, "src.vt@-1", str(h.tmp / "x"), check=False)
    assert r.returncode == 1 and b"not both" in r.stderr


def test_at_in_file_names(h):
    """A `@` further down the path is a file name's; an archive whose own name
    holds `.vt@` is that file (a path that exists wins over a selector)."""
    assert h.vt("cat", "src.vt/at@sign").stdout == b"at"
    assert h.vt("cat", "src.vt@0/at@sign").stdout == b"at"
    odd = h.tmp / "odd.vt@1.vt"
    odd.write_bytes(h.archive.read_bytes()[: h.archive.read_bytes().index(b"\n") + 1])
    assert h.vt("cat", f"{odd.name}/sub/f").stdout == b"v0"  # the file, not odd.vt@1


def test_errors_are_one_line(h):
    cases = [
        ("src.vt@-4", b"has 3 states"),
        ("src.vt@3", b"has 3 states"),
        ("src.vt@ffffffff", b"no state has an ID beginning with ffffffff"),
        ("src.vt@1999-01-01", b"no state was made then or before"),
        ("src.vt@yesterday", b"not a state selector"),
        ("src.vt@2026-13-45", b"not a date"),
        ("nope.vt@-1", b"nope.vt: no such archive"),
        ("[c]nope@0", b"[c]nope: no such archive"),
    ]
    for sel, needle in cases:
        r = h.vt("cat", f"{sel}/sub/f", check=False)
        assert r.returncode == 1, sel
        err = r.stderr.decode().strip()
        assert needle in r.stderr and len(err.splitlines()) == 1, (sel, err)
    r = h.vt("pack", "-a", "src.vt@-1", str(h.tmp / "src"), check=False)
    assert r.returncode != 0 and b"whole archive" in r.stderr


def _colliding(d):
    """Two states of tree `d` at different times whose IDs share 4 hex digits."""
    seen: dict[str, ArchiveEntry] = {}
    for i in range(100_000):
        e = ArchiveEntry(1_700_000_000 + i, d)
        if e.id[:4] in seen:
            return [seen[e.id[:4]], e]
        seen[e.id[:4]] = e
    raise AssertionError("no collision")


def test_ambiguous_id_prefix_lists_the_candidates():
    a, b = _colliding(DirDirent())
    with pytest.raises(AmbiguousStateError) as ei:
        select_state([a, b], a.id[:4], "x.vt")
    assert a.id[:8] in str(ei.value) and b.id[:8] in str(ei.value)
    assert select_state([a, b], a.id[:8], "x.vt") is a


def test_ambiguous_prefix_through_vt(h, tmp_path):
    pair = _colliding(h.states[0].dirent)
    (tmp_path / "amb.vt").write_text("".join(e.to_line() for e in pair))
    r = h.vt("ls", str(tmp_path / "amb.vt") + f"@{pair[0].id[:4]}", check=False)
    assert r.returncode == 1 and b"fits 2 states" in r.stderr
    assert pair[0].short_id.encode() in r.stderr and pair[1].short_id.encode() in r.stderr
    r = h.vt("ls", str(tmp_path / "amb.vt") + f"@{pair[1].short_id}")
    assert b"only0" in r.stdout


def test_state_id_definition():
    """The ID is BLAKE2b-256 of `MICROSECONDS\\nBINARY-DIRENT\\nCOMMENT` (FORMATS.md §9.1)."""
    import hashlib

    d = DirDirent(name="x")
    e = ArchiveEntry(1764581400.123456, d, comment="hi", store_id="s1")
    text = b"1764581400123456\n" + d.encode() + b"\nhi"
    assert e.id == hashlib.blake2b(text, digest_size=32).hexdigest() == state_id(e.when, d, "hi")
    assert e.short_id == e.id[:8]
    # the store it lives in is not part of it; the time and comment are
    assert ArchiveEntry(e.when, d, comment="hi", store_id="s2").id == e.id
    assert ArchiveEntry(e.when + 1, d, comment="hi").id != e.id
    assert ArchiveEntry(e.when, d).id != e.id
    # the example of docs/FORMATS.md §9.1: the archive line of the test vectors
    from pathlib import Path

    from vtstore.archive import parse_line

    root = Path(__file__).resolve().parents[2]
    line = json.loads((root / "docs" / "format-vectors.json").read_text())["archive_line"]
    v = parse_line(line)
    doc = (root / "docs" / "FORMATS.md").read_text()
    assert v.id == "fe4a050fe87cc72150358e96fc5770159a438a1569b4c88eece0546ae37b4ea4"
    assert v.dirent.encode().hex() in doc
    assert f"ID `{v.id}`" in doc and f"short ID `{v.short_id}`" in doc


def test_select_state_edges():
    d = DirDirent()
    es = [ArchiveEntry(1_700_000_000 + 60 * i, d) for i in range(3)]
    with pytest.raises(StateNotFoundError):
        select_state([], "latest", "x.vt")
    assert select_state(es, "", "x.vt") is es[-1]
    assert select_state(es, "+2", "x.vt") is es[2]
    minute = datetime.datetime.fromtimestamp(es[1].when, datetime.UTC).strftime("%Y-%m-%dT%H:%MZ")
    assert select_state(es, minute, "x.vt") is es[1]
    offset = datetime.datetime.fromtimestamp(es[1].when, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S+00:00"
    )
    assert select_state(es, offset, "x.vt") is es[1]
    # found by the fuzzer: the end of year 9999, an offset of a day or more
    assert select_state(es, "9999-12-31", "x.vt") is es[-1]
    with pytest.raises(StateNotFoundError, match="not a date"):
        select_state(es, "2025-12-01T10:00+25:30", "x.vt")


@pytest.mark.skipif(not __import__("os").path.exists("/dev/fuse"), reason="no FUSE")
def test_mount_a_state_read_only(h):
    mnt = h.tmp / "mnt"
    mnt.mkdir(exist_ok=True)
    r = h.vt("mount", "src.vt@-2", str(mnt), "-e", f"cat {mnt}/sub/f; touch {mnt}/new", check=False)
    assert r.stdout == b"v1" and b"Read-only" in r.stderr
    r = h.vt("mount", f"src.vt@{h.states[0].short_id}/sub", str(mnt), "-e", f"cat {mnt}/f")
    assert r.stdout == b"v0"
    assert (
        len(list(json.loads(x) for x in h.vt("log", "--json", "src.vt").stdout.splitlines())) == 3
    )
    r = h.vt("mount", "-a", "src.vt@0", str(mnt), "-e", "true", check=False)
    assert r.returncode == 1 and b"-a shows every state" in r.stderr


def test_ls_json(h):
    r = h.vt("ls", "--json", "-R", "src.vt@0")
    got = {j["path"]: j for j in map(json.loads, r.stdout.splitlines())}
    assert set(got) == {"at@sign", "only0", "sub", "sub/f"}
    assert got["sub/f"]["type"] == "file" and got["sub/f"]["size"] == 2
    assert got["sub"]["type"] == "dir" and isinstance(got["sub"]["mtime"], float)
    (one,) = map(json.loads, h.vt("ls", "--json", "src.vt@-1/sub/f").stdout.splitlines())
    assert (
        one["path"] == "f" and one["mode"] == (h.tmp / "src" / "sub" / "f").stat().st_mode & 0o7777
    )


def test_a_printed_time_names_its_state(tmp_path):
    """`unpack --at TIME` with the time `vt log --json` prints picks that state:
    an ISO time read back as a float is often a hair below the recorded one
    (38% of random times), so `Archive.at` compares microseconds."""
    import random

    from vtstore.archive import Archive
    from vtstore.cli.unpack import parse_time

    rng = random.Random(16)
    whens = sorted(1.7e9 + rng.random() * 1e8 for _ in range(300))
    path = tmp_path / "t.vt"
    path.write_text("".join(ArchiveEntry(w, DirDirent()).to_line() for w in whens))
    archive = Archive(str(path))
    entries = list(archive.entries())
    for e in entries:
        assert archive.at(parse_time(e.isotime)) == e
