"""`vt`: the command line entry point.

Each subcommand lives in its own module under `vtstore.cli`, which defines
`register(subparsers)` (adding its parser and `set_defaults(func=run)`) and
`run(args) -> int`.  Commands planned but not built yet are registered here as
placeholders that say so and exit 2.

Start-up time matters (completion runs `vt` at each <Tab>, scripts run it in
loops): only the module of the command about to run is imported, and command
modules import their implementation inside `run`.  tests/cli/test_start.py
checks what a bare start imports; bench/bench_start.py times it.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from vtstore import __version__
from vtstore.errors import VTError

# (module, command, summary) in the order `vt --help` lists them; a module that
# does not exist yet makes the command a placeholder.  The summary and ALIASES
# are what the module registers (tests/cli/test_start.py checks): `vt --help`
# lists the commands without importing their modules.
COMMANDS: list[tuple[str, str, str]] = [
    ("init", "init", "create the default configuration and datadir"),
    ("config", "config", "print the effective configuration"),
    ("info", "info", "describe a store"),
    ("save", "save", "store files or a tree, print a block or dirent ref"),
    ("cat", "cat", "write the content of a ref to stdout"),
    ("ls", "ls", "list a directory ref or archive"),
    ("pack", "pack", "store DIR and append its state to DIR.vt"),
    ("watch", "watch", "follow DIR and record a new state after each change (continuous backup)"),
    ("shadow", "shadow", "keep DIR equal to an archive's latest state, both ways"),
    ("unpack", "unpack", "restore the latest state of an archive"),
    ("import_", "import", "merge a tree into an archive's latest state"),
    ("export", "export", "write a tree as a tar stream"),
    ("ar", "ar", "create, list and extract self-contained .vtd bundles"),
    ("log", "log", "show the history of an archive"),
    ("forget", "forget", "drop the states a retention policy does not keep"),
    ("gc", "gc", "reclaim the space of blocks no state needs any more"),
    ("snapshots", "snapshots", "list the archives of a store and their states"),
    ("diff", "diff", "show what changed between two states or trees"),
    ("merge", "merge", "merge two states or trees three-way"),
    ("mount", "mount", "mount an archive or ref with FUSE"),
    ("umount", "umount", "unmount a vt mount"),
    ("serve", "serve", "serve stores over TCP, a UNIX socket or stdio"),
    ("key", "key", "create, list and remove block server keys"),
    ("crypt", "crypt", "make, re-wrap or show the key of a store encrypted at rest"),
    ("httpd", "httpd", "serve blocks and trees over HTTP"),
    ("push", "push", "copy blocks, trees or archives to another store"),
    ("pull", "pull", "copy blocks, trees or archives from another store"),
    ("fsck", "fsck", "check a store, a ref or an archive"),
    ("reindex", "reindex", "rebuild a datadir's index from its data files"),
    ("scan", "scan", "show how files would be cut into blocks"),
    ("ftp", "ftp", "interactive shell over a tree"),
    ("ctl", "ctl", "act on a running mount (bind, clone, merge, sync, stats)"),
    ("publish", "publish", "store a path and print an x-vt: URI"),
    ("migrate", "migrate", "copy trees into a store of another hash class"),
    ("benchmark", "benchmark", "measure chunking, hashing and store speed"),
    ("help", "help", "explain a topic (stores, selectors, filters, ...) or a command"),
    ("completion", "completion", "print a shell completion script (bash or zsh)"),
]

#: other names of a command (as its module registers them)
ALIASES: dict[str, tuple[str, ...]] = {"snapshots": ("archives",)}


def _placeholder(name: str):
    def run(args) -> int:
        print(f"vt {name}: not implemented yet", file=sys.stderr)
        return 2

    return run


#: global options that take a value (the word after them is not the command)
GLOBAL_WITH_VALUE = frozenset(
    {"-S", "--store", "-C", "--cache", "-c", "--config", "-H", "--hashclass", "--key-file"}
)


def command_of(argv: list[str]) -> str | None:
    """The command word of a `vt` command line, if there is one."""
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a in GLOBAL_WITH_VALUE:
            skip = True
        elif a == "--":
            return None
        elif not a.startswith("-"):
            return a
    return None


def _columns() -> int:
    """The width argparse would take from `shutil.get_terminal_size()`: $COLUMNS,
    else the terminal's, else 80; without importing shutil and the compression
    modules it brings (milliseconds of every `vt --help` and `vt --version`)."""
    try:
        n = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        n = 0
    if n <= 0:
        try:
            n = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            n = 0
    return n or 80


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, sized by `_columns`."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        width = _columns() - 2 if width is None else width
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    """The parser of `vt` and (through `add_parser`) of each command: argparse's,
    with `_HelpFormatter` unless a command asks for another formatter."""

    def __init__(self, *args, formatter_class=_HelpFormatter, **kw):
        super().__init__(*args, formatter_class=formatter_class, **kw)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `vt` argument parser.

    With `only` (the command about to run), only that command's module is
    imported and registered; the others get a bare entry (name and summary) that
    is never parsed.  `only=""` registers every command bare: enough for
    `vt --version`, `vt --help`, an unknown word.  `only=None`: every command
    module, for `vt help CMD` and the manual."""
    known = {cmd for _, cmd, _ in COMMANDS}
    only = next((c for c, names in ALIASES.items() if only in names), only)
    if only is not None and only not in known:
        only = ""
    p = _Parser(
        prog="vt",
        description=(
            "vtstore: a content-hash-addressed data store with a filesystem layer."
            " Data is cut into blocks by a format-aware content-defined chunker and"
            " each block is stored once under its hash."
        ),
        epilog=(
            "The store is chosen by -S, else $VT_STORE, else the [default] clause of"
            " ~/.vtrc, else a datadir at $VT_DIR or ~/.local/share/vt.  Store specs:"
            " /path/to/datadir, [clause], file:x.vtd, memory:, tcp:host:port,"
            " unix:/path.sock, '|command', http://host:port/, s3://bucket/prefix,"
            " proxy(save=...,read=...).  Run 'vt COMMAND --help' for a command."
        ),
    )
    p.add_argument("--version", action="version", version=f"vt {__version__}")
    p.add_argument(
        "-S", "--store", dest="store_spec", metavar="STORE", help="the store to use (a store spec)"
    )
    p.add_argument(
        "-C", "--cache", dest="cache_spec", metavar="STORE", help="a cache store in front of -S"
    )
    p.add_argument(
        "-c", "--config", dest="config_path", metavar="FILE", help="config file (default ~/.vtrc)"
    )
    p.add_argument(
        "-H",
        "--hashclass",
        dest="hashclass",
        metavar="NAME",
        help="hash class for new stores (default $VT_HASHCLASS or blake3)",
    )
    p.add_argument(
        "--key-file",
        dest="key_file",
        metavar="FILE",
        help="the key for authenticating to tcp:/tls: block servers (default $VT_KEY_FILE;"
        " made by 'vt key new')",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars or chatter")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more detail; -vv debug")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for modname, cmd, summary in COMMANDS:
        if only is not None and cmd != only:
            sub.add_parser(cmd, help=summary, aliases=ALIASES.get(cmd, ()), add_help=False)
            continue
        try:
            mod = importlib.import_module(f"vtstore.cli.{modname}")
        except ModuleNotFoundError as e:
            if e.name != f"vtstore.cli.{modname}":
                raise
            sp = sub.add_parser(cmd, help=f"{summary} (not implemented yet)", description=summary)
            sp.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            sp.set_defaults(func=_placeholder(cmd))
        else:
            mod.register(sub)
    return p


