"""Replication between stores: tree sync (`vtstore.sync.tree`), whole-store
sync (`vtstore.sync.stores`), archives moving by state
(`vtstore.sync.archives`) and hash migration (`vtstore.sync.migrate`)."""

from vtstore.sync.tree import SyncError, SyncStats, TreeSync, sync_tree

__all__ = ["SyncError", "SyncStats", "TreeSync", "sync_tree"]
