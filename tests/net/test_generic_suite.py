"""The generic store suite (tests/stores/test_generic.py) over the network.

Every test of that suite that takes a `store_factory` runs here over a TCP, a
UNIX-socket and a stdio (`|vt serve -`) client, each served from a datadir by a
child `vt serve`, for each hash class of the suite.
"""

from __future__ import annotations

import inspect

import pytest

from vtstore.hashes import Hash_BLAKE3, Hash_SHA1

from ..stores.suite import factory_cases, load_suite

SUITE = load_suite("vt_generic_store_suite")
CASES = factory_cases(SUITE)
KINDS = [(k, hc) for k in ("tcp", "unix", "stdio") for hc in (Hash_BLAKE3, Hash_SHA1)]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    "net_factory", KINDS, ids=[f"{k}-{hc.hashname}" for k, hc in KINDS], indirect=True
)
def test_generic_suite_over_net(net_factory, case, request):
    fn = getattr(SUITE, case)
    kwargs = {}
    for name in inspect.signature(fn).parameters:
        if name == "store_factory":
            kwargs[name] = net_factory
        else:
            kwargs[name] = request.getfixturevalue(name)
    fn(**kwargs)
