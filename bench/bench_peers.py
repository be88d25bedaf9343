"""vt beside restic, borg (lz4, zstd-3), casync and bup on five kinds of real data (issue 18).

    python3 bench/bench_peers.py [--data DIR] [--quick] [--rounds 3] [--kinds git,mbox,...]
                                 [--tools vt,restic,...] [--lock /tmp/vt-bench.lock]
                                 [--json FILE] [--profile KIND ...] [--profile-dir DIR]

The data sets (`peers_data.py`: a source tree's history, a `git format-patch`
mbox, sdist tarballs, MP4s with a metadata edit, a mixed tree of system files)
are built once under --data.  For each kind, each tool stores every snapshot in
order into one fresh repository, then the last snapshot is restored into an
empty directory.  Each command runs under `/usr/bin/time` after `sync` and a
pause (`bench_tree.timed`), with every snapshot of the kind read into the page
cache just before the tool starts.  Reported per tool: MB/s of the first
snapshot and of the later ones, CPU seconds (user + system of the process tree)
per GB stored, repository size, dedup ratio (bytes of all snapshots over the
repository's size), restore MB/s (bytes of the last snapshot over the restore's
wall time, beside `cp -a` of it) and peak RSS; the median of --rounds rounds, in
which the tools take turns going first.  The machine's benchmark lock (--lock) is held
for a whole round (and once for all profiles), not while data sets are built.

Settings: vt `pack` into a datadir (its defaults: zstd-3, format-aware cuts);
restic `--compression auto` (it cannot turn encryption off); borg 1.2 `-e none`
with `-C lz4` and `-C zstd,3`; casync `make --compression=zstd`; bup `index` +
`save` (zlib level 1).  Every tool gets an empty cache directory per kind and
round (XDG_CACHE_HOME, BORG_BASE_DIR), so nothing carries over between rounds.

--profile KIND runs vt's ingest of the first and of the last snapshot and its
restore under cProfile (in every thread, their times summed) and writes the top 25 cumulative and top 15 own-time entries
of each to DIR/profile-KIND.txt.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_tree  # noqa: E402
from bench_chunk import cpu_model  # noqa: E402
from bench_gc import VT, _env, bench_lock, vt_archive  # noqa: E402
from bench_tree import du, ensure_tools, timed  # noqa: E402
from peers_data import KINDS, build, snapshot_bytes  # noqa: E402

TOOLS = ("vt", "restic", "borg-lz4", "borg-zstd3", "casync", "bup")
#: with --vt-old SRC, the tool "vt-old" is vt run with PYTHONPATH=SRC (a
#: worktree of an older commit, its extensions built): before/after in one run
VT_OLD_SRC: str | None = None
BUP_SAVE = 'bup -d "$0" index "$1" && bup -d "$0" save -q --strip -n bench "$1"'


def set_pause(seconds: float) -> None:
    """Make `bench_tree.timed` pause `seconds` after its `sync` instead of 2 s.

    This run makes ~130 timed commands a round: 2 s each is 4-5 minutes of
    sleep a round.  `sync` already waits for the writeback; the pause only
    lets the disk settle.  Only bench_tree's own name `time` is rebound.
    """

    class _Clock:
        perf_counter = staticmethod(time.perf_counter)

        @staticmethod
        def sleep(_s: float) -> None:
            time.sleep(seconds)

    bench_tree.time = _Clock


def init_repo(tool: str, repo: str, env: dict) -> None:
    """Create `tool`'s empty repository at `repo` (untimed)."""
    if tool == "restic":
        cmd = ["restic", "-q", "init", "-r", repo]
    elif tool.startswith("borg"):
        cmd = ["borg", "init", "-e", "none", repo]
    elif tool == "bup":
        cmd = ["bup", "-d", repo, "init"]
    else:  # vt and casync create their store on first write
        os.makedirs(repo)
        return
    subprocess.run(cmd, env=env, check=True, capture_output=True)


