"""`vt pull SRC DST [WHAT...]`: the copy of `vt push` (see `vtstore.cli.push`)."""

from __future__ import annotations

from vtstore.cli.push import register_pull as register
from vtstore.cli.push import run

__all__ = ["register", "run"]
