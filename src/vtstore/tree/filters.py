"""Exclude and include rules with rsync's filter semantics (docs/FILTERS.md).

A `Filters` holds an ordered list of rules (`--exclude`, `--include`,
`--exclude-from`, `--include-from`, a `.vtrc` key), the name of per-directory
rule files (`.vtignore`, read like rsync's `dir-merge`), and the other
exclusions (`--exclude-caches`, `--exclude-if-present`,
`--exclude-larger-than`, vt's own files).  A tree walker asks it, directory by
directory: `enter()` a directory (reading its `.vtignore`), then `excluded()`
for each entry; an excluded directory is not descended into.

Patterns are rsync's: `*` does not cross `/`, `**` does, `?`, `[...]`; a
leading `/` anchors at the root of the walk (or of the directory holding the
rule file); a trailing `/` matches only directories; a pattern with a `/`
inside is matched against the end of the relative path, otherwise against the
final name; the first matching rule wins; nothing matching means included.

Matching is linear in the path for a fixed pattern: a pattern is compiled to a
regular expression whose non-crossing `*` are atomic groups (correct because a
non-crossing star's leftmost match is always a possible one), and a pattern
with two or more `**` runs is matched by a lazily built DFA instead, so no
hostile pattern can make the matcher backtrack exponentially.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from vtstore.errors import VTError

#: the per-directory rule file read in every directory unless told otherwise
VTIGNORE = ".vtignore"
#: https://bford.info/cachedir/ : a cache directory's tag starts with this
CACHEDIR_TAG = "CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


class FilterError(VTError):
    """A rule that cannot be parsed, or a rule file that cannot be read."""


# -- glob patterns ------------------------------------------------------------

_CLASSES = {
    "alnum": "a-zA-Z0-9",
    "alpha": "a-zA-Z",
    "blank": " \\t",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": " \\t\\n\\r\\f\\v",
    "upper": "A-Z",
    "xdigit": "0-9A-Fa-f",
}


def _tokens(pattern: str) -> list:
    """The pattern as tokens: ("lit", c), ("?",), ("cls", regex-set), ("*",), ("**",).

    A run of three or more stars is `**` (rsync's `***` suffix is handled by
    the rule).  A backslash quotes the next character.
    """
    out: list = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            out.append(("lit", pattern[i + 1]))
            i += 2
        elif c == "*":
            j = i
            while j < n and pattern[j] == "*":
                j += 1
            out.append(("**",) if j - i >= 2 else ("*",))
            i = j
        elif c == "?":
            out.append(("?",))
            i += 1
        elif c == "[":
            cls, j = _bracket(pattern, i)
            if cls is None:
                out.append(("lit", "["))
                i += 1
            else:
                out.append(("cls", cls))
                i = j
        else:
            out.append(("lit", c))
            i += 1
    return out


def _bracket(p: str, i: int) -> tuple[str | None, int]:
    """A `[...]` at `p[i]` as the inside of a regex set, and the index after it."""
    j = i + 1
    neg = j < len(p) and p[j] in "!^"
    if neg:
        j += 1
    parts: list[str] = []
    first = True
    while j < len(p):
        c = p[j]
        if c == "]" and not first:
            body = "".join(parts)
            # a bracket never matches "/": rsync's wildmatch refuses it
            return ("^/" + body if neg else body) if (body or neg) else None, j + 1
        first = False
        if c == "[" and p.startswith("[:", j):
            k = p.find(":]", j + 2)
            name = p[j + 2 : k] if k > 0 else None
            if name in _CLASSES:
                parts.append(_CLASSES[name])
                j = k + 2
                continue
        if c == "\\" and j + 1 < len(p):
            j += 1
            c = p[j]
        if j + 2 < len(p) and p[j + 1] == "-" and p[j + 2] != "]":
            hi = p[j + 2]
            if hi == "\\" and j + 3 < len(p):
                hi = p[j + 3]
                j += 1
            if hi >= c:
                parts.append(re.escape(c) + "-" + re.escape(hi))
            j += 3
            continue
        parts.append(re.escape(c))
        j += 1
    return None, i + 1  # no closing bracket: a literal "["


def _regex(tokens: list) -> str:
    """The regular expression of `tokens`, for fullmatch.

    Each non-crossing `*` together with the literal run after it is an atomic
    group `(?>[^/]*?RUN)`: its leftmost match is always one a full match can
    use, since the next star absorbs the rest of the component (and a run with
    a `/` has one place only).  The last star before the end stays greedy.
    """
    out: list[str] = []
    i, n = 0, len(tokens)
    while i < n:
        t = tokens[i]
        if t[0] == "*":
            j = i + 1
            run: list[str] = []
            while j < n and tokens[j][0] not in ("*", "**"):
                run.append(_one(tokens[j]))
                j += 1
            if j < n:
                out.append("(?>[^/]*?" + "".join(run) + ")")
            else:
                out.append("[^/]*" + "".join(run))
            i = j
        elif t[0] == "**":
            out.append(".*")
            i += 1
        else:
            out.append(_one(t))
            i += 1
    return "".join(out)


def _one(t) -> str:
    if t[0] == "lit":
        return re.escape(t[1])
    if t[0] == "?":
        return "[^/]"
    return "[" + t[1] + "]"


class _DFA:
    """A glob as a lazily built DFA over pattern positions: linear time for any
    pattern, used for those a regex could backtrack on (two or more `**`)."""

    def __init__(self, tokens: list):
        self.tokens = tokens
        self.n = len(tokens)
        self.sets = [re.compile("[" + t[1] + "]") if t[0] == "cls" else None for t in tokens]
        self.start = self._closure({0})
        self.trans: dict = {}

    def _closure(self, states) -> frozenset:
        out = set()
        for i in states:
            while i < self.n and self.tokens[i][0] in ("*", "**"):
                out.add(i)
                i += 1
            out.add(i)
        return frozenset(out)

    def _step(self, states: frozenset, c: str) -> frozenset:
        nxt = set()
        for i in states:
            if i == self.n:
                continue
            t = self.tokens[i]
            k = t[0]
            if k == "**" or (k == "*" and c != "/"):
                nxt.add(i)
            elif (
                (k == "lit" and t[1] == c)
                or (k == "?" and c != "/")
                or (k == "cls" and self.sets[i].fullmatch(c))
            ):
                nxt.add(i + 1)
        return self._closure(nxt)

    def fullmatch(self, text: str) -> bool:
        """Whether the whole of `text` matches."""
        s = self.start
        trans = self.trans
        for c in text:
            key = (s, c)
            t = trans.get(key)
            if t is None:
                if len(trans) > 100_000:  # a hostile alphabet: bound the memory
                    trans.clear()
                t = trans[key] = self._step(s, c)
            s = t
            if not s:
                return False
        return self.n in s


def _needed_literal(pattern: str) -> str:
    """The longest run of literal characters of a glob ("" if none)."""
    if not any(c in pattern for c in "*?["):
        return pattern
    best, run = "", []
    for t in [*_tokens(pattern), ("*",)]:
        if t[0] == "lit":
            run.append(t[1])
        else:
            if len(run) > len(best):
                best = "".join(run)
            run = []
    return best


def compile_glob(pattern: str) -> Callable[[str], bool]:
    """A function telling whether a whole string matches the rsync glob `pattern`.

    Without any of `*?[` the pattern is a literal (backslashes included, as in
    rsync)."""
    if not any(c in pattern for c in "*?["):
        return pattern.__eq__
    tokens = _tokens(pattern)
    if sum(1 for t in tokens if t[0] == "**") >= 2:
        return _DFA(tokens).fullmatch
    rx = re.compile(_regex(tokens), re.DOTALL)
    return lambda s: rx.fullmatch(s) is not None


# -- rules -----------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One include or exclude rule.

    `base` is the relative path (with a trailing `/`) of the directory whose
    rule file it came from, "" for rules of the command line and `.vtrc`.
    """

    include: bool
    pattern: str
    base: str = ""
    _match: Callable[[str, str, bool], bool] = field(default=None, repr=False, compare=False)

    @classmethod
    def make(cls, include: bool, pattern: str, base: str = "") -> Rule:
        """A rule for `pattern` as written (leading `/`, trailing `/` and all)."""
        if not pattern or pattern == "/":
            raise FilterError(f"empty {'include' if include else 'exclude'} pattern")
        return cls(include, pattern, base, _matcher(pattern, base))

    def matches(self, path: str, name: str, is_dir: bool) -> bool:
        """Whether the rule matches the entry at relative `path` (final component `name`)."""
        return self._match(path, name, is_dir)

    def __str__(self) -> str:
        where = f" (in {self.base or './'}{VTIGNORE})" if self.base else ""
        return f"{'+' if self.include else '-'} {self.pattern}{where}"


