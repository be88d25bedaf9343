"""The control socket of a live mount, and its client.

A running `vt mount` listens on a UNIX socket (mode 0600, in the runtime
directory: `$XDG_RUNTIME_DIR`, else `/tmp/vt-UID`, named after the mount
point's real path).  A request is one JSON line `{"op": OP, "args": [...]}`,
the reply one JSON line `{"ok": true, "result": ...}` or
`{"ok": false, "error": TEXT}`.  The operations act on the live tree, through
the same code as the `x-vt-*` xattr controls:

- `sync`: store everything and record a state now (as `x-vt-control sync`);
- `stats`: the tree's counts, the states recorded, the last state's ref;
- `ref [PATH]`, `ls [PATH]`, `inspect [PATH]`: read the tree (after storing
  pending writes);
- `bind PATH REF`: put the tree or file REF names at PATH (a new name);
- `clone SRC DST`: a copy of SRC at DST sharing every block (a new name);
- `merge THEIRS [BASE]`: merge the tree THEIRS into the mount's top,
  three-way, adding the entries the top lacks (an entry both hold
  differently is kept as ours, THEIRS's as NAME.vt-conflict).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading

from vtstore.control.worktree import ControlError, WorkTree, parse_ref_text
from vtstore.errors import VTError

#: the longest request line taken (a ref is a few hundred octets)
MAX_REQUEST = 1 << 20


def runtime_dir() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return os.path.join(base, "vt")
    return f"/tmp/vt-{os.getuid()}"


def socket_path(mountpoint: str) -> str:
    """Where the mount at `mountpoint` listens."""
    key = hashlib.sha256(os.fsencode(os.path.realpath(mountpoint))).hexdigest()[:20]
    return os.path.join(runtime_dir(), f"mount-{key}.sock")


class LiveError(ControlError):
    """The mount refused a request, or cannot be reached."""


class ControlServer:
    """Serves the control socket of one mount; `start()`, then `stop()`."""

    def __init__(self, mount, mountpoint: str):
        self.mount = mount
        self.fs = mount.fs
        self.path = socket_path(mountpoint)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one request at a time

    def start(self) -> None:
        d = os.path.dirname(self.path)
        os.makedirs(d, mode=0o700, exist_ok=True)
        st = os.lstat(d)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise LiveError(f"{d}: not a private directory of this user; no control socket")
        try:
            os.unlink(self.path)  # a dead mount's socket
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            s.bind(self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        s.listen(8)
        self._sock = s
        self._thread = threading.Thread(target=self._accept, name="vt-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        s, self._sock = self._sock, None
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _accept(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            for line in iter(lambda: f.readline(MAX_REQUEST), b""):
                too_long = len(line) >= MAX_REQUEST and not line.endswith(b"\n")
                while line and not line.endswith(b"\n") and too_long:
                    line = f.readline(MAX_REQUEST)  # skip the rest, in bounded pieces
                try:
                    if too_long:
                        raise LiveError(f"a request over {MAX_REQUEST} octets")
                    req = json.loads(line)
                    op, args = req["op"], [str(a) for a in req.get("args", [])]
                    with self._lock:
                        reply = {"ok": True, "result": self.handle(str(op), args)}
                except (VTError, OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                    reply = {"ok": False, "error": _text(e)}
                try:
                    f.write(json.dumps(reply).encode() + b"\n")
                    f.flush()
                except OSError:  # the client left
                    return

    # -- the operations ------------------------------------------------------

    def _snapshot(self) -> WorkTree:
        return WorkTree(self.fs.store, self.fs.sync())

    def handle(self, op: str, args: list[str]):
        """Do `op` on the live tree; return what the reply carries."""
        from vtstore.fs.control import insert_dirent

        n = len(args)
        if op == "sync" and n == 0:
            recorded = self.mount.sync()
            return {"recorded": recorded, "ref": str(self.mount.last)}
        if op == "stats" and n == 0:
            from vtstore.tree.dir import tree_stats

            wt = self._snapshot()
            out = tree_stats(wt.root, wt.store)
            out.update(states=self.mount.states, ref=str(self.mount.last))
            return out
        if op == "ref" and n <= 1:
            return str(self._snapshot().lookup(args[0] if args else "/"))
        if op == "ls" and n <= 1:
            return [str(e) for e in self._snapshot().ls(args[0] if args else "/")]
        if op == "inspect" and n <= 1:
            return self._snapshot().inspect(args[0] if args else "/")
        if op == "bind" and n == 2:
            self.fs._check_write()
            v = parse_ref_text(args[1])
            wt = WorkTree(self.fs.store)
            wt.bind("x", v)  # checks the blocks are in the store, makes a file of a block
            insert_dirent(self.fs, args[0], wt.lookup("x"))
            return None
        if op == "clone" and n == 2:
            self.fs._check_write()
            insert_dirent(self.fs, args[1], self._snapshot().lookup(args[0]))
            return None
        if op == "merge" and n in (1, 2):
            return self._merge(*args)
        raise LiveError(f"unknown control {op!r} with {n} arguments")

    def _merge(self, theirs: str, base: str | None = None) -> list[str]:
        from vtstore.fs.control import insert_dirent
        from vtstore.tree.dir import dir_entries

        self.fs._check_write()
        wt = self._snapshot()
        ours = {e.name: e for e in dir_entries(wt.root, wt.store)}
        conflicts = wt.merge(theirs, base)
        for e in dir_entries(wt.root, wt.store):
            if e.name not in ours:
                insert_dirent(self.fs, e.name, e)
        return conflicts


def _text(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def call(mountpoint: str, op: str, *args, timeout: float = 600.0):
    """Ask the mount at `mountpoint` to do `op`; return the reply's result."""
    path = socket_path(mountpoint)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise LiveError(f"{mountpoint}: no vt mount answers there ({_text(e)})") from None
    with s, s.makefile("rwb") as f:
        f.write(json.dumps({"op": op, "args": list(args)}).encode() + b"\n")
        f.flush()
        line = f.readline(MAX_REQUEST * 16)
    if not line:
        raise LiveError(f"{mountpoint}: the mount closed the control connection")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise LiveError(f"{mountpoint}: {reply.get('error')}")
    return reply.get("result")


