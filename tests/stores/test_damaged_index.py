"""A damaged LMDB index never kills `vt`: missing, empty, a file, truncated or
byte-flipped, every command exits normally (no signal, no traceback) and says
so in one line; `vt reindex` and `vt fsck --repair` rebuild it from the data
files alone, after which every block reads back byte-exact.

Each case runs real `vt` processes against a copy of one real datadir."""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import sys

import pytest

from vtstore.errors import StoreError
from vtstore.stores.datadir import DataDir
from vtstore.stores.lmdbenv import IndexDamagedError, check_meta_pages

N_FLIPS = int(os.environ.get("VT_INDEX_FLIP_CASES", "16"))


def vt(env, *args, check_clean=True):
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-q", *args],
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
    )
    if check_clean:
        assert r.returncode >= 0, f"vt {args} died by signal {-r.returncode}: {r.stderr}"
        assert "Traceback" not in r.stderr, r.stderr
        if r.returncode:
            lines = [x for x in r.stderr.splitlines() if x.strip()]
            # one line on stderr (fsck reports on stdout)
            assert len(lines) == 1 or (not lines and r.stdout.strip()), (
                f"vt {args}: not one line: {r.stderr!r}"
            )
    return r


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A datadir holding a saved tree of 600 files; its ref and every block."""
    top = tmp_path_factory.mktemp("damaged-index")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VT_")}
    src = str(__import__("vtstore").__file__).rsplit("/vtstore/", 1)[0]
    env["PYTHONPATH"] = src
    env["HOME"] = str(top / "home")
    (top / "home").mkdir()
    tree = top / "tree"
    tree.mkdir()
    rnd = random.Random(12)
    for i in range(600):
        n = rnd.randrange(100, 60000)
        data = rnd.randbytes(n) if i % 2 else (b"line %d of a text file\n" % i) * (n // 24)
        (tree / f"f{i:03d}").write_bytes(data)
    base = top / "base"
    r = vt(env, "-S", str(base), "save", str(tree))
    assert r.returncode == 0, r.stderr
    ref = r.stdout.strip().splitlines()[-1]
    with DataDir(base, readonly=True) as s:
        blocks = {h: s[h] for h in s.hashcodes()}
    assert len(blocks) > 1000, len(blocks)
    return env, base, ref, blocks, top


def _flip(path, offsets, rnd):
    with open(path, "r+b") as f:
        for off in offsets:
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ (1 << rnd.randrange(8))]))


def _truncate(frac=None, size=None):
    def damage(dd):
        p = dd / "index" / "data.mdb"
        n = size if size is not None else int(os.path.getsize(p) * frac)
        os.truncate(p, n)

    return damage


def _index_is_file(dd):
    shutil.rmtree(dd / "index")
    (dd / "index").write_bytes(b"not an index\n")


def _empty_dir(dd):
    shutil.rmtree(dd / "index")
    (dd / "index").mkdir()


def _meta_claims_more(dd):
    # both meta pages claim ten times the pages the file has: LMDB alone SIGBUSes
    p = dd / "index" / "data.mdb"
    with open(p, "r+b") as f:
        for page in (0, 4096):
            f.seek(page + 136)
            (last,) = struct.unpack("<Q", f.read(8))
            f.seek(page + 136)
            f.write(struct.pack("<Q", last * 10 + 10))


def _data_mdb_is_dir(dd):
    os.unlink(dd / "index" / "data.mdb")
    (dd / "index" / "data.mdb").mkdir()


def _random_flips(seed):
    def damage(dd):
        p = dd / "index" / "data.mdb"
        rnd = random.Random(seed)
        size = os.path.getsize(p)
        _flip(p, [rnd.randrange(size) for _ in range(rnd.choice((1, 4, 16, 64)))], rnd)

    return damage


DAMAGES = {
    "missing": lambda dd: shutil.rmtree(dd / "index"),
    "empty-dir": _empty_dir,
    "a-file": _index_is_file,
    "data-mdb-is-a-dir": _data_mdb_is_dir,
    "truncated-to-0": _truncate(size=0),
    "truncated-to-4096": _truncate(size=4096),
    "truncated-to-8192": _truncate(size=8192),
    "truncated-to-half": _truncate(frac=0.5),
    "meta-claims-more-pages": _meta_claims_more,
}
DAMAGES["truncated-by-a-page"] = lambda dd: os.truncate(
    dd / "index" / "data.mdb", os.path.getsize(dd / "index" / "data.mdb") - 4096
)
DAMAGES["truncated-to-one-octet-less"] = lambda dd: os.truncate(
    dd / "index" / "data.mdb", os.path.getsize(dd / "index" / "data.mdb") - 1
)
for _seed in range(N_FLIPS):
    DAMAGES[f"flipped-{_seed}"] = _random_flips(_seed)


def _readback(dd, blocks):
    with DataDir(dd, readonly=True) as s:
        bad = [h for h, b in blocks.items() if s.get(h) != b]
    assert not bad, f"{len(bad)} of {len(blocks)} blocks do not read back"


def _params():
    # the first few random flips always run; the rest are slow
    return [
        pytest.param(n, marks=pytest.mark.slow)
        if n.startswith("flipped-") and int(n.split("-")[1]) >= 4
        else n
        for n in DAMAGES
    ]


@pytest.mark.parametrize("name", _params())
def test_damaged_index_never_kills_vt_and_is_rebuilt(saved, tmp_path, name):
    env, base, ref, blocks, _ = saved
    dd = tmp_path / "dd"
    shutil.copytree(base, dd)
    DAMAGES[name](dd)
    # every command: a clean exit, one line if it fails
    vt(env, "-S", str(dd), "ls", "-l", ref)
    vt(env, "-S", str(dd), "info")
    vt(env, "-S", str(dd), "save", str(saved[4] / "tree" / "f002"))
    r = vt(env, "-S", str(dd), "fsck")
    assert r.returncode in (0, 1), r.stderr
    # half the cases rebuild by reindex, half by repair
    cure = ("reindex",) if sum(map(ord, name)) % 2 else ("fsck", "--repair")
    r = vt(env, "-S", str(dd), *cure)
    assert r.returncode in (0, 1), r.stderr + r.stdout
    r = vt(env, "-S", str(dd), "fsck")
    assert r.returncode == 0, r.stdout + r.stderr
    _readback(dd, blocks)


def test_truncated_index_is_one_clear_line(saved, tmp_path):
    env, base, ref, _, _ = saved
    dd = tmp_path / "dd"
    shutil.copytree(base, dd)
    _truncate(frac=0.5)(dd)
    r = vt(env, "-S", str(dd), "cat", ref + "/f001")
    assert r.returncode == 1
    assert "index" in r.stderr and "damaged" in r.stderr and "vt reindex" in r.stderr
    # the store opens; every use of the index says what to do
    with DataDir(dd, readonly=True) as s:
        assert isinstance(s.index_damage, IndexDamagedError)
        with pytest.raises(StoreError, match="vt reindex"):
            len(s)
        assert "index_damage" in s.info()
        rep = s.fsck()
        assert not rep.ok and "damaged" in rep.lines()[0]


def test_file_table_not_ascii_is_damage_not_a_traceback(saved, tmp_path):
    """The file table's uuid overwritten with octets that are not ASCII (once a
    UnicodeDecodeError traceback)."""
    env, base, ref, blocks, _ = saved
    dd = tmp_path / "dd"
    shutil.copytree(base, dd)
    (vtd,) = (dd / "data").glob("*.vtd")
    p = dd / "index" / "data.mdb"
    raw = bytearray(p.read_bytes())
    key = b'"uuid": "' + vtd.stem.encode()
    at = raw.find(key)
    assert at > 0
    while at > 0:  # the live entry and any stale copies in free pages
        raw[at + 9 : at + 13] = b"\xff\xfe\xfd\xfc"
        at = raw.find(key, at + 1)
    p.write_bytes(bytes(raw))
    r = vt(env, "-S", str(dd), "cat", ref + "/f001")
    assert r.returncode == 1 and "vt reindex" in r.stderr, r.stderr
    r = vt(env, "-S", str(dd), "fsck")
    assert r.returncode == 1 and "damage" in r.stdout, r.stdout
    r = vt(env, "-S", str(dd), "fsck", "--repair")
    assert r.returncode == 1 and "rebuilt the index" in r.stdout, r.stdout
    assert vt(env, "-S", str(dd), "fsck").returncode == 0
    _readback(dd, blocks)


def test_meta_pages_are_checked_before_mapping(tmp_path):
    with DataDir(tmp_path / "dd") as s:
        s.add_many([b"%d" % i * 100 for i in range(2000)])
    idx = str(tmp_path / "dd" / "index")
    size = check_meta_pages(idx)
    assert size == os.path.getsize(os.path.join(idx, "data.mdb"))
    os.truncate(os.path.join(idx, "data.mdb"), size - 4096)
    with pytest.raises(IndexDamagedError, match="truncated"):
        check_meta_pages(idx)
    os.truncate(os.path.join(idx, "data.mdb"), 100)
    with pytest.raises(IndexDamagedError):
        check_meta_pages(idx)


def test_reindex_whatever_the_index_is(saved, tmp_path):
    """In-process: `reindex` works from every state of the index directory."""
    _, base, _, blocks, _ = saved
    for name in ("missing", "a-file", "data-mdb-is-a-dir", "truncated-to-half"):
        dd = tmp_path / name
        shutil.copytree(base, dd)
        DAMAGES[name](dd)
        with DataDir(dd) as s:
            assert s.index_damage is not None, name
            rep = s.reindex()
            assert rep.ok, rep.lines()
            assert s.index_damage is None
            assert len(s) == len(blocks)
        _readback(dd, blocks)
