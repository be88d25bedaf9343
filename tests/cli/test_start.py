"""Start-up: what `vt` imports before it runs a command.

Every short command (`vt --version`, `vt --help`, completion at each <Tab>, `vt
CMD --help`, a `vt serve -` at the far end of ssh) pays for each module imported
before its work starts.  These tests are not timed (timings are noisy here):
they run `vt` in a fresh interpreter and look at `sys.modules` afterwards, so a
module-level import that drags a store implementation, LMDB, zstd, asyncio or
the like into start-up fails here, whatever the machine's load.
bench/bench_start.py measures the times.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from vtstore.cli.main import COMMANDS

# Runs main(argv) in a fresh interpreter and writes sys.modules to a file, one a
# line (the probe itself imports nothing: no json here).
PROBE = r"""
import sys
out, argv = sys.argv[1], sys.argv[2:]
from vtstore.cli.main import main
try:
    main(argv)
except SystemExit:
    pass
with open(out, "w") as f:
    f.write("\n".join(sys.modules))
"""

# Builds the whole parser, every command registered (what `vt help CMD` and the
# manual check use).
FULL_PARSER = r"""
import sys
from vtstore.cli.main import build_parser
build_parser()
with open(sys.argv[1], "w") as f:
    f.write("\n".join(sys.modules))
"""

#: what `vt --version` and `vt --help` may import of vtstore
BARE = {"vtstore", "vtstore.cli", "vtstore.cli.main", "vtstore.errors"}

#: standard modules that cost milliseconds and no bare start needs
STDLIB_HEAVY = {
    "logging",
    "inspect",
    "dataclasses",
    "statistics",
    "asyncio",
    "concurrent.futures",
    "json",
    "pathlib",
    "shutil",
    "subprocess",
    "typing",
    "threading",
    "datetime",
    "uuid",
    "hashlib",
    "socket",
    "ssl",
    "tempfile",
}

#: third-party modules and vtstore layers no command's --help needs
HEAVY = {
    "lmdb",
    "zstandard",
    "cryptography",
    "blake3",
    "asyncio",
    "concurrent.futures",
    "ssl",
    "trio",
    "pyfuse3",
    "starlette",
    "uvicorn",
    "httpx",
    "obstore",
    "boto3",
    "vtstore._blake3",
    "vtstore.hashes",
    "vtstore.stores.base",
    "vtstore.stores.memory",
    "vtstore.stores.datadir",
    "vtstore.stores.index",
    "vtstore.stores.vtd",
    "vtstore.stores.writer",
    "vtstore.stores.spec",
    "vtstore.config",
    "vtstore.archive",
    "vtstore.chunking",
    "vtstore.tree",
    "vtstore.lifecycle",
    "vtstore.sync",
    "vtstore.http",
    "vtstore.fs",
    "vtstore.net",
    "vtstore.live",
    "vtstore.security",
    "vtstore.control",
}


#: what a command's --help may load besides, and why: scan's help lists the
#: format scanners by name, and vtstore.chunking loads the chunker with them
ALLOWED = {
    "scan": {"vtstore.chunking", "vtstore.blocks", "vtstore.hashes", "vtstore._blake3", "blake3"}
}

#: commands whose module (owned elsewhere) still imports an implementation at
#: load time; strict: the test says so when the import has moved
PENDING: dict[str, str] = {}


def modules_after(argv: list[str], tmp_path) -> set[str]:
    """The modules loaded after `vt ARGV` ran (in a fresh interpreter)."""
    out = tmp_path / "modules.txt"
    r = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *argv],
        capture_output=True,  # bytes: `vt cat` writes binary
        timeout=60,
    )
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return set(out.read_text().split("\n"))


def vtstore_modules(mods: set[str]) -> set[str]:
    return {m for m in mods if m == "vtstore" or m.startswith("vtstore.")}


#: `vt` alone also says where the default store is
WHERE = {"vtstore.config", "vtstore.config.paths"}


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["--version"], set()),
        (["--help"], set()),
        (["-q", "--version"], set()),
        (["-S", "/nowhere", "--help"], set()),
        ([], WHERE),
    ],
)
def test_version_and_help_import_no_command(argv, extra, tmp_path):
    """`vt --version` and `vt --help` need argparse and the command list only."""
    mods = modules_after(argv, tmp_path)
    assert vtstore_modules(mods) <= BARE | extra
    assert mods & STDLIB_HEAVY == set()


def test_completing_the_command_word_imports_no_command(tmp_path):
    """At `vt p<Tab>` the shell waits for this process: the command names are enough."""
    mods = modules_after(["__complete", "vt p"], tmp_path)
    assert vtstore_modules(mods) <= BARE | {"vtstore.cli.completion"}
    assert mods & STDLIB_HEAVY == set()


def test_completing_an_option_imports_that_command_only(tmp_path):
    """`vt cat --<Tab>` needs the options of cat, not the parsers of 36 other commands."""
    mods = modules_after(["__complete", "vt cat --"], tmp_path)
    commands = {f"vtstore.cli.{m}" for m, _, _ in COMMANDS}
    assert vtstore_modules(mods) & commands <= {"vtstore.cli.cat", "vtstore.cli.completion"}
    assert _heavy(mods) == set()


def _under(name: str, packages) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _heavy(mods: set[str], allowed=()) -> set[str]:
    """The modules of HEAVY (or below one) in `mods`, but for those `allowed`."""
    return {m for m in mods if _under(m, HEAVY) and not _under(m, allowed)}


def _command_params() -> list:
    return [
        pytest.param(
            cmd,
            marks=[pytest.mark.xfail(strict=True, reason=PENDING[cmd])] if cmd in PENDING else [],
        )
        for _, cmd, _ in COMMANDS
    ]


@pytest.mark.parametrize("cmd", _command_params())
def test_command_help_imports_no_implementation(cmd, tmp_path):
    """`vt CMD --help` registers CMD's options: no store, tree or network code."""
    mods = modules_after([cmd, "--help"], tmp_path)
    assert _heavy(mods, ALLOWED.get(cmd, ())) == set()


