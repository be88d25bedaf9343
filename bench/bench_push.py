#!/usr/bin/env python3
"""Push benchmark: `vt push` of a packed tree to an empty datadir served over a
UNIX socket, then again after some files changed, beside `rsync -a` of the
source datadir's directory in the same run.

    python3 bench/bench_push.py [--size 1G] [--files 30000] [--change 0.02] [--json out.json]

A tree of --files files of random data totalling --size is made in a temporary
directory and packed (`vt pack`) into a source datadir.  Then, each timed:
the first push (`vt push SRC unix:SOCK [default]t`), an `rsync -a` of the
source datadir to an empty directory, a second pack after --change of the
files were rewritten, the second push, and the second rsync.  Not part of the
test suite.
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
import time
from pathlib import Path


def _size(text: str) -> int:
    t = text.strip().lower().rstrip("ib")
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(t[-1:], 1)
    return int(t[:-1] if mult > 1 else t) * mult


def vt(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", *args],
        check=True,
        capture_output=True,
        text=True,
        **kw,
    )


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def make_tree(root: Path, size: int, files: int, seed: int = 1) -> list[Path]:
    rnd = random.Random(seed)
    avg = max(1, size // files)
    paths = []
    for i in range(files):
        d = root / f"d{i % 100:02d}" / f"e{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"f{i}"
        p.write_bytes(rnd.randbytes(rnd.randrange(avg // 2, avg * 3 // 2 + 1)))
        paths.append(p)
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1G")
    ap.add_argument("--files", type=int, default=30000)
    ap.add_argument("--change", type=float, default=0.02)
    ap.add_argument("--json")
    args = ap.parse_args()
    size = _size(args.size)
    tmp = Path(tempfile.mkdtemp(prefix="bench-push-"))
    rows = []
    server = None
    try:
        tree, src, dst = tmp / "t", tmp / "src", tmp / "dst"
        paths = make_tree(tree, size, args.files)
        t, _ = timed(lambda: vt("-q", "-S", str(src), "pack", str(tree), "-a", str(src / "t.vt")))
        rows.append(("vt pack (first)", t, ""))
        ready = tmp / "ready"
        server = subprocess.Popen(
            [sys.executable, "-m", "vtstore.cli.main", "-q", "-S", str(dst), "serve",
             "--insecure-no-auth", "--ready-file", str(ready), f"unix:{tmp}/s.sock"],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        while not ready.exists():
            if server.poll() is not None:
                raise SystemExit("vt serve died")
            time.sleep(0.05)
        spec = ready.read_text().strip()
        t, r = timed(lambda: vt("push", str(src), spec, "[default]t"))
        rows.append(("vt push over unix: (first)", t, r.stdout.splitlines()[0]))
        rs = shutil.which("rsync")
        if rs:
            t, _ = timed(lambda: subprocess.run([rs, "-a", f"{src}/", f"{tmp}/rsync/"], check=True))
            rows.append(("rsync -a datadir (first)", t, ""))
        rnd = random.Random(2)
        for p in rnd.sample(paths, max(1, int(len(paths) * args.change))):
            p.write_bytes(rnd.randbytes(p.stat().st_size))
        t, _ = timed(lambda: vt("-q", "-S", str(src), "pack", str(tree), "-a", str(src / "t.vt")))
        rows.append((f"vt pack (after {args.change:.0%} changed)", t, ""))
        t, r = timed(lambda: vt("push", str(src), spec, "[default]t"))
        rows.append(("vt push over unix: (second)", t, r.stdout.splitlines()[0]))
        if rs:
            t, _ = timed(lambda: subprocess.run([rs, "-a", f"{src}/", f"{tmp}/rsync/"], check=True))
            rows.append(("rsync -a datadir (second)", t, ""))
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"tree: {size / 2**20:.0f} MiB in {args.files} files, {os.cpu_count()} CPUs")
    print(f"{'step':40} {'seconds':>8}  detail")
    for name, t, detail in rows:
        print(f"{name:40} {t:8.2f}  {detail}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"step": n, "seconds": t, "detail": d} for n, t, d in rows], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