def ingest_cmd(tool: str, repo: str, i: int, snap: str) -> list[str]:
    """The command storing snapshot number `i` (directory `snap`) into `repo`."""
    if tool in ("vt", "vt-old"):
        return [*VT, "-S", repo, "pack", "-a", vt_archive(repo), snap]
    if tool == "restic":
        return ["restic", "-q", "-r", repo, "backup", "--compression", "auto", snap]
    if tool.startswith("borg"):
        comp = "lz4" if tool == "borg-lz4" else "zstd,3"
        return ["borg", "create", "-C", comp, f"{repo}::s{i}", snap]
    if tool == "casync":
        return ["casync", "make", f"--store={repo}/store", "--compression=zstd"] + [
            f"{repo}/s{i}.caidx",
            snap,
        ]
    if tool == "bup":
        return ["sh", "-c", BUP_SAVE, repo, snap]
    raise ValueError(f"unknown tool {tool}")


def restore_cmd(tool: str, repo: str, n: int, out: str) -> tuple[list[str], str | None]:
    """The command (and its working directory) restoring the last snapshot,
    number `n`, into the empty directory `out`."""
    if tool in ("vt", "vt-old"):
        return [*VT, "-S", repo, "unpack", vt_archive(repo), out], None
    if tool == "restic":
        return ["restic", "-q", "-r", repo, "restore", "latest", "--target", out], None
    if tool.startswith("borg"):
        return ["borg", "extract", f"{repo}::s{n}"], out
    if tool == "casync":
        return ["casync", "extract", f"--store={repo}/store", f"{repo}/s{n}.caidx", out], None
    if tool == "bup":
        return ["bup", "-d", repo, "restore", "-q", "-C", out, "/bench/latest/."], None
    raise ValueError(f"unknown tool {tool}")


def tool_env(cache: str) -> dict:
    """The tools' environment with an empty cache and config home under `cache`."""
    return dict(
        _env(cache),  # restic's and borg's caches and borg's base directory
        XDG_CACHE_HOME=os.path.join(cache, "cache"),  # vt's, casync's
        XDG_CONFIG_HOME=os.path.join(cache, "config"),
    )


def run_tool(tool: str, snaps: list[str], work: str) -> dict:
    """Store `snaps` in order with `tool` into a fresh repository, restore the
    last one; return the raw timings (the repository is removed afterwards)."""
    repo, out, cache = (os.path.join(work, f"{x}-{tool}") for x in ("repo", "out", "cache"))
    for p in (repo, out, cache):
        shutil.rmtree(p, ignore_errors=True)
    env = tool_env(cache)
    if tool == "vt-old":
        env["PYTHONPATH"] = VT_OLD_SRC or ""
    try:
        init_repo(tool, repo, env)
        bench_tree.warm(*snaps)
        raw: dict = {"ingest_s": [], "ingest_cpu_s": [], "ingest_rss_KiB": []}
        for i, snap in enumerate(snaps, 1):
            dt, rss, cpu = timed(ingest_cmd(tool, repo, i, snap), env=env)
            raw["ingest_s"].append(dt)
            raw["ingest_cpu_s"].append(cpu)
            raw["ingest_rss_KiB"].append(rss)
        raw["repo_bytes"] = du(repo)
        os.makedirs(out)
        cmd, cwd = restore_cmd(tool, repo, len(snaps), out)
        raw["restore_s"], raw["restore_rss_KiB"], raw["restore_cpu_s"] = timed(
            cmd, env=env, cwd=cwd
        )
        raw["restored_bytes"] = du(out)
        return raw
    except (RuntimeError, subprocess.CalledProcessError) as e:
        return {"error": str(e)[-500:]}
    finally:
        for p in (repo, out, cache):
            shutil.rmtree(p, ignore_errors=True)


def copy_baseline(snap: str, work: str) -> float:
    """Seconds for `cp -a` of the last snapshot: the restore baseline."""
    out = os.path.join(work, "out-cp")
    shutil.rmtree(out, ignore_errors=True)
    try:
        return timed(["cp", "-a", snap, out])[0]
    finally:
        shutil.rmtree(out, ignore_errors=True)


def derive(raw: dict, sizes: list[int]) -> dict:
    """The reported figures of one round of one tool on one kind."""
    total = sum(sizes)
    later_s = sum(raw["ingest_s"][1:])
    return {
        "first_MBps": sizes[0] / raw["ingest_s"][0] / 1e6,
        "later_MBps": sum(sizes[1:]) / later_s / 1e6 if later_s else None,
        "cpu_s_per_GB": sum(raw["ingest_cpu_s"]) / total * 1e9,
        "repo_MB": raw["repo_bytes"] / 1e6,
        "dedup": total / raw["repo_bytes"] if raw["repo_bytes"] else None,
        "restore_MBps": sizes[-1] / raw["restore_s"] / 1e6,
        "restore_cpu_s": raw["restore_cpu_s"],
        "ingest_rss_MiB": max(raw["ingest_rss_KiB"]) / 1024,
        "restore_rss_MiB": raw["restore_rss_KiB"] / 1024,
        "restore_complete": raw["restored_bytes"] >= sizes[-1],
    }


