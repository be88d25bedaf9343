"""`vt mount`: mount an archive, a named archive or a dirent ref with FUSE."""

from __future__ import annotations

import os
import sys

from vtstore.cli.common import CommandLog, add_filter_options, filters_from_args
from vtstore.errors import VTError

log = CommandLog(__name__)


def register(sub) -> None:
    p = sub.add_parser(
        "mount",
        help="mount an archive or ref with FUSE",
        description=(
            "Mount SPECIAL (X.vt, [clause]name, or a dirent ref D{...}) at MOUNTPOINT,"
            " optionally only SUBPATH of it (or X.vt/SUBPATH).  One state of an"
            " archive (X.vt@-2, X.vt@ID, X.vt@2026-12-01: see 'vt log') is mounted"
            " read-only.  Without MOUNTPOINT"
            " the mount goes to a new directory X for X.vt (else the name); if that"
            " exists (the directory X.vt was packed from, say) vt refuses rather"
            " than mount over it.  An archive that does not exist yet is mounted"
            " (empty) only with --create."
            " Changes are stored as blocks and recorded as a new archive state on"
            " fsync, every --sync-interval seconds, and at unmount, each time only"
            " if something changed.  Unmount with 'vt umount MOUNTPOINT'; SIGINT"
            " and SIGTERM also sync and unmount."
        ),
    )
    p.add_argument("special", metavar="SPECIAL")
    p.add_argument("mountpoint", nargs="?", metavar="MOUNTPOINT")
    p.add_argument("subpath", nargs="?", metavar="SUBPATH")
    p.add_argument("-r", "--readonly", action="store_true", help="mount read-only")
    p.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPT[,OPT...]",
        help="append (append-only: no truncation, deletes or renames), allow_other, ro",
    )
    p.add_argument(
        "-a", "--all", dest="history", action="store_true", help="history view: every state"
    )
    p.add_argument(
        "-e", "--exec", dest="exec_command", metavar="COMMAND", help="run COMMAND, unmount"
    )
    p.add_argument("-f", "--foreground", action="store_true", help="do not detach")
    p.add_argument("--sync-interval", type=float, default=60.0, metavar="SECONDS", help="0: never")
    p.add_argument("--scratch-dir", metavar="DIR", help="where written data waits (default TMP)")
    p.add_argument("--cache-size", type=int, default=128, metavar="MiB", help="block cache")
    p.add_argument(
        "--stream-mb",
        type=int,
        default=64,
        metavar="MiB",
        help="store a file still open for writing each time this much was written to it"
        " (logs, downloads: bounds the scratch space per file; 0: only at close and sync)",
    )
    p.add_argument("-m", "--comment", help="comment stored with the recorded states")
    p.add_argument(
        "--create",
        action="store_true",
        help="mount an archive that does not exist yet (empty; created at the first state)",
    )
    p.add_argument(
        "--every-archive",
        dest="all_archives",
        action="store_true",
        help="with -a: vt mount -a --every-archive MOUNTPOINT shows every archive of"
        " the store, every state, and a 'latest' link per archive",
    )
    p.add_argument(
        "--refs",
        action="store_true",
        help="vt mount --refs MOUNTPOINT: the refs view of the store, read-only:"
        " MOUNTPOINT/D{...}/path is that dirent ref's tree, resolved on demand",
    )
    p.add_argument(
        "--salt-dirs",
        action="store_true",
        help="salt the directory blocks this mount writes (as vt pack --salt-dirs);"
        " a salted tree keeps its salt without it",
    )
    # what the rules match lives in the mount's scratch only, never in the store
    add_filter_options(p, source=False)
    p.set_defaults(func=run)


def _options(args) -> set[str]:
    opts = set()
    for o in args.options:
        opts.update(x.strip() for x in o.split(",") if x.strip())
    unknown = opts - {"append", "allow_other", "ro", "rw"}
    if unknown:
        raise VTError(f"unknown mount options: {', '.join(sorted(unknown))}")
    return opts


def _default_mountpoint(special: str) -> str:
    from vtstore.cli.refs import is_ref_text, parse_ref, split_selector

    special = split_selector(special)[0]

    if special.startswith("[") and "]" in special:
        name = special.split("]", 1)[1]
        if name:
            return name
    elif is_ref_text(special):
        value, rest = parse_ref(special)
        name = rest.strip("/").rsplit("/", 1)[-1] or getattr(value, "name", "")
        if name:
            return name
    else:
        base = os.path.basename(special.rstrip("/"))
        if base.endswith(".vt") and len(base) > 3:
            return base[:-3]
    raise VTError(f"{special}: cannot derive a mountpoint: give MOUNTPOINT")


