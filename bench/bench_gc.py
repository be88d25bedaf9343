"""Forget and prune half the states of a store, with vt, restic and borg, in the same run.

    python3 bench/bench_gc.py [--size-mb 1024] [--states 20] [--change 0.02] [--json out.json]

Generates the tree of `bench_tree.py` (--size-mb), then for each tool packs
--states states of it, changing --change of its bytes between states (2% of
the small files rewritten and random 64 KiB pieces of the large files
overwritten, the same changes for every tool), and then forgets the older half
and reclaims the space: `vt forget --keep-last N --prune --grace 0`, `restic
forget --keep-last N --prune`, `borg prune --keep-last N` + `borg compact`.
Reports the forget+prune wall time, its peak RSS (from /usr/bin/time), and
the repository size before and after.  Every kept state is then checked
(vt: `vt fsck` of the store; restic: `restic check`; borg: `borg check`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tree import du, ensure_tools, gen_tree, timed  # noqa: E402

VT = [sys.executable, "-m", "vtstore.cli.main", "-q"]


def vt_store(tool: str, repo: str) -> list[str]:
    """The `-S` for a vt variant: `vt` the default datadir (1 GiB data files),
    `vt64` a clause with 64 MiB data files (finer-grained collection)."""
    if tool == "vt":
        return ["-S", repo]
    cfg = repo + ".vtrc"
    with open(cfg, "w") as f:
        f.write(f"[gc64]\ntype = datadir\npath = {repo}\ndata_file_size = 64MiB\n")
    return ["-c", cfg, "-S", "[gc64]"]


def mutate(root: str, fraction: float, rnd: random.Random) -> int:
    """Change about `fraction` of the tree's bytes in place; return octets changed."""
    small, big = [], []
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            (big if n.endswith(".bin") else small).append(p)
    changed = 0
    for p in rnd.sample(small, max(1, int(len(small) * fraction))):
        data = bytearray(open(p, "rb").read())
        for _ in range(3):
            i = rnd.randrange(len(data)) if data else 0
            data[i : i + 16] = rnd.randbytes(16)
        open(p, "wb").write(bytes(data))
        changed += len(data)
    for p in big:
        size = os.path.getsize(p)
        with open(p, "r+b") as f:
            for _ in range(max(1, int(size * fraction) // 65536)):
                f.seek(rnd.randrange(max(1, size - 65536)))
                f.write(rnd.randbytes(65536))
                changed += 65536
    return changed


def run(size_mb: int, states: int, change: float, work: str, tools: list[str]) -> dict:
    ensure_tools()
    tree = os.path.join(work, "tree")
    files, nbytes = gen_tree(tree, size_mb)
    env = dict(
        os.environ,
        RESTIC_PASSWORD="bench",
        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
        BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
        PYTHONPATH=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"),
    )
    repos = {t: os.path.join(work, f"repo-{t}") for t in tools}
    if "restic" in tools:
        subprocess.run(["restic", "-q", "init", "-r", repos["restic"]], env=env, check=True)
    if "borg" in tools:
        subprocess.run(["borg", "init", "-e", "none", repos["borg"]], env=env, check=True)
    rnd = random.Random(16)
    pack_s = {t: 0.0 for t in tools}
    for k in range(states):
        if k:
            mutate(tree, change, rnd)
        for t in tools:
            if t.startswith("vt"):
                store = vt_store(t, repos[t])
                cmd = [*VT, *store, "pack", "-a", repos[t] + ".vt", "-m", f"s{k}", tree]
            elif t == "restic":
                cmd = [
                    "restic",
                    "-q",
                    "-r",
                    repos["restic"],
                    "backup",
                    "--compression",
                    "auto",
                    tree,
                ]
            else:
                cmd = ["borg", "create", "-C", "zstd,3", f"{repos['borg']}::s{k:02d}", tree]
            dt, _rss, _cpu = timed(cmd, env=env)
            pack_s[t] += dt
        print(f"state {k + 1}/{states} packed", file=sys.stderr)
    keep = states // 2
    out = {"files": files, "bytes": nbytes, "states": states, "keep": keep, "tools": {}}
    for t in tools:
        repo = repos[t]
        before = du(repo)
        if t.startswith("vt"):
            dt, rss, cpu = timed(
                [
                    *VT,
                    *vt_store(t, repo),
                    "forget",
                    "--keep-last",
                    str(keep),
                    "--prune",
                    "--grace",
                    "0",
                    repo + ".vt",
                ],
                env=env,
            )
            check = [*VT, *vt_store(t, repo), "fsck"]
        elif t == "restic":
            dt, rss, cpu = timed(
                ["restic", "-q", "-r", repo, "forget", "--keep-last", str(keep), "--prune"], env=env
            )
            check = ["restic", "-q", "-r", repo, "check"]
        else:
            d1, r1, c1 = timed(["borg", "prune", "--keep-last", str(keep), repo], env=env)
            d2, r2, c2 = timed(["borg", "compact", repo], env=env)
            dt, rss, cpu = d1 + d2, max(r1, r2), c1 + c2
            check = ["borg", "check", repo]
        after = du(repo)
        ok = subprocess.run(check, env=env, capture_output=True).returncode == 0
        out["tools"][t] = {
            "prune_s": dt,
            "prune_cpu_s": cpu,
            "prune_rss_MiB": rss / 1024,
            "repo_before": before,
            "repo_after": after,
            "pack_total_s": pack_s[t],
            "check_ok": ok,
        }
    return out


def table(res: dict) -> str:
    lines = [
        f"tree: {res['files']} files, {res['bytes'] / 2**20:.0f} MiB; {res['states']} states,"
        f" forget all but the last {res['keep']} and reclaim",
        f"{'tool':8} {'prune s':>8} {'CPU s':>6} {'RSS MiB':>8} {'repo MiB before':>16}"
        f" {'after':>8} {'freed':>7} {'vs vt':>6} {'check':>6} {'20 packs s':>10}",
    ]
    base = res["tools"].get("vt", next(iter(res["tools"].values())))["prune_s"]
    for t, r in res["tools"].items():
        b, a = r["repo_before"] / 2**20, r["repo_after"] / 2**20
        lines.append(
            f"{t:8} {r['prune_s']:8.1f} {r['prune_cpu_s']:6.1f} {r['prune_rss_MiB']:8.0f}"
            f" {b:16.0f} {a:8.0f} {b - a:7.0f} {r['prune_s'] / base:5.2f}x"
            f" {'ok' if r['check_ok'] else 'FAIL':>6} {r['pack_total_s']:10.0f}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--states", type=int, default=20)
    ap.add_argument("--change", type=float, default=0.02)
    ap.add_argument("--tools", default="vt,vt64,restic,borg")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--keep", metavar="DIR", help="work directory to keep")
    a = ap.parse_args(argv)
    work = a.keep or tempfile.mkdtemp(prefix="bench-gc-")
    os.makedirs(work, exist_ok=True)
    try:
        res = run(a.size_mb, a.states, a.change, work, a.tools.split(","))
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(table(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
