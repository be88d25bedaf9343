"""Store specs: parsing, the registry, and opening from a command line."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtstore.errors import ConfigError, HashClassMismatchError, NotAvailableError
from vtstore.hashes import Hash_SHA1
from vtstore.stores.cache import CacheStore
from vtstore.stores.datadir import DataDir
from vtstore.stores.filestore import FileStore
from vtstore.stores.memory import MemoryStore
from vtstore.stores.proxy import ProxyStore
from vtstore.stores.spec import (
    open_store_from_args,
    open_store_spec,
    parse_spec_list,
    parse_store_spec,
    register_scheme,
    register_store_type,
)


@pytest.mark.parametrize(
    "text,type_,params",
    [
        ("/a/b", "datadir", {"path": "/a/b"}),
        ("./rel", "datadir", {"path": "./rel"}),
        ("~/vt", "datadir", {"path": "~/vt"}),
        ("datadir:x", "datadir", {"path": "x"}),
        ("file:x.vtd", "file", {"path": "x.vtd"}),
        ("memory:", "memory", {}),
        ("memory:scratch", "memory", {"name": "scratch"}),
        ("[default]", "clause", {"clause": "default"}),
        ("http://h:80/", "http", {"url": "http://h:80/"}),
        ("s3://bucket/pre", "s3", {"url": "s3://bucket/pre"}),
    ],
)
def test_parse_forms(text, type_, params):
    spec = parse_store_spec(text)
    assert (spec.type, spec.params, spec.text) == (type_, params, text)


def test_parse_proxy():
    spec = parse_store_spec("proxy(save=[a] /b,save=memory:,read=[a],read2=|ssh h vt serve -)")
    assert spec.type == "proxy"
    assert [s.text for s in spec.params["save"]] == ["[a]", "/b", "memory:"]
    assert [s.text for s in spec.params["read2"]] == ["|ssh h vt serve -"]
    nested = parse_store_spec("proxy(save=proxy(save=/x,read=/y),read=/y)")
    assert nested.params["save"][0].params["read"][0].text == "/y"
    assert [s.text for s in parse_spec_list("[a]  /b\tmemory:")] == ["[a]", "/b", "memory:"]


@pytest.mark.parametrize(
    "text,needle",
    [
        ("", "empty"),
        ("relative", "begins with / or ./"),
        ("[]", "bad clause"),
        ("[a]name", "unexpected"),
        ("proxy(save=/a", "missing"),
        ("proxy(bogus=/a)", "bad proxy argument"),
        ("proxy(copy2=/a)", "needs save, read or read2"),
        ("frob(x=1)", "unknown store form"),
        ("proxy(save=(/a)", "unbalanced"),
        ("file:", "empty value"),
    ],
)
def test_parse_errors(text, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        parse_store_spec(text)


def test_reserved_forms_say_not_available():
    """A type reserved for a layer that is not installed says so in one error."""
    from vtstore.stores import spec as S

    register_store_type("later", S._not_yet, {"x": str}, "a store of a later layer")
    register_scheme("later:", "later", lambda rest: {"x": rest})
    S.PROVIDERS["later"] = "vtstore.no_such_layer"
    try:
        with pytest.raises(NotAvailableError, match="not available yet"):
            open_store_spec("later:x")
    finally:
        del S.PROVIDERS["later"]


def test_s3_forms_parse_before_their_layer_is_loaded():
    """s3:// and s3+blocks:// are known to the spec parser itself."""
    assert parse_store_spec("s3+blocks://b/p").params == {"url": "s3://b/p", "layout": "blocks"}
    assert parse_store_spec("s3://b/p").type == "s3"


def test_registry_is_extensible(tmp_path):
    opened = []

    def opener(spec, ctx):
        opened.append(spec.params)
        return MemoryStore(name=f"toy:{spec.params['x']}")

    register_store_type("toy", opener, {"x": str})
    register_scheme("toy:", "toy", lambda rest: {"x": rest})
    with open_store_spec("toy:42") as s:
        assert s.name == "toy:42"
    assert opened == [{"x": "42"}]


def test_open_each_kind(tmp_path):
    with open_store_spec(str(tmp_path / "d")) as s:
        assert isinstance(s, DataDir)
    with open_store_spec(f"file:{tmp_path / 'f.vtd'}") as s:
        assert isinstance(s, FileStore)
    with open_store_spec("memory:", hashclass=Hash_SHA1) as s:
        assert isinstance(s, MemoryStore) and s.hashclass is Hash_SHA1
    with open_store_spec(f"proxy(save={tmp_path / 'd'})") as s:
        assert isinstance(s, ProxyStore)


