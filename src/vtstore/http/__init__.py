"""The HTTP layer: `vt httpd` (an ASGI app under Uvicorn) and the `http://` /
`https://` client store.

Importing this package registers the `http` store type over the reserved
placeholder of `vtstore.stores.spec` (`PROVIDERS["http"]` names this module), so
`-S http://host:port/` and `-S http://host:port/x/EXPORT/` open an `HTTPStore`.
The server side (`vtstore.http.app`, `.server`) is imported only by who uses it.
"""

from __future__ import annotations


def _open(spec, ctx):
    import os

    from vtstore.http.client import HTTPStore

    p = spec.params
    key_file = p.get("key_file") or os.environ.get("VT_KEY_FILE") or None
    return HTTPStore(
        p["url"],
        name=spec.text or p["url"],
        hashclass=p.get("hashclass") or ctx.hashclass,
        readonly=bool(ctx.readonly or p.get("readonly")),
        key_file=key_file,
        tls_ca=p.get("tls_ca") or os.environ.get("VT_TLS_CA") or None,
    )


def _url_params(prefix: str):
    def parse(rest: str) -> dict:
        rest = rest.strip()
        host = rest.split("/", 1)[0]
        if not host:
            raise ValueError(f"say {prefix}HOST:PORT/")
        return {"url": prefix + rest}

    return parse


def register() -> None:
    """Register the `http` store type and the `http://`, `https://` schemes."""
    from vtstore.stores import spec as S

    S.register_scheme("http://", "http", _url_params("http://"))
    S.register_scheme("https://", "http", _url_params("https://"))
    S.register_store_type(
        "http",
        _open,
        {"url": S._str, "key_file": S._str, "tls_ca": S._str},
        "an HTTP block server (vt httpd)",
        required=("url",),
    )


register()
