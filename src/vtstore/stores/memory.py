"""The memory store: a dict, for tests, scratch work and `-S memory:`."""

from __future__ import annotations

from collections.abc import Iterator

from vtstore.hashes import HashCode
from vtstore.stores.base import SortedKeys, Store


class MemoryStore(Store):
    """Blocks held in a dict; nothing survives `close`."""

    def __init__(self, name: str = "memory:", hashclass=None, readonly: bool = False):
        super().__init__(name=name, hashclass=hashclass, readonly=readonly)
        self._blocks: dict[HashCode, bytes] = {}
        self._keys = SortedKeys()

    def add_many(self, datas) -> list[HashCode]:
        """Store each of `datas` (see `Store.add_many`): one dict probe per block."""
        return self.add_many_reporting(datas)[0]

    def add_many_reporting(self, datas) -> tuple[list[HashCode], list[bool]]:
        """`add_many`, also saying for each block whether it was new."""
        self._check_writable()
        from_data = self.hashclass.from_data
        blocks = self._blocks
        out = []
        flags = []
        new = []
        for data in datas:
            h = from_data(data)
            fresh = h not in blocks
            if fresh:
                blocks[h] = data if type(data) is bytes else bytes(data)
                new.append(h)
            out.append(h)
            flags.append(fresh)
        self._keys.extend(new)
        return out, flags

    def _add_new(self, hashcode: HashCode, data) -> None:
        self._blocks[hashcode] = bytes(data)
        self._keys.add(hashcode)

    def _get(self, hashcode: HashCode) -> bytes | None:
        return self._blocks.get(hashcode)

    def _contains(self, hashcode: HashCode) -> bool:
        return hashcode in self._blocks

    def __len__(self) -> int:
        return len(self._blocks)

    def _iter_sorted(self, start: HashCode | None) -> Iterator[HashCode]:
        return self._keys.iter_from(start)

    def _close(self) -> None:
        self._blocks.clear()
        self._keys = SortedKeys()
