"""Restore speed: `vt unpack` beside `casync extract`, `restic restore`, `borg extract`
and `cp -a`, on three kinds of tree, in the same run.

    flock /tmp/vt-bench.lock python3 bench/bench_restore.py [--kinds small,big,mixed]
        [--repeat 3] [--small-files 20000] [--big-mb 256] [--work DIR] [--json out.json]
        [--tools vt,casync,restic,borg,cp] [--vt PYTHON] [--vt-src DIR]
        [--peers DIR] [--drop-caches]

Kinds: `small` (--small-files text-like files of a few KiB in directories of
100), `big` (--big-mb in four files, half random, half semi-compressible, one
with a 16 MiB hole), `mixed` (system files: /usr/lib/python3.11 and /usr/share/man,
symlinks included, plus a few hard links).  Each tool backs every tree up once
(not timed), then restores it --repeat times; the tools take turns going first
in each round, and before every restore the system is synced, the repository is
read into the page cache (every tool restores from memory, not from the disk)
and the previous output removed.  Reports the median restore time, MB/s,
files/s and the peak RSS (from /usr/bin/time) per tool and kind, and every
round under "runs" in --json.

`--peers DIR` adds the five kinds of `bench_peers.py` (`git`, `mbox`,
`tarballs`, `mp4`, `mixed`: the data sets `peers_data.py` built under DIR, e.g.
/tmp/vt-peers-data/full2): every snapshot of the kind is stored in order into
one repository per tool (vt `pack -a`, casync `make --compression=zstd`, as
bench_peers does) and the last one is restored, so restore is measured alone,
more rounds in less time.  `--drop-caches` empties the kernel's caches
(`sync`, `echo 3 > /proc/sys/vm/drop_caches`) before every restore, then
reads the repository (or, for `cp -a`, the tree) back in: every tool starts
from the same state of the dentry, inode and page caches.

`--vt-src DIR` runs vt from another checkout (e.g. a `git worktree` of an older
commit: `PYTHONPATH=DIR/src`), named `vt@DIR` in the table, so old and new code
are measured in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tree import WORDS, timed, warm  # noqa: E402  (sync, pause, /usr/bin/time)


def gen_small(root: str, nfiles: int, seed: int = 11) -> None:
    """`nfiles` text-like files (lognormal sizes around 3 KiB) in directories of 100."""
    rnd = random.Random(seed)
    vocab = [" ".join(rnd.choice(WORDS) for _ in range(8)) for _ in range(4096)]
    for i in range(nfiles):
        sub = os.path.join(root, f"d{i // 10000:02d}", f"p{(i // 100) % 100:02d}")
        if i % 100 == 0:
            os.makedirs(sub, exist_ok=True)
        n = min(int(rnd.lognormvariate(7.6, 1.0)), 256 << 10)
        lines = []
        size = 0
        while size < n:
            line = rnd.choice(vocab) + f" {rnd.getrandbits(32)}"
            lines.append(line)
            size += len(line) + 1
        with open(os.path.join(sub, f"f{i:06d}.txt"), "wb") as f:
            f.write(("\n".join(lines) + "\n").encode()[:n])


def gen_big(root: str, mb: int, seed: int = 12) -> None:
    """Four files of `mb`/4 MiB: random, semi-compressible, random with a hole, text."""
    rnd = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    each = (mb << 20) // 4
    for i in range(4):
        with open(os.path.join(root, f"blob{i}.bin"), "wb") as f:
            left = each
            while left > 0:
                if i == 2 and left == each // 2:
                    f.seek(16 << 20, os.SEEK_CUR)  # a hole (vt keeps it)
                    left -= 16 << 20
                    continue
                if i in (0, 2):
                    piece = rnd.randbytes(min(1 << 20, left))
                elif i == 1:
                    piece = (rnd.randbytes(4096) + b"compressible " * 300)[:left]
                else:
                    piece = " ".join(rnd.choice(WORDS) for _ in range(20000)).encode()[:left]
                f.write(piece)
                left -= len(piece)
            f.truncate(each)


def gen_mixed(root: str) -> None:
    """System files (python's library and the man pages), symlinks kept, hard links added."""
    os.makedirs(root, exist_ok=True)
    for src in ("/usr/lib/python3.11", "/usr/share/man"):
        if os.path.isdir(src):
            subprocess.run(["cp", "-a", src, os.path.join(root, os.path.basename(src))], check=True)
    links = os.path.join(root, "links")
    os.makedirs(links, exist_ok=True)
    n = 0
    for dirpath, _, fnames in os.walk(os.path.join(root, "python3.11")):
        for f in fnames:
            p = os.path.join(dirpath, f)
            if os.path.isfile(p) and not os.path.islink(p) and n < 200:
                os.link(p, os.path.join(links, f"{n:03d}-{f}"))
                n += 1


def tree_size(path: str) -> tuple[int, int]:
    """(regular files, bytes of their content)."""
    files = nbytes = 0
    for dirpath, _, fnames in os.walk(path):
        for f in fnames:
            st = os.lstat(os.path.join(dirpath, f))
            if not os.path.islink(os.path.join(dirpath, f)):
                files += 1
                nbytes += st.st_size
    return files, nbytes


PEER_KINDS = ("git", "mbox", "tarballs", "mp4", "mixed")


def peer_snapshots(data: str, kind: str) -> list[str]:
    """The snapshot directories of a `peers_data.py` kind, in order."""
    kdir = os.path.join(data, kind)
    return [os.path.join(kdir, s) for s in sorted(os.listdir(kdir)) if s.startswith("s")]


def drop_caches() -> None:
    """Write back and drop the page, dentry and inode caches (root only)."""
    subprocess.run(["sync"])
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        sys.exit(f"--drop-caches: {e.strerror} (run as root)")


class Tools:
    """Backup (once) and restore commands of each tool."""

    def __init__(self, work: str, vt_python: str, vt_srcs: list[str]):
        self.work = work
        self.env = dict(
            os.environ,
            RESTIC_PASSWORD="bench",
            BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
            BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
        )
        self.vt_python = vt_python
        self.vt_srcs = vt_srcs

    def vt_env(self, src: str | None):
        if src is None:
            return self.env
        return dict(self.env, PYTHONPATH=os.path.join(src, "src"))

    def repo(self, tool: str, kind: str) -> str:
        return os.path.join(self.work, f"repo-{tool.replace('/', '_')}-{kind}")

    def backup(self, tool: str, kind: str, tree: str, snaps: list[str] | None = None) -> None:
        repo = self.repo(tool, kind)
        if os.path.exists(repo):
            return
        env = self.env
        run = lambda cmd, **kw: subprocess.run(  # noqa: E731
            cmd, env=env, check=True, capture_output=True, **kw
        )
        if snaps:  # a peers kind: every snapshot in order, as bench_peers stores them
            os.makedirs(repo)
            for snap in snaps:
                if tool.startswith("vt"):
                    vt = [self.vt_python, "-m", "vtstore.cli.main", "-q", "-S", repo, "pack"]
                    run([*vt, "-a", os.path.join(repo, "tree.vt"), snap])
                elif tool == "casync":
                    idx = os.path.join(repo, "tree.caidx")
                    store = f"--store={repo}/store"
                    run(["casync", "make", store, "--compression=zstd", idx, snap])
                else:
                    raise SystemExit(f"--peers: {tool} is not run on the peers' kinds")
            return
        if tool.startswith("vt"):
            archive = tree.rstrip("/") + ".vt"
            if os.path.exists(archive):
                os.unlink(archive)
            run([self.vt_python, "-m", "vtstore.cli.main", "-q", "-S", repo, "pack", tree])
            os.makedirs(repo, exist_ok=True)
            shutil.move(archive, os.path.join(repo, "tree.vt"))
        elif tool == "casync":
            os.makedirs(repo)
            run(["casync", "make", f"--store={repo}/store", f"{repo}/tree.caidx", tree])
        elif tool == "restic":
            run(["restic", "-q", "init", "-r", repo])
            run(["restic", "-q", "-r", repo, "backup", "--compression", "auto", "."], cwd=tree)
        elif tool == "borg":
            run(["borg", "init", "-e", "none", repo])
            run(["borg", "create", "-C", "zstd,3", f"{repo}::a", "."], cwd=tree)

    def warm_program(self, tool: str) -> None:
        """Read `tool`'s own code back into the page cache (after caches were
        dropped: vt's modules are files too, as casync's binary is)."""
        if tool.startswith("vt"):
            src = tool.split("@", 1)[1] if "@" in tool else None
            mods = "vtstore.cli.main, vtstore.cli.unpack, vtstore.tree.fsexport, vtstore.stores.datadir"
            cmd = [self.vt_python, "-c", f"import {mods}"]
            subprocess.run(cmd, env=self.vt_env(src), check=True)
        else:
            prog = {"casync": "casync", "restic": "restic", "borg": "borg", "cp": "cp"}[tool]
            subprocess.run([prog, "--version"], capture_output=True)

    def restore_cmd(self, tool: str, kind: str, tree: str, out: str):
        """(command, env, cwd) restoring into `out` (which does not exist)."""
        repo = self.repo(tool.split("@")[0] if tool.startswith("vt") else tool, kind)
        if tool.startswith("vt"):
            src = tool.split("@", 1)[1] if "@" in tool else None
            cmd = [self.vt_python, "-m", "vtstore.cli.main", "-q", "-S", repo, "unpack"]
            return [*cmd, os.path.join(repo, "tree.vt"), out], self.vt_env(src), None
        if tool == "casync":
            return (
                ["casync", "extract", f"--store={repo}/store", f"{repo}/tree.caidx", out],
                None,
                None,
            )
        if tool == "restic":
            return ["restic", "-q", "-r", repo, "restore", "latest", "--target", out], None, None
        if tool == "borg":
            os.makedirs(out)
            return ["borg", "extract", f"{repo}::a"], None, out
        if tool == "cp":
            return ["cp", "-a", tree, out], None, None
        raise ValueError(tool)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kinds", default="small,big,mixed")
    ap.add_argument("--tools", default="vt,casync,restic,borg,cp")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--small-files", type=int, default=20000)
    ap.add_argument("--big-mb", type=int, default=256)
    ap.add_argument("--work", default="/tmp/vt-bench-restore")
    ap.add_argument("--json")
    ap.add_argument("--vt", default=sys.executable, help="the python that runs vt")
    ap.add_argument("--vt-src", action="append", default=[], help="also run vt from this checkout")
    ap.add_argument("--peers", metavar="DIR", help="bench_peers' data sets (adds their kinds)")
    ap.add_argument("--drop-caches", action="store_true", help="drop the kernel's caches first")
    args = ap.parse_args()
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    kinds = args.kinds.split(",")
    gens = {
        "small": lambda p: gen_small(p, args.small_files),
        "big": lambda p: gen_big(p, args.big_mb),
        "mixed": gen_mixed,
    }
    tools = Tools(work, args.vt, args.vt_src)
    names = args.tools.split(",")
    names[1:1] = [f"vt@{s}" for s in args.vt_src] if "vt" in names else []
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "kinds": {}}
    for kind in kinds:
        tree = os.path.join(work, f"tree-{kind}")
        snaps = None
        if kind in PEER_KINDS:
            if not args.peers:
                sys.exit(f"kind {kind}: give --peers DIR (bench_peers' data sets)")
            snaps = peer_snapshots(args.peers, kind)
            tree = snaps[-1]
        elif not os.path.exists(tree):
            gens[kind](tree)
        files, nbytes = tree_size(tree)
        for t in names:
            if t != "cp":
                tools.backup(t.split("@")[0], kind, tree, snaps)
        runs: dict[str, list] = {t: [] for t in names}
        for rnd in range(args.repeat):
            order = names[rnd % len(names) :] + names[: rnd % len(names)]
            for t in order:
                out = os.path.join(work, f"out-{kind}")
                shutil.rmtree(out, ignore_errors=True)
                cmd, env, cwd = tools.restore_cmd(t, kind, tree, out)
                if args.drop_caches:
                    drop_caches()
                    tools.warm_program(t)
                warm(tree if t == "cp" else tools.repo(t.split("@")[0], kind))
                load = os.getloadavg()[0]
                dt, rss, cpu = timed(cmd, env=env or tools.env, cwd=cwd)
                runs[t].append({"s": dt, "rss_KiB": rss, "cpu_s": cpu, "load": load})
                shutil.rmtree(out, ignore_errors=True)
        rows = {}
        for t in names:
            s = statistics.median(r["s"] for r in runs[t])
            rows[t] = {
                "median_s": s,
                "MBps": nbytes / s / 1e6,
                "files_per_s": files / s,
                "peak_rss_MiB": max(r["rss_KiB"] for r in runs[t]) / 1024,
                "cpu_s": statistics.median(r["cpu_s"] for r in runs[t]),
                "runs": runs[t],
            }
        results["kinds"][kind] = {"files": files, "bytes": nbytes, "tools": rows}
        print(f"\n{kind}: {files:,} files, {nbytes / 1e6:.1f} MB, load {os.getloadavg()}")
        print(
            f"{'tool':<24} {'s':>7} {'MB/s':>7} {'files/s':>8} {'CPU s':>6} {'RSS MiB':>8}  rounds"
        )
        for t, r in rows.items():
            rounds = " ".join(f"{x['s']:.2f}" for x in r["runs"])
            print(
                f"{t[:24]:<24} {r['median_s']:>7.2f} {r['MBps']:>7.1f} {r['files_per_s']:>8.0f}"
                f" {r['cpu_s']:>6.1f} {r['peak_rss_MiB']:>8.1f}  {rounds}"
            )
        sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
