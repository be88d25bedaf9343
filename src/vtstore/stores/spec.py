"""Store specifications: the text that names a store, and opening it.

Forms (CLI `-S`, `$VT_STORE`, config values)::

    [clause]                 the store a config clause describes
    /path, ./path, ~/path    a datadir (created on first write); also datadir:PATH
    file:PATH.vtd            a single data file store
    memory:[NAME]            an in-memory store
    proxy(save=S...,read=S...,read2=S...,copy2=S...,save2=S...)
                             a ProxyStore; a role takes one or more specs
                             separated by spaces, or repeats (save=A,save=B)
    tcp:HOST:PORT  tls:HOST:PORT  unix:/PATH.sock  |COMMAND  http(s)://...  s3://BUCKET/PREFIX
                             reserved: they raise NotAvailableError until the
                             network, HTTP and S3 layers register them

Two registries make this extensible: `register_scheme(prefix, type, parse)` maps
a text prefix to a store type and its parameters, and
`register_store_type(name, opener, keys)` says how to open a type and which
config keys (each with a converter) a clause of that type may have.  A later
layer (the network client, say) registers its own opener over the reserved one.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable

from vtstore.errors import ConfigError, NotAvailableError
from vtstore.hashes import HashCode, hashclass_by_name
from vtstore.stores.base import Store
from vtstore.stores.params import DEFAULT_CHUNKER, ChunkerParams

# -- values -------------------------------------------------------------------

_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*\Z", re.I)
_MULT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """`65536`, `64K`, `64KiB`, `1.5G` -> octets (powers of 1024)."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (say 65536, 64KiB or 1GiB)")
    n = float(m.group(1)) * _MULT[m.group(2).lower()]
    if not n < 1 << 62:  # a size no store has room for (and float('9' * 400) is inf)
        raise ValueError(f"size too large: {text!r}")
    return int(n)


def parse_bool(text: str) -> bool:
    """yes/no, true/false, on/off, 1/0."""
    t = str(text).strip().lower()
    if t in ("1", "yes", "true", "on"):
        return True
    if t in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r} (say yes or no)")


def parse_zstd_level(text: str) -> int:
    """0 (no compression) to 22."""
    n = int(text)
    if not 0 <= n <= 22:
        raise ValueError(f"zstd level must be 0..22, got {n}")
    return n


def parse_hashclass(text: str) -> type[HashCode]:
    """A hash class name."""
    return hashclass_by_name(str(text).strip())


def _str(text: str) -> str:
    t = str(text).strip()
    if not t:
        raise ValueError("empty value")
    return t


def _archives_from(text: str) -> tuple[str, str]:
    """`GLOB:STORESPEC`: where a clause's archives of those names live
    (`vtstore.named_archives`)."""
    from vtstore.named_archives import parse_archives_from

    return parse_archives_from(text)


def _port(text: str) -> int:
    n = int(text)
    if not 0 < n < 65536:
        raise ValueError(f"port must be 1..65535, got {n}")
    return n


# -- specs ----------------------------------------------------------------------


class _Record:
    """A record of `_fields`, compared and shown field by field; `frozen`: its
    fields cannot be set after `__init__`.  Written out here, not made by
    @dataclass, which generates and compiles these methods when the module is
    imported (0.3-1 ms a class, paid by every `vt` command that opens a store)."""

    _fields: tuple[str, ...] = ()
    frozen = False

    def _init(self, **values) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value) -> None:
        if self.frozen:
            raise AttributeError(f"cannot assign to field {name!r} of a {type(self).__name__}")
        object.__setattr__(self, name, value)

    def __eq__(self, other) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._fields)

    __hash__ = None  # as a dataclass with dict fields: unhashable

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({fields})"


class StoreSpec(_Record):
    """A parsed store spec: a store type and its parameters (immutable)."""

    _fields = ("type", "params", "text")
    frozen = True
    type: str
    params: dict
    text: str

    def __init__(self, type: str, params: dict | None = None, text: str = ""):
        self._init(type=type, params={} if params is None else params, text=text)

    def __str__(self) -> str:
        return self.text or f"{self.type}{self.params}"


