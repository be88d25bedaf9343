"""`vt migrate SRC DST WHAT...`: copy trees and archives into a store of another
hash class, re-hashing every block (see `vtstore.sync.migrate`)."""

from __future__ import annotations

import os
import sys

from vtstore.errors import ConfigError, FormatError, VTError


def register(sub) -> None:
    p = sub.add_parser(
        "migrate",
        help="copy trees into a store of another hash class",
        description=(
            "Copy each WHAT from store SRC into store DST, whose hash class differs,"
            " re-hashing every block and rewriting every indirect block, directory"
            " and dirent so the copy references only DST's hashes.  WHAT is an"
            " archive X.vt (every state goes, with its time, uuid, name and comment,"
            " to a new archive X.NEWCLASS.vt, or --output; X.NEWCLASS.vt.map gets"
            " one line per state with the old and new top dirents), a named archive"
            " [clause]NAME (to DST's archive NAME), or a dirent or block ref (the new"
            " ref is printed); no WHAT migrates every archive SRC keeps.  Resumable: the mapping of old"
            " to new blocks is kept in --map (default DST-migrate-OLD-NEW.map"
            " beside a datadir DST), and a second run reuses it.  Options go"
            " before SRC (WHAT may be empty, so argparse takes what follows as WHAT)."
        ),
    )
    p.add_argument("src", metavar="SRC", help="the store to read (a store spec)")
    p.add_argument("dst", metavar="DST", help="the store to write (a store spec)")
    p.add_argument(
        "what",
        nargs="*",
        metavar="WHAT",
        help="X.vt, [clause]NAME, or a dirent or block ref (none: every archive SRC keeps)",
    )
    p.add_argument(
        "--hash",
        dest="to_hash",
        metavar="NAME",
        help="the hash class of DST (needed when DST is a new datadir)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="the migrated archive (one X.vt only)")
    p.add_argument("--map", dest="map_path", metavar="FILE", help="where to keep the block mapping")
    p.add_argument(
        "--no-map", action="store_true", help="keep the mapping in memory only (not resumable)"
    )
    p.add_argument(
        "--commit-every",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how often the mapping is made durable (default 2): what a resume reuses",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="afterwards, compare every migrated tree with its original, entry by entry"
        " and byte by byte",
    )
    p.set_defaults(func=run)


def _is_path_spec(text: str) -> bool:
    return not any(c in text for c in ":[|(") and text.strip() != ""


def run(args) -> int:
    from vtstore.config import load_config
    from vtstore.hashes import hashclass_by_name
    from vtstore.stores.spec import open_store_spec
    from vtstore.sync.migrate import Migrator, default_archive_output, verify_trees

    config = load_config(getattr(args, "config_path", None))
    try:
        newclass = hashclass_by_name(args.to_hash) if args.to_hash else None
    except ValueError as e:
        raise ConfigError(str(e)) from None
    archives = [w for w in args.what if w.endswith(".vt") or os.path.isfile(w)]
    if args.output and (len(archives) != 1 or len(args.what) != 1):
        raise ConfigError("--output names the migrated archive of exactly one X.vt")
    with open_store_spec(args.src, config=config, readonly=True) as src:
        with open_store_spec(args.dst, config=config, hashclass=newclass) as dst:
            if newclass is None and dst.hashclass is src.hashclass:
                from vtstore.sync.migrate import MigrateError

                raise MigrateError(
                    f"{dst.name} holds {dst.hashclass.hashname} blocks, as {src.name} does:"
                    " name the new class with --hash NAME"
                )
            mapfile = None
            if args.map_path:
                mapfile = args.map_path
            elif not args.no_map:
                # beside a datadir (named by path or by a clause), not inside it
                where = getattr(dst, "path", None) if hasattr(dst, "archive_path") else None
                if where is None and _is_path_spec(args.dst):
                    where = args.dst
                if where is not None:
                    old, new = src.hashclass.hashname, dst.hashclass.hashname
                    mapfile = f"{str(where).rstrip('/')}-migrate-{old}-{new}.map"
            m = Migrator(src, dst, mapfile=mapfile, commit_every=args.commit_every)
            if m.map.loaded or m.map.dropped:
                print(
                    f"vt migrate: resuming with {m.map.loaded} blocks mapped"
                    + (f" ({m.map.dropped} no longer in DST)" if m.map.dropped else ""),
                    file=sys.stderr,
                )
            checks = []
            jobs = _named_archives(src, dst) if not args.what else []
            for name, path, out in jobs:
                pairs = m.archive(path, out)
                checks.extend(pairs)
                if not args.quiet:
                    print(f"{name}: {len(pairs)} states -> {out}", file=sys.stderr)
            for w in args.what:
                if w.startswith("[") and "]" in w:
                    name = w[w.index("]") + 1 :]
                    path = _archive_path(src, name, "SRC")
                    out = args.output or _archive_path(dst, name, "DST")
                    pairs = m.archive(path, out)
                    checks.extend(pairs)
                    if not args.quiet:
                        print(f"{w}: {len(pairs)} states -> {out}", file=sys.stderr)
                elif w in archives:
                    out = args.output or default_archive_output(w, dst.hashclass)
                    pairs = m.archive(w, out)
                    checks.extend(pairs)
                    if not args.quiet:
                        print(f"{w}: {len(pairs)} states -> {out}", file=sys.stderr)
                else:
                    old_ref = _parse_ref(w)
                    from vtstore.tree.dirent import Dirent

                    if isinstance(old_ref, Dirent):
                        new_ref = m.dirent(old_ref)
                        checks.append((old_ref, new_ref))
                    else:
                        new_ref = m.block(old_ref)
                    m.commit()
                    print(new_ref)
            m.commit()
            if args.verify:
                n = sum(verify_trees(a, src, b, dst) for a, b in checks)
                if not args.quiet:
                    print(f"vt migrate: verified {n} entries", file=sys.stderr)
            s = m.stats
            if not args.quiet:
                print(
                    f"vt migrate: {s.leaves_hashed} leaves ({s.leaf_bytes} bytes) re-hashed,"
                    f" {s.indirect} indirect blocks and {s.dirs} directories rewritten,"
                    f" {s.reused} reused from the map",
                    file=sys.stderr,
                )
    return 0


def _archive_path(store, name: str, which: str) -> str:
    path_of = getattr(store, "archive_path", None)
    if path_of is None:
        raise VTError(f"{which} {store.name} keeps no named archives")
    return str(path_of(name))


def _named_archives(src, dst) -> list[tuple[str, str, str]]:
    """(name, source path, destination path) of every archive SRC keeps."""
    exports = {k: v for k, v in src.exports.items() if str(v).endswith(".vt")}
    if not exports:
        raise VTError(f"{src.name} keeps no named archives: say what to migrate")
    return [(n, str(p), _archive_path(dst, n, "DST")) for n, p in sorted(exports.items())]


def _parse_ref(text: str):
    from vtstore.blocks import Block
    from vtstore.transcribe import parse_all
    from vtstore.tree.dirent import Dirent

    try:
        v = parse_all(text)
    except FormatError as e:
        raise VTError(f"{text[:60]!r} is neither an archive nor a ref: {e}") from None
    if not isinstance(v, Dirent | Block):
        raise VTError(f"{text[:60]!r} is neither an archive nor a dirent or block ref")
    return v
