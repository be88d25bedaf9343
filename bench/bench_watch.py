"""`vt watch` at idle and after a change; the platonic store's first index beside `vt pack`.

    python3 bench/bench_watch.py [--files 30000] [--idle-seconds 30] [--rounds 5]
        [--interval 5] [--settle 1] [--monitor auto] [--platonic-mb 1024] [--json out.json]

1. Writes a tree of --files small files (~300 directories), starts
   `vt watch --json` on it and reports the catch-up (the first state), then CPU
   time and RSS over --idle-seconds with nothing changing (from /proc), then
   --rounds times: change one file (after the interval has passed) and time until
   its state is printed (expected: about --settle plus an incremental pack).
2. Writes a --platonic-mb tree (bench_tree.gen_tree: small text files and large
   random ones) and times the platonic store's first index of it against
   `vt pack` of it into a fresh datadir, then the second (unchanged) runs; sizes
   of the index and of the datadir.  Both read a tree just written (warm cache).
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
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tree import gen_tree  # noqa: E402

VT = [sys.executable, "-m", "vtstore.cli.main"]
TICK = os.sysconf("SC_CLK_TCK")


def small_tree(root: str, files: int, seed: int = 3) -> int:
    """`files` files of 200 B .. 4 KiB in 100-file directories; total bytes."""
    rnd = random.Random(seed)
    total = 0
    for i in range(files):
        d = os.path.join(root, f"d{i // 1000:02d}", f"s{(i // 100) % 10}")
        if i % 100 == 0:
            os.makedirs(d, exist_ok=True)
        data = rnd.randbytes(rnd.randint(200, 4096))
        with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
            f.write(data)
        total += len(data)
    return total


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024
    return out["VmRSS"], out["VmHWM"]


class Watch:
    def __init__(self, store, tree, args):
        self.proc = subprocess.Popen(
            [
                *VT,
                "-q",
                "-S",
                store,
                "watch",
                tree,
                "--json",
                "--interval",
                str(args.interval),
                "--settle",
                str(args.settle),
                "--monitor",
                args.monitor,
            ],
            stdout=subprocess.PIPE,
        )
        self.lines: list = []
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cv:
                self.lines.append((time.monotonic(), json.loads(line)))
                self.cv.notify_all()

    def wait_state(self, n: int, timeout: float = 600):
        with self.cv:
            self.cv.wait_for(lambda: len(self.lines) >= n, timeout)
            return self.lines[n - 1] if len(self.lines) >= n else None


def bench_watch(args, tmp: str) -> dict:
    tree = os.path.join(tmp, "tree")
    nbytes = small_tree(tree, args.files)
    store = os.path.join(tmp, "store")
    t0 = time.monotonic()
    w = Watch(store, tree, args)
    first = w.wait_state(1)
    catch_up = first[0] - t0
    pid = w.proc.pid
    time.sleep(2)
    c0, t1 = cpu_seconds(pid), time.monotonic()
    time.sleep(args.idle_seconds)
    idle_cpu = (cpu_seconds(pid) - c0) / (time.monotonic() - t1) * 100
    rss, hwm = rss_mb(pid)
    delays = []
    rnd = random.Random(1)
    for r in range(args.rounds):
        time.sleep(args.interval + 0.5)  # the interval since the last state has passed
        i = rnd.randrange(args.files)
        path = os.path.join(tree, f"d{i // 1000:02d}", f"s{(i // 100) % 10}", f"f{i:05d}")
        with open(path, "ab") as f:
            f.write(b"changed %d\n" % r)
        t = time.monotonic()
        got = w.wait_state(2 + r, timeout=args.interval * 4 + 60)
        if got is None:
            raise SystemExit("vt watch recorded no state after a change")
        delays.append(got[0] - t)
    _, hwm2 = rss_mb(pid)
    w.proc.terminate()
    rc = w.proc.wait(60)
    return {
        "files": args.files,
        "bytes": nbytes,
        "monitor": args.monitor,
        "catch_up_s": round(catch_up, 2),
        "idle_cpu_percent": round(idle_cpu, 3),
        "idle_rss_mb": round(rss, 1),
        "peak_rss_mb": round(max(hwm, hwm2), 1),
        "interval_s": args.interval,
        "settle_s": args.settle,
        "change_to_state_s": [round(d, 2) for d in delays],
        "change_to_state_median_s": round(statistics.median(delays), 2),
        "exit_code": rc,
    }


def timed(cmd, env=None) -> float:
    t = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.monotonic() - t


def du(path: str) -> int:
    return sum(
        os.lstat(os.path.join(r, f)).st_blocks * 512 for r, _, fs in os.walk(path) for f in fs
    )


def bench_platonic(args, tmp: str) -> dict:
    tree = os.path.join(tmp, "ptree")
    files, nbytes = gen_tree(tree, args.platonic_mb)
    cat = timed(["sh", "-c", f"find {tree} -type f -print0 | xargs -0 cat > /dev/null"])
    index = os.path.join(tmp, "pindex")
    platonic = [
        sys.executable,
        "-c",
        "import sys; from vtstore.live.platonic import PlatonicStore;"
        " PlatonicStore(sys.argv[1], sys.argv[2]).close()",
        tree,
        index,
    ]
    dd = os.path.join(tmp, "dd")
    pack = [*VT, "-q", "-S", dd, "pack", "-a", os.path.join(tmp, "p.vt"), tree]
    out = {"files": files, "bytes": nbytes, "cat_s": round(cat, 2)}
    out["platonic_first_s"] = round(timed(platonic), 2)
    out["pack_first_s"] = round(timed(pack), 2)
    out["platonic_again_s"] = round(timed(platonic), 2)
    out["pack_again_s"] = round(timed(pack), 2)
    out["index_mb"] = round(du(index) / 2**20, 1)
    out["datadir_mb"] = round(du(dd) / 2**20, 1)
    out["first_ratio_platonic_to_pack"] = round(out["platonic_first_s"] / out["pack_first_s"], 2)
    out["first_ratio_platonic_to_cat"] = round(out["platonic_first_s"] / max(cat, 0.01), 2)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=30000)
    p.add_argument("--idle-seconds", type=float, default=30)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--interval", type=float, default=5)
    p.add_argument("--settle", type=float, default=1)
    p.add_argument("--monitor", default="auto", choices=("auto", "inotify", "poll"))
    p.add_argument("--platonic-mb", type=int, default=1024, help="0: skip the platonic part")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_watch.")
    try:
        res = {"watch": bench_watch(args, tmp)}
        if args.platonic_mb:
            res["platonic"] = bench_platonic(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for part, d in res.items():
        print(f"== {part}")
        for k, v in d.items():
            print(f"  {k:32} {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
