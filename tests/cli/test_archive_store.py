"""An archive is tied to its store: `vt pack` and `vt import` refuse to append a
state to an archive whose latest state belongs to another store (another
datadir, `-S memory:`), unless `--force`; each new state records its store's
uuid.  Real `vt` processes, real datadirs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from vtstore.archive import Archive


def vt(env, *args, check=True):
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", *args], capture_output=True, env=env
    )
    assert b"Traceback" not in r.stderr, r.stderr.decode()
    if check and r.returncode != 0:
        raise AssertionError(f"vt {' '.join(args)} failed ({r.returncode}): {r.stderr.decode()}")
    return r


@pytest.fixture
def setup(tmp_path, vt_env):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "big").write_bytes(os.urandom(300_000))
    (src / "small").write_text("small\n")
    env_a = dict(vt_env, VT_DIR=str(tmp_path / "A"))
    env_b = dict(vt_env, VT_DIR=str(tmp_path / "B"))
    vt(env_a, "-q", "pack", str(src))
    return src, tmp_path / "src.vt", env_a, env_b


def _uuid(datadir) -> str:
    return json.loads((datadir / "datadir.json").read_text())["uuid"]


def test_pack_records_the_store_uuid(setup, tmp_path):
    src, archive, env_a, _ = setup
    vt(env_a, "-q", "pack", str(src))
    lines = [json.loads(x) for x in archive.read_text().splitlines()]
    assert [d["store"] for d in lines] == [_uuid(tmp_path / "A")] * 2
    assert Archive(archive).last().store_id == _uuid(tmp_path / "A")
    log = vt(env_a, "log", "--json", str(archive)).stdout.decode().splitlines()
    assert json.loads(log[-1])["store"] == _uuid(tmp_path / "A")


@pytest.mark.parametrize("other", ["memory", "datadir"])
def test_pack_from_another_store_is_refused_unless_forced(setup, tmp_path, other):
    src, archive, env_a, env_b = setup
    args = ["-S", "memory:"] if other == "memory" else []
    env = env_a if other == "memory" else env_b
    before = archive.read_bytes()
    r = vt(env, *args, "pack", str(src), check=False)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err.count("\n") == 1 and "belongs to another store" in err and "--force" in err
    assert _uuid(tmp_path / "A") in err
    assert archive.read_bytes() == before
    (src / "new").write_text("new file\n")
    vt(env, *args, "-q", "pack", "--force", str(src))
    assert len(list(Archive(archive).entries())) == 2
    if other == "datadir":
        # the forced state names B and is whole in B: every file was read again,
        # none taken from A's state by the stat cache
        assert Archive(archive).last().store_id == _uuid(tmp_path / "B")
        r = vt(env_b, "fsck", str(archive), check=False)
        assert f"{archive} line 2" not in r.stdout.decode()
        out = tmp_path / "out"
        vt(env_b, "-q", "unpack", str(archive), str(out))
        assert (out / "d" / "big").read_bytes() == (src / "d" / "big").read_bytes()
        # and now A is the other store
        r = vt(env_a, "pack", str(src), check=False)
        assert r.returncode == 1 and _uuid(tmp_path / "B") in r.stderr.decode()


def test_old_archive_without_store_field_uses_the_top_block(setup, tmp_path):
    src, archive, env_a, env_b = setup
    d = json.loads(archive.read_text())
    del d["store"]
    archive.write_text(json.dumps(d) + "\n")
    vt(env_a, "-q", "pack", str(src))  # its blocks are in A: fine, and now recorded
    assert Archive(archive).last().store_id == _uuid(tmp_path / "A")
    archive.write_text(json.dumps(d) + "\n")
    r = vt(env_b, "pack", str(src), check=False)
    assert r.returncode == 1 and "not in" in r.stderr.decode()


def test_import_from_another_store_is_refused_unless_forced(setup, tmp_path):
    src, archive, env_a, env_b = setup
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "e").write_text("e\n")
    vt(env_a, "-q", "import", str(extra), str(archive))
    assert len(list(Archive(archive).entries())) == 2
    r = vt(env_b, "import", str(extra), str(archive), check=False)
    assert r.returncode == 1 and "belongs to another store" in r.stderr.decode()
    # forced, the merge still needs the latest state's directories: B lacks them,
    # and that is one clear error, not a state naming blocks B does not have
    r = vt(env_b, "import", "--force", str(extra), str(archive), check=False)
    assert r.returncode == 1 and "missing block" in r.stderr.decode()
    assert len(list(Archive(archive).entries())) == 2


def test_named_store_clause_and_the_right_store_work(setup, tmp_path):
    src, archive, env_a, _ = setup
    # -S naming the same datadir as VT_DIR is the same store
    env = {k: v for k, v in env_a.items() if k != "VT_DIR"}
    vt(env, "-q", "-S", str(tmp_path / "A"), "pack", str(src))
    assert len(list(Archive(archive).entries())) == 2


def _copy_directory_blocks(src_store, dst_store, dirent) -> int:
    """Copy the blocks of `dirent`'s directories (not its files) between stores."""
    from vtstore.tree.dir import decode_dir_data

    n = 0
    todo = [dirent]
    while todo:
        d = todo.pop()
        data = src_store[d.block.hashcode]
        dst_store.add(data)
        n += 1
        todo.extend(e for e in decode_dir_data(data)[0] if e.is_dir)
    return n