def _args(**kw):
    d = dict(store_spec=None, cache_spec=None, config_path=None, hashclass=None)
    d.update(kw)
    return argparse.Namespace(**d)


def test_open_from_args_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VT_CONFIG", raising=False)
    monkeypatch.delenv("VT_STORE", raising=False)
    monkeypatch.delenv("VT_HASHCLASS", raising=False)
    monkeypatch.setenv("VT_DIR", str(tmp_path / "vtdir"))
    with open_store_from_args(_args()) as s:  # no config at all: a datadir at $VT_DIR
        assert isinstance(s, DataDir) and s.path == tmp_path / "vtdir"
        s.add(b"x")
    monkeypatch.setenv("VT_STORE", str(tmp_path / "from-env"))
    with open_store_from_args(_args()) as s:
        assert s.path == tmp_path / "from-env"
    with open_store_from_args(_args(store_spec=str(tmp_path / "from-S"))) as s:
        assert s.path == tmp_path / "from-S"
    with open_store_from_args(_args(store_spec="memory:", cache_spec="memory:")) as s:
        assert isinstance(s, CacheStore)
    with pytest.raises(HashClassMismatchError):
        open_store_from_args(_args(store_spec=str(tmp_path / "vtdir"), hashclass="sha1"))
    rc = tmp_path / "rc"
    rc.write_text(f"[default]\ntype = file\npath = {tmp_path}/default.vtd\n")
    monkeypatch.delenv("VT_STORE")
    with open_store_from_args(_args(config_path=str(rc))) as s:
        assert isinstance(s, FileStore)


# -- odd spec strings: nothing but a VTError escapes -------------------------------

_SPEC_WORDS = [
    "proxy(", ")", "(", "[", "]", "[default]", "[x", "save=", "read=", "read2=", "copy2=",
    "save2=", "bogus=", ",", " ", "=", "memory:", "memory:a", "file:", "datadir:", "./d",
    "/", "~", "..", "tcp:", "unix:", "|", "#", "http://", "s3://", "host", ":", "99999",
    "0", "9" * 40, "x.vtd", "\x00", "é", "\n", "proxy", "foo(",
]  # fmt: skip


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_SPEC_WORDS), max_size=24))
def test_odd_spec_strings_parse_or_raise_config_error(words):
    from vtstore.errors import VTError

    text = "".join(words)
    try:
        parse_store_spec(text)
        parse_spec_list(text)
    except VTError:
        pass


def _safe(spec) -> bool:
    """Specs whose opening touches nothing outside the test: memory stores, clauses
    and proxies of them (no commands run, no hosts looked up, no paths created)."""
    if spec.type == "proxy":
        return all(_safe(s) for subs in spec.params.values() for s in subs)
    return spec.type == "memory" or spec.params.get("clause") in ("x", "y")


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(_SPEC_WORDS), max_size=16))
def test_odd_spec_strings_open_or_raise_vterror(tmp_path_factory, words):
    from vtstore.config import load_config
    from vtstore.errors import VTError

    tmp = tmp_path_factory.mktemp("spec")
    cfg = tmp / "vtrc"
    cfg.write_text("[x]\ntype = memory\n[y]\ntype = proxy\nread = [x] memory:\n")
    config = load_config(cfg)
    try:
        spec = parse_store_spec("".join(words))
    except VTError:
        return
    if not _safe(spec):
        return
    try:
        store = open_store_spec(spec, config=config, readonly=True)
    except VTError:
        return
    store.close()


def test_nesting_is_bounded(tmp_path):
    """Proxies nested thousands deep, or clauses referring 2,000 deep: a
    ConfigError, not a RecursionError."""
    from vtstore.config import load_config

    with pytest.raises(ConfigError, match="nested"):
        parse_store_spec("proxy(read=" * 2000 + "memory:" + ")" * 2000)
    assert parse_store_spec("proxy(read=" * 8 + "memory:" + ")" * 8).type == "proxy"
    cfg = tmp_path / "vtrc"
    cfg.write_text(
        "".join(f"[c{i}]\ntype = proxy\nread = [c{i + 1}]\n" for i in range(2000))
        + "[c2000]\ntype = memory\n"
    )
    config = load_config(cfg)
    with pytest.raises(ConfigError, match="deep"):
        open_store_spec("[c0]", config=config)
    with open_store_spec("[c1990]", config=config) as st:
        assert len(st) == 0