def _median(rows: list[dict]) -> dict:
    out = {}
    for k in rows[0]:
        vals = [r[k] for r in rows if r[k] is not None]
        if k == "restore_complete":
            out[k] = all(vals)
        else:
            out[k] = statistics.median(vals) if vals else None
    return out


def run(
    data_sets: dict[str, list[str]],
    tools: list[str],
    rounds: int,
    work: str,
    lock: str | None,
) -> dict:
    """Every kind, every tool, `rounds` times; medians per tool and kind."""
    kinds: dict = {}
    for kind, snaps in data_sets.items():
        kinds[kind] = {
            "snapshot_bytes": [snapshot_bytes(s) for s in snaps],
            "runs": {t: [] for t in tools},
            "cp_a_s": [],
            "load": [],
        }
    for r in range(rounds):
        order = tools[r % len(tools) :] + tools[: r % len(tools)]
        # one lock a round: few enough acquisitions to get through a busy queue
        with bench_lock(lock):
            for kind, snaps in data_sets.items():
                k = kinds[kind]
                k["load"].append(os.getloadavg())
                for tool in order:
                    t0 = time.perf_counter()
                    raw = run_tool(tool, snaps, work)
                    k["runs"][tool].append(raw)
                    status = raw.get("error", f"{time.perf_counter() - t0:.0f} s")
                    print(f"round {r + 1} {kind} {tool}: {status}", file=sys.stderr)
                k["cp_a_s"].append(copy_baseline(snaps[-1], work))
    for k in kinds.values():
        sizes = k["snapshot_bytes"]
        k["tools"] = {}
        for tool, raws in k["runs"].items():
            good = [derive(x, sizes) for x in raws if "error" not in x]
            k["tools"][tool] = _median(good) if good else {"error": raws[-1]["error"]}
        k["cp_a_MBps"] = sizes[-1] / statistics.median(k["cp_a_s"]) / 1e6
    return kinds


COLUMNS = [
    ("first MB/s", "first_MBps", "{:.0f}"),
    ("later MB/s", "later_MBps", "{:.0f}"),
    ("CPU s/GB", "cpu_s_per_GB", "{:.1f}"),
    ("repo MB", "repo_MB", "{:.1f}"),
    ("dedup", "dedup", "{:.2f}x"),
    ("restore MB/s", "restore_MBps", "{:.0f}"),
    ("RSS ingest MiB", "ingest_rss_MiB", "{:.0f}"),
    ("RSS restore MiB", "restore_rss_MiB", "{:.0f}"),
]


def _fmt(fmt: str, v) -> str:
    return "–" if v is None else fmt.format(v)


