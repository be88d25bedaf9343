"""The manual: `docs/vt.md` turned into the `vt.1` man page and `vt help` topics.

`docs/vt.md` is the one source.  `tools/gen-manual` runs `generate()` and writes
two files into the package (so an installed vt has them without the docs):
`vtstore/data/vt.1` (roff, the `man` macros) and `vtstore/data/topics.json`
(the text of each `vt help TOPIC`, taken from sections of `docs/vt.md` and the
other docs).  A test regenerates both and compares, so they cannot drift.

The Markdown understood is the subset the docs use: `#`/`##`/`###` headings,
paragraphs, indented or fenced code blocks, `- ` and `1. ` lists (nested by two
spaces), definition lists (a line of `term` followed by `: text`), tables, and
inline `code`, **bold**, *emphasis* and [links](url).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

#: `vt help TOPIC` -> (file under docs/, heading of the section or None for all
#: of it, what the topic explains)
TOPICS: dict[str, tuple[str, str | None, str]] = {
    "refs": ("vt.md", "REFS", "naming trees: X.vt, refs, [clause]NAME, paths inside"),
    "selectors": ("vt.md", "SELECTORS", "picking a state: X.vt@latest, @-2, @ID, @DATE"),
    "stores": ("vt.md", "STORE SPECS", "store specs for -S: paths, tcp:, s3://, crypt:, ..."),
    "filters": ("vt.md", "FILTERS", "exclude and include rules, .vtignore"),
    "config": ("CONFIG.md", None, "the ~/.vtrc file and its clauses"),
    "environment": ("vt.md", "ENVIRONMENT", "VT_STORE, VT_DIR, VT_CONFIG, VT_HASHCLASS, ..."),
    "exit-status": ("vt.md", "EXIT STATUS", "what vt's exit codes mean"),
    "files": ("vt.md", "FILES", "where vt keeps its configuration, store and keys"),
}
#: other names a user may try for a topic
TOPIC_ALIASES = {
    "specs": "stores",
    "store": "stores",
    "exclude": "filters",
    "excludes": "filters",
    "rules": "filters",
    "env": "environment",
    "configuration": "config",
    "vtrc": "config",
    "exit": "exit-status",
    "snapshots": "selectors",
}

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def sections(md: str, level: int = 2) -> dict[str, str]:
    """The `level` headings of `md` and the text under each (up to the next one)."""
    out: dict[str, str] = {}
    mark = "#" * level + " "
    name, lines = None, []
    fence = False
    for line in md.splitlines():
        if line.startswith("```"):
            fence = not fence
        if not fence and line.startswith(mark):
            if name is not None:
                out[name] = "\n".join(lines).strip("\n")
            name, lines = line[len(mark) :].strip(), []
        elif not fence and name is not None and re.match(rf"#{{1,{level - 1}}} ", line):
            out[name] = "\n".join(lines).strip("\n")
            name, lines = None, []
        elif name is not None:
            lines.append(line)
    if name is not None:
        out[name] = "\n".join(lines).strip("\n")
    return out


def topics_from(docs: Path) -> dict[str, str]:
    """The text of each help topic, read from the docs directory `docs`."""
    out = {}
    cache: dict[str, str] = {}
    for topic, (fname, heading, _) in TOPICS.items():
        path = docs / fname
        if not path.exists():
            continue
        text = cache.setdefault(fname, path.read_text())
        if heading is None:
            out[topic] = text.strip("\n")
            continue
        body = sections(text).get(heading)
        if body is not None:
            out[topic] = f"{heading}\n\n{body}"
    return out


# -- Markdown to roff ------------------------------------------------------------------

_INLINE = re.compile(
    r"`(?P<code>[^`]+)`|\*\*(?P<bold>[^*]+)\*\*|\*(?P<em>[^*\s][^*]*)\*"
    r"|\[(?P<ltext>[^\]]+)\]\((?P<url>[^)]+)\)"
)


def _esc(text: str) -> str:
    """Escape roff's specials in running text."""
    return text.replace("\\", "\\e").replace("-", "\\-")


def _inline(text: str) -> str:
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(_esc(text[pos : m.start()]))
        if m.group("code") is not None:
            out.append("\\fB" + _esc(m.group("code")) + "\\fR")
        elif m.group("bold") is not None:
            out.append("\\fB" + _esc(m.group("bold")) + "\\fR")
        elif m.group("em") is not None:
            out.append("\\fI" + _esc(m.group("em")) + "\\fR")
        else:
            out.append(_esc(m.group("ltext")) + " (" + _esc(m.group("url")) + ")")
        pos = m.end()
    out.append(_esc(text[pos:]))
    return _line("".join(out))


def _line(text: str) -> str:
    """A roff text line: one starting with `.` or `'` would be read as a request."""
    return "\\&" + text if text[:1] in (".", "'") else text


