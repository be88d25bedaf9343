"""Block server throughput: add and get of 8 KiB blocks over loopback TCP and a UNIX
socket, beside the same store used locally, in the same run; and what
authentication and TLS cost: `vt save` and `vt cat` of a 1 GiB file through a
plain TCP server (--insecure-no-auth), an authenticated one and an
authenticated one in TLS, in the same run.

    python bench/bench_net.py [--blocks N] [--size 8192] [--stores memory,datadir]
                              [--transports tcp,tcp-auth,tls,unix] [--repeat 3]
                              [--save-mib 256] [--auth-mib 1024] [--json out.json]

Transports: `tcp` (no authentication), `tcp-auth` (a key), `tls` (a key, TLS
with a pinned self-signed certificate), `unix`.

The server is a separate process (`BlockServer` over a fresh store per
measurement), so client and server hash in parallel as they would across
machines.  Each row is the best of `--repeat` runs; the ratio is network / local
for the same store kind.  `run(argv)` returns the results for `vt benchmark net`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
if SRC.is_dir() and str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from vtstore.net import StreamStore  # noqa: E402
from vtstore.stores.memory import MemoryStore  # noqa: E402


def _open_local(kind: str, path: Path):
    if kind == "memory":
        return MemoryStore()
    from vtstore.stores.datadir import DataDir

    return DataDir(path)


# -- the server child -----------------------------------------------------------------


def _security(tmp: Path) -> dict:
    """One key and one self-signed certificate for the whole run (files in tmp)."""
    from vtstore.security.keys import Key, KeyRing, save_key_file
    from vtstore.security.tls import make_self_signed

    d = tmp / "security"
    if not (d / "client.key").exists():
        d.mkdir(exist_ok=True)
        key = Key.generate("bench")
        KeyRing([key], path=str(d / "server-keys")).save()
        save_key_file(str(d / "client.key"), key)
        pin = make_self_signed(str(d / "cert.pem"), str(d / "cert-key.pem"))
        (d / "pin").write_text(pin)
    return {
        "dir": d,
        "key_file": str(d / "client.key"),
        "pin": (d / "pin").read_text(),
    }


def _server_kw(mode: str, secdir: str) -> dict:
    """BlockServer keywords for a transport mode (see the module docstring)."""
    if mode in ("tcp", "unix"):
        return {"insecure_no_auth": True}
    from vtstore.security.keys import KeyRing

    kw = {"keys": KeyRing.load(os.path.join(secdir, "server-keys"))}
    if mode == "tls":
        from vtstore.security.tls import server_context

        kw["tls_context"] = server_context(
            os.path.join(secdir, "cert.pem"), os.path.join(secdir, "cert-key.pem")
        )
    return kw


def _serve_child(
    kind: str, path: str, address: str, ready: str, mode: str = "tcp", secdir: str = ""
) -> int:
    import threading

    from vtstore.net import BlockServer

    store = _open_local(kind, Path(path))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with BlockServer({"": store}, **_server_kw(mode, secdir)) as srv:
        spec = srv.listen(address)
        Path(ready + ".tmp").write_text(spec)
        os.replace(ready + ".tmp", ready)
        while not stop.wait(0.2):
            pass
    store.close()
    return 0


class _Server:
    def __init__(self, kind: str, tmp: Path, transport: str, n: int):
        self.dir = tmp / f"srv-{kind}-{transport}-{n}"
        address = str(tmp / f"s{n}.sock") if transport == "unix" else "127.0.0.1:0"
        ready = str(tmp / f"ready-{n}")
        env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        sec = _security(tmp)
        self.client_kw = {}
        self.env = {}
        if transport in ("tcp-auth", "tls"):
            self.client_kw["key_file"] = sec["key_file"]
            self.env["VT_KEY_FILE"] = sec["key_file"]
        if transport == "tls":
            self.client_kw["tls_pin"] = sec["pin"]
            self.env["VT_TLS_PIN"] = sec["pin"]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve-child",
                kind,
                str(self.dir),
                address,
                ready,
                transport,
                str(sec["dir"]),
            ],
            env=env,
        )
        deadline = time.monotonic() + 30
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("benchmark server did not start")
            time.sleep(0.02)
        self.spec = Path(ready).read_text().strip()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


# -- measuring ----------------------------------------------------------------------------


def _add(store, blocks, batch: int) -> float:
    t = time.perf_counter()
    for i in range(0, len(blocks), batch):
        store.add_many(blocks[i : i + batch])
    store.flush()
    return time.perf_counter() - t


def _get(store, hashcodes, batch: int) -> float:
    t = time.perf_counter()
    n = 0
    for i in range(0, len(hashcodes), batch):
        n += len(store.get_many(hashcodes[i : i + batch]))
    assert n == len(hashcodes)
    return time.perf_counter() - t


def _measure(open_store, blocks, batch: int, repeat: int) -> dict:
    best_add = best_get = float("inf")
    for _ in range(repeat):
        store, done = open_store()
        try:
            best_add = min(best_add, _add(store, blocks, batch))
            hashcodes = [store.hash(b) for b in blocks]
            best_get = min(best_get, _get(store, hashcodes, batch))
        finally:
            store.close()
            done()
    mb = sum(len(b) for b in blocks) / 1e6
    return {"add_MBps": mb / best_add, "get_MBps": mb / best_get}


def run(argv: list[str] | None = None) -> dict:
    """Run the benchmark; return `{"machine": ..., "results": [rows]}`."""
    p = argparse.ArgumentParser(prog="bench_net.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--blocks", type=int, default=8192, help="blocks per run (default 8192)")
    p.add_argument("--size", type=int, default=8192, help="block size (default 8192)")
    p.add_argument("--batch", type=int, default=256, help="blocks per add_many/get_many")
    p.add_argument("--stores", default="memory,datadir", help="store kinds to serve")
    p.add_argument("--transports", default="tcp,tcp-auth,tls,unix")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--save-mib",
        type=int,
        default=256,
        help="size of the file for `vt save` local vs unix: (default 256; 0 skips)",
    )
    p.add_argument(
        "--auth-mib",
        type=int,
        default=1024,
        help="size of the file for vt save/cat over plain TCP, authenticated and TLS"
        " (default 1024; 0 skips)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    blocks = [os.urandom(args.size) for _ in range(args.blocks)]
    rows = []
    counter = [0]
    with tempfile.TemporaryDirectory(prefix="bench-net-") as tmpdir:
        tmp = Path(tmpdir)
        for kind in args.stores.split(","):

            def local(kind=kind):
                counter[0] += 1
                return _open_local(kind, tmp / f"local-{kind}-{counter[0]}"), lambda: None

            base = _measure(local, blocks, args.batch, args.repeat)
            rows.append({"store": kind, "transport": "local", **base})
            for transport in args.transports.split(","):

                def remote(kind=kind, transport=transport):
                    counter[0] += 1
                    srv = _Server(kind, tmp, transport, counter[0])
                    return StreamStore(srv.spec, **srv.client_kw), srv.stop

                r = _measure(remote, blocks, args.batch, args.repeat)
                r["add_ratio"] = r["add_MBps"] / base["add_MBps"]
                r["get_ratio"] = r["get_MBps"] / base["get_MBps"]
                rows.append({"store": kind, "transport": transport, **r})
        saves = _bench_save(tmp, args.save_mib, args.repeat) if args.save_mib else []
        auth = _bench_auth(tmp, args.auth_mib, args.repeat) if args.auth_mib else []
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": _cpu_model(),
            "python": platform.python_version(),
        },
        "params": {"blocks": args.blocks, "size": args.size, "batch": args.batch},
        "results": rows,
        "save": saves,
        "auth": auth,
    }
    _print(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


def _vt_save(tmp: Path, store_spec: str, path: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-q", "-S", store_spec, "save", str(path)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t


def _bench_save(tmp: Path, mib: int, repeat: int) -> list[dict]:
    """`vt -S DATADIR save FILE` beside `vt -S unix:SOCK save FILE` (a served datadir)."""
    path = tmp / "save-input"
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    local = remote = float("inf")
    for i in range(repeat):
        local = min(local, _vt_save(tmp, str(tmp / f"save-local-{i}"), path))
        srv = _Server("datadir", tmp, "unix", 1000 + i)
        try:
            remote = min(remote, _vt_save(tmp, srv.spec, path))
        finally:
            srv.stop()
    mb = mib * (1 << 20) / 1e6
    return [
        {"command": "vt -S DATADIR save FILE", "MBps": mb / local},
        {"command": "vt -S unix:SOCK save FILE", "MBps": mb / remote, "ratio": local / remote},
    ]


def _children_cpu() -> float:
    """CPU seconds (user + system) of the children waited for so far."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _vt(store_spec: str, args: list[str], env_extra: dict, stdout) -> tuple:
    """Run `vt -S STORE ARGS`: (wall seconds, its CPU seconds, the result)."""
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(env_extra)
    cpu = _children_cpu()
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-q", "-S", store_spec, *args],
        env=env,
        check=True,
        stdout=stdout,
    )
    return time.perf_counter() - t, _children_cpu() - cpu, r