def run(args) -> int:
    from vtstore.cli.refs import split_selector, use_clause_of
    from vtstore.cli.umount import dead_mount

    if getattr(args, "all_archives", False) and not args.history:
        raise VTError("--every-archive goes with -a: vt mount -a --every-archive MOUNTPOINT")
    if getattr(args, "refs", False) or getattr(args, "all_archives", False):
        # the one positional is the mountpoint: the view is of the whole store
        if args.mountpoint or (args.history and args.refs):
            raise VTError("--refs and -a --every-archive take only MOUNTPOINT (and not each other)")
        args.mountpoint, args.special = args.special, ""
        args.readonly = True
    use_clause_of(args, args.special)
    opts = _options(args)
    readonly = args.readonly or "ro" in opts or args.history
    # one state picked by @SEL is a view of the past: no new states on top of it
    readonly = readonly or split_selector(args.special)[1] is not None
    mountpoint = args.mountpoint or _default_mountpoint(args.special)
    created = False
    if dead_mount(mountpoint):
        raise VTError(
            f"{mountpoint}: a mount whose process died is still attached here"
            f" (transport endpoint is not connected): run 'vt umount {mountpoint}'"
        )
    if not args.mountpoint and os.path.lexists(mountpoint):
        # the default X of X.vt is most likely the very directory X.vt was packed from
        raise VTError(
            f"{args.special}: no MOUNTPOINT given and the default {mountpoint!r} exists:"
            " give MOUNTPOINT (vt mount never mounts over a directory it was not given)"
        )
    if not os.path.exists(mountpoint):
        if args.mountpoint:
            raise VTError(f"{mountpoint}: no such directory")
        os.mkdir(mountpoint)
        created = True
    if not os.path.isdir(mountpoint):
        raise VTError(f"{mountpoint}: not a directory")
    if os.path.ismount(mountpoint):
        raise VTError(f"{mountpoint}: already a mount point")
    if not os.path.exists("/dev/fuse"):
        raise VTError("/dev/fuse is missing: FUSE is not available here")
    mountpoint = os.path.abspath(mountpoint)
    if args.foreground or args.exec_command:
        try:
            return _serve(args, opts, readonly, mountpoint, None)
        finally:
            if created:
                _rmdir_quiet(mountpoint)
    return _daemonize(args, opts, readonly, mountpoint, created)


