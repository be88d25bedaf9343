"""Stores: mappings from hashcode to block data, and the store-spec parser."""

from vtstore.stores.base import Store
from vtstore.stores.memory import MemoryStore

__all__ = ["Store", "MemoryStore"]
