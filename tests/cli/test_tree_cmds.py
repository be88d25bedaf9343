"""The tree commands end to end, as a user runs them: real processes, a real datadir."""

import json
import os
import subprocess
import sys

import pytest

from vtstore.archive import Archive
from vtstore.blocks import HashCodeBlock
from vtstore.hashes import Hash_BLAKE3
from vtstore.tree.dirent import T_DIR, T_FILE, Dirent

from ..tree.conftest import make_rich_tree, rsync_diff


def vt(store, *args, input=None, check=True):
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-q", "-S", str(store), *args],
        capture_output=True,
        input=input,
    )
    if check and r.returncode != 0:
        raise AssertionError(f"vt {' '.join(args)} failed ({r.returncode}): {r.stderr.decode()}")
    assert b"Traceback" not in r.stderr, r.stderr.decode()
    return r


@pytest.fixture
def store(tmp_path):
    return tmp_path / "store"


def test_save_cat_ls(store, tmp_path):
    f = tmp_path / "hello.txt"
    f.write_bytes(b"hello\n" * 5000)
    ref = vt(store, "save", str(f)).stdout.decode().strip()
    assert ref.startswith(("B{", "I{"))
    assert vt(store, "cat", ref).stdout == f.read_bytes()
    dref = vt(store, "save", "-F", str(f)).stdout.decode().strip()
    assert dref.startswith("F{") and '"hello.txt"' in dref
    assert vt(store, "cat", dref).stdout == f.read_bytes()
    assert vt(store, "save", "-", input=b"from stdin").stdout.strip().startswith(b"LB{")
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "x").write_text("x")
    (d / "y").write_text("y")
    tree = vt(store, "save", str(d)).stdout.decode().strip()
    assert vt(store, "ls", tree).stdout.decode().split() == ["sub/", "y"]
    assert vt(store, "cat", tree + "/sub/x").stdout == b"x"
    long = vt(store, "ls", "-lR", tree).stdout.decode()
    assert "sub:" in long and "-rw-" in long
    r = vt(store, "cat", tree, check=False)
    assert r.returncode == 1 and b"is a dir" in r.stderr


def test_pack_unpack_log_export(store, tmp_path):
    src = str(tmp_path / "src")
    make_rich_tree(src)
    out = vt(store, "pack", src).stdout.decode().strip()
    assert out.startswith("D{")
    archive = src + ".vt"
    assert len(list(Archive(archive).entries())) == 1
    vt(store, "unpack", archive, str(tmp_path / "restored"))
    assert rsync_diff(src, str(tmp_path / "restored")) == []
    # a second pack of the unchanged tree adds a state but no data
    before = _datadir_bytes(store)
    vt(store, "pack", src)
    assert len(list(Archive(archive).entries())) == 2
    assert _datadir_bytes(store) - before < 4096
    log = vt(store, "log", "--json", archive).stdout.decode().splitlines()
    assert len(log) == 2 and json.loads(log[0])["files"] > 10
    vt(store, "export", archive, "-o", str(tmp_path / "t.tar"))
    (tmp_path / "tarout").mkdir()
    subprocess.run(
        [
            "tar",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "-xpf",
            str(tmp_path / "t.tar"),
            "-C",
            str(tmp_path / "tarout"),
        ],
        check=True,
        capture_output=True,
    )
    assert [x for x in rsync_diff(src, str(tmp_path / "tarout")) if not x.endswith(" sock")] == []
    vt(store, "fsck", archive)


def _datadir_bytes(store) -> int:
    total = 0
    for dirpath, _, files in os.walk(store):
        for f in files:
            if f.endswith(".vtd"):
                total += os.path.getsize(os.path.join(dirpath, f))
    return total


