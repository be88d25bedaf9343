"""Encryption at rest: a store wrapper that encrypts every block and archive line.

`CryptStore` wraps any store (the backend): blocks are encrypted with
AES-256-GCM under a master key kept in a key file, wrapped by a passphrase
through scrypt (`keys`).  The backend's names for blocks reveal no plaintext
hash: a new datadir backend names each block by the keyed tag its header
carries (format 2, `names`); older stores and other backends by the hash of the
ciphertext, the map from plaintext hashcode to backend block kept encrypted in
the crypt index (format 1, `index`).  See docs/SECURITY.md, docs/FORMATS.md §12
and the docstrings of `store`, `names`, `keys` and `index`.

Store specs::

    crypt:SPEC                 SPEC's store, encrypted; the key file is
                               SPEC/crypt.key (and a format 1 store's index
                               SPEC/crypt.idx) when SPEC is a datadir
    [clause] with type = crypt, store = SPEC, and optionally key_file = PATH,
        passphrase_file = PATH, index = PATH, compress = yes|no

The passphrase comes from `$VT_PASSPHRASE`, else the clause's
`passphrase_file`, else the terminal.  `vt crypt init` makes the key file.
"""

from __future__ import annotations

import os
from pathlib import Path

from vtstore.errors import ConfigError
from vtstore.stores.base import Store
from vtstore.stores.crypt.keys import CryptKeyError, MasterKey, get_passphrase, unwrap
from vtstore.stores.crypt.names import is_tag_class, tag_class
from vtstore.stores.crypt.store import CryptStore
from vtstore.stores.spec import (
    OpenContext,
    StoreSpec,
    _str,
    open_spec,
    parse_bool,
    parse_store_spec,
    register_scheme,
    register_store_type,
)

__all__ = [
    "CryptStore",
    "CryptKeyError",
    "MasterKey",
    "default_paths",
    "open_crypt",
    "prepare_backend",
]

KEY_FILE_NAME = "crypt.key"
INDEX_NAME = "crypt.idx"


def _inner_spec(text) -> StoreSpec:
    if isinstance(text, StoreSpec):
        return text
    return parse_store_spec(text)


def backend_spec(text) -> StoreSpec:
    """The backend's spec; a datadir is opened without compression (ciphertext
    does not compress: the crypt store compresses before encrypting)."""
    spec = _inner_spec(text)
    if spec.type == "datadir" and "compress" not in spec.params:
        spec = StoreSpec("datadir", {**spec.params, "compress": False}, spec.text)
    return spec


def default_paths(backend: Store, key_file=None, index=None) -> tuple[Path, Path]:
    """The key file and index paths: as given, else beside a datadir's data."""
    base = getattr(backend, "path", None)
    home = Path(base) if isinstance(base, (str, os.PathLike)) else None
    if key_file is None:
        if home is None:
            raise ConfigError(
                f"a crypt store over {backend.name} needs key_file (only a datadir has a default)"
            )
        key_file = home / KEY_FILE_NAME
    key_file = Path(os.path.expanduser(os.fspath(key_file)))
    if index is None:
        index = home / INDEX_NAME if home is not None else Path(f"{key_file}.idx")
    return key_file, Path(os.path.expanduser(os.fspath(index)))


def prepare_backend(backend: Store) -> Store:
    """Make a datadir backend that does not exist yet a format 2 one: it will
    name blocks by their tag (`names`).  An existing backend keeps its format."""
    name_with = getattr(backend, "name_blocks_with", None)
    if (
        name_with is not None
        and not getattr(backend, "initialized", True)
        and not is_tag_class(backend.hashclass)
    ):
        name_with(tag_class(backend.hashclass))
    return backend


def open_crypt(
    backend: Store,
    *,
    key_file=None,
    passphrase: bytes | None = None,
    passphrase_file=None,
    index=None,
    readonly: bool = False,
    compress: bool = True,
    owns: bool = True,
    name: str | None = None,
) -> CryptStore:
    """A `CryptStore` over `backend`, unwrapping its key file with `passphrase`
    (else `$VT_PASSPHRASE`, `passphrase_file`, the terminal)."""
    prepare_backend(backend)
    kf, ip = default_paths(backend, key_file, index)
    if passphrase is None:
        passphrase = get_passphrase(passphrase_file, prompt=f"passphrase for {kf}: ")
    key = unwrap(kf, passphrase)
    return CryptStore(
        backend, key, ip, readonly=readonly, compress=compress, owns=owns, key_file=kf, name=name
    )


def _open_crypt(spec: StoreSpec, ctx: OpenContext) -> Store:
    p = spec.params
    backend = open_spec(backend_spec(p["store"]), ctx)
    try:
        return open_crypt(
            backend,
            key_file=p.get("key_file"),
            passphrase_file=p.get("passphrase_file"),
            index=p.get("index"),
            readonly=bool(ctx.readonly or p.get("readonly")),
            compress=p.get("compress", True),
            name=spec.text or None,
        )
    except BaseException:
        backend.close()
        raise


def _spec_text(text) -> str:
    t = _str(text)
    try:
        parse_store_spec(t)
    except ConfigError as e:
        raise ValueError(str(e)) from None
    return t


CRYPT_KEYS = {
    "store": _spec_text,
    "key_file": _str,
    "passphrase_file": _str,
    "index": _str,
    "compress": parse_bool,
}

register_store_type(
    "crypt", _open_crypt, CRYPT_KEYS, "a store encrypted at rest", required=("store",)
)
register_scheme("crypt:", "crypt", lambda rest: {"store": _spec_text(rest)})
