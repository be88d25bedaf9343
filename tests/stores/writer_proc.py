"""A writer process for the crash and concurrency tests (run as a script).

    python3 writer_proc.py DATADIR RUN COUNT FLUSH_EVERY [FRAME_SIZE DATA_FILE_SIZE]

Adds COUNT deterministic blocks (`block(RUN, i)`), flushing every FLUSH_EVERY adds
and printing `F n` once the first n blocks are durable.  Prints `READY` first.
With `$VT_TEST_HOLD` set to a path, waits after the first flush until that
path exists (so that two writers surely overlap).
"""

from __future__ import annotations

import os
import sys
import time

import blake3


def block(run: int, i: int) -> bytes:
    """Block i of run `run`: 100..12000 octets, every third one incompressible."""
    seed = blake3.blake3(b"%d/%d" % (run, i)).digest()
    size = 100 + int.from_bytes(seed[:2], "big") % 12000
    if i % 3 == 0:
        return blake3.blake3(seed).digest(length=size)
    line = b"run %d block %d: the quick brown fox jumps over the lazy dog\n" % (run, i)
    return (line * (size // len(line) + 1))[:size]


def main(argv: list[str]) -> int:
    from vtstore.stores.datadir import DataDir

    path, run, count, every = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    kw = {}
    if len(argv) > 4:
        kw = {"frame_size": int(argv[4]), "data_file_size": int(argv[5])}
    s = DataDir(path, **kw)
    print("READY", flush=True)
    for i in range(count):
        s.add(block(run, i))
        if (i + 1) % every == 0:
            s.flush()
            print(f"F {i + 1}", flush=True)
            hold = os.environ.get("VT_TEST_HOLD")
            if hold and i + 1 == every:
                while not os.path.exists(hold):
                    time.sleep(0.01)
    s.close()
    print(f"F {count}", flush=True)
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
