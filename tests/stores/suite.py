"""The generic store suite (tests/stores/test_generic.py) as a module other
test modules run over their own stores: block servers, HTTP, S3, ...

    SUITE = load_suite("vt_generic_store_suite_http")
    CASES = factory_cases(SUITE)   # its tests that take a `store_factory`
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

SUITE_PATH = Path(__file__).resolve().with_name("test_generic.py")


def load_suite(module_name: str):
    """A fresh copy of the suite's module, under `module_name`."""
    spec = importlib.util.spec_from_file_location(module_name, SUITE_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def factory_cases(suite) -> list[str]:
    """The names of the suite's tests that take a `store_factory`."""
    return [
        name
        for name, fn in vars(suite).items()
        if name.startswith("test_")
        and callable(fn)
        and "store_factory" in inspect.signature(fn).parameters
    ]
