"""Format scanners: offset-only plugins that propose block boundaries.

See `base` for the protocol and `detect.scanner_for` for choosing one.  To add
a format: write a `Scanner` (or `ParserScanner`) subclass with a `name`, list
it in `detect.SCANNERS` and teach `detect` its names, MIME types and magic;
docs/CHUNKING.md has the details.
"""

from vtstore.chunking.scanners.base import (
    LOOKAHEAD,
    GuardedScanner,
    ParserScanner,
    Scanner,
)
from vtstore.chunking.scanners.detect import SCANNERS, scanner_by_name, scanner_for

__all__ = [
    "LOOKAHEAD",
    "GuardedScanner",
    "ParserScanner",
    "SCANNERS",
    "Scanner",
    "scanner_by_name",
    "scanner_for",
]
