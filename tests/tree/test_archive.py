"""Archives: NDJSON and legacy lines, torn and damaged lines, huge numbers, repair,
the store an archive belongs to, concurrent appends."""

import fcntl
import json
import multiprocessing
import os

import pytest

from vtstore.archive import (
    MAX_WHEN,
    MIN_WHEN,
    Archive,
    ArchiveStoreError,
    parse_line,
    store_identity,
)
from vtstore.blocks import LiteralBlock
from vtstore.errors import FormatError
from vtstore.tree import Dirent
from vtstore.tree.dirent import T_DIR


def D(tag: str) -> Dirent:
    return Dirent(T_DIR, name=tag, block=LiteralBlock(tag.encode()))


def test_append_and_read(tmp_path):
    a = Archive(tmp_path / "x.vt")
    assert a.last() is None and list(a.entries()) == []
    e1 = a.update(D("one"), when=1000.5, comment="first")
    a.update(D("two"), when=2000.0, name="n")
    got = list(a.entries())
    assert [e.dirent.name for e in got] == ["one", "two"]
    assert got[0] == e1 and got[0].comment == "first" and got[1].name == "n"
    assert a.at(1500).dirent.name == "one" and a.at(10) is None
    line = (tmp_path / "x.vt").read_text().splitlines()[0]
    assert json.loads(line)["dirent"] == str(D("one"))
    assert got[0].isotime == "1970-01-01T00:16:40.500000Z"


def test_legacy_lines(tmp_path):
    p = tmp_path / "old.vt"
    p.write_text(f"2020-01-01T00:00:00 1577836800 {D('legacy')}\n")
    e = Archive(p).last()
    assert e.when == 1577836800 and e.dirent.name == "legacy"


def test_torn_last_line_ignored_then_repaired(tmp_path, caplog):
    p = tmp_path / "t.vt"
    a = Archive(p)
    a.update(D("ok"), when=1.0)
    with open(p, "a") as f:
        f.write('{"when": 2, "dirent": "D{na')
    assert a.last().dirent.name == "ok"
    assert "torn" in caplog.text
    a.update(D("after"), when=3.0)
    assert [e.dirent.name for e in a.entries()] == ["ok", "after"]


BAD_LINES = [
    '{"when": 1}',
    '{"when": "x", "dirent": "D{}"}',
    "garbage",
    '{"when": 1, "dirent": "F{name:\\"..\\"}"}',
    '2020 12 D{name:"a/b"}',
]


@pytest.mark.parametrize("line", BAD_LINES)
def test_bad_line_is_skipped_with_a_located_warning(tmp_path, line, caplog):
    p = tmp_path / "bad.vt"
    ok = json.dumps({"when": 1, "dirent": str(D("ok"))})
    later = json.dumps({"when": 2, "dirent": str(D("later"))})
    p.write_text(f"{ok}\n{line}\n{later}\n")
    assert [e.dirent.name for e in Archive(p).entries()] == ["ok", "later"]
    assert "bad.vt line 2: " in caplog.text
    with pytest.raises(FormatError):
        parse_line(line)
    scan = Archive(p).scan()
    assert [n for n, _ in scan.states] == [1, 3]
    assert [d.lineno for d in scan.damaged] == [2] and scan.torn is None


def test_many_damaged_lines_warn_a_few_then_a_count(tmp_path, caplog):
    """3 KB of junk must not print a warning per line: the first few are named,
    the rest summed up in one line that points at vt fsck."""
    p = tmp_path / "junk.vt"
    ok = json.dumps({"when": 1, "dirent": str(D("ok"))})
    p.write_text(ok + "\n" + "".join(f"junk {i}\n" for i in range(40)) + ok + "\n")
    assert len(list(Archive(p).entries())) == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 4, warnings
    assert "junk.vt line 2: " in warnings[0]
    assert "37 more damaged lines skipped (lines 5-41)" in warnings[-1]


def _huge(n=5000):
    return "9" * n


