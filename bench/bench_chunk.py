#!/usr/bin/env python3
"""Chunking benchmark: the chunker, chunk+hash, fastcdc, blockify, beside b3sum/sha256sum.

    python3 bench/bench_chunk.py [--size 1G] [--file PATH] [--repeat 3] [--json out.json]
    vt benchmark chunk [same options]

Everything runs on one file of random data (made in a temporary directory
unless --file is given), from the page cache, in the same run, so the ratios
to `b3sum --num-threads 1` hold even on a busy machine; each figure is the
best of --repeat runs.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def _size(text: str) -> int:
    t = text.strip().lower().rstrip("ib")
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(t[-1:], 1)
    return int(t[:-1] if mult > 1 else t) * mult


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _paired(a, b, repeat: int) -> list[float]:
    """time(b) / time(a) for `repeat` back-to-back pairs of commands."""
    out = []
    for _ in range(repeat):
        ta = _best(lambda: _command(a), 1)
        tb = _best(lambda: _command(b), 1)
        out.append(tb / ta)
    return out


def _command(argv) -> float:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_file(path: str, size: int) -> None:
    """Write `size` random bytes to `path`."""
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 << 20)
            f.write(os.urandom(n))
            left -= n


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_benchmark(size: int = 1 << 30, path: str | None = None, repeat: int = 3) -> dict:
    """Run every measurement; return {"rows": [...], "machine": ..., ...}.

    Each row: name, seconds (best of `repeat`), MB/s, and the time ratio to
    `b3sum --num-threads 1` on the same file (None where b3sum is missing).
    """
    import blake3

    from vtstore.chunking import Chunker, blockify, cut_offsets
    from vtstore.stores.memory import MemoryStore

    tmpdir = None
    if path is None:
        tmpdir = tempfile.mkdtemp(prefix="vt-bench-chunk-")
        path = os.path.join(tmpdir, "random.bin")
        make_file(path, size)
    size = os.path.getsize(path)
    rows: list[dict] = []

    def add(name: str, seconds: float | None, note: str = "") -> None:
        rows.append({"name": name, "seconds": seconds, "note": note})

    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            data = memoryview(mm)
            # warm the page cache and the mapping
            blake3.blake3(data).digest()

            for tool, argv in (
                ("b3sum --num-threads 1", ["b3sum", "--num-threads", "1", path]),
                ("sha256sum", ["sha256sum", path]),
            ):
                if shutil.which(argv[0]):
                    add(tool, _best(lambda a=argv: _command(a), repeat))
                else:
                    add(tool, None, f"{argv[0]} not installed")

            add("chunker alone (cut_offsets, 1 call)", _best(lambda: cut_offsets(data), repeat))

            def stream():
                ch = Chunker()
                for i in range(0, size, 4 << 20):
                    ch.feed(data[i : i + (4 << 20)])
                ch.finish()

            add("chunker alone (Chunker, 4 MiB feeds)", _best(stream, repeat))

            def chunk_hash():
                start = 0
                for e in cut_offsets(data):
                    blake3.blake3(data[start:e]).digest()
                    start = e

            add("chunk + blake3 per block (1 thread)", _best(chunk_hash, repeat))

            from vtstore import _blake3 as native

            def chunk_hash_native():
                native.digest_cuts(data, 0, cut_offsets(data))

            add("chunk + native batch BLAKE3 (1 thread)", _best(chunk_hash_native, repeat))

            try:
                from fastcdc import fastcdc_cy

                def fcdc():
                    for _ in fastcdc_cy.fastcdc_cy(mm, 2048, 8192, 65536, fat=False):
                        pass

                add("fastcdc package (Cython, 2K/8K/64K)", _best(fcdc, repeat))
            except ImportError:
                add("fastcdc package", None, "fastcdc not installed")
            data.release()

        def save():
            store = MemoryStore()
            blockify(path, store)
            store.close()

        add("blockify FILE into MemoryStore", _best(save, repeat))

        paired_ratios: list[float] = []
        vt = shutil.which("vt")
        if vt:
            probe = subprocess.run([vt, "-S", "memory:", "save", "--help"], capture_output=True)
            if probe.returncode == 0:
                add(
                    "vt -S memory: save FILE (process)",
                    _best(lambda: _command([vt, "-S", "memory:", "save", path]), repeat),
                )
                if shutil.which("b3sum"):
                    paired_ratios = _paired(
                        ["b3sum", "--num-threads", "1", path],
                        [vt, "-S", "memory:", "save", path],
                        repeat,
                    )
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)

    b3 = rows[0]["seconds"]
    for r in rows:
        s = r["seconds"]
        r["mb_per_s"] = size / s / 1e6 if s else None
        r["x_b3sum_time"] = s / b3 if s and b3 else None
    return {
        "size": size,
        "repeat": repeat,
        "rows": rows,
        # vt save time / b3sum time, each pair run back to back: robust to the
        # host's speed drifting between the rows above
        "paired_vt_save_x_b3sum": paired_ratios,
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def format_table(result: dict) -> str:
    """The result of `run_benchmark` as a text table."""
    lines = [
        f"chunking benchmark: {result['size'] / (1 << 20):.0f} MiB random data, best of"
        f" {result['repeat']}, {result['machine']['cpu']} ({result['machine']['cores']} cores),"
        f" {result['date']}",
        f"{'what':<42} {'seconds':>8} {'MB/s':>8} {'x b3sum':>8}",
    ]
    for r in result["rows"]:
        if r["seconds"] is None:
            lines.append(f"{r['name']:<42} {'-':>8} {'-':>8} {'-':>8}  {r['note']}")
            continue
        ratio = f"{r['x_b3sum_time']:.2f}" if r["x_b3sum_time"] else "-"
        lines.append(f"{r['name']:<42} {r['seconds']:>8.3f} {r['mb_per_s']:>8.0f} {ratio:>8}")
    pr = result.get("paired_vt_save_x_b3sum") or []
    if pr:
        lines.append(
            f"vt save / b3sum, {len(pr)} back-to-back pairs: "
            + " ".join(f"{x:.2f}" for x in sorted(pr))
            + f" (median {statistics.median(pr):.2f})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry (also `vt benchmark chunk`)."""
    p = argparse.ArgumentParser(prog="bench_chunk", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=_size, default=1 << 30, help="random data size (default 1G)")
    p.add_argument("--file", help="use this file instead of random data")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement (best is kept)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    args = p.parse_args(argv)
    result = run_benchmark(args.size, args.file, args.repeat)
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
