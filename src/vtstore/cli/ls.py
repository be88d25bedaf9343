"""`vt ls`: list directories of refs and archives.

Hard links are listed as what they are on a real filesystem: the file of
their inode group (size, mode, owner, time), found through the target's
`LinkResolver` even when the group's first name is outside the listed
directory.  `-R` walks with a stack, not recursion, and goes on past a
directory that cannot be read (it is reported on stderr and `ls` exits 1).
"""

from __future__ import annotations

import functools
import stat as statmod
import sys
import time

from vtstore.cli.common import CommandLog, open_store
from vtstore.cli.refs import resolve_special, use_clause_of
from vtstore.errors import VTError

log = CommandLog(__name__)


@functools.cache
def _kinds() -> tuple[dict[int, str], int]:
    """The type letters of `ls -l`, and the device type (whose letter is its own)."""
    from vtstore.tree.dirent import T_DEVICE, T_DIR, T_FIFO, T_HARDLINK, T_SOCKET, T_SYMLINK

    return {T_DIR: "d", T_SYMLINK: "l", T_FIFO: "p", T_SOCKET: "s", T_HARDLINK: "h"}, T_DEVICE


def register(sub) -> None:
    p = sub.add_parser(
        "ls",
        help="list a directory ref or archive",
        description="List the entries of a directory dirent ref, X.vt archive or path in one.",
    )
    p.add_argument("refs", nargs="+", metavar="REF", help="dirent ref, X.vt, REF/path")
    p.add_argument("-l", "--long", action="store_true", help="mode, owner, size, time")
    p.add_argument("-R", "--recursive", action="store_true", help="list subdirectories too")
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per entry: path, type, size, mode, owner, mtime, target",
    )
    p.set_defaults(func=run)


def entry_json(e, path: str) -> dict:
    """An entry as `--json` prints it (names with undecodable octets escaped)."""
    m = e.meta
    d: dict = {"path": path, "type": e.type_name, "size": e.size}
    if m is not None:
        for k in ("mode", "uid", "gid", "user", "group"):
            if getattr(m, k) is not None:
                d[k] = getattr(m, k)
        if m.mtime_ns is not None:
            d["mtime"] = m.mtime_ns / 1e9
    if e.target is not None:
        d["target"] = e.target
    if e.rdev is not None:
        d["rdev"] = list(e.rdev)
    if e.ino is not None:
        d["link_group"] = e.ino
    return d


def _line(e, long: bool) -> str:
    if not long:
        return e.name + ("/" if e.is_dir else "")
    m = e.meta
    letters, t_device = _kinds()
    kind = letters.get(e.type, "-")
    if e.type == t_device:
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
    failed = False
    with open_store(args, readonly=True) as store:
        for text in args.refs:
            t = resolve_special(text, store)
            d = t.dirent
            if d is None:
                print(t.block)
                continue
            if not d.is_dir:
                print(_show(_shown(d, t.links, args.long or args.json), d.name, args))
                continue
            header = text if len(args.refs) > 1 else None
            failed |= not _list(store, d, args, header, t.links)
    return 1 if failed else 0


def _show(e, path: str, args) -> str:
    if args.json:
        import json  # here, not at start-up (`vt ls --help`)

        return json.dumps(entry_json(e, path))
    return _line(e, args.long)


def _shown(e, links, long: bool):
    """What to show for entry `e`: a hard link as its group's file, if found."""
    if not long or links is None:
        return e
    from vtstore.tree.dirent import T_HARDLINK

    if e.type != T_HARDLINK:
        return e
    try:
        f = links.resolve(e.ino)
    except VTError as err:  # the link table or a directory could not be read
        log.warning("%s: %s", e.name, err)
        return e
    return f.renamed(e.name) if f is not None else e


def _list(store, top, args, header, links) -> bool:
    """List `top` (and with -R its subdirectories); False if a directory was unreadable."""
    from vtstore.tree.dir import dir_entries

    ok = True
    stack = [("", top)]
    first = True
    while stack:
        prefix, d = stack.pop()
        if not first and not args.json:
            print()
        if not args.json and (header or (args.recursive and prefix)):
            print(f"{header if header and not prefix else prefix}:")
        first = False
        try:
            entries = dir_entries(d, store)
        except VTError as e:
            if not args.recursive:
                raise
            print(f"vt ls: {prefix or header or 'top'}: {e}", file=sys.stderr)
            ok = False
            continue
        for e in entries:
            path = f"{prefix}/{e.name}" if prefix else e.name
            print(_show(_shown(e, links, args.long or args.json), path, args))
        if args.recursive:
            subdirs = [e for e in entries if e.is_dir]
            for e in reversed(subdirs):
                stack.append((f"{prefix}/{e.name}" if prefix else e.name, e))
    return ok