class StoreType(_Record):
    """How to open one type of store, and the config keys it takes (immutable)."""

    _fields = ("name", "opener", "keys", "doc", "required", "defaults")
    frozen = True
    name: str
    opener: Callable[[StoreSpec, OpenContext], Store]
    keys: dict[str, Callable[[str], object]]
    doc: str
    required: tuple[str, ...]
    defaults: dict[str, str]

    def __init__(
        self,
        name: str,
        opener: Callable[[StoreSpec, OpenContext], Store],
        keys: dict[str, Callable[[str], object]],
        doc: str = "",
        required: tuple[str, ...] = (),
        defaults: dict[str, str] | None = None,
    ):
        self._init(
            name=name,
            opener=opener,
            keys=keys,
            doc=doc,
            required=required,
            defaults={} if defaults is None else defaults,
        )

    def missing(self, params: dict) -> str | None:
        """The first required key `params` lacks, or None."""
        for key in self.required:
            if key not in params:
                return key
        return None


_TYPES: dict[str, StoreType] = {}
_SCHEMES: dict[str, tuple[str, Callable[[str], dict]]] = {}
PROXY_ROLES = ("save", "read", "read2", "copy2", "save2")
#: How deep proxies may nest in a spec, and clauses refer to clauses: far more
#: than any real setup, far less than the interpreter's stack.
MAX_NESTING = 32


def register_store_type(
    name: str,
    opener: Callable[[StoreSpec, OpenContext], Store],
    keys: dict[str, Callable[[str], object]] | None = None,
    doc: str = "",
    required: tuple[str, ...] = (),
    defaults: dict[str, str] | None = None,
) -> None:
    """Make `type = NAME` (and specs of that type) open with `opener`.  `keys`
    maps each config key the type takes to a converter raising ValueError on a
    bad value; `hashclass` and `readonly` are always allowed.  A clause must give
    each key of `required` unless `defaults` has a value for it (config text, so
    `{basedir}` and `{clause}` work); an opener can then rely on them all."""
    allowed = {
        "hashclass": parse_hashclass,
        "readonly": parse_bool,
        "archives_from": _archives_from,
    }
    allowed.update(keys or {})
    _TYPES[name] = StoreType(name, opener, allowed, doc, tuple(required), dict(defaults or {}))


def register_scheme(prefix: str, type_name: str, parse: Callable[[str], dict]) -> None:
    """Make specs beginning with `prefix` be of `type_name`, with the parameters
    `parse(rest_of_text)` returns (raise ValueError on bad text)."""
    _SCHEMES[prefix] = (type_name, parse)


def store_types() -> dict[str, StoreType]:
    """The registered store types, by name."""
    return dict(_TYPES)


def _split_top(text: str, seps: str) -> list[str]:
    """Split at characters of `seps` outside brackets and parentheses."""
    out = []
    depth = 0
    cur = []
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"unbalanced {ch!r} in store spec {text!r}")
        if depth == 0 and ch in seps:
            out.append("".join(cur))
            cur = []
            continue
        if depth == 0 and ch == "|" and not "".join(cur).strip():
            # a |command takes the rest of the text, spaces and all
            out.append(text[i:])
            return [p for p in out if p.strip()]
        cur.append(ch)
    if depth:
        raise ConfigError(f"unbalanced brackets in store spec {text!r}")
    out.append("".join(cur))
    return [p for p in out if p.strip()]


def parse_spec_list(text: str, _depth: int = 0) -> list[StoreSpec]:
    """Store specs separated by white space."""
    parts = _split_top(text, " \t\n")
    if not parts:
        raise ConfigError("expected at least one store spec")
    return [parse_store_spec(p, _depth) for p in parts]


