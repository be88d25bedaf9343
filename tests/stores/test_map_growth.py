"""The LMDB map starts small and grows as the index does, so `vt` runs under a
`ulimit -v` of a few GiB (it once reserved 1 TiB of address space up front).

`$VT_INDEX_MAP_SIZE` lowers the starting map so that a test-sized index has
to grow it several times."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time

import pytest

from vtstore.stores.datadir import DataDir
from vtstore.stores.lmdbenv import MIN_MAP_SIZE, initial_map_size


def test_initial_map_size(monkeypatch):
    monkeypatch.delenv("VT_INDEX_MAP_SIZE", raising=False)
    assert initial_map_size(0) == MIN_MAP_SIZE
    assert initial_map_size(100 << 20) == 200 << 20
    assert MIN_MAP_SIZE <= 64 << 20
    monkeypatch.setenv("VT_INDEX_MAP_SIZE", str(1 << 20))
    assert initial_map_size(0) == 1 << 20


def test_vt_under_ulimit_v_grows_the_map(tmp_path, vt_env):
    """A real `vt save` of 256 MB under `ulimit -v 2000000` (KiB): the index map
    grows several times, and everything reads back."""
    big = tmp_path / "big.bin"
    rnd = random.Random(9)
    with open(big, "wb") as f:
        for _ in range(64):
            f.write(rnd.randbytes(4 << 20))
    dd = tmp_path / "dd"
    env = dict(vt_env, VT_INDEX_MAP_SIZE=str(256 << 10))
    vt = f"{sys.executable} -m vtstore.cli.main"
    r = subprocess.run(
        ["sh", "-c", f'ulimit -v 2000000; exec {vt} -vv -S "$1" save "$2"', "sh", dd, big],
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    grown = [x for x in r.stderr.splitlines() if "map grown" in x]
    assert len(grown) >= 3, r.stderr[-2000:]
    ref = r.stdout.strip().splitlines()[-1]
    r = subprocess.run(
        ["sh", "-c", f'ulimit -v 2000000; exec {vt} -q -S "$1" cat "$2" | cmp - "$3"']
        + ["sh", dd, ref, big],
        env=vt_env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        ["sh", "-c", f'ulimit -v 2000000; exec {vt} -q -S "$1" fsck', "sh", dd],
        env=vt_env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_map_grows_under_concurrent_readers(tmp_path, monkeypatch):
    """Readers in other threads keep reading while a writer grows the map
    (every transaction waits at the gate while the map is remapped)."""
    monkeypatch.setenv("VT_INDEX_MAP_SIZE", str(256 << 10))
    path = tmp_path / "dd"
    with DataDir(path) as s:
        first = [b"first %d" % i * 3 for i in range(2000)]
        hs = s.add_many(first)
        s.flush()
        start = s._index._env.info()["map_size"]
        stop = threading.Event()
        errors = []

        def reader():
            rnd = random.Random()
            while not stop.is_set():
                try:
                    i = rnd.randrange(len(hs))
                    assert s[hs[i]] == first[i]
                    assert len(s) >= len(hs)
                    time.sleep(0.0005)  # leave the writer some GIL
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(e)
                    return

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            more = []
            for _ in range(20):
                batch = [os.urandom(40) for _ in range(2000)]
                more += zip(s.add_many(batch), batch, strict=True)
                s.flush()
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors, errors[:3]
        end = s._index._env.info()["map_size"]
        assert end >= 4 * start, (start, end)
        assert all(s[h] == b for h, b in more)


@pytest.mark.parametrize("other_first", [False, True])
def test_another_process_grew_the_map(tmp_path, vt_env, monkeypatch, other_first):
    """A store open here keeps working after another process grew the map
    (LMDB says MAP_RESIZED; the new size is adopted)."""
    monkeypatch.setenv("VT_INDEX_MAP_SIZE", str(256 << 10))
    path = tmp_path / "dd"
    with DataDir(path) as s:
        h0 = s.add(b"before")
    code = (
        "import os, sys\n"
        "from vtstore.stores.datadir import DataDir\n"
        "with DataDir(sys.argv[1]) as s:\n"
        "    for k in range(30):\n"
        "        s.add_many([os.urandom(40) for _ in range(2000)]); s.flush()\n"
        "    print(s._index._env.info()['map_size'])\n"
    )
    env = dict(vt_env, VT_INDEX_MAP_SIZE=str(256 << 10))
    with DataDir(path) as s:
        if other_first:
            assert s[h0] == b"before"
        r = subprocess.run(
            [sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        assert int(r.stdout) > s._index._env.info()["map_size"]
        assert s[h0] == b"before"
        assert len(s) == 1 + 30 * 2000
        h1 = s.add(b"after")
        s.flush()
        assert s[h1] == b"after"
