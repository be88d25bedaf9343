"""Reading, merging and checking the configuration."""

from __future__ import annotations

import configparser
import os
import re
from pathlib import Path

from vtstore.config.paths import default_basedir, default_cachedir
from vtstore.errors import ConfigError, FormatError
from vtstore.hashes import HashCode, hashclass_by_name
from vtstore.stores.spec import StoreSpec, ensure_provider, store_types

_SUBST = re.compile(r"\{(\w*)\}")
# keys naming files: ~ expanded, relative to the configuration's basedir
_PATH_KEYS = (
    "path",
    "socket_path",
    "key_file",
    "passphrase_file",
    "index",
    "auth_keys",
    "tls_cert",
    "tls_key",
    "tls_ca",
)
_GLOBAL = "GLOBAL"
#: the keys [GLOBAL] may hold (exclude, exclude_from: vtstore.tree.filters rules)
_GLOBAL_KEYS = ("basedir", "hashclass", "exclude", "exclude_from")


def default_config_path() -> Path:
    """`$VT_CONFIG`, else `~/.vtrc`."""
    return Path(os.environ.get("VT_CONFIG") or "~/.vtrc").expanduser()


def builtin_sections() -> dict[str, dict[str, str]]:
    """The defaults every configuration starts from."""
    return {
        _GLOBAL: {
            "basedir": default_basedir(),
            "hashclass": os.environ.get("VT_HASHCLASS") or "blake3",
        },
        "default": {"type": "datadir", "path": "{basedir}"},
        "cache": {"type": "datadir", "path": default_cachedir(), "max_size": "2GiB"},
        "server": {"type": "unix", "socket_path": "{basedir}/vt.sock", "store": "[default]"},
    }


DEFAULT_VTRC = """\
# vt configuration (INI).  See docs/CONFIG.md for every key.
# Each section except [GLOBAL] is a clause naming a store: use it as -S [name].
# Values may say {basedir} (the [GLOBAL] basedir) and {clause} (the section's
# name); a relative path is taken under basedir.  Lines starting # are comments.

[GLOBAL]
# where the default datadir, archives and sockets live ($VT_DIR overrides)
basedir = ~/.local/share/vt
# the hash class of new stores: blake3, sha256, sha3_256 or sha1
hashclass = blake3

[default]
# the store used when neither -S nor $VT_STORE names one
type = datadir
path = {basedir}
# block sizes of the chunker, fixed when the datadir is created:
# min_block = 2KiB
# avg_block = 8KiB
# max_block = 64KiB
# data files are sealed at this size:
# data_file_size = 64MiB

[cache]
# a persistent cache for slow stores: vt -C [cache] -S ...
type = datadir
path = ~/.cache/vt
max_size = 2GiB

[server]
# what "vt serve" listens on and serves
type = unix
socket_path = {basedir}/vt.sock
store = [default]

# a store that writes to the local datadir and a remote one, and reads
# locally first:
# [both]
# type = proxy
# save = [default] [remote]
# read = [default]
# read2 = [remote]
# copy2 = [default]
"""