def parse_store_spec(text: str, _depth: int = 0) -> StoreSpec:
    """Parse one store spec; raises `ConfigError` naming what is wrong."""
    if _depth > MAX_NESTING:
        raise ConfigError(f"store spec nested more than {MAX_NESTING} proxies deep")
    t = str(text).strip()
    if not t:
        raise ConfigError("empty store spec")
    if t.startswith("["):
        end = t.find("]")
        name = t[1:end] if end > 0 else ""
        if end < 0 or not name or "[" in name:
            raise ConfigError(f"bad clause reference {t!r}: say [name]")
        if t[end + 1 :]:
            raise ConfigError(
                f"store spec {t!r}: unexpected {t[end + 1 :]!r} after [{name}]"
                " (an archive name goes where an archive is expected, not in a store spec)"
            )
        return StoreSpec("clause", {"clause": name}, t)
    m = re.match(r"([a-z][a-z0-9_]*)\(", t)
    if m:
        if m.group(1) != "proxy":
            raise ConfigError(f"unknown store form {m.group(1)}(...) in {t!r}")
        if not t.endswith(")"):
            raise ConfigError(f"store spec {t!r}: missing ')'")
        return StoreSpec("proxy", _parse_proxy_args(t[m.end() : -1], t, _depth + 1), t)
    for prefix in sorted(_SCHEMES, key=len, reverse=True):
        if t.startswith(prefix):
            type_name, parse = _SCHEMES[prefix]
            if _TYPES.get(type_name) and _TYPES[type_name].opener is _not_yet:
                ensure_provider(type_name)
                type_name, parse = _SCHEMES[prefix]
            try:
                params = parse(t[len(prefix) :])
            except ValueError as e:
                raise ConfigError(f"bad store spec {t!r}: {e}") from None
            return StoreSpec(type_name, params, t)
    if t.startswith(("/", "./", "../", "~")) or t in (".", ".."):
        return StoreSpec("datadir", {"path": t}, t)
    raise ConfigError(
        f"unrecognised store spec {t!r}: a datadir path begins with / or ./;"
        " other forms: [clause], file:X.vtd, memory:, proxy(...), tcp:, tls:, unix:, |cmd,"
        " http://, s3://, crypt:, platonic:"
    )


def _parse_proxy_args(body: str, whole: str, depth: int = 1) -> dict:
    params: dict[str, list[StoreSpec]] = {}
    for arg in _split_top(body, ","):
        key, eq, value = arg.partition("=")
        key = key.strip()
        if not eq or key not in PROXY_ROLES:
            raise ConfigError(
                f"store spec {whole!r}: bad proxy argument {arg.strip()!r}"
                f" (say ROLE=SPEC with ROLE one of {', '.join(PROXY_ROLES)})"
            )
        params.setdefault(key, []).extend(parse_spec_list(value, depth))
    if not params.get("save") and not params.get("read") and not params.get("read2"):
        raise ConfigError(f"store spec {whole!r}: a proxy needs save, read or read2 stores")
    return params


def _path_param(rest: str) -> dict:
    return {"path": _str(rest)}


def _tcp_param(rest: str) -> dict:
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        raise ValueError("say tcp:HOST:PORT")
    return {"host": host, "port": _port(port)}


register_scheme("datadir:", "datadir", _path_param)
register_scheme("file:", "file", _path_param)
register_scheme("memory:", "memory", lambda rest: {"name": rest} if rest else {})
register_scheme("tcp:", "tcp", _tcp_param)
register_scheme("tls:", "tcp", lambda rest: {**_tcp_param(rest), "tls": True})  # TCP in TLS
register_scheme("unix:", "unix", lambda rest: {"socket_path": _str(rest)})
register_scheme("|", "command", lambda rest: {"command": _str(rest)})
register_scheme("http://", "http", lambda rest: {"url": "http://" + _str(rest)})
register_scheme("https://", "http", lambda rest: {"url": "https://" + _str(rest)})
register_scheme("s3://", "s3", lambda rest: {"url": "s3://" + _str(rest)})
register_scheme(
    "s3+blocks://", "s3", lambda rest: {"url": "s3://" + _str(rest), "layout": "blocks"}
)


# -- opening ----------------------------------------------------------------------


class OpenContext(_Record):
    """What opening a spec needs besides the spec: the config for `[clause]`s,
    read-only-ness, the hash class required (None: whatever the store has) and
    the default for new stores.  Specs opened twice in one context (the same
    memory store in two proxy roles) give the same store."""

    _fields = ("config", "readonly", "hashclass", "default_hashclass", "opened", "stack")

    def __init__(
        self,
        config: object = None,
        readonly: bool = False,
        hashclass: type[HashCode] | None = None,
        default_hashclass: type[HashCode] | None = None,
        opened: dict | None = None,
        stack: tuple = (),
    ):
        self.config = config
        self.readonly = readonly
        self.hashclass = hashclass
        self.default_hashclass = default_hashclass
        self.opened = {} if opened is None else opened
        self.stack = stack