@pytest.mark.parametrize(
    "line",
    [
        '{"when": ' + _huge() + ', "dirent": "D{}"}',
        '{"when": -' + _huge() + ', "dirent": "D{}"}',
        '{"when": ' + _huge() + '.5, "dirent": "D{}"}',
        '{"when": 1e999, "dirent": "D{}"}',
        '{"when": NaN, "dirent": "D{}"}',
        '{"when": Infinity, "dirent": "D{}"}',
        '{"when": 1e300, "dirent": "D{}"}',
        '{"when": ' + str(10**300) + ', "dirent": "D{}"}',
        '{"when": true, "dirent": "D{}"}',
        '{"when": 1, "dirent": "D{}", "x": ' + _huge() + "}",
        '{"when": 1, "dirent": "D{}", "comment": "\\ud800"}',
        '{"when": 1, "dirent": "D{}", "store": 5}',
        "[" * 100000,
        '{"a":' * 100000,
        f"2020-01-01T00:00:00 {_huge()} D{{}}",
        "2020-01-01T00:00:00 inf D{}",
        "2020-01-01T00:00:00 nan D{}",
        "2020-01-01T00:00:00 1_000 D{}",
        "2020-01-01T00:00:00 1e400 D{}",
        "2020-01-01T00:00:00 999999999999 D{}",
    ],
    ids=lambda s: s[:40],
)
def test_huge_and_odd_numbers_are_format_errors(line):
    with pytest.raises(FormatError):
        parse_line(line, "x.vt line 1: ")


def test_huge_span_in_dirent_is_a_format_error():
    text = 'D{block:B{hashcode:"' + "0" * 64 + '",span:' + _huge() + "}}"
    with pytest.raises(FormatError):
        parse_line(json.dumps({"when": 1, "dirent": text}))
    with pytest.raises(FormatError):
        parse_line(f"2020-01-01T00:00:00 1 {text}")


def test_edge_times_accepted():
    for when in (MIN_WHEN, MAX_WHEN, 0, -1.5):
        e = parse_line(json.dumps({"when": when, "dirent": str(D("t"))}))
        assert e.isotime  # every accepted time prints


def test_store_field_round_trips_and_old_readers_ignore_unknown_keys(tmp_path):
    a = Archive(tmp_path / "s.vt")
    a.update(D("one"), when=5.0, store_id="0123abcd")
    assert a.last().store_id == "0123abcd"
    d = json.loads((tmp_path / "s.vt").read_text())
    assert d["store"] == "0123abcd"
    d["future_key"] = {"nested": [1, 2]}
    assert parse_line(json.dumps(d)).dirent.name == "one"


def test_repair_sets_damaged_lines_aside(tmp_path):
    p = tmp_path / "r.vt"
    a = Archive(p)
    a.update(D("one"), when=1.0)
    with open(p, "ab") as f:
        f.write(b"# a comment stays\n\xff\xfe not utf-8\n")
    a.update(D("two"), when=2.0)
    with open(p, "ab") as f:
        f.write(b'{"when": 3, "dirent": "D{na')  # torn
    os.chmod(p, 0o640)
    damaged = a.repair()
    assert [(d.lineno, d.torn) for d in damaged] == [(3, False), (5, True)]
    text = p.read_bytes()
    assert b"# a comment stays\n" in text and text.endswith(b"\n")
    assert [e.dirent.name for e in a.entries()] == ["one", "two"]
    scan = a.scan()
    assert scan.damaged == [] and len(scan.states) == 2
    aside = (tmp_path / "r.vt.damaged").read_bytes()
    assert b"r.vt line 3: not UTF-8" in aside and b"\xff\xfe not utf-8\n" in aside
    assert b"D{na\n" in aside
    assert os.stat(p).st_mode & 0o777 == 0o640
    assert a.repair() == []  # nothing more to do
    assert sorted(os.listdir(tmp_path)) == ["r.vt", "r.vt.damaged"]


def _repairer(path, n):
    a = Archive(path)
    for _ in range(n):
        with open(path, "ab") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(b"damaged line\n")
        a.repair()


def test_appends_during_repairs_are_never_lost(tmp_path):
    p = str(tmp_path / "c.vt")
    Archive(p).update(D("first"))
    procs = [multiprocessing.Process(target=_appender, args=(p, t, 60)) for t in "ab"]
    procs.append(multiprocessing.Process(target=_repairer, args=(p, 60)))
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join()
    assert all(pr.exitcode == 0 for pr in procs)
    Archive(p).repair()
    names = [e.dirent.name for e in Archive(p).entries()]
    assert sorted(names) == sorted(["first"] + [f"{t}{i}" for t in "ab" for i in range(60)])


class _Holder:
    """A store wrapper without an identity of its own (like a cache)."""

    def __init__(self, inner):
        self.backend = inner


