"""~/.vtrc: defaults, merging, substitution, and one clear error per bad config."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vtstore.config import DEFAULT_VTRC, load_config
from vtstore.errors import ConfigError
from vtstore.hashes import Hash_BLAKE3, Hash_SHA256


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for v in ("VT_CONFIG", "VT_DIR", "VT_HASHCLASS", "VT_STORE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(v, raising=False)


def write(tmp_path, text):
    p = tmp_path / "vtrc"
    p.write_text(text)
    return p


def test_builtin_defaults(tmp_path):
    c = load_config()
    assert not c.exists
    assert c.basedir == tmp_path / "home" / ".local/share/vt"
    assert c.hashclass is Hash_BLAKE3
    spec = c.clause_spec("default")
    assert spec.type == "datadir" and spec.params["path"] == str(c.basedir)
    assert c.clause_spec("cache").params["max_size"] == 2 << 30
    assert c.clause_names[0] == "default"
    c.validate()


def test_file_over_defaults(tmp_path, monkeypatch):
    p = write(
        tmp_path,
        "[GLOBAL]\nbasedir = /srv/vt\nhashclass = sha256\n"
        "[default]\navg_block = 16KiB\n"
        "[remote]\ntype = proxy\nsave = [default] [other]\nread = [default]\n"
        "[other]\ntype = datadir\npath = other/{clause}\n",
    )
    c = load_config(p)
    assert c.basedir.as_posix() == "/srv/vt"
    assert c.hashclass is Hash_SHA256
    d = c.clause_spec("default")
    assert d.params == {"path": "/srv/vt", "avg_block": 16384}
    assert c.clause_spec("other").params["path"] == "/srv/vt/other/other"
    r = c.clause_spec("remote")
    assert [s.text for s in r.params["save"]] == ["[default]", "[other]"]
    monkeypatch.setenv("VT_CONFIG", str(p))
    assert load_config().path == p
    monkeypatch.setenv("VT_DIR", "/elsewhere")
    assert load_config().basedir.as_posix() == "/elsewhere"
    assert "avg_block = 16KiB" in c.render() and "# built-in" in c.render()


def test_a_new_type_drops_the_builtin_keys(tmp_path):
    c = load_config(write(tmp_path, "[default]\ntype = memory\n"))
    assert c.clause_spec("default").params == {}


def test_the_init_template_is_a_valid_config(tmp_path):
    c = load_config(write(tmp_path, DEFAULT_VTRC))
    c.validate()
    assert c.clause_spec("cache").params["max_size"] == 2 << 30


@pytest.mark.parametrize(
    "text,clause,key,needle",
    [
        ("[default]\ntype = floppy\n", "[default]", "type", "unknown store type 'floppy'"),
        ("[default]\npth = /x\n", "[default]", "pth", "unknown key for type datadir"),
        ("[default]\nmax_size = lots\n", "[default]", "max_size", "not a size"),
        ("[default]\nhashclass = md5\n", "[default]", "hashclass", "unknown hash class"),
        ("[default]\nzstd_level = 99\n", "[default]", "zstd_level", "0..22"),
        ("[default]\npath = {nope}/x\n", "[default]", "path", "unknown substitution"),
        ("[new]\npath = /x\n", "[new]", "type", "missing"),
        ("[f]\ntype = file\n", "[f]", "path", "missing"),
        ("[p]\ntype = proxy\nsave = relative\n", "[p]", "save", "unrecognised store spec"),
        ("[p]\ntype = proxy\ncopy2 = /x\n", "[p]", "save", "needs save"),
        ("[GLOBAL]\nhashclass = nope\n", "[GLOBAL]", "hashclass", "unknown hash class"),
        ("[GLOBAL]\nbasdir = /x\n", "[GLOBAL]", "basdir", "unknown key"),
    ],
)
def test_bad_config_names_file_clause_and_key(tmp_path, text, clause, key, needle):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_config(p).validate()
    msg = str(ei.value)
    assert msg.startswith(str(p)), msg
    assert f"{clause} {key}:" in msg, msg
    assert needle in msg, msg


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[a]\ntype = memory\n[a]\ntype = memory\n", "line 3: [a] appears twice"),
        ("[a]\ntype = memory\ntype = datadir\n", "[a] type: line 3: key appears twice"),
        ("type = memory\n", "line 1: a key before any [clause]"),
        ("[a]\nthis line has no equals sign\n", "line 2: cannot parse"),
    ],
)
def test_unparsable_config(tmp_path, text, needle):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert str(ei.value).startswith(str(p))
    assert needle in str(ei.value)


def test_missing_clause_and_missing_file(tmp_path):
    c = load_config()
    with pytest.raises(ConfigError, match=r"no clause \[nosuch\]"):
        c.clause_spec("nosuch")
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent")


def test_clause_loops_are_refused(tmp_path):
    from vtstore.stores.spec import open_store_spec

    p = write(tmp_path, "[a]\ntype = proxy\nsave = [b]\n[b]\ntype = proxy\nsave = [a]\n")
    with pytest.raises(ConfigError, match="refers to itself"):
        open_store_spec("[a]", config=load_config(p))


def vt(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", *args], env=env, capture_output=True, text=True
    )


def test_cli_bad_config_is_one_line_exit_2(tmp_path, vt_env):
    p = write(tmp_path, "[default]\ntype = datadir\nmax_size = huge\n")
    r = vt(vt_env, "-c", str(p), "info")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(p) in lines[0] and "[default] max_size" in lines[0]
    r = vt(vt_env, "-c", str(p), "config")
    assert r.returncode == 2 and "[default] max_size" in r.stderr


def test_cli_config_init_info(tmp_path, vt_env):
    home = tmp_path / "home"
    r = vt(vt_env, "config")
    assert r.returncode == 0, r.stderr
    assert "[default]" in r.stdout and "# built-in" in r.stdout
    r = vt(vt_env, "init")
    assert r.returncode == 0, r.stderr
    assert (home / ".vtrc").read_text() == DEFAULT_VTRC
    assert (home / ".local/share/vt/datadir.json").exists()
    (home / ".vtrc").write_text(DEFAULT_VTRC + "\n# mine\n")
    r = vt(vt_env, "init")
    assert r.returncode == 0 and "left as it is" in r.stdout
    assert (home / ".vtrc").read_text().endswith("# mine\n")
    r = vt(vt_env, "-H", "sha256", "-S", str(tmp_path / "s256"), "init")
    assert r.returncode == 0, r.stderr
    r = vt(vt_env, "-S", str(tmp_path / "s256"), "info")
    assert r.returncode == 0 and "hashclass: sha256" in r.stdout
    r = vt(vt_env, "-S", str(tmp_path / "s256"), "-H", "blake3", "info")
    assert r.returncode == 1 and "holds sha256 blocks, not blake3" in r.stderr
    r = vt(vt_env, "info", "--json")
    assert r.returncode == 0 and '"type": "datadir"' in r.stdout
    r = vt(vt_env, "config", "default")
    assert r.returncode == 0 and "type = datadir" in r.stdout


# -- clause defaults and required keys, for every type ----------------------------


def test_unix_clause_without_socket_path_is_basedir_clause_sock(tmp_path):
    """`type = unix` alone means the socket `{basedir}/{clause}.sock`; a real
    server listening there is reached through the clause."""
    from vtstore.net.server import BlockServer
    from vtstore.stores.memory import MemoryStore
    from vtstore.stores.spec import open_store_spec

    base = tmp_path / "base"
    base.mkdir()
    c = load_config(write(tmp_path, f"[GLOBAL]\nbasedir = {base}\n[remote]\ntype = unix\n"))
    spec = c.clause_spec("remote")
    assert spec.params["socket_path"] == str(base / "remote.sock")
    c.validate()
    served = MemoryStore()
    server = BlockServer({"": served})
    try:
        server.listen(str(base / "remote.sock"))
        with open_store_spec("[remote]", config=c) as st:
            h = st.add(b"over the default socket")
        assert served[h] == b"over the default socket"
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    "type_, key",
    [
        ("datadir", "path"),
        ("file", "path"),
        ("tcp", "host"),
        ("command", "command"),
        ("http", "url"),
        ("proxy", "save"),
    ],
)
def test_a_clause_missing_a_required_key_names_it(tmp_path, type_, key):
    from vtstore.stores.spec import open_store_spec

    c = load_config(write(tmp_path, f"[x]\ntype = {type_}\n"))
    with pytest.raises(ConfigError, match=rf"\[x\] {key}: "):
        c.clause_spec("x")
    with pytest.raises(ConfigError, match=rf"\[x\] {key}: "):
        open_store_spec("[x]", config=c)


def test_tcp_clause_with_host_but_no_port(tmp_path):
    c = load_config(write(tmp_path, "[x]\ntype = tcp\nhost = localhost\n"))
    with pytest.raises(ConfigError, match=r"\[x\] port: missing"):
        c.validate()


@pytest.mark.parametrize(
    "key, value",
    [
        ("max_size", "9" * 400),
        ("max_size", "1e9"),
        ("data_file_size", "99999999999999999999999999T"),
        ("zstd_level", "9" * 5000),
        ("zstd_level", "-1"),
        ("compress", "maybe"),
        ("hashclass", "md5"),
        ("readonly", ""),
        ("max_block", "{nosuch}"),
        ("min_block", "0x10"),
    ],
)
def test_bad_values_are_config_errors(tmp_path, key, value):
    c = load_config(write(tmp_path, f"[x]\ntype = datadir\npath = /tmp/x\n{key} = {value}\n"))
    with pytest.raises(ConfigError, match=rf"\[x\] {key}: "):
        c.clause_spec("x")


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "soon"])
def test_bad_reconnect_timeout(tmp_path, value):
    c = load_config(write(tmp_path, f"[x]\ntype = unix\nreconnect_timeout = {value}\n"))
    with pytest.raises(ConfigError, match=r"\[x\] reconnect_timeout: "):
        c.clause_spec("x")


_CONFIG_WORDS = [
    "[GLOBAL]\n", "[x]\n", "[y]\n", "[default]\n", "[server]\n", "type = ", "datadir", "file",
    "unix", "tcp", "proxy", "memory", "command", "http", "s3", "clause", "path = ",
    "socket_path = ", "host = ", "port = ", "save = ", "read = ", "copy2 = ", "hashclass = ",
    "basedir = ", "max_size = ", "zstd_level = ", "readonly = ", "reconnect_timeout = ",
    "store = ", "exports = ", "{basedir}", "{clause}", "{", "}", "[x]", "[y]", "(", ")", "=",
    ",", "/tmp/a", "9" * 30, "1.5G", "nan", "-", "\n", " ", "#", ";", "\t", "é", "\x00",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_CONFIG_WORDS), max_size=40))
def test_any_config_text_is_a_config_error_or_valid(tmp_path_factory, words):
    """Whatever the file says, reading and checking it raises ConfigError or works."""
    tmp = tmp_path_factory.mktemp("cfg", numbered=True)
    p = tmp / "vtrc"
    p.write_text("".join(words))
    try:
        c = load_config(p)
        c.render()
        for name in c.clause_names:
            c.clause_spec(name)
    except ConfigError:
        pass


def test_vt_config_shows_the_default_socket_path(tmp_path, vt_env):
    p = write(tmp_path, "[remote]\ntype = unix\n")
    r = vt(dict(vt_env, VT_DIR=str(tmp_path / "b")), "-c", str(p), "config")
    assert r.returncode == 0, r.stderr
    assert f"socket_path = {tmp_path / 'b' / 'remote.sock'}  # default of type unix" in r.stdout


def test_file_keys_resolve_against_the_basedir(tmp_path):
    """Keys naming files (a crypt clause's key and index, a server's TLS and
    key files, a client's key file) are relative to basedir, like `path`."""
    p = write(
        tmp_path,
        "[GLOBAL]\nbasedir = /srv/vt\n"
        "[enc]\ntype = crypt\nstore = [default]\nkey_file = keys/enc.key\n"
        "passphrase_file = ~/pw\nindex = enc.idx\n"
        "[remote]\ntype = tcp\nhost = example.org\nport = 1\nkey_file = my.key\n"
        "tls_ca = ca.pem\n",
    )
    c = load_config(p)
    enc = c.clause_spec("enc").params
    assert enc["key_file"] == "/srv/vt/keys/enc.key" and enc["index"] == "/srv/vt/enc.idx"
    assert enc["passphrase_file"] == os.path.expanduser("~/pw")
    remote = c.clause_spec("remote").params
    assert remote["key_file"] == "/srv/vt/my.key" and remote["tls_ca"] == "/srv/vt/ca.pem"
