#!/usr/bin/env python3
"""Chunking benchmark: the chunker, chunk+hash, fastcdc, blockify, beside b3sum/sha256sum.

    python3 bench/bench_chunk.py [--size 1G] [--file PATH] [--repeat 3] [--json out.json]
                                 [--no-scanners | --scanners-only] [--scanner-size 32M]
    vt benchmark chunk [same options]

Everything runs on one file of random data (made in a temporary directory
unless --file is given), from the page cache, in the same run, so the ratios
to `b3sum --num-threads 1` hold even on a busy machine; each figure is the
best of --repeat runs.  Not part of the test suite.

Then the format scanners, each on a real input of its format made in the run
(a `git format-patch` mbox of a
synthetic repository, a tar and a zip of the stdlib's sources, a multi-member
gzip, an MP4 and an MP3 made by ffmpeg, source text, a .vtd data file): the
plain chunker's MB/s on the same bytes beside the chunker with the scanner,
and the scanner alone; and what the cuts cost in storage: blocks, their mean size,
the new bytes an edit (3 x 100 bytes inserted) stores, and the dedup ratio of
the two versions counting 40 bytes of index per block.
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


# -- the format scanners ---------------------------------------------------------------


def _stdlib_files(limit: int) -> list[tuple[str, bytes]]:
    """(relative name, content) of the stdlib's .py files, up to `limit` bytes in all."""
    from pathlib import Path

    root = Path(os.__file__).parent
    out, total = [], 0
    for p in sorted(root.rglob("*.py")):
        try:
            data = p.read_bytes()
        except OSError:
            continue
        out.append((str(p.relative_to(root)), data))
        total += len(data)
        if total >= limit:
            break
    return out


