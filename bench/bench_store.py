"""Store benchmark: memory store and datadir adds/gets of 8 KiB blocks beside
raw blake3 + zstd of the same data, measured in the same run.

    python3 bench/bench_store.py [--count N] [--json OUT]
    python3 bench/bench_store.py --rss [--rss-blocks 1000000]
    python3 bench/bench_store.py --compression TREE [TREE ...]
    python3 bench/bench_store.py --tree TREE [TREE ...]
    python3 bench/bench_store.py --get-many [--count N] [--batch 512]

Also `vt benchmark store ...` (same arguments).  The machine is shared and
noisy: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

try:
    import vtstore  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vtstore.stores.benchmark import (
    compression_study,
    format_table,
    rss_benchmark,
    run_store_benchmark,
    tree_size,
)


def get_many_benchmark(count: int, batch: int, rounds: int, tmpdir=None) -> dict:
    """Read `count` 8 KiB blocks back from a datadir (flushed, reopened, page
    cache warm): `store[h]` one at a time vs `store.get_many` of `batch`
    hashcodes, in the order they were added (a file read) and shuffled (a
    random access), incompressible (plain records) and compressible (zstd
    frames) data; rounds interleaved, the median kept."""
    import os
    import random
    import statistics
    import tempfile

    from vtstore.stores.benchmark import compressible_blocks, random_blocks
    from vtstore.stores.datadir import DataDir

    out: dict = {"count": count, "batch": batch, "rounds": rounds, "load_before": os.getloadavg()}
    for kind, blocks in (
        ("incompressible", random_blocks(count)),
        ("compressible", compressible_blocks(count)),
    ):
        nbytes = sum(len(b) for b in blocks)
        with tempfile.TemporaryDirectory(dir=tmpdir) as d:
            with DataDir(os.path.join(d, "dd")) as s:
                hs = s.add_many(blocks)
            shuffled = hs[:]
            random.Random(1).shuffle(shuffled)
            times: dict = {}
            with DataDir(os.path.join(d, "dd"), readonly=True) as s:
                for order, seq in (("sequential", hs), ("random", shuffled)):
                    s.get_many(seq)  # warm the page cache and the index
                    for _ in range(rounds):
                        t = time.perf_counter()
                        for h in seq:
                            s[h]
                        times.setdefault(f"get_{order}", []).append(time.perf_counter() - t)
                        t = time.perf_counter()
                        for i in range(0, len(seq), batch):
                            s.get_many(seq[i : i + batch])
                        times.setdefault(f"get_many_{order}", []).append(time.perf_counter() - t)
        r = {k: nbytes / statistics.median(v) / 1e6 for k, v in times.items()}
        for order in ("sequential", "random"):
            r[f"ratio_{order}"] = r[f"get_many_{order}"] / r[f"get_{order}"]
        out[kind] = r
    out["load_after"] = os.getloadavg()
    return out


def format_get_many(r: dict) -> str:
    """The get vs get_many results as a text table (MB/s)."""
    lines = [
        f"{r['count']} blocks of 8 KiB, get_many of {r['batch']}, median of {r['rounds']}"
        f" rounds; load {r['load_before'][0]:.1f} before, {r['load_after'][0]:.1f} after",
        f"  {'data':<16}{'order':<12}{'get MB/s':>10}{'get_many MB/s':>15}{'ratio':>8}",
    ]
    for kind in ("incompressible", "compressible"):
        for order in ("sequential", "random"):
            k = r[kind]
            lines.append(
                f"  {kind:<16}{order:<12}{k[f'get_{order}']:>10.0f}"
                f"{k[f'get_many_{order}']:>15.0f}{k[f'ratio_{order}']:>8.2f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_store", description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=10000, help="blocks per data set (default 10000)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    p.add_argument("--tmpdir", help="where the datadirs go (default: the system temp dir)")
    p.add_argument("--rss", action="store_true", help="RSS while adding many small blocks")
    p.add_argument("--rss-blocks", type=int, default=1_000_000)
    p.add_argument("--compression", nargs="+", metavar="TREE", help="the compression study")
    p.add_argument("--tree", nargs="+", metavar="TREE", help="a datadir of TREE vs tar | zstd -3")
    p.add_argument(
        "--get-many", action="store_true", help="datadir reads: get one by one vs get_many"
    )
    p.add_argument("--batch", type=int, default=512, help="hashcodes per get_many (--get-many)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (--get-many)")
    a = p.parse_args(argv)
    res: dict = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    if a.get_many:
        res["get_many"] = get_many_benchmark(a.count, a.batch, a.rounds, a.tmpdir)
        print(format_get_many(res["get_many"]))
    elif a.tree:
        res["tree"] = []
        for root in a.tree:
            r = tree_size(root, tmpdir=a.tmpdir)
            res["tree"].append(r)
            print(
                f"{root}: {r['files']} files, {r['blocks']} blocks ({r['cut']}):"
                f" data files {r['data_files_bytes'] / 1e6:.2f} MB"
                f" = {r['data_vs_tar_zstd3']:.3f} x tar|zstd -3 ({r['tar_zstd3'] / 1e6:.2f} MB);"
                f" index {r['index_bytes'] / 1e6:.2f} MB; {r['seconds']:.1f} s"
            )
    elif a.compression:
        rows = compression_study(a.compression)
        res["compression"] = rows
        for r in rows:
            print(
                f"{r['tree']}: {r['files']} files, {r['unique_bytes'] / 1e6:.1f} MB unique,"
                f" tar|zstd -3 = {r['tar_zstd3'] / 1e6:.2f} MB"
            )
            for k, v in r.items():
                if k.startswith(("per_block", "frames")) and v is not None:
                    print(f"  {k:<16} {v:.3f} x tar|zstd -3")
    elif a.rss:
        r = rss_benchmark(a.rss_blocks, tmpdir=a.tmpdir)
        res["rss"] = r
        print(f"{r['blocks']} blocks of {r['block_size']} octets into a datadir")
        for s in r["samples"]:
            print(
                f"  {s['blocks']:>9} blocks  RSS {s['rss_kib'] / 1024:7.1f} MiB,"
                f" anonymous {s['rss_anon_kib'] / 1024:7.1f} MiB  {s['seconds']:7.1f} s"
            )
        print(f"  index {r['index_bytes'] / 1e6:.1f} MB, data {r['bytes_on_disk'] / 1e6:.1f} MB")
    else:
        r = run_store_benchmark(a.count, tmpdir=a.tmpdir)
        res["store"] = r
        print(format_table(r))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
