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


def progress_bar(args, total: int | None = None, desc: str = "", unit: str = "B"):
    """A tqdm bar on stderr, drawn only when `show_progress(args)`; use it as a
    context manager and call `.update(n)`."""
    if not show_progress(args):
        return NoBar()  # and no tqdm import (20 ms, most of it importlib.metadata)
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit == "B",
        unit_divisor=1024 if unit == "B" else 1000,
        file=sys.stderr,
        disable=not show_progress(args),
        leave=False,
        dynamic_ncols=True,
    )


class NoBar:
    """The progress bar of `-q` or a pipe: does nothing."""

    disable = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int = 1) -> None:
        """Nothing to draw."""

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Nothing to draw."""

    def close(self) -> None:
        """Nothing to close."""


def print_lines(lines, limit: int = 200, file=None) -> None:
    """Print `lines`, eliding the middle of very long lists."""
    file = file or sys.stdout
    lines = list(lines)
    if len(lines) > limit:
        head = lines[: limit - 1]
        print("\n".join(head), file=file)
        print(f"... {len(lines) - limit} more lines ...", file=file)
        print(lines[-1], file=file)
    elif lines:
        print("\n".join(lines), file=file)
