"""Store benchmarks: adds and gets of 8 KiB blocks, beside raw hashing and
compression of the same data measured in the same run.

`run_store_benchmark(count)` returns a dict of results; `format_table` renders
it.  `rss_benchmark(total)` adds many small blocks to a datadir and samples the
resident set size, to show that memory does not grow with the store.  The
`bench/bench_store.py` script and `vt benchmark store` drive these.
"""

from __future__ import annotations

import os
import random
import resource
import sysconfig
import tempfile
import time
from pathlib import Path

import blake3
import zstandard

from vtstore.stores.datadir import DataDir
from vtstore.stores.memory import MemoryStore
from vtstore.stores.vtd import DEFAULT_FRAME_SIZE, DEFAULT_ZSTD_LEVEL

BLOCK = 8192


def compressible_blocks(count: int) -> list[bytes]:
    """`count` distinct 8 KiB pieces of real text: the Python library's sources,
    repeated with a counter if there is not enough of it."""
    text = bytearray()
    lib = Path(sysconfig.get_paths()["stdlib"])
    for p in sorted(lib.glob("*.py")):
        text += p.read_bytes()
        if len(text) >= count * BLOCK:
            break
    if not text:
        text = bytearray(b"def f(x):\n    return x * 42  # the answer\n" * 1000)
    out = []
    pos = 0
    for i in range(count):
        if pos + BLOCK > len(text):
            pos = 0
        piece = bytes(text[pos : pos + BLOCK - 8]) + i.to_bytes(8, "big")
        out.append(piece)
        pos += BLOCK - 8
    return out


def random_blocks(count: int, seed: int = 1) -> list[bytes]:
    """`count` incompressible 8 KiB blocks."""
    rnd = random.Random(seed)
    return [rnd.randbytes(BLOCK) for _ in range(count)]


def _rate(nbytes: int, secs: float, count: int) -> dict:
    return {
        "seconds": secs,
        "MB_per_s": nbytes / secs / 1e6 if secs else float("inf"),
        "us_per_block": secs / count * 1e6 if count else 0.0,
    }


def baseline(blocks: list[bytes], level: int = DEFAULT_ZSTD_LEVEL) -> dict:
    """blake3 of each block plus zstd of each block, and plus zstd of 256 KiB
    frames (what the datadir does), timed separately."""
    n = sum(map(len, blocks))
    t = time.perf_counter()
    for b in blocks:
        blake3.blake3(b).digest()
    t_hash = time.perf_counter() - t
    c = zstandard.ZstdCompressor(level=level)
    t = time.perf_counter()
    zsize = 0
    for b in blocks:
        zsize += len(c.compress(b))
    t_zblock = time.perf_counter() - t
    t = time.perf_counter()
    fsize = 0
    frame = []
    size = 0
    for b in blocks:
        frame.append(b)
        size += len(b)
        if size >= DEFAULT_FRAME_SIZE:
            fsize += len(c.compress(b"".join(frame)))
            frame, size = [], 0
    if frame:
        fsize += len(c.compress(b"".join(frame)))
    t_zframe = time.perf_counter() - t
    return {
        "blake3": _rate(n, t_hash, len(blocks)),
        "blake3+zstd_per_block": _rate(n, t_hash + t_zblock, len(blocks)),
        "blake3+zstd_frames": _rate(n, t_hash + t_zframe, len(blocks)),
        "zstd_per_block_ratio": zsize / n,
        "zstd_frames_ratio": fsize / n,
    }


def _drop_cache(paths) -> None:
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _io_read_bytes() -> int:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def bench_store(make, blocks: list[bytes], cold_gets: int = 500, path: Path | None = None) -> dict:
    """Time adds (with the final flush), sequential gets, and random gets after
    reopening with the OS cache dropped (datadir only)."""
    n = sum(map(len, blocks))
    s = make()
    t = time.perf_counter()
    hs = [s.add(b) for b in blocks]
    s.flush()
    t_add = time.perf_counter() - t
    t = time.perf_counter()
    for h in hs:
        s[h]
    t_get = time.perf_counter() - t
    out = {"add": _rate(n, t_add, len(blocks)), "get_sequential": _rate(n, t_get, len(blocks))}
    s.close()
    if path is not None:  # again, into a fresh store, in batches as blockify adds
        import shutil

        shutil.rmtree(path)
    s = make()
    t = time.perf_counter()
    for i in range(0, len(blocks), 64):
        s.add_many(blocks[i : i + 64])
    s.flush()
    out["add_many_64"] = _rate(n, time.perf_counter() - t, len(blocks))
    if path is None:
        s.close()
        return out
    out["bytes_on_disk"] = s.info()["bytes_on_disk"]
    s.close()
    files = [*(path / "data").iterdir(), path / "index" / "data.mdb"]
    rnd = random.Random(3)
    sample = rnd.sample(hs, min(cold_gets, len(hs)))
    _drop_cache(files)
    s = make()
    r0 = _io_read_bytes()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    t = time.perf_counter()
    for h in sample:
        s[h]
    t_cold = time.perf_counter() - t
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt - f0
    read = _io_read_bytes() - r0
    s.close()
    out["get_random_cold"] = _rate(len(sample) * BLOCK, t_cold, len(sample))
    out["get_random_cold"]["index_page_faults_per_get"] = faults / len(sample)
    out["get_random_cold"]["data_preads_per_get"] = 1.0
    out["get_random_cold"]["disk_bytes_per_get"] = read / len(sample)
    return out


