"""The committed format vectors match the code, and docs/FORMATS.md shows them."""

import importlib.util
import json
from pathlib import Path

from vtstore.blocks import decode_blockref
from vtstore.codec import decode_varint
from vtstore.hashes import decode_hashcode, parse_hashcode
from vtstore.transcribe import parse_block

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "docs" / "format-vectors.json").read_text())


def _tool():
    spec = importlib.util.spec_from_file_location(
        "format_vectors", ROOT / "tools" / "format_vectors.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_code_produces_the_committed_vectors():
    assert _tool().compute() == VECTORS


def test_doc_shows_the_committed_vectors():
    tool = _tool()
    assert (ROOT / "docs" / "FORMATS.md").read_text() == tool.doc_with(VECTORS)


def test_vectors_decode():
    for v in VECTORS["varint"]:
        assert decode_varint(bytes.fromhex(v["hex"]))[0] == v["value"]
    for v in VECTORS["hashcode"]:
        h = parse_hashcode(v["text"])
        assert decode_hashcode(bytes.fromhex(v["binary_hex"]))[0] == h
        assert h.check(bytes.fromhex(v["data_hex"]))
    for v in VECTORS["blockref"]:
        b = decode_blockref(bytes.fromhex(v["binary_hex"]))
        assert parse_block(v["text"]) == b
        assert b.encode().hex() == v["binary_hex"]


def test_tree_vectors_decode():
    from vtstore.archive import parse_line
    from vtstore.tree import decode_dirent, parse_dirent
    from vtstore.tree.dir import decode_dir_data

    for v in VECTORS["dirent"]:
        e = decode_dirent(bytes.fromhex(v["binary_hex"]))
        assert parse_dirent(v["text"]) == e
        assert e.encode().hex() == v["binary_hex"]
    d = VECTORS["directory"]
    entries, salt = decode_dir_data(bytes.fromhex(d["data_hex"]))
    assert salt is None
    assert sorted(str(e) for e in entries) == sorted(d["entries"])
    assert [e.name for e in entries] == sorted(e.name for e in entries)
    entry = parse_line(VECTORS["archive_line"])
    assert entry.when == 1764581400.25 and entry.comment == "first"