def open_spec(spec: StoreSpec, ctx: OpenContext) -> Store:
    """Open a parsed spec within `ctx`."""
    key = (spec.type, repr(sorted((k, repr(v)) for k, v in spec.params.items())))
    if key in ctx.opened:
        return ctx.opened[key]
    try:
        st = _TYPES[spec.type]
    except KeyError:
        raise ConfigError(f"unknown store type {spec.type!r} in {spec}") from None
    missing = st.missing(spec.params)
    if missing is not None:
        raise ConfigError(f"{spec}: a {spec.type} store needs {missing}")
    store = st.opener(spec, ctx)
    ctx.opened[key] = store
    return store


def open_store_spec(
    spec: str | StoreSpec,
    *,
    config=None,
    readonly: bool = False,
    hashclass: type[HashCode] | None = None,
    default_hashclass: type[HashCode] | None = None,
) -> Store:
    """Open the store `spec` names.  `config` (a `vtstore.config.Config`) resolves
    `[clause]` references; without one, the built-in defaults do."""
    if isinstance(spec, str):
        spec = parse_store_spec(spec)
    ctx = OpenContext(config, readonly, hashclass, default_hashclass)
    return open_spec(spec, ctx)


def open_store_from_args(args, readonly: bool = False) -> Store:
    """The store a `vt` command line names: `-S`, else `$VT_STORE`, else the
    `[default]` clause of the config, else a datadir at `$VT_DIR` or
    `~/.local/share/vt`; with `-C`, a cache store in front of it.

    `-H` (which the CLI puts in `$VT_HASHCLASS`) requires that hash class.
    """
    # config is the layer above stores: imported here, where the CLI needs it
    from vtstore.config import load_config

    for opt, attr in (("-S", "store_spec"), ("-C", "cache_spec")):
        given = getattr(args, attr, None)
        if given is not None and not given.strip():
            # an empty -S (say, from an unset shell variable) must not mean the default
            raise ConfigError(f"empty store spec: {opt} ''")
    config = load_config(getattr(args, "config_path", None))
    text = getattr(args, "store_spec", None) or os.environ.get("VT_STORE") or "[default]"
    hname = getattr(args, "hashclass", None) or os.environ.get("VT_HASHCLASS")
    try:
        hc = hashclass_by_name(hname) if hname else None
    except ValueError as e:
        raise ConfigError(str(e)) from None
    store = open_store_spec(
        text, config=config, readonly=readonly, hashclass=hc, default_hashclass=config.hashclass
    )
    cache_text = getattr(args, "cache_spec", None)
    if cache_text:
        from vtstore.stores.cache import CacheStore

        try:
            cache = open_store_spec(cache_text, config=config, hashclass=store.hashclass)
        except BaseException:
            store.close()
            raise
        store = CacheStore(cache, store)
    return store


def store_info(store: Store) -> dict:
    """A description of any store: its own `info()` if it has one."""
    info = getattr(store, "info", None)
    if callable(info):
        return info()
    return {
        "type": type(store).__name__,
        "name": store.name,
        "hashclass": store.hashclass.hashname,
        "blocks": len(store),
    }


# -- the built-in types -----------------------------------------------------------


def _flag(spec: StoreSpec, ctx: OpenContext) -> bool:
    return bool(ctx.readonly or spec.params.get("readonly"))


def _hashclass(spec: StoreSpec, ctx: OpenContext):
    want = spec.params.get("hashclass")
    if want is not None and ctx.hashclass is not None and want is not ctx.hashclass:
        from vtstore.errors import HashClassMismatchError

        raise HashClassMismatchError(
            f"{spec} is configured for {want.hashname}, not {ctx.hashclass.hashname}"
        )
    return want or ctx.hashclass


def _chunker(params: dict) -> ChunkerParams | None:
    given = {k: params[k] for k in ("min_block", "avg_block", "max_block") if k in params}
    if not given:
        return None
    d = DEFAULT_CHUNKER
    return ChunkerParams(
        given.get("min_block", d.min), given.get("avg_block", d.avg), given.get("max_block", d.max)
    ).validate()


def _expand(path: str) -> str:
    return os.path.expanduser(path)


def _open_datadir(spec: StoreSpec, ctx: OpenContext) -> Store:
    from vtstore.stores.datadir import DataDir

    p = spec.params
    kw = {k: p[k] for k in ("data_file_size", "frame_size", "zstd_level", "max_size") if k in p}
    if "compress" in p:
        kw["compress"] = p["compress"]
    return DataDir(
        _expand(p["path"]),
        hashclass=_hashclass(spec, ctx),
        chunker=_chunker(p),
        readonly=_flag(spec, ctx),
        default_hashclass=ctx.default_hashclass,
        **kw,
    )