def is_live(path: str) -> bool:
    """Whether `path` is a directory a vt mount's control socket answers for."""
    return os.path.isdir(path) and os.path.exists(socket_path(path))


class LiveTree:
    """The `WorkTree` interface over a live mount, for `vt ftp MOUNTPOINT`.

    Files and directories are made, removed, moved and copied through the
    mount itself (the kernel sees every change at once); splice and crop are
    the mount's `x-vt-control` xattr; bind, clone, merge, sync and reading
    refs go over the control socket.  The mount records the states (on its
    ticker, `sync`, and at unmount)."""

    live = True
    archive = None

    def __init__(self, mountpoint: str):
        self.mountpoint = os.path.abspath(mountpoint)
        self.cwd: list[str] = []
        call(self.mountpoint, "stats")  # fail now if no mount answers
        self.peer_spec = None

    parts = WorkTree.parts
    pwd = WorkTree.pwd

    def _abs(self, path: str) -> str:
        return "/" + "/".join(self.parts(path))

    def local(self, path: str) -> str:
        """The path of `path` through the mount."""
        return os.path.join(self.mountpoint, *self.parts(path))

    def cd(self, path: str = "/") -> str:
        if not os.path.isdir(self.local(path)):
            raise LiveError(f"{self._abs(path)}: not a directory in the mount")
        self.cwd = self.parts(path)
        return self.pwd()

    def ls(self, path: str = ""):
        return [parse_ref_text(t) for t in call(self.mountpoint, "ls", self._abs(path))]

    def lookup(self, path: str = ""):
        return parse_ref_text(call(self.mountpoint, "ref", self._abs(path)))

    ref = lookup

    def exists(self, path: str) -> bool:
        return os.path.lexists(self.local(path))

    def inspect(self, path: str = "") -> dict:
        return call(self.mountpoint, "inspect", self._abs(path))

    def read(self, path: str):
        with open(self.local(path), "rb") as f:
            yield from iter(lambda: f.read(1 << 20), b"")

    def get(self, path: str, local: str | None = None) -> str:
        import shutil

        src = self.local(path)
        name = os.path.basename(src.rstrip("/")) or "top"
        target = local or name
        if os.path.isdir(target):
            target = os.path.join(target, name)
        if os.path.isdir(src) and not os.path.islink(src):
            shutil.copytree(src, target, symlinks=True)
        else:
            shutil.copy2(src, target, follow_symlinks=False)
        return target

    def put(self, local: str, path: str | None = None) -> None:
        import shutil

        if not os.path.lexists(local):
            raise LiveError(f"{local}: no such local file or directory")
        name = os.path.basename(os.path.normpath(local))
        dst = self.local(path or name)
        if os.path.isdir(dst) and path not in (None, "", "."):
            dst = os.path.join(dst, name)
        if os.path.isdir(local) and not os.path.islink(local):
            shutil.copytree(local, dst, symlinks=True)
        else:
            shutil.copy2(local, dst, follow_symlinks=False)

    def bind(self, path: str, ref: str) -> None:
        call(self.mountpoint, "bind", self._abs(path), ref)

    def clone(self, src: str, dst: str) -> None:
        call(self.mountpoint, "clone", self._abs(src), self._abs(dst))

    def mkdir(self, path: str, parents: bool = False) -> None:
        (os.makedirs if parents else os.mkdir)(self.local(path))

    def rm(self, path: str, recursive: bool = False) -> None:
        import shutil

        p = self.local(path)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p) if recursive else os.rmdir(p)
        else:
            os.unlink(p)

    def mv(self, src: str, dst: str) -> None:
        s, d = self.local(src), self.local(dst)
        if os.path.isdir(d):
            d = os.path.join(d, os.path.basename(s))
        os.rename(s, d)

    def link(self, target: str, path: str) -> None:
        os.symlink(target, self.local(path))

    def splice(self, path: str, offset: int, ref: str, length: int = 0) -> None:
        os.setxattr(self.local(path), "x-vt-control", f"splice {offset} {ref} {length}".encode())

    def crop(self, path: str, start: int, end: int) -> None:
        os.setxattr(self.local(path), "x-vt-control", f"crop {start} {end}".encode())

    def merge(self, theirs: str, base: str | None = None) -> list[str]:
        return call(self.mountpoint, "merge", theirs, *([base] if base else []))

    def sync(self, comment: str | None = None):
        r = call(self.mountpoint, "sync")
        return parse_ref_text(r["ref"]) if r["ref"] != "None" else None, r["recorded"]

    def _no_peer(self, *_args):
        raise LiveError("pull, push and peer work on archives and refs, not on a live mount")

    set_peer = pull = push = _no_peer

    def close_peer(self) -> None:
        pass
