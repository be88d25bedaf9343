"""Encryption at rest benchmark: a datadir encrypted by `crypt:` beside the
plain datadir, add_many and get of the same blocks, and raw AES-256-GCM and
blake3 throughput as baselines, all in the same run.

    python3 bench/bench_crypt.py [--mib 256] [--block 8192] [--rounds 3]
                                 [--kinds plain,crypt,...] [--text]
                                 [--json OUT] [--tmpdir DIR]

Kinds: `plain` (a datadir), `crypt` (format 2: the backend names blocks by
their tag; zstd tried), `crypt-nozstd` (format 2, `compress = no`), `crypt-v1`
(format 1: backend names are hashes of the ciphertext, with the crypt index),
`crypt-py` (format 2, `compress = no`, AES-GCM by `cryptography` one block per
call and tags by hashlib, as when the native extension `_cryptblocks` is not
built), `crypt-2call` (format 2, `compress = no`, native, but a batch of new
blocks hashed, tagged and sealed in separate steps as before the one-call
path of `CryptStore._hash_and_seal`), `crypt-vaes512` (format 2, zstd
tried, AES-256-GCM by `_cryptblocks`' own AVX-512 VAES code, opt-in with
VT_CRYPT_GCM=vaes512, instead of the system's libcrypto, the default; on a
CPU without VAES it measures libcrypto).
The data is incompressible (os.urandom) unless --text.  Each kind is measured
`--rounds` times, the kinds interleaved; the median and the best round are
reported, each as a ratio to plain's median or best (the machine is shared
and noisy: read the ratios).  Goal (issue 13): encrypted add and get at >= 70%
of plain for incompressible data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import vtstore  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vtstore.hashes import Hash_BLAKE3
from vtstore.stores.crypt import names as crypt_names
from vtstore.stores.crypt import open_crypt
from vtstore.stores.crypt import store as crypt_store
from vtstore.stores.crypt.keys import create_key_file
from vtstore.stores.datadir import DataDir

BATCH = 256
PW = b"benchmark passphrase"


def make_blocks(mib: int, block: int, text: bool) -> list[bytes]:
    n = mib * (1 << 20) // block
    if not text:
        return [os.urandom(block) for _ in range(n)]
    words = [b"alpha ", b"beta ", b"gamma ", b"delta\n", b"epsilon ", b"return x\n"]
    out = []
    for i in range(n):
        b = b"".join(words[(i * 7 + j * 13) % len(words)] for j in range(block // 5 + 1))
        out.append((b"%08d " % i + b)[:block])
    return out


def rate(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def raw_aes(blocks: list[bytes]) -> float:
    """AES-256-GCM encrypt of every block, one call each (the crypt store's unit)."""
    aead = AESGCM(os.urandom(32))
    nonce = os.urandom(12)
    t = time.perf_counter()
    for b in blocks:
        aead.encrypt(nonce, b, b"")
    return rate(sum(map(len, blocks)), time.perf_counter() - t)


def raw_aes_big(total: int) -> float:
    """AES-256-GCM over 4 MiB buffers: the cipher without per-call overhead."""
    aead = AESGCM(os.urandom(32))
    buf = os.urandom(4 << 20)
    nonce = os.urandom(12)
    n = max(1, total // len(buf))
    t = time.perf_counter()
    for _ in range(n):
        aead.encrypt(nonce, buf, b"")
    return rate(n * len(buf), time.perf_counter() - t)


def raw_blake3(blocks: list[bytes]) -> float:
    t = time.perf_counter()
    Hash_BLAKE3.from_data_many(blocks)
    return rate(sum(map(len, blocks)), time.perf_counter() - t)


KINDS = ("plain", "crypt", "crypt-nozstd", "crypt-2call", "crypt-py", "crypt-v1", "crypt-vaes512")
NOZSTD = ("crypt-nozstd", "crypt-2call", "crypt-py")


def one_round(kind: str, blocks: list[bytes], tmp: Path, keyfile: Path) -> dict:
    native = crypt_store._cryptblocks
    if kind == "crypt-py":
        crypt_store._cryptblocks = crypt_names._cryptblocks = None
    gcm = getattr(native, "set_gcm_implementation", None)
    if kind == "crypt-vaes512" and gcm is not None:
        try:
            gcm("vaes512")  # vtstore's own GCM, opt-in (VT_CRYPT_GCM=vaes512)
        except ValueError:
            pass  # this CPU lacks AVX-512 VAES: the kind measures libcrypto
    try:
        return _one_round(kind, blocks, tmp, keyfile)
    finally:
        crypt_store._cryptblocks = crypt_names._cryptblocks = native
        if gcm is not None:
            gcm(None)  # the default, libcrypto


def _one_round(kind: str, blocks: list[bytes], tmp: Path, keyfile: Path) -> dict:
    path = tmp / kind
    shutil.rmtree(path, ignore_errors=True)
    (tmp / f"{kind}.idx").unlink(missing_ok=True)
    if kind == "crypt-v1":  # an existing hash-named datadir stays format 1
        with DataDir(path, compress=False) as d:
            d.create()

    def opened():
        if kind == "plain":
            return DataDir(path)
        back = DataDir(path, compress=False)
        s = open_crypt(
            back,
            key_file=keyfile,
            passphrase=PW,
            index=tmp / f"{kind}.idx",
            compress=kind not in NOZSTD,
        )
        if kind == "crypt-2call":
            s._fast_path = lambda datas: False
        return s

    total = sum(map(len, blocks))
    s = opened()
    t, c, m = time.perf_counter(), time.process_time(), time.thread_time()
    hs = []
    for i in range(0, len(blocks), BATCH):
        hs += s.add_many(blocks[i : i + BATCH])
    s.close()  # flush: data durable, index committed
    t_add, c_add = time.perf_counter() - t, time.process_time() - c
    m_add = time.thread_time() - m
    s = opened()
    t, c, m = time.perf_counter(), time.process_time(), time.thread_time()
    got = 0
    for i in range(0, len(hs), BATCH):
        got += sum(map(len, s.get_many(hs[i : i + BATCH])))
    t_get, c_get = time.perf_counter() - t, time.process_time() - c
    m_get = time.thread_time() - m
    s.close()
    assert got == total
    on_disk = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    if (tmp / f"{kind}.idx").exists():
        on_disk += (tmp / f"{kind}.idx").stat().st_size
    shutil.rmtree(path, ignore_errors=True)
    return {
        "add_mb_s": rate(total, t_add),
        "get_mb_s": rate(total, t_get),
        # per second of this process's CPU (all its threads): steadier than
        # wall time on a machine shared with other work
        "add_cpu_mb_s": rate(total, c_add),
        "get_cpu_mb_s": rate(total, c_get),
        # the calling thread's CPU per block: what bounds the rate when the
        # other core is free (the datadir writes on threads of its own)
        "add_main_us": m_add / len(blocks) * 1e6,
        "get_main_us": m_get / len(blocks) * 1e6,
        "bytes": on_disk,
    }


def paired(runs: dict, kind: str, m: str) -> list[float]:
    """Kind's rate over plain's, round by round: the kinds of one round run
    back to back, so load from other work weighs on both alike."""
    return [r[m] / p[m] for r, p in zip(runs[kind], runs["plain"], strict=True)]


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_crypt", description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=256, help="data size in MiB (default 256)")
    p.add_argument("--block", type=int, default=8192, help="block size (default 8192)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--kinds", default=",".join(KINDS), help="store kinds, comma-separated")
    p.add_argument("--text", action="store_true", help="compressible text, not random data")
    p.add_argument("--json", metavar="OUT")
    p.add_argument("--tmpdir")
    a = p.parse_args(argv)
    blocks = make_blocks(a.mib, a.block, a.text)
    total = sum(map(len, blocks))
    tmp = Path(tempfile.mkdtemp(prefix="bench-crypt-", dir=a.tmpdir))
    try:
        keyfile = tmp / "crypt.key"
        create_key_file(keyfile, PW, log_n=14)
        kinds = ["plain"] + [k for k in a.kinds.split(",") if k and k != "plain"]
        runs: dict[str, list[dict]] = {k: [] for k in kinds}
        for _ in range(a.rounds):
            for k in kinds:
                runs[k].append(one_round(k, blocks, tmp, keyfile))
        best: dict[str, dict] = {}
        for k, rs in runs.items():
            best[k] = {"bytes": rs[-1]["bytes"], "rounds": rs}
            if k != "plain":
                best[k]["paired"] = {
                    m: paired(runs, k, m)
                    for m in ("add_mb_s", "get_mb_s", "add_cpu_mb_s", "get_cpu_mb_s")
                }
            for m in ("add_mb_s", "get_mb_s", "add_cpu_mb_s", "get_cpu_mb_s"):
                best[k][m] = max(r[m] for r in rs)
                best[k][m.replace("_mb_s", "_median_mb_s")] = statistics.median(r[m] for r in rs)
            for m in ("add_main_us", "get_main_us"):
                best[k][m] = statistics.median(r[m] for r in rs)
        base = {
            "aes_gcm_block_mb_s": max(raw_aes(blocks) for _ in range(a.rounds)),
            "aes_gcm_4mib_mb_s": max(raw_aes_big(total) for _ in range(a.rounds)),
            "blake3_mb_s": max(raw_blake3(blocks) for _ in range(a.rounds)),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    res = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git_commit(),
        "machine": f"{os.cpu_count()} cores, {cpu}",
        "python": platform.python_version(),
        "data": f"{a.mib} MiB of {'text' if a.text else 'random'} {a.block}-octet blocks",
        "baselines": base,
        "stores": best,
    }
    plain = best["plain"]
    print(f"# {res['data']}; {res['machine']}; {res['when']} commit {res['commit']}")
    print(f"# {a.rounds} rounds; add = add_many({BATCH}) + close, get = get_many({BATCH})")
    print("# MB/s median (best); ratios to plain's median (best)")
    print("| store | add MB/s | vs plain | get MB/s | vs plain | on disk MB |")
    print("|---|---:|---:|---:|---:|---:|")

    def cell(r: dict, m: str) -> str:
        med, top = r[m.replace("_mb_s", "_median_mb_s")], r[m]
        pm, pt = plain[m.replace("_mb_s", "_median_mb_s")], plain[m]
        return f"{med:.0f} ({top:.0f}) | {med / pm:.0%} ({top / pt:.0%})"

    for k in kinds:
        r = best[k]
        print(f"| {k} | {cell(r, 'add_mb_s')} | {cell(r, 'get_mb_s')} | {r['bytes'] / 1e6:.1f} |")
    print("\n# per CPU-second of the process (all threads): MB/CPU-s median (best)")
    print("| store | add | vs plain | get | vs plain |")
    print("|---|---:|---:|---:|---:|")
    for k in kinds:
        r = best[k]
        print(f"| {k} | {cell(r, 'add_cpu_mb_s')} | {cell(r, 'get_cpu_mb_s')} |")
    print("\n# the calling thread's CPU per block, median: µs (plain's / this)")
    print("| store | add | vs plain | get | vs plain |")
    print("|---|---:|---:|---:|---:|")
    for k in kinds:
        r = best[k]
        ad, gt = r["add_main_us"], r["get_main_us"]
        pa, pg = plain["add_main_us"], plain["get_main_us"]
        print(f"| {k} | {ad:.1f} | {pa / ad:.0%} | {gt:.1f} | {pg / gt:.0%} |")
    print("\n# paired: each round's rate over plain's in the same round, median (min-max)")
    print("| store | add wall | get wall | add CPU | get CPU |")
    print("|---|---:|---:|---:|---:|")
    for k in kinds[1:]:
        cells = []
        for m in ("add_mb_s", "get_mb_s", "add_cpu_mb_s", "get_cpu_mb_s"):
            rs = paired(runs, k, m)
            cells.append(f"{statistics.median(rs):.0%} ({min(rs):.0%}-{max(rs):.0%})")
        print(f"| {k} | {' | '.join(cells)} |")
    print("\n| baseline | MB/s |\n|---|---:|")
    print(
        f"| raw AES-256-GCM, one call per block | {base['aes_gcm_block_mb_s']:.0f} |\n"
        f"| raw AES-256-GCM, 4 MiB calls | {base['aes_gcm_4mib_mb_s']:.0f} |\n"
        f"| raw blake3 (from_data_many) | {base['blake3_mb_s']:.0f} |"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
