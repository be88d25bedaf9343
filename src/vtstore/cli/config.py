"""`vt config [CLAUSE]`: print the effective configuration (the file
over the built-in defaults), or one clause as the store spec it makes.  Every
clause is checked; a bad one is an error naming the file, clause and key."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "config", help="print the effective configuration", description=__doc__
    )
    p.add_argument("clause", nargs="?", help="show just this clause")
    p.set_defaults(func=run)


def run(args) -> int:
    from vtstore.config import load_config

    config = load_config(getattr(args, "config_path", None))
    if args.clause:
        spec = config.clause_spec(args.clause.strip("[]"))
        print(f"[{args.clause.strip('[]')}]")
        print(f"type = {spec.type}")
        for k, v in spec.params.items():
            if isinstance(v, list):
                v = " ".join(str(s) for s in v)
            elif isinstance(v, type):
                v = getattr(v, "hashname", v.__name__)
            print(f"{k} = {v}")
        return 0
    print(config.render(), end="")
    config.validate()
    return 0
