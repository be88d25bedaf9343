"""`vt benchmark`: run one of the benchmarks under bench/ of a source checkout."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from vtstore.errors import VTError

SUITES = {
    "chunk": ("bench_chunk.py", "chunker, chunk+hash and blockify speed beside b3sum/sha256sum"),
    "hash": ("bench_hash.py", "the native batch BLAKE3 beside b3sum, the blake3 package, sha256"),
    "store": ("bench_store.py", "memory and datadir add/get speed beside raw blake3+zstd"),
    "net": ("bench_net.py", "block server over TCP and UNIX sockets beside the local store"),
    "tree": ("bench_tree.py", "pack/unpack of a generated tree beside restic and borg"),
    "mount": ("bench_mount.py", "FUSE mount reads, writes and metadata beside vt cat/save"),
}


def register(sub) -> None:
    p = sub.add_parser(
        "benchmark",
        help="measure chunking, hashing and store speed",
        description=(
            "Run a benchmark from the bench/ directory of a vtstore source checkout;"
            " arguments after the suite name go to the benchmark (try SUITE --help). "
            + "; ".join(f"{k}: {v[1]}" for k, v in SUITES.items())
        ),
    )
    p.add_argument("suite", choices=sorted(SUITES), help="which benchmark")
    p.add_argument("bench_args", nargs="...", help="arguments for the benchmark")
    p.set_defaults(func=run)


def bench_dir() -> Path:
    """The bench/ directory of the source checkout this package runs from."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent / "bench"
        if (cand / "bench_tree.py").exists() or (cand / "bench_chunk.py").exists():
            return cand
    raise VTError("benchmarks live in the bench/ directory of a source checkout; none found")


def run(args) -> int:
    fname = SUITES[args.suite][0]
    path = bench_dir() / fname
    if not path.exists():
        raise VTError(f"benchmark {args.suite} is not available ({path} missing)")
    spec = importlib.util.spec_from_file_location(f"vt_bench_{args.suite}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return int(mod.main(args.bench_args) or 0)
