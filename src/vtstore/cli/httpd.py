"""`vt httpd [ADDRESS] [NAME:STORESPEC ...]`: serve blocks, trees and archives over HTTP.

ADDRESS is `host:port` (host defaults to 127.0.0.1; default 127.0.0.1:8080)
or `/path.sock` (a UNIX socket, mode 0600, for a reverse proxy in front).  The
store of `-S` is served at `/`; each NAME:STORESPEC at `/x/NAME/`.

Routes: `/h/HASHNAME:HEX` (a raw block), `/i/HASHCODE` (an indirect block's
whole data), `/d/DIRENT-REF/path` (directories as HTML or JSON, files with
their Content-Type; `?tar` downloads a directory, `?download` a file, `?view`
previews it), `/a/` (archives, their history and states, `/a/NAME/latest/`,
`/a/NAME/diff`), `/b/` (the block API of `-S http://...` clients).  Hash URLs
are immutable (strong ETag, 304, Cache-Control immutable), and all content
answers Range requests.  A browser gets a web view at `/`.

Reading is public unless `--read-key` (then a key with the read right is
needed, except on the exports named by `--public`).  Writing (PUT /h/, the
block API's add and flush, POST /a/NAME) always needs a signed request from a
key with the add or archive right (`vt key new NAME`; docs/HTTP.md, "Auth"),
unless `--insecure-no-auth`.
"""

from __future__ import annotations

import argparse
import os
import sys

from vtstore.errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser(
        "httpd",
        help="serve blocks and trees over HTTP",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "targets",
        nargs="*",
        metavar="[ADDRESS] [NAME:STORESPEC]",
        help="where to listen (default 127.0.0.1:8080), then named exports",
    )
    p.add_argument("-r", "--readonly", action="store_true", help="refuse every write")
    p.add_argument(
        "--workers", type=int, default=4, metavar="N", help="store worker threads (default 4)"
    )
    p.add_argument(
        "--redirect-blocks",
        metavar="URL",
        help="answer GET /h/HASH with a redirect to URL/HEX.HASHNAME (a per-block object"
        " store or CDN; ?raw still serves the block here)",
    )
    p.add_argument(
        "--ready-file",
        metavar="FILE",
        help="once listening, write the base URL (e.g. http://127.0.0.1:PORT/) to FILE",
    )
    a = p.add_argument_group("authentication and TLS")
    a.add_argument(
        "--auth-keys",
        metavar="FILE",
        help="the keys requests are signed with (default {basedir}/server-keys, made by vt key)",
    )
    a.add_argument(
        "--read-key",
        action="store_true",
        help="reading needs a key with the read right too (default: reading is public)",
    )
    a.add_argument(
        "--public",
        action="append",
        default=[],
        metavar="NAME",
        help="with --read-key, this export stays public (- for the default export; repeat)",
    )
    a.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="no keys at all: anyone who can connect may write (tests)",
    )
    a.add_argument("--tls-cert", metavar="FILE", help="TLS certificate chain (PEM): serve https")
    a.add_argument("--tls-key", metavar="FILE", help="TLS private key (PEM)")
    g = p.add_argument_group("resource limits")
    g.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="most connections and requests at once; more get 503 (default 128)",
    )
    g.add_argument(
        "--max-body", metavar="SIZE", help="largest request body (default 64MiB; more: 413)"
    )
    g.add_argument(
        "--memory",
        metavar="SIZE",
        help="request bodies held at once, all together (default 256MiB; more wait, then 503)",
    )
    g.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="close a keep-alive connection idle this long (default 60)",
    )
    g.add_argument(
        "--io-timeout",
        type=float,
        metavar="SECONDS",
        help="a request body must keep arriving: 408 after a pause this long (default 30)",
    )
    p.set_defaults(func=run)


def limits_of(args):
    """The `HTTPLimits` the options ask for."""
    from vtstore.http.app import HTTPLimits
    from vtstore.stores.spec import parse_size

    d = HTTPLimits()
    try:
        lim = HTTPLimits(
            max_connections=args.max_connections or d.max_connections,
            max_body=parse_size(args.max_body) if args.max_body else d.max_body,
            memory=parse_size(args.memory) if args.memory else d.memory,
            idle_timeout=args.idle_timeout or d.idle_timeout,
            io_timeout=args.io_timeout or d.io_timeout,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if lim.max_connections < 1:
        raise ConfigError("--max-connections must be at least 1")
    if lim.memory < lim.max_body:
        raise ConfigError("--memory must be at least --max-body")
    if not (lim.idle_timeout > 0 and lim.io_timeout > 0):
        raise ConfigError("timeouts must be more than 0 seconds")
    return lim


def run(args) -> int:
    from vtstore.cli.common import open_store
    from vtstore.cli.serve import parse_export
    from vtstore.config import load_config
    from vtstore.http.app import HTTPApp
    from vtstore.http.server import bind, serve_foreground
    from vtstore.security.keys import KeyRing, default_server_keys
    from vtstore.stores.spec import open_store_spec

    targets = list(args.targets)
    address = "127.0.0.1:8080"
    if targets and _is_address(targets[0]):
        address = targets.pop(0)
    named = [parse_export(t) for t in targets]
    limits = limits_of(args)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    config = load_config(getattr(args, "config_path", None))
    keys_path = args.auth_keys or default_server_keys(config)
    keys = KeyRing.load(keys_path, missing_ok=not args.auth_keys)
    if args.insecure_no_auth and not args.quiet:
        print(
            "vt httpd: WARNING: --insecure-no-auth: anyone who can reach it can write",
            file=sys.stderr,
        )
    stores = []
    try:
        exports = {"": open_store(args, readonly=args.readonly)}
        stores.append(exports[""])
        for name, spec in named:
            if name in exports or "/" in name:
                raise ConfigError(f"bad or repeated export name {name!r}")
            exports[name] = open_store_spec(spec, config=config, readonly=args.readonly)
            stores.append(exports[name])
        app = HTTPApp(
            exports,
            readonly=args.readonly,
            keys=keys,
            read_key=args.read_key,
            public=["" if p == "-" else p for p in args.public],
            insecure_no_auth=args.insecure_no_auth,
            redirect_blocks=args.redirect_blocks,
            limits=limits,
            workers=args.workers,
        )
        sock, url = bind(address)
        if args.tls_cert:
            url = url.replace("http://", "https://")
        if not args.quiet:
            print(f"vt httpd: serving {url}", file=sys.stderr, flush=True)
        if args.ready_file:
            tmp = f"{args.ready_file}.tmp{os.getpid()}"
            with open(tmp, "w") as f:
                f.write(url + "\n")
            os.replace(tmp, args.ready_file)
        serve_foreground(app, sock, tls_cert=args.tls_cert, tls_key=args.tls_key)
    finally:
        for st in reversed(stores):
            st.close()
    return 0


def _is_address(text: str) -> bool:
    from vtstore.net.transport import is_hostport

    return text.startswith(("/", "./", "unix:")) or is_hostport(text)
