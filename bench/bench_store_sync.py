"""Whole-store sync against listing every key, in the same run.

Two datadirs share N blocks and differ by D (D/2 each way); the second is
served by `vt serve` (a child process) on a UNIX socket, optionally behind a
relay that delays every chunk by half of `--rtt-ms` each way (an emulated
long link; the loopback has no latency to speak of).  Measured:

- `sync`: `sync_stores(local, remote, both_ways=True)` (compare and copy);
- `list`: the baseline, listing every key of both stores (the remote one page
  of 4096 after another) and diffing the sets, copying nothing.

    python bench/bench_store_sync.py [--blocks 1000000] [--diff 100]
                                     [--rtt-ms 0,10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
if SRC.is_dir() and str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from vtstore.net import StreamStore  # noqa: E402
from vtstore.stores.datadir import DataDir  # noqa: E402
from vtstore.sync.stores import sync_stores  # noqa: E402


def make_pair(tmp: Path, n: int, d: int) -> None:
    """Datadirs `a` and `b` with `n` common blocks of 24 octets; d/2 of their own each."""
    with DataDir(tmp / "a") as a, DataDir(tmp / "b") as b:
        for i in range(0, n, 50_000):
            batch = [
                b"c" + j.to_bytes(8, "little") + b"x" * 15 for j in range(i, min(n, i + 50_000))
            ]
            a.add_many(batch)
            b.add_many(batch)
        a.add_many([b"A" + j.to_bytes(8, "little") + b"y" * 100 for j in range(d // 2)])
        b.add_many([b"B" + j.to_bytes(8, "little") + b"z" * 100 for j in range(d - d // 2)])


class DelayRelay:
    """Listens on a UNIX socket and forwards to another, delaying each chunk by
    `delay` seconds per direction (order kept; pipelined requests overlap)."""

    def __init__(self, listen: str, target: str, delay: float):
        self.target, self.delay = target, delay
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(listen)
        self.sock.listen(8)
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.target)
            self.conns += [c, s]
            for x, y in ((c, s), (s, c)):
                t = threading.Thread(target=self._pump, args=(x, y), daemon=True)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        import queue

        q: queue.Queue = queue.Queue()

        def later():
            while True:
                when, data = q.get()
                if data is None:
                    return
                pause = when - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                try:
                    dst.sendall(data)
                except OSError:
                    return

        t = threading.Thread(target=later, daemon=True)
        t.start()
        while True:
            try:
                data = src.recv(1 << 16)
            except OSError:
                data = b""
            q.put((time.monotonic() + self.delay, data or None))
            if not data:
                return

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def serve(tmp: Path) -> tuple[subprocess.Popen, str]:
    ready = tmp / "ready"
    ready.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vtstore.cli.main", "-q", "-S", f"datadir:{tmp / 'b'}", "serve"]
        + ["--ready-file", str(ready), f"unix:{tmp / 'b.sock'}"],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("vt serve did not start")
        time.sleep(0.05)
    return proc, ready.read_text().strip()


def list_all(local, remote) -> tuple[float, int, int]:
    """The baseline: every key of both stores, diffed.  `(seconds, pages, differences)`."""
    t = time.perf_counter()
    ka = set(local.hashcodes())
    kb = set(remote.hashcodes())
    diff = len(ka ^ kb)
    pages = -(-len(kb) // 4096)
    return time.perf_counter() - t, pages, diff


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=1_000_000)
    ap.add_argument("--diff", type=int, default=100)
    ap.add_argument("--rtt-ms", default="0,10")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    rtts = [float(x) for x in args.rtt_ms.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    rows = []
    try:
        for rtt in rtts:
            shutil.rmtree(tmp / "a", ignore_errors=True)
            shutil.rmtree(tmp / "b", ignore_errors=True)
            t = time.perf_counter()
            make_pair(tmp, args.blocks, args.diff)
            made = time.perf_counter() - t
            proc, spec = serve(tmp)
            relay = None
            if rtt:
                relay_path = tmp / f"relay{rtt:g}.sock"
                relay = DelayRelay(str(relay_path), spec[5:], rtt / 2000)
                spec = f"unix:{relay_path}"
            try:
                with DataDir(tmp / "a") as a, StreamStore(spec) as b:
                    lsec, pages, ndiff = list_all(a, b)
                    r = sync_stores(a, b, both_ways=True)
                    t = time.perf_counter()
                    again = sync_stores(a, b)
                    again_sec = time.perf_counter() - t
            finally:
                if relay:
                    relay.close()
                proc.terminate()
                proc.wait(30)
            row = {
                "blocks": args.blocks,
                "diff": ndiff,
                "rtt_ms": rtt,
                "make_s": round(made, 1),
                "list_s": round(lsec, 2),
                "list_round_trips": pages,
                "list_keys": 2 * args.blocks + args.diff,
                "sync": r.to_json(),
                "identical_s": round(again_sec, 3),
                "identical_round_trips": again.round_trips,
            }
            rows.append(row)
            print(
                f"rtt {rtt:g} ms, {args.blocks} blocks, {ndiff} differ:"
                f" list every key {lsec:.2f}s ({pages} sequential pages remote,"
                f" {row['list_keys']} keys);"
                f" sync {r.seconds:.2f}s ({r.round_trips} round trips, {r.requests} requests,"
                f" {r.ranges_compared} ranges, {r.keys_listed} keys listed,"
                f" sent {r.sent_blocks} received {r.received_blocks});"
                f" identical again {again_sec:.3f}s ({again.round_trips} round trip)",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
