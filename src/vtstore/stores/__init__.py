"""Stores: mappings from hashcode to block data, and the store-spec parser.

`Store` is imported eagerly; the rest on first use (so that importing the
interface does not load LMDB or zstd): `MemoryStore`, `DataDir`, `FileStore`,
`ProxyStore`, `CacheStore`, `LRUMemoryStore`, `ProgressStore`,
`open_store_spec`, `parse_store_spec`.  See docs/STORES.md.
"""

from vtstore.stores.base import Store

_LAZY = {
    "MemoryStore": "vtstore.stores.memory",
    "DataDir": "vtstore.stores.datadir",
    "FileStore": "vtstore.stores.filestore",
    "ProxyStore": "vtstore.stores.proxy",
    "CacheStore": "vtstore.stores.cache",
    "LRUMemoryStore": "vtstore.stores.cache",
    "ProgressStore": "vtstore.stores.progress",
    "open_store_spec": "vtstore.stores.spec",
    "parse_store_spec": "vtstore.stores.spec",
}

__all__ = ["Store", *_LAZY]


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(mod), name)
