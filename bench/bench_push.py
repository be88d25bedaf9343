#!/usr/bin/env python3
"""Push benchmark: `vt push` of a packed tree to an empty store over a UNIX
socket and over ssh, then again after some files changed, beside `restic copy`
and `rsync -a` of the datadir directory (locally and over ssh), in one run.

    python3 bench/bench_push.py [--size 1G] [--files 30000] [--change 0.02]
                                [--no-ssh] [--no-restic] [--json out.json]

A tree of --files files of random data totalling --size is made in a temporary
directory, packed (`vt pack`) into a source datadir and backed up with `restic
backup` into a source restic repository (neither timed).  Then, timed, each
copy into an empty destination:

- `vt push SRC unix:SOCK [default]t` (a `vt serve` on a fresh datadir);
- `vt push SRC '|ssh root@127.0.0.1 vt -S DIR serve -' [default]t`;
- (second round only) the unix: push again into a copy of the first push's
  datadir through a relay adding --rtt-ms of round-trip time (the walk's
  round trips then show);
- `restic -r DST copy --from-repo SRC` (DST made with --copy-chunker-params),
  and the same into an sftp: repository over the same ssh;
- `rsync -a SRC/ DST/` of the datadir, and `rsync -a -e ssh` to the same sshd.

Then --change of the files are rewritten with new random bytes, `vt pack` and
`restic backup` again (not timed), and every copy runs again: the second copy
is what the goal is about (issue 14: the second push in at most 20% of rsync's
time and faster than `restic copy`).  The sshd is Debian's, started on
127.0.0.1 with throwaway keys (tests/net/sshd.py); ssh and `vt serve` run on
the same machine as the client, so the "network" costs CPU, not latency.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "net"))

from sshd import Sshd, available  # noqa: E402 (tests/net/sshd.py)

from bench_store_sync import DelayRelay  # noqa: E402 (beside this file)


def _size(text: str) -> int:
    t = text.strip().lower().rstrip("ib")
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(t[-1:], 1)
    return int(t[:-1] if mult > 1 else t) * mult


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VT_")}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["RESTIC_PASSWORD"] = env["RESTIC_FROM_PASSWORD"] = "bench"
    env["RESTIC_CACHE_DIR"] = env.get("BENCH_RESTIC_CACHE", "/tmp/bench-push-restic-cache")
    return env


ENV = _env()
VT = [sys.executable, "-m", "vtstore.cli.main"]


def run(argv, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, env=ENV, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))[:200]}: exit {r.returncode}\n{r.stderr}")
    return r


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _proc_cpu(pid: int) -> float:
    """CPU seconds process `pid` has used (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(argv, server=None) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall seconds, CPU seconds (the command and its children, plus the
    `vt serve` process `server` if given) and the result of running `argv`."""
    c0, s0 = _children_cpu(), _proc_cpu(server.proc.pid) if server else 0.0
    t0 = time.perf_counter()
    r = run(argv)
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - c0 + (_proc_cpu(server.proc.pid) - s0 if server else 0.0)
    return wall, cpu, r


def make_tree(root: Path, size: int, files: int, seed: int = 1) -> list[Path]:
    """`files` files of random bytes, `size` in all, in 100 x 7 directories."""
    rnd = random.Random(seed)
    avg = max(1, size // files)
    paths = []
    for i in range(files):
        d = root / f"d{i % 100:02d}" / f"e{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"f{i}"
        p.write_bytes(rnd.randbytes(rnd.randrange(avg // 2, avg * 3 // 2 + 1)))
        paths.append(p)
    return paths


def change(paths: list[Path], fraction: float, seed: int = 2) -> int:
    """Rewrite `fraction` of the files with new random bytes of the same size."""
    rnd = random.Random(seed)
    chosen = rnd.sample(paths, max(1, int(len(paths) * fraction)))
    for p in chosen:
        p.write_bytes(rnd.randbytes(p.stat().st_size))
    return len(chosen)


class Server:
    """`vt serve` of a fresh datadir on a UNIX socket."""

    def __init__(self, tmp: Path, store: Path, name: str = "s"):
        ready = tmp / f"ready-{name}"
        self.proc = subprocess.Popen(
            [*VT, "-q", "-S", str(store), "serve", "--insecure-no-auth",
             "--ready-file", str(ready), f"unix:{tmp}/{name}.sock"],
            stdin=subprocess.DEVNULL, env=ENV,
        )  # fmt: skip
        while not ready.exists():
            if self.proc.poll() is not None:
                raise SystemExit("vt serve died")
            time.sleep(0.05)
        self.spec = ready.read_text().strip()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def push_detail(r: subprocess.CompletedProcess) -> str:
    return r.stdout.splitlines()[0] if r.stdout else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1G", help="total size of the tree (default 1G)")
    ap.add_argument("--files", type=int, default=30000, help="files in the tree (default 30000)")
    ap.add_argument("--change", type=float, default=0.02, help="fraction rewritten (0.02)")
    ap.add_argument("--no-ssh", action="store_true", help="skip the copies over ssh")
    ap.add_argument(
        "--rtt-ms",
        type=float,
        default=20.0,
        help="also the second push over a relay adding this round-trip time (0: not)",
    )
    ap.add_argument("--no-restic", action="store_true", help="skip restic")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = ap.parse_args()
    size = _size(args.size)
    use_ssh = not args.no_ssh and available() and bool(shutil.which("rsync"))
    use_restic = not args.no_restic and bool(shutil.which("restic"))
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="bench-push-"))
    tmp.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    server = sshd = None

    def row(rnd: int, what: str, timing, detail: str = "") -> None:
        t, cpu = timing[0], timing[1]
        rows.append(
            {"round": rnd, "step": what, "seconds": round(t, 3), "cpu": round(cpu, 3),
             "detail": detail}
        )  # fmt: skip
        print(f"  round {rnd}  {what:30} {t:7.2f} s  cpu {cpu:6.2f} s  {detail}", flush=True)

    try:
        tree, src = tmp / "t", tmp / "src"
        paths = make_tree(tree, size, args.files)
        sshd = Sshd(tmp).start() if use_ssh else None
        ssh = sshd.command() if sshd else ""
        server = Server(tmp, tmp / "dst-unix")
        serve = f"PYTHONPATH={ROOT / 'src'} {sys.executable} -m vtstore.cli.main -q"
        ssh_spec = f"|{ssh} '{serve} -S {tmp / 'dst-ssh'} serve -'"
        rsrc, rdst, rsftp = tmp / "restic-src", tmp / "restic-dst", tmp / "restic-sftp"
        sftp = [
            "-o",
            f"sftp.command={ssh} -s sftp" if sshd else "",
        ]
        if use_restic:
            run(["restic", "-q", "-r", str(rsrc), "init"])
            for dst, extra in ((str(rdst), []), (f"sftp:root@127.0.0.1:{rsftp}", sftp)):
                if dst.startswith("sftp:") and not sshd:
                    continue
                run(["restic", "-q", "-r", dst, *extra, "init", "--from-repo", str(rsrc),
                     "--copy-chunker-params"])  # fmt: skip
        for rnd in (1, 2):
            if rnd == 2:
                n = change(paths, args.change)
                print(f"changed {n} files", flush=True)
            tm = timed([*VT, "-q", "-S", str(src), "pack", str(tree), "-a", str(src / "t.vt")])
            row(rnd, "vt pack (not a copy)", tm)
            if use_restic:
                tm = timed(["restic", "-q", "-r", str(rsrc), "backup", str(tree)])
                row(rnd, "restic backup (not a copy)", tm)
            if rnd == 2 and args.rtt_ms:
                # the same push into a copy of the first push's datadir, through
                # a relay that delays each direction by half the round-trip time
                far = Server(tmp, tmp / "dst-rtt", "far")
                relay = DelayRelay(f"{tmp}/relay.sock", f"{tmp}/far.sock", args.rtt_ms / 2000)
                try:
                    tm = timed([*VT, "push", str(src), f"unix:{tmp}/relay.sock", "[default]t"], far)
                finally:
                    relay.close()
                    far.stop()
                row(rnd, f"vt push unix: +{args.rtt_ms:g} ms RTT", tm, push_detail(tm[2]))
            tm = timed([*VT, "push", str(src), server.spec, "[default]t"], server)
            row(rnd, "vt push unix:", tm, push_detail(tm[2]))
            if rnd == 1 and args.rtt_ms:
                run(["cp", "-a", str(tmp / "dst-unix"), str(tmp / "dst-rtt")])
            if sshd:
                tm = timed([*VT, "push", str(src), ssh_spec, "[default]t"])
                row(rnd, "vt push |ssh", tm, push_detail(tm[2]))
            if use_restic:
                tm = timed(["restic", "-q", "-r", str(rdst), "copy", "--from-repo", str(rsrc)])
                row(rnd, "restic copy (local)", tm)
                if sshd:
                    tm = timed(
                        ["restic", "-q", "-r", f"sftp:root@127.0.0.1:{rsftp}", *sftp, "copy",
                         "--from-repo", str(rsrc)]
                    )  # fmt: skip
                    row(rnd, "restic copy (sftp over ssh)", tm)
            tm = timed(["rsync", "-a", f"{src}/", f"{tmp}/rsync-local/"])
            row(rnd, "rsync -a datadir (local)", tm)
            if sshd:
                tm = timed(["rsync", "-a", "-e", ssh.rsplit(" ", 1)[0], f"{src}/",
                              f"root@127.0.0.1:{tmp}/rsync-ssh/"])  # fmt: skip
                row(rnd, "rsync -a datadir (ssh)", tm)
    finally:
        if server is not None:
            server.stop()
        if sshd is not None:
            sshd.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"\n{datetime.date.today()}, commit {commit}, {os.cpu_count()} CPUs;"
        f" tree: {size / 2**20:.0f} MiB in {args.files} files, {args.change:.0%} changed"
    )
    first = {r["step"]: r for r in rows if r["round"] == 1}
    second = {r["step"]: r for r in rows if r["round"] == 2}
    none = {"seconds": 0, "cpu": 0}
    print(f"{'step':32} {'1st s':>7} {'cpu':>6} {'2nd s':>7} {'cpu':>6}")
    for step in dict.fromkeys(r["step"] for r in rows):
        r1, r2 = first.get(step, none), second.get(step, none)
        print(
            f"{step:32} {r1['seconds']:7.2f} {r1['cpu']:6.2f} {r2['seconds']:7.2f} {r2['cpu']:6.2f}"
        )
    for push, peer in (
        ("vt push unix:", "rsync -a datadir (local)"),
        ("vt push |ssh", "rsync -a datadir (ssh)"),
        ("vt push unix:", "restic copy (local)"),
        ("vt push |ssh", "restic copy (sftp over ssh)"),
    ):
        if push in second and peer in second and second[peer]["seconds"]:
            a, b = second[push], second[peer]
            print(
                f"second {push} / {peer}: {a['seconds'] / b['seconds']:.0%} of the time,"
                f" {a['cpu'] / max(b['cpu'], 1e-3):.0%} of the cpu"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"commit": commit, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