def _table_rows(block: list[str]) -> list[list[str]]:
    rows = []
    for line in block:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
            continue
        rows.append(cells)
    return rows


def _plain(line: str, after: list[str]) -> bool:
    """Whether `line` continues a paragraph (is not blank, a heading, a list item,
    a table row, a fence or a definition's term)."""
    s = line.strip()
    if not s or line.startswith("#") or line.startswith("```") or s.startswith("|"):
        return False
    if re.match(r"\s*(- |\d+\. )", line) or line.startswith(": "):
        return False
    return not (after and after[0].startswith(": "))


def to_roff(md: str, version: str, date: str) -> str:
    """The man page (roff with the `man` macros) of the Markdown text `md`."""
    lines = md.splitlines()
    out = [f'.TH VT 1 "{date}" "vtstore {version}" "vtstore manual"']
    i = 0
    para_open = False

    def para():
        nonlocal para_open
        if not para_open:
            out.append(".PP")
            para_open = True

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if line.startswith("# "):
            title = line[2:].strip()
            name, _, what = title.partition("—")
            out += [".SH NAME", _esc(name.strip().split("(")[0]) + " \\- " + _esc(what.strip())]
            para_open = False
        elif line.startswith("## ") or line.startswith("### "):
            macro = ".SH" if line.startswith("## ") else ".SS"
            out.append(f'{macro} "{_esc(line.lstrip("#").strip())}"')
            para_open = False
        elif not stripped:
            para_open = False
        elif line.startswith("```") or line.startswith("    ") and not para_open:
            fenced = line.startswith("```")
            block = []
            i += 1 if fenced else 0
            while i < len(lines):
                cur = lines[i]
                if fenced and cur.startswith("```"):
                    break
                if not fenced and cur.strip() and not cur.startswith("    "):
                    i -= 1
                    break
                block.append(cur if fenced else cur[4:])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            out += [".PP", ".RS 4", ".nf"] + [_line(_esc(b)) for b in block] + [".fi", ".RE"]
            para_open = False
        elif stripped.startswith("|"):
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(lines[i])
                i += 1
            i -= 1
            rows = _table_rows(block)
            for row in rows[1:] if len(rows) > 1 else rows:
                out += [".TP", _inline(row[0]), _inline(" \u2014 ".join(row[1:]))]
            para_open = False
        elif re.match(r"\s*(- |\d+\. )", line):
            indent = len(line) - len(line.lstrip())
            m = re.match(r"\s*(- |\d+\. )", line)
            bullet = "\\(bu" if m.group(1) == "- " else m.group(1).strip()
            text = [line[m.end() :].strip()]
            while i + 1 < len(lines):
                nxt = lines[i + 1]
                if not nxt.strip() or re.match(r"\s*(- |\d+\. )", nxt):
                    break
                if len(nxt) - len(nxt.lstrip()) <= indent and not nxt.startswith(" "):
                    break
                text.append(nxt.strip())
                i += 1
            width = 2 if bullet == "\\(bu" else 4
            if indent:
                out += [".RS 2", f".IP {bullet} {width}", _inline(" ".join(text)), ".RE"]
            else:
                out += [f".IP {bullet} {width}", _inline(" ".join(text))]
            para_open = True
        elif i + 1 < len(lines) and lines[i + 1].startswith(": "):
            out += [".TP", _inline(stripped)]
            i += 1
            text = [lines[i][2:].strip()]
            while i + 1 < len(lines) and lines[i + 1].startswith("  ") and lines[i + 1].strip():
                if re.match(r"\s*(- |\d+\. )", lines[i + 1]):
                    break
                text.append(lines[i + 1].strip())
                i += 1
            out.append(_inline(" ".join(text)))
            para_open = True
        else:
            para()
            # a paragraph's lines together: an inline span may cross a line break
            text = [stripped]
            while i + 1 < len(lines) and _plain(lines[i + 1], lines[i + 2 : i + 3]):
                text.append(lines[i + 1].strip())
                i += 1
            out.append(_inline(" ".join(text)))
        i += 1
    return "\n".join(out) + "\n"


def generate(docs: Path, data: Path, version: str, date: str) -> list[Path]:
    """Write `vt.1` and `topics.json` under `data` from the docs in `docs`."""
    data.mkdir(parents=True, exist_ok=True)
    man = data / "vt.1"
    man.write_text(to_roff((docs / "vt.md").read_text(), version, date))
    topics = data / "topics.json"
    topics.write_text(json.dumps(topics_from(docs), indent=1, ensure_ascii=False) + "\n")
    return [man, topics]


def load_topics() -> dict[str, str]:
    """The help topics of the installed package (empty if the data file is missing)."""
    try:
        return json.loads((DATA_DIR / "topics.json").read_text())
    except (OSError, ValueError):
        return {}


def man_page_path() -> Path:
    """Where the installed package keeps its man page."""
    return DATA_DIR / "vt.1"