@pytest.mark.xfail(bool(PENDING), strict=True, reason="; ".join(PENDING.values()))
def test_full_parser_imports_no_implementation(tmp_path):
    """Every command's options (for `vt help CMD`, the manual), still no implementation."""
    out = tmp_path / "modules.txt"
    r = subprocess.run(
        [sys.executable, "-c", FULL_PARSER, str(out)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    allowed = set().union(*ALLOWED.values())
    assert _heavy(set(out.read_text().split("\n")), allowed) == set()


def _commands_of(parser) -> dict[str, str | None]:
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    helps = {a.dest: a.help for a in sub._choices_actions}
    return {name: helps.get(name) for name in sub.choices}


def test_bare_command_list_says_what_the_modules_register():
    """`vt --help` and an unknown word list the commands from COMMANDS and ALIASES,
    without importing the modules: the names, aliases and summaries must be the
    ones the modules register."""
    from vtstore.cli.main import build_parser

    full, bare = build_parser(), build_parser(only="")
    assert _commands_of(bare) == _commands_of(full)
    assert bare.format_help() == full.format_help()


def test_cat_of_a_block_loads_no_tree_archive_or_hashlib(tmp_path):
    """`vt -S DIR cat BLOCK` opens the store and reads one block: no tree (dirent, directory),
    archive or chunking code, no OpenSSL hashlib or blake3 package (a blake3
    store hashes with vtstore._blake3)."""
    store, data = tmp_path / "store", tmp_path / "data"
    data.write_bytes(bytes(range(256)) * 20)
    vt = [sys.executable, "-m", "vtstore.cli.main", "-S", str(store)]
    ref = subprocess.run([*vt, "save", str(data)], capture_output=True, text=True, check=True)
    ref = ref.stdout.strip()
    assert ref.startswith("B{")
    out = subprocess.run([*vt, "cat", ref], capture_output=True, check=True).stdout
    assert out == data.read_bytes()
    mods = modules_after(["-S", str(store), "cat", ref], tmp_path)
    lazy = {"hashlib", "blake3", "vtstore.tree", "vtstore.archive"}
    assert {m for m in mods if _under(m, lazy)} == set()
    assert {m for m in mods if _under(m, {"vtstore.chunking", "vtstore.sync", "asyncio"})} == set()
