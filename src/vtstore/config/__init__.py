"""The `~/.vtrc` configuration: INI clauses naming stores, over built-in defaults.

`load_config(path)` reads `path`, else `$VT_CONFIG`, else `~/.vtrc` (a missing
file means the built-in defaults alone) and returns a `Config`.  `[GLOBAL]` holds
`basedir` and `hashclass`; every other section is a *clause* describing a store
with `type = ...` and that type's keys.  Clauses are checked when used (or all at
once by `Config.validate()`), and a bad one raises one `ConfigError` naming the
file, the clause and the key.  See docs/CONFIG.md.
"""

from vtstore.config.loader import (
    DEFAULT_VTRC,
    Config,
    default_basedir,
    default_config_path,
    load_config,
)

__all__ = ["Config", "DEFAULT_VTRC", "default_basedir", "default_config_path", "load_config"]
