"""`vt ls`: list directories of refs and archives."""

from __future__ import annotations

import stat as statmod
import time

from vtstore.cli.common import open_store
from vtstore.cli.refs import resolve_special, use_clause_of
from vtstore.tree.dir import dir_entries
from vtstore.tree.dirent import T_DEVICE, T_DIR, T_FIFO, T_HARDLINK, T_SOCKET, T_SYMLINK

_TYPECHAR = {T_DIR: "d", T_SYMLINK: "l", T_FIFO: "p", T_SOCKET: "s", T_HARDLINK: "h"}


def register(sub) -> None:
    p = sub.add_parser(
        "ls",
        help="list a directory ref or archive",
        description="List the entries of a directory dirent ref, X.vt archive or path in one.",
    )
    p.add_argument("refs", nargs="+", metavar="REF", help="dirent ref, X.vt, REF/path")
    p.add_argument("-l", "--long", action="store_true", help="mode, owner, size, time")
    p.add_argument("-R", "--recursive", action="store_true", help="list subdirectories too")
    p.set_defaults(func=run)


def _line(e, long: bool) -> str:
    if not long:
        return e.name + ("/" if e.is_dir else "")
    m = e.meta
    kind = _TYPECHAR.get(e.type, "-")
    if e.type == T_DEVICE:
        kind = e.rdev[0]
    perm = statmod.filemode(m.mode if m and m.mode is not None else 0)[1:]
    owner = (m.user or str(m.uid)) if m and (m.user or m.uid is not None) else "-"
    group = (m.group or str(m.gid)) if m and (m.group or m.gid is not None) else "-"
    when = (
        time.strftime("%Y-%m-%d %H:%M", time.localtime(m.mtime_ns / 1e9))
        if m and m.mtime_ns is not None
        else "-"
    )
    name = e.name
    if e.is_symlink:
        name += f" -> {e.target}"
    return f"{kind}{perm} {owner:>8} {group:>8} {e.size:>12} {when} {name}"


def run(args) -> int:
    use_clause_of(args, args.refs[0] if args.refs else None)
    with open_store(args, readonly=True) as store:
        for text in args.refs:
            t = resolve_special(text, store)
            d = t.dirent
            if d is None:
                print(t.block)
                continue
            if not d.is_dir:
                print(_line(d, args.long))
                continue
            _list(store, d, "", args, len(args.refs) > 1 and text)

    return 0


def _list(store, d, prefix: str, args, header) -> None:
    entries = dir_entries(d, store)
    if header or (args.recursive and prefix):
        print(f"{header if header and not prefix else prefix}:")
    for e in entries:
        print(_line(e, args.long))
    if args.recursive:
        for e in entries:
            if e.is_dir:
                print()
                _list(store, e, f"{prefix}/{e.name}" if prefix else e.name, args, None)
