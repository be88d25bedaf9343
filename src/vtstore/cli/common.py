"""Helpers shared by the `vt` subcommands: opening the store, progress bars,
exclude/include options."""

from __future__ import annotations

import argparse
import sys

TYPE_CHECKING = False  # not typing's: importing typing costs milliseconds
if TYPE_CHECKING:  # every command imports this module: no store code at start-up
    from vtstore.stores.base import Store


class CommandLog:
    """`logging.getLogger(name)`, looked up at the first message: a command
    module keeps its module-level `log` without importing logging (and the
    traceback, threading and string modules it brings) when only its parser is
    needed, for `vt CMD --help` or completion.  `main` imports and configures
    logging before a command runs."""

    def __init__(self, name: str):
        self.name = name

    def __getattr__(self, attr: str):
        import logging

        return getattr(logging.getLogger(self.name), attr)


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


class _RuleOption(argparse.Action):
    """--exclude, --include and their -from forms, kept in command-line order
    (the first matching rule wins, so the order is the meaning)."""

    def __call__(self, parser, namespace, values, option_string=None):
        specs = list(getattr(namespace, "filter_specs", None) or [])
        specs.append((self.const, values))
        namespace.filter_specs = specs


def add_filter_options(p, source: bool = True) -> None:
    """The exclude/include options of a command (docs/FILTERS.md).

    `source`: the command walks a real tree (pack, save, import, mount), so the
    per-directory rule files, cache tags and vt's own files count too; a
    restore (unpack, export) gets the rules and --exclude-larger-than only.
    """
    g = p.add_argument_group("exclude and include rules (rsync's; see docs/FILTERS.md)")
    from_file = "from FILE, one a line ('+ P'/'- P' say which; # comments)"
    for opt, kind, metavar, what in (
        ("--exclude", "-", "PATTERN", "leave out what PATTERN matches"),
        ("--include", "+", "PATTERN", "take what PATTERN matches though a later rule excludes it"),
        ("--exclude-from", "-from", "FILE", f"read exclude patterns {from_file}"),
        ("--include-from", "+from", "FILE", f"read include patterns {from_file}"),
    ):
        g.add_argument(
            opt,
            metavar=metavar,
            dest="filter_specs",
            action=_RuleOption,
            const=kind,
            help=f"{what} (repeatable; the first matching rule wins)",
        )
    g.add_argument(
        "--exclude-larger-than",
        metavar="SIZE",
        help="leave out regular files of more than SIZE bytes (suffixes K, M, G, T)",
    )
    if not source:
        return
    g.add_argument(
        "--exclude-caches",
        action="store_true",
        help="keep only the CACHEDIR.TAG of directories it marks as caches",
    )
    g.add_argument(
        "--exclude-if-present",
        metavar="NAME",
        action="append",
        default=[],
        help="keep only the file NAME of directories holding one (repeatable)",
    )
    g.add_argument(
        "--vtignore",
        metavar="NAME",
        default=None,
        help="the per-directory rule file (default .vtignore; '' reads none)",
    )
    g.add_argument(
        "--no-default-excludes",
        action="store_true",
        help="store vt's own files too (its datadirs, cache and archives, left out by default)",
    )


def filters_from_args(
    args, store=None, archive_path: str | None = None, config_rules: bool | None = None
):
    """The `Filters` of a command line made by `add_filter_options`, with the
    `.vtrc` rules (after the command line's) for a source walk or when
    `config_rules`; None when nothing can be excluded."""
    from vtstore.cli.unpack import parse_size
    from vtstore.tree.filters import VTIGNORE, Filters, build_rules

    specs = list(getattr(args, "filter_specs", None) or [])
    source = hasattr(args, "exclude_caches")
    config = None
    if source if config_rules is None else config_rules:
        from vtstore.config import load_config

        config = load_config(getattr(args, "config_path", None))
        specs += config.filter_specs()
    larger = args.exclude_larger_than
    flt = Filters(
        build_rules(specs),
        larger_than=parse_size(larger) if larger is not None else None,
    )
    if source:
        flt.per_dir = VTIGNORE if args.vtignore is None else (args.vtignore or None)
        flt.exclude_caches = args.exclude_caches
        flt.exclude_if_present = list(args.exclude_if_present)
        if not args.no_default_excludes:
            flt.skip = own_files(store, archive_path, str(config.basedir))
    return flt if flt.active else None


def own_files(store, archive_path: str | None = None, basedir: str | None = None):
    """The `OwnFiles` of a walk storing into `store`: vt's base directory (the
    default datadir) and cache, the store, the archive being written and the
    store's archives."""
    from vtstore.archive import store_identity
    from vtstore.config.loader import default_basedir, default_cachedir
    from vtstore.tree.filters import OwnFiles

    paths = [basedir or default_basedir(), default_basedir(), default_cachedir()]
    for s in (store, getattr(store, "inner", None), getattr(store, "backend", None)):
        if getattr(s, "path", None) is not None:
            paths.append(str(s.path))
    if archive_path:
        paths.append(archive_path)
    return OwnFiles(paths, store_identity(store) if store is not None else None)
