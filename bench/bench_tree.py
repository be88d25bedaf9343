"""Pack and unpack a generated tree with vt, restic and borg, in the same run.

    python3 bench/bench_tree.py [--size-mb 1024] [--repeat N] [--json out.json] [--keep DIR]

Generates a tree of mixed files (many small text-like files, some large random
and semi-compressible ones; total --size-mb), then for each tool: backup into a
fresh repository, a second backup of the unchanged tree, and a restore; reports
wall time, MB/s, peak RSS (from /usr/bin/time) and repository size.  restic and
borg come from Debian (`apt-get install restic borgbackup`, installed by this
script if missing).  borg runs with `-e none`; restic cannot disable encryption,
so it runs with a throwaway password (its AES cost is small next to hashing).
Every tool uses zstd level 3 where it offers it, like vt's datadir.
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


def run(size_mb: int = 1024, keep: str | None = None, repeat: int = 1) -> dict:
    """Run the whole comparison `repeat` times; return the results.

    The tools take turns going first (a VM that has been idle is slowest for
    whoever writes first); each figure reported is the median over the rounds,
    and every round is kept under "runs".
    """
    ensure_tools()
    work = keep or tempfile.mkdtemp(prefix="vt-bench-tree-")
    tree = os.path.join(work, "tree")
    if not os.path.exists(tree):
        files, nbytes = gen_tree(tree, size_mb)
    else:
        files, nbytes = sum(len(f) for _, _, f in os.walk(tree)), du(tree)
    subprocess.run(["sync"])
    vt = [sys.executable, "-m", "vtstore.cli.main", "-q"]
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
            "second_s": second[0],
            "restore_s": restore[0],
            "restore_MBps": nbytes / restore[0] / 1e6,
            "restore_rss_MiB": restore[1] / 1024,
            "repo_bytes": du(repo),
        }

    def warm() -> None:
        # every backup starts with the tree in the page cache: these VMs reclaim
        # cold pages within seconds (kdamond), and whoever followed borg's long
        # run otherwise read the tree from disk (measured: 8-11 s instead of 5-6)
        for dirpath, _, fnames in os.walk(tree):
            for f in fnames:
                try:
                    with open(os.path.join(dirpath, f), "rb", buffering=0) as fh:
                        while fh.read(1 << 20):
                            pass
                except OSError:
                    pass

    def one(tool: str) -> dict:
        warm()
        repo = os.path.join(work, f"repo-{tool}")
        out = os.path.join(work, f"out-{tool}")
        for p in (repo, out):
            shutil.rmtree(p, ignore_errors=True)
        archive = os.path.join(work, "tree.vt")
        try:
            if tool == "vt":
                if os.path.exists(archive):
                    os.unlink(archive)
                first = timed([*vt, "-S", repo, "pack", tree], env=env)
                second = timed([*vt, "-S", repo, "pack", tree], env=env)
                restore = timed([*vt, "-S", repo, "unpack", archive, out], env=env)
            elif tool == "restic":
                subprocess.run(
                    ["restic", "-q", "init", "-r", repo], env=env, check=True, capture_output=True
                )
                first = timed(
                    ["restic", "-q", "-r", repo, "backup", "--compression", "auto", tree], env=env
                )
                second = timed(["restic", "-q", "-r", repo, "backup", tree], env=env)
                restore = timed(
                    ["restic", "-q", "-r", repo, "restore", "latest", "--target", out], env=env
                )
            else:
                subprocess.run(
                    ["borg", "init", "-e", "none", repo], env=env, check=True, capture_output=True
                )
                first = timed(["borg", "create", "-C", "zstd,3", f"{repo}::a1", tree], env=env)
                second = timed(["borg", "create", "-C", "zstd,3", f"{repo}::a2", tree], env=env)
                os.makedirs(out)
                restore = timed(["borg", "extract", f"{repo}::a1"], env=env, cwd=out)
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

    tools = ["vt", "restic", "borg"]
    runs: dict[str, list[dict]] = {t: [] for t in tools}
    copies = []
    for r in range(repeat):
        for tool in tools[r % 3 :] + tools[: r % 3]:
            runs[tool].append(one(tool))
        copies.append(copy())
    results = {
        "files": files,
        "bytes": nbytes,
        "repeat": repeat,
        "cp_a_s": statistics.median(copies),
        "tools": {},
        "runs": runs,
    }
    for tool, rs in runs.items():
        results["tools"][tool] = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return results


def table(res: dict) -> str:
    lines = [
        f"tree: {res['files']} files, {res['bytes'] / 2**20:.0f} MiB",
        f"{'tool':8} {'1st s':>7} {'CPU s':>6} {'MB/s':>7} {'RSS MiB':>8} {'2nd s':>7}"
        f" {'restore s':>9} {'MB/s':>7} {'repo MiB':>9} {'1st vs vt':>9}",
    ]
    base = res["tools"]["vt"]["first_s"]
    for tool, r in res["tools"].items():
        lines.append(
            f"{tool:8} {r['first_s']:7.1f} {r['first_cpu_s']:6.1f} {r['first_MBps']:7.0f}"
            f" {r['first_rss_MiB']:8.0f}"
            f" {r['second_s']:7.1f} {r['restore_s']:9.1f} {r['restore_MBps']:7.0f}"
            f" {r['repo_bytes'] / 2**20:9.1f} {r['first_s'] / base:8.2f}x"
        )
    if "cp_a_s" in res:
        lines.append(f"baseline for restores: cp -a of the tree {res['cp_a_s']:.1f} s")
    for tool, rs in res.get("runs", {}).items():
        if len(rs) > 1:
            firsts = " ".join(f"{x['first_s']:.1f}" for x in rs)
            seconds = " ".join(f"{x['second_s'] / x['first_s']:.1%}" for x in rs)
            lines.append(f"{tool}: first packs {firsts} s; second/first {seconds}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--keep", metavar="DIR", help="work directory to keep (and reuse the tree)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds; medians are reported")
    a = ap.parse_args(argv)
    res = run(a.size_mb, a.keep, max(1, a.repeat))
    print(table(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
