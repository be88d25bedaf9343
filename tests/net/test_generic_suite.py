"""The generic store suite (tests/stores/test_generic.py) over the network.

Every test of that suite that takes a `store_factory` runs here over a TCP, a
UNIX-socket and a stdio (`|vt serve -`) client, each served from a datadir by a
child `vt serve`, for each hash class of the suite.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest

from vtstore.hashes import Hash_BLAKE3, Hash_SHA1

SUITE_PATH = Path(__file__).resolve().parents[1] / "stores" / "test_generic.py"


def _load_suite():
    spec = importlib.util.spec_from_file_location("vt_generic_store_suite", SUITE_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SUITE = _load_suite()
CASES = [
    name
    for name, fn in vars(SUITE).items()
    if name.startswith("test_")
    and callable(fn)
    and "store_factory" in inspect.signature(fn).parameters
]
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
