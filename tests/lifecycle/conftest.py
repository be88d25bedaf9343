"""Helpers for the lifecycle tests: trees that change a little each state,
histories packed into a datadir, `vt` subprocesses, checking every state."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from vtstore.archive import Archive
from vtstore.stores.datadir import DataDir
from vtstore.tree.check import check
from vtstore.tree.fsimport import Importer


def write_version(root: Path, version: int, files: int = 40, size: int = 24_000) -> None:
    """Tree `version` of a family: every file's content depends on the
    version it last changed in; each version changes a few files (so states
    share most blocks and each forgotten state leaves some garbage)."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        changed = max((v for v in range(version + 1) if (v * 7 + i) % 10 == 0), default=0)
        rnd = random.Random(i * 100_003 + changed)
        (root / f"sub{i % 4}").mkdir(exist_ok=True)
        (root / f"sub{i % 4}" / f"f{i}").write_bytes(rnd.randbytes(size + i * 97))


def pack(store, archive: str, root: Path, when: float | None = None, comment=None):
    """Pack `root` into `archive` as `vt pack` does (in this process)."""
    from vtstore.archive import store_identity

    a = Archive(archive)
    last = a.last()
    d = Importer(store).import_path(str(root), last.dirent if last else None)
    store.flush()
    return a.update(d, when=when, comment=comment, store_id=store_identity(store))


def pack_history(dd_path: Path, archive: str, tree: Path, versions, data_file_size=256 << 10):
    """Pack each version of the tree family into `archive`; return the tree
    digests (see `tree_digest`) by state, oldest first."""
    with DataDir(dd_path, data_file_size=data_file_size) as s:
        for v in versions:
            write_version(tree, v)
            pack(s, archive, tree, comment=f"v{v}")


def check_archive(dd_path: Path, archive: str) -> int:
    """Every block every state of `archive` reaches is present and correct
    (reading it all); return the number of states."""
    with DataDir(dd_path, readonly=True) as s:
        states = list(Archive(archive).entries())
        for e in states:
            c = check(e.dirent, s)
            assert c.problems == [], (archive, e.comment, c.problems[:3])
    return len(states)


def data_kib(dd_path: Path) -> int:
    """`du -sk` of the datadir's data files."""
    out = subprocess.run(["du", "-sk", str(dd_path / "data")], capture_output=True, text=True)
    return int(out.stdout.split()[0])


@pytest.fixture
def vt(vt_env):
    """Run `vt ARGS...` as a subprocess; `check=False` to look at failures."""

    def run(*args, check=True, timeout=120, **kw):
        r = subprocess.run(
            [sys.executable, "-m", "vtstore.cli.main", *map(str, args)],
            capture_output=True,
            text=True,
            env=vt_env,
            timeout=timeout,
            **kw,
        )
        assert "Traceback" not in r.stderr, r.stderr
        if check and r.returncode != 0:
            raise AssertionError(f"vt {args} -> {r.returncode}: {r.stderr}")
        return r

    run.env = vt_env
    return run


def popen_vt(env, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vtstore.cli.main", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


__all__ = ["write_version", "pack", "pack_history", "check_archive", "data_kib", "popen_vt", "os"]
