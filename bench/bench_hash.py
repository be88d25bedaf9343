#!/usr/bin/env python3
"""Block hashing benchmark: vtstore._blake3 batch hashing beside blake3, sha256 and b3sum.

    python3 bench/bench_hash.py [--size-mb 256] [--block-kib 8] [--cdc] [--repeat 3] [--json OUT]

Random data is cut into blocks of --block-kib (or at the chunker's cut points
with --cdc, mean about 8 KiB) and every block is hashed: with
`_blake3.digest_cuts` under each implementation the CPU has, `digest_list`,
a Python loop of `blake3.blake3(b).digest()` and of `hashlib.sha256`, and
`b3sum --num-threads 1` over a file of the same data (one process, from the
page cache, start-up included), all in the same run; each figure is the best
of --repeat runs.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

try:
    import vtstore  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_chunk import _best, _command, cpu_model  # noqa: E402


def fixed_cuts(size: int, block: int) -> list[int]:
    """End offsets of `block`-byte blocks covering `size` bytes."""
    return [*range(block, size, block), size] if size else []


def run_benchmark(
    size: int = 256 << 20, block: int = 8 << 10, cdc: bool = False, repeat: int = 3
) -> dict:
    """Run every measurement; return {"rows": [...], "blocks": ..., ...}.

    Each row: name, seconds (best of `repeat`), MB/s, µs per block, and the
    time ratio to `b3sum --num-threads 1` (None where b3sum is missing).
    """
    import blake3

    from vtstore import _blake3

    data = os.urandom(size)
    if cdc:
        from vtstore.chunking import cut_offsets

        cuts = list(cut_offsets(data))
    else:
        cuts = fixed_cuts(size, block)
    starts = [0, *cuts[:-1]] if cuts else []
    blocks = [data[s:e] for s, e in zip(starts, cuts, strict=True)]
    expect = b"".join(blake3.blake3(b).digest() for b in blocks)
    rows: list[dict] = []

    def add(name: str, seconds: float | None, note: str = "") -> None:
        rows.append({"name": name, "seconds": seconds, "note": note})

    tmpdir = tempfile.mkdtemp(prefix="vt-bench-hash-")
    try:
        path = os.path.join(tmpdir, "random.bin")
        with open(path, "wb") as f:
            f.write(data)
        if shutil.which("b3sum"):
            argv = ["b3sum", "--num-threads", "1", path]
            _command(argv)  # the file into the page cache
            add("b3sum --num-threads 1 (whole file)", _best(lambda: _command(argv), repeat))
        else:
            add("b3sum --num-threads 1", None, "b3sum not installed")
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)

    default = _blake3.implementation()
    try:
        for impl in _blake3.implementations():
            _blake3.set_implementation(impl)
            assert _blake3.digest_cuts(data, 0, cuts) == expect, impl
            add(
                f"_blake3.digest_cuts [{impl}]",
                _best(lambda: _blake3.digest_cuts(data, 0, cuts), repeat),
            )
        _blake3.set_implementation(default)
        assert _blake3.digest_list(blocks) == expect
        add(f"_blake3.digest_list [{default}]", _best(lambda: _blake3.digest_list(blocks), repeat))

        half = len(cuts) // 2
        parts = [(0, cuts[:half]), (cuts[half - 1] if half else 0, cuts[half:])]

        def two_threads():
            ts = [threading.Thread(target=_blake3.digest_cuts, args=(data, s, c)) for s, c in parts]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

        add(f"_blake3.digest_cuts [{default}], 2 threads", _best(two_threads, repeat))
        add(
            f"_blake3.digest [{default}] (whole buffer)",
            _best(lambda: _blake3.digest(data), repeat),
        )
    finally:
        _blake3.set_implementation(default)

    def py_blake3():
        for b in blocks:
            blake3.blake3(b).digest()

    def py_sha256():
        for b in blocks:
            hashlib.sha256(b).digest()

    add("blake3.blake3(b).digest() per block", _best(py_blake3, repeat))
    add("hashlib.sha256(b).digest() per block", _best(py_sha256, repeat))

    b3 = rows[0]["seconds"]
    for r in rows:
        s = r["seconds"]
        r["mb_per_s"] = size / s / 1e6 if s else None
        r["us_per_block"] = s / len(cuts) * 1e6 if s and cuts else None
        r["x_b3sum_time"] = s / b3 if s and b3 else None
    return {
        "size": size,
        "blocks": len(cuts),
        "block_size": "cdc" if cdc else block,
        "repeat": repeat,
        "rows": rows,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def format_table(result: dict) -> str:
    """The result of `run_benchmark` as a text table."""
    bs = result["block_size"]
    what = "chunker cuts" if bs == "cdc" else f"{bs >> 10} KiB blocks"
    lines = [
        f"hash benchmark: {result['size'] / (1 << 20):.0f} MiB random data, {result['blocks']}"
        f" {what} (mean {result['size'] / max(result['blocks'], 1) / 1024:.1f} KiB), best of"
        f" {result['repeat']}, {result['machine']['cpu']} ({result['machine']['cores']} cores),"
        f" {result['date']}",
        f"{'what':<44} {'seconds':>8} {'MB/s':>8} {'us/block':>9} {'x b3sum':>8}",
    ]
    for r in result["rows"]:
        if r["seconds"] is None:
            lines.append(f"{r['name']:<44} {'-':>8} {'-':>8} {'-':>9} {'-':>8}  {r['note']}")
            continue
        ratio = f"{r['x_b3sum_time']:.2f}" if r["x_b3sum_time"] else "-"
        lines.append(
            f"{r['name']:<44} {r['seconds']:>8.3f} {r['mb_per_s']:>8.0f}"
            f" {r['us_per_block']:>9.2f} {ratio:>8}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry."""
    p = argparse.ArgumentParser(prog="bench_hash", description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mb", type=int, default=256, help="random data in MiB (default 256)")
    p.add_argument("--block-kib", type=int, default=8, help="block size in KiB (default 8)")
    p.add_argument("--cdc", action="store_true", help="cut where the chunker cuts instead")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement (best is kept)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = p.parse_args(argv)
    result = run_benchmark(args.size_mb << 20, args.block_kib << 10, args.cdc, args.repeat)
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
