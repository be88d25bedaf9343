"""`vt ctl MOUNTPOINT OP [ARG...]`: one request to a running mount's control socket."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser(
        "ctl",
        help="act on a running mount (bind, clone, merge, sync, stats)",
        description=(
            "Send one operation to the vt mount at MOUNTPOINT over its control"
            " socket (UNIX, mode 0600, in $XDG_RUNTIME_DIR/vt or /tmp/vt-UID)."
            " OP is one of: sync (store and record a state now), stats, ref [PATH],"
            " ls [PATH], inspect [PATH], bind PATH REF (a new entry holding the tree"
            " or file REF names), clone SRC DST, merge THEIRS [BASE] (entries of the"
            " tree THEIRS that the top lacks are added).  PATHs are from the mount's"
            " top.  The effect is the same as the x-vt-* xattr controls and as"
            " 'vt ftp MOUNTPOINT', and the kernel sees it at once."
        ),
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("op", metavar="OP")
    p.add_argument("args", nargs="*", metavar="ARG")
    p.add_argument("--json", action="store_true", help="print the reply as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from vtstore.control.live import call

    result = call(args.mountpoint, args.op, *args.args)
    if args.json:
        print(json.dumps(result))
    elif isinstance(result, dict):
        for k, v in result.items():
            print(f"{k}: {v}")
    elif isinstance(result, list):
        for x in result:
            print(x)
    elif result is not None:
        print(result)
    return 0
