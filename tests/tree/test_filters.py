"""The rule engine (vtstore.tree.filters) against rsync itself.

Each case runs `rsync -r -n --out-format=%n RULES src/ dst/` on a generated tree
and imports the same tree through the filtered walker (`Importer(filters=...)`);
the sets of relative paths taken must be equal.  The rules are the examples of
rsync's manual (FILTER RULES, INCLUDE/EXCLUDE PATTERN RULES) and one case per
rule kind.  Then: per-directory `.vtignore` files (against rsync's dir-merge),
CACHEDIR.TAG, --exclude-if-present, --exclude-larger-than, the matcher's
linear time on hostile patterns, and its speed on 100,000 paths.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from vtstore.stores.memory import MemoryStore
from vtstore.tree.dir import walk
from vtstore.tree.filters import (
    _DFA,
    CACHEDIR_SIGNATURE,
    FilterError,
    Filters,
    Rule,
    _tokens,
    build_rules,
    compile_glob,
)
from vtstore.tree.fsimport import import_tree

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None, reason="needs rsync")

TREE = [
    "file.txt",
    "file.o",
    "core",
    "a/core",
    "a/b/core",
    "a/b/c/deep.txt",
    "a/b/c/deep.o",
    "a/x.txt",
    "foo/bar/baz.c",
    "foo/bar/qux.h",
    "foo/bar.c",
    "foo/x/bar/one.c",
    "sub/foo/bar/two.c",
    "some/path/this-file-is-found",
    "some/path/other",
    "some/this-file-will-not-be-found",
    "home/user/.cache/junk",
    "home/user/docs/cv.pdf",
    "home/user/docs/tmp/scratch",
    "home/other/notes",
    "tmp/one",
    "tmp/sub/two",
    "dir_name/inner/f",
    "dir_name/top",
    "x/dir_name/g",
    "weird [name]/f",
    "star*name",
    "q?mark",
    "back\\slash",
    "CVS/Entries",
    "a1.txt",
    "b2.txt",
    "Z9.txt",
    "node_modules/pkg/index.js",
    "src/node_modules/pkg2/index.js",
]
DIRS = ["emptydir", "a/emptysub", "core.d"]


def make_tree(root) -> None:
    for rel in TREE:
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(rel)
    for d in DIRS:
        os.makedirs(os.path.join(root, d), exist_ok=True)


def rsync_selects(root, args) -> set[str]:
    dst = str(root) + ".dst"
    out = subprocess.run(
        ["rsync", "-r", "-n", "--out-format=%n", *args, str(root) + "/", dst + "/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.rstrip("/") for line in out.splitlines() if line not in ("./", "")}


def vt_selects(root, filters: Filters) -> set[str]:
    store = MemoryStore()
    d, _ = import_tree(str(root), store, filters=filters)
    return {p for p, _ in walk(d, store) if p}


def rsync_args(specs) -> list[str]:
    flag = {
        "-": "--exclude",
        "+": "--include",
        "-from": "--exclude-from",
        "+from": "--include-from",
    }
    return [f"{flag[k]}={v}" for k, v in specs]


# (name, [(kind, value), ...]): rsync's own examples, and one case per rule kind
CASES = [
    ("name", [("-", "core")]),
    ("star-name", [("-", "*.o")]),
    ("anchored", [("-", "/core")]),
    ("anchored-dir", [("-", "/foo/bar/")]),
    ("dir-only", [("-", "core/")]),
    ("dir-only-wild", [("-", "*/")]),
    ("infix-slash", [("-", "foo/bar")]),
    ("infix-star", [("-", "foo/*/bar")]),
    ("double-star", [("-", "foo/**/bar")]),
    ("double-star-prefix", [("-", "**/bar")]),
    ("double-star-name", [("-", "**.c")]),
    ("trailing-double-star", [("-", "/home/user/**")]),
    ("dir-triple-star", [("+", "dir_name/***"), ("-", "*")]),
    ("anchored-star", [("-", "/tmp/*")]),
    ("question", [("-", "?1.txt")]),
    ("class", [("-", "[ab][0-9].txt")]),
    ("negated-class", [("-", "[!a]?.txt")]),
    ("posix-class", [("-", "[[:upper:]][[:digit:]].txt")]),
    ("escaped", [("-", "star\\*name"), ("-", "q\\?mark")]),
    ("literal-bracket", [("-", "weird [name]")]),
    ("literal-backslash", [("-", "back\\slash")]),
    # the manual: "+ */", "+ *.c", "- *": only .c files and the directories
    ("only-c", [("+", "*/"), ("+", "*.c"), ("-", "*")]),
    # the manual: "- *.o", "- /foo" style list
    ("o-and-foo", [("-", "*.o"), ("-", "/foo")]),
    # the manual: to take some/path/this-file-is-found, include each parent
    (
        "include-parents",
        [
            ("+", "/some/"),
            ("+", "/some/path/"),
            ("+", "/some/path/this-file-is-found"),
            ("+", "/file.txt"),
            ("-", "*"),
        ],
    ),
    ("exclude-parent-wins", [("+", "some/path/this-file-is-found"), ("-", "/some/")]),
    ("first-match-wins", [("+", "a/b/core"), ("-", "core")]),
    ("first-match-wins-2", [("-", "core"), ("+", "a/b/core")]),
    ("home-cache", [("-", "/home/*/.cache/"), ("-", "tmp/")]),
    ("node-modules", [("-", "node_modules/")]),
    ("clear", [("-", "*.txt"), ("-", "!"), ("-", "*.o")]),
    ("plus-minus-prefix", [("-", "+ core"), ("+", "- *.txt")]),
    ("deep-anchored-double", [("-", "/a/**/core")]),
    ("star-only-top", [("+", "/*"), ("-", "*")]),
    # the manual's anchored forms: "- /foo/*/bar", "- /foo/**/bar"
    ("anchored-infix-star", [("-", "/foo/*/bar")]),
    ("anchored-infix-double", [("-", "/foo/**/bar")]),
    # one user's home only, the rest of /home left out
    ("one-home", [("+", "/home/"), ("+", "/home/user/"), ("-", "/home/*")]),
    ("dir-contents-only", [("-", "/some/*"), ("+", "*/")]),
    ("this-file-will-not-be-found", [("+", "/some/path/this-file-is-found"), ("-", "*")]),
]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("filters") / "src"
    make_tree(root)
    return root


@pytest.mark.parametrize("name,specs", CASES, ids=[c[0] for c in CASES])
def test_same_selection_as_rsync(tree, name, specs):
    want = rsync_selects(tree, rsync_args(specs))
    got = vt_selects(tree, Filters(build_rules(specs)))
    assert got == want, (sorted(got - want), sorted(want - got))


def test_rule_files_same_as_rsync(tree, tmp_path):
    ex = tmp_path / "ex"
    ex.write_text("# a comment\n; another\n\n*.o\n+ a/b/core\ncore\n/tmp/\n")
    inc = tmp_path / "inc"
    inc.write_text("*.c\n*/\n- *\n")
    for specs in (
        [("-from", str(ex))],
        [("+from", str(inc))],
        [("-from", str(ex)), ("-", "*.txt")],
    ):
        want = rsync_selects(tree, rsync_args(specs))
        assert vt_selects(tree, Filters(build_rules(specs))) == want, specs


def test_vtignore_nesting_same_as_rsync_dir_merge(tmp_path):
    root = tmp_path / "src"
    make_tree(root)
    (root / ".vtignore").write_text("- *.o\n- /tmp/\n")
    (root / "a" / ".vtignore").write_text("+ /b/c/deep.o\n- /core\n- x.txt\n")
    (root / "a" / "b" / ".vtignore").write_text("- c/deep.txt\n")
    (root / "foo" / ".vtignore").write_text("!\n- *.h\n")  # "!" drops inherited rules
    (root / "foo" / "bar" / "keep.o").write_text("o")
    (root / "sub" / ".vtignore").write_text("- /foo/bar/\n")
    for cmd in ([], [("-", "/home/")]):
        want = rsync_selects(root, [*rsync_args(cmd), "--filter=: .vtignore"])
        got = vt_selects(root, Filters(build_rules(cmd), per_dir=".vtignore"))
        assert got == want, (sorted(got - want), sorted(want - got))
    assert "a/b/c/deep.o" in want and "a/core" not in want and "foo/bar/keep.o" in want


def test_bare_vtignore_lines_are_excludes(tmp_path):
    root = tmp_path / "src"
    make_tree(root)
    (root / "a" / ".vtignore").write_text("core\n*.txt\n")
    got = vt_selects(root, Filters(per_dir=".vtignore"))
    assert "a/core" not in got and "a/b/core" not in got and "a/x.txt" not in got
    assert "core" in got and "file.txt" in got and "a/.vtignore" in got


def test_bad_vtignore_is_one_error_not_a_crash(tmp_path):
    root = tmp_path / "src"
    make_tree(root)
    (root / "a" / ".vtignore").write_text("- /\n")
    store = MemoryStore()
    d, stats = import_tree(str(root), store, filters=Filters(per_dir=".vtignore"))
    assert len(stats.errors) == 1 and ".vtignore line 1" in stats.errors[0]


def test_exclude_caches_keeps_the_tag(tmp_path):
    root = tmp_path / "src"
    make_tree(root)
    cache = root / "home" / "user" / ".cache"
    (cache / "CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE + b"\n# a cache\n")
    (cache / "sub").mkdir()
    (cache / "sub" / "f").write_text("f")
    fake = root / "tmp"  # a tag without the signature is no cache tag
    (fake / "CACHEDIR.TAG").write_text("hello")
    got = vt_selects(root, Filters(exclude_caches=True))
    below = {p for p in got if p.startswith("home/user/.cache/")}
    assert below == {"home/user/.cache/CACHEDIR.TAG"}
    assert "home/user/.cache" in got and "tmp/one" in got and "tmp/CACHEDIR.TAG" in got


def test_exclude_if_present(tmp_path):
    root = tmp_path / "src"
    make_tree(root)
    (root / "a" / "b" / ".nobackup").write_text("")
    got = vt_selects(root, Filters(exclude_if_present=[".nobackup"]))
    assert {p for p in got if p.startswith("a/b/")} == {"a/b/.nobackup"}
    assert "a/core" in got


def test_exclude_larger_than(tmp_path):
    root = tmp_path / "src"
    make_tree(root)
    (root / "big").write_bytes(b"x" * 1001)
    (root / "edge").write_bytes(b"x" * 1000)
    got = vt_selects(root, Filters(build_rules([("+", "big")]), larger_than=1000))
    assert "big" not in got and "edge" in got and "a/b" in got


def test_bad_patterns_are_errors():
    for bad in ["", "/", "+ ", "- "]:
        with pytest.raises(FilterError):
            build_rules([("-", bad)])


# -- the matcher --------------------------------------------------------------


def _reference(pattern: str, text: str) -> bool:
    return _DFA(_tokens(pattern)).fullmatch(text)


_ALPHA = "ab/*?[]!-"


@settings(max_examples=600, deadline=None)
@given(hst.text(alphabet=_ALPHA, min_size=1, max_size=10), hst.text(alphabet="ab/c", max_size=12))
def test_regex_matcher_agrees_with_the_dfa(pattern, text):
    """The fast (regex) translation and the plain automaton agree on any glob."""
    assert compile_glob(pattern)(text) == _reference(pattern, text) or not any(
        c in pattern for c in "*?["
    )


@pytest.mark.parametrize(
    "pattern",
    ["*a*a*a*a*a*a*a*a*b", "**a*a*a*a*a*a*b", "**a**a**a**a**a**a**b", "*/**a*a*a*b/*"],
)
def test_hostile_pattern_on_a_long_name_is_linear(pattern):
    r = Rule.make(False, pattern)
    name = "a" * 4000
    path = "/".join(["a" * 250] * 16)
    t = time.perf_counter()
    for _ in range(3):
        assert not r.matches(name, name, False)
        assert not r.matches(path, path.rsplit("/", 1)[-1], False)
    assert time.perf_counter() - t < 1.0  # noisy machine: catastrophic would be hours


def test_speed_on_100k_paths():
    rules = build_rules(
        [
            ("-", "*.o"),
            ("-", "/home/*/.cache/"),
            ("-", "node_modules/"),
            ("-", "**/build/**/tmp"),
            ("+", "src/**.c"),
            ("-", "foo/*/bar"),
            ("-", "[Tt]humbs.db"),
            ("-", "*~"),
        ]
    )
    flt = Filters(rules)
    scope = flt.enter(None, "", [])
    paths = [f"d{i % 97}/sub{i % 13}/deeper/file{i}.txt" for i in range(100_000)]
    t = time.perf_counter()
    n = sum(flt.excluded(scope, p, p.rsplit("/", 1)[1], False) for p in paths)
    took = time.perf_counter() - t
    print(f"100k paths x 8 rules: {took:.2f}s")
    assert n == 0 and took < 10  # about 0.3 s unloaded; 2 cores shared by 7
