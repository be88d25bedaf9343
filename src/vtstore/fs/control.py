"""Live controls through extended attributes named `x-vt-*`.

- read `x-vt-blockref`: the block ref of a file's content (stored first), or
  of a directory's encoded entries (after a sync);
- write `x-vt-blockref` = a block ref: the file's content becomes that block,
  in O(1) whatever its size (its blocks must be in the store);
- write `x-vt-control`:
  - `clone NEWPATH`: a new file with the same content and metadata, sharing
    every block (NEWPATH relative to the file's directory, or to the mount's
    top if it starts with `/`);
  - `splice OFFSET REF [LENGTH]`: replace LENGTH octets (default 0: insert) at
    OFFSET with the content of block REF, by reference;
  - `crop START END`: keep only the octets `[START:END)`;
  - `sync` (on any object): store everything and record the state now;
- write `x-vt-archive-as` = `tar[=NAME]` on a directory: an archive-as view
  (`views.py`); read it back; remove it with `setfattr -x`.

Splice and crop cut leaves at the edges into sub-blocks, so they never read
or store file data (`vtstore.control.content`, shared with `vt ftp`).  They
are not listed by `listxattr`.  `insert_node`/`insert_dirent` add entries to
the live tree for `clone` here and for the mount's control socket
(`vtstore.control.live`: `vt ctl`, `vt ftp MOUNTPOINT`).
"""

from __future__ import annotations

import errno
import time

from vtstore.blocks import Block
from vtstore.control.content import EditError, crop, splice
from vtstore.errors import FormatError
from vtstore.fs import views
from vtstore.fs.errors import FSError
from vtstore.fs.nodes import FileNode, ViewNode
from vtstore.tree.dirent import T_DIR, T_FILE

PREFIX = "x-vt-"
BLOCKREF = "x-vt-blockref"
CONTROL = "x-vt-control"


def _committed_block(fs, node) -> Block:
    """Store the file's pending writes and return its block."""
    with fs.lock:
        layers = fs._freeze(node)
    fs._wait(layers)
    return node.block


def get(fs, ino: int, name: str) -> bytes:
    with fs.lock:
        node = fs.node(ino)
    if name == "x-vt-pid":
        import os

        return str(os.getpid()).encode()
    if name == views.CONTROL:
        return views.get(fs, node)
    if name != BLOCKREF:
        raise FSError(errno.ENODATA)
    if node.type == T_FILE and not isinstance(node, ViewNode):
        return str(_committed_block(fs, node)).encode()
    if node.type == T_DIR:
        fs.sync()
        with fs.lock:
            d = node.to_dirent(node.name, fs)
        return str(d.block).encode()
    raise FSError(errno.ENODATA)


def _parse_block(text: str, fs) -> Block:
    from vtstore.transcribe import parse_all

    try:
        b = parse_all(text.strip())
    except FormatError as e:
        raise FSError(errno.EINVAL, f"not a block ref: {e}") from None
    if not isinstance(b, Block):
        raise FSError(errno.EINVAL, "not a block ref")
    h = getattr(b, "hashcode", None)
    if h is not None and h not in fs.store:
        raise FSError(errno.ENOENT, f"block {h} is not in the store")
    return b


def _set_content(fs, node, block: Block) -> None:
    with fs.lock:
        node.top = None
        fs._writing.discard(node)
        node.block = block
        now = time.time_ns()
        node.meta = node.meta.with_changes(mtime_ns=now, ctime_ns=now)
        node.dirty = False
        fs._touch(node)


def set(fs, ino: int, name: str, value: bytes) -> None:  # noqa: A001 - the xattr verb
    with fs.lock:
        node = fs.node(ino)
        fs._check_write()
    try:
        text = bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise FSError(errno.EINVAL) from None
    if name == views.CONTROL:
        views.set_view(fs, ino, node, text)
        return
    if name == BLOCKREF:
        if node.type != T_FILE:
            raise FSError(errno.EISDIR if node.type == T_DIR else errno.EINVAL)
        fs._check_view(node)
        fs._check_append("setting content")
        block = _parse_block(text, fs)
        _committed_block(fs, node)
        _set_content(fs, node, block)
        return
    if name != CONTROL:
        raise FSError(errno.ENOTSUP)
    words = text.split()
    if not words:
        raise FSError(errno.EINVAL)
    op, args = words[0], words[1:]
    if op == "sync":
        fs.sync()
        if fs.on_sync is not None:
            fs.on_sync()
        return
    if node.type != T_FILE:
        raise FSError(errno.EINVAL, f"{op} needs a regular file")
    fs._check_view(node)
    store = fs.store
    try:
        if op == "clone" and len(args) == 1:
            _clone(fs, node, args[0])
        elif op == "splice" and len(args) in (2, 3):
            fs._check_append("splice")
            offset = int(args[0])
            ref = _parse_block(args[1], fs)
            length = int(args[2]) if len(args) == 3 else 0
            block = _committed_block(fs, node)
            _set_content(fs, node, splice(block, store, offset, ref, length))
        elif op == "crop" and len(args) == 2:
            fs._check_append("crop")
            start, end = int(args[0]), int(args[1])
            block = _committed_block(fs, node)
            _set_content(fs, node, crop(block, store, start, end))
        else:
            raise FSError(errno.EINVAL, f"unknown control {text!r}")
    except (ValueError, EditError):
        raise FSError(errno.EINVAL) from None


def _clone(fs, node, path: str) -> None:
    block = _committed_block(fs, node)
    base = fs.root if path.startswith("/") or node.parent is None else node.parent
    new = FileNode(node.meta, block)
    insert_node(fs, base, path, new, node.meta.uid or 0, node.meta.gid or 0)


def insert_node(fs, base, path: str, new, uid: int = 0, gid: int = 0) -> None:
    """Put node `new` at `path` (relative to directory node `base`, `..` allowed),
    a new name; the kernel has not looked it up yet.  How `clone` and the
    control socket's `bind` add entries to a live tree."""
    with fs.lock:
        parts = [p for p in path.split("/") if p]
        if not parts:
            raise FSError(errno.EINVAL)
        d = base
        for part in parts[:-1]:
            if part == "..":
                d = d.parent or d
                continue
            c = fs._child(d, part)
            if c is None:
                raise FSError(errno.ENOENT)
            if c.type != T_DIR:
                raise FSError(errno.ENOTDIR)
            d = c
        fs._assign(d)
        fs._new_entry(d.ino, parts[-1], new, uid, gid)
        new.nlookup = 0  # the kernel has not looked it up
        fs._forgotten.add(new)


def insert_dirent(fs, path: str, d) -> None:
    """Put the stored tree or file `d` at `path` below the mount's top (a new
    name); a directory's entries load when first looked at."""
    node = fs._make_node(d)
    m = node.meta
    insert_node(fs, fs.root, path, node, m.uid or 0, m.gid or 0)
