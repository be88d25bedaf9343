"""Shell completion: `vt completion bash|zsh` prints a script; the script asks
`vt __complete LINE` for the candidates.

The candidates come from the same argparse parser that parses the command line
(commands, options, option choices), from the configuration (`[clause]` names)
and from archives (`X.vt@` completes to `latest`, `-1`, `-2`, ... and state IDs).
Anything else (paths, `X.vt` files) is left to the shell's own file completion.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from vtstore.errors import VTError

GLOBAL_WITH_VALUE = {
    "-S",
    "--store",
    "-C",
    "--cache",
    "-c",
    "--config",
    "-H",
    "--hashclass",
    "--key-file",
}
STORE_OPTIONS = {"-S", "--store", "-C", "--cache"}
HASHCLASSES = ["blake3", "sha256", "sha3_256", "sha1"]

BASH = r"""# bash completion for vt (vtstore), from `vt completion bash`
_vt_complete() {
    local IFS=$'\n'
    COMPREPLY=($(VT_COMP_WORDBREAKS="$COMP_WORDBREAKS" "${COMP_WORDS[0]}" __complete "${COMP_LINE:0:COMP_POINT}" 2>/dev/null))
    if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *[]@] ]]; then
        compopt -o nospace 2>/dev/null || true
    fi
}
complete -o default -o bashdefault -F _vt_complete vt
"""

ZSH = r"""#compdef vt
# zsh completion for vt (vtstore), from `vt completion zsh`
_vt() {
    local -a cands
    cands=(${(f)"$(VT_COMP_WORDBREAKS= ${words[1]} __complete "${(j: :)words[1,CURRENT]}" 2>/dev/null)"})
    if (( ${#cands} )); then
        compadd -Q -- $cands
    else
        _files
    fi
}
if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then
    _vt "$@"
else
    compdef _vt vt
fi
"""


def register(sub) -> None:
    p = sub.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description=(
            "Print the completion script for SHELL.  bash: put it in"
            " ~/.local/share/bash-completion/completions/vt (tools/install does), or"
            " run: source <(vt completion bash).  zsh: put it in a directory of $fpath"
            " as _vt, or run: source <(vt completion zsh) after compinit."
        ),
    )
    p.add_argument("shell", choices=["bash", "zsh"], metavar="SHELL", help="bash or zsh")
    p.set_defaults(func=run)


def run(args) -> int:
    sys.stdout.write(BASH if args.shell == "bash" else ZSH)
    return 0


def _split(line: str) -> list[str]:
    """The words of a partial command line; the last is the one being completed."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=False)
    lex.whitespace_split = True
    lex.commenters = ""
    words = []
    try:
        for w in lex:
            words.append(w)
    except ValueError:  # an unterminated quote: the rest is the word being typed
        words.append(lex.token)
    if not line or line[-1].isspace() and not (words and lex.token):
        words.append("")
    return words


def _option_table(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return a.choices.get(name)
    return None


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return list(a.choices)
    return []


def _clauses() -> list[str]:
    try:
        from vtstore.config.loader import load_config

        return [f"[{n}]" for n in load_config().clause_names]
    except (VTError, OSError):
        return []


def _selectors(cur: str) -> list[str]:
    """`X.vt@...`: the selectors of that archive's states."""
    base, _, _ = cur.rpartition("@")
    if not base.endswith(".vt") or not os.path.isfile(base):
        return []
    from vtstore.archive import Archive

    try:
        entries = list(Archive(base).entries())
    except (VTError, OSError):
        return []
    out = [f"{base}@latest"]
    out += [f"{base}@-{i}" for i in range(1, min(len(entries), 20) + 1)]
    for e in entries:
        sid = getattr(e, "short_id", None)
        if sid:
            out.append(f"{base}@{sid}")
    return out


def candidates(line: str) -> list[str]:
    """Whole-word completions of the last word of `line` (a `vt ...` command line)."""
    from vtstore.cli.main import build_parser

    words = _split(line)
    cur, before = words[-1], words[1:-1]
    # the command names first; the command's own module once its word is seen
    parser = build_parser(only="")
    command = None
    cmd_parser = parser
    expect_value = None
    for w in before:
        if expect_value is not None:
            expect_value = None
            continue
        table = _option_table(cmd_parser)
        if w.startswith("-") and "=" not in w:
            action = table.get(w)
            if action is not None and action.nargs != 0:
                expect_value = w
            continue
        if command is None:
            command = w
            parser = build_parser(only=w)
            cmd_parser = _subparser(parser, w) or parser
    if expect_value is not None:
        action = _option_table(cmd_parser).get(expect_value)
        if action is not None and action.choices:
            return [str(c) for c in action.choices if str(c).startswith(cur)]
        if expect_value in ("-H", "--hashclass"):
            return [h for h in HASHCLASSES if h.startswith(cur)]
        if expect_value in STORE_OPTIONS and cur.startswith("["):
            return [c for c in _clauses() if c.startswith(cur)]
        return []
    if cur.startswith("-"):
        opts = sorted(o for o in _option_table(cmd_parser) if o.startswith("--") or cur != "--")
        return [o for o in opts if o.startswith(cur)]
    if command is None:
        return [c for c in _commands(parser) if c.startswith(cur)]
    if cur.startswith("["):
        return [c for c in _clauses() if c.startswith(cur)]
    given = [w for w in before[before.index(command) + 1 :] if not w.startswith("-")]
    for a in cmd_parser._actions:
        if not a.option_strings and a.choices and not given:
            return [str(c) for c in a.choices if str(c).startswith(cur)]
    if "@" in cur:
        return [s for s in _selectors(cur) if s.startswith(cur)]
    return []


def complete_main(argv: list[str]) -> int:
    """`vt __complete LINE`: print the candidates, one per line, cut for the shell.

    bash splits words at the characters of $COMP_WORDBREAKS (`:`, `=`, ...) and
    replaces only the part after the last one: the candidates are cut the same way.
    """
    line = argv[0] if argv else ""
    breaks = os.environ.get("VT_COMP_WORDBREAKS", "")
    cur = _split(line)[-1]
    cut = max((cur.rfind(ch) for ch in breaks if not ch.isspace()), default=-1) + 1
    try:
        found = candidates(line)
    except Exception:  # completion must never print a traceback into the prompt
        return 1
    for c in found:
        print(c[cut:])
    return 0