class Config:
    """An effective configuration: built-in defaults with a file's clauses over them."""

    def __init__(self, path: Path, sections: dict[str, dict[str, str]], file_keys: set):
        self.path = path
        self.exists = path.exists()
        self.sections = sections
        self._file_keys = file_keys  # (section, key) pairs that came from the file
        self.where = str(path) if self.exists else f"{path} (absent: built-in defaults)"

    def _err(self, clause: str | None, key: str | None, msg: str) -> ConfigError:
        parts = [self.where]
        if clause is not None:
            parts.append(f"[{clause}]" + (f" {key}" if key else ""))
        return ConfigError(": ".join(parts) + f": {msg}")

    # -- GLOBAL ----------------------------------------------------------------

    @property
    def basedir(self) -> Path:
        """The base directory, `~` expanded."""
        return Path(os.path.expanduser(self.sections[_GLOBAL]["basedir"]))

    @property
    def hashclass(self) -> type[HashCode]:
        """The hash class for new stores."""
        name = self.sections[_GLOBAL]["hashclass"]
        try:
            return hashclass_by_name(name.strip())
        except FormatError as e:
            raise self._err(_GLOBAL, "hashclass", str(e)) from None

    def _check_global(self) -> None:
        g = self.sections[_GLOBAL]
        for key in g:
            if key not in _GLOBAL_KEYS:
                known = ", ".join(_GLOBAL_KEYS)
                raise self._err(_GLOBAL, key, f"unknown key (known: {known})")
        if not g["basedir"].strip():
            raise self._err(_GLOBAL, "basedir", "empty value")
        self.hashclass  # noqa: B018 - validates

    def filter_specs(self) -> list[tuple[str, str]]:
        """The exclude rules of `[GLOBAL]`, for the commands that store trees
        (docs/FILTERS.md): `exclude` holds rule lines (`PATTERN` excludes,
        `+ PATTERN` includes, one a line), `exclude_from` rule files (one a
        line, `~` expanded), as `(kind, value)` pairs for `build_rules`."""
        g = self.sections[_GLOBAL]
        out: list[tuple[str, str]] = []
        for line in g.get("exclude", "").splitlines():
            if line.strip():
                out.append(("-", line.strip()))
        for line in g.get("exclude_from", "").splitlines():
            if line.strip():
                out.append(("-from", os.path.expanduser(line.strip())))
        return out

    # -- clauses --------------------------------------------------------------

    @property
    def clause_names(self) -> list[str]:
        """Every clause, `default` first."""
        names = [n for n in self.sections if n != _GLOBAL]
        return sorted(names, key=lambda n: (n != "default", n))

    def clause(self, name: str) -> dict[str, str]:
        """The raw (merged) keys of clause `name`."""
        if name == _GLOBAL or name not in self.sections:
            known = ", ".join(f"[{n}]" for n in self.clause_names)
            raise self._err(None, None, f"no clause [{name}] (known: {known})")
        return self.sections[name]

    def _value(self, clause: str, key: str, raw: str) -> str:
        def sub(m):
            word = m.group(1)
            if word == "basedir":
                return str(self.basedir)
            if word == "clause":
                return clause
            raise self._err(clause, key, f"unknown substitution {{{word}}}")

        v = _SUBST.sub(sub, raw).strip()
        if key in _PATH_KEYS and v:
            v = os.path.expanduser(v)
            if not os.path.isabs(v):
                v = str(self.basedir / v)
        return v

    def clause_spec(self, name: str) -> StoreSpec:
        """Clause `name` checked and converted into a `StoreSpec`."""
        self._check_global()
        raw = self.clause(name)
        if "type" not in raw:
            raise self._err(name, "type", "missing: say which kind of store this is")
        tname = raw["type"].strip()
        ensure_provider(tname)
        types = store_types()
        if tname not in types or tname == "clause":
            known = ", ".join(sorted(t for t in types if t != "clause"))
            raise self._err(name, "type", f"unknown store type {tname!r} (known: {known})")
        st = types[tname]
        params = {}
        # a key the type requires and has a default for: the default, as config text
        raw = {**{k: v for k, v in st.defaults.items() if k not in raw}, **raw}
        for key, value in raw.items():
            if key == "type":
                continue
            conv = st.keys.get(key)
            if conv is None:
                known = ", ".join(sorted(["type", *st.keys]))
                raise self._err(name, key, f"unknown key for type {tname} (known: {known})")
            try:
                params[key] = conv(self._value(name, key, value))
            except ConfigError as e:
                if str(e).startswith(self.where):
                    raise
                raise self._err(name, key, str(e)) from None
            except (ValueError, TypeError) as e:
                raise self._err(name, key, str(e)) from None
        missing = st.missing(params)
        if missing is not None:
            raise self._err(name, missing, f"missing: a {tname} store needs {missing}")
        if tname == "proxy" and not any(r in params for r in ("save", "read", "read2")):
            raise self._err(name, "save", "a proxy needs save, read or read2 stores")
        return StoreSpec(tname, params, f"[{name}]")

    def validate(self) -> None:
        """Check every clause; raise the first problem."""
        self._check_global()
        for name in self.clause_names:
            self.clause_spec(name)

    # -- showing ----------------------------------------------------------

    def render(self) -> str:
        """The effective configuration as INI text, defaults marked."""
        out = [f"# effective configuration; file: {self.where}"]
        for sec in [_GLOBAL, *self.clause_names]:
            out.append("")
            out.append(f"[{sec}]")
            for key, raw in self.sections[sec].items():
                shown = raw
                if sec == _GLOBAL and key == "basedir":
                    shown = str(self.basedir)
                elif sec != _GLOBAL:
                    try:
                        shown = self._value(sec, key, raw)
                    except ConfigError:
                        shown = raw
                note = "" if (sec, key) in self._file_keys else "  # built-in"
                shown = shown.replace("\n", "\n  ")  # a multi-line value (exclude)
                out.append(f"{key} = {shown}{note}")
            out.extend(self._type_defaults(sec))
        return "\n".join(out) + "\n"

    def _type_defaults(self, sec: str) -> list[str]:
        """The lines of the keys clause `sec` takes from its type's defaults."""
        if sec == _GLOBAL:
            return []
        keys = self.sections[sec]
        tname = str(keys.get("type", "")).strip()
        ensure_provider(tname)
        st = store_types().get(tname)
        if st is None:
            return []
        out = []
        for key, raw in st.defaults.items():
            if key not in keys:
                try:
                    shown = self._value(sec, key, raw)
                except ConfigError:
                    shown = raw
                out.append(f"{key} = {shown}  # default of type {tname}")
        return out


