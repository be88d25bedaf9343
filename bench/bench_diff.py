"""`vt diff` of two states of a 30k-file tree with 1% of the files changed.

    python3 bench/bench_diff.py [--files 30000] [--per-dir 100] [--changed 0.01]
                                [--repeat 5] [--json out.json] [--no-restic]

Generates a tree of `--files` small files in directories of `--per-dir`
(two levels deep), packs it into a fresh datadir with `vt pack`, changes
`--changed` of the files (spread over the tree), packs again, then times:

- `diff_trees` in-process (the diff itself, a warm store);
- `vt diff X.vt@-2 X.vt@-1` as a user runs it (process start, store open),
  beside `vt ls X.vt@-1` (the same fixed costs, one small directory read);
- baselines in the same run: a full walk of one state (`tree_stats`: what a
  diff that read everything would at least cost), `diff -rq` of the two real
  trees (a copy is kept), and `restic diff` of two snapshots of the same trees
  (Debian's restic, if installed).

The issue's goal: `vt diff` under 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def gen_tree(root: str, files: int, per_dir: int) -> list[str]:
    """Write `files` small files, `per_dir` to a directory; return their paths."""
    paths = []
    dirs = (files + per_dir - 1) // per_dir
    for d in range(dirs):
        sub = os.path.join(root, f"top{d // 30:02d}", f"dir{d:04d}")
        os.makedirs(sub, exist_ok=True)
        for i in range(min(per_dir, files - d * per_dir)):
            p = os.path.join(sub, f"file{i:04d}.txt")
            with open(p, "wb") as f:
                f.write(b"%d/%d %s\n" % (d, i, b"x" * (i % 200)))
            paths.append(p)
    return paths


def _vt(store: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-q", "-S", store, *args],
        capture_output=True,
        check=False,
    )


def _best(fn, repeat: int) -> tuple[float, float]:
    """(best, median) wall seconds of `repeat` runs of `fn`."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=30_000)
    ap.add_argument("--per-dir", type=int, default=100)
    ap.add_argument("--changed", type=float, default=0.01)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--no-restic", action="store_true")
    args = ap.parse_args()

    from vtstore.archive import Archive
    from vtstore.stores.datadir import DataDir
    from vtstore.tree.diff import diff_trees
    from vtstore.tree.dir import tree_stats

    tmp = tempfile.mkdtemp(prefix="bench-diff-")
    try:
        src = os.path.join(tmp, "src")
        store = os.path.join(tmp, "store")
        paths = gen_tree(src, args.files, args.per_dir)
        r = _vt(store, "pack", "-a", os.path.join(tmp, "src.vt"), src)
        assert r.returncode == 0, r.stderr.decode()
        before = os.path.join(tmp, "before")
        shutil.copytree(src, before, symlinks=True)
        n = max(1, int(len(paths) * args.changed))
        step = len(paths) // n
        for p in paths[::step][:n]:
            with open(p, "ab") as f:
                f.write(b"changed\n")
        time.sleep(0.01)
        r = _vt(store, "pack", "-a", os.path.join(tmp, "src.vt"), src)
        assert r.returncode == 0, r.stderr.decode()
        a, b = [e.dirent for e in Archive(os.path.join(tmp, "src.vt")).entries()][-2:]

        rows = {}
        with DataDir(store, readonly=True) as dd:
            changes, stats = diff_trees(a, b, dd)
            assert stats.modified == n, (stats, n)
            rows["diff_trees (in-process)"] = _best(lambda: diff_trees(a, b, dd), args.repeat)
            rows["tree_stats: walk one state"] = _best(lambda: tree_stats(b, dd), args.repeat)
        archive = os.path.join(tmp, "src.vt")

        def vt_diff():
            r = _vt(store, "diff", f"{archive}@-2", f"{archive}@-1")
            assert r.returncode == 1, r.stderr.decode()

        rows["vt diff (process)"] = _best(vt_diff, args.repeat)
        # the fixed cost of any vt command: start, imports, open the store, read the archive
        rows["vt ls X.vt@-1 (process baseline)"] = _best(
            lambda: _vt(store, "ls", f"{archive}@-1"), args.repeat
        )
        rows["python -c pass (startup)"] = _best(
            lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), args.repeat
        )
        rows["diff -rq (real trees)"] = _best(
            lambda: subprocess.run(["diff", "-rq", before, src], capture_output=True),
            args.repeat,
        )
        restic = shutil.which("restic")
        if restic and not args.no_restic:
            repo = os.path.join(tmp, "restic")
            env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=repo)

            def rs(*a):
                return subprocess.run(
                    [restic, "-q", *a], env=env, capture_output=True, check=True, cwd=tmp
                )

            rs("init")
            ids = []
            for tree in (before, src):
                os.rename(tree, os.path.join(tmp, "t"))  # the same path for both snapshots
                rs("backup", "t")
                os.rename(os.path.join(tmp, "t"), tree)
                snaps = json.loads(rs("snapshots", "--json").stdout)
                ids.append(snaps[-1]["short_id"])
            rows["restic diff"] = _best(lambda: rs("diff", *ids), args.repeat)

        print(f"vt diff: {args.files:,} files, {n:,} changed ({len(changes)} paths listed)")
        print(f"{'what':34} {'best s':>8} {'median s':>9}")
        for k, (best, med) in rows.items():
            print(f"{k:34} {best:8.3f} {med:9.3f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(
                    {"files": args.files, "changed": n, "rows": rows, "dirs_read": stats.dirs_read},
                    f,
                    indent=1,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
