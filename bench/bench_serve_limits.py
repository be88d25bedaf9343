"""Block server under attack: its RSS while hostile connections stall or flood it
and a well-behaved client saves a large stream through it.

    python bench/bench_serve_limits.py [--size-mib 1024] [--silent 70] [--trickle 40]
        [--stall 40] [--flood 50] [--serve-arg=--memory=128M ...] [--json out.json]

A real `vt serve` child keeps a datadir behind a UNIX socket.  The good client
(`vt save -`, fed incompressible data: a random MiB with a counter every 4 KiB, so
no block repeats) connects first; then the attack opens its connections, each of
one kind (with --reconnect, it reopens any the server closes or refuses):

- silent: connects and sends nothing;
- trickle: HELLO, then a length prefix announcing a packet of almost the largest
  size, then one octet a second;
- stall: HELLO, then a nearly largest ADD sent whole but for its last octet;
- flood: HELLO, then ADD packets (the same blocks again and again) as fast as the
  server takes them, never reading an answer.

The server's RSS is sampled from /proc/PID/status (VmRSS) and its peak taken from
VmHWM.  After the save, the good client reads everything back (`vt cat`) and its
SHA-256 is compared.  The module is also imported by tests/net/test_limits.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
if SRC.is_dir() and str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from vtstore.net import protocol as P  # noqa: E402

MIB = 1024 * 1024
KINDS = ("silent", "trickle", "stall", "flood")


def env() -> dict:
    """The environment of a `vt` child: this checkout first."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(SRC) + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("VT_STORE", None)
    return e


def vt(*args: str) -> list[str]:
    return [sys.executable, "-m", "vtstore.cli.main", *args]


# -- the data ------------------------------------------------------------------------


def data_chunks(size: int, seed: bytes = b"vt"):
    """`size` octets of incompressible data, one MiB at a time, no 4 KiB repeated."""
    base = bytearray(hashlib.shake_256(seed).digest(MIB))
    n = 0
    done = 0
    while done < size:
        buf = bytearray(base)
        for off in range(0, MIB, 4096):
            struct.pack_into(">Q", buf, off, n)
            n += 1
        piece = bytes(buf[: min(MIB, size - done)])
        done += len(piece)
        yield piece


# -- the server ----------------------------------------------------------------------


class Server:
    """`vt -S DATADIR serve SOCKET EXTRA...` as a child process."""

    def __init__(self, tmp: Path, extra: list[str]):
        self.tmp = tmp
        self.sock = str(tmp / "vt.sock")
        ready = tmp / "ready"
        self._stop = threading.Event()
        self.stderr = open(tmp / "serve.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            vt("-S", str(tmp / "dd"), "serve", "--ready-file", str(ready), self.sock, *extra),
            env=env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"vt serve did not start: {self.log()}")
            time.sleep(0.02)
        self.spec = ready.read_text().strip()
        self.samples: list[int] = []
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def status(self, field: str) -> int:
        """A VmXXX field of /proc/PID/status, in octets (0 once it is gone)."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            rss = self.status("VmRSS")
            if rss:
                self.samples.append(rss)

    def threads(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/task"))
        except OSError:
            return 0

    def connections(self) -> int:
        """Accepted connections on the socket (lines of /proc/net/unix naming it)."""
        with open("/proc/net/unix") as f:
            return sum(1 for line in f if line.rstrip().endswith(" " + self.sock)) - 1

    def log(self) -> str:
        try:
            return (self.tmp / "serve.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 30 s; the exit status."""
        self._stop.set()
        rc = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                rc = self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        else:
            rc = self.proc.returncode
        self.stderr.close()
        return rc


# -- the attack ----------------------------------------------------------------------