def _read_file(path: Path) -> dict[str, dict[str, str]]:
    cp = configparser.ConfigParser(
        interpolation=None, strict=True, default_section="\0none", empty_lines_in_values=False
    )
    try:
        with open(path, encoding="utf-8") as f:
            cp.read_file(f, source=str(path))
    except configparser.DuplicateSectionError as e:
        raise ConfigError(f"{path}: line {e.lineno}: [{e.section}] appears twice") from None
    except configparser.DuplicateOptionError as e:
        raise ConfigError(
            f"{path}: [{e.section}] {e.option}: line {e.lineno}: key appears twice"
        ) from None
    except configparser.MissingSectionHeaderError as e:
        raise ConfigError(f"{path}: line {e.lineno}: a key before any [clause] header") from None
    except configparser.ParsingError as e:
        lineno, line = e.errors[0]
        raise ConfigError(f"{path}: line {lineno}: cannot parse {line.strip()!r}") from None
    except configparser.Error as e:
        raise ConfigError(f"{path}: {e.message}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    out = {}
    for sec in cp.sections():
        if not sec.strip() or "]" in sec or "[" in sec:
            raise ConfigError(f"{path}: bad clause name [{sec}]")
        out[sec] = dict(cp.items(sec))
    return out


def load_config(path=None, must_exist: bool | None = None) -> Config:
    """The configuration from `path` (else `$VT_CONFIG`, else `~/.vtrc`) over the
    built-in defaults.  A file the user named, by `path` or by `$VT_CONFIG`, must
    exist unless `must_exist` is False (a typo there would silently mean the
    defaults); only the default `~/.vtrc` may be absent."""
    if must_exist is None:
        must_exist = path is not None or bool(os.environ.get("VT_CONFIG"))
    if path is not None and not os.fspath(path).strip():
        raise ConfigError("empty config file name (-c '')")
    p = Path(os.path.expanduser(os.fspath(path))) if path is not None else default_config_path()
    sections = builtin_sections()
    file_keys: set = set()
    if p.exists():
        if p.is_dir():
            raise ConfigError(f"{p}: is a directory, not a config file")
        for sec, keys in _read_file(p).items():
            base = sections.get(sec)
            if base is None or ("type" in keys and keys["type"] != base.get("type")):
                base = {} if sec != _GLOBAL else sections[_GLOBAL]
            merged = dict(base)
            merged.update(keys)
            sections[sec] = merged
            file_keys.update((sec, k) for k in keys)
    elif must_exist:
        named = "" if path is not None else " (named by $VT_CONFIG)"
        raise ConfigError(f"{p}: no such config file{named}")
    # the environment outranks the file: it is the more specific, passing choice
    if os.environ.get("VT_DIR"):
        sections[_GLOBAL]["basedir"] = os.environ["VT_DIR"]
        file_keys.discard((_GLOBAL, "basedir"))
    if os.environ.get("VT_HASHCLASS"):
        sections[_GLOBAL]["hashclass"] = os.environ["VT_HASHCLASS"]
        file_keys.discard((_GLOBAL, "hashclass"))
    cfg = Config(p, sections, file_keys)
    cfg._check_global()
    return cfg
