"""What both object layouts share: the `config` object and the archives.

A store on a backend begins with the object `config`, JSON
`{"layout": "packs"|"blocks", "version": 1, "hashclass": NAME, "uuid": HEX}`,
created by the first write with a conditional create (of two writers racing to
create a store, one config wins and both use it).  Its `uuid` is the store's
identity in archive lines (`vtstore.archive.store_identity` reads `meta`).
"""

from __future__ import annotations

import json
import uuid as uuidmod
from collections.abc import Sequence

from vtstore.errors import FormatError, HashClassMismatchError, StoreError
from vtstore.hashes import HashCode, hashclass_by_name
from vtstore.stores.backends.archives import ObjectArchive, archive_names, check_archive_name
from vtstore.stores.backends.base import Backend
from vtstore.stores.base import Store


def read_config(backend: Backend) -> dict | None:
    """The store's config object, or None if there is none yet."""
    body = backend.get("config")
    if body is None:
        return None
    try:
        cfg = json.loads(body)
        if not isinstance(cfg, dict) or not isinstance(cfg.get("uuid"), str):
            raise ValueError("not a config object")
        hashclass_by_name(cfg["hashclass"])
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(f"{backend.url}/config: {e}") from None
    return cfg


class LayoutStore(Store):
    """Base of the stores kept as objects on a backend: the config object, its
    hash class check, and archives kept as objects."""

    #: the `layout` value of the config object
    layout = "?"

    def __init__(
        self,
        backend: Backend,
        *,
        hashclass: type[HashCode] | None = None,
        default_hashclass: type[HashCode] | None = None,
        readonly: bool = False,
        name: str | None = None,
        config: dict | None = None,
    ):
        self.backend = backend
        if config is None:
            config = read_config(backend)
        if config is not None and config.get("layout") != self.layout:
            raise StoreError(
                f"{backend.url} holds a {config.get('layout')!r} store, not {self.layout}"
            )
        stored = hashclass_by_name(config["hashclass"]) if config else None
        if stored is not None and hashclass is not None and stored is not hashclass:
            raise HashClassMismatchError(
                f"store {backend.url} holds {stored.hashname} blocks, not {hashclass.hashname}"
            )
        super().__init__(name or backend.url, stored or hashclass or default_hashclass, readonly)
        self.config = config

    @property
    def meta(self) -> dict:
        """The store's config object (`uuid` is its identity for archives)."""
        return dict(self.config or {})

    def _check_failed(self) -> None:
        """Refuse new work once a background upload has failed (`self._failed`)."""
        failed = getattr(self, "_failed", None)
        if failed is not None:
            raise StoreError(f"{self.name}: an upload failed earlier: {failed}")

    def _start_add(self, datas: Sequence) -> tuple[list, list[HashCode]]:
        """The checks and hashing every add starts with: `(datas as a list,
        their hashcodes)`; the store's config object is written first if new."""
        self._check_writable()
        self._check_failed()
        datas = datas if isinstance(datas, (list, tuple)) else list(datas)
        hs = self.hashclass.from_data_many(datas)
        if datas:
            self._ensure_config()
        return datas, hs

    def _ensure_config(self) -> None:
        """Create the config object on the first write (a racing writer's wins)."""
        if self.config is not None:
            return
        cfg = {
            "layout": self.layout,
            "version": 1,
            "hashclass": self.hashclass.hashname,
            "uuid": uuidmod.uuid4().hex,
        }
        self.backend.put_if_absent("config", json.dumps(cfg, sort_keys=True).encode())
        got = read_config(self.backend)
        if got is None or got.get("layout") != self.layout or got["hashclass"] != cfg["hashclass"]:
            raise StoreError(
                f"{self.backend.url}: another kind of store was created here meanwhile"
            )
        self.config = got
        self._config_created()

    def _config_created(self) -> None:
        """Called once the config object exists (the pack layout checks its cache)."""

    def archive_names(self) -> list[str]:
        """The archives kept in the store (`archives/NAME/...`)."""
        return archive_names(self.backend)

    def named_archive(self, name: str, create: bool = False, codec=None) -> ObjectArchive:
        """Archive `name`, one object per state (`vtstore.stores.backends.archives`);
        `codec` encodes its lines (an encrypting store over this one gives its own)."""
        self._check_open()
        if codec is None:
            codec_of = getattr(self, "archive_codec", None)
            codec = codec_of() if codec_of else None
        # opened to read, the archive can still be named (`create`: it need not
        # exist yet); appending to it is refused
        return ObjectArchive(self.backend, check_archive_name(name), codec, self.readonly)
