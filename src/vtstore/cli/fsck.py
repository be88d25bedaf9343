"""`vt fsck [--repair] [REF|X.vt ...]`: check a store, a ref or an archive.

With no argument the whole store is checked: every record of every data file,
every block's hash, and the index against the data.  `--repair` drops what is
damaged after reporting it (and keeps whatever can be salvaged).  The exit code
is 1 when damage was found, repaired or not; crash residue is not damage.

Checking one ref or archive is `fsck_ref`, the hook the tree and archive layers
fill in.
"""

from __future__ import annotations

from vtstore.cli.common import open_store, print_lines, progress_bar
from vtstore.errors import NotAvailableError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fsck",
        help="check a store, a ref or an archive",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument(
        "refs",
        nargs="*",
        metavar="REF|X.vt",
        help="a block or dirent ref, or an archive, to check (default: the whole store)",
    )
    p.add_argument("--repair", action="store_true", help="drop damaged records and index entries")
    p.set_defaults(func=run)


def fsck_ref(args, store, ref_text: str) -> int:
    """Check everything reachable from one ref or archive (its latest state);
    return an exit code.

    The hook for the tree and archive layers: it uses `vtstore.cli.refs` and
    `vtstore.tree.check` when they are there (replace this function, or this
    module's `FSCK_REF`, to check more), else says it is not available.
    """
    try:
        from vtstore.cli.refs import resolve_special
        from vtstore.tree.check import check
    except ImportError:
        raise NotAvailableError(
            f"checking a ref or archive ({ref_text}) is not available yet"
        ) from None
    target = resolve_special(ref_text, store)
    obj = target.dirent if target.dirent is not None else target.block
    with progress_bar(args, desc="fsck") as bar:
        c = check(obj, store, on_block=bar.update)
    print_lines([f"damage: {p}" for p in c.problems])
    state = "ok" if not c.problems else f"{len(c.problems)} problem(s)"
    print(f"{ref_text}: {state}; {c.blocks} blocks ({c.bytes} octets) checked")
    return 1 if c.problems else 0


FSCK_REF = fsck_ref


def fsck_whole_store(args, store) -> int:
    """Check every block of `store`; print the findings; 1 if any damage."""
    from vtstore.stores.fsck import fsck_store
    from vtstore.stores.spec import store_info

    total = store_info(store).get("bytes_on_disk")
    with progress_bar(args, total=total, desc="fsck") as bar:
        reports = fsck_store(store, repair=args.repair, progress=bar.update)
    damaged = False
    for rep in reports:
        lines = rep.lines()
        if not getattr(args, "verbose", 0):
            lines = [x for x in lines if not x.startswith("note: ")] or lines
        print_lines(lines)
        damaged = damaged or not rep.ok
    return 1 if damaged else 0


def run(args) -> int:
    with open_store(args, readonly=not args.repair) as store:
        if not args.refs:
            return fsck_whole_store(args, store)
        rc = 0
        for ref in args.refs:
            rc = max(rc, FSCK_REF(args, store, ref))
        return rc
