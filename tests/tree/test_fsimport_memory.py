"""Peak memory of a real `vt pack` of big files (issue 18: ingest RSS <= 100 MB).

Two big incompressible files (like the MP4 data set of bench_peers) are cut
in two threads at once, each with its pool of read buffers: the buffers are
most of the peak.  A 4 MiB read buffer used to be rounded up to 6 MiB (room
for the carried tail counted on top), which put this pack at 101-103 MiB.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

LIMIT_MIB = 96


_MEASURE = """
import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = p.stderr.read()
_, status, usage = os.wait4(p.pid, 0)
sys.stderr.buffer.write(err)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def _peak_rss_mib(argv: list[str]) -> tuple[int, float]:
    """Run `argv`; return its exit status and its peak RSS in MiB.

    Measured by a small intermediate process: Linux carries the peak RSS of
    the process that forks (here pytest, over 1 GiB late in a full run) into
    a child's `ru_maxrss` across exec, so the child must come from a small one.
    """
    r = subprocess.run(
        [sys.executable, "-c", _MEASURE, *argv], capture_output=True, text=True, check=False
    )
    rc, maxrss = map(int, r.stdout.split())
    assert rc == 0, r.stderr
    return rc, maxrss / 1024


@pytest.mark.slow
def test_pack_of_two_big_files_stays_under_limit(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = os.urandom
    for name, mib in (("clip0.mp4", 24), ("clip1.mp4", 32)):
        with open(src / name, "wb") as f:
            for _ in range(mib):
                f.write(rng(1 << 20))
    store = tmp_path / "store"
    _, peak = _peak_rss_mib(
        [sys.executable, "-m", "vtstore.cli.main", "-q", "-S", str(store), "pack",
         "-a", str(tmp_path / "a.vt"), str(src)]
    )  # fmt: skip
    assert peak <= LIMIT_MIB, f"peak RSS {peak:.0f} MiB"
    # and the content is all there, byte for byte
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-q", "-S", str(store), "unpack",
         str(tmp_path / "a.vt"), str(out)],
        check=True,
    )  # fmt: skip
    for name in ("clip0.mp4", "clip1.mp4"):
        assert (out / name).read_bytes() == (src / name).read_bytes()
