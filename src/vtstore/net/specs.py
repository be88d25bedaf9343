"""Store specs for block servers: `tcp:HOST:PORT`, `tls:HOST:PORT`,
`unix:/PATH.sock`, `|COMMAND`.

`register()` installs them in the store-spec registry of `vtstore.stores.spec`
(over the reserved placeholders), with an optional `#NAME` suffix on tcp:, tls:
and unix: to pick a named export.  `tls:` is a tcp clause with `tls = yes`.
Client clause keys: `key_file` (else `$VT_KEY_FILE` for tcp), `tls_ca`,
`tls_pin` (else `$VT_TLS_CA`, `$VT_TLS_PIN`).  Server clause keys (read by
`vt serve`): `auth_keys`, `tls_cert`, `tls_key`, `allow_uid`.
Importing `vtstore.net` calls it.
"""

from __future__ import annotations

from vtstore.net.transport import parse_hostport


def _split_export(rest: str) -> tuple[str, dict]:
    target, sep, export = rest.partition("#")
    if sep and not export:
        raise ValueError("an empty export name after '#'")
    return target, ({"export": export} if export else {})


def _tcp_params(rest: str) -> dict:
    target, extra = _split_export(rest)
    try:
        host, port = parse_hostport(target, default_host="")
    except Exception:
        raise ValueError("say tcp:HOST:PORT or tcp:HOST:PORT#EXPORT") from None
    if not host or not 0 < port < 65536:
        raise ValueError("say tcp:HOST:PORT with a port of 1..65535")
    return {"host": host, "port": port, **extra}


def _tls_params(rest: str) -> dict:
    try:
        return {**_tcp_params(rest), "tls": True}
    except ValueError as e:
        raise ValueError(str(e).replace("tcp:", "tls:")) from None


def _unix_params(rest: str) -> dict:
    target, extra = _split_export(rest)
    if not target.strip():
        raise ValueError("say unix:/PATH.sock")
    return {"socket_path": target.strip(), **extra}


def _command_params(rest: str) -> dict:
    if not rest.strip():
        raise ValueError("say |COMMAND")
    return {"command": rest.strip()}


def _seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    t = float(text)
    if not 0 < t < 1e9:  # also refuses nan and inf
        raise ValueError(f"a time in seconds must be above 0, got {text!r}")
    return t


def _open(spec, ctx):
    import os

    from vtstore.net.client import StreamStore

    p = spec.params
    kw = {}
    if spec.type == "tcp":
        host = p["host"]
        scheme = "tls" if p.get("tls") else "tcp"
        target = f"{scheme}:[{host}]:{p['port']}" if ":" in host else f"{scheme}:{host}:{p['port']}"
        if p.get("tls"):
            kw["tls_ca"] = p.get("tls_ca") or os.environ.get("VT_TLS_CA") or None
            kw["tls_pin"] = p.get("tls_pin") or os.environ.get("VT_TLS_PIN") or None
    elif spec.type == "unix":
        target = f"unix:{p['socket_path']}"
    else:
        target = f"|{p['command']}"
    if p.get("key_file"):
        kw["key_file"] = p["key_file"]
    if "reconnect_timeout" in p:
        kw["reconnect_timeout"] = float(p["reconnect_timeout"])
    return StreamStore(
        target,
        name=spec.text or target,
        export=p.get("export") or p.get("store") or "",
        hashclass=p.get("hashclass") or ctx.hashclass,
        readonly=bool(ctx.readonly or p.get("readonly")),
        **kw,
    )


def register() -> None:
    """Register the tcp, unix and command store types and their spec schemes."""
    from vtstore.stores import spec as S

    net_keys = {
        "export": S._str,
        "store": S._str,
        "exports": S._str,
        "reconnect_timeout": _seconds,
        "key_file": S._str,
        # the server's side, for `vt serve` and its [server] clause
        "auth_keys": S._str,
        "allow_uid": S._str,
    }
    tls_keys = {
        "tls": S.parse_bool,
        "tls_ca": S._str,
        "tls_pin": S._str,
        "tls_cert": S._str,
        "tls_key": S._str,
    }
    S.register_scheme("tcp:", "tcp", _tcp_params)
    S.register_scheme("tls:", "tcp", _tls_params)
    S.register_scheme("unix:", "unix", _unix_params)
    S.register_scheme("|", "command", _command_params)
    for name, keys, doc in (
        ("tcp", {"host": S._str, "port": S._port, **tls_keys}, "a TCP block server"),
        ("unix", {"socket_path": S._str}, "a UNIX socket block server"),
        ("command", {"command": S._str}, "a block server on a command's stdio"),
    ):
        S.register_store_type(
            name,
            _open,
            {**keys, **net_keys},
            doc,
            required=S.NET_REQUIRED[name],
            defaults=S.NET_DEFAULTS.get(name),
        )