def _rmdir_quiet(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _daemonize(args, opts, readonly, mountpoint, created) -> int:
    """Fork; the child mounts and says when it is serving; the parent waits for that."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        with os.fdopen(r, "rb") as f:
            msg = f.read()
        if msg == b"ok":
            return 0
        os.waitpid(pid, 0)
        if created:
            _rmdir_quiet(mountpoint)
        raise VTError(msg.decode(errors="replace") or "the mount process died")
    os.close(r)
    os.setsid()
    code = 1
    try:
        code = _serve(args, opts, readonly, mountpoint, w)
    except VTError as e:
        _tell(w, str(e))
    except OSError as e:  # the environment refused something: one line, as in main
        where = f"{os.fsdecode(e.filename)}: " if e.filename is not None else ""
        _tell(w, f"{where}{e.strerror or e}")
    except BaseException as e:  # the parent must hear of any failure
        log.exception("mount failed")
        _tell(w, f"{type(e).__name__}: {e}")
    finally:
        if created:
            _rmdir_quiet(mountpoint)
        os._exit(code)


def _tell(fd: int | None, msg: str) -> None:
    if fd is None:
        return
    try:
        os.write(fd, msg.encode())
        os.close(fd)
    except OSError:
        pass


def _detach_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _resolve(args, store, readonly: bool):
    """(archive or None, top dirent the mount starts from, subpath parts)."""
    from vtstore.blocks import Block
    from vtstore.cli.refs import archive_target, is_ref_text, parse_ref, select_entry
    from vtstore.tree.dir import make_dir, resolve, split_path

    special = args.special
    sub = split_path(args.subpath) if args.subpath else []
    if is_ref_text(special) and not special.startswith("["):
        # D{...}/path: the whole ref is the top (its hard links may have their file
        # outside the path), and the state printed at unmount is the whole new top
        value, rest = parse_ref(special)
        if isinstance(value, Block):
            raise VTError(f"{special}: a block ref has no tree; mount a dirent ref")
        sub = split_path(rest) + sub
        if sub:
            resolve(value, "/".join(sub), store)
        return None, value, sub
    archive, inner, sel = archive_target(special, store)
    sub = split_path(inner) + sub
    if not archive.exists() and not args.create:
        # a mistyped name must not become a new, empty archive
        raise VTError(f"{archive.path}: no such archive (--create mounts a new one)")
    if sel is not None:
        if args.history:
            raise VTError(f"{special}: -a shows every state; mount the archive without @{sel}")
        last = select_entry(archive, sel, text=special)
    else:
        last = archive.last()
    if last is None:
        if readonly and not args.history:
            raise VTError(f"{archive.path}: archive has no states")
        if sub:
            raise VTError(f"{special}: the archive has no states, so no {'/'.join(sub)!r}")
        top = make_dir([], store)
    else:
        top = last.dirent
    if sub:
        resolve(top, "/".join(sub), store)
    return archive, top, sub


def _check_readable(root, store, special: str) -> None:
    """Refuse to mount a tree whose top directory cannot be read."""
    from vtstore.tree.dir import dir_entries

    try:
        dir_entries(root, store)
    except (VTError, KeyError) as e:
        raise VTError(f"{special}: the top directory cannot be read: {e}") from None


def _check_scratch_dir(path: str) -> None:
    """Fail before mounting when written data could not wait in `path` (else
    every write to the mount would fail with ENOENT or EACCES)."""
    import tempfile

    try:
        fd, name = tempfile.mkstemp(dir=path, prefix=".vt-scratch-check-")
    except OSError as e:
        raise VTError(f"--scratch-dir {path}: {e.strerror or e}") from None
    os.close(fd)
    os.unlink(name)


def _serve(args, opts, readonly, mountpoint, ready_fd) -> int:
    from vtstore.cli.common import open_store

    try:
        import pyfuse3  # noqa: F401
    except ImportError:
        raise VTError("pyfuse3 is not installed: vt mount needs it") from None
    from vtstore.fs.filesystem import FileSystem
    from vtstore.fs.fuse import Operations, mount_options
    from vtstore.fs.history import History, HistoryLinks, history_top
    from vtstore.fs.mount import Mount, serve
    from vtstore.tree.dir import resolve
    from vtstore.tree.links import LinkResolver

    if args.scratch_dir and not readonly:
        _check_scratch_dir(args.scratch_dir)
    with open_store(args, readonly=readonly) as store:
        refs = getattr(args, "refs", False)
        whole = getattr(args, "all_archives", False)
        archive, top, sub = (None, None, []) if refs or whole else _resolve(args, store, readonly)
        kw = {
            "scratch_dir": args.scratch_dir,
            "cache_bytes": max(1, args.cache_size) << 20,
            "append_only": "append" in opts,
            "stream_bytes": max(0, getattr(args, "stream_mb", 64)) << 20,
        }
        if refs:
            from vtstore.fs.refs import refs_filesystem

            fs = refs_filesystem(store, **kw)
            mount = None
        elif whole:
            from vtstore.fs.history import StoreHistory

            fs = FileSystem(store, history_top(), readonly=True, **kw)
            fs.links = HistoryLinks(fs, depth=2)  # archive/state: each state its own groups
            fs.refresh_root = StoreHistory(store)
            mount = None
        elif args.history:
            if archive is None:
                raise VTError("-a needs an archive")
            fs = FileSystem(store, history_top(), readonly=True, **kw)
            fs.links = HistoryLinks(fs)  # each state has its own hard-link groups
            fs.refresh_root = History(archive)
            mount = None
        else:
            root = resolve(top, "/".join(sub), store) if sub else top
            if not root.is_dir:
                raise VTError(f"{args.special}: is a {root.type_name}, not a directory")
            _check_readable(root, store, args.special)
            if archive is not None and not readonly:
                # states written here must be able to name this store's blocks
                archive.check_store(store)
            # a sub-path's hard links may have their file elsewhere in the tree
            outer = LinkResolver(top, store) if sub else None
            if getattr(args, "salt_dirs", False) and not readonly:
                from vtstore.tree.dir import new_salt

                kw["dir_salt"] = new_salt()  # used where the tree has no salt yet
            fs = FileSystem(store, root, readonly=readonly, outer=outer, **kw)
            filters = None if readonly else filters_from_args(args, config_rules=True)
            mount = Mount(fs, archive, top, sub, comment=args.comment, filters=filters)
            fs.on_sync = mount.sync
        ops = Operations(fs, mount)
        options = mount_options(readonly, "allow_other" in opts)

        def ready():
            if ready_fd is not None:
                _tell(ready_fd, "ok")
                _detach_stdio()

        try:
            status = serve(
                ops,
                mount,
                mountpoint,
                options,
                sync_interval=args.sync_interval,
                command=args.exec_command,
                on_ready=ready,
            )
        except RuntimeError as e:
            raise VTError(f"mounting {mountpoint} failed: {e}") from None
        if mount is not None and archive is None and mount.last is not None:
            print(mount.last, file=sys.stdout, flush=True)
        if fs.errors:
            log.error("%d files could not be stored", len(fs.errors))
            return status or 1
        return status
