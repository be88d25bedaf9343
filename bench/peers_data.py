"""The data sets of `bench_peers.py`: five kinds of real data, a few snapshots each.

    python3 bench/peers_data.py [--data DIR] [--quick]      # build (cached) and list

Each kind is a list of snapshot directories under DIR/full (or DIR/quick), built
once and reused (a `.done` file marks a finished kind):

- ``git``: a git repository made of successive Django releases from PyPI
  (`pip download --no-binary :all:`, one commit each), its `django/` package checked out at each commit
  (`git archive`), as a source tree's history would be backed up.
- ``mbox``: the `git format-patch --stdout --root` mbox of issue 12 (a synthetic
  repository of one-function commits, `bench_chunk.make_format_patch_mbox`),
  in growing versions: each a prefix of the next, cut at a message boundary,
  as a mail archive grows.
- ``tarballs``: the same releases' sdists as files, each snapshot one release's
  `.tar.gz` and the `.tar` inside it.
- ``mp4``: videos made by ffmpeg (testsrc + noise, x264 8 Mbit/s, AAC,
  faststart); the second snapshot has each one's title changed
  (`ffmpeg -c copy -metadata title=...`, which moves every sample's offset).
- ``mixed``: a copy of /usr/lib/python3.11 and /usr/share/doc/[m-z]*; the second snapshot
  a copy of it with 2% of the regular files changed (half appended to, half
  overwritten in place).

Every snapshot is a separate copy (its own inodes and ctimes), so no tool's
files cache can skip reading a file: a later snapshot measures ingest of data
that is mostly stored already.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_chunk import _ffmpeg, make_format_patch_mbox  # noqa: E402
from bench_tree import du  # noqa: E402

KINDS = ("git", "mbox", "tarballs", "mp4", "mixed")

# successive patch releases: the day-to-day distance of a source history
DJANGO = ("4.2", "4.2.1", "4.2.2", "4.2.3")
GIT_PATHS = ("django",)  # what is checked out: the package (31 MB), not docs and tests
DATA_VERSION = 2  # part of the cache's path: bump when a data set changes
SIZES = {
    # kind: (full, quick)
    "releases": (4, 2),
    "mbox_bytes": (32 << 20, 6 << 20),
    "mbox_versions": (4, 2),
    "video_seconds": ((20, 28), (8,)),
    "mixed_roots": (("/usr/lib/python3.11", "/usr/share/doc/[m-z]*"), ("/usr/lib/python3.11",)),
}


def _pick(name: str, quick: bool):
    return SIZES[name][1 if quick else 0]


def snapshot_bytes(path: str) -> int:
    """Bytes of the regular files under `path` (what a restore writes)."""
    return du(path)


def sdists(data: str, quick: bool) -> list[str]:
    """The Django sdists, downloaded once into DATA/sdists with pip."""
    out = os.path.join(data, "sdists")
    os.makedirs(out, exist_ok=True)
    paths = []
    for v in DJANGO[: _pick("releases", quick)]:
        name = f"Django-{v}.tar.gz"
        p = os.path.join(out, name)
        if not os.path.exists(p):
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
                + ["--no-binary", ":all:", f"django=={v}", "-d", out],
                check=True,
            )
        if not os.path.exists(p):
            raise RuntimeError(f"pip download did not give {name}")
        paths.append(p)
    return paths


def _unpacked(sdist: str, dest: str) -> None:
    """Unpack `sdist` into `dest` without its top directory."""
    with tarfile.open(sdist) as tf:
        for m in tf.getmembers():
            m.name = m.name.split("/", 1)[1] if "/" in m.name else ""
        tf.extractall(dest, members=[m for m in tf.getmembers() if m.name], filter="tar")


def build_git(kdir: str, data: str, quick: bool) -> None:
    repo = os.path.join(kdir, "repo")
    subprocess.run(["git", "init", "-q", "-b", "main", repo], check=True)
    git = ["git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    for i, sd in enumerate(sdists(data, quick), 1):
        for name in os.listdir(repo):
            if name != ".git":
                shutil.rmtree(os.path.join(repo, name), ignore_errors=True)
                if os.path.lexists(os.path.join(repo, name)):
                    os.unlink(os.path.join(repo, name))
        _unpacked(sd, repo)
        subprocess.run([*git, "add", "-A", "-f"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", os.path.basename(sd)], check=True)
        snap = os.path.join(kdir, f"s{i}")
        os.makedirs(snap)
        archive = subprocess.Popen([*git, "archive", "HEAD", *GIT_PATHS], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", snap], stdin=archive.stdout, check=True)
        if archive.wait():
            raise RuntimeError("git archive failed")
    shutil.rmtree(repo)


def build_mbox(kdir: str, quick: bool) -> None:
    full = os.path.join(kdir, "full.mbox")
    make_format_patch_mbox(full, _pick("mbox_bytes", quick))
    with open(full, "rb") as f:
        text = f.read()
    os.unlink(full)
    n = _pick("mbox_versions", quick)
    for i in range(1, n + 1):
        end = len(text) if i == n else text.index(b"\nFrom ", len(text) * i // n) + 1
        snap = os.path.join(kdir, f"s{i}")
        os.makedirs(snap)
        with open(os.path.join(snap, "patches.mbox"), "wb") as f:
            f.write(text[:end])


def build_tarballs(kdir: str, data: str, quick: bool) -> None:
    for i, sd in enumerate(sdists(data, quick), 1):
        snap = os.path.join(kdir, f"s{i}")
        os.makedirs(snap)
        name = os.path.basename(sd)
        shutil.copyfile(sd, os.path.join(snap, name))
        with gzip.open(sd) as src, open(os.path.join(snap, name[: -len(".gz")]), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def build_mp4(kdir: str, quick: bool) -> None:
    s1, s2 = os.path.join(kdir, "s1"), os.path.join(kdir, "s2")
    os.makedirs(s1)
    os.makedirs(s2)
    for k, seconds in enumerate(_pick("video_seconds", quick)):
        mp4 = os.path.join(s1, f"clip{k}.mp4")
        # noise keeps x264 at its 8 Mbit/s: about 1 MB per second
        _ffmpeg(["-f", "lavfi", "-i", f"testsrc=duration={seconds}:size=640x480:rate=25",
                 "-f", "lavfi", "-i", f"sine=frequency={440 + 110 * k}:duration={seconds}",
                 "-vf", "noise=alls=30:allf=t", "-c:v", "libx264", "-preset", "ultrafast",
                 "-b:v", "8M", "-maxrate", "8M", "-bufsize", "8M", "-c:a", "aac",
                 "-metadata", "title=clip", "-movflags", "+faststart", mp4])  # fmt: skip
        _ffmpeg(["-i", mp4, "-map", "0", "-c", "copy", "-metadata",
                 f"title=clip {k}, edited: a longer title than before",
                 "-movflags", "+faststart", os.path.join(s2, f"clip{k}.mp4")])  # fmt: skip


def change_files(root: str, fraction: float, seed: int = 18) -> int:
    """Change `fraction` of the regular files under `root` (sorted, then sampled
    with `seed`): half get a line appended, half 64 bytes overwritten in the
    middle.  Returns how many were changed."""
    files = sorted(
        os.path.join(d, n)
        for d, _, names in os.walk(root)
        for n in names
        if os.path.isfile(os.path.join(d, n)) and not os.path.islink(os.path.join(d, n))
    )
    rnd = random.Random(seed)
    chosen = rnd.sample(files, max(1, int(len(files) * fraction)))
    for k, p in enumerate(chosen):
        with open(p, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            if k % 2 or size < 128:
                f.write(b"\nchanged by bench_peers %d\n" % k)
            else:
                f.seek(size // 2)
                f.write(rnd.randbytes(64))
    return len(chosen)


def build_mixed(kdir: str, quick: bool) -> None:
    s1, s2 = os.path.join(kdir, "s1"), os.path.join(kdir, "s2")
    os.makedirs(s1)
    for pattern in _pick("mixed_roots", quick):
        for src in sorted(glob.glob(pattern)):
            dest = os.path.join(
                s1, src.strip("/").replace("/", "_") if "*" in pattern else os.path.basename(src)
            )
            subprocess.run(["cp", "-a", src, dest], check=True)
    subprocess.run(["cp", "-a", s1, s2], check=True)
    change_files(s2, 0.02)


def build(data: str, quick: bool = False, kinds=KINDS) -> dict[str, list[str]]:
    """Build what is missing of `kinds` under DATA; return {kind: [snapshot dirs]}."""
    base = os.path.join(data, f"{'quick' if quick else 'full'}{DATA_VERSION}")
    out = {}
    for kind in kinds:
        kdir = os.path.join(base, kind)
        if not os.path.exists(os.path.join(kdir, ".done")):
            print(f"building the {kind} data set in {kdir}", file=sys.stderr)
            shutil.rmtree(kdir, ignore_errors=True)
            os.makedirs(kdir)
            if kind in ("git", "tarballs"):
                globals()[f"build_{kind}"](kdir, data, quick)
            else:
                globals()[f"build_{kind}"](kdir, quick)
            subprocess.run(["sync"])
            open(os.path.join(kdir, ".done"), "w").close()
        out[kind] = sorted(
            (os.path.join(kdir, n) for n in os.listdir(kdir) if n.startswith("s")),
            key=lambda p: int(os.path.basename(p)[1:]),
        )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "vt-peers-data"))
    ap.add_argument("--quick", action="store_true", help="small data sets, for development")
    a = ap.parse_args(argv)
    for kind, snaps in build(a.data, a.quick).items():
        sizes = ", ".join(f"{snapshot_bytes(s) / 1e6:.1f}" for s in snaps)
        print(f"{kind:9} {len(snaps)} snapshots, MB: {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