def test_import_merges_and_unpack_at_time(store, tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    (a / "one").write_text("1")
    archive = str(tmp_path / "m.vt")
    vt(store, "import", str(a), archive)
    b = tmp_path / "b"
    b.mkdir()
    (b / "two").write_text("2")
    vt(store, "import", str(b), archive)
    entries = list(Archive(archive).entries())
    assert len(entries) == 2
    vt(store, "unpack", archive, str(tmp_path / "now"))
    assert sorted(os.listdir(tmp_path / "now")) == ["one", "two"]
    vt(store, "unpack", "--at", str(entries[0].when), archive, str(tmp_path / "then"))
    assert os.listdir(tmp_path / "then") == ["one"]


def test_publish_uri(store, tmp_path):
    f = tmp_path / "pub.txt"
    f.write_text("published")
    uri = vt(store, "publish", str(f)).stdout.decode().strip()
    assert uri.startswith("x-vt:/D{") and uri.endswith("/pub.txt")
    assert vt(store, "cat", uri).stdout == b"published"


@pytest.mark.parametrize(
    "name",
    ["../escape", "/abs", "a/b", "..", "nul\\x00byte"],
)
def test_hostile_archives_fail_cleanly(store, tmp_path, name):
    archive = tmp_path / "evil.vt"
    # an empty directory (version 1, no flags) under a hostile name
    hostile = 'D{name:"' + name + '",block:LB{data:"\\x01\\x00"}}'
    line = json.dumps({"when": 1, "dirent": hostile})
    archive.write_text(line + "\n")
    target = tmp_path / "target"
    r = vt(store, "unpack", str(archive), str(target), check=False)
    assert r.returncode != 0 and r.stderr.count(b"\n") == 1, r.stderr
    assert not target.exists() or not any(target.iterdir())
    assert not (tmp_path / "escape").exists()


def test_hostile_entries_inside_a_stored_directory(store, tmp_path):
    """A directory block whose entry is named '..' (built by hand) is refused on unpack."""
    from vtstore.codec import encode_bytes, encode_varint
    from vtstore.tree.dirent import F_NAME

    evil_entry = encode_varint(T_FILE) + encode_varint(F_NAME) + encode_bytes(b"..")
    dirdata = encode_varint(1) + encode_varint(0) + encode_bytes(evil_entry)
    ref = vt(store, "save", "-", input=dirdata).stdout.decode().strip()
    from vtstore.transcribe import parse_block

    d = Dirent(T_DIR, name="evil", block=parse_block(ref))
    r = vt(store, "unpack", str(d), str(tmp_path / "t"), check=False)
    assert r.returncode == 1 and b"unsafe dirent name" in r.stderr
    assert not (tmp_path / "t").exists() or not any((tmp_path / "t").iterdir())


def test_corrupt_and_missing_blocks_fail_cleanly(store, tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(300_000))
    vt(store, "pack", str(src))
    # flip a byte in every data file: unpack must say "corrupt", not crash
    for dirpath, _, files in os.walk(store):
        for fn in files:
            if fn.endswith(".vtd"):
                p = os.path.join(dirpath, fn)
                with open(p, "r+b") as f:
                    f.seek(os.path.getsize(p) // 2)
                    b = f.read(1)
                    f.seek(-1, 1)
                    f.write(bytes([b[0] ^ 0xFF]))
    r = vt(store, "unpack", str(src) + ".vt", str(tmp_path / "out"), check=False)
    assert r.returncode != 0 and b"corrupt" in r.stderr.lower(), r.stderr
    # a ref to a block the store never had
    missing = Dirent(T_FILE, name="m", block=HashCodeBlock(Hash_BLAKE3.from_data(b"nope"), 4))
    r = vt(store, "cat", str(missing), check=False)
    assert r.returncode == 1 and b"missing block" in r.stderr


def _run_on_a_terminal(argv) -> str:
    """Run `argv` with stdout and stderr on a pseudo-terminal of 120 columns."""
    import pty
    import shlex

    out = []

    def read(fd):
        data = os.read(fd, 65536)
        out.append(data)
        return data

    cmd = "stty cols 120 rows 40; exec " + " ".join(shlex.quote(a) for a in argv)
    pty.spawn(["sh", "-c", cmd], read)
    return b"".join(out).decode(errors="replace").replace("\r", "\n")


def test_pack_progress_bar_on_a_terminal_and_quiet(store, tmp_path):
    src = tmp_path / "p"
    src.mkdir()
    for i in range(2000):  # enough work (~0.5 s) for the bar to redraw
        (src / f"f{i}").write_bytes(os.urandom(30_000))
    base = [sys.executable, "-m", "vtstore.cli.main", "-S", str(store)]
    shown = _run_on_a_terminal([*base, "pack", str(src)])
    bars = [line for line in shown.splitlines() if line.startswith("pack:")]
    assert bars and "files" in bars[-1] and "dedup" in shown, shown[-500:]
    quiet = _run_on_a_terminal([*base, "-q", "pack", "--full", str(src)])
    assert "pack:" not in quiet and quiet.strip().startswith("D{")


def test_named_archives_of_a_config_clause(tmp_path):
    """`[clause]NAME` names the archive NAME kept by the clause's datadir."""
    home = tmp_path / "home"
    home.mkdir()
    datadir = tmp_path / "dd"
    (home / ".vtrc").write_text(f"[mine]\ntype = datadir\npath = {datadir}\n")
    env = dict(os.environ, HOME=str(home), VT_CONFIG=str(home / ".vtrc"))
    src = tmp_path / "tree"
    src.mkdir()
    (src / "a").write_text("alpha")

    def run(*args, check=True):
        r = subprocess.run(
            [sys.executable, "-m", "vtstore.cli.main", "-q", *args],
            capture_output=True,
            env=env,
        )
        assert b"Traceback" not in r.stderr
        if check:
            assert r.returncode == 0, r.stderr.decode()
        return r

    run("pack", "-a", "[mine]proj", str(src))
    assert (datadir / "proj.vt").exists() and not (tmp_path / "tree.vt").exists()
    assert run("cat", "[mine]proj/a").stdout == b"alpha"
    assert run("ls", "[mine]proj").stdout.split() == [b"a"]
    assert len(run("log", "--brief", "[mine]proj").stdout.splitlines()) == 1
    run("unpack", "[mine]proj", str(tmp_path / "out"))
    assert (tmp_path / "out" / "a").read_text() == "alpha"
    r = run("cat", "[mine]nope/a", check=False)
    assert r.returncode == 1 and b"no such archive" in r.stderr
    r = run("cat", "[mine]/a", check=False)
    assert r.returncode == 1 and b"[clause]NAME" in r.stderr


def test_unpack_of_a_file_ref_refuses_bad_targets(store, tmp_path):
    f = tmp_path / "f"
    f.write_text("content")
    ref = vt(store, "save", "-F", str(f)).stdout.decode().strip()
    r = vt(store, "unpack", ref, str(f), check=False)
    assert r.returncode == 1 and r.stderr.decode().strip().endswith("already exists")
    assert f.read_text() == "content"
    r = vt(store, "unpack", ref, str(tmp_path / "no" / "such" / "dir" / "f"), check=False)
    assert r.returncode == 1 and b"No such file or directory" in r.stderr
    vt(store, "unpack", ref, str(tmp_path / "g"))
    assert (tmp_path / "g").read_text() == "content"