def _matcher(pattern: str, base: str) -> Callable[[str, str, bool], bool]:
    """The match function of a rule: rsync's `rule_matches` (exclude.c)."""
    dir_only = len(pattern) > 1 and pattern.endswith("/")
    if dir_only:
        pattern = pattern[:-1]
    anchored = pattern.startswith("/")
    if anchored:
        pattern = pattern[1:]
    wild3 = pattern.endswith("/***")  # "dir/***": the directory and all in it
    wild2 = "**" in pattern
    wild2_prefix = pattern.startswith("**")
    slashes = pattern.count("/")
    m = compile_glob(pattern)
    cut = len(base)
    # a literal run any match contains: most names fail on `in`, not a matcher
    need = _needed_literal(pattern)

    if not slashes and not wild2 and not anchored:

        def on_name(path, name, is_dir):
            return (is_dir or not dir_only) and need in name and m(name)

        return on_name

    def on_path(path, name, is_dir):
        if dir_only and not is_dir:
            return False
        if cut:
            if not path.startswith(base):
                return False
            if anchored:
                path = path[cut:]
        if is_dir and wild3:
            path += "/"
        if need not in ("/" + path if wild2_prefix else path):
            return False
        if anchored:
            return m(path)
        if wild2_prefix:
            return m("/" + path)  # lets "**/x" match x at the top too
        if not wild2:
            # match the last slashes+1 components
            i = len(path)
            for _ in range(slashes + 1):
                i = path.rfind("/", 0, i)
                if i < 0:
                    return m(path)
            return m(path[i + 1 :])
        # an infix or trailing "**": try at the start and after every slash
        if m(path):
            return True
        i = path.find("/")
        while i >= 0:
            if m(path[i + 1 :]):
                return True
            i = path.find("/", i + 1)
        return False

    return on_path


