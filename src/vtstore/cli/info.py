"""`vt info [--json]`: describe the store: type, hash class, chunker sizes,
blocks, octets stored and on disk, data files, dedup counts, exports."""

from __future__ import annotations

import json

from vtstore.cli.common import open_store
from vtstore.errors import StoreError


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="describe a store", description=__doc__)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _lines(d: dict, indent: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out.append(f"{indent}{k}:")
            out.extend(_lines(v, indent + "  "))
        elif isinstance(v, list | tuple):
            out.append(f"{indent}{k}: {', '.join(map(str, v)) if v else '-'}")
        else:
            out.append(f"{indent}{k}: {v}")
    return out


def run(args) -> int:
    from vtstore.stores.spec import store_info

    with open_store(args, readonly=True) as store:
        d = store_info(store)
    if d.get("index_damage"):
        raise StoreError(d["index_damage"])
    if args.json:
        print(json.dumps(d, indent=1, default=str))
    else:
        print("\n".join(_lines(d)))
    return 0
