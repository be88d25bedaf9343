"""The generic store suite (tests/stores/test_generic.py) on the object layouts.

Every test of that suite that takes a `store_factory` runs here on SeaweedFS
in both layouts (`s3://`: packs, small ones so that a test spans several;
`s3+blocks://`: one object per block) and on the pack layout over a local
directory backend (packs spooled on disk and in memory), for each hash class
of the suite.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from vtstore.hashes import Hash_BLAKE3, Hash_SHA1

from ..stores.suite import factory_cases, load_suite

SUITE = load_suite("vt_generic_store_suite_s3")
CASES = factory_cases(SUITE)
KINDS = [
    (k, hc)
    for k in ("s3-packs", "s3-blocks", "local-packs", "local-packs-memory")
    for hc in (Hash_BLAKE3, Hash_SHA1)
]


class ObjectStoreFactory:
    """Opens handles on one store in one layout; the suite's `StoreFactory` surface."""

    persistent = True

    def __init__(self, kind, hashclass, tmp: Path, weed, prefix: str):
        self.kind = kind
        self.hashclass = hashclass
        self.tmp = tmp
        self.weed = weed
        self.prefix = prefix

    def open(self, readonly: bool = False):
        from vtstore.stores.backends.base import Retrying
        from vtstore.stores.backends.localdir import LocalDirBackend
        from vtstore.stores.backends.objects import BlockObjectStore
        from vtstore.stores.backends.packs import PackStore

        if self.kind.startswith("local-packs"):
            backend = LocalDirBackend(self.tmp / "objects")
        else:
            backend = Retrying(self.weed.backend(self.prefix), max_time=20)
        if self.kind == "s3-blocks":
            return BlockObjectStore(backend, hashclass=self.hashclass, readonly=readonly)
        return PackStore(
            backend,
            self.tmp / "cache",
            hashclass=self.hashclass,
            readonly=readonly,
            pack_size=256 * 1024,
            uploads=2,
            spool="memory" if self.kind.endswith("memory") else "disk",
        )

    def close_all(self) -> None:
        pass


@pytest.fixture
def object_factory(request, tmp_path, prefix):
    kind, hc = request.param
    weed = request.getfixturevalue("weed") if kind.startswith("s3") else None
    return ObjectStoreFactory(kind, hc, tmp_path, weed, prefix)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    "object_factory", KINDS, ids=[f"{k}-{hc.hashname}" for k, hc in KINDS], indirect=True
)
def test_generic_suite_on_objects(object_factory, case, request):
    fn = getattr(SUITE, case)
    kwargs = {}
    for name in inspect.signature(fn).parameters:
        if name == "store_factory":
            kwargs[name] = object_factory
        else:
            kwargs[name] = request.getfixturevalue(name)
    fn(**kwargs)
