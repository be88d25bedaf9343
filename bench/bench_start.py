#!/usr/bin/env python3
"""Start-up benchmark: how long short `vt` commands take, beside `python -c pass`.

    flock /tmp/vt-bench.lock python3 bench/bench_start.py [--runs 30] [--json OUT]
    python3 bench/bench_start.py --imports [--runs 10] -- -S DIR cat REF

Each command is run --runs times (after --warmup unmeasured runs) in interleaved
rounds, so that a burst of load elsewhere hits every command alike, and the
median, minimum and 90th percentile of the wall time are reported, with the
ratio of the median to `python -c pass` (the interpreter's own start).  The
small commands are `vt --version`, `vt --help`, `vt CMD --help`, `vt -S DIR cat`
of one 5 kB block, `vt -S DIR ls` of a two-file archive, `vt -S DIR unpack` of
it; `restic version`, `borg --version` and `rsync --version` are the neighbours
for comparison (skipped where not installed).  Not part of the test suite.

`--imports VT-ARGS`: where the start-up time of one `vt` command line goes: it
is run --runs times under `python -X importtime` and each module's own import
time (the minimum over the runs, the least disturbed by other load) is listed,
largest first, with the sum.
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
from pathlib import Path


def default_vt() -> str:
    """The `vt` beside this interpreter (a venv), else the one on PATH."""
    here = Path(sys.executable).with_name("vt")
    return str(here) if here.exists() else (shutil.which("vt") or "vt")


def make_fixture(tmp: str, vt: str) -> dict[str, str]:
    """A datadir with one 5 kB block and a packed two-file tree in `tmp`;
    returns {"store", "block", "archive"}."""
    store = os.path.join(tmp, "store")
    env = {**os.environ, "HOME": tmp}  # `vt init` leaves the user's ~/.vtrc alone
    tree = os.path.join(tmp, "tree")
    os.makedirs(os.path.join(tree, "sub"))
    with open(os.path.join(tree, "a"), "wb") as f:
        f.write(b"hello\n")
    with open(os.path.join(tree, "sub", "b"), "wb") as f:
        f.write(b"x\n" * 100)
    small = os.path.join(tmp, "small.bin")
    with open(small, "wb") as f:
        f.write(os.urandom(5000))

    def vt_out(*args: str) -> str:
        r = subprocess.run([vt, "-S", store, *args], capture_output=True, text=True, env=env)
        if r.returncode:
            raise SystemExit(f"bench_start: vt {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout.strip()

    vt_out("init")
    block = vt_out("save", small)
    vt_out("-q", "pack", tree)
    return {"store": store, "block": block, "archive": tree + ".vt", "home": tmp}


def vt_commands(vt: str, fx: dict[str, str], tag: str = "") -> list[tuple[str, list[str]]]:
    """(label, argv) of the `vt` commands measured, `tag` added to each label;
    `{out}` in an argv is replaced by a fresh directory name for each run."""
    s = fx["store"]
    cmds = [
        ("vt --version", [vt, "--version"]),
        ("vt --help", [vt, "--help"]),
        ("vt cat --help", [vt, "cat", "--help"]),
        ("vt pack --help", [vt, "pack", "--help"]),
        ("vt mount --help", [vt, "mount", "--help"]),
        ("vt push --help", [vt, "push", "--help"]),
        ("vt __complete 'vt p'", [vt, "__complete", "vt p"]),
        ("vt __complete 'vt pack --ex'", [vt, "__complete", "vt pack --ex"]),
        ("vt -S DIR cat BLOCK (5 kB)", [vt, "-S", s, "cat", fx["block"]]),
        ("vt -S DIR ls X.vt", [vt, "-S", s, "ls", fx["archive"]]),
        ("vt -S DIR unpack X.vt OUT", [vt, "-S", s, "-q", "unpack", fx["archive"], "{out}"]),
        # the far end of `-S '|ssh HOST vt serve -'`, told nothing (stdin at EOF)
        ("vt -S DIR serve - </dev/null", [vt, "-S", s, "serve", "-"]),
        # both ends: a client over a pipe to a server process
        (
            "vt -S '|vt -S DIR serve -' cat BLOCK",
            [vt, "-S", f"|{vt} -S {s} serve -", "cat", fx["block"]],
        ),
    ]
    return [(label + tag, argv) for label, argv in cmds]


def commands(vt: str, fx: dict[str, str], baseline: str | None = None):
    """(label, argv) of every command measured: the interpreter alone, `vt`
    (and the `baseline` vt, labelled [base]), and the neighbours."""
    cmds = [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("python -I -S -c pass", [sys.executable, "-I", "-S", "-c", "pass"]),
    ]
    cmds += vt_commands(vt, fx)
    if baseline:
        cmds += vt_commands(baseline, fx, " [base]")
    for label, argv in (
        ("restic version", ["restic", "version"]),
        ("borg --version", ["borg", "--version"]),
        ("rsync --version", ["rsync", "--version"]),
    ):
        if shutil.which(argv[0]):
            cmds.append((label, argv))
    return cmds


def _run_once(argv: list[str], env: dict[str, str], out: str) -> float:
    argv = [out if a == "{out}" else a for a in argv]
    t0 = time.perf_counter()
    r = subprocess.run(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    dt = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"bench_start: {' '.join(argv)}: exit {r.returncode}: {r.stderr!r}")
    return dt


def bench_env(home: str | None = None) -> dict[str, str]:
    """The environment the commands run in: bytecode written (the warm-up runs
    leave .pyc files, as an installed package has them; with
    PYTHONDONTWRITEBYTECODE every module changed since its last .pyc would be
    compiled again in each run), no $VT_STORE."""
    env = {**os.environ, "HOME": home} if home else dict(os.environ)
    env.pop("VT_STORE", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_benchmark(
    runs: int = 30, warmup: int = 3, vt: str | None = None, baseline: str | None = None
) -> dict:
    """Measure every command `runs` times in interleaved rounds; return
    {"rows": [{"name", "median_ms", "min_ms", "p90_ms", "ratio"}], ...}.
    `baseline`: another vt executable (an older checkout) measured alike."""
    vt = vt or default_vt()
    tmp = tempfile.mkdtemp(prefix="vt-bench-start-")
    try:
        fx = make_fixture(tmp, vt)
        env = bench_env(fx["home"])
        cmds = commands(vt, fx, baseline)
        times: dict[str, list[float]] = {label: [] for label, _ in cmds}
        n = 0
        for rnd in range(warmup + runs):
            for label, argv in cmds:
                out = os.path.join(tmp, f"out{n}")
                n += 1
                dt = _run_once(argv, env, out)
                if rnd >= warmup:
                    times[label].append(dt)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(times["python -c pass"])
    rows = []
    for label, ts in times.items():
        ts = sorted(ts)
        med = statistics.median(ts)
        rows.append(
            {
                "name": label,
                "median_ms": med * 1e3,
                "min_ms": ts[0] * 1e3,
                "p90_ms": ts[int(0.9 * (len(ts) - 1))] * 1e3,
                "ratio": med / base,
            }
        )
    return {
        "rows": rows,
        "runs": runs,
        "vt": vt,
        "baseline": baseline,
        "python": sys.version.split()[0],
    }


def import_profile(vt_args: list[str], runs: int = 10) -> tuple[dict[str, int], int]:
    """({module: own import time in µs, minimum over `runs`}, sum of those) of
    `python -X importtime -m vtstore.cli.main VT_ARGS`."""
    best: dict[str, int] = {}
    argv = [sys.executable, "-X", "importtime", "-m", "vtstore.cli.main", *vt_args]
    for _ in range(runs):
        r = subprocess.run(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=bench_env()
        )
        for line in r.stderr.splitlines():
            if not line.startswith("import time:") or "imported package" in line:
                continue
            own, _cum, name = line[len("import time:") :].split("|")
            name = name.strip()
            best[name] = min(best.get(name, 1 << 62), int(own))
    return best, sum(best.values())


def _load() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def format_table(result: dict) -> str:
    """The result as a Markdown table."""
    lines = [
        f"| command ({result['runs']} runs) | median ms | min ms | p90 ms | × python -c pass |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['name']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['p90_ms']:.1f}"
            f" | {r['ratio']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="measured runs per command (default 30)")
    ap.add_argument("--warmup", type=int, default=3, help="unmeasured runs first (default 3)")
    ap.add_argument("--vt", help="the vt executable (default: the one beside this python)")
    ap.add_argument(
        "--baseline",
        metavar="VT",
        help="another vt (an older checkout), measured in the same rounds",
    )
    ap.add_argument("--json", metavar="OUT", help="also write the result as JSON")
    ap.add_argument(
        "--imports",
        action="store_true",
        help="list the own import time of each module of `vt VT-ARGS` instead",
    )
    ap.add_argument("vt_args", nargs="*", metavar="VT-ARGS", help="with --imports (after --)")
    ap.add_argument("--top", type=int, default=30, help="with --imports: how many modules")
    a = ap.parse_args()
    if a.imports:
        args = a.vt_args
        best, total = import_profile(args, a.runs)
        print(f"vt {' '.join(args)}: {len(best)} modules, {total / 1e3:.1f} ms of imports")
        for name, us in sorted(best.items(), key=lambda kv: -kv[1])[: a.top]:
            print(f"{us / 1e3:7.2f} ms  {name}")
        return
    load_before = _load()
    result = run_benchmark(a.runs, a.warmup, a.vt, a.baseline)
    result["load"] = {"before": load_before, "after": _load()}
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(format_table(result))
    print(f"load average before {load_before}, after {result['load']['after']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
