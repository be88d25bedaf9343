"""The web view's HTML: server-rendered pages, one small stylesheet, no JavaScript.

Every function returns a whole page as text; every value that came from a
store (names, comments, symlink targets, file text) is escaped here.
"""

from __future__ import annotations

import datetime
import html
from urllib.parse import quote

CSS = """
:root{--fg:#1d2430;--mute:#5d6b7e;--line:#e3e8ef;--bg:#fbfcfe;--acc:#1f5fbf}
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",
sans-serif;color:var(--fg);background:var(--bg)}header{background:#16202e;color:#fff;
padding:.7rem 1.5rem;display:flex;gap:1.2rem;align-items:baseline}header a{color:#fff;
text-decoration:none;font-weight:600}header span{color:#aab6c8;font-size:.85rem}
main{max-width:70rem;margin:1.2rem auto;padding:0 1.5rem}h1{font-size:1.35rem;
margin:.2rem 0 1rem;word-break:break-all}.crumbs a{color:var(--acc)}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid var(--line)}
th,td{padding:.38rem .7rem;border-bottom:1px solid var(--line);text-align:left;
vertical-align:top}th{background:#f2f5f9;font-weight:600;font-size:.85rem;color:var(--mute)}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.t{white-space:nowrap;color:var(--mute)}a{color:var(--acc)}tr:hover td{background:#f7faff}
.tag{display:inline-block;padding:0 .4rem;border-radius:.3rem;font-size:.78rem;
background:#eef2f8;color:var(--mute)}.add{color:#1a7f37}.del{color:#b42318}.mod{color:#9a6700}
pre{background:#fff;border:1px solid var(--line);padding:1rem;overflow:auto;
max-height:70vh;font-size:.85rem}img.preview{max-width:100%;border:1px solid var(--line);
background:#fff}.actions a{margin-right:1rem}.mute{color:var(--mute)}code{font-size:.85rem;
word-break:break-all}footer{color:var(--mute);font-size:.8rem;margin:2rem 0}
"""


def e(text) -> str:
    """HTML-escape any value."""
    return html.escape(str(text), quote=True)


def href(*parts: str) -> str:
    """An absolute path from segments, each percent-encoded (slashes too)."""
    return "/" + "/".join(quote(p, safe="") for p in parts)


def size_text(n: int | None) -> str:
    """1536 -> '1.5 KiB'."""
    if n is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def time_text(seconds: float | None) -> str:
    """A UTC time for people, to the second."""
    if seconds is None:
        return "—"
    try:
        t = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return "—"
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def page(title: str, body: str, crumbs: list[tuple[str, str | None]] | None = None) -> str:
    """A whole page: header, breadcrumbs (`(text, href)` pairs), body."""
    nav = ""
    if crumbs:
        nav = (
            '<p class="crumbs">'
            + " / ".join(f'<a href="{e(h)}">{e(t)}</a>' if h else e(t) for t, h in crumbs)
            + "</p>"
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>"
        '<header><a href="/">vtstore</a><span>content-addressed store</span></header>'
        f"<main>{nav}<h1>{e(title)}</h1>{body}"
        "<footer>served by vt httpd</footer></main></body></html>"
    )


def table(head: list[str], rows: list[str], numeric: tuple[int, ...] = ()) -> str:
    """A table; `rows` are ready `<tr>` strings."""
    ths = "".join(f"<th>{e(h)}</th>" for h in head)
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def index_page(exports: list[dict]) -> str:
    """The front page: each export with its block count and archives."""
    rows = []
    for x in exports:
        name = x["name"] or "(default)"
        arch = ", ".join(
            f'<a href="{e(x["base"] + href("a", a)[1:] + "/")}">{e(a)}</a>' for a in x["archives"]
        )
        rows.append(
            f'<tr><td><a href="{e(x["base"])}a/">{e(name)}</a></td>'
            f'<td>{e(x["hashclass"])}</td><td class="n">{e(x["blocks"])}</td>'
            f"<td>{arch or '<span class=mute>none</span>'}</td></tr>"
        )
    body = table(["store", "hash", "blocks", "archives"], rows)
    body += (
        "<p class=mute>Blocks are at <code>/h/HASHNAME:HEX</code>, trees at"
        " <code>/d/DIRENT-REF/path</code>, archives at <code>/a/NAME/</code>.</p>"
    )
    return page("Stores", body)


def archives_page(base: str, export: str, archives: list[dict]) -> str:
    """The archives of one store."""
    rows = []
    for a in archives:
        link = base + href("a", a["name"])[1:] + "/"
        rows.append(
            f'<tr><td><a href="{e(link)}">{e(a["name"])}</a></td>'
            f'<td class="n">{e(a["states"])}</td><td class="t">{e(time_text(a["latest"]))}</td>'
            f'<td><a href="{e(link)}latest/">browse latest</a></td></tr>'
        )
    body = table(["archive", "states", "latest", ""], rows) if rows else "<p>No archives.</p>"
    return page(f"Archives of {export or 'the default store'}", body, [("stores", "/")])