def _bench_auth(tmp: Path, mib: int, repeat: int) -> list[dict]:
    """`vt save FILE` and `vt cat REF` through a served datadir over plain TCP,
    authenticated TCP and authenticated TLS, the three interleaved in each round.
    Besides the wall time (best of the rounds), the CPU seconds of the client
    (save, cat) and of the server (both), which a shared machine disturbs less."""
    path = tmp / "auth-input"
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    modes = ("tcp", "tcp-auth", "tls")
    best = {
        m: {k: float("inf") for k in ("save", "cat", "save_cpu", "cat_cpu", "server_cpu")}
        for m in modes
    }
    for i in range(repeat):
        for m in modes:
            srv = _Server("datadir", tmp, m, 2000 + 10 * i + modes.index(m))
            b = best[m]
            try:
                secs, cpu, r = _vt(srv.spec, ["save", str(path)], srv.env, subprocess.PIPE)
                b["save"], b["save_cpu"] = min(b["save"], secs), min(b["save_cpu"], cpu)
                ref = r.stdout.decode().strip()
                secs, cpu, _ = _vt(srv.spec, ["cat", ref], srv.env, subprocess.DEVNULL)
                b["cat"], b["cat_cpu"] = min(b["cat"], secs), min(b["cat_cpu"], cpu)
            finally:
                cpu = _children_cpu()
                srv.stop()
                b["server_cpu"] = min(b["server_cpu"], _children_cpu() - cpu)
                import shutil

                shutil.rmtree(srv.dir, ignore_errors=True)
    mb = mib * (1 << 20) / 1e6
    rows = []
    for m in modes:
        row = {"transport": m, "MiB": mib}
        for op in ("save", "cat"):
            row[f"{op}_MBps"] = mb / best[m][op]
            row[f"{op}_cost"] = best[m][op] / best["tcp"][op] - 1
        for k in ("save_cpu", "cat_cpu", "server_cpu"):
            row[k] = best[m][k]
        total = best[m]["save_cpu"] + best[m]["cat_cpu"] + best[m]["server_cpu"]
        plain = best["tcp"]["save_cpu"] + best["tcp"]["cat_cpu"] + best["tcp"]["server_cpu"]
        row["cpu_cost"] = total / plain - 1
        rows.append(row)
    return rows


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _print(result: dict) -> None:
    prm = result["params"]
    print(
        f"{prm['blocks']} blocks of {prm['size']} octets, batches of {prm['batch']};"
        f" {result['machine']['cpus']} CPUs, {result['machine']['cpu']}"
    )
    print(f"{'store':8} {'transport':9} {'add MB/s':>9} {'ratio':>6} {'get MB/s':>9} {'ratio':>6}")
    for r in result["results"]:
        ar = f"{r['add_ratio']:.0%}" if "add_ratio" in r else "-"
        gr = f"{r['get_ratio']:.0%}" if "get_ratio" in r else "-"
        print(
            f"{r['store']:8} {r['transport']:9} {r['add_MBps']:9.0f} {ar:>6}"
            f" {r['get_MBps']:9.0f} {gr:>6}"
        )
    for r in result.get("save", []):
        ratio = f"{r['ratio']:.0%}" if "ratio" in r else "-"
        print(f"{r['command']:28} {r['MBps']:9.0f} MB/s {ratio:>6}")
    if result.get("auth"):
        mib = result["auth"][0]["MiB"]
        print(f"vt save / vt cat of {mib} MiB through a served datadir (cost: time vs plain tcp)")
        print(
            f"{'transport':9} {'save MB/s':>10} {'cost':>7} {'cat MB/s':>9} {'cost':>7}"
            f" {'CPU s: save':>12} {'cat':>6} {'server':>7} {'cost':>7}"
        )
        for r in result["auth"]:
            print(
                f"{r['transport']:9} {r['save_MBps']:10.0f} {r['save_cost']:+7.1%}"
                f" {r['cat_MBps']:9.0f} {r['cat_cost']:+7.1%}"
                f" {r['save_cpu']:12.1f} {r['cat_cpu']:6.1f} {r['server_cpu']:7.1f}"
                f" {r['cpu_cost']:+7.1%}"
            )


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python bench/bench_net.py` and `vt benchmark net`."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--serve-child":
        return _serve_child(*argv[1:7])
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