def _open_file(spec: StoreSpec, ctx: OpenContext) -> Store:
    from vtstore.stores.filestore import FileStore

    p = spec.params
    kw = {k: p[k] for k in ("frame_size", "zstd_level", "compress") if k in p}
    return FileStore(
        _expand(p["path"]),
        hashclass=_hashclass(spec, ctx),
        readonly=_flag(spec, ctx),
        default_hashclass=ctx.default_hashclass,
        **kw,
    )


def _open_memory(spec: StoreSpec, ctx: OpenContext) -> Store:
    from vtstore.stores.memory import MemoryStore

    hc = _hashclass(spec, ctx) or ctx.default_hashclass
    name = spec.params.get("name")
    return MemoryStore(name=f"memory:{name}" if name else "memory:", hashclass=hc)


def _open_proxy(spec: StoreSpec, ctx: OpenContext) -> Store:
    from vtstore.stores.proxy import ProxyStore

    roles = {}
    opened = []
    try:
        if ctx.readonly and spec.params.get("copy2"):
            # copy2 is a cache the user configured: filled by read-only commands
            # too, so its stores are opened first, writable (unless configured
            # read-only themselves); a store in another role as well is shared
            wctx = OpenContext(
                ctx.config, False, ctx.hashclass, ctx.default_hashclass, ctx.opened, ctx.stack
            )
            for sub in spec.params["copy2"]:
                opened.append(open_spec(sub, wctx))
        for role in PROXY_ROLES:
            subs = spec.params.get(role)
            if subs is None:
                continue
            stores = []
            for sub in subs:
                s = open_spec(sub, ctx)
                opened.append(s)
                stores.append(s)
            roles[role] = stores
        return ProxyStore(
            roles.get("save", ()),
            roles.get("read"),
            roles.get("read2", ()),
            roles.get("copy2", ()),
            roles.get("save2", ()),
            name=spec.text or None,
            readonly=_flag(spec, ctx),
        )
    except BaseException:
        for s in ProxyStore._unique(opened):
            try:
                s.close()
            except Exception:  # noqa: BLE001 - already failing
                pass
        raise


def _open_clause(spec: StoreSpec, ctx: OpenContext) -> Store:
    name = spec.params["clause"]
    if f"[{name}]" in ctx.stack:
        loop = " -> ".join((*ctx.stack, f"[{name}]"))
        raise ConfigError(f"store clause [{name}] refers to itself: {loop}")
    if len(ctx.stack) >= MAX_NESTING:
        raise ConfigError(f"store clauses refer to each other more than {MAX_NESTING} deep")
    config = ctx.config
    if config is None:
        from vtstore.config import load_config

        config = ctx.config = load_config(None)
    sub = config.clause_spec(name)
    old = ctx.stack
    ctx.stack = (*old, f"[{name}]")
    try:
        store = open_spec(sub, ctx)
    finally:
        ctx.stack = old
    if "archives_from" in sub.params and getattr(store, "archive_source", None) is None:
        _send_archives(store, sub.params["archives_from"], ctx)
    return store


def _send_archives(store: Store, value: tuple[str, str], ctx: OpenContext) -> None:
    """`archives_from = GLOB:SPEC`: the archive lookups of `store` for names
    matching GLOB go to the store SPEC, opened on first use with the same
    config and hash class, writable unless the command is read-only."""
    from vtstore.named_archives import ArchiveSource, attach_archive_source

    pattern, text = value
    config, readonly, hashclass = ctx.config, ctx.readonly, store.hashclass

    def opener(spec_text: str) -> Store:
        return open_store_spec(spec_text, config=config, readonly=readonly, hashclass=hashclass)

    attach_archive_source(store, ArchiveSource(pattern, text, opener))


# The layers that provide the reserved types register them when imported; a
# reserved opener imports its provider by name (no import of an upper layer at
# load time) and, if that registered a real opener, opens with it.
PROVIDERS = {
    "tcp": "vtstore.net",
    "unix": "vtstore.net",
    "command": "vtstore.net",
    "http": "vtstore.http",
    "s3": "vtstore.s3",
}