def run_store_benchmark(count: int = 10000, tmpdir: str | None = None) -> dict:
    """Every measurement, for incompressible and compressible 8 KiB blocks."""
    results = {"count": count, "block_size": BLOCK, "cpus": os.cpu_count()}
    for kind, blocks in (
        ("incompressible", random_blocks(count)),
        ("compressible", compressible_blocks(count)),
    ):
        r = {"baseline": baseline(blocks)}
        r["memory"] = bench_store(MemoryStore, blocks)
        with tempfile.TemporaryDirectory(dir=tmpdir) as d:
            p = Path(d) / "dd"
            r["datadir"] = bench_store(lambda p=p: DataDir(p), blocks, path=p)
        base = r["baseline"]
        r["datadir_add_vs_hash+zstd_per_block"] = (
            base["blake3+zstd_per_block"]["seconds"] / r["datadir"]["add"]["seconds"]
        )
        r["datadir_add_vs_hash+zstd_frames"] = (
            base["blake3+zstd_frames"]["seconds"] / r["datadir"]["add"]["seconds"]
        )
        r["datadir_add_many_vs_hash+zstd_per_block"] = (
            base["blake3+zstd_per_block"]["seconds"] / r["datadir"]["add_many_64"]["seconds"]
        )
        results[kind] = r
    return results


def format_table(res: dict) -> str:
    """The results as a text table."""
    lines = [f"{res['count']} blocks of {res['block_size']} octets, {res['cpus']} CPUs"]
    row = "  {:<34} {:>9.1f} MB/s {:>9.1f} us/block"
    for kind in ("incompressible", "compressible"):
        r = res[kind]
        b = r["baseline"]
        lines.append(f"{kind}:")
        for name in ("blake3", "blake3+zstd_per_block", "blake3+zstd_frames"):
            lines.append(
                row.format("baseline " + name, b[name]["MB_per_s"], b[name]["us_per_block"])
            )
        for store in ("memory", "datadir"):
            for op, v in r[store].items():
                if isinstance(v, dict):
                    lines.append(row.format(f"{store} {op}", v["MB_per_s"], v["us_per_block"]))
        cold = r["datadir"]["get_random_cold"]
        lines.append(
            f"  cold get: {cold['index_page_faults_per_get']:.2f} index page faults"
            f" + {cold['data_preads_per_get']:.0f} data read per get,"
            f" {cold['disk_bytes_per_get'] / 1024:.1f} KiB from disk per get"
        )
        lines.append(
            f"  datadir add / (blake3+zstd per block) = {r['datadir_add_vs_hash+zstd_per_block']:.2f};"
            f" / (blake3+zstd frames) = {r['datadir_add_vs_hash+zstd_frames']:.2f};"
            " add_many(64) / (blake3+zstd per block) ="
            f" {r['datadir_add_many_vs_hash+zstd_per_block']:.2f}"
        )
        lines.append(
            f"  size: zstd per block {b['zstd_per_block_ratio']:.3f}, frames"
            f" {b['zstd_frames_ratio']:.3f}, datadir"
            f" {r['datadir']['bytes_on_disk'] / (res['count'] * res['block_size']):.3f}"
        )
    return "\n".join(lines)