class Attack:
    """Hostile connections of the KINDS, driven by one thread with a selector."""

    def __init__(self, path: str, counts: dict[str, int], reconnect: float | None = None):
        self.path = path
        self.counts = counts
        self.reconnect = reconnect
        self.stats = {"opened": 0, "closed_by_server": 0, "refused": 0, "errors": {}}
        hello = P.encode_packet(P.OP_HELLO, 0, 0, 1, P.encode_hello(P.VERSION, None, ""))
        self.hello = hello
        big = P.DEFAULT_MAX_PACKET - 64
        blocks = [hashlib.shake_256(b"flood%d" % i).digest(64 * 1024) for i in range(16)]
        self.flood_packet = P.encode_packet(P.OP_ADD, 0, 0, 2, P.encode_blocks(blocks))
        body = P.encode_packet(P.OP_ADD, 0, 0, 2, P.encode_blocks([bytes(big - 16)]))
        self.stall_packet = body[:-1]
        self.trickle_head = body[:4]
        self.sel = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="attack", daemon=True)
        self._pending: list[tuple[float, str]] = []

    def start(self) -> None:
        for kind, n in self.counts.items():
            for _ in range(n):
                self._pending.append((0.0, kind))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.sel.close()

    def _open(self, kind: str) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.path)
        except OSError as e:
            s.close()
            self._count_error(e)
            self._again(kind)
            return
        s.setblocking(False)
        self.stats["opened"] += 1
        out = b""
        if kind == "trickle":
            out = self.hello + self.trickle_head
        elif kind == "stall":
            out = self.hello + self.stall_packet
        elif kind == "flood":
            out = self.hello
        st = {"kind": kind, "out": memoryview(out), "next": time.monotonic() + 1, "in": b""}
        self.sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, st)

    def _count_error(self, e: OSError) -> None:
        name = type(e).__name__
        self.stats["errors"][name] = self.stats["errors"].get(name, 0) + 1

    def _drop(self, s: socket.socket, st: dict, by_server: bool = True) -> None:
        self.sel.unregister(s)
        s.close()
        if by_server:
            self.stats["closed_by_server"] += 1
        self._again(st["kind"])

    def _again(self, kind: str) -> None:
        """With `reconnect`, open another connection of `kind` that much later."""
        if self.reconnect is not None:
            self._pending.append((time.monotonic() + self.reconnect, kind))

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            due = [k for t, k in self._pending if t <= now]
            self._pending = [(t, k) for t, k in self._pending if t > now]
            for kind in due:
                self._open(kind)
            for key, ev in self.sel.select(0.2):
                s, st = key.fileobj, key.data
                try:
                    if ev & selectors.EVENT_READ and st["kind"] != "flood":
                        data = s.recv(65536)
                        if not data:
                            self._drop(s, st)
                            continue
                        st["in"] = (st["in"] + data)[-4096:]
                        if b"too many connections" in st["in"] and not st.get("refused"):
                            st["refused"] = True
                            self.stats["refused"] += 1
                    if ev & selectors.EVENT_WRITE:
                        self._write(s, st)
                except OSError as e:
                    self._count_error(e)
                    self._drop(s, st)
            now = time.monotonic()
            for key in list(self.sel.get_map().values()):
                st = key.data
                if st["kind"] == "trickle" and not st["out"] and now >= st["next"]:
                    st["out"] = memoryview(b"\0")
                    st["next"] = now + 1
            # a socket with nothing to send waits only for reading
            for key in list(self.sel.get_map().values()):
                want = selectors.EVENT_READ
                if st_wants_write(key.data):
                    want |= selectors.EVENT_WRITE
                if key.events != want:
                    self.sel.modify(key.fileobj, want, key.data)

    def _write(self, s: socket.socket, st: dict) -> None:
        if not st["out"] and st["kind"] == "flood":
            st["out"] = memoryview(self.flood_packet)
        if st["out"]:
            n = s.send(st["out"])
            st["out"] = st["out"][n:]


def st_wants_write(st: dict) -> bool:
    return bool(st["out"]) or st["kind"] == "flood"


