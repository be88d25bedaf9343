"""A working directory tree over a store: the operations of `vt ftp`.

A `WorkTree` holds an immutable root dirent and a current directory.  Every
edit rebuilds the directories on the path from the edited one to the root
(path copying), so an unchanged subtree keeps its blocks and the root is
always a complete, storable tree; `sync` records it in the archive (if any)
only when it differs from the state it was opened at or last recorded.
"""

from __future__ import annotations

import os
import stat as statmod
import time

from vtstore.blocks import Block
from vtstore.control.content import crop, splice
from vtstore.errors import FormatError, VTError
from vtstore.tree.dir import decode_dir_data, make_dir, read_dir_data, tree_stats
from vtstore.tree.dirent import T_FILE, T_SYMLINK, Dirent, check_name, fsenc
from vtstore.tree.meta import Meta


class ControlError(VTError):
    """A control operation that cannot be done (missing path, wrong type, ...)."""

    exit_code = 1


def _meta(perm: int) -> Meta:
    now = time.time_ns()
    return Meta(mode=perm, uid=os.getuid(), gid=os.getgid(), mtime_ns=now, ctime_ns=now)


def empty_root(store) -> Dirent:
    """An empty directory to start a tree from."""
    return make_dir([], store, meta=_meta(0o755))


def parse_ref_text(text: str) -> Dirent | Block:
    """A dirent or block ref given as text."""
    from vtstore.transcribe import parse_all

    v = parse_all(text.strip())
    if not isinstance(v, Dirent | Block):
        raise FormatError(f"not a dirent or block ref: {text[:60]!r}")
    return v


