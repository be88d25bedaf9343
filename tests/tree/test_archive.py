"""Archives: NDJSON and legacy lines, torn last lines, concurrent appends."""

import json
import multiprocessing
import os

import pytest

from vtstore.archive import Archive
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


@pytest.mark.parametrize(
    "line",
    [
        '{"when": 1}',
        '{"when": "x", "dirent": "D{}"}',
        "garbage",
        '{"when": 1, "dirent": "F{name:\\"..\\"}"}',
        '2020 12 D{name:"a/b"}',
    ],
)
def test_bad_lines_are_located_errors(tmp_path, line):
    p = tmp_path / "bad.vt"
    p.write_text(f"{json.dumps({'when': 1, 'dirent': str(D('ok'))})}\n{line}\n")
    with pytest.raises(FormatError, match="bad.vt:2: "):
        list(Archive(p).entries())


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
