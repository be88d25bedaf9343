"""Forget and prune half the states of a store, with vt, restic and borg, in the same run.

    python3 bench/bench_gc.py [--size-mb 1024] [--states 20] [--change 0.02] [--json out.json]
    python3 bench/bench_gc.py --prepare DIR [--size-mb 1024] [--states 20]   # unlocked
    python3 bench/bench_gc.py --from DIR --rounds 2 --lock /tmp/vt-bench.lock  # timed

Generates the tree of `bench_tree.py` (--size-mb), then for each tool packs
--states states of it, changing --change of its bytes between states (2% of
the small files rewritten and random 64 KiB pieces of the large files
overwritten, the same changes for every tool), and then forgets the older half
and reclaims the space: `vt forget --keep-last N --prune --grace 0`, `restic
forget --keep-last N --prune`, `borg prune --keep-last N` + `borg compact`.
Reports the forget+prune wall time, its peak RSS (from /usr/bin/time), and
the repository size before and after.  Every kept state is then checked
(vt: `vt fsck` of the store; restic: `restic check`; borg: `borg check`).

`--prepare` does only the packing (the long part, no lock needed); `--from`
then times forget+prune on a fresh copy of each history per round (vt's store
copied, restic's and borg's hard-linked: they never change a data file in
place), the tools taking turns going first, each timed step under `--lock`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
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
    """The `-S` for a vt variant: `vt` the default datadir (64 MiB data files
    since 70cd704, 1 GiB before), `vt64` a clause with 64 MiB data files (the
    same since then; before, the finer-grained collection)."""
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


def _env(work: str, prefix: str = "repo") -> dict:
    """The tools' environment; restic's and borg's caches kept beside their
    repositories (`PREFIX-cache-TOOL`), so each copy gets a copy of its cache
    (borg refuses a cache newer than its repository)."""
    return dict(
        os.environ,
        RESTIC_CACHE_DIR=os.path.join(work, f"{prefix}-cache-restic"),
        BORG_CACHE_DIR=os.path.join(work, f"{prefix}-cache-borg"),
        BORG_BASE_DIR=os.path.join(work, f"{prefix}-base-borg"),
        RESTIC_PASSWORD="bench",
        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
        BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
        PYTHONPATH=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"),
    )


def vt_archive(repo: str) -> str:
    """The states go into a named archive inside the datadir, so a copy of
    the directory is a whole store with its history."""
    return os.path.join(repo, "bench.vt")


def prepare(size_mb: int, states: int, change: float, work: str, tools: list[str]) -> dict:
    """Generate the tree and pack `states` states of it with each tool into
    `work/repo-TOOL`; write and return `work/prepared.json`.  The tree is
    deleted afterwards (the disk holds the repositories, not it)."""
    ensure_tools()
    tree = os.path.join(work, "tree")
    files, nbytes = gen_tree(tree, size_mb)
    env = _env(work)
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
                os.makedirs(repos[t], exist_ok=True)
                store = vt_store(t, repos[t])
                cmd = [*VT, *store, "pack", "-a", vt_archive(repos[t]), "-m", f"s{k}", tree]
            elif t == "restic":
                cmd = ["restic", "-q", "-r", repos[t], "backup", "--compression", "auto", tree]
            else:
                cmd = ["borg", "create", "-C", "zstd,3", f"{repos['borg']}::s{k:02d}", tree]
            dt, _rss, _cpu = timed(cmd, env=env)
            pack_s[t] += dt
        print(f"state {k + 1}/{states} packed", file=sys.stderr)
    shutil.rmtree(tree, ignore_errors=True)
    meta = {
        "files": files,
        "bytes": nbytes,
        "states": states,
        "keep": states // 2,
        "tools": tools,
        "pack_s": pack_s,
        "sizes": {t: du(repos[t]) for t in tools},
    }
    with open(os.path.join(work, "prepared.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def _copy(src: str, dst: str, tool: str) -> None:
    """A private copy of a prepared repository.  restic and borg never change a
    pack or segment file in place (they write new ones and delete old ones), so
    their data is hard-linked; vt's LMDB index is changed in place, so vt's
    store is copied (it is the smallest)."""
    shutil.rmtree(dst, ignore_errors=True)
    flags = "-a" if tool.startswith("vt") else "-al"
    subprocess.run(["cp", flags, src, dst], check=True)
    if tool.startswith("vt"):  # archives registered by the original's path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(dst, "archive-paths"))


@contextlib.contextmanager
def bench_lock(path: str | None):
    """Hold the machine's benchmark lock (flock) for a timed step, if given."""
    if not path:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prune_step(t: str, repo: str, keep: int, env: dict) -> dict:
    """Forget all but the last `keep` states of `repo` and reclaim; time it."""
    load = os.getloadavg()[0]
    if t.startswith("vt"):
        store = vt_store(t, repo)
        cmd = [*VT, *store, "forget", "--keep-last", str(keep), "--prune", "--grace", "0"]
        dt, rss, cpu = timed([*cmd, vt_archive(repo)], env=env)
    elif t == "restic":
        cmd = ["restic", "-q", "-r", repo, "forget", "--keep-last", str(keep), "--prune"]
        dt, rss, cpu = timed(cmd, env=env)
    else:
        d1, r1, c1 = timed(["borg", "prune", "--keep-last", str(keep), repo], env=env)
        d2, r2, c2 = timed(["borg", "compact", repo], env=env)
        dt, rss, cpu = d1 + d2, max(r1, r2), c1 + c2
    return {"prune_s": dt, "prune_cpu_s": cpu, "prune_rss_MiB": rss / 1024, "load1": load}