def _empty_positional(parser: argparse.ArgumentParser, args) -> str | None:
    """The metavar of a positional argument of the command given as "", if any."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    cmd = sub.choices.get(args.command)
    for action in cmd._actions if cmd is not None else ():
        if action.option_strings or action.dest == "rest":
            continue
        value = getattr(args, action.dest, None)
        values = value if isinstance(value, list) else [value]
        if any(v == "" for v in values):
            return action.metavar or action.dest
    return None


def main(argv: list[str] | None = None) -> int:
    """Run `vt` with `argv`; return the exit code (also used by the console script)."""
    _guard_closed_stdio()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["__complete"]:  # the shell completion scripts ask here
        from vtstore.cli.completion import complete_main

        return complete_main(argv[1:])
    if not argv:
        # an orientation for a person, still a usage error (2) for a script
        _orientation()
        return 2
    parser = build_parser(only=command_of(argv) or "")
    args = parser.parse_args(argv)
    import logging  # not before: `vt --version` and `vt --help` exit in parse_args

    level = logging.WARNING
    if args.verbose >= 2:
        level = logging.DEBUG
    elif args.verbose == 1:
        level = logging.INFO
    elif args.quiet:
        level = logging.ERROR
    logging.basicConfig(level=level, format="vt: %(message)s")
    if args.hashclass is not None and not args.hashclass.strip():
        parser.error("-H: an empty hash class name")  # not silently the default
    if args.hashclass:
        os.environ["VT_HASHCLASS"] = args.hashclass
    if args.key_file is not None:
        if not args.key_file.strip():
            parser.error("--key-file: an empty file name")
        os.environ["VT_KEY_FILE"] = args.key_file
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    empty = _empty_positional(parser, args)
    if empty:
        # "" is no path, ref or mountpoint (and "" as a path would mean ".")
        print(f"vt {args.command}: {empty}: an empty argument", file=sys.stderr)
        return 2
    try:
        rc = int(args.func(args) or 0)
        # flush here, not at interpreter exit, so a reader that went away is seen
        # as a BrokenPipeError below and not as "Exception ignored ..." and exit 120
        sys.stdout.flush()
    except BrokenPipeError as e:
        # first: it is an OSError too.  If the reader of stdout went away (vt cat |
        # head), exit as a process killed by SIGPIPE would, quietly; a pipe to
        # anything else (a '|command' store) is an error like any other
        if _stdout_gone():
            return _broken_pipe()
        _explain(args, e)
        print(f"vt {args.command}: {_oserror_text(e)}", file=sys.stderr)
        return 1
    except VTError as e:
        if _caused_by_broken_pipe(e) and _stdout_gone():
            return _broken_pipe()
        _explain(args, e)
        print(f"vt {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        # the environment refused something (a missing directory, a full disk,
        # no permission): say what and where, as one line
        _explain(args, e)
        print(f"vt {args.command}: {_oserror_text(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"vt {args.command}: interrupted", file=sys.stderr)
        return 130
    return rc


def _orientation() -> None:
    """What `vt` with no arguments prints: where to start, and where the store is."""
    from vtstore.config.paths import default_basedir

    where = os.environ.get("VT_STORE") or default_basedir()
    print(
        "vt: a content-addressed store for files and directory trees.\n"
        "\n"
        "  vt pack DIR              back up DIR (its history goes to DIR.vt)\n"
        "  vt log DIR.vt            list the states backed up\n"
        "  vt ls DIR.vt/path        list a directory of the latest state\n"
        "  vt unpack DIR.vt OUT     restore the latest state into OUT\n"
        "  vt mount DIR.vt MNT      browse and change it as a filesystem\n"
        "\n"
        f"The store: {where}\n"
        "(-S STORE, $VT_STORE or ~/.vtrc choose another one).\n"
        "vt --help lists all commands; vt help TOPIC explains stores, selectors,\n"
        "filters, config, environment; vt help --man shows the manual."
    )


class _ClosedStdout:
    """Standard output when vt was started with it closed (`vt cat REF >&-`):
    writing is an error, as `cat` says "write error: Bad file descriptor"."""

    def write(self, data):
        raise OSError(errno.EBADF, "standard output is closed")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return 1

    @property
    def buffer(self):
        return self


def _guard_closed_stdio() -> None:
    """Keep descriptors 0-2 taken (by /dev/null) when vt starts with one closed,
    so that no data file or socket opened later gets the number 1 and receives
    what is printed; and make writing to a closed stdout a plain error."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            nul = os.open(os.devnull, os.O_RDWR)
            if nul != fd:
                os.dup2(nul, fd)
                os.close(nul)
            if fd == 1:
                sys.stdout = _ClosedStdout()
            elif fd == 0 and sys.stdin is None:
                sys.stdin = open(0, closefd=False)  # noqa: SIM115 - for the whole run
            elif fd == 2 and sys.stderr is None:
                # print(file=sys.stderr) with stderr None would write to stdout
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - for the whole run


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `yes | head`


