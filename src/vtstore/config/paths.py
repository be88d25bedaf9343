"""Where vt keeps things by default: the base directory and the cache.

Apart from the loader (and free of its imports), so that `vt` with no
arguments can say where the store is without reading any configuration.
"""

from __future__ import annotations

import os


def default_basedir() -> str:
    """`$VT_DIR`, else `~/.local/share/vt`."""
    return os.environ.get("VT_DIR") or "~/.local/share/vt"


def default_cachedir() -> str:
    """`$XDG_CACHE_HOME/vt`, else `~/.cache/vt`."""
    x = os.environ.get("XDG_CACHE_HOME")
    return os.path.join(x, "vt") if x else "~/.cache/vt"