def kind_table(kind: str, k: dict) -> str:
    """One markdown table: the tools on one kind of data."""
    sizes = k["snapshot_bytes"]
    head = (
        f"**{kind}**: {len(sizes)} snapshots of "
        + ", ".join(f"{b / 1e6:.1f}" for b in sizes)
        + f" MB; restore baseline `cp -a` {k['cp_a_MBps']:.0f} MB/s"
    )
    lines = [head, "", "| tool | " + " | ".join(c[0] for c in COLUMNS) + " |"]
    lines.append("|---" * (len(COLUMNS) + 1) + "|")
    for tool, m in k["tools"].items():
        if "error" in m:
            lines.append(f"| {tool} | failed: {m['error'][-120:]!r} |")
            continue
        cells = [_fmt(f, m[key]) for _, key, f in COLUMNS]
        if not m["restore_complete"]:
            cells[5] += " (incomplete)"
        lines.append(f"| {tool} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


SUMMARY = [
    ("first MB/s", "first_MBps", True, "{:.0f}"),
    ("later MB/s", "later_MBps", True, "{:.0f}"),
    ("CPU s/GB", "cpu_s_per_GB", False, "{:.1f}"),
    ("dedup", "dedup", True, "{:.2f}x"),
    ("restore MB/s", "restore_MBps", True, "{:.0f}"),
    ("RSS ingest MiB", "ingest_rss_MiB", False, "{:.0f}"),
]


def summary_table(kinds: dict) -> str:
    """vt against the best peer, per kind and figure."""
    lines = [
        "| kind | " + " | ".join(f"{c[0]}: vt / best peer" for c in SUMMARY) + " |",
        "|---" * (len(SUMMARY) + 1) + "|",
    ]
    for kind, k in kinds.items():
        vt = k["tools"].get("vt", {})
        cells = []
        for _, key, higher, f in SUMMARY:
            peers = [
                (m[key], t)
                for t, m in k["tools"].items()
                if t not in ("vt", "vt-old") and "error" not in m and m[key] is not None
            ]
            best = (max if higher else min)(peers) if peers else None
            mine = _fmt(f, vt.get(key)) if "error" not in vt else "failed"
            cells.append(mine + (f" / {best[1]} {_fmt(f, best[0])}" if best else ""))
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def profiled_vt(out: str, argv: list[str]) -> int:
    """Run `vt ARGV` in this process with cProfile in every thread (vt's import
    and restore work in thread pools, which `python -m cProfile` does not see);
    write the merged stats to `out`.  Times of threads add up: a function's
    cumulative time is summed over the threads that ran it."""
    import cProfile
    import threading

    from vtstore.cli.main import main as vt_main

    profs = [cProfile.Profile()]

    def start(*_):  # the first event of each new thread: profile it from here on
        sys.setprofile(None)
        p = cProfile.Profile()
        profs.append(p)  # list.append is atomic
        p.enable()

    threading.setprofile(start)
    profs[0].enable()
    try:
        rc = vt_main(argv)
    finally:
        profs[0].disable()
        threading.setprofile(None)
        stats = pstats.Stats(profs[0])
        for p in profs[1:]:
            p.create_stats()
            if p.stats:
                stats.add(p)
        stats.dump_stats(out)
    return rc


def profile(kind: str, snaps: list[str], work: str, out_dir: str) -> str:
    """cProfile vt's ingest (first and last snapshot) and restore of one kind;
    write the top entries to OUT_DIR/profile-KIND.txt and return its path."""
    repo = os.path.join(work, "repo-profile")
    out = os.path.join(work, "out-profile")
    prof = os.path.join(work, "profile.pstats")
    env = tool_env(os.path.join(work, "cache-profile"))
    here = os.path.dirname(os.path.abspath(__file__))
    run_profiled = (
        f"import sys; sys.path.insert(0, {here!r}); import bench_peers;"
        " sys.exit(bench_peers.profiled_vt(sys.argv[1], sys.argv[2:]))"
    )
    cprof = [sys.executable, "-c", run_profiled, prof, "-q"]
    report = io.StringIO()

    def step(title: str, args: list[str]) -> None:
        dt, rss, cpu = timed([*cprof, *args], env=env)
        report.write(f"## {title}: {dt:.2f} s wall, {cpu:.2f} s CPU, {rss / 1024:.0f} MiB\n\n")
        for order, n in (("cumulative", 25), ("tottime", 15)):
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats(order).print_stats(n)
            body = s.getvalue()
            report.write(f"### top {n} by {order}\n```\n{body[body.find('   ncalls') :]}```\n\n")

    for p in (repo, out):
        shutil.rmtree(p, ignore_errors=True)
    os.makedirs(repo)
    try:
        report.write(f"# vt on {kind}, load {os.getloadavg()}\n\n")
        bench_tree.warm(*snaps)
        pack = ["-S", repo, "pack", "-a", vt_archive(repo)]
        step(f"ingest of the first snapshot ({snapshot_bytes(snaps[0]) / 1e6:.1f} MB)",
             [*pack, snaps[0]])  # fmt: skip
        for s in snaps[1:-1]:
            timed([*VT, *pack, s], env=env)
        if len(snaps) > 1:
            step(f"ingest of the last snapshot ({snapshot_bytes(snaps[-1]) / 1e6:.1f} MB)",
                 [*pack, snaps[-1]])  # fmt: skip
        step("restore of the last snapshot", ["-S", repo, "unpack", vt_archive(repo), out])
    finally:
        for p in (repo, out):
            shutil.rmtree(p, ignore_errors=True)
        if os.path.exists(prof):
            os.unlink(prof)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"profile-{kind}.txt")
    with open(path, "w") as f:
        f.write(report.getvalue())
    return path