def history_page(base: str, name: str, states: list[dict]) -> str:
    """An archive's states, newest first, with sizes and links to compare."""
    arch = base + href("a", name)[1:] + "/"
    rows = []
    for i, s in enumerate(states):
        prev = states[i + 1]["id"] if i + 1 < len(states) else None
        diff = (
            f'<a href="{e(arch)}diff?from={e(quote(prev))}&amp;to={e(quote(s["id"]))}">changes</a>'
            if prev
            else ""
        )
        rows.append(
            f'<tr><td class="t">{e(time_text(s["when"]))}</td>'
            f'<td><a href="{e(arch + quote(s["id"], safe="") + "/")}"><code>{e(s["id"])}</code></a></td>'
            f'<td class="n">{e(size_text(s.get("bytes")))}</td>'
            f'<td class="n">{e(s.get("files", "—"))}</td>'
            f"<td>{e(s.get('comment') or '')}</td><td>{diff}</td></tr>"
        )
    body = (
        f'<p class="actions"><a href="{e(arch)}latest/">browse latest</a>'
        f'<a href="{e(arch)}latest/?tar">download latest (tar)</a></p>'
    )
    body += table(["time", "state", "size", "files", "comment", ""], rows)
    return page(
        f"History of {name}", body, [("stores", "/"), ("archives", base + "a/"), (name, None)]
    )


def listing_page(title: str, crumbs, here: str, entries: list[dict], summary: str = "") -> str:
    """A directory listing; `here` is this directory's URL (ending in /)."""
    rows = []
    for x in entries:
        name = x["name"] + ("/" if x["type"] == "dir" else "")
        link = here + quote(x["name"], safe="") + ("/" if x["type"] == "dir" else "")
        extra = ""
        if x["type"] == "file":
            extra = f'<a href="{e(link)}?view">view</a> <a href="{e(link)}?download">download</a>'
        elif x["type"] == "dir":
            extra = f'<a href="{e(link)}?tar">tar</a>'
        elif x["type"] == "symlink":
            extra = f"→ <code>{e(x.get('target', ''))}</code>"
        rows.append(
            f'<tr><td><a href="{e(link)}">{e(name)}</a></td><td><span class="tag">'
            f'{e(x["type"])}</span></td><td class="n">{e(size_text(x.get("size")))}</td>'
            f'<td class="t">{e(time_text(x.get("mtime")))}</td><td>{extra}</td></tr>'
        )
    body = f'<p class="actions"><a href="{e(here)}?tar">download this directory (tar)</a>'
    body += f'<a href="{e(here)}?json">JSON</a></p>{summary}'
    body += table(["name", "type", "size", "modified", ""], rows)
    return page(title, body, crumbs)


def preview_page(title: str, crumbs, link: str, ctype: str, size: int, text: str | None) -> str:
    """A file's page: a preview (text or image) and download links."""
    body = (
        f'<p class="actions"><a href="{e(link)}">open</a>'
        f'<a href="{e(link)}?download">download</a>'
        f'<span class="mute">{e(ctype)}, {e(size_text(size))}</span></p>'
    )
    if ctype.startswith("image/"):
        body += f'<p><img class="preview" src="{e(link)}" alt="{e(title)}"></p>'
    elif text is not None:
        body += f"<pre>{e(text)}</pre>"
    else:
        body += "<p class=mute>No preview for this type.</p>"
    return page(title, body, crumbs)


def diff_page(base: str, name: str, a: dict, b: dict, changes: list, truncated: bool) -> str:
    """What changed between two states of an archive."""
    arch = base + href("a", name)[1:] + "/"
    marks = {"added": ("+", "add"), "removed": ("−", "del"), "changed": ("~", "mod")}
    rows = []
    for kind, path, old, new in changes:
        sign, cls = marks[kind]
        where = b if kind != "removed" else a
        link = arch + quote(where["id"], safe="") + "/" + quote(path)
        rows.append(
            f'<tr><td class="{cls}">{sign} {e(kind)}</td><td><a href="{e(link)}">{e(path)}</a>'
            f'</td><td class="n">{e(size_text(old))}</td><td class="n">{e(size_text(new))}</td></tr>'
        )
    body = (
        f"<p>From <code>{e(a['id'])}</code> ({e(time_text(a['when']))}) to "
        f"<code>{e(b['id'])}</code> ({e(time_text(b['when']))}): {len(changes)} change(s)"
        f"{' (first ones only)' if truncated else ''}.</p>"
    )
    body += (
        table(["change", "path", "size before", "size after"], rows)
        if rows
        else "<p>No changes.</p>"
    )
    return page(
        f"Changes in {name}",
        body,
        [("stores", "/"), ("archives", base + "a/"), (name, arch), ("changes", None)],
    )


def error_page(status: int, message: str) -> str:
    """An error as a page."""
    return page(f"{status}", f"<p>{e(message)}</p>", [("stores", "/")])