def _rss_kib(field: str = "VmRSS") -> int:
    """A size from /proc/self/status: VmRSS, or RssAnon (heap, not the index's
    mapped file pages, which the kernel can drop at will)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def rss_benchmark(
    total: int = 1_000_000, size: int = 64, every: int = 100_000, tmpdir=None
) -> dict:
    """Add `total` random blocks of `size` octets to a datadir, flushing every
    `every`, and sample the resident set size: it must stay flat."""
    samples = []
    rnd = random.Random(4)
    with tempfile.TemporaryDirectory(dir=tmpdir) as d:
        s = DataDir(Path(d) / "dd")
        t = time.perf_counter()
        for i in range(total):
            s.add(rnd.randbytes(size - 8) + i.to_bytes(8, "big"))
            if (i + 1) % every == 0:
                s.flush()
                samples.append((i + 1, _rss_kib(), _rss_kib("RssAnon"), time.perf_counter() - t))
        info = s.info()
        s.close()
    return {
        "blocks": total,
        "block_size": size,
        "samples": [
            {"blocks": n, "rss_kib": r, "rss_anon_kib": a, "seconds": sec}
            for n, r, a, sec in samples
        ],
        "index_bytes": info["index_bytes"],
        "bytes_on_disk": info["bytes_on_disk"],
    }


def _tree_files(root: str) -> list[str]:
    """The regular files under `root` (no symlinks, no __pycache__), in walk order."""
    paths = []
    for dp, dns, fns in os.walk(root):
        dns[:] = sorted(d for d in dns if d != "__pycache__")
        for fn in sorted(fns):
            p = os.path.join(dp, fn)
            if os.path.isfile(p) and not os.path.islink(p):
                paths.append(p)
    return paths


def _tar_zstd_size(paths: list[str]) -> int:
    """The size of `tar -c PATHS | zstd -3`: the baseline for stored size."""
    import subprocess

    return int(
        subprocess.run(
            "tar -c --no-recursion -T - | zstd -3 -c | wc -c",
            shell=True,
            input="\n".join(paths).encode(),
            capture_output=True,
            check=True,
        ).stdout
    )


def compression_study(roots: list[str], frame_sizes=(64, 128, 256, 512)) -> list[dict]:
    """For each tree: `tar -c | zstd -3` against its 8 KiB pieces compressed per
    block, with a trained dictionary, and in frames; the numbers behind the
    datadir's choice (docs/STORES.md).  Data-file overhead (record headers,
    entry lengths) is included; the index is not."""

    rows = []
    for root in roots:
        paths = _tree_files(root)
        tarz = _tar_zstd_size(paths)
        seen = set()
        blocks = []
        for p in paths:
            data = Path(p).read_bytes()
            for i in range(0, len(data), BLOCK):
                b = data[i : i + BLOCK]
                h = blake3.blake3(b).digest()
                if h not in seen:
                    seen.add(h)
                    blocks.append(b)
        raw = sum(map(len, blocks))
        c = zstandard.ZstdCompressor(level=3)
        row = {"tree": root, "files": len(paths), "unique_bytes": raw, "tar_zstd3": tarz}
        per = sum(min(len(c.compress(b)), len(b)) + 8 for b in blocks)
        row["per_block"] = per / tarz
        rnd = random.Random(1)
        sample = rnd.sample(blocks, min(2000, len(blocks)))
        try:
            dct = zstandard.train_dictionary(112 * 1024, sample)
            cd = zstandard.ZstdCompressor(level=3, dict_data=dct)
            dsz = sum(min(len(cd.compress(b)), len(b)) + 8 for b in blocks)
            row["per_block_dict"] = (dsz + len(dct.as_bytes())) / tarz
        except zstandard.ZstdError:
            row["per_block_dict"] = None
        for fs in frame_sizes:
            tot = 0
            frame, size = [], 0
            for b in [*blocks, None]:
                if b is not None:
                    frame.append(b)
                    size += len(b)
                if frame and (b is None or size >= fs * 1024):
                    payload = b"".join(frame)
                    tot += min(len(c.compress(payload)), len(payload)) + 8 + 2 * len(frame)
                    frame, size = [], 0
            row[f"frames_{fs}K"] = tot / tarz
        rows.append(row)
    return rows


def tree_size(root: str, tmpdir=None) -> dict:
    """Store every file under `root` in a fresh datadir, cut by the project's
    chunker (8 KiB pieces if it is not built), and compare the data files with
    `tar -c | zstd -3` of the same files."""

    try:
        from vtstore.chunking.blockify import chunks_of

        def cut(p):
            return chunks_of(p, name=os.path.basename(p))

        how = "vtstore.chunking (format-aware CDC)"
    except ImportError:

        def cut(p):
            data = Path(p).read_bytes()
            return [data[i : i + BLOCK] for i in range(0, len(data), BLOCK)]

        how = "fixed 8 KiB pieces"
    paths = _tree_files(root)
    tarz = _tar_zstd_size(paths)
    with tempfile.TemporaryDirectory(dir=tmpdir) as d:
        t = time.perf_counter()
        with DataDir(Path(d) / "dd") as s:
            n = 0
            for p in paths:
                for c in cut(p):
                    s.add(c)
                    n += 1
            s.flush()
            info = s.info()
        secs = time.perf_counter() - t
    return {
        "tree": root,
        "files": len(paths),
        "cut": how,
        "chunks": n,
        "blocks": info["blocks"],
        "bytes_stored": info["bytes_stored"],
        "data_files_bytes": info["bytes_on_disk"],
        "index_bytes": info["index_bytes"],
        "tar_zstd3": tarz,
        "data_vs_tar_zstd3": info["bytes_on_disk"] / tarz,
        "seconds": secs,
    }
