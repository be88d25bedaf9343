"""`vt diff A B`: what changed between two states or trees (see `vtstore.tree.diff`)."""

from __future__ import annotations

from vtstore.cli.common import open_store
from vtstore.cli.refs import (
    archive_target,
    is_ref_text,
    resolve_special,
    split_selector,
    use_clause_of,
)
from vtstore.errors import VTError


class DiffError(VTError):
    """Trouble: a bad argument, or parts of a tree that could not be read (so
    the diff is incomplete).  Exit status 2, as diff(1): 1 means "different"."""

    exit_code = 2


def register(sub) -> None:
    p = sub.add_parser(
        "diff",
        help="show what changed between two states or trees",
        description=(
            "List the paths that differ between A (old) and B (new): archive states"
            " (X.vt@-2, X.vt@1f3a, X.vt@2026-12-01, [clause]NAME@latest, with /path"
            " after them), dirent refs or REF/path.  B may be just @SEL for another"
            " state of A's archive; with only X.vt, the last two states are compared."
            " One line per path: '+' added, '-' removed, 'M' modified (content, mode,"
            " owner, mtime, xattrs, symlink target, device, hard-link group), 'T' type"
            " changed, '!' could not be read; then a summary.  Only directories whose"
            " content blocks differ are read.  Exit status as diff(1): 0 the trees are"
            " the same, 1 they differ, 2 trouble (a bad argument, damaged blocks)."
        ),
    )
    p.add_argument("a", metavar="A", help="the old state, tree or path")
    p.add_argument("b", metavar="B", nargs="?", help="the new one (default: see above)")
    p.add_argument(
        "-l", "--long", action="store_true", help="sizes (old -> new) and what changed, per path"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per change, then totals")
    p.add_argument(
        "--ctime", action="store_true", help="compare change times too (a restore resets them)"
    )
    p.add_argument("--stat", action="store_true", help="only the summary line, not the paths")
    p.set_defaults(func=run)


def _sides(args, store) -> tuple[str, str]:
    """The two SPECIALs: `B` as given, `@SEL` on A's archive, or A's last two states."""
    a, b = args.a, args.b
    if b is not None and b.startswith("@"):
        if is_ref_text(a) and not a.startswith("["):
            raise VTError(f"B as {b} is a state of A's archive, and A is a ref: give B in full")
        plain, _sel = split_selector(a)
        head, slash, inner = plain, "", ""
        if plain.startswith("["):
            end = plain.index("]")
            name, slash, inner = plain[end + 1 :].partition("/")
            head = plain[: end + 1] + name
        elif ".vt/" in plain:
            head, slash, inner = plain.partition(".vt/")
            head, slash = head + ".vt", "/"
        return a, head + b + slash + inner
    if b is None:
        archive, inner, sel = archive_target(a, store)
        if sel is not None:
            raise VTError(f"{a}: give B, the state to compare with")
        base = split_selector(a)[0]
        if inner:
            base = base[: -len(inner)].rstrip("/")
        tail = f"/{inner}" if inner else ""
        return f"{base}@-2{tail}", f"{base}@-1{tail}"
    return a, b


def _tree(text: str, store):
    t = resolve_special(text, store)
    if t.dirent is None:
        raise VTError(f"{text}: a bare block ref has no tree; give a dirent ref")
    return t.dirent


def _size(d) -> str:
    from vtstore.stores.progress import human_size

    return human_size(d.size) if d is not None and (d.is_file or d.is_symlink) else ""


def _line(c, long: bool) -> str:
    from vtstore.tree.diff import DAMAGED

    if c.kind == DAMAGED:
        return f"! {c.path}: {c.error}"
    if not long:
        return f"{c.kind} {c.shown_path}"
    old = _size(c.old)
    new = _size(c.new)
    size = f"{old} -> {new}" if old and new and old != new else (new or old)
    what = f"  ({', '.join(c.what)})" if c.what else ""
    return f"{c.kind} {size:>19}  {c.shown_path}{what}"


def summary(stats) -> str:
    """The one-line summary of a diff."""
    from vtstore.stores.progress import human_size

    parts = [
        f"{stats.added:,} added",
        f"{stats.removed:,} removed",
        f"{stats.modified:,} modified",
    ]
    if stats.type_changed:
        parts.append(f"{stats.type_changed:,} type changed")
    if stats.damaged:
        parts.append(f"{stats.damaged:,} unreadable")
    return (
        ", ".join(parts)
        + f"; +{human_size(stats.added_bytes)} -{human_size(stats.removed_bytes)}"
        + f" ({stats.dirs_read:,} directories read, {stats.dirs_skipped:,} skipped as equal)"
    )


def run(args) -> int:
    try:
        return _run(args)
    except DiffError:
        raise
    except VTError as e:
        raise DiffError(str(e)) from None


def _run(args) -> int:
    import json

    from vtstore.tree.diff import TreeDiff

    use_clause_of(args, args.a)
    with open_store(args, readonly=True) as store:
        a_text, b_text = _sides(args, store)
        a, b = _tree(a_text, store), _tree(b_text, store)
        d = TreeDiff(store, ctime=args.ctime)
        # two files: their line is named after the file, not "."
        top = b.name if b.name and not (a.is_dir or b.is_dir) else "."
        for c in d.changes(a, b, top):
            if args.json:
                print(json.dumps(c.to_json()))
            elif not args.stat:
                print(_line(c, args.long))
        stats = d.stats
    if args.json:
        print(json.dumps({"summary": stats.to_json(), "a": a_text, "b": b_text}))
    elif not args.quiet:
        print(summary(stats))
    if stats.damaged:
        raise DiffError(
            f"{stats.damaged} part(s) could not be read, the diff is incomplete:"
            f" {stats.problems[0]}" + (", ..." if len(stats.problems) > 1 else "")
        )
    return 1 if stats.changes else 0
