"""Fuzz the reader of a `.vtd` bundle's top (`tree.vtdview.top_of`): every
mutated bundle is a `FormatError` or a dirent, never another exception."""

from __future__ import annotations

from vtstore.errors import FormatError
from vtstore.stores.memory import MemoryStore
from vtstore.tree.dir import make_dir
from vtstore.tree.dirent import T_FILE, T_SYMLINK, Dirent
from vtstore.tree.vtdview import VtdView, top_of


def _bundles() -> list[bytes]:
    S = MemoryStore()
    from vtstore.blocks import block_for

    f = Dirent(T_FILE, name="f", block=block_for(b"x" * 5000, S))
    sub = make_dir([Dirent(T_SYMLINK, name="l", target="t")], S, name="d")
    top = make_dir([f, sub], S, name="top")
    out = []
    for root in (top, sub, make_dir([], S)):
        v = VtdView(root, S)
        out.append(v.read(S, 0, min(v.span, 2000)))
    return out


def test_fuzz_vtd_bundle_top(fuzz):
    seeds = _bundles()
    for s in seeds:
        assert isinstance(top_of(s), Dirent)
    res = fuzz(top_of, seeds, expected=(FormatError,))
    assert res.failures == [], res.summary()
