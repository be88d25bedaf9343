"""The generic store suite (tests/stores/test_generic.py) over HTTP: every test
of it that takes a `store_factory` runs against an `HTTPStore` client of a child
`vt httpd` serving a datadir, with signed writes, for each hash class."""

from __future__ import annotations

import inspect

import pytest

from vtstore.hashes import Hash_BLAKE3, Hash_SHA1

from ..stores.suite import factory_cases, load_suite

SUITE = load_suite("vt_generic_store_suite_http")
CASES = factory_cases(SUITE)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    "http_factory", [Hash_BLAKE3, Hash_SHA1], ids=["blake3", "sha1"], indirect=True
)
def test_generic_suite_over_http(http_factory, case, request):
    fn = getattr(SUITE, case)
    kwargs = {}
    for name in inspect.signature(fn).parameters:
        kwargs[name] = http_factory if name == "store_factory" else request.getfixturevalue(name)
    fn(**kwargs)
