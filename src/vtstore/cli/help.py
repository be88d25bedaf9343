"""`vt help [TOPIC|COMMAND]`: the topics of the manual, a command's help, the man page."""

from __future__ import annotations

import os
import sys

from vtstore.cli.manual import TOPIC_ALIASES, TOPICS, load_topics, man_page_path
from vtstore.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser(
        "help",
        help="explain a topic (stores, selectors, filters, ...) or a command",
        description=(
            "With no argument, list the commands and the help topics.  TOPIC is one"
            f" of: {', '.join(TOPICS)}; COMMAND prints 'vt COMMAND --help'."
            "  --man shows the whole manual (the vt(1) page) with man(1)."
        ),
    )
    p.add_argument("topic", nargs="?", metavar="TOPIC|COMMAND")
    p.add_argument("--man", action="store_true", help="show the vt(1) manual page")
    p.set_defaults(func=run)


def run(args) -> int:
    from vtstore.cli.main import COMMANDS, build_parser

    if args.man:
        return _show_man()
    topics = load_topics()
    if not args.topic:
        _overview(COMMANDS, topics)
        return 0
    name = args.topic.strip().lower()
    name = TOPIC_ALIASES.get(name, name)
    if name in topics:
        print(topics[name])
        return 0
    commands = {cmd for _, cmd, _ in COMMANDS}
    if name in commands:
        build_parser(only=name).parse_args([name, "--help"])  # prints and exits 0
    if name in TOPICS:
        raise UsageError(f"{name}: this topic is not written yet (see docs/)")
    raise UsageError(
        f"{args.topic}: no such topic or command; topics: {', '.join(TOPICS)};"
        " 'vt help' lists the commands"
    )


def _overview(commands, topics) -> None:
    width = max(len(n) for n in [*(cmd for _, cmd, _ in commands), *TOPICS])
    print("vt COMMAND --help (or vt help COMMAND) explains a command:\n")
    for _, cmd, summary in commands:
        print(f"  {cmd:<{width}}  {summary}")
    print("\nvt help TOPIC explains:\n")
    for t, (_, _, what) in TOPICS.items():
        print(f"  {t:<{width}}  {what}")
    print("\nThe whole manual: vt help --man (or man vt once installed).")


def _show_man() -> int:
    import shutil
    import subprocess

    page = man_page_path()
    if not page.exists():
        raise UsageError(f"{page}: the manual page is missing from this installation")
    man = shutil.which("man")
    if man is None or not sys.stdout.isatty():
        if man is not None:
            # rendered for a pipe: plain text, no pager
            env = {**os.environ, "MANPAGER": "cat", "MANWIDTH": "80"}
            return subprocess.call([man, "-l", str(page)], env=env)
        sys.stdout.write(page.read_text())
        return 0
    return subprocess.call([man, "-l", str(page)])
