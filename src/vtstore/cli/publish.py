"""`vt publish PATH`: store a path and print an x-vt: URI for it (and, with
`--server URL`, a URL a browser opens)."""

from __future__ import annotations

import json
import os
from urllib.parse import quote, urlsplit

from vtstore.cli.common import open_store
from vtstore.errors import UsageError, VTError


def register(sub) -> None:
    p = sub.add_parser(
        "publish",
        help="store a path and print an x-vt: URI",
        description=(
            "Store PATH inside a one-entry directory and print x-vt:/DIRREF/NAME, a URI"
            " naming it that vt cat, vt ls, vt unpack and vt mount understand.  With"
            " --server URL (a vt httpd), also print x-vt://HOST:PORT/DIRREF/NAME, which"
            " those commands resolve against that server, and URL/d/DIRREF/NAME, which a"
            " browser opens (a directory as a listing, a file as itself).  With --server"
            " and no -S, PATH is stored on that server (over HTTP; writing needs a key:"
            " --key-file or $VT_KEY_FILE)."
        ),
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument(
        "--server",
        metavar="URL",
        help="the vt httpd serving the store (http://HOST:PORT/ or https://...)",
    )
    p.add_argument("--json", action="store_true", help="print {ref, uri, url} as JSON")
    p.set_defaults(func=run)


def links(top, name: str, server: str | None) -> dict:
    """The ways to name entry `name` of directory ref `top`: `uri` (x-vt:/...),
    and with a server `host_uri` (x-vt://HOST:PORT/...) and `url` (for browsers)."""
    ref = str(top)
    out = {"ref": ref, "name": name, "uri": f"x-vt:/{ref}/{name}"}
    if server:
        u = urlsplit(server)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise UsageError(f"--server: say http://HOST:PORT/ or https://..., not {server!r}")
        base = server.rstrip("/") + "/"
        out["host_uri"] = f"x-vt://{u.netloc}/{ref}/{name}"
        out["url"] = f"{base}d/{quote(ref, safe='')}/{quote(name, safe='')}"
    return out


def run(args) -> int:
    from vtstore.tree.dir import make_dir
    from vtstore.tree.fsimport import import_tree

    if not os.path.lexists(args.path):
        raise VTError(f"{args.path}: no such file or directory")
    if args.server and not args.store_spec and not os.environ.get("VT_STORE"):
        args.store_spec = args.server
    with open_store(args) as store:
        dirent, stats = import_tree(args.path, store)
        if not dirent.name:
            raise VTError(f"{args.path}: cannot publish a path without a name")
        top = make_dir([dirent], store)
        store.flush()
    out = links(top, dirent.name, args.server)
    if dirent.is_dir and "url" in out:
        out["url"] += "/"
    if args.json:
        print(json.dumps(out))
    else:
        print(out["uri"])
        if args.server:
            print(out["host_uri"])
            print(out["url"])
    return 1 if stats.errors else 0
