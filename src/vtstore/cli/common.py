"""Helpers shared by the `vt` subcommands: opening the store, progress bars."""

from __future__ import annotations

import sys

from vtstore.stores.base import Store


def open_store(args, readonly: bool = False) -> Store:
    """Open the store the command line names (-S, $VT_STORE, config, default datadir).

    The result is a context manager; leaving it flushes and closes the store.
    """
    from vtstore.stores.spec import open_store_from_args

    return open_store_from_args(args, readonly=readonly)


def show_progress(args) -> bool:
    """Whether to draw progress bars: on a terminal and not `-q`."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()
