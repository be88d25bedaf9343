"""`vt key new|list|remove|tls-cert`: the keys block servers authenticate with.

`vt key new NAME` makes a key (32 random octets) with rights per export, writes
the client's key file (mode 0600; default `{basedir}/keys/NAME.key`) and adds the
key to the server's list (`{basedir}/server-keys`, or `--auth-keys FILE`).  A
client names its key file with `$VT_KEY_FILE` or the `key_file` of its clause.
Rights: `read` (get, contains, listings), `add` (add, flush), `archive` (archive
updates), or `all`; `--export NAME` (repeatable; `-` is the default export)
limits them to those exports, else they hold on every export.
`vt key tls-cert CERT KEY` writes a self-signed certificate for `vt serve
--tls-cert CERT --tls-key KEY` and prints its pin (a client's `tls_pin`).
"""

from __future__ import annotations

import argparse
import os
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "key",
        help="create, list and remove block server keys",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ks = p.add_subparsers(dest="key_command", metavar="ACTION", title="actions")

    def common(q):
        q.add_argument(
            "--auth-keys",
            metavar="FILE",
            help="the server's key list (default {basedir}/server-keys)",
        )

    n = ks.add_parser(
        "new", help="make a key: a client key file, and an entry on the server's list"
    )
    n.add_argument("name", metavar="NAME", help="the key's name (letters, digits, ._@+-)")
    n.add_argument(
        "--rights",
        default="all",
        metavar="RIGHTS",
        help="read, add, archive, comma-separated, or all (default all)",
    )
    n.add_argument(
        "--export",
        action="append",
        metavar="NAME",
        help="the rights hold on this export (repeatable; '-' is the default export);"
        " default: every export",
    )
    n.add_argument(
        "--key-file",
        metavar="FILE",
        help="where to write the client's key file (default {basedir}/keys/NAME.key)",
    )
    common(n)
    n.set_defaults(func=run_new)

    ls = ks.add_parser("list", help="list the server's keys and their rights")
    common(ls)
    ls.set_defaults(func=run_list)

    rm = ks.add_parser("remove", help="remove a key from the server's list")
    rm.add_argument("name", metavar="NAME")
    common(rm)
    rm.set_defaults(func=run_remove)

    t = ks.add_parser("tls-cert", help="write a self-signed TLS certificate and key; print its pin")
    t.add_argument("cert", metavar="CERT", help="the certificate file to write (PEM)")
    t.add_argument("key", metavar="KEY", help="the private key file to write (PEM, mode 0600)")
    t.add_argument(
        "--host",
        action="append",
        metavar="HOST",
        help="an address or name the certificate is for (repeatable; default 127.0.0.1, localhost)",
    )
    t.set_defaults(func=run_tls_cert)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(p) -> int:
    p.print_help(sys.stderr)
    return 2


def _config(args):
    from vtstore.config import load_config

    return load_config(getattr(args, "config_path", None))


def _ring_path(args, config) -> str:
    from vtstore.security.keys import default_server_keys

    return os.path.expanduser(args.auth_keys) if args.auth_keys else default_server_keys(config)


def run_new(args) -> int:
    from vtstore.security.keys import (
        Key,
        KeyRing,
        check_key_id,
        default_key_dir,
        format_rights,
        parse_rights_options,
        save_key_file,
    )

    config = _config(args)
    check_key_id(args.name)
    rights = parse_rights_options(args.rights, args.export)
    ring_path = _ring_path(args, config)
    ring = KeyRing.load(ring_path, missing_ok=True)
    key = Key.generate(args.name, rights)
    ring.add(key)  # refuses a name in use, before anything is written
    key_file = args.key_file or os.path.join(default_key_dir(config), f"{args.name}.key")
    save_key_file(key_file, key)
    try:
        ring.save()
    except BaseException:
        os.unlink(key_file)
        raise
    if not args.quiet:
        where = ", ".join(f"{e or '(default)'}: {format_rights(r)}" for e, r in rights.items())
        print(f"vt key: key {args.name!r} ({where}) added to {ring_path}", file=sys.stderr)
    print(os.path.abspath(key_file))
    return 0


def run_list(args) -> int:
    from vtstore.security.keys import KeyRing, format_rights

    ring = KeyRing.load(_ring_path(args, _config(args)), missing_ok=True)
    for key in ring:
        rights = " ".join(f"{e or '-'}={format_rights(r)}" for e, r in sorted(key.rights.items()))
        print(f"{key.id}\t{rights}")
    return 0


def run_remove(args) -> int:
    from vtstore.security.keys import KeyRing, default_key_dir

    config = _config(args)
    ring_path = _ring_path(args, config)
    ring = KeyRing.load(ring_path, missing_ok=True)
    ring.remove(args.name)
    ring.save()
    own = os.path.join(default_key_dir(config), f"{args.name}.key")
    if os.path.exists(own):
        os.unlink(own)
    if not args.quiet:
        print(f"vt key: key {args.name!r} removed from {ring_path}", file=sys.stderr)
    return 0


def run_tls_cert(args) -> int:
    from vtstore.security.tls import make_self_signed

    pin = make_self_signed(args.cert, args.key, tuple(args.host or ("127.0.0.1", "localhost")))
    print(f"sha256:{pin}")
    return 0