_CLEAR = object()


def parse_rule_line(line: str, include: bool, base: str = "") -> Rule | object | None:
    """A rule from one line of a rule file or one option: `+ PAT`, `- PAT`, `!`
    (clear the rules so far), or a bare pattern of kind `include`.  Blank lines
    and lines starting `#` or `;` are None."""
    line = line.rstrip("\r\n")
    if not line.strip() or line[0] in "#;":
        return None
    if line == "!":
        return _CLEAR
    if line[:2] in ("+ ", "- "):
        return Rule.make(line[0] == "+", line[2:], base)
    return Rule.make(include, line, base)


def read_rule_file(path: str, include: bool, base: str = "") -> list:
    """The rules (and clear marks) of a rule file; `-` is standard input."""
    try:
        if path == "-":
            import sys

            text = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                text = f.read((1 << 22) + 1)
            if len(text) > 1 << 22:
                raise FilterError(f"{path}: a rule file over 4 MiB")
    except OSError as e:
        raise FilterError(f"{path}: {e.strerror}") from None
    return parse_rules(text, path, include, base)


def parse_rules(text: bytes, where: str, include: bool, base: str = "") -> list:
    """The rules (and clear marks) of the text of a rule file named `where`."""
    out = []
    for n, line in enumerate(os.fsdecode(text).split("\n"), 1):
        try:
            r = parse_rule_line(line, include, base)
        except FilterError as e:
            raise FilterError(f"{where} line {n}: {e}") from None
        if r is not None:
            out.append(r)
    return out