def test_store_identity_and_check(tmp_path):
    from vtstore.blocks import HashCodeBlock
    from vtstore.stores.datadir import DataDir
    from vtstore.stores.memory import MemoryStore

    dd = DataDir(tmp_path / "dd")
    other = DataDir(tmp_path / "other")
    mem = MemoryStore()
    try:
        dd.add(b"x")  # make it a real datadir with a uuid
        other.add(b"y")
        ident = store_identity(dd)
        assert ident and ident == dd.meta["uuid"] and store_identity(_Holder(dd)) == ident
        assert store_identity(mem) is None and store_identity(other) != ident
        h = dd.add(b"top directory data")
        top = Dirent(T_DIR, name="t", block=HashCodeBlock(h, 18))
        a = Archive(tmp_path / "t.vt")
        assert a.check_store(mem)  # empty archive: anyone may start it
        a.update(top, store_id=ident)
        assert a.check_store(dd)
        for wrong in (mem, other):
            with pytest.raises(ArchiveStoreError, match="belongs to another store"):
                a.check_store(wrong)
            assert a.check_store(wrong, force=True) is False
        # an old line without the field: only the top-block check applies
        b = Archive(tmp_path / "old.vt")
        b.update(top)
        assert b.check_store(dd)
        with pytest.raises(ArchiveStoreError, match="not in"):
            b.check_store(mem)
    finally:
        dd.close()
        other.close()


def _appender(path, tag, n):
    a = Archive(path)
    for i in range(n):
        a.update(D(f"{tag}{i}"))


def test_concurrent_appends_never_interleave(tmp_path):
    p = str(tmp_path / "c.vt")
    procs = [multiprocessing.Process(target=_appender, args=(p, t, 100)) for t in "abcd"]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join()
    names = [e.dirent.name for e in Archive(p).entries()]
    assert sorted(names) == sorted(f"{t}{i}" for t in "abcd" for i in range(100))
    assert os.path.getsize(p) == sum(len(x) + 1 for x in open(p).read().splitlines())


def test_store_check_looks_inside_a_literal_top_directory(tmp_path):
    """A tiny top directory is carried in the line itself: the check looks at
    the blocks of its entries instead."""
    from vtstore.blocks import HashCodeBlock
    from vtstore.stores.memory import MemoryStore
    from vtstore.tree.dir import make_dir
    from vtstore.tree.dirent import T_FILE

    mine, other, scratch = MemoryStore(), MemoryStore(), MemoryStore()
    h = mine.add(b"file content")
    d = make_dir([Dirent(T_FILE, name="f", block=HashCodeBlock(h, 12))], scratch)
    top = Dirent(T_DIR, name="t", block=LiteralBlock(scratch[d.block.hashcode]))
    a = Archive(tmp_path / "lit.vt")
    a.update(top)
    assert a.check_store(mine)
    with pytest.raises(ArchiveStoreError, match="not in"):
        a.check_store(other)


def test_update_if_newer_is_one_step_under_the_lock(tmp_path):
    """`if_newer` appends only after an older latest state, even when the last
    lines are damaged or torn, and from many processes at once the file stays
    in time order."""
    import subprocess
    import sys

    p = tmp_path / "a.vt"
    a = Archive(p)
    assert a.update(D("one"), when=10.0, if_newer=True) is not None
    assert a.update(D("old"), when=5.0, if_newer=True) is None
    assert a.update(D("same"), when=10.0, if_newer=True) is None
    with open(p, "a") as f:
        f.write("junk line\n{torn")
    assert a.update(D("two"), when=20.0, if_newer=True) is not None
    assert [e.dirent.name for e in a.entries()] == ["one", "two"]
    # a long archive: the latest is found from the end, past 64 KiB pieces
    from vtstore.archive import ArchiveEntry

    with open(p, "a") as f:
        f.writelines(ArchiveEntry(100.0 + i, D(f"s{i}")).to_line() for i in range(3000))
    assert a.update(D("late"), when=50.0, if_newer=True) is None
    # racing processes, each appending its own times in random order
    script = (
        "import random, sys; from vtstore.archive import Archive;"
        "from vtstore.tree.dirent import DirDirent as D;"
        "a = Archive(sys.argv[1]); ts = list(range(5000, 5060)); random.shuffle(ts)\n"
        "for t in ts: a.update(D('r'), when=float(t), if_newer=True)"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(p)]) for _ in range(4)]
    assert all(pr.wait(timeout=120) == 0 for pr in procs)
    whens = [e.when for e in a.entries()]
    assert whens == sorted(whens) and len(whens) == len(set(whens))