def make_format_patch_mbox(path: str, size: int) -> None:
    """`git format-patch --stdout --root` of a synthetic repository (git fast-import)
    of one-function commits, until the mbox has about `size` bytes."""
    import random

    with tempfile.TemporaryDirectory(prefix="vt-bench-git-") as repo:
        subprocess.run(["git", "init", "-q", repo], check=True)
        rnd = random.Random(1)
        files = {f"src/m{i}.py": [f"def f{i}_{j}(x):\n    return x + {j}\n" for j in range(40)]
                 for i in range(97)}  # fmt: skip
        n = max(100, size // 650)  # format-patch output is ~650 bytes per such commit
        fi = subprocess.Popen(["git", "-C", repo, "fast-import", "--quiet"], stdin=subprocess.PIPE)
        for k in range(1, n + 1):
            name = f"src/m{k % 97}.py"
            j = rnd.randrange(40)
            files[name][j] = f"def f{k}_{j}(x):\n    return x * {rnd.randrange(1000)}\n"
            body = "".join(files[name]).encode()
            msg = f"change {k}: adjust {name}\n\nWhy change {k} was made.\n".encode()
            fi.stdin.write(
                b"commit refs/heads/main\ncommitter A U Thor <author@example.com> %d +0000\n"
                b"data %d\n%s\nM 100644 inline %s\ndata %d\n%s\n"
                % (1_700_000_000 + k, len(msg), msg, name.encode(), len(body), body)
            )
        fi.stdin.close()
        if fi.wait():
            raise RuntimeError("git fast-import failed")
        with open(path, "wb") as f:
            subprocess.run(
                ["git", "-C", repo, "format-patch", "--stdout", "--root", "main"],
                stdout=f,
                check=True,
            )


def _make_inputs(tmp: str, size: int) -> dict[str, tuple[str, str]]:
    """Real files of each format in `tmp`: {label: (scanner name, path)}."""
    import gzip
    import tarfile
    import zipfile

    # compressed formats get more source so that their files come near `size` too
    files = _stdlib_files(4 * size)
    some = _stdlib_files(size)
    out: dict[str, tuple[str, str]] = {}

    def add(label, scanner, name):
        out[label] = (scanner, os.path.join(tmp, name))
        return out[label][1]

    if shutil.which("git"):
        make_format_patch_mbox(add("git format-patch mbox", "mbox", "patches.mbox"), size)
    with tarfile.open(add("tar of stdlib sources", "tar", "src.tar"), "w") as tf:
        for name, data in some:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, _io_bytes(data))
    with zipfile.ZipFile(add("zip of stdlib sources", "zip", "src.zip"), "w") as zf:
        for name, data in files:
            zf.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
    text = b"".join(d for _, d in files)
    with open(add("stdlib source text", "text", "src.py"), "wb") as f:
        f.write(text[:size])
    with open(add("gzip, a member per 64 KiB", "gzip", "src.gz"), "wb") as f:
        for i in range(0, len(text), 1 << 16):
            f.write(gzip.compress(text[i : i + (1 << 16)], mtime=0))
    _make_vtd(add(".vtd data file", "vtd", "data.vtd"), text)
    if shutil.which("ffmpeg"):
        # noise keeps the encoder at its 8 Mbit/s: about 1 MB per second
        seconds = max(4, size // 1_000_000)
        mp4 = add("MP4 (ffmpeg, faststart)", "mp4", "video.mp4")
        _ffmpeg(["-f", "lavfi", "-i", f"testsrc=duration={seconds}:size=640x480:rate=25",
                 "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
                 "-vf", "noise=alls=30:allf=t", "-c:v", "libx264", "-preset", "ultrafast",
                 "-b:v", "8M", "-maxrate", "8M", "-bufsize", "8M", "-c:a", "aac",
                 "-movflags", "+faststart", mp4])  # fmt: skip
        mp3 = add("MP3 (ffmpeg, 128 kbit/s)", "mp3", "audio.mp3")
        _ffmpeg(["-f", "lavfi", "-i", f"sine=frequency=440:duration={size // 16000}",
                 "-c:a", "libmp3lame", "-b:a", "128k", mp3])  # fmt: skip
    return out


def _io_bytes(data: bytes):
    import io

    return io.BytesIO(data)


def _ffmpeg(args: list[str]) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _make_vtd(path: str, text: bytes) -> None:
    """A .vtd file of records framed as the stores layer frames them (zstd frames of
    64 KiB of text where the zstd module is there, else plain)."""
    import zlib

    try:
        import zstandard

        comp = zstandard.ZstdCompressor(level=3).compress
        flags = 0x04
    except ImportError:  # pragma: no cover - zstandard is a dependency
        comp, flags = (lambda b: b), 0x00

    def varint(n: int) -> bytes:
        out = [n & 0x7F]
        n >>= 7
        while n:
            out.append(0x80 | (n & 0x7F))
            n >>= 7
        return bytes(reversed(out))

    with open(path, "wb") as f:
        f.write(b"VTD\x01")
        for i in range(0, len(text), 1 << 16):
            payload = comp(text[i : i + (1 << 16)])
            head = bytes([flags & 0x7F]) + varint(len(payload))
            f.write(head + payload + zlib.crc32(payload, zlib.crc32(head)).to_bytes(4, "big"))


def run_scanner_benchmark(size: int = 32 << 20, repeat: int = 3) -> list[dict]:
    """Each scanner on a real input of its format: rows of MB/s (best of `repeat`) of
    the plain chunker, the chunker with the scanner (`chunks_of`, as blockify cuts),
    and the scanner alone (4 MiB feeds), with the proposals made and the cuts taken."""
    from vtstore.chunking import BlockifyStats, chunks_of
    from vtstore.chunking.scanners import scanner_by_name

    rows = []
    with tempfile.TemporaryDirectory(prefix="vt-bench-scan-") as tmp:
        for label, (name, path) in _make_inputs(tmp, size).items():
            with open(path, "rb") as f:
                data = f.read()
            stats = BlockifyStats()

            def cut(scanner, stats=None, data=data):
                for _ in chunks_of(data, scanner=scanner, stats=stats):
                    pass

            def alone(name=name, data=data):
                sc = scanner_by_name(name)()
                for i in range(0, len(data), 4 << 20):
                    sc.feed(memoryview(data)[i : i + (4 << 20)])
                sc.finish()

            dedup = _dedup(data, name)
            t_plain = _best(lambda: cut(None), repeat)
            t_scan = _best(lambda name=name: cut(name), repeat)
            t_alone = _best(alone, repeat)
            cut(name, stats)
            n = len(data)
            rows.append({
                "input": label, "scanner": name, "bytes": n,
                "plain_mb_s": n / t_plain / 1e6, "with_scanner_mb_s": n / t_scan / 1e6,
                "scanner_alone_mb_s": n / t_alone / 1e6, "proposed": stats.proposed,
                "format_cuts": stats.cuts.get("format", 0), "failed": stats.scanner_failed,
                **dedup,
            })  # fmt: skip
    return rows


#: what a block costs in the index beside its data (issue 18's goal: Venti's 40 bytes)
INDEX_BYTES = 40


def _edited(data: bytes) -> bytes:
    """`data` with 100 new bytes inserted at a quarter, half and three quarters."""
    import random

    rnd = random.Random(7)
    n = len(data)
    at = [0, n // 4, n // 2, 3 * n // 4, n]
    return b"".join(
        data[a:b] + (rnd.randbytes(100) if b < n else b"") for a, b in zip(at, at[1:], strict=False)
    )


def _dedup(data: bytes, name: str) -> dict:
    """Blocks of `data` with its scanner, and what storing an edited copy beside it
    costs: the new blocks' bytes, and the two versions' size over the bytes of
    their distinct blocks plus INDEX_BYTES per block (no compression)."""
    from vtstore.chunking import chunks_of

    first = list(chunks_of(data, scanner=name))
    have = set(first)
    new = {c for c in chunks_of(_edited(data), scanner=name) if c not in have}
    new_bytes = sum(map(len, new))
    stored = sum(map(len, have)) + new_bytes + INDEX_BYTES * (len(have) + len(new))
    return {
        "blocks": len(first),
        "mean_block": len(data) / max(1, len(first)),
        "edit_new_bytes": new_bytes,
        "dedup_ratio": (2 * len(data) + 300) / stored,
    }


def format_scanner_table(rows: list[dict]) -> str:
    """The rows of `run_scanner_benchmark` as a text table."""
    lines = [
        f"{'input':<28} {'scanner':<7} {'MB':>6} {'plain':>8} {'+scanner':>9} {'alone':>8}"
        f" {'proposed':>9} {'fmt cuts':>9} {'blocks':>8} {'mean':>6} {'edit new':>9}"
        f" {'dedup':>6}   (MB/s; an edit: 3 x 100 bytes inserted)"
    ]
    for r in rows:
        lines.append(
            f"{r['input']:<28} {r['scanner']:<7} {r['bytes'] / 1e6:>6.1f} {r['plain_mb_s']:>8.0f}"
            f" {r['with_scanner_mb_s']:>9.0f} {r['scanner_alone_mb_s']:>8.0f}"
            f" {r['proposed']:>9} {r['format_cuts']:>9} {r['blocks']:>8}"
            f" {r['mean_block']:>6.0f} {r['edit_new_bytes']:>9} {r['dedup_ratio']:>6.3f}"
            + (f"  scanner off: {r['failed']}" if r["failed"] else "")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry (also `vt benchmark chunk`)."""
    p = argparse.ArgumentParser(prog="bench_chunk", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=_size, default=1 << 30, help="random data size (default 1G)")
    p.add_argument("--file", help="use this file instead of random data")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement (best is kept)")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--no-scanners", action="store_true", help="skip the format scanners' table")
    g.add_argument("--scanners-only", action="store_true", help="only the scanners' table")
    p.add_argument(
        "--scanner-size",
        type=_size,
        default=32 << 20,
        help="about this much input per format for the scanners' table (default 32M)",
    )
    args = p.parse_args(argv)
    result: dict = {}
    if not args.scanners_only:
        result = run_benchmark(args.size, args.file, args.repeat)
        print(format_table(result))
    if not args.no_scanners:
        scanners = run_scanner_benchmark(args.scanner_size, args.repeat)
        print(format_scanner_table(scanners))
        result["scanners"] = scanners
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
