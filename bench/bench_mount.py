"""Benchmark the FUSE mount against its baselines, measured in the same run.

- sequential read of one large file through the mount vs `vt cat` of it;
- writing it through the mount (cp + a recorded sync) vs `vt save` of it;
- `cp -a` of a 10,000-file tree into and out of the mount, `ls -lR` of it;
- metadata operations per second (create, stat, rename, unlink) on the mount
  vs a local directory;
- reading archive-as tar views (`x-vt-archive-as tar`: of a directory holding
  the large file, and of the 10,000-file tree) vs `vt export` of the same
  directory to a pipe (goal >= 0.7).

Run:  python bench/bench_mount.py [--size-mb 256] [--files 10000] [--json out.json]
Needs root and /dev/fuse.  Ratios are what hold on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
ENV = dict(os.environ, PYTHONPATH=os.path.abspath(SRC))
VT = [sys.executable, "-m", "vtstore.cli.main"]


def timed(cmd, **kw) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=ENV, **kw)
    return time.perf_counter() - t


def drop_caches() -> None:
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass


def make_tree(root: str, n: int) -> None:
    for i in range(n):
        d = os.path.join(root, f"d{i // 100:03d}")
        if i % 100 == 0:
            os.makedirs(d)
        with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
            f.write(os.urandom(64 + (i * 37) % 4000))


def meta_ops(root: str, n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        p = os.path.join(root, f"m{i}")
        open(p, "w").close()
        os.stat(p)
        os.rename(p, p + "x")
        os.unlink(p + "x")
    return 4 * n / (time.perf_counter() - t)


class Mount:
    def __init__(self, store, archive, mnt):
        os.makedirs(mnt, exist_ok=True)
        subprocess.run([*VT, "-S", store, "mount", archive, mnt], check=True, env=ENV)
        self.mnt = mnt

    def sync(self):
        os.setxattr(self.mnt, "x-vt-control", b"sync")

    def close(self):
        subprocess.run([*VT, "umount", self.mnt], check=True, env=ENV)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--meta", type=int, default=2000)
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--dir", help="work directory (default: a new temporary one)")
    args = ap.parse_args()
    work = args.dir or tempfile.mkdtemp(prefix="vt-bench-mount-")
    store = os.path.join(work, "store")
    results: dict = {"size_mb": args.size_mb, "files": args.files}
    try:
        src = os.path.join(work, "src")
        os.makedirs(src)
        big = os.path.join(src, "big.bin")
        with open(big, "wb") as f:
            for _ in range(args.size_mb):
                f.write(os.urandom(1 << 20))
        mb = args.size_mb
        # baselines: vt save and vt cat of the same file
        t_save = timed([*VT, "-S", store, "save", big], stdout=subprocess.DEVNULL)
        archive = os.path.join(work, "src.vt")
        subprocess.run(
            [*VT, "-S", store, "pack", "-a", archive, src],
            check=True,
            env=ENV,
            stdout=subprocess.DEVNULL,
        )
        drop_caches()
        t_cat = timed([*VT, "-S", store, "cat", f"{archive}/big.bin"], stdout=subprocess.DEVNULL)
        # the mount
        mnt = os.path.join(work, "mnt")
        m = Mount(store, archive, mnt)
        try:
            drop_caches()
            t_read = timed(["cat", os.path.join(mnt, "big.bin")], stdout=subprocess.DEVNULL)
            t = time.perf_counter()
            shutil.copyfile(big, os.path.join(mnt, "copy.bin"))
            m.sync()
            t_write = time.perf_counter() - t
            tree = os.path.join(work, "tree")
            make_tree(tree, args.files)
            t_cp_in = timed(["cp", "-a", tree, os.path.join(mnt, "tree")])
            m.sync()
            t_cp_in_sync = time.perf_counter()
            t_ls = timed(["ls", "-lR", os.path.join(mnt, "tree")], stdout=subprocess.DEVNULL)
            out = os.path.join(work, "out")
            t_cp_out = timed(["cp", "-a", os.path.join(mnt, "tree"), out])
            ops_mnt = meta_ops(mnt, args.meta)
            del t_cp_in_sync
            os.mkdir(os.path.join(mnt, "bigdir"))
            os.rename(os.path.join(mnt, "copy.bin"), os.path.join(mnt, "bigdir", "copy.bin"))
            views = {}
            for d in ("bigdir", "tree"):
                os.setxattr(os.path.join(mnt, d), "x-vt-archive-as", b"tar")  # records a state
            for d in ("bigdir", "tree"):
                drop_caches()
                t_view = timed(["cat", os.path.join(mnt, d + ".tar")], stdout=subprocess.DEVNULL)
                drop_caches()
                t_export = timed(
                    ["sh", "-c", 'exec "$@" | cat > /dev/null', "sh", *VT, "-S", store]
                    + ["export", f"{archive}/{d}"]
                )
                views[d] = (os.path.getsize(os.path.join(mnt, d + ".tar")), t_view, t_export)
        finally:
            m.close()
        t_cp_local = timed(["cp", "-a", tree, os.path.join(work, "tree2")])
        t_ls_local = timed(["ls", "-lR", tree], stdout=subprocess.DEVNULL)
        local = os.path.join(work, "local")
        os.makedirs(local)
        ops_local = meta_ops(local, args.meta)
        results.update(
            {
                "vt_cat_MBps": mb / t_cat,
                "mount_read_MBps": mb / t_read,
                "read_ratio": t_cat / t_read,
                "vt_save_MBps": mb / t_save,
                "mount_write_MBps": mb / t_write,
                "write_ratio": t_save / t_write,
                "cp_a_in_s": t_cp_in,
                "cp_a_out_s": t_cp_out,
                "cp_a_local_s": t_cp_local,
                "ls_lR_s": t_ls,
                "ls_lR_local_s": t_ls_local,
                "meta_ops_per_s": ops_mnt,
                "meta_ops_local_per_s": ops_local,
            }
        )
        for d, (size, t_view, t_export) in views.items():
            results[f"tar_view_{d}_MBps"] = size / 1e6 / t_view
            results[f"vt_export_{d}_MBps"] = size / 1e6 / t_export
            results[f"tar_view_{d}_ratio"] = t_export / t_view
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    rows = [
        (
            "sequential read",
            f"{results['mount_read_MBps']:.0f} MB/s",
            f"vt cat {results['vt_cat_MBps']:.0f} MB/s",
            f"{results['read_ratio']:.2f}",
        ),
        (
            "write (cp + sync)",
            f"{results['mount_write_MBps']:.0f} MB/s",
            f"vt save {results['vt_save_MBps']:.0f} MB/s",
            f"{results['write_ratio']:.2f}",
        ),
        (
            f"cp -a {args.files} files in",
            f"{results['cp_a_in_s']:.2f} s",
            f"local {results['cp_a_local_s']:.2f} s",
            f"{results['cp_a_local_s'] / results['cp_a_in_s']:.2f}",
        ),
        (
            f"cp -a {args.files} files out",
            f"{results['cp_a_out_s']:.2f} s",
            f"local {results['cp_a_local_s']:.2f} s",
            f"{results['cp_a_local_s'] / results['cp_a_out_s']:.2f}",
        ),
        (
            "ls -lR",
            f"{results['ls_lR_s']:.2f} s",
            f"local {results['ls_lR_local_s']:.2f} s",
            f"{results['ls_lR_local_s'] / results['ls_lR_s']:.2f}",
        ),
        (
            "metadata ops",
            f"{results['meta_ops_per_s']:.0f}/s",
            f"local {results['meta_ops_local_per_s']:.0f}/s",
            f"{results['meta_ops_per_s'] / results['meta_ops_local_per_s']:.2f}",
        ),
    ]
    for d, what in (("bigdir", f"{args.size_mb} MiB file"), ("tree", f"{args.files} files")):
        rows.append(
            (
                f"tar view read ({what})",
                f"{results[f'tar_view_{d}_MBps']:.0f} MB/s",
                f"vt export {results[f'vt_export_{d}_MBps']:.0f} MB/s",
                f"{results[f'tar_view_{d}_ratio']:.2f}",
            )
        )
    print(f"{'measure':28} {'mount':>14} {'baseline':>22} {'ratio':>7}")
    for r in rows:
        print(f"{r[0]:28} {r[1]:>14} {r[2]:>22} {r[3]:>7}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