def _apply(rules: list, items: Iterable) -> list:
    for r in items:
        if r is _CLEAR:
            rules.clear()
        else:
            rules.append(r)
    return rules


# -- the filter of a walk -------------------------------------------------------


class Scope:
    """The rules in force in one directory: the global ones, then the
    per-directory ones, deepest directory first."""

    __slots__ = ("rules", "local", "only")

    def __init__(self, rules: tuple, local: tuple, only: frozenset | None = None):
        self.rules = rules
        self.local = local  # the per-directory rules, inherited by subdirectories
        self.only = only  # names kept in a tagged (cache) directory, else None


@dataclass
class Filters:
    """Everything that decides which entries of a tree a walk takes.

    `rules` come first (command line, then `.vtrc`), then the rules of the
    per-directory files named `per_dir` (deepest first).  `exclude_if_present`
    names tag files: a directory holding one keeps only its tag files (as
    restic does: the directory and the tag are stored, nothing else), and
    `exclude_caches` adds `CACHEDIR.TAG` with its signature checked.
    `larger_than` excludes regular files of more bytes, whatever the rules say.
    `skip` is a last test on real objects (vt's own files), given the entry's
    path and stat result.
    """

    rules: list = field(default_factory=list)
    per_dir: str | None = None
    exclude_caches: bool = False
    exclude_if_present: list[str] = field(default_factory=list)
    larger_than: int | None = None
    skip: Callable | None = None

    def __post_init__(self):
        self._root = Scope(tuple(self.rules), ())

    @property
    def active(self) -> bool:
        """Whether anything can be excluded at all."""
        return bool(
            self.rules
            or self.per_dir
            or self.exclude_caches
            or self.exclude_if_present
            or self.larger_than is not None
            or self.skip
        )

    def enter(
        self, parent: Scope | None, rel: str, names: Iterable[str], dirpath: str | None = None
    ) -> Scope:
        """The scope of the directory at relative path `rel` ("" for the root)
        listing `names`; `dirpath` is where to read its rule and tag files
        (None: a stored tree, no files are read)."""
        parent = parent or self._root
        only = None
        if dirpath is not None and (self.exclude_caches or self.exclude_if_present):
            names = names if isinstance(names, (set, frozenset)) else set(names)
            tags = {t for t in self.exclude_if_present if t in names}
            if self.exclude_caches and CACHEDIR_TAG in names and _is_cache_tag(dirpath):
                tags.add(CACHEDIR_TAG)
            if tags:
                only = frozenset(tags)
        if self.per_dir and dirpath is not None and self.per_dir in names:
            base = rel + "/" if rel else ""
            path = os.path.join(dirpath, self.per_dir)
            if os.path.isfile(path):
                own = read_rule_file(path, include=False, base=base)
                inherited = parent.local
                if any(r is _CLEAR for r in own):  # "!" drops the inherited rules
                    inherited = ()
                    own = own[max(i for i, r in enumerate(own) if r is _CLEAR) + 1 :]
                # the deeper directory's rules come first, as with rsync's dir-merge
                local = tuple(own) + inherited
                return Scope(self._root.rules + local, local, only)
        if only is None:
            return parent
        return Scope(parent.rules, parent.local, only)

    def excluded(
        self,
        scope: Scope,
        path: str,
        name: str,
        is_dir: bool,
        size: int | None = None,
        is_file: bool | None = None,
    ) -> bool:
        """Whether the entry `name` at relative `path` is left out."""
        if scope.only is not None and name not in scope.only:
            return True
        if self.larger_than is not None and size is not None and size > self.larger_than:
            if is_file if is_file is not None else not is_dir:
                return True
        for r in scope.rules:
            if r._match(path, name, is_dir):
                return not r.include
        return False

    def leaves_out(self, scope: Scope, path: str, name: str, bpath: bytes, st) -> bool:
        """`excluded` for the real object at `bpath` of stat `st`, with `skip`."""
        mode = st.st_mode
        return self.excluded(
            scope, path, name, stat.S_ISDIR(mode), st.st_size, stat.S_ISREG(mode)
        ) or (self.skip is not None and self.skip(bpath, st))

    def keep_entries(self, entries: list, path: str) -> list:
        """The dirents of the stored directory at relative `path` ("" for the
        top) that the rules keep: a restore's filter (no rule files or tags are
        read from a stored tree)."""
        prefix = path + "/" if path else ""
        scope = self._root
        return [
            e
            for e in entries
            if not self.excluded(
                scope, prefix + e.name, e.name, e.is_dir, e.size if e.is_file else None, e.is_file
            )
        ]


