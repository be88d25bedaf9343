"""`vt serve [ADDRESS] [NAME:STORESPEC ...]`: serve stores with the block protocol.

ADDRESS is `host:port` (host defaults to 127.0.0.1), `/path.sock` (a UNIX socket,
mode 0600), or `-` for stdin/stdout (so `ssh host vt serve -` works); without it,
the [server] clause of the configuration says (by default a UNIX socket
`vt.sock` in the base directory).  The store of `-S` (else the clause's `store`,
else the default store) is the default export; each NAME:STORESPEC (and each of
the clause's `exports`) adds a named export, reached by a client as
`tcp:host:port#NAME` or `unix:/path.sock#NAME`.  SIGTERM or SIGINT stop
the server gracefully: requests already received are answered and the stores are
flushed.

Who may connect: TCP clients authenticate with a key (`vt key new NAME`; the
server's keys are in `{basedir}/server-keys`, or `--auth-keys FILE`), and each
key has rights per export.  UNIX socket clients are let in by uid: the server's
owner and root, and each `--allow-uid`.  stdio trusts whoever started it.
`--tls-cert/--tls-key` put TCP in TLS (clients then say `tls:host:port`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from vtstore.errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve stores over TCP, a UNIX socket or stdio",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "targets",
        nargs="*",
        metavar="[ADDRESS] [NAME:STORESPEC]",
        help="where to listen (default: the [server] clause, a UNIX socket in the base"
        " directory), then named exports",
    )
    p.add_argument("-r", "--readonly", action="store_true", help="refuse adds and archive updates")
    p.add_argument(
        "--workers", type=int, default=4, metavar="N", help="request worker threads (default 4)"
    )
    a = p.add_argument_group("authentication and TLS")
    a.add_argument(
        "--auth-keys",
        metavar="FILE",
        help="the keys clients authenticate with (default {basedir}/server-keys, made by vt key)",
    )
    a.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve TCP without authentication: anyone who can connect reads and writes (tests)",
    )
    a.add_argument(
        "--allow-uid",
        action="append",
        type=_uid,
        default=[],
        metavar="UID",
        help="also let this uid use the UNIX socket (default: the server's owner and root)",
    )
    a.add_argument("--tls-cert", metavar="FILE", help="TLS certificate chain (PEM) for TCP")
    a.add_argument("--tls-key", metavar="FILE", help="TLS private key (PEM) for TCP")
    g = p.add_argument_group("resource limits (defaults in vtstore.net.limits)")
    g.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="most clients at once; more are refused with an error (default 128); at"
        " most half of them still in their handshake (the oldest gives way)",
    )
    g.add_argument(
        "--memory",
        metavar="SIZE",
        help="memory budget for the requests and answers the whole server holds"
        " (default 128MiB; one connection holds at most a quarter of it, 32MiB or more)",
    )
    g.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="close a connection with nothing to do for this long (default 300)",
    )
    g.add_argument(
        "--handshake-timeout",
        type=float,
        metavar="SECONDS",
        help="close a connection whose handshake is not done after this long (default 10)",
    )
    g.add_argument(
        "--io-timeout",
        type=float,
        metavar="SECONDS",
        help="close a connection whose packet or answer moves less than 64 KiB in this"
        " long (default 30)",
    )
    p.add_argument(
        "--ready-file",
        metavar="FILE",
        help="once listening, write the client store spec (e.g. tcp:127.0.0.1:PORT) to FILE",
    )
    p.set_defaults(func=run)


def _uid(text: str) -> int:
    """A uid number, or a user name."""
    if text.isdigit():
        return int(text)
    import pwd

    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no user {text!r}") from None


def server_security(args, config, address: str) -> dict:
    """The BlockServer keyword arguments for authentication and TLS: the keys,
    the insecure mode (said loudly), extra uids and the TLS context."""
    from vtstore.security.keys import KeyRing, default_server_keys

    p = config.clause_spec("server").params
    is_tcp = address != "-" and not (address.startswith(("/", "unix:", ".", "~")))
    kw: dict = {"allow_uids": list(args.allow_uid)}
    for text in str(p.get("allow_uid") or "").split():
        kw["allow_uids"].append(_uid(text))
    keys_path = args.auth_keys or p.get("auth_keys")
    if keys_path:
        kw["keys"] = KeyRing.load(keys_path)
    else:
        kw["keys"] = KeyRing.load(default_server_keys(config), missing_ok=True)
    if args.insecure_no_auth:
        kw["insecure_no_auth"] = True
        if is_tcp:
            print(
                "vt serve: WARNING: --insecure-no-auth: anyone who can reach this port"
                " can read, add and update archives",
                file=sys.stderr,
                flush=True,
            )
    elif is_tcp and not kw["keys"]:
        raise ConfigError("TCP needs keys: run vt key new NAME, or --insecure-no-auth")
    cert = args.tls_cert or p.get("tls_cert")
    key = args.tls_key or p.get("tls_key")
    if bool(cert) != bool(key):
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    if cert:
        if not is_tcp:
            raise ConfigError("--tls-cert/--tls-key are for TCP addresses")
        from vtstore.security.tls import server_context

        kw["tls_context"] = server_context(cert, key)
    return kw


def is_address(text: str) -> bool:
    """Whether the first positional argument of `vt serve` is an ADDRESS."""
    from vtstore.net.transport import is_hostport

    return (
        text == "-"
        or text.startswith(("tcp:", "unix:", "/", "./", "../", "~"))
        or is_hostport(text)
    )


def parse_targets(targets: list[str]) -> tuple[str | None, list[tuple[str, str]]]:
    """Split the positional arguments into the ADDRESS (None if not given) and
    `(name, storespec)` pairs."""
    address = None
    rest = list(targets)
    if rest and is_address(rest[0]):
        address = rest.pop(0)
    return address, [parse_export(t) for t in rest]


def parse_export(text: str) -> tuple[str, str]:
    """`NAME:STORESPEC` -> `(name, storespec)`."""
    name, sep, spec = text.partition(":")
    if not sep or not name or not spec:
        raise ConfigError(f"an export is NAME:STORESPEC, got {text!r}")
    if "#" in name:
        raise ConfigError(f"bad export name {name!r}")
    return name, spec


def server_clause(config) -> tuple[str, str | None, list[tuple[str, str]]]:
    """From the `[server]` clause: the address, the default store spec and the
    named exports (`exports = NAME:SPEC NAME:SPEC ...`)."""
    spec = config.clause_spec("server")
    p = spec.params
    if spec.type == "unix":
        address = p["socket_path"]
    elif spec.type == "tcp":
        host = p["host"]
        address = f"[{host}]:{p['port']}" if ":" in host else f"{host}:{p['port']}"
    else:
        raise ConfigError(f"{config.where}: [server] type must be unix or tcp, not {spec.type}")
    exports = [parse_export(t) for t in str(p.get("exports") or "").split()]
    return address, p.get("store"), exports


def run(args) -> int:
    from vtstore.cli.common import open_store
    from vtstore.config import load_config
    from vtstore.stores.spec import open_store_spec

    address, named = parse_targets(args.targets)
    config = load_config(getattr(args, "config_path", None))
    clause_address, clause_store, clause_exports = server_clause(config)
    if address is None:
        address = clause_address
        if address.startswith("/"):
            # the default socket lives in the base directory, which may be new
            os.makedirs(os.path.dirname(address), mode=0o700, exist_ok=True)
    if not (getattr(args, "store_spec", None) or os.environ.get("VT_STORE")) and clause_store:
        args.store_spec = clause_store
    stores = []
    try:
        exports = {"": open_store(args, readonly=args.readonly)}
        stores.append(exports[""])
        given = dict(clause_exports)
        given.update(named)  # the command line wins over the clause
        for name, spec in given.items():
            exports[name] = open_store_spec(spec, config=config, readonly=args.readonly)
            stores.append(exports[name])
        security = server_security(args, config, address)
        return _serve(args, address, exports, security)
    finally:
        for st in reversed(stores):
            st.close()


def _serve(args, address: str, exports, security: dict | None = None) -> int:
    from vtstore.net.limits import limits_from_options
    from vtstore.net.server import BlockServer  # here: other commands need no network code

    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    server = BlockServer(
        exports,
        readonly=args.readonly,
        workers=max(1, args.workers),
        limits=limits_from_options(args),
        **(security or {}),
    )
    conn = None
    try:
        if address == "-":
            conn = server.serve_stdio()
        else:
            spec = server.listen(address)
            if not args.quiet:
                print(f"vt serve: listening on {spec}", file=sys.stderr, flush=True)
            if args.ready_file:
                tmp = f"{args.ready_file}.tmp{os.getpid()}"
                with open(tmp, "w") as f:
                    f.write(spec + "\n")
                os.replace(tmp, args.ready_file)
        while not stop.is_set():
            if conn is not None:
                # wake as soon as the peer is gone: `ssh host vt serve -` ends
                # when its input does, and the client waits for that
                if conn.done.wait(0.2):
                    break
            else:
                stop.wait(0.2)
    finally:
        server.shutdown()
        for s, h in previous.items():
            signal.signal(s, h)
    return 0
