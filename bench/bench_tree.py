"""Pack and unpack a generated tree with vt, restic and borg, in the same run.

    python3 bench/bench_tree.py [--size-mb 1024] [--repeat N] [--json out.json] [--keep DIR]
        [--tree DIR] [--tools vt,restic,borg-lz4,borg-zstd3] [--vt-old SRC] [--no-restore]

Generates a tree of mixed files (many small text-like files, some large random
and semi-compressible ones; total --size-mb), or takes the real one given by
--tree, then for each tool: backup into a fresh repository, a second backup of
the unchanged tree, and a restore; reports wall time, MB/s, CPU seconds per GB
ingested, peak RSS (from /usr/bin/time) and repository size.  restic and borg
come from Debian (`apt-get install restic borgbackup`, installed by this script
if missing).  borg runs with `-e none`, once with `-C lz4` (its fastest) and once
with `-C zstd,3` (vt's datadir level); restic cannot disable encryption, so it
runs with a throwaway password (its AES cost is small next to hashing).
`--vt-old SRC` adds a column "vt-old": vt run from another checkout's `src`
(say a `git worktree` of the commit before a change), for before/after numbers
in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

WORDS = (
    "the quick brown fox jumps over lazy dog def class return import from self value "
    "store block hash tree index data file path name error result list dict int str"
).split()


def gen_tree(root: str, size_mb: int, seed: int = 7) -> tuple[int, int]:
    """Write the benchmark tree; return (files, bytes)."""
    rnd = random.Random(seed)
    total = size_mb * 1024 * 1024
    small_budget = total // 4
    nbytes = files = 0
    d = 0
    while nbytes < small_budget:
        sub = os.path.join(root, f"src{d // 200:03d}", f"pkg{d % 200:03d}")
        os.makedirs(sub, exist_ok=True)
        for i in range(rnd.randint(5, 30)):
            n = int(rnd.lognormvariate(8.5, 1.0))
            lines = []
            size = 0
            while size < n:
                line = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(3, 12)))
                lines.append(line)
                size += len(line) + 1
            data = ("\n".join(lines) + "\n").encode()
            with open(os.path.join(sub, f"mod{i:03d}.py"), "wb") as f:
                f.write(data)
            nbytes += len(data)
            files += 1
        d += 1
    big = os.path.join(root, "big")
    os.makedirs(big, exist_ok=True)
    i = 0
    while nbytes < total:
        n = min(96 * 1024 * 1024, total - nbytes)
        with open(os.path.join(big, f"blob{i:02d}.bin"), "wb") as f:
            if i % 2 == 0:
                f.write(rnd.randbytes(n))
            else:  # half compressible: random runs between repeated text
                left = n
                while left > 0:
                    piece = rnd.randbytes(4096) + b"compressible " * 300
                    f.write(piece[:left])
                    left -= len(piece)
        nbytes += n
        files += 1
        i += 1
    return files, nbytes


def du(path: str) -> int:
    total = 0
    for dirpath, _, fnames in os.walk(path):
        for f in fnames:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def timed(cmd: list[str], env=None, cwd=None) -> tuple[float, int, float]:
    """Run `cmd` from a quiet system; return (seconds, peak RSS KiB, CPU seconds).

    `sync` and a pause first: otherwise the previous step's writeback (a GiB
    restored, a repository deleted) runs during this one and charges whoever
    comes next (measured: a 4.7 s vt pack took 8-9 s right after borg's restore).
    """
    subprocess.run(["sync"])
    time.sleep(2)
    t0 = time.perf_counter()
    r = subprocess.run(
        ["/usr/bin/time", "-f", "%M %U %S", *cmd],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {r.stderr[-2000:]}")
    rss, user, system = r.stderr.strip().splitlines()[-1].split()
    return dt, int(rss), float(user) + float(system)


def ensure_tools() -> None:
    missing = [
        p
        for p, exe in [("restic", "restic"), ("borgbackup", "borg"), ("time", "/usr/bin/time")]
        if not shutil.which(exe)
    ]
    if missing:
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *missing], check=True, capture_output=True
        )


TOOLS = ("vt", "restic", "borg-lz4", "borg-zstd3")


def warm(*paths) -> None:
    """Read every file under `paths` once (symlinks not followed), so each
    tool starts from the same page cache: these VMs reclaim cold pages within
    seconds."""
    for root in paths:
        for dirpath, _, names in os.walk(root):
            for n in names:
                p = os.path.join(dirpath, n)
                if os.path.islink(p):
                    continue
                try:
                    with open(p, "rb", buffering=0) as f:
                        while f.read(1 << 20):
                            pass
                except OSError:
                    pass


def run(
    size_mb: int = 1024,
    keep: str | None = None,
    repeat: int = 1,
    tree_dir: str | None = None,
    tools: tuple[str, ...] = TOOLS,
    vt_old: str | None = None,
    restore: bool = True,
) -> dict:
    """Run the whole comparison `repeat` times; return the results.

    The tools take turns going first (a VM that has been idle is slowest for
    whoever writes first); each figure reported is the median over the rounds,
    and every round is kept under "runs".
    """
    ensure_tools()
    work = keep or tempfile.mkdtemp(prefix="vt-bench-tree-")
    tree = os.path.abspath(tree_dir) if tree_dir else os.path.join(work, "tree")
    if not os.path.exists(tree):
        files, nbytes = gen_tree(tree, size_mb)
    else:
        files, nbytes = sum(len(f) for _, _, f in os.walk(tree)), du(tree)
    subprocess.run(["sync"])
    vt = [sys.executable, "-m", "vtstore.cli.main", "-q"]
    if vt_old:
        tools = (*tools, "vt-old") if "vt-old" not in tools else tools
    env = dict(
        os.environ,
        RESTIC_PASSWORD="bench",
        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
        BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
    )

    def measure(first, second, restore, repo) -> dict:
        return {
            "first_s": first[0],
            "first_MBps": nbytes / first[0] / 1e6,
            "first_rss_MiB": first[1] / 1024,
            "first_cpu_s": first[2],
            "first_cpu_s_per_GB": first[2] / (nbytes / 1e9),
            "second_s": second[0],
            "second_MBps": nbytes / second[0] / 1e6,
            "second_cpu_s": second[2],
            "restore_s": restore[0],
            "restore_MBps": nbytes / restore[0] / 1e6 if restore[0] else 0.0,
            "restore_rss_MiB": restore[1] / 1024,
            "repo_bytes": du(repo),
        }

    def one(tool: str) -> dict:
        # every backup starts with the tree in the page cache: these VMs reclaim
        # cold pages within seconds (kdamond), and whoever followed borg's long
        # run otherwise read the tree from disk (measured: 8-11 s instead of 5-6)
        warm(tree)
        repo = os.path.join(work, f"repo-{tool}")
        out = os.path.join(work, f"out-{tool}")
        for p in (repo, out):
            shutil.rmtree(p, ignore_errors=True)
        archive = os.path.join(work, f"tree-{tool}.vt")
        no_restore = (0.0, 0, 0.0)
        try:
            if tool in ("vt", "vt-old"):
                if os.path.exists(archive):
                    os.unlink(archive)
                venv = env
                if tool == "vt-old":
                    venv = dict(env, PYTHONPATH=os.path.abspath(vt_old))
                pack = [*vt, "-S", repo, "pack", "-a", archive, tree]
                first = timed(pack, env=venv)
                second = timed(pack, env=venv)
                restore = (
                    timed([*vt, "-S", repo, "unpack", archive, out], env=venv)
                    if restore_too
                    else no_restore
                )
            elif tool == "restic":
                subprocess.run(
                    ["restic", "-q", "init", "-r", repo], env=env, check=True, capture_output=True
                )
                first = timed(
                    ["restic", "-q", "-r", repo, "backup", "--compression", "auto", tree], env=env
                )
                second = timed(["restic", "-q", "-r", repo, "backup", tree], env=env)
                restore = (
                    timed(
                        ["restic", "-q", "-r", repo, "restore", "latest", "--target", out], env=env
                    )
                    if restore_too
                    else no_restore
                )
            else:
                comp = {"borg-lz4": "lz4", "borg-zstd3": "zstd,3"}[tool]
                subprocess.run(
                    ["borg", "init", "-e", "none", repo], env=env, check=True, capture_output=True
                )
                first = timed(["borg", "create", "-C", comp, f"{repo}::a1", tree], env=env)
                second = timed(["borg", "create", "-C", comp, f"{repo}::a2", tree], env=env)
                os.makedirs(out)
                restore = (
                    timed(["borg", "extract", f"{repo}::a1"], env=env, cwd=out)
                    if restore_too
                    else no_restore
                )
            return measure(first, second, restore, repo)
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def copy() -> float:
        # the baseline for restores: writing the same files with cp -a
        out = os.path.join(work, "out-cp")
        shutil.rmtree(out, ignore_errors=True)
        try:
            return timed(["cp", "-a", tree, out])[0]
        finally:
            shutil.rmtree(out, ignore_errors=True)

    restore_too = restore
    tools = list(tools)
    runs: dict[str, list[dict]] = {t: [] for t in tools}
    copies = []
    for r in range(repeat):
        k = r % len(tools)
        for tool in tools[k:] + tools[:k]:
            runs[tool].append(one(tool))
        if restore:
            copies.append(copy())
    results = {
        "files": files,
        "bytes": nbytes,
        "repeat": repeat,
        "cp_a_s": statistics.median(copies) if copies else None,
        "tools": {},
        "runs": runs,
    }
    for tool, rs in runs.items():
        results["tools"][tool] = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
    for tool in tools:  # the repositories are not reused: do not leave GiBs behind
        shutil.rmtree(os.path.join(work, f"repo-{tool}"), ignore_errors=True)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return results


def table(res: dict) -> str:
    lines = [
        f"tree: {res['files']} files, {res['bytes'] / 2**20:.0f} MiB",
        f"{'tool':10} {'1st s':>6} {'MB/s':>6} {'CPU s':>6} {'CPU/GB':>6} {'RSS MiB':>7}"
        f" {'2nd s':>6} {'MB/s':>6} {'restore s':>9} {'MB/s':>6} {'repo MiB':>8}"
        f" {'speed vs borg-lz4':>17}",
    ]
    peer = res["tools"].get("borg-lz4") or res["tools"].get("vt")
    for tool, r in res["tools"].items():
        lines.append(
            f"{tool:10} {r['first_s']:6.2f} {r['first_MBps']:6.0f} {r['first_cpu_s']:6.2f}"
            f" {r['first_cpu_s_per_GB']:6.2f} {r['first_rss_MiB']:7.0f}"
            f" {r['second_s']:6.2f} {r['second_MBps']:6.0f}"
            f" {r['restore_s']:9.1f} {r['restore_MBps']:6.0f}"
            f" {r['repo_bytes'] / 2**20:8.1f}"
            f"  1st {peer['first_s'] / r['first_s']:.2f}x 2nd {peer['second_s'] / r['second_s']:.2f}x"
        )
    if res.get("cp_a_s"):
        lines.append(f"baseline for restores: cp -a of the tree {res['cp_a_s']:.1f} s")
    for tool, rs in res.get("runs", {}).items():
        if len(rs) > 1:
            firsts = " ".join(f"{x['first_s']:.2f}" for x in rs)
            seconds = " ".join(f"{x['second_s'] / x['first_s']:.1%}" for x in rs)
            lines.append(f"{tool}: first packs {firsts} s; second/first {seconds}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--keep", metavar="DIR", help="work directory to keep (and reuse the tree)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds; medians are reported")
    ap.add_argument("--tree", metavar="DIR", help="an existing tree to back up (not generated)")
    ap.add_argument(
        "--tools", default=",".join(TOOLS), help=f"comma-separated, of {','.join(TOOLS)}"
    )
    ap.add_argument(
        "--vt-old", metavar="SRC", help="also run vt from this src directory (column vt-old)"
    )
    ap.add_argument("--no-restore", action="store_true", help="time backups only")
    a = ap.parse_args(argv)
    tools = tuple(t for t in a.tools.split(",") if t)
    bad = [t for t in tools if t not in TOOLS]
    if bad:
        ap.error(f"unknown tool {bad[0]!r}: choose from {', '.join(TOOLS)}")
    res = run(a.size_mb, a.keep, max(1, a.repeat), a.tree, tools, a.vt_old, not a.no_restore)
    print(table(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
