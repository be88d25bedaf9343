"""`vt gc` and `vt forget --prune`: the space of forgotten states comes back
(measured with du), every remaining state stays whole, and what gc must not
touch (other archives, roots, recent files, damaged archives) it leaves alone."""

from __future__ import annotations

import json
import os
import resource
import subprocess

import pytest

from vtstore.archive import Archive
from vtstore.lifecycle.gc import GCOptions, collect
from vtstore.lifecycle.marks import MarkSet
from vtstore.stores.datadir import DataDir
from vtstore.transcribe import parse

from .conftest import check_archive, data_kib, pack, pack_history, write_version


def _tree_hash(root) -> str:
    out = subprocess.run(
        f"cd {root} && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()[0]


def test_markset_sorted_unique():
    import random

    rnd = random.Random(1)
    ds = [rnd.randbytes(32) for _ in range(50_000)]
    m = MarkSet(32)
    for d in ds + ds[:20_000]:
        m.add(d)
    got = list(m.sorted_iter())
    assert got == sorted({d[:8] for d in ds})  # 8-octet prefixes
    assert len(m) == 50_000
    assert m.nbytes() == 50_000 * 8


def test_forget_prune_reclaims_space_and_keeps_states_whole(tmp_path, vt):
    dd, arch, tree = tmp_path / "dd", str(tmp_path / "t.vt"), tmp_path / "t"
    hashes = {}
    with DataDir(dd, data_file_size=256 << 10) as s:
        for v in range(12):
            write_version(tree, v)
            pack(s, arch, tree, comment=f"v{v}")
            hashes[f"v{v}"] = _tree_hash(tree)
    before = data_kib(dd)
    r = vt("-S", dd, "forget", "--keep-last", "4", "--prune", "--grace", "0", "--json", arch)
    rep = json.loads(r.stdout)["gc"]
    after = data_kib(dd)
    # 8 forgotten states each changed ~4 of 40 files of ~25 kB: ~800 kB garbage
    assert before - after > 500, (before, after, rep)
    assert rep["deleted_files"] + rep["rewritten_files"] > 0
    assert rep["disk_before"] - rep["disk_after"] == rep["freed"] > 500_000
    assert check_archive(dd, arch) == 4
    with DataDir(dd) as s:
        rep_fsck = s.fsck()
        assert rep_fsck.problems == [] and rep_fsck.blocks == rep_fsck.index_entries
    for e in Archive(arch).entries():
        out = tmp_path / f"out-{e.comment}"
        vt("-S", dd, "unpack", f"{arch}@{e.short_id}", out)
        assert _tree_hash(out) == hashes[e.comment]
    # a second gc finds nothing more to do
    r = vt("-S", dd, "gc", "--grace", "0", "--json")
    rep2 = json.loads(r.stdout)
    assert rep2["deleted_files"] == rep2["rewritten_files"] == 0
    assert data_kib(dd) == after


def test_archives_elsewhere_are_registered_and_kept(tmp_path, vt):
    """An X.vt far from the datadir recorded states into it: gc knows it
    through the registry, so its states keep their blocks."""
    dd, tree = tmp_path / "dd", tmp_path / "t"
    far = str(tmp_path / "elsewhere" / "far.vt")
    os.makedirs(os.path.dirname(far))
    near = str(tmp_path / "near.vt")
    pack_history(dd, far, tree, range(0, 3))
    pack_history(dd, near, tree, range(3, 8))
    assert far in (dd / "archive-paths").read_text().split("\n")
    vt("-S", dd, "forget", "--keep-last", "1", "--prune", "--grace", "0", near)
    assert check_archive(dd, far) == 3
    assert check_archive(dd, near) == 1


def test_roots_grace_and_dry_run(tmp_path, vt):
    dd, arch, tree = tmp_path / "dd", str(tmp_path / "t.vt"), tmp_path / "t"
    pack_history(dd, arch, tree, range(6))
    first = next(Archive(arch).entries())
    before = data_kib(dd)
    # a recent store: the default grace of an hour leaves every file alone
    vt("-S", dd, "forget", "--keep-last", "1", arch)
    r = vt("-S", dd, "gc", "--json")
    assert json.loads(r.stdout)["candidate_files"] == 0
    r = vt("-S", dd, "gc", "--grace", "0", "--dry-run", "--json")
    dry = json.loads(r.stdout)
    assert dry["dry_run"] and dry["deleted_files"] + dry["rewritten_files"] > 0
    assert data_kib(dd) == before
    # the forgotten first state held by a ref: --root keeps it whole
    ref = str(first.dirent)
    roots = tmp_path / "roots"
    roots.write_text(f"# kept by hand\n{ref}\n")
    vt("-S", dd, "gc", "--grace", "0", "--roots-from", roots)
    with DataDir(dd, readonly=True) as s:
        from vtstore.tree.check import check

        assert check(parse(ref)[0], s).problems == []
    r = vt("-S", dd, "gc", "--grace", "0", "--root", "B{nonsense", check=False)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1


def test_damaged_archive_or_missing_interior_block_stops_gc(tmp_path, vt):
    dd, arch, tree = tmp_path / "dd", str(tmp_path / "t.vt"), tmp_path / "t"
    pack_history(dd, arch, tree, range(5))
    other = str(tmp_path / "o.vt")
    pack_history(dd, other, tree, range(5, 8))
    vt("-S", dd, "forget", "--keep-last", "1", other)
    with open(arch, "ab") as f:
        f.write(b'{"when": 1, "dirent": "D{broken"}\n')
    before = data_kib(dd)
    r = vt("-S", dd, "gc", "--grace", "0", check=False)
    assert r.returncode == 1 and "damaged state" in r.stderr, r.stderr
    assert data_kib(dd) == before
    # a state naming a directory block the store does not have
    fake = "0" * 64
    with open(arch, "ab") as f:
        f.write(
            b'{"when": 2, "dirent": "D{name:\\"x\\",block:B{hash:blake3:'
            + fake.encode()
            + b',span:99}}"}\n'
        )
    r = vt("-S", dd, "gc", "--grace", "0", "--ignore-damaged", check=False)
    assert r.returncode == 1 and "nothing was deleted" in r.stderr, r.stderr
    assert data_kib(dd) == before


def test_gc_refuses_other_stores(tmp_path, vt):
    r = vt("-S", "memory:", "gc", check=False)
    assert r.returncode == 2 and "not a datadir" in r.stderr


@pytest.mark.slow
def test_memory_is_the_reachable_set(tmp_path):
    """Mark memory is the digests, not the data: a store of ~40k blocks."""
    dd, arch, tree = tmp_path / "dd", str(tmp_path / "t.vt"), tmp_path / "t"
    tree.mkdir()
    import random

    rnd = random.Random(5)
    for d in range(40):
        (tree / f"d{d}").mkdir()
        for i in range(1000):
            (tree / f"d{d}" / f"f{i}").write_bytes(rnd.randbytes(64))
    with DataDir(dd) as s:
        pack(s, arch, tree)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rep = collect(s, GCOptions(grace=0, dry_run=True))
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert rep.marked >= 40_000
    assert rep.mark_bytes == rep.marked * 8
    assert (rss1 - rss0) * 1024 < 60 << 20, (rss0, rss1)


def test_store_held_open_elsewhere_gc_waits_then_stops(tmp_path, vt):
    """The sweep needs the datadir to itself: with another process holding it
    open past --wait, gc stops in one line, deleting nothing."""
    import sys

    dd, arch, tree = tmp_path / "dd", str(tmp_path / "t.vt"), tmp_path / "t"
    pack_history(dd, arch, tree, range(4))
    vt("-S", dd, "forget", "--keep-last", "1", arch)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom vtstore.stores.datadir import DataDir\n"
            f"s = DataDir({str(dd)!r})\nprint('open', flush=True)\ntime.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=vt.env,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        before = data_kib(dd)
        r = vt("-S", dd, "gc", "--grace", "0", "--wait", "1s", check=False)
        assert r.returncode == 1 and "stayed in use" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()
    assert check_archive(dd, arch) == 1
    # the copies it made are kept; a second run finishes the job
    vt("-S", dd, "gc", "--grace", "0")
    assert data_kib(dd) < before
    assert check_archive(dd, arch) == 1


def test_other_user_gets_one_line(tmp_path, vt):
    dd, arch, tree = tmp_path / "dd", str(tmp_path / "t.vt"), tmp_path / "t"
    pack_history(dd, arch, tree, range(2))
    os.chmod(tmp_path, 0o755)
    import sys

    r = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "vtstore.cli.main",
            "-S",
            str(dd),
            "gc",
            "--grace",
            "0",
        ],
        capture_output=True,
        text=True,
        env={**vt.env, "HOME": "/tmp"},
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_one_gc_at_a_time(tmp_path, vt):
    import fcntl

    dd, arch, tree = tmp_path / "dd", str(tmp_path / "t.vt"), tmp_path / "t"
    pack_history(dd, arch, tree, range(2))
    with open(dd / "gc-lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        r = vt("-S", dd, "gc", "--grace", "0", check=False)
        assert r.returncode == 1 and "another vt gc is running" in r.stderr
        r = vt("push", "--move", dd, tmp_path / "dst", check=False)
        assert r.returncode == 1 and "another vt gc is running" in r.stderr
        # a dry run reads only
        vt("-S", dd, "gc", "--grace", "0", "--dry-run")


def test_damaged_live_block_stops_the_copy_cleanly(tmp_path, vt):
    """A live block that no longer reads right (a byte flipped in every record
    of the oldest data file) stops gc with one line and a non-zero exit,
    before any data file is deleted; the copying threads' error reaches the
    command as the store's own error, not a traceback."""
    dd, arch, tree = tmp_path / "dd", str(tmp_path / "t.vt"), tmp_path / "t"
    pack_history(dd, arch, tree, range(8))
    vt("-S", dd, "forget", "--keep-last", "3", arch)
    with DataDir(dd) as s:
        files = s._index.files()
        first = min(files)
        path = s.data_file_path(files[first])
        recs = {
            (e.payload_offset, e.payload_length)
            for _, e in s._index.iter_items()
            if e.filenum == first
        }
    before = sorted(p.name for p in (dd / "data").iterdir())
    with open(path, "r+b") as f:
        for off, ln in recs:
            f.seek(off + ln // 2)
            b = f.read(1)
            f.seek(off + ln // 2)
            f.write(bytes([b[0] ^ 0x55]))
    r = vt("-S", dd, "gc", "--grace", "0", check=False)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "corrupt block" in lines[0], r.stderr
    assert set(before) <= {p.name for p in (dd / "data").iterdir()}


def _usage(live_dead: dict) -> dict:
    from vtstore.stores.compact import FileUsage

    use = {}
    for num, (live, dead) in live_dead.items():
        u = FileUsage(num)
        u.live_blocks, u.live_bytes = (1 if live else 0), live
        u.dead_blocks, u.dead_bytes = (1 if dead else 0), dead
        use[num] = u
    return use


def test_plan_rewrites_the_most_wasteful_files_until_max_unused():
    from vtstore.lifecycle.gc import GCReport, plan

    # file: (live, dead) octets; 0 is all garbage, 5 all live
    use = _usage({0: (0, 50), 1: (40, 60), 2: (70, 30), 3: (85, 15), 4: (88, 12), 5: (100, 0)})
    rep = GCReport()
    delete, rewrite = plan(use, 0.10, rep, max_unused=0.0)
    assert delete == {0} and rewrite == {1, 2, 3, 4} and rep.left_dead_bytes == 0
    # garbage left after deleting 0: 117 of 500; 5% of what stays is allowed:
    # 1 (60 freed) then 2 (30) leave 27 of 410 octets (6.6%), 3 leaves 12 of 395 (3.0%)
    rep = GCReport()
    delete, rewrite = plan(use, 0.10, rep, max_unused=0.05)
    assert delete == {0} and rewrite == {1, 2, 3}
    assert rep.left_dead_bytes == 12 and rep.kept_files == 2
    assert rep.left_dead_bytes <= 0.05 * (rep.live_bytes + rep.left_dead_bytes)
    # the threshold still bounds what may be rewritten, and forced files always are
    rep = GCReport()
    delete, rewrite = plan(use, 0.20, rep, forced={5}, max_unused=0.0)
    assert rewrite == {1, 2, 5}
    # a generous max-unused deletes what is all garbage and copies nothing
    rep = GCReport()
    assert plan(use, 0.10, rep, max_unused=0.5) == ({0}, set())
