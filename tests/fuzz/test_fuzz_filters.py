"""Fuzz the exclude-rule parser and matcher (vtstore.tree.filters): any rule
file (a `.vtignore`, an --exclude-from file) is rules or one FilterError, and
matching any rule against long and odd paths stays fast (the harness flags a
decode over its CPU-time limit: a backtracking matcher would be one)."""

from __future__ import annotations

from vtstore.tree.filters import FilterError, Filters, parse_rules

SEEDS = [
    b"# comment\n*.o\n+ /src/**/keep/\n- node_modules/\n/build/***\n",
    b"[a-z]?[!0-9]*.tmp\n**/cache/**\n*a*a*a*a*b\n!\n\\*literal\n[[:alpha:]]x\n",
    b"- /home/*/.cache/\n+ */\n- *\n; another\n\r\n[\n[]]\n[!]\n",
]
PATHS = [
    ("a" * 300 + "/" + "a" * 200, False),
    ("src/x/keep", True),
    ("/".join(["ab"] * 200), False),
    ("home/u/.cache", True),
    ("\udcff\udcfe/[x]/*?", False),
]


def test_fuzz_rule_files(fuzz):
    def decode(data: bytes):
        # "!" marks come back as markers: keep the rules
        rules = [r for r in parse_rules(data, "fuzz", include=False) if hasattr(r, "matches")]
        flt = Filters(rules)
        scope = flt.enter(None, "", ())
        for p, is_dir in PATHS:
            flt.excluded(scope, p, p.rsplit("/", 1)[-1], is_dir, 5, not is_dir)

    # each input compiles a handful of patterns: fewer inputs than the default
    res = fuzz(decode, SEEDS, n=20_000, expected=(FilterError,))
    assert res.failures == [], res.summary()
