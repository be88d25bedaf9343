"""Crashes and concurrent writers on SeaweedFS: kill -9 a writer mid-upload,
then check from another machine (a fresh cache) that every block a `flush`
acknowledged is there and fsck finds no damage; two writers into one prefix
at once both land; `vt pack` killed mid-upload, then packed again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import BUCKET, vt
from .test_s3_cli import same_tree
from .writer_proc import batch, open_store

WRITER = str(Path(__file__).with_name("writer_proc.py"))


def start_writer(weed, prefix, cache, layout, seed, batches, vt_env):
    return subprocess.Popen(
        [
            sys.executable,
            WRITER,
            weed.endpoint,
            prefix,
            str(cache),
            layout,
            str(seed),
            str(batches),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=vt_env,
        text=True,
    )


def acked(lines: str) -> list[int]:
    return [int(x.split()[1]) for x in lines.splitlines() if x.startswith("flushed ")]


def check_blocks(store, seeds_batches) -> None:
    want = [b for seed, n in seeds_batches for i in range(n) for b in batch(seed, i)]
    hs = [store.hash(b) for b in want]
    missing = [h for h, ok in zip(hs, store.contains_many(hs), strict=True) if not ok]
    assert not missing, f"{len(missing)} of {len(hs)} acknowledged blocks lost"
    for h, b in list(zip(hs, want, strict=True))[::37]:
        assert store[h] == b


@pytest.mark.parametrize("layout", ["packs", "blocks"])
def test_kill_writer_mid_upload_loses_nothing_acknowledged(tmp_path, weed, prefix, layout, vt_env):
    p = start_writer(weed, prefix, tmp_path / "cache", layout, 1, 60, vt_env)
    seen = ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # let a few flushes through, then kill mid-batch
        line = p.stdout.readline()
        seen += line
        if len(acked(seen)) >= 3 or not line:
            break
    time.sleep(0.15)
    p.send_signal(signal.SIGKILL)
    out, err = p.communicate()
    seen += out
    n = len(acked(seen))
    assert 3 <= n < 60, err
    with open_store(weed.endpoint, prefix, str(tmp_path / "other"), layout) as s:
        check_blocks(s, [(1, n)])
        if layout == "packs":
            rep = s.fsck()
            assert rep.ok, rep.lines()
            assert rep.blocks >= n * 200
    # the dead writer's machine opens its cache again: sealed spools are
    # uploaded, unsealed ones dropped, and writing goes on
    with open_store(weed.endpoint, prefix, str(tmp_path / "cache"), layout) as s:
        check_blocks(s, [(1, n)])
        s.add_many(batch(1, 99))
    if layout == "packs":
        assert not [f for f in os.listdir(tmp_path / "cache" / "spool")], "spool left behind"


@pytest.mark.parametrize("layout", ["packs", "blocks"])
def test_two_writers_at_once_both_land(tmp_path, weed, prefix, layout, vt_env):
    ps = [
        start_writer(weed, prefix, tmp_path / f"cache{seed}", layout, seed, 8, vt_env)
        for seed in (1, 2)
    ]
    for p in ps:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert acked(out) == list(range(8))
    with open_store(weed.endpoint, prefix, str(tmp_path / "reader"), layout) as s:
        check_blocks(s, [(1, 8), (2, 8)])
        distinct = {bytes(s.hash(b)) for seed in (1, 2) for i in range(8) for b in batch(seed, i)}
        assert len(s) == len(distinct)
        if layout == "packs":
            rep = s.fsck()
            assert rep.ok, rep.lines()
            # batch 0 was written by both: twice in packs unless a writer saw
            # the other's index objects at its open
            assert len(distinct) <= rep.index_entries <= len(distinct) + 200


def test_vt_pack_killed_mid_upload_then_packed_again(tmp_path, s3_env, weed, prefix):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"r{i}").write_bytes(os.urandom(3 << 20))
    rc = tmp_path / "vtrc"
    rc.write_text(
        f"[s3]\ntype = s3\nurl = s3://{BUCKET}/{prefix}\nendpoint = {weed.endpoint}\n"
        "pack_size = 2MiB\nuploads = 2\n"
    )
    args = [sys.executable, "-m", "vtstore.cli.main", "-c", str(rc), "-S", "[s3]", "-q"]
    p = subprocess.Popen([*args, "pack", str(src)], env=s3_env, stderr=subprocess.PIPE)
    b = weed.backend(prefix)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p.poll() is None:
        if sum(1 for _ in b.list("data/")) >= 3:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not os.path.exists(f"{src}.vt")  # it died before its archive line
    vt(s3_env, "-c", str(rc), "-S", "[s3]", "-q", "pack", str(src))
    r = vt(s3_env, "-c", str(rc), "-S", "[s3]", "-v", "fsck")
    assert ": ok;" in r.stdout, r.stdout + r.stderr
    vt(s3_env, "-c", str(rc), "-S", "[s3]", "-q", "unpack", f"{src}.vt", str(tmp_path / "out"))
    assert same_tree(src, tmp_path / "out")
    b.close()