class WorkTree:
    """A tree being edited: `root` (a directory dirent), the current directory
    `cwd` (a list of names), the `store` holding both, an optional `archive`
    to record states in, and an optional `peer` store for pull and push.

    `resolve(text, store) -> Dirent` names trees in a store (refs, archive
    states); the default takes refs only (the CLI passes its own, which also
    knows `X.vt@SEL/path` and `[clause]NAME`).
    """

    live = False  # edits go to this tree, not to a mount (`vtstore.control.live.LiveTree`)

    def __init__(self, store, root: Dirent | None = None, archive=None, resolve=None):
        self.store = store
        self.root = root if root is not None else empty_root(store)
        if not self.root.is_dir:
            raise ControlError(f"{self.root.name or 'the tree'} is a {self.root.type_name}")
        self.archive = archive
        self.recorded = self.root  # the root as last recorded (or opened)
        self.cwd: list[str] = []
        self.peer = None
        self.peer_spec: str | None = None
        self._resolve = resolve
        # decoded directories by block: an edit reads the directories on its
        # path again, and decoding a directory of 50,000 entries takes 0.5 s
        self._dirs: dict[str, tuple[list[Dirent], bytes | None]] = {}

    def _decoded(self, d: Dirent) -> tuple[list[Dirent], bytes | None]:
        if d.block is None:
            return [], None
        key = str(d.block)
        got = self._dirs.get(key)
        if got is None:
            if not d.is_dir:
                raise ControlError(f"{d.name or 'top'} is a {d.type_name}, not a directory")
            got = decode_dir_data(read_dir_data(d.block, self.store))
            self._remember(d.block, *got)
        return got

    def _remember(self, block, entries: list[Dirent], salt: bytes | None) -> None:
        if len(self._dirs) >= 256:
            self._dirs.pop(next(iter(self._dirs)))
        self._dirs[str(block)] = (entries, salt)

    def entries(self, d: Dirent) -> list[Dirent]:
        """The entries of directory `d` (decoded once per block)."""
        return self._decoded(d)[0]

    # -- paths --------------------------------------------------------------

    @property
    def changed(self) -> bool:
        """Whether the tree differs from the state last recorded (or opened)."""
        return str(self.root) != str(self.recorded)

    def pwd(self) -> str:
        return "/" + "/".join(self.cwd)

    def parts(self, path: str) -> list[str]:
        """The names from the root to `path` (absolute, or relative to `cwd`)."""
        out = [] if path.startswith("/") else list(self.cwd)
        for p in path.split("/"):
            if p in ("", "."):
                continue
            if p == "..":
                if out:
                    out.pop()
                continue
            check_name(p)
            out.append(p)
        return out

    def _at(self, parts: list[str]) -> Dirent:
        e = self.root
        for i, name in enumerate(parts):
            if not e.is_dir:
                raise ControlError(f"/{'/'.join(parts[:i])}: not a directory")
            for sub in self.entries(e):
                if sub.name == name:
                    e = sub
                    break
            else:
                raise ControlError(f"/{'/'.join(parts[: i + 1])}: no such file or directory")
        return e

    def lookup(self, path: str = "") -> Dirent:
        """The dirent at `path`."""
        return self._at(self.parts(path))

    def ref(self, path: str = "") -> Dirent:
        """The dirent at `path`, its blocks stored (so the ref can be used elsewhere)."""
        self.store.flush()
        return self.lookup(path)

    def exists(self, path: str) -> bool:
        try:
            self.lookup(path)
        except ControlError:
            return False
        return True

    def _put_at(self, parts: list[str], new: Dirent | None) -> None:
        """Make `new` the entry at `parts` (None: remove it); rebuild up to the root."""
        if not parts:
            if new is None or not new.is_dir:
                raise ControlError("the top of the tree must stay a directory")
            self.root = new.renamed(self.root.name)
            return
        chain = [self.root]
        for i in range(1, len(parts)):
            chain.append(self._at(parts[:i]))
            if not chain[-1].is_dir:
                raise ControlError(f"/{'/'.join(parts[:i])}: not a directory")
        name = parts[-1]
        child = new.renamed(name) if new is not None else None
        for d in reversed(chain):
            entries = [e for e in self.entries(d) if e.name != name]
            if child is not None:
                entries.append(child)
            salt = self._decoded(d)[1]
            block = make_dir(entries, self.store, salt=salt).block
            entries.sort(key=lambda e: fsenc(e.name))
            self._remember(block, entries, salt)
            child = d.with_changes(block=block)
            name = d.name
        self.root = child

    def _set(self, path: str, new: Dirent | None) -> None:
        self._put_at(self.parts(path), new)

    # -- navigation and reading ----------------------------------------------

    def cd(self, path: str = "/") -> str:
        parts = self.parts(path)
        d = self._at(parts)
        if not d.is_dir:
            raise ControlError(f"{path}: not a directory")
        self.cwd = parts
        return self.pwd()

    def ls(self, path: str = "") -> list[Dirent]:
        """The entries of the directory at `path` (a file: itself)."""
        d = self.lookup(path)
        return list(self.entries(d)) if d.is_dir else [d]

    def inspect(self, path: str = "") -> dict:
        """What is known of `path`: type, sizes, its dirent and block refs, layout."""
        d = self.lookup(path)
        info: dict = {"path": "/" + "/".join(self.parts(path)), "type": d.type_name}
        info["dirent"] = str(d)
        if d.block is not None:
            info["block"] = str(d.block)
        if d.is_file:
            leaves = list(d.block.slices(self.store)) if d.block is not None else []
            info["size"] = d.size
            info["leaves"] = len(leaves)
        elif d.is_dir:
            info.update(tree_stats(d, self.store))
        if d.is_symlink:
            info["target"] = d.target
        m = d.meta
        if m is not None and m.mode is not None:
            info["mode"] = statmod.filemode(m.mode)[1:]
        if m is not None and m.mtime_ns is not None:
            info["mtime"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.mtime_ns / 1e9))
        return info

    def read(self, path: str):
        """The content chunks of the file at `path`."""
        d = self.lookup(path)
        if not d.is_file:
            raise ControlError(f"{path}: is a {d.type_name}, not a file")
        return d.block.chunks(self.store) if d.block is not None else iter(())

    # -- between the tree and the real filesystem ----------------------------

    def get(self, path: str, local: str | None = None) -> str:
        """Write the file or tree at `path` to `local` (default: its name in the
        current directory; an existing directory receives it under its name)."""
        from vtstore.tree.fsexport import Exporter

        d = self.lookup(path)
        name = d.name or "top"
        target = local or name
        if os.path.isdir(target) and (not d.is_dir or os.listdir(target)):
            target = os.path.join(target, name)
        Exporter(self.store).export(d, target)
        return target

    def put(self, local: str, path: str | None = None, store=None, on_file=None) -> Dirent:
        """Store the local file or tree `local` at `path` (default: its name, here).
        `store`: where the blocks go (default ours; a progress bar passes its
        counting wrapper); `on_file(ImportStats)`: told after each file."""
        from vtstore.tree.fsimport import import_tree

        if not os.path.lexists(local):
            raise ControlError(f"{local}: no such local file or directory")
        d, _ = import_tree(local, store or self.store, on_file=on_file)
        path = path or os.path.basename(os.path.normpath(local))
        self._set(self._into(path, os.path.basename(os.path.normpath(local))), d)
        return d

    def _into(self, path: str, name: str) -> str:
        """`path`, or `path/name` when `path` is an existing directory."""
        if self.exists(path) and self.lookup(path).is_dir and path not in ("", "."):
            return path.rstrip("/") + "/" + name
        return path

    # -- edits ------------------------------------------------------------

    def bind(self, path: str, ref: str | Dirent | Block) -> Dirent:
        """Make `path` the tree or file a ref names (its blocks must be in the store)."""
        v = parse_ref_text(ref) if isinstance(ref, str) else ref
        if isinstance(v, Block):
            v = Dirent(T_FILE, meta=_meta(0o644), block=v)
        h = getattr(v.block, "hashcode", None)
        if h is not None and h not in self.store:
            raise ControlError(f"block {h} is not in the store (pull it from a peer)")
        self._set(path, v)
        return v

    def mkdir(self, path: str, parents: bool = False) -> None:
        parts = self.parts(path)
        if not parts:
            raise ControlError("mkdir: the top already exists")
        start = 1 if parents else len(parts)
        for n in range(start, len(parts) + 1):
            try:
                e = self._at(parts[:n])
            except ControlError:
                self._put_at(parts[:n], make_dir([], self.store, meta=_meta(0o755)))
                continue
            if n == len(parts) or not e.is_dir:
                raise ControlError(f"/{'/'.join(parts[:n])}: already exists")

    def rm(self, path: str, recursive: bool = False) -> None:
        parts = self.parts(path)
        if not parts:
            raise ControlError("rm: cannot remove the top of the tree")
        d = self._at(parts)
        if d.is_dir and not recursive and self.entries(d):
            raise ControlError(f"{path}: directory not empty (rm -r removes it)")
        self._put_at(parts, None)
        if self.cwd[: len(parts)] == parts:
            self.cwd = parts[:-1]

    def clone(self, src: str, dst: str) -> None:
        """A copy of `src` at `dst`, sharing every block."""
        d = self.lookup(src)
        self._set(self._into(dst, d.name), d)

    def mv(self, src: str, dst: str) -> None:
        sp = self.parts(src)
        d = self._at(sp)
        dp = self.parts(self._into(dst, d.name))
        if not sp or dp[: len(sp)] == sp:
            raise ControlError(f"mv: cannot move {src} into itself")
        self._put_at(dp, d)
        self._put_at(sp, None)

    def link(self, target: str, path: str) -> None:
        """A symbolic link at `path` pointing to `target`."""
        if self.exists(path):
            raise ControlError(f"{path}: already exists")
        self._set(path, Dirent(T_SYMLINK, meta=_meta(0o777), target=target))

    def splice(self, path: str, offset: int, ref: str, length: int = 0) -> None:
        d = self._file(path)
        v = parse_ref_text(ref)
        block = v.block if isinstance(v, Dirent) else v
        self._set(path, self._with_content(d, splice(d.block, self.store, offset, block, length)))

    def crop(self, path: str, start: int, end: int) -> None:
        d = self._file(path)
        self._set(path, self._with_content(d, crop(d.block, self.store, start, end)))

    def _file(self, path: str) -> Dirent:
        d = self.lookup(path)
        if d.type != T_FILE:
            raise ControlError(f"{path}: is a {d.type_name}, not a file")
        return d

    @staticmethod
    def _with_content(d: Dirent, block) -> Dirent:
        now = time.time_ns()
        meta = (d.meta or Meta()).with_changes(mtime_ns=now, ctime_ns=now)
        return d.with_changes(block=block, meta=meta)

    # -- peers, merge, states ----------------------------------------------

    def resolve(self, text: str, store=None) -> Dirent:
        """The tree `text` names in `store` (default: ours)."""
        store = self.store if store is None else store
        if self._resolve is not None:
            return self._resolve(text, store)
        v = parse_ref_text(text)
        if not isinstance(v, Dirent):
            raise ControlError(f"{text}: a block ref, not a tree")
        return v

    def set_peer(self, spec: str, store) -> None:
        """Use `store` (opened from `spec`) for pull and push."""
        self.close_peer()
        self.peer, self.peer_spec = store, spec

    def close_peer(self) -> None:
        if self.peer is not None:
            peer, self.peer = self.peer, None
            close = getattr(peer, "close", None)
            if close is not None:
                close()

    def _need_peer(self):
        if self.peer is None:
            raise ControlError("no peer store: give one with 'peer STORE'")
        return self.peer

    def pull(self, src: str, path: str | None = None):
        """Copy the tree `src` names in the peer into our store and bind it at
        `path` (default: its name, here); return the sync statistics."""
        from vtstore.sync.tree import sync_tree

        peer = self._need_peer()
        d = self.resolve(src, peer)
        stats = sync_tree(peer, self.store, [d])
        name = d.name or os.path.basename(src.rstrip("/").split("@")[0]) or "pulled"
        self._set(self._into(path, name) if path else name, d)
        return stats

    def push(self, path: str, archive: str | None = None):
        """Copy the tree at `path` to the peer; with `archive`, append it there
        as a new state of that named archive.  Return (dirent, stats)."""
        from vtstore.sync.tree import sync_tree

        peer = self._need_peer()
        d = self.lookup(path)
        stats = sync_tree(self.store, peer, [d])
        if archive:
            from vtstore.archive import store_identity
            from vtstore.named_archives import open_archive

            peer.flush()
            open_archive(peer, archive, create=True).update(d, store_id=store_identity(peer))
        return d, stats

    def merge(self, theirs: str, base: str | None = None) -> list[str]:
        """Merge the tree `theirs` into the current directory three-way against
        `base` (none: everything both sides hold differently conflicts)."""
        from vtstore.tree.merge import merge3

        t = self.resolve(theirs)
        b = self.resolve(base) if base else None
        ours = self._at(self.cwd)
        if not t.is_dir:
            raise ControlError(f"{theirs}: not a directory tree")
        merged, conflicts = merge3(b, ours, t, self.store)
        self._put_at(self.cwd, merged.renamed(ours.name))
        return conflicts

    def sync(self, comment: str | None = None) -> tuple[Dirent, bool]:
        """Store everything; record a new state in the archive if the tree
        changed.  Return (root, whether a state was recorded)."""
        self.store.flush()
        if not self.changed or self.archive is None:
            return self.root, False
        from vtstore.archive import store_identity

        self.archive.update(self.root, comment=comment, store_id=store_identity(self.store))
        self.recorded = self.root
        return self.root, True