def refused_message(path: str) -> tuple[int, dict] | None:
    """Connect once and read the first packet: the refusal (code, detail) or None."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(P.encode_packet(P.OP_HELLO, 0, 0, 1, P.encode_hello(P.VERSION, None, "")))
        pkt = P.read_packet(s.makefile("rb"), 1 << 20)
    if pkt is None or not pkt.is_error:
        return None
    return P.decode_error(pkt.payload)


# -- one run --------------------------------------------------------------------------


def run(
    tmp: Path,
    size: int,
    counts: dict[str, int],
    serve_args: list[str] = (),
    settle: float = 3.0,
    readback: bool = True,
    reconnect: float | None = None,
) -> dict:
    """Start the server, connect the good client, attack, save `size` octets, read
    them back; return the measurements."""
    srv = Server(tmp, list(serve_args))
    attack = Attack(srv.sock, counts, reconnect)
    result: dict = {
        "size": size,
        "counts": counts,
        "serve_args": list(serve_args),
        "reconnect": reconnect,
    }
    try:
        result["rss_idle"] = srv.status("VmRSS")
        save = subprocess.Popen(
            vt("-q", "-S", srv.spec, "save", "-"),
            env=env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while srv.connections() < 1 and time.monotonic() < deadline and save.poll() is None:
            time.sleep(0.02)
        t0 = time.monotonic()
        attack.start()
        time.sleep(settle)  # let the attack take hold before the data flows
        result["threads_attacked"] = srv.threads()
        result["connections_attacked"] = srv.connections()
        digest = hashlib.sha256()

        t1 = time.monotonic()
        try:
            for piece in data_chunks(size):
                digest.update(piece)
                save.stdin.write(piece)
        except BrokenPipeError:
            pass
        finally:
            try:
                save.stdin.close()
            except BrokenPipeError:
                pass
        out = save.stdout.read()
        err = save.stderr.read()
        save.wait()
        result["save_seconds"] = time.monotonic() - t1
        result["save_rc"] = save.returncode
        result["save_stderr"] = err.decode(errors="replace")[-2000:]
        ref = out.decode().strip()
        result["ref"] = ref
        result["rss_after_save"] = srv.status("VmRSS")
        if readback and save.returncode == 0:
            t2 = time.monotonic()
            cat = subprocess.Popen(
                vt("-q", "-S", srv.spec, "cat", ref), env=env(), stdout=subprocess.PIPE
            )
            back = hashlib.sha256()
            n = 0
            while piece := cat.stdout.read(MIB):
                back.update(piece)
                n += len(piece)
            cat.wait()
            result["cat_seconds"] = time.monotonic() - t2
            result["cat_rc"] = cat.returncode
            result["readback_ok"] = n == size and back.digest() == digest.digest()
        result["attack_seconds"] = time.monotonic() - t0
        result["rss_max_sampled"] = max(srv.samples, default=0)
        result["rss_peak"] = srv.status("VmHWM")
    finally:
        attack.stop()
        result["attack"] = attack.stats
        result["serve_rc"] = srv.stop()
        result["serve_log_tail"] = srv.log()[-1500:]
    return result


def main(argv: list[str] | None = None) -> int:
    import tempfile

    p = argparse.ArgumentParser(prog="bench_serve_limits.py", description=__doc__.split("\n")[0])
    p.add_argument("--size-mib", type=int, default=1024, help="what the good client saves")
    for kind in KINDS:
        p.add_argument(f"--{kind}", type=int, default=50, metavar="N")
    p.add_argument("--serve-arg", action="append", default=[], help="an argument to vt serve")
    p.add_argument("--no-readback", action="store_true")
    p.add_argument(
        "--reconnect",
        type=float,
        metavar="SECONDS",
        help="reopen each connection the server closes or refuses after SECONDS"
        " (default: each of the attack's connections is opened once)",
    )
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    counts = {k: getattr(args, k) for k in KINDS}
    with tempfile.TemporaryDirectory(prefix="vt-limits-") as tmp:
        r = run(
            Path(tmp),
            args.size_mib * MIB,
            counts,
            args.serve_arg,
            readback=not args.no_readback,
            reconnect=args.reconnect,
        )
    r["machine"] = f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    r["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    log = r.pop("serve_log_tail")
    for k, v in r.items():
        print(f"{k:22} {v}")
    if r.get("save_rc"):
        print(log)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