def _is_cache_tag(dirpath: str) -> bool:
    """Whether `dirpath/CACHEDIR.TAG` starts with the standard signature."""
    try:
        with open(os.path.join(dirpath, CACHEDIR_TAG), "rb") as f:
            return f.read(len(CACHEDIR_SIGNATURE)) == CACHEDIR_SIGNATURE
    except OSError:
        return False


def build_rules(specs: Iterable[tuple[str, str]]) -> list:
    """Rules from `(kind, value)` pairs in command-line order: kind `-` and `+`
    are patterns, `-from` and `+from` rule files."""
    rules: list = []
    for kind, value in specs:
        include = kind.startswith("+")
        if kind.endswith("from"):
            _apply(rules, read_rule_file(value, include))
        else:
            r = parse_rule_line(value, include)
            if r is None:
                if not value.strip():
                    raise FilterError(f"empty {'include' if include else 'exclude'} pattern")
                r = Rule.make(include, value)  # a pattern starting # or ;
            _apply(rules, [r])
    return rules


class OwnFiles:
    """vt's own files met in a tree being stored: the `skip` of `Filters`.

    Left out: the objects at `paths` (the default datadir, the cache, the
    store, the archive being written: compared by device and inode, so any
    name for them counts), any directory holding a datadir's metadata file,
    and any `*.vt` file holding a state of the store `store_id`.  Storing them
    would store the store into itself: every pack would grow it.
    """

    def __init__(self, paths: Iterable[str], store_id: str | None = None):
        from vtstore.stores.datadir import FORMAT_NAME, METADATA

        self._meta = b"/" + os.fsencode(METADATA)
        self._format = FORMAT_NAME
        self._ids = set()
        for p in paths:
            try:
                st = os.stat(os.path.expanduser(p))
            except OSError:
                continue
            self._ids.add((st.st_dev, st.st_ino))
        self._mark = f'"store":"{store_id}"'.encode() if store_id else None
        #: the paths left out (a walk and a progress scan may both look)
        self.found: set[str] = set()

    def __call__(self, bpath: bytes, st) -> bool:
        """Whether the object at `bpath` (of stat `st`) is one of vt's own."""
        mode = st.st_mode
        if (st.st_dev, st.st_ino) in self._ids:
            pass
        elif stat.S_ISDIR(mode):
            if not self._is_datadir(bpath):
                return False
        elif not (stat.S_ISREG(mode) and bpath.endswith(b".vt") and self._is_archive(bpath)):
            return False
        self.found.add(os.fsdecode(bpath))
        return True

    def _is_datadir(self, bpath: bytes) -> bool:
        try:
            with open(bpath + self._meta, "rb") as f:
                data = f.read(1 << 16)
        except OSError:
            return False
        try:
            return json.loads(data).get("format") == self._format
        except (ValueError, AttributeError):
            return False

    def _is_archive(self, bpath: bytes) -> bool:
        if self._mark is None:
            return False
        try:
            with open(bpath, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - (1 << 16)))
                return self._mark in f.read()
        except OSError:
            return False
