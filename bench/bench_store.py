"""Store benchmark: memory store and datadir adds/gets of 8 KiB blocks beside
raw blake3 + zstd of the same data, measured in the same run.

    python3 bench/bench_store.py [--count N] [--json OUT]
    python3 bench/bench_store.py --rss [--rss-blocks 1000000]
    python3 bench/bench_store.py --compression TREE [TREE ...]
    python3 bench/bench_store.py --tree TREE [TREE ...]

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_store", description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=10000, help="blocks per data set (default 10000)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    p.add_argument("--tmpdir", help="where the datadirs go (default: the system temp dir)")
    p.add_argument("--rss", action="store_true", help="RSS while adding many small blocks")
    p.add_argument("--rss-blocks", type=int, default=1_000_000)
    p.add_argument("--compression", nargs="+", metavar="TREE", help="the compression study")
    p.add_argument("--tree", nargs="+", metavar="TREE", help="a datadir of TREE vs tar | zstd -3")
    a = p.parse_args(argv)
    res: dict = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    if a.tree:
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
