"""Archive-as views: a directory shown beside itself as a read-only tar or .vtd file.

`setfattr -n x-vt-archive-as -v 'tar[=NAME]' DIR` stores the xattr
`user.vt.archive-as` on DIR (so it is packed, unpacked and mounted again like
any user xattr; setting that xattr directly is the same) and a read-only file
NAME (default `DIR.tar`) appears in DIR's parent: DIR as a pax tar, octet for
octet what `vt export --format tar` writes, laid out from the dirents and read
from the blocks at any offset (`tree.tarview.TarView`), never built on disk.
`vtd[=NAME]` (default `DIR.vtd`) shows DIR as a self-contained `.vtd` bundle
instead (`tree.vtdview.VtdView`: top block first, then the directory blocks,
then the data; `file:NAME` opens a copy of it as a store, `vt ar` reads it).
The view shows DIR as last stored: setting the control stores DIR first, and
later changes show from the next sync (`fsync`, `x-vt-control sync`, the
ticker).  A real entry of the same name hides the view.  A view cannot be
written, truncated, renamed, linked or removed (`EACCES`/`EPERM`); removing
the xattr removes it.

Only the directory's parent keeps a list of its views (`DirNode.views`, made
by one look at its entries, kept up to date by the few operations that can
change it), so a lookup of a missing name does not scan the directory.
"""

from __future__ import annotations

import errno

from vtstore.fs.errors import FSError
from vtstore.fs.nodes import DirNode, ViewNode
from vtstore.tree.dirent import T_DIR, Dirent, fsenc
from vtstore.tree.meta import Meta

ATTR = "user.vt.archive-as"
CONTROL = "x-vt-archive-as"
SUFFIXES = {"tar": ".tar", "vtd": ".vtd"}
NAME_MAX = 255


def parse(value: bytes, dirname: str) -> tuple[str, str]:
    """`(kind, view name)` from an xattr value `tar[=NAME]`; FSError(EINVAL) if bad."""
    try:
        text = bytes(value).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise FSError(errno.EINVAL, "archive-as: not UTF-8") from None
    kind, eq, name = text.partition("=")
    kind = kind.strip()
    if kind not in SUFFIXES:
        raise FSError(errno.EINVAL, f"archive-as: unknown view type {kind!r} (tar, vtd)")
    name = name.strip() if eq else dirname + SUFFIXES[kind]
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\0" in name
        or len(fsenc(name)) > NAME_MAX
    ):
        raise FSError(errno.EINVAL, f"archive-as: bad view name {name!r}")
    return kind, name


def views_of(fs, d: DirNode) -> dict[str, tuple[str, str]]:
    """The views among `d`'s entries: view name -> (directory name, kind)."""
    if d.views is None:
        out: dict[str, tuple[str, str]] = {}
        for cname, c in fs.children(d).items():
            if c.type != T_DIR:
                continue
            v = c.meta.xattr(ATTR) if c.meta is not None else None
            if v is None:
                continue
            try:
                kind, name = parse(v, cname)
            except FSError:
                continue  # a bad value makes no view (the xattr is kept as it is)
            out.setdefault(name, (cname, kind))
        d.views = out
    return d.views


def changed(node) -> None:
    """`node` (a directory) got or lost its xattr, moved or went: its parent looks again."""
    if node is not None and node.type == T_DIR and node.parent is not None:
        node.parent.views = None


def view_node(fs, d: DirNode, name: str) -> ViewNode | None:
    """The view `name` in directory `d` (made or remade as its directory changed), or None."""
    v = views_of(fs, d).get(name)
    if v is None:
        return None
    cname, kind = v
    c = fs._child(d, cname)
    if c is None or c.type != T_DIR:
        return None
    source = source_dirent(c)
    if source is None:
        return None  # made in this mount and not stored yet: shown from the next sync
    key = (d.ino, name)
    node = fs.view_nodes.get(key)
    if node is not None and node.source == source:
        if node.ino and node.ino not in fs.inodes:  # forgotten by the kernel meanwhile
            fs.inodes[node.ino] = node
        return node
    if kind == "vtd":
        from vtstore.tree.vtdview import VtdView

        tv = VtdView(source, fs.store)
    else:
        from vtstore.tree.tarview import TarView

        tv = TarView(source, fs.store, links=fs.outer_links())
    m = c.meta
    t = (source.meta.mtime_ns if source.meta is not None else None) or m.mtime_ns
    meta = Meta(
        mode=0o444,
        uid=m.uid,
        gid=m.gid,
        user=m.user,
        group=m.group,
        mtime_ns=t,
        ctime_ns=t,
        atime_ns=t,
    )
    node = ViewNode(meta, tv, source)
    node.parent = d
    node.name = name
    fs.view_nodes[key] = node
    return node


def get(fs, node) -> bytes:
    """`getfattr -n x-vt-archive-as`: the stored value."""
    with fs.lock:
        v = node.meta.xattr(ATTR)
    if v is None:
        raise FSError(errno.ENODATA)
    return v


def set_view(fs, ino: int, node, text: str) -> None:
    """`setfattr -n x-vt-archive-as -v 'tar[=NAME]' DIR`: store the xattr, then DIR."""
    if node.type != T_DIR:
        raise FSError(errno.EINVAL, "archive-as: only a directory can be seen as an archive")
    parse(text.encode(), node.name or "top")
    if node.parent is None:
        raise FSError(errno.EINVAL, "archive-as: the mount's top has no parent to show it in")
    fs.setxattr(ino, ATTR, text.strip().encode())
    fs.sync()  # the view shows the directory as stored
    if fs.on_sync is not None:
        fs.on_sync()  # and the mount records the state, as `x-vt-control sync` does


def source_dirent(c) -> Dirent | None:
    """The stored dirent of directory entry `c` (a Dirent or a DirNode)."""
    return c.synced if isinstance(c, DirNode) else c
