"""Fixtures for sync tests: trees to copy, a store that counts its requests."""

from __future__ import annotations

import os
import random

from vtstore.stores.base import Store


def make_tree(root, files: int = 200, size: int = 20_000, seed: int = 1, dirs: int = 10) -> None:
    """`files` files of random content spread over `dirs` directories (two levels)."""
    rnd = random.Random(seed)
    for i in range(files):
        d = os.path.join(root, f"d{i % dirs}", f"e{i % 3}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}"), "wb") as f:
            f.write(rnd.randbytes(rnd.randrange(size // 2, size * 3 // 2)))


class CountingStore(Store):
    """A store passing everything to `inner`, counting the calls and blocks of
    `contains_many`, `get_many`/`[]` and `add_many` (the requests a remote
    store would see)."""

    def __init__(self, inner):
        super().__init__(f"counting({inner.name})", inner.hashclass, inner.readonly)
        self.inner = inner
        self.calls = {"contains": 0, "add": 0, "get": 0}
        self.blocks = {"contains": 0, "add": 0, "get": 0}

    def contains_many(self, hcs):
        hcs = list(hcs)
        self.calls["contains"] += 1
        self.blocks["contains"] += len(hcs)
        return self.inner.contains_many(hcs)

    def add_many(self, datas):
        datas = list(datas)
        self.calls["add"] += 1
        self.blocks["add"] += len(datas)
        return self.inner.add_many(datas)

    def get_many(self, hcs):
        hcs = list(hcs)
        self.calls["get"] += 1
        self.blocks["get"] += len(hcs)
        return self.inner.get_many(hcs)

    def __getitem__(self, h):
        self.calls["get"] += 1
        self.blocks["get"] += 1
        return self.inner[h]

    def _contains(self, h):
        return h in self.inner

    def __len__(self):
        return len(self.inner)

    def _iter_sorted(self, start):
        return self.inner.hashcodes(start)

    def flush(self):
        self.inner.flush()
