"""`vt scan FILE...`: show how files would be cut into blocks (nothing is stored).

For each file: the scanner chosen, the block count, mean/median/p10/p90 block
size, which share of the cuts came from the format scanner, from the rolling
hash or from the maximum size, and a histogram of block sizes (log2 bins).
`--json` prints the same as one JSON document.
"""

from __future__ import annotations

import os
import sys

from vtstore.chunking.scanners import SCANNERS
from vtstore.errors import VTError

TYPE_CHECKING = False  # the chunker is imported where a file is scanned
if TYPE_CHECKING:
    from vtstore.chunking import ChunkParams

__all__ = ["register", "run", "scan_file", "histogram"]


def register(subparsers) -> None:
    """Add the `scan` subcommand."""
    p = subparsers.add_parser(
        "scan",
        help="show how files would be cut into blocks",
        description=(
            "Cut each FILE into blocks as 'vt save' would, without storing anything, and"
            " report the format scanner chosen (by name, user.mime_type xattr or content),"
            " the number of blocks, their size distribution and what made the cuts."
        ),
        epilog=(
            "Cuts are made by the format ('format': a boundary the scanner proposed), by"
            " the rolling hash ('hash'), at the maximum block size ('max') or at the end."
            " Scanners: " + ", ".join(sorted(SCANNERS)) + "."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="files to scan")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument(
        "--scanner",
        default="auto",
        metavar="NAME",
        help="auto (default: detect), none (hash cuts only), or a scanner name",
    )
    p.add_argument("--mime-type", metavar="TYPE", help="MIME type to detect the format by")
    p.add_argument("--min", type=_size, default=None, metavar="N", help="minimum block size")
    p.add_argument("--avg", type=_size, default=None, metavar="N", help="average block size")
    p.add_argument("--max", type=_size, default=None, metavar="N", help="maximum block size")
    p.set_defaults(func=run)


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("ib")
    mult = units.get(t[-1:], 1)
    if t[-1:] in units:
        t = t[:-1]
    try:
        return int(t) * mult
    except ValueError:
        import argparse

        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None


def _mime_xattr(path: str) -> str | None:
    try:
        return os.getxattr(path, "user.mime_type").decode("utf-8", "replace")
    except (OSError, AttributeError):
        return None


def _percentile(sorted_sizes: list[int], q: float) -> int:
    if not sorted_sizes:
        return 0
    k = min(len(sorted_sizes) - 1, max(0, round(q * (len(sorted_sizes) - 1))))
    return sorted_sizes[k]


def histogram(sizes: list[int]) -> list[dict]:
    """Block counts in log2 bins: [{"low": 2**k, "high": 2**(k+1), "count": n}, ...]."""
    bins: dict[int, int] = {}
    for s in sizes:
        k = max(s, 1).bit_length() - 1
        bins[k] = bins.get(k, 0) + 1
    if not bins:
        return []
    return [
        {"low": 1 << k, "high": 1 << (k + 1), "count": bins.get(k, 0)}
        for k in range(min(bins), max(bins) + 1)
    ]


def scan_file(path: str, params: ChunkParams, scanner="auto", mime_type: str | None = None) -> dict:
    """The chunking report of one file, as a plain dict."""
    import statistics

    from vtstore.chunking import BlockifyStats, chunks_of

    if os.path.isdir(path):
        raise VTError(f"{path}: is a directory")
    stats = BlockifyStats()
    mime = mime_type or _mime_xattr(path)
    sizes = [len(c) for c in chunks_of(path, params, scanner=scanner, mime_type=mime, stats=stats)]
    ss = sorted(sizes)
    cuts = {k: stats.cuts.get(k, 0) for k in ("format", "hash", "max", "end")}
    total = sum(cuts.values())
    return {
        "file": path,
        "scanner": stats.scanner,
        "scanner_failed": stats.scanner_failed,
        "mime_type": mime,
        "params": params.as_dict(),
        "bytes": stats.length,
        "blocks": len(sizes),
        "mean": statistics.fmean(sizes) if sizes else 0,
        "median": statistics.median(ss) if ss else 0,
        "p10": _percentile(ss, 0.10),
        "p90": _percentile(ss, 0.90),
        "min": ss[0] if ss else 0,
        "max": ss[-1] if ss else 0,
        "cuts": cuts,
        "cut_percent": {k: (100.0 * v / total if total else 0.0) for k, v in cuts.items()},
        "proposed": stats.proposed,
        "dropped": stats.cuts.get("dropped", 0),
        "histogram": histogram(sizes),
    }


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def format_report(r: dict, width: int = 40) -> str:
    """The text form of one `scan_file` report."""
    lines = [
        f"{r['file']}: {r['bytes']:,} bytes, {r['blocks']:,} blocks,"
        f" scanner {r['scanner'] or 'none'}"
        + (f" (disabled: {r['scanner_failed']})" if r["scanner_failed"] else ""),
    ]
    if r["blocks"]:
        lines.append(
            f"  block size: mean {r['mean']:,.0f}  median {r['median']:,.0f}"
            f"  p10 {r['p10']:,}  p90 {r['p90']:,}  min {r['min']:,}  max {r['max']:,}"
        )
        pc = r["cut_percent"]
        lines.append(
            f"  cuts: {pc['format']:.1f}% format, {pc['hash']:.1f}% hash,"
            f" {pc['max']:.1f}% at max, {pc['end']:.1f}% end"
            f"  ({r['proposed']:,} boundaries proposed, {r['dropped']:,} dropped)"
        )
        top = max(b["count"] for b in r["histogram"])
        for b in r["histogram"]:
            bar = "#" * (round(width * b["count"] / top) if top else 0)
            if b["count"] and not bar:
                bar = "."
            lines.append(
                f"  {_human(b['low']):>9} - {_human(b['high']):>9} |{bar:<{width}}| {b['count']:,}"
            )
    return "\n".join(lines)


def run(args) -> int:
    """Scan each file and print the reports; exit code 0, or raise VTError."""
    import json

    from vtstore.chunking import ChunkParams

    try:
        d = ChunkParams()
        params = ChunkParams(
            args.min if args.min is not None else d.min_size,
            args.avg if args.avg is not None else d.avg_size,
            args.max if args.max is not None else d.max_size,
        )
    except (ValueError, TypeError) as e:
        raise VTError(f"bad block sizes: {e}") from None
    scanner = args.scanner
    if scanner == "none":
        scanner = None
    elif scanner != "auto" and scanner not in SCANNERS:
        raise VTError(f"unknown scanner {scanner!r}: auto, none, {', '.join(sorted(SCANNERS))}")
    reports = []
    for path in args.files:
        r = scan_file(path, params, scanner=scanner, mime_type=args.mime_type)
        reports.append(r)
        if not args.json:
            print(format_report(r))
    if args.json:
        json.dump(reports, sys.stdout, indent=2)
        print()
    return 0