def _commit() -> str:
    """HEAD, and `+N` for N files of src/ changed in the working tree (the vt
    measured is the working tree's)."""
    top = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    head = subprocess.run(["git", "-C", top, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    dirty = subprocess.run(["git", "-C", top, "status", "--porcelain", "--", "src"],
                           capture_output=True, text=True).stdout.splitlines()  # fmt: skip
    return (head or "unknown") + (f" +{len(dirty)} changed files in src/" if dirty else "")


def _csv(s: str, allowed) -> list[str]:
    items = [x for x in s.split(",") if x]
    bad = [x for x in items if x not in allowed]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown: {', '.join(bad)} (known: {', '.join(allowed)})")
    return items


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "vt-peers-data"),
                    help="where the data sets are built and cached")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="small data sets, for development")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported (0: none)")
    ap.add_argument("--kinds", type=lambda s: _csv(s, KINDS), default=list(KINDS),
                    help=f"comma-separated, of {','.join(KINDS)} (default all)")  # fmt: skip
    ap.add_argument("--tools", type=lambda s: _csv(s, (*TOOLS, "vt-old")), default=list(TOOLS),
                    help=f"comma-separated, of {','.join(TOOLS)} (default all)")  # fmt: skip
    ap.add_argument("--lock", default="/tmp/vt-bench.lock",
                    help="flock this file around each round and the profiles ('' for none)")  # fmt: skip
    ap.add_argument("--pause", type=float, default=0.5,
                    help="seconds to wait after sync before each timed command")  # fmt: skip
    ap.add_argument("--work", help="scratch directory for repositories (default: a new one)")
    ap.add_argument("--json", metavar="FILE", help="write all results as JSON")
    ap.add_argument("--profile", metavar="KIND", action="append", default=[], choices=KINDS,
                    help="also profile vt's ingest and restore of KIND (repeatable)")  # fmt: skip
    ap.add_argument("--profile-dir", default=".", help="where profile-KIND.txt goes")
    ap.add_argument("--vt-old", metavar="SRC",
                    help="add the tool vt-old: vt with PYTHONPATH=SRC (an older commit's src/)")  # fmt: skip
    a = ap.parse_args(argv)
    global VT_OLD_SRC
    VT_OLD_SRC = a.vt_old
    if a.vt_old and "vt-old" not in a.tools:
        a.tools.append("vt-old")
    if "vt-old" in a.tools and not a.vt_old:
        ap.error("the tool vt-old needs --vt-old SRC")
    ensure_tools()
    set_pause(a.pause)
    # a killed run still removes its repositories (the `finally` below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    missing = [
        t for t in a.tools if t not in ("vt", "vt-old") and not shutil.which(t.split("-")[0])
    ]
    if missing:
        ap.error(
            f"not installed: {', '.join(missing)} (apt-get install restic borgbackup casync bup)"
        )
    data_sets = build(a.data, a.quick, sorted(set(a.kinds) | set(a.profile), key=KINDS.index))
    work = a.work or tempfile.mkdtemp(prefix="vt-peers-")
    os.makedirs(work, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    res = {
        "started": started,
        "commit": _commit(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "rounds": a.rounds,
        "quick": a.quick,
    }
    try:
        if a.rounds > 0:
            kinds = run({k: data_sets[k] for k in a.kinds}, a.tools, a.rounds, work, a.lock)
            res["kinds"] = kinds
            print(f"{started}, commit {res['commit']}, {res['cpu']}, {res['cores']} cores, "
                  f"medians of {a.rounds} rounds\n")  # fmt: skip
            for kind, k in kinds.items():
                loads = "; ".join(" ".join(f"{x:.2f}" for x in lo) for lo in k["load"])
                print(kind_table(kind, k) + f"\n\nload average at each round's start: {loads}\n")
            print(summary_table(kinds))
        with bench_lock(a.lock if a.profile else None):
            res["profiles"] = {
                kind: profile(kind, data_sets[kind], work, a.profile_dir) for kind in a.profile
            }
        for kind, path in res["profiles"].items():
            print(f"profile of vt on {kind}: {path}")
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
