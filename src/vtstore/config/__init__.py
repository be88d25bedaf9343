"""The `~/.vtrc` configuration: INI clauses naming stores, over built-in defaults.

`load_config(path)` reads `path`, else `$VT_CONFIG`, else `~/.vtrc` (a missing
file means the built-in defaults alone) and returns a `Config`.  `[GLOBAL]` holds
`basedir` and `hashclass`; every other section is a *clause* describing a store
with `type = ...` and that type's keys.  Clauses are checked when used (or all at
once by `Config.validate()`), and a bad one raises one `ConfigError` naming the
file, the clause and the key.  See docs/CONFIG.md.

The names below are imported from `vtstore.config.loader` on first use, so that
importing `vtstore.config.paths` (`vt` with no arguments) reads no more code.
"""

__all__ = ["Config", "DEFAULT_VTRC", "default_basedir", "default_config_path", "load_config"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from vtstore.config import loader

    return getattr(loader, name)