def ensure_provider(type_name: str) -> None:
    """Import the layer that provides store type `type_name`, if there is one."""
    mod = PROVIDERS.get(type_name)
    st = _TYPES.get(type_name)
    if mod is None or (st is not None and st.opener is not _not_yet):
        return
    try:
        importlib.import_module(mod)
    except ModuleNotFoundError as e:
        if e.name is None or not mod.startswith(e.name):
            raise


def _not_yet(spec: StoreSpec, ctx: OpenContext) -> Store:
    ensure_provider(spec.type)
    st = _TYPES.get(spec.type)
    if st is not None and st.opener is not _not_yet:
        if spec.text and not spec.text.startswith("["):
            spec = parse_store_spec(spec.text)  # the provider may parse more
        return st.opener(spec, ctx)
    raise NotAvailableError(f"{spec.type} stores ({spec}) are not available yet")


def _speclist(text) -> list[StoreSpec]:
    if isinstance(text, list):
        return text
    try:
        return parse_spec_list(text)
    except ConfigError as e:
        raise ValueError(str(e)) from None


_DATADIR_KEYS = {
    "path": _str,
    "min_block": parse_size,
    "avg_block": parse_size,
    "max_block": parse_size,
    "data_file_size": parse_size,
    "frame_size": parse_size,
    "zstd_level": parse_zstd_level,
    "compress": parse_bool,
    "max_size": parse_size,
}
_SERVER_KEYS = {"store": _str, "exports": _str}

# what a clause of each network type must say (shared with vtstore.net.specs,
# which registers the real openers over the reserved ones below)
NET_REQUIRED = {"tcp": ("host", "port"), "unix": ("socket_path",), "command": ("command",)}
NET_DEFAULTS = {"unix": {"socket_path": "{basedir}/{clause}.sock"}}

register_store_type(
    "clause", _open_clause, {"clause": _str}, "a config clause", required=("clause",)
)
register_store_type("datadir", _open_datadir, _DATADIR_KEYS, "a local datadir", required=("path",))
register_store_type(
    "file",
    _open_file,
    {
        "path": _str,
        "frame_size": parse_size,
        "zstd_level": parse_zstd_level,
        "compress": parse_bool,
    },
    "a single .vtd data file",
    required=("path",),
)
register_store_type("memory", _open_memory, {"name": _str}, "an in-memory store")
register_store_type("proxy", _open_proxy, dict.fromkeys(PROXY_ROLES, _speclist), "stores by role")
register_store_type(
    "tcp",
    _not_yet,
    {"host": _str, "port": _port, **_SERVER_KEYS},
    "a TCP block server",
    required=NET_REQUIRED["tcp"],
)
register_store_type(
    "unix",
    _not_yet,
    {"socket_path": _str, **_SERVER_KEYS},
    "a UNIX socket block server",
    required=NET_REQUIRED["unix"],
    defaults=NET_DEFAULTS["unix"],
)
register_store_type(
    "command",
    _not_yet,
    {"command": _str},
    "a block server on a pipe",
    required=NET_REQUIRED["command"],
)
register_store_type("http", _not_yet, {"url": _str}, "an HTTP block server", required=("url",))
register_store_type(
    "s3",
    _not_yet,
    {"url": _str, "bucket": _str, "prefix": str, "endpoint": _str, "region": _str, "layout": _str},
    "an S3 bucket",
)


# -- encryption at rest: vtstore.stores.crypt registers the real opener -------------

PROVIDERS["crypt"] = "vtstore.stores.crypt"
register_scheme("crypt:", "crypt", lambda rest: {"store": _str(rest)})
register_store_type(
    "crypt",
    _not_yet,
    {
        "store": _str,
        "key_file": _str,
        "passphrase_file": _str,
        "index": _str,
        "compress": parse_bool,
    },
    "a store encrypted at rest",
    required=("store",),
)

# -- ordinary files served in place: vtstore.live.platonic registers the real opener --

PROVIDERS["platonic"] = "vtstore.live.platonic"
register_scheme("platonic:", "platonic", lambda rest: {"path": _str(rest)})
register_store_type(
    "platonic",
    _not_yet,
    {"path": _str, "index": _str, "refresh": parse_bool},
    "ordinary files served in place (read-only)",
    required=("path",),
)