def test_forced_pack_never_reuses_the_other_store_s_files(setup, tmp_path):
    """B holds A's directory blocks but none of its file blocks: the stat cache
    would happily reuse the unchanged files' blocks, which B does not have."""
    from vtstore.stores.datadir import DataDir

    src, archive, env_a, env_b = setup
    a, b = DataDir(tmp_path / "A", readonly=True), DataDir(tmp_path / "B")
    try:
        assert _copy_directory_blocks(a, b, Archive(archive).last().dirent) == 2
    finally:
        a.close()
        b.close()
    vt(env_b, "-q", "pack", "--force", str(src))
    r = vt(env_b, "fsck", str(archive), check=False)
    assert f"{archive} line 2" not in r.stdout.decode(), r.stdout.decode()
    out = tmp_path / "out"
    vt(env_b, "-q", "unpack", str(archive), str(out))
    assert (out / "d" / "big").read_bytes() == (src / "d" / "big").read_bytes()


def test_fsck_of_a_named_archive_uses_its_clause_store(tmp_path, vt_env):
    home = tmp_path / "home"
    datadir = tmp_path / "dd"
    (home / ".vtrc").write_text(f"[mine]\ntype = datadir\npath = {datadir}\n")
    env = dict(vt_env, VT_CONFIG=str(home / ".vtrc"), VT_DIR=str(tmp_path / "default"))
    src = tmp_path / "tree"
    src.mkdir()
    (src / "a").write_text("alpha")
    vt(env, "-q", "pack", "-a", "[mine]proj", str(src))
    assert Archive(datadir / "proj.vt").last().store_id == _uuid(datadir)
    r = vt(env, "fsck", "[mine]proj")
    assert b"[mine]proj: ok; 1 states" in r.stdout, r.stdout


def test_rw_mount_refuses_an_archive_of_another_store_and_records_its_own(setup, tmp_path):
    """A read-write mount appends states: over another store's archive it is
    refused before mounting; its own states record the store's uuid."""
    _, archive, env_a, env_b = setup
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # B: a copy of A under another identity, so the tree reads but is not B's
    shutil.copytree(tmp_path / "A", tmp_path / "B")
    meta = json.loads((tmp_path / "B" / "datadir.json").read_text())
    meta["uuid"] = "0" * 32
    (tmp_path / "B" / "datadir.json").write_text(json.dumps(meta))
    before = archive.read_bytes()
    r = vt(env_b, "mount", "-e", "true", str(archive), str(mnt), check=False)
    assert r.returncode == 1 and b"belongs to another store" in r.stderr, r.stderr
    assert archive.read_bytes() == before and not os.path.ismount(mnt)
    vt(env_a, "mount", "-e", f"echo new > {mnt}/g", str(archive), str(mnt))
    lines = [json.loads(x) for x in archive.read_text().splitlines()]
    assert len(lines) == 2 and lines[-1]["store"] == _uuid(tmp_path / "A")
