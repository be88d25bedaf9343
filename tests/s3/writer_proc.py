"""A writer for the crash and concurrency tests, run as a child process.

`python writer_proc.py ENDPOINT PREFIX CACHE LAYOUT SEED BATCHES` adds
`BATCHES` batches of blocks (`batch(seed, i)`; batch 0 of every seed is the
same, so writers overlap) to the store, flushes after each and prints
`flushed I` once `flush` returned: a parent that kills it knows which batches
were acknowledged.
"""

from __future__ import annotations

import random
import sys

from vtstore.stores.backends.base import Retrying
from vtstore.stores.backends.s3 import S3Backend

ADMIN = ("vtadmin", "vtsecret-0123456789")


def batch(seed: int, i: int, n: int = 200) -> list[bytes]:
    """The blocks of batch `i` of writer `seed` (batch 0: shared by all)."""
    rnd = random.Random(0 if i == 0 else seed * 100_003 + i)
    return [rnd.randbytes(rnd.randrange(100, 30_000)) + bytes([i % 256]) for _ in range(n)]


def open_store(endpoint: str, prefix: str, cache: str, layout: str):
    """The store a writer (or a checking parent) uses."""
    from vtstore.stores.backends.objects import BlockObjectStore
    from vtstore.stores.backends.packs import PackStore

    backend = Retrying(
        S3Backend(
            "vtstore",
            prefix,
            endpoint=endpoint,
            access_key_id=ADMIN[0],
            secret_access_key=ADMIN[1],
        ),
        max_time=30,
    )
    if layout == "blocks":
        return BlockObjectStore(backend)
    return PackStore(backend, cache, pack_size=1 << 20, uploads=3)


def main() -> None:
    endpoint, prefix, cache, layout, seed, batches = sys.argv[1:7]
    with open_store(endpoint, prefix, cache, layout) as s:
        for i in range(int(batches)):
            s.add_many(batch(int(seed), i))
            s.flush()
            print(f"flushed {i}", flush=True)


if __name__ == "__main__":
    main()
