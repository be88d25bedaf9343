"""The generic store suite (tests/stores/test_generic.py) over HTTP: every test
of it that takes a `store_factory` runs against an `HTTPStore` client of a child
`vt httpd` serving a datadir, with signed writes, for each hash class."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest

from vtstore.hashes import Hash_BLAKE3, Hash_SHA1

SUITE_PATH = Path(__file__).resolve().parents[1] / "stores" / "test_generic.py"


def _load_suite():
    spec = importlib.util.spec_from_file_location("vt_generic_store_suite_http", SUITE_PATH)
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
