"""`vt crypt`: the key file of a store encrypted at rest.

    vt crypt init [STORE]      make a new key (a datadir backend is created too)
    vt crypt passwd [STORE]    wrap the key with a new passphrase (no data rewritten)
    vt crypt info [STORE]      show the key file's id and KDF, the store's format
    vt crypt reindex [STORE]   decrypt every backend block: rebuild a format 1
                               store's crypt index, count a format 2 store's blocks

STORE is a crypt store (`crypt:SPEC`, or a clause of `type = crypt`) or the
backend it wraps; default: -S, $VT_STORE, the [default] clause.  The key file
is the clause's `key_file`, else --key-file, else `crypt.key` in the datadir.
Passphrases come from $VT_PASSPHRASE (the new one for passwd and init from
$VT_NEW_PASSPHRASE, else $VT_PASSPHRASE for init), --passphrase-file /
--new-passphrase-file, else the terminal (asked twice for a new one).  Lose the
passphrase (or the key file) and the data is lost: keep a copy of the key file
and remember its passphrase.

A datadir made by `vt crypt init` (or by the first write through `crypt:`) is
format 2: it names each encrypted block by the keyed tag the block carries, so
it needs no crypt index, and `vt -S DATADIR fsck` checks it without the key
(framing, CRCs, names) while `vt -S crypt:DATADIR fsck` also decrypts every
block.
Stores made before (format 1) keep their crypt index (`crypt.idx`).
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass

from vtstore.errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "crypt",
        help="make, re-wrap or show the key of a store encrypted at rest",
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n", 2)[2],
    )
    p.add_argument("action", choices=("init", "passwd", "info", "reindex"))
    p.add_argument("store", nargs="?", metavar="STORE", help="crypt store or its backend")
    p.add_argument("--key-file", metavar="PATH", help="the key file (default: in the datadir)")
    p.add_argument(
        "--index", metavar="PATH", help="a format 1 store's crypt index (default: in the datadir)"
    )
    p.add_argument("--passphrase-file", metavar="PATH", help="read the passphrase from PATH")
    p.add_argument(
        "--new-passphrase-file", metavar="PATH", help="passwd, init: the new passphrase from PATH"
    )
    p.add_argument(
        "--scrypt-log-n",
        type=int,
        metavar="N",
        help="init, passwd: scrypt cost 2^N (default 17: 128 MiB, about a second;"
        " less is for tests only)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object: the key file and key id (init, passwd), the key and"
        " format (info), the counts (reindex)",
    )
    p.set_defaults(func=run)


@dataclass
class Target:
    """What a `vt crypt` command acts on."""

    backend_spec: object
    key_file: str | None
    index: str | None
    passphrase_file: str | None
    compress: bool = True


def _target(args) -> Target:
    from vtstore.config import load_config
    from vtstore.stores.spec import parse_store_spec

    text = args.store or args.store_spec or os.environ.get("VT_STORE") or "[default]"
    if not text.strip():
        raise ConfigError("empty store spec")
    spec = parse_store_spec(text)
    if spec.type == "clause":
        spec = load_config(args.config_path).clause_spec(spec.params["clause"])
    if spec.type == "crypt":
        p = spec.params
        inner = p["store"]
        return Target(
            inner if not isinstance(inner, str) else parse_store_spec(inner),
            args.key_file or p.get("key_file"),
            args.index or p.get("index"),
            args.passphrase_file or p.get("passphrase_file"),
            p.get("compress", True),
        )
    return Target(spec, args.key_file, args.index, args.passphrase_file)


def _open_backend(t: Target, readonly: bool):
    from vtstore.stores.crypt import backend_spec
    from vtstore.stores.spec import OpenContext, open_spec

    return open_spec(backend_spec(t.backend_spec), OpenContext(None, readonly))


def _key_paths(t: Target):
    """The key file and index, without opening the backend when it is a
    datadir (reading the key needs no access to the data)."""
    from pathlib import Path

    from vtstore.stores.crypt import default_paths
    from vtstore.stores.spec import StoreSpec

    spec = t.backend_spec
    if isinstance(spec, StoreSpec) and spec.type == "datadir":
        home = Path(os.path.abspath(os.path.expanduser(spec.params["path"])))
        kf = t.key_file or home / "crypt.key"
        return default_paths(_Located(home), kf, t.index or home / "crypt.idx")
    with _open_backend(t, readonly=True) as backend:
        return default_paths(backend, t.key_file, t.index)


def _json(obj: dict) -> int:
    """Print `obj` as one JSON object (`--json`); exit code 0."""
    import json

    print(json.dumps(obj, sort_keys=True, default=str))
    return 0


def _format(t: Target) -> int | None:
    """A datadir backend's crypt format, from its metadata alone (no lock, no
    index): 2 when it names blocks by their tag; None when unknown."""
    import json
    from pathlib import Path

    from vtstore.stores.spec import StoreSpec

    spec = t.backend_spec
    if not (isinstance(spec, StoreSpec) and spec.type == "datadir"):
        return None
    meta = Path(os.path.expanduser(spec.params["path"])) / "datadir.json"
    try:
        name = json.loads(meta.read_text()).get("hashclass")
    except (OSError, ValueError, AttributeError):
        return None
    return 2 if isinstance(name, str) and name.startswith("crypt-") else 1


@dataclass
class _Located:
    """Stands for a datadir by its path, for `default_paths`."""

    path: object
    name: str = ""


def _new_passphrase(args, what: str) -> bytes:
    v = os.environ.get("VT_NEW_PASSPHRASE")
    if v:
        return v.encode()
    if args.new_passphrase_file:
        from vtstore.stores.crypt.keys import get_passphrase

        return get_passphrase(args.new_passphrase_file, env=None)
    if what == "init" and os.environ.get("VT_PASSPHRASE"):
        return os.environ["VT_PASSPHRASE"].encode()
    from vtstore.stores.crypt.keys import has_tty

    if not has_tty():
        raise ConfigError(
            "no new passphrase: set $VT_NEW_PASSPHRASE, give --new-passphrase-file,"
            " or run on a terminal"
        )
    a = getpass.getpass("new passphrase: ")
    b = getpass.getpass("new passphrase again: ")
    if a != b:
        raise ConfigError("the two passphrases differ")
    if not a:
        raise ConfigError("an empty passphrase protects nothing")
    return a.encode()


def run(args) -> int:
    from vtstore.stores.crypt import default_paths
    from vtstore.stores.crypt.keys import DEFAULT_LOG_N, create_key_file, key_info, rewrap

    t = _target(args)
    if args.action == "init":
        from vtstore.stores.crypt import prepare_backend

        backend = _open_backend(t, readonly=False)
        with backend:
            prepare_backend(backend)  # a new datadir is format 2
            create = getattr(backend, "create", None)
            if callable(create):
                create()
            kf, idx = default_paths(backend, t.key_file, t.index)
            pw = _new_passphrase(args, "init")
            key = create_key_file(kf, pw, args.scrypt_log_n or DEFAULT_LOG_N)
        if args.json:
            return _json({"key_file": str(kf), "key_id": key.key_id, "store": backend.name})
        print(f"{kf}: new key {key.key_id} for {backend.name}")
        print("keep a copy of this key file and its passphrase: without both the data is lost")
        return 0
    from vtstore.stores.crypt.keys import get_passphrase

    if args.action in ("info", "passwd"):
        kf, idx = _key_paths(t)
        if args.action == "info":
            info = key_info(kf)
            fmt = _format(t)
            if fmt is not None:
                info["format"] = fmt
            if fmt != 2:
                info["index"] = str(idx)
                info["index_bytes"] = idx.stat().st_size if idx.exists() else 0
            if args.json:
                return _json(info)
            for k, v in info.items():
                print(f"{k}: {v}")
            return 0
        from vtstore.stores.crypt.keys import unwrap

        old = get_passphrase(t.passphrase_file, prompt=f"passphrase for {kf}: ")
        unwrap(kf, old)  # a wrong passphrase is refused before asking for a new one
        new = _new_passphrase(args, "passwd")
        key = rewrap(kf, old, new, args.scrypt_log_n)
        if args.json:
            return _json({"key_file": str(kf), "key_id": key.key_id})
        print(f"{kf}: key {key.key_id} wrapped with the new passphrase")
        return 0
    backend = _open_backend(t, readonly=False)
    with backend:
        kf, idx = default_paths(backend, t.key_file, t.index)
        old = get_passphrase(t.passphrase_file, prompt=f"passphrase for {kf}: ")
        from vtstore.stores.crypt import open_crypt

        s = open_crypt(
            backend, key_file=kf, passphrase=old, index=idx, compress=t.compress, owns=False
        )
        with s:
            rep = s.reindex()
        if args.json:
            _json({"index": rep.index, "format": rep.format, **rep.as_dict()})
        else:
            print("\n".join(rep.lines()))
        return 0 if rep.ok else 1
