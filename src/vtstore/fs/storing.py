"""How a mounted tree is stored: file write layers handed to a thread pool that
splices them into block trees, and `sync`, which waits for those, encodes every
changed directory deepest first (a loop: any depth) and returns the new top
dirent.  `Storing` is a part of `vtstore.fs.filesystem.FileSystem`, split out
so that each module holds one job; it uses the file system's lock, nodes,
link table and store.
"""

from __future__ import annotations

import errno
import logging

from vtstore.blocks import Block
from vtstore.fs.content import Layer, splice_block
from vtstore.fs.errors import FSError
from vtstore.fs.links import EXT_MAGIC
from vtstore.fs.nodes import (
    DirNode,
    FileNode,
)
from vtstore.tree.dir import make_dir
from vtstore.tree.dirent import (
    T_DIR,
    Dirent,
    HardLinkDirent,
)

log = logging.getLogger(__name__)


class Storing:
    """The storing half of `FileSystem` (a mixin: it has no state of its own)."""

    def _freeze(self, node: FileNode) -> list[Layer]:
        """Hand the write layer to the storer; return the layers still being stored."""
        top = node.top
        if top is not None and self.left_out(node):
            return list(node.frozen)  # the mount's rules: its writes stay in the scratch
        if top is not None:
            self._writing.discard(node)
            node.top = None
            if top.dirty and not node.unlinked:
                top.frozen = True
                node.frozen.append(top)
                self._pool.submit(self._store_layer, node, top)
        return list(node.frozen)

    def _store_layer(self, node: FileNode, layer: Layer) -> None:
        try:
            base = layer.base
            if isinstance(base, Layer):
                base.done.wait()
                if base.error is not None:
                    layer.error = base.error
                    return
                base = layer.base if not isinstance(layer.base, Layer) else base.block
            if base is None or node.unlinked:
                return
            mime = node.meta.mime_type
            block = splice_block(layer, base, self.store, self.chunker, node.name or None, mime)
            layer.block = block
            with self.lock:
                self._stored(node, layer, block)
        except Exception as e:
            layer.error = e
            msg = f"storing {node.name or 'a file'} failed: {e}"
            log.exception("%s", msg)
            self.errors.append(msg)
        finally:
            layer.done.set()

    def _stored(self, node: FileNode, layer: Layer, block: Block) -> None:
        if layer in node.frozen:
            node.frozen.remove(layer)
        if node.unlinked:
            return
        node.block = block
        if node.top is not None and node.top.base is layer:
            node.top.base = block
        for later in node.frozen:
            if later.base is layer:
                later.base = block
        node.dirty = False  # force the propagation below
        self._touch(node)
        if not node.nlookup and not node.opens:
            self._try_collapse(node)

    def left_out(self, node, path: tuple[str, ...] | None = None) -> bool:
        """Whether the mount's exclude rules (`self.filters`, set by `Mount`)
        keep `node` (at `path` below the mount's top) out of the store.

        A left-out file's writes stay in its scratch layer and its directory is
        stored without it (with what the state had before, if anything), so
        scratch files, build output and caches can live in a mount without
        ever reaching the store.  Hard-linked objects are always stored.
        """
        flt = self.filters
        if flt is None or node.gid is not None:
            return False
        if path is None:
            if node.parent is None:
                return False
            path = node.parent.path() + (node.name,)
        scope = flt.enter(None, "", ())
        rel = ""
        last = len(path) - 1
        is_file = isinstance(node, FileNode)
        for i, part in enumerate(path):
            rel = f"{rel}/{part}" if rel else part
            if i < last:
                if flt.excluded(scope, rel, part, True):
                    return True  # rsync's rule: nothing below an excluded directory
            elif flt.excluded(
                scope, rel, part, node.type == T_DIR, node.size if is_file else None, is_file
            ):
                return True
        return False

    @staticmethod
    def _wait(layers: list[Layer]) -> None:
        for layer in layers:
            layer.done.wait()
        for layer in layers:
            if layer.error is not None:
                raise FSError(errno.EIO, f"storing failed: {layer.error}")

    def encode_dir(self, d: DirNode, name: str) -> Dirent:
        """Store directory node `d` (and its dirty descendants); return its dirent."""
        entries = []
        links = self.links
        kids = self.children(d)
        mypath = None
        flt = self.filters
        dpath = d.path() if flt is not None else ()
        for cname, c in kids.items():
            if isinstance(c, Dirent):
                if c.is_linked and c.ino in links.changed:
                    c = self._child(d, cname)
                else:
                    entries.append(c if c.name == cname else c.renamed(cname))
                    continue
            if flt is not None and self.left_out(c, dpath + (cname,)):
                # not stored: what the state had before stays, a new object is absent
                if c.orig is not None:
                    entries.append(c.orig if c.orig.name == cname else c.orig.renamed(cname))
                continue
            if c.gid is not None:
                g = links.get(c.gid)
                if mypath is None:
                    mypath = d.path()
                if g.outside is None and g.primary == mypath + (cname,):
                    entries.append(c.to_dirent(cname, self))
                else:
                    entries.append(HardLinkDirent(cname, c.gid))
                continue
            entries.append(c.to_dirent(cname, self))
            c.dirty = False
        orig = d.orig
        kw = {}
        if orig is not None:
            kw = {"uuid": orig.uuid, "ext": orig.ext}
            if d is not self.root and orig.ext and orig.ext.startswith(EXT_MAGIC):
                # the table of an earlier mount of this sub-directory: stale once it changes
                kw["ext"] = None
        if d is self.root:
            kw["ext"] = links.encode_ext(orig.ext if orig is not None else None)
        out = make_dir(entries, self.store, name=name, meta=d.meta, salt=self.salt_for(d), **kw)
        d.cached = d.synced = out
        d.dirty = False
        return out

    def _encode_dirty_below(self, top: DirNode) -> None:
        """Encode the dirty directories below `top`, deepest first.

        A loop, not recursion (a tree may be thousands of levels deep): once
        every dirty child is encoded, encoding a directory takes its children's
        cached dirents and goes no deeper.
        """
        order: list[DirNode] = []
        stack = [top]
        while stack:
            d = stack.pop()
            order.append(d)
            if d.children:
                stack.extend(
                    c
                    for c in d.children.values()
                    if isinstance(c, DirNode) and c.dirty and not self.left_out(c)
                )
        for d in reversed(order[1:]):  # each child before its parent
            if d.dirty:
                self.encode_dir(d, d.name)

    def _dir_at(self, path: tuple) -> DirNode | None:
        d = self.root
        for part in path:
            c = self._child(d, part) if part in self.children(d) else None
            if c is None or c.type != T_DIR:
                return None
            d = c
        return d

    def sync(self) -> Dirent:
        """Store every change; return the top dirent of the tree as it is now."""
        with self.lock:
            layers = []
            for node in list(self._writing):
                layers += self._freeze(node)
            for node in self.inodes.values():
                if isinstance(node, FileNode) and node.frozen:
                    layers += node.frozen
        self._wait(layers)
        with self.lock:
            for gid in list(self.links.changed):
                g = self.links.get(gid)
                if g is None:
                    continue
                if g.outside is not None:
                    # the file is outside the mounted sub-path: the mount writes it there
                    if g.node is not None:
                        self.outside_changes[g.outside] = g.node.to_dirent(g.outside[-1], self)
                    continue
                for p in g.paths:
                    dd = self._dir_at(p[:-1])
                    if dd is not None:
                        self._touch(dd)
                        dd.cached = None
                        dd.dirty = True
            if self.links.dirty_buckets:
                self.root.dirty = True
            self._encode_dirty_below(self.root)
            top = self.root.to_dirent(self.root_name, self)
            self.links.changed.clear()
            for node in list(self._forgotten):
                self._try_collapse(node)
        self.backend.flush()
        return top
