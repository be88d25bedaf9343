"""`vt forget`: drop the states of archives that a retention policy does not keep."""

from __future__ import annotations

import datetime
import json

from vtstore.cli.common import open_store
from vtstore.cli.gc import UsageError, add_gc_options, datadir_of, run_gc


def register(sub) -> None:
    p = sub.add_parser(
        "forget",
        help="drop the states a retention policy does not keep",
        description=(
            "Apply a retention policy to archives and rewrite them without the states"
            " it does not keep (atomically, under the archive's lock: a state a"
            " concurrent vt pack appends is never lost).  The policies are restic's:"
            " states are taken newest first; --keep-daily 7 keeps the newest state of"
            " each of the 7 newest days that have one (local time; weeks are ISO"
            " weeks); --keep-within is counted back from the newest state, not from"
            " now.  A state is kept if any policy keeps it; --dry-run shows which"
            " policy keeps each.  The blocks of forgotten states stay in the store"
            " until vt gc (or --prune) reclaims them."
        ),
        epilog="Example: vt forget --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --prune ~/home.vt",
    )
    p.add_argument(
        "archives",
        nargs="*",
        metavar="ARCHIVE",
        help="X.vt or [clause]NAME (or --all for every archive the store knows);"
        " X.vt@ID (any state selector) forgets that state, no policy needed",
    )
    p.add_argument("--all", action="store_true", help="every archive the store knows")
    k = p.add_argument_group("what to keep")
    k.add_argument("--keep-last", type=int, metavar="N", help="the N newest states")
    for name, what in (
        ("hourly", "hour"),
        ("daily", "day"),
        ("weekly", "ISO week"),
        ("monthly", "month"),
        ("yearly", "year"),
    ):
        k.add_argument(
            f"--keep-{name}",
            type=int,
            metavar="N",
            help=f"the newest state of each of the N newest {what}s that have one (-1: all)",
        )
    k.add_argument(
        "--keep-within",
        metavar="DURATION",
        help="every state within DURATION (e.g. 30d, 1y2m, 12h) of the newest state",
    )
    k.add_argument(
        "--keep-tag",
        action="append",
        default=[],
        metavar="TAG",
        help="states whose comment (-m) has TAG as a word (#TAG too); repeatable",
    )
    k.add_argument(
        "--keep-comment",
        action="append",
        default=[],
        metavar="PATTERN",
        help="states whose whole comment matches the shell pattern; repeatable",
    )
    p.add_argument(
        "-n", "--dry-run", action="store_true", help="show what would go; change nothing"
    )
    p.add_argument("--json", action="store_true", help="one JSON object (per archive, and gc's)")
    p.add_argument("--prune", action="store_true", help="then reclaim the space (vt gc)")
    add_gc_options(p)
    p.set_defaults(func=run)


def _policy(args):
    from vtstore.lifecycle.policy import Policy, parse_duration

    counts = {}
    for name in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
        n = getattr(args, f"keep_{name}")
        if n is not None and n < -1:
            raise UsageError(f"--keep-{name} {n}: a count, or -1 for all")
        counts[name] = n
    within = parse_duration(args.keep_within) if args.keep_within else None
    return Policy(
        **counts, within=within, tags=list(args.keep_tag), comments=list(args.keep_comment)
    )


def _targets(args, store) -> list:
    """`(archive, selectors)` for each archive to work on; selectors (`@SEL`
    after an archive) name states to forget one by one."""
    from vtstore.archive import archive_in, select_state
    from vtstore.cli.refs import archive_target
    from vtstore.lifecycle.registry import known_archives

    if args.all and args.archives:
        raise UsageError("give archives or --all, not both")
    if args.all:
        from vtstore.lifecycle.gc_objects import layout_store_of

        objects = layout_store_of(store)
        if objects is not None:  # the named archives kept in the bucket
            return [(objects.named_archive(n), []) for n in objects.archive_names()]
        return [(archive_in(p, store), []) for p in known_archives(datadir_of(store))]
    if not args.archives:
        raise UsageError("which archives? give X.vt or [clause]NAME, or --all")
    out: dict[str, tuple] = {}
    for text in args.archives:
        archive, inner, sel = archive_target(text, store)
        if inner:
            raise UsageError(f"{text}: forget takes a whole archive, not a path in it")
        a, sels = out.setdefault(archive.path, (archive, []))
        if sel is not None:
            if not a.exists():
                raise UsageError(f"{text}: no such archive")
            sels.append(select_state(list(a.entries()), sel, a.path).id)
    return list(out.values())


def _has_selector(text: str) -> bool:
    from vtstore.cli.refs import split_selector

    return split_selector(text)[1] is not None


def _local(when: float) -> str:
    return datetime.datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M:%S")


def _print(res) -> None:
    kept, gone = res.kept, res.forgotten
    verb = "would forget" if res.dry_run else "forgot"
    print(f"{res.path}: keeping {len(kept)} of {len(res.verdicts)} states, {verb} {len(gone)}")
    for v in sorted(res.verdicts, key=lambda v: v.entry.when, reverse=True):
        sid = getattr(v.entry, "short_id", "") or ""
        what = "keep  " if v.kept else "forget"
        why = ", ".join(v.reasons)
        comment = f"  {v.entry.comment!r}" if v.entry.comment else ""
        print(f"  {what} {sid:8} {_local(v.entry.when)}  {why}{comment}".rstrip())


def run(args) -> int:
    from vtstore.cli.refs import use_clause_of
    from vtstore.lifecycle.forget import forget

    policy = _policy(args)
    named = any(_has_selector(t) for t in args.archives)
    if named and not policy.empty():
        raise UsageError("give states to forget (X.vt@ID) or a policy, not both")
    if policy.empty() and not named:
        raise UsageError(
            "no policy given, so every state would be forgotten: say what to keep"
            " (--keep-last N, --keep-daily N, --keep-within 30d, ...)"
        )
    if args.archives:
        use_clause_of(args, args.archives[0])
    out = {"archives": []}
    readonly = not (args.prune and not args.dry_run)
    with open_store(args, readonly=readonly) as store:
        archives = _targets(args, store)
        results = []
        for a, ids in archives:
            drop = set(ids) if named else None
            res = forget(a, policy, dry_run=args.dry_run, drop_ids=drop)
            results.append(res)
            if args.json:
                out["archives"].append(res.to_json())
            elif not args.quiet:
                _print(res)
        rep = None
        if args.prune:
            rep = run_gc(args, store, args.dry_run)
    if rep is not None:
        if args.json:
            out["gc"] = rep.to_json()
        elif not args.quiet:
            for line in rep.lines():
                print(line)
    if args.json:
        print(json.dumps(out))
    elif not archives and not args.quiet:
        print("the store knows no archives")
    return 0