def check_repo(t: str, repo: str, env: dict) -> bool:
    """Every kept state checks (vt fsck, restic check, borg check)."""
    if t.startswith("vt"):
        check = [*VT, *vt_store(t, repo), "fsck"]
    elif t == "restic":
        check = ["restic", "-q", "-r", repo, "check"]
    else:
        check = ["borg", "check", repo]
    return subprocess.run(check, env=env, capture_output=True).returncode == 0


def measure(work: str, rounds: int = 1, lock: str | None = None, only=None) -> dict:
    """The timed part on the histories `prepare` left in `work`: each round,
    a fresh copy of each tool's history (made, and synced, before the lock),
    then each tool's forget+prune in turn (taking turns going first; `only`
    those), all of a round's timed steps under one hold of `lock` (one wait
    for a busy lock a round, not one a tool); sizes and checks after it."""
    with open(os.path.join(work, "prepared.json")) as f:
        meta = json.load(f)
    env = _env(work, "run")
    tools = [t for t in meta["tools"] if not only or t in only]
    out = {k: meta[k] for k in ("files", "bytes", "states", "keep")}
    out["runs"] = []
    for r in range(rounds):
        res = {}
        order = tools[r % len(tools) :] + tools[: r % len(tools)]
        copies, sides = {}, []
        try:
            for t in order:
                copies[t] = os.path.join(work, f"run-{t}")
                _copy(os.path.join(work, f"repo-{t}"), copies[t], t)
                for x in (f"{x}-{t}" for x in ("cache", "base")):  # restic's, borg's caches
                    if os.path.isdir(os.path.join(work, f"repo-{x}")):
                        sides.append(os.path.join(work, f"run-{x}"))
                        _copy(os.path.join(work, f"repo-{x}"), sides[-1], "vt")
            # the copies' dirty pages written back now, not during a timed step
            # (vt's store is copied, restic's and borg's only hard-linked)
            os.sync()
            before = {t: du(copies[t]) for t in order}
            with bench_lock(lock):
                for t in order:
                    res[t] = prune_step(t, copies[t], meta["keep"], env)
                    print(f"round {r + 1}: {t} {res[t]['prune_s']:.1f} s", file=sys.stderr)
            for t in order:
                res[t]["repo_before"] = before[t]
                res[t]["repo_after"] = du(copies[t])
                res[t]["check_ok"] = check_repo(t, copies[t], env)
                res[t]["pack_total_s"] = meta["pack_s"][t]
        finally:
            for d in [*copies.values(), *sides]:
                shutil.rmtree(d, ignore_errors=True)
            for c in copies.values():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(c + ".vtrc")
        out["runs"].append({t: res[t] for t in tools})
    out["tools"] = out["runs"][-1]
    return out


def table(res: dict) -> str:
    """One table: a block of rows per round."""
    return "\n\n".join(_table(res, run) for run in res.get("runs", [res["tools"]]))


def _table(res: dict, tools: dict) -> str:
    lines = [
        f"tree: {res['files']} files, {res['bytes'] / 2**20:.0f} MiB; {res['states']} states,"
        f" forget all but the last {res['keep']} and reclaim",
        f"{'tool':8} {'prune s':>8} {'CPU s':>6} {'RSS MiB':>8} {'repo MiB before':>16}"
        f" {'after':>8} {'freed':>7} {'vs vt':>6} {'check':>6} {'packs s':>8} {'load':>5}",
    ]
    base = tools.get("vt", next(iter(tools.values())))["prune_s"]
    for t, r in tools.items():
        b, a = r["repo_before"] / 2**20, r["repo_after"] / 2**20
        lines.append(
            f"{t:8} {r['prune_s']:8.1f} {r['prune_cpu_s']:6.1f} {r['prune_rss_MiB']:8.0f}"
            f" {b:16.0f} {a:8.0f} {b - a:7.0f} {r['prune_s'] / base:5.2f}x"
            f" {'ok' if r['check_ok'] else 'FAIL':>6} {r['pack_total_s']:8.0f}"
            f" {r.get('load1', 0):5.2f}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--states", type=int, default=20)
    ap.add_argument("--change", type=float, default=0.02)
    ap.add_argument(
        "--tools",
        default=None,
        help="vt,vt64,restic,borg (the default); with --from, those of the prepared ones",
    )
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--keep", metavar="DIR", help="work directory to keep")
    ap.add_argument(
        "--prepare", metavar="DIR", help="only generate and pack the histories into DIR"
    )
    ap.add_argument(
        "--from",
        dest="source",
        metavar="DIR",
        help="only the timed part, on copies of the histories --prepare left in DIR",
    )
    ap.add_argument("--rounds", type=int, default=1, help="timed rounds (default 1)")
    ap.add_argument(
        "--lock", metavar="FILE", help="flock FILE around each timed step (e.g. /tmp/vt-bench.lock)"
    )
    a = ap.parse_args(argv)
    a.tools_given = a.tools is not None
    tools = (a.tools or "vt,vt64,restic,borg").split(",")
    if a.prepare:
        os.makedirs(a.prepare, exist_ok=True)
        prepare(a.size_mb, a.states, a.change, a.prepare, tools)
        return 0
    if a.source:
        res = measure(a.source, a.rounds, a.lock, tools if a.tools_given else None)
    else:
        work = a.keep or tempfile.mkdtemp(prefix="bench-gc-")
        os.makedirs(work, exist_ok=True)
        try:
            prepare(a.size_mb, a.states, a.change, work, tools)
            res = measure(work, a.rounds, a.lock)
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