def _broken_pipe() -> int:
    """Point stdout at /dev/null so the interpreter's final flush of what is still
    buffered stays quiet, and return the exit code of a broken pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout already closed or replaced: nothing to flush
        pass
    return EXIT_BROKEN_PIPE


def _stdout_gone() -> bool:
    """Whether stdout is a pipe or socket whose reading end is closed (poll says
    POLLERR or POLLHUP for the writing end then; a file or terminal never does)."""
    import select

    try:
        p = select.poll()
        p.register(sys.stdout.fileno(), select.POLLOUT)
        events = p.poll(0)
    except (OSError, ValueError):  # stdout closed or not a real file
        return True
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in events)


def _caused_by_broken_pipe(e: BaseException) -> bool:
    """Whether a VTError wraps a broken pipe (a command that turned it into its own error)."""
    seen = 0
    while e is not None and seen < 16:
        if isinstance(e, BrokenPipeError):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def _explain(args, e: BaseException) -> None:
    """With `-vv` (debug), log the traceback of an expected error.  An expected
    error (bad input, a refusing environment) is not a bug: plain `-v` shows just
    its one line, like no `-v` at all."""
    if args.verbose >= 2:
        import logging

        logging.getLogger("vtstore").debug("%s: %s", type(e).__name__, e, exc_info=e)


def _oserror_text(e: OSError) -> str:
    where = e.filename if e.filename is not None else ""
    if isinstance(where, bytes):
        where = os.fsdecode(where)
    what = e.strerror or str(e)
    return f"{where + ': ' if where else ''}{what}"


if __name__ == "__main__":
    sys.exit(main())
