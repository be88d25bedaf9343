"""`vt fsck [--repair] [REF|X.vt ...]`: check a store, a ref or an archive.

With no argument the whole store is checked: every record of every data file,
every block's hash, and the index against the data.  `--repair` drops what is
damaged after reporting it (and keeps whatever can be salvaged).  The exit code
is 1 when damage was found, repaired or not; crash residue is not damage.

An archive X.vt is checked line by line (a line that does not parse, and an
incomplete last line, as left by a crash mid-append or a file cut short, are
damage) and every state's reachable blocks are checked.  `--repair` sets the
damaged lines aside in X.vt.damaged and keeps the good ones, in order; states
whose blocks are missing are reported, not removed.

Checking one ref is `fsck_ref`, the hook the tree layer fills in.
"""

from __future__ import annotations

from vtstore.cli.common import open_store, print_lines, progress_bar
from vtstore.errors import NotAvailableError, VTError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fsck",
        help="check a store, a ref or an archive",
        description=" ".join(__doc__.split("\n\n")[1:3]).replace("\n", " "),
    )
    p.add_argument(
        "refs",
        nargs="*",
        metavar="REF|X.vt",
        help="a block or dirent ref, or an archive, to check (default: the whole store)",
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="drop damaged records and index entries; for X.vt, set damaged lines aside"
        " in X.vt.damaged",
    )
    p.set_defaults(func=run)


def fsck_ref(args, store, ref_text: str) -> int:
    """Check everything reachable from one ref, or every line and state of an
    archive (`fsck_archive`); return an exit code.

    The hook for the tree and archive layers: it uses `vtstore.cli.refs` and
    `vtstore.tree.check` when they are there (replace this function, or this
    module's `FSCK_REF`, to check more), else says it is not available.
    """
    try:
        from vtstore.cli.refs import is_ref_text, resolve_special
        from vtstore.tree.check import check
    except ImportError:
        raise NotAvailableError(
            f"checking a ref or archive ({ref_text}) is not available yet"
        ) from None
    if not is_ref_text(ref_text):
        return fsck_archive(args, store, ref_text)
    target = resolve_special(ref_text, store)
    obj = target.dirent if target.dirent is not None else target.block
    with progress_bar(args, desc="fsck") as bar:
        c = check(obj, store, on_block=bar.update)
    print_lines([f"damage: {p}" for p in c.problems])
    state = "ok" if not c.problems else f"{len(c.problems)} problem(s)"
    print(f"{ref_text}: {state}; {c.blocks} blocks ({c.bytes} octets) checked")
    return 1 if c.problems else 0


FSCK_REF = fsck_ref


def fsck_archive(args, store, text: str) -> int:
    """Check archive `text` (X.vt[/path] or [clause]NAME): every line parses,
    the last one is complete, and every state's blocks (below `path`) are
    present and correct; with `args.repair`, set the damaged lines aside.
    Print the findings; return 1 if anything was damaged."""
    from vtstore.archive import store_identity
    from vtstore.cli.refs import archive_of
    from vtstore.tree.check import TreeChecker
    from vtstore.tree.dir import resolve

    archive, inner = archive_of(text, store)
    if not archive.exists():
        raise VTError(f"{text}: no such archive")
    scan = archive.scan()
    damage = scan.problems()
    notes = []
    ident = store_identity(store)
    foreign: dict[str, int] = {}
    with progress_bar(args, desc="fsck") as bar:
        c = TreeChecker(store, on_block=bar.update)
        for lineno, entry in scan.states:
            if entry.store_id is not None and entry.store_id != ident:
                foreign[entry.store_id] = foreign.get(entry.store_id, 0) + 1
            before = len(c.problems)
            try:
                d = resolve(entry.dirent, inner, store) if inner.strip("/") else entry.dirent
            except VTError as e:
                c.problems.append(f"{inner}: {e}")
            else:
                c.dirent(d)
            where = f"{archive.path} line {lineno} ({entry.isotime})"
            damage.extend(f"{where}: {p}" for p in c.problems[before:])
    for sid, n in foreign.items():
        notes.append(
            f"note: {n} state(s) of {archive.path} were written to store {sid},"
            f" not this one ({ident or store.name})"
        )
    print_lines([f"damage: {p}" for p in damage] + notes)
    if args.repair and scan.damaged:
        aside = archive.repair()
        if aside:
            print(f"repaired: {len(aside)} line(s) set aside in {archive.path}.damaged")
    state = "ok" if not damage else f"{len(damage)} problem(s)"
    if scan.damaged:
        state += f" ({len(scan.damaged)} damaged line(s))"
    print(
        f"{text}: {state}; {len(scan.states)} states, {c.blocks} blocks ({c.bytes} octets) checked"
    )
    return 1 if damage else 0


def fsck_whole_store(args, store) -> int:
    """Check every block of `store`; print the findings; 1 if any damage."""
    from vtstore.stores.fsck import fsck_store
    from vtstore.stores.spec import store_info

    # the size from the data files alone: nothing touches a maybe damaged index
    # before fsck_store has probed it
    data_bytes = getattr(store, "data_bytes", None)
    total = data_bytes() if data_bytes else store_info(store).get("bytes_on_disk")
    with progress_bar(args, total=total, desc="fsck") as bar:
        reports = fsck_store(store, repair=args.repair, progress=bar.update)
    damaged = False
    verbose = getattr(args, "verbose", 0)
    for rep in reports:
        # each kind elided on its own, so a long damage list never hides what
        # the repair did; notes (crash residue and the like) only with -v
        print_lines([f"damage: {p}" for p in rep.problems])
        if verbose:
            print_lines([f"note: {n}" for n in rep.notes])
        print_lines([f"repaired: {r}" for r in rep.repaired])
        print(rep.summary())
        damaged = damaged or not rep.ok
    return 1 if damaged else 0


def run(args) -> int:
    if args.refs:
        from vtstore.cli.refs import use_clause_of

        use_clause_of(args, args.refs[0])  # `vt fsck [clause]NAME` checks in that store
    # refs and archives are checked, never repaired, in the store: it stays read-only
    with open_store(args, readonly=bool(args.refs) or not args.repair) as store:
        if not args.refs:
            return fsck_whole_store(args, store)
        rc = 0
        for ref in args.refs:
            rc = max(rc, FSCK_REF(args, store, ref))
        return rc
