"""`vt cat`: write the content of refs to standard output."""

from __future__ import annotations

import sys

from vtstore.cli.common import open_store
from vtstore.cli.refs import resolve_special, use_clause_of
from vtstore.errors import VTError


def register(sub) -> None:
    p = sub.add_parser(
        "cat",
        help="write the content of a ref to stdout",
        description=(
            "Write the content of each REF to standard output: a block ref, a file"
            " dirent, a path inside a dirent or archive (REF/path, X.vt/path)."
        ),
    )
    p.add_argument("refs", nargs="+", metavar="REF")
    p.set_defaults(func=run)


def run(args) -> int:
    use_clause_of(args, args.refs[0] if args.refs else None)
    out = sys.stdout.buffer
    with open_store(args, readonly=True) as store:
        for text in args.refs:
            t = resolve_special(text, store)
            if t.dirent is not None and not t.dirent.is_file:
                if t.dirent.is_symlink:
                    raise VTError(f"{text}: is a symlink to {t.dirent.target!r}")
                raise VTError(f"{text}: is a {t.dirent.type_name}, not a file")
            block = t.content_block
            if block is None:
                continue
            write_pieces(out, block.chunks(store, joined=True))
    out.flush()
    return 0


#: `vt cat` writes about this many octets per write (not one write per leaf).
WRITE_SIZE = 1 << 20


def write_pieces(out, pieces) -> None:
    """Write what `pieces` yields to the binary stream `out`, gathered into
    writes of about `WRITE_SIZE` (a write per 8 KiB leaf cost a system call each)."""
    buf: list = []
    n = 0
    for p in pieces:
        if len(p) >= WRITE_SIZE:  # a batch read joined already: no second copy
            if buf:
                out.write(b"".join(buf))
                buf, n = [], 0
            out.write(p)
            continue
        buf.append(p)
        n += len(p)
        if n >= WRITE_SIZE:
            out.write(b"".join(buf))
            buf, n = [], 0
    if buf:
        out.write(b"".join(buf))
