"""Hash migration (issue 14, item 6): `vt migrate` and `vtstore.sync.migrate`.

Real datadirs and real `vt` processes: a tree with every kind of entry is packed
into a blake3 store, migrated to sha3_256 and sha1, unpacked from the new store
and compared with `rsync -naHAXc`; an archive of three states keeps its times and
order; a migration killed with SIGKILL resumes from its map file; a missing
source block is one clear error naming it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vtstore.archive import Archive
from vtstore.blocks import HashCodeBlock, IndirectBlock, SubBlock, block_for, decode_blockrefs
from vtstore.errors import CorruptBlockError, MissingBlockError
from vtstore.hashes import Hash_BLAKE3, Hash_SHA1, Hash_SHA3_256
from vtstore.stores.datadir import DataDir
from vtstore.stores.memory import MemoryStore
from vtstore.sync.migrate import MigrateError, Migrator, verify_trees
from vtstore.tree.dir import dir_entries, make_dir, walk
from vtstore.tree.dirent import T_DIR, Dirent, FileDirent, decode_dirent
from vtstore.tree.links import decode_ext, encode_ext

from ..tree.conftest import make_rich_tree, rsync_diff


def vt(*args, check=True, store="memory:"):
    r = subprocess.run(
        [sys.executable, "-m", "vtstore.cli.main", "-S", str(store), *args],
        capture_output=True,
    )
    if check and r.returncode != 0:
        raise AssertionError(f"vt {' '.join(args)} failed ({r.returncode}): {r.stderr.decode()}")
    assert b"Traceback" not in r.stderr, r.stderr.decode()
    return r


def reachable_hashcodes(top: Dirent, store) -> list:
    """Every hashcode the tree under `top` reaches: directory blocks, file
    leaves and indirect blocks, previous versions and link tables."""
    out = []
    todo_blocks = []
    todo_dirents = [top]
    while todo_dirents:
        d = todo_dirents.pop()
        for _, e in walk(d, store):
            if e.block is not None:
                todo_blocks.append(e.block)
            if e.prev is not None:
                todo_blocks.append(e.prev)
                todo_dirents.append(decode_dirent(e.prev.data(store)))
            if e.type == T_DIR and e.ext:
                t = decode_ext(e.ext)
                if t is not None:
                    todo_dirents.append(Dirent(T_DIR, block=t[0]))
    while todo_blocks:
        b = todo_blocks.pop()
        while type(b) is SubBlock:
            b = b.superblock
        if isinstance(b, HashCodeBlock | IndirectBlock):
            out.append(b.hashcode)
            if isinstance(b, IndirectBlock):
                todo_blocks.extend(decode_blockrefs(store[b.hashcode]))
    return out


@pytest.mark.parametrize("newclass", ["sha3_256", "sha1"])
def test_rich_tree_migrates_byte_identical(tmp_path, newclass):
    src = str(tmp_path / "src")
    info = make_rich_tree(src)
    old, new = tmp_path / "old", tmp_path / "new"
    vt("-q", "pack", src, store=old)
    archive = src + ".vt"
    r = vt("migrate", "--hash", newclass, "--verify", str(old), str(new), archive)
    assert b"verified" in r.stderr
    out_archive = f"{src}.{newclass}.vt"
    assert os.path.exists(out_archive) and os.path.exists(out_archive + ".map")
    restored = str(tmp_path / "restored")
    vt("-q", "unpack", out_archive, restored, store=new)
    assert rsync_diff(src, restored) == []
    # and the new tree names only new-class hashes, every one of them in the new store
    (state,) = Archive(out_archive).entries()
    with DataDir(str(new), readonly=True) as dst:
        assert dst.hashclass.hashname == newclass
        hcs = reachable_hashcodes(state.dirent, dst)
        assert len(hcs) > 300
        assert {type(h).hashname for h in hcs} == {newclass}
        assert all(dst.contains_many(hcs))
    assert info["device"] or os.geteuid() != 0


def _pack_states(tmp_path, store, n=3):
    src = str(tmp_path / "tree")
    os.makedirs(src)
    for i in range(n):
        with open(f"{src}/f{i}", "wb") as f:
            f.write(os.urandom(100_000 + i))
        with open(f"{src}/common", "w") as f:
            f.write(f"state {i}\n" * 1000)
        vt("-q", "pack", src, store=store)
        time.sleep(0.01)
    return src


def test_archive_states_keep_times_and_order(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    src = _pack_states(tmp_path, old)
    archive = src + ".vt"
    out = str(tmp_path / "migrated.vt")
    vt("-q", "migrate", "--hash", "sha1", "-o", out, str(old), str(new), archive)
    before = list(Archive(archive).entries())
    after = list(Archive(out).entries())
    assert len(before) == len(after) == 3
    assert [e.when for e in after] == [e.when for e in before]
    assert sorted(e.when for e in after) == [e.when for e in after]
    for a, b in zip(before, after, strict=True):
        assert (a.uuid, a.name, a.comment) == (b.uuid, b.name, b.comment)
        assert a.dirent.block.hashcode != b.dirent.block.hashcode
        assert type(b.dirent.block.hashcode) is Hash_SHA1
    assert after[-1].store_id is not None and after[-1].store_id != before[-1].store_id
    # the record of old top -> new top, one line per state
    import json

    recs = [json.loads(line) for line in open(out + ".map")]
    assert [r["old"] for r in recs] == [str(e.dirent) for e in before]
    assert [r["new"] for r in recs] == [str(e.dirent) for e in after]
    # every state, not just the last, is the same tree
    with DataDir(str(old), readonly=True) as s, DataDir(str(new), readonly=True) as d:
        for a, b in zip(before, after, strict=True):
            assert verify_trees(a.dirent, s, b.dirent, d) >= 3
    restored = str(tmp_path / "restored")
    vt("-q", "unpack", out, restored, store=new)
    assert rsync_diff(src, restored) == []
    # a second run (a resume of a finished migration) adds no state
    vt("-q", "migrate", "-o", out, str(old), str(new), archive)
    assert len(list(Archive(out).entries())) == 3


@pytest.mark.slow
def test_resume_after_kill_9(tmp_path):
    src = str(tmp_path / "big")
    os.makedirs(src)
    for d in range(12):
        os.makedirs(f"{src}/d{d}")
        for i in range(50):
            with open(f"{src}/d{d}/f{i}", "wb") as f:
                f.write(os.urandom(60_000))  # 36 MB in all
    old, new = tmp_path / "old", tmp_path / "new"
    vt("-q", "pack", src, store=old)
    archive = src + ".vt"
    mapfile = str(tmp_path / "m.map")
    cmd = [sys.executable, "-m", "vtstore.cli.main", "-S", "memory:", "migrate"]
    cmd += ["--hash", "sha3_256", "--map", mapfile, "--commit-every", "0.05", str(old), str(new)]
    p = subprocess.Popen(cmd + [archive], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and p.poll() is None:
        if os.path.exists(mapfile) and os.path.getsize(mapfile) > 40_000:
            break
        time.sleep(0.01)
    assert p.poll() is None, "the migration finished before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert not Archive(src + ".sha3_256.vt").exists() or not list(
        Archive(src + ".sha3_256.vt").entries()
    )
    t0 = time.monotonic()
    r = vt("migrate", "--hash", "sha3_256", "--map", mapfile, str(old), str(new), archive)
    second = time.monotonic() - t0
    err = r.stderr.decode()
    assert "resuming with" in err, err
    resumed = int(err.split("resuming with ")[1].split()[0])
    hashed = int(err.split("migrate: ")[-1].split()[0])
    (state,) = Archive(archive).entries()
    with DataDir(str(old), readonly=True) as s:
        total = len(set(reachable_hashcodes(state.dirent, s)))  # leaves, indirect, dirs
    # the blocks mapped before the kill are not hashed again
    assert resumed > 300 and hashed <= total - 300, (total, err)
    restored = str(tmp_path / "restored")
    vt("-q", "unpack", src + ".sha3_256.vt", restored, store=new)
    assert rsync_diff(src, restored) == []
    print(f"resumed {resumed} mapped blocks, re-hashed {hashed}, second run {second:.2f}s")


def test_missing_source_block_is_one_clear_error(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    f = tmp_path / "x"
    f.write_bytes(os.urandom(5000))
    vt("-q", "save", str(f), store=old)  # makes the datadir
    missing = "blake3:" + "ab" * 32
    ref = 'D{block:LB{data:"\\x01\\x00"}}'  # an empty directory: fine
    r = vt("migrate", "--hash", "sha1", str(old), str(new), ref)
    assert r.stdout.decode().startswith("D{")
    for ref in (
        f'F{{name:"x",block:B{{hash:{missing},span:5000}}}}',
        f"I{{hash:{missing},span:9}}",
    ):
        r = vt("migrate", "--hash", "sha1", str(old), str(new), ref, check=False)
        err = r.stderr.decode().strip()
        assert r.returncode != 0 and len(err.splitlines()) == 1, err
        assert "ab" * 32 in err, err


def test_same_class_and_foreign_map_are_refused(tmp_path):
    a = MemoryStore(hashclass=Hash_BLAKE3)
    with pytest.raises(MigrateError, match="both hold blake3"):
        Migrator(a, MemoryStore(hashclass=Hash_BLAKE3))
    m = tmp_path / "m.map"
    m.write_bytes(b"VTMIGRATE 1 blake3 sha1\n")
    with pytest.raises(MigrateError, match="not a map of this migration"):
        Migrator(a, MemoryStore(hashclass=Hash_SHA3_256), mapfile=str(m))


def test_prev_link_table_subblock_and_corrupt_block():
    src = MemoryStore(hashclass=Hash_BLAKE3)
    dst = MemoryStore(hashclass=Hash_SHA1)
    data = os.urandom(300_000)
    leaf = HashCodeBlock(src.add(data[:40_000]), 40_000)
    f1 = FileDirent("a", block=block_for(data, src, 4096))  # a 3-level indirect tree
    f2 = FileDirent("b", block=SubBlock(leaf, 100, 5000))
    older = make_dir([FileDirent("old", block=leaf)], src)
    bucket = make_dir([FileDirent("1", block=leaf, ext=b"\x01a")], src, name="0")
    table = make_dir([bucket], src)
    top = make_dir(
        [f1, f2],
        src,
        salt=b"s" * 16,
        prev=block_for(older.encode(), src),
        ext=encode_ext(table.block, 2, 1),
    )
    m = Migrator(src, dst)
    new = m.dirent(top)
    hcs = reachable_hashcodes(new, dst)
    assert hcs and {type(h) for h in hcs} == {Hash_SHA1}
    assert verify_trees(top, src, new, dst) == 3
    assert decode_dirent(new.prev.data(dst)).name == ""
    assert [e.name for e in dir_entries(decode_dirent(new.prev.data(dst)), dst)] == ["old"]
    (b,) = dir_entries(Dirent(T_DIR, block=decode_ext(new.ext)[0]), dst)
    assert [e.ext for e in dir_entries(b, dst)] == [b"\x01a"]
    # a block whose data does not match its hash is reported, not copied
    bad = MemoryStore(hashclass=Hash_BLAKE3)
    h = bad.add(b"x" * 1000)
    bad._blocks[h] = b"y" * 1000
    with pytest.raises(CorruptBlockError):
        Migrator(bad, MemoryStore(hashclass=Hash_SHA1)).block(HashCodeBlock(h, 1000))
    with pytest.raises(MissingBlockError):
        Migrator(MemoryStore(hashclass=Hash_BLAKE3), dst).block(leaf)


def test_deep_tree_1000_levels():
    src = MemoryStore(hashclass=Hash_BLAKE3)
    dst = MemoryStore(hashclass=Hash_SHA3_256)
    d = make_dir([FileDirent("f", block=block_for(os.urandom(100), src))], src, name="d")
    for _ in range(999):
        d = make_dir([d], src, name="d")
    new = Migrator(src, dst).dirent(d)
    assert verify_trees(d, src, new, dst) == 1001


def test_longer_digests_split_a_full_indirect_block():
    """sha1 -> blake3: the refs of a full indirect block no longer fit one block."""
    from vtstore.blocks import DEFAULT_MAX_BLOCK_SIZE, leaf_blocks, top_block_of

    src = MemoryStore(hashclass=Hash_SHA1)
    dst = MemoryStore(hashclass=Hash_BLAKE3)
    datas = [os.urandom(100) for _ in range(3000)]
    top = top_block_of(leaf_blocks(datas, src), src)
    assert type(top) is IndirectBlock
    new = Migrator(src, dst).block(top)
    assert new.data(dst) == b"".join(datas)
    todo = [new]
    while todo:
        b = todo.pop()
        if type(b) is IndirectBlock:
            raw = dst[b.hashcode]
            assert len(raw) <= DEFAULT_MAX_BLOCK_SIZE
            todo.extend(decode_blockrefs(raw))
        else:
            assert type(b.hashcode) is Hash_BLAKE3


def test_verify_finds_a_difference():
    src = MemoryStore(hashclass=Hash_BLAKE3)
    dst = MemoryStore(hashclass=Hash_SHA1)
    top = make_dir(
        [FileDirent("a", block=block_for(os.urandom(50_000), src)), FileDirent("b")], src
    )
    new = Migrator(src, dst).dirent(top)
    assert verify_trees(top, src, new, dst) == 3
    other = make_dir(
        [FileDirent("a", block=block_for(os.urandom(50_000), dst)), FileDirent("b")], dst
    )
    with pytest.raises(MigrateError, match="a: content differs"):
        verify_trees(top, src, other, dst)
    fewer = make_dir([FileDirent("a", block=block_for(os.urandom(5), dst))], dst)
    with pytest.raises(MigrateError, match="differ"):
        verify_trees(top, src, fewer, dst)


def test_map_file_torn_tail_and_lost_blocks(tmp_path):
    src = MemoryStore(hashclass=Hash_BLAKE3)
    top = make_dir(
        [FileDirent(f"f{i}", block=block_for(os.urandom(9000), src)) for i in range(20)], src
    )
    mapfile = str(tmp_path / "m.map")
    with DataDir(str(tmp_path / "dst"), hashclass=Hash_SHA1) as dst:
        m = Migrator(src, dst, mapfile=mapfile)
        first = m.dirent(top)
        m.commit()
    size = os.path.getsize(mapfile)
    with open(mapfile, "r+b") as f:
        f.truncate(size - 7)  # a record cut by a kill
    with DataDir(str(tmp_path / "dst"), hashclass=Hash_SHA1) as dst:
        m = Migrator(src, dst, mapfile=mapfile)
        assert m.map.loaded == 20  # 21 records, the torn last one (the directory) dropped
        again = m.dirent(top)
        assert again == first and m.stats.leaves_hashed == 0 and m.stats.reused == 20
        m.commit()
    # a destination that lost the blocks: the records are not trusted
    with DataDir(str(tmp_path / "other"), hashclass=Hash_SHA1) as dst:
        m = Migrator(src, dst, mapfile=mapfile)
        assert m.map.loaded == 0 and m.map.dropped == 21
        assert verify_trees(top, src, m.dirent(top), dst) == 21


def test_missing_block_inside_a_tree_names_the_entry(tmp_path):
    from vtstore.sync.migrate import MigrateBlockError

    src = MemoryStore(hashclass=Hash_BLAKE3)
    gone = Hash_BLAKE3.from_data(b"not stored" * 10)
    inner = make_dir([FileDirent("lost", block=HashCodeBlock(gone, 100))], src, name="sub")
    top = make_dir([inner, FileDirent("ok", block=block_for(os.urandom(500), src))], src)
    with pytest.raises(MigrateBlockError, match=f"sub/lost: .*{gone.hex_digest}") as ei:
        Migrator(src, MemoryStore(hashclass=Hash_SHA1)).dirent(top)
    assert ei.value.hashcode == gone
    # from the command line: one line, no traceback, without --hash a clear hint
    old = tmp_path / "old"
    f = tmp_path / "x"
    f.write_bytes(os.urandom(5000))
    vt("-q", "save", str(f), store=old)
    r = vt("migrate", str(old), str(tmp_path / "new"), str(f), check=False)
    assert r.returncode != 0 and b"--hash" in r.stderr, r.stderr


def test_every_named_archive_of_a_store(tmp_path):
    """No WHAT: every archive SRC keeps; `[clause]NAME`: one of them."""
    home = tmp_path / "home"
    home.mkdir()
    old, new = tmp_path / "old", tmp_path / "new"
    (home / ".vtrc").write_text(
        f"[old]\ntype = datadir\npath = {old}\n\n[new]\ntype = datadir\npath = {new}\n"
        "hashclass = sha3_256\n"
    )
    env = dict(os.environ, HOME=str(home), VT_CONFIG=str(home / ".vtrc"))

    def run(*args, check=True):
        r = subprocess.run(
            [sys.executable, "-m", "vtstore.cli.main", *args], capture_output=True, env=env
        )
        assert b"Traceback" not in r.stderr, r.stderr.decode()
        if check:
            assert r.returncode == 0, r.stderr.decode()
        return r

    trees = {}
    for name in ("one", "two"):
        src = tmp_path / name
        src.mkdir()
        (src / "f").write_bytes(os.urandom(70_000))
        (src / "g").write_text(name)
        run("-q", "pack", "-a", f"[old]{name}", str(src))
        trees[name] = src
    run("-q", "pack", "-a", "[old]one", str(trees["one"]))  # a second state
    r = run("migrate", "[old]", "[new]", check=False)  # nothing named: every archive
    assert r.returncode == 0, r.stderr.decode()
    assert sorted(p.name for p in new.glob("*.vt")) == ["one.vt", "two.vt"]
    assert (tmp_path / "new-migrate-blake3-sha3_256.map").exists()
    assert len(list(Archive(str(new / "one.vt")).entries())) == 2
    for name, src in trees.items():
        run("-q", "unpack", f"[new]{name}", str(tmp_path / f"out-{name}"))
        assert rsync_diff(str(src), str(tmp_path / f"out-{name}")) == []
    # one named archive, into a third store
    (home / ".vtrc").write_text(
        (home / ".vtrc").read_text()
        + f"\n[third]\ntype = datadir\npath = {tmp_path / 'third'}\nhashclass = sha1\n"
    )
    run("-q", "migrate", "[old]", "[third]", "[old]two")
    assert [p.name for p in (tmp_path / "third").glob("*.vt")] == ["two.vt"]
    r = run("migrate", "[new]", "[third]", "[new]nope", check=False)
    assert r.returncode != 0 and b"no such archive" in r.stderr


def test_large_directory_keeps_entries_and_salt():
    """20,000 entries: a chunked directory (an indirect block over many pieces)."""
    from vtstore.tree.dir import decode_dir_data, read_dir_data

    src = MemoryStore(hashclass=Hash_BLAKE3)
    dst = MemoryStore(hashclass=Hash_SHA1)
    shared = block_for(os.urandom(3000), src)
    entries = [FileDirent(f"file-{i:06d}", block=shared) for i in range(20_000)]
    top = make_dir(entries, src, salt=b"0123456789abcdef")
    assert type(top.block) is IndirectBlock
    m = Migrator(src, dst)
    new = m.dirent(top)
    assert type(new.block) is IndirectBlock
    got, salt = decode_dir_data(read_dir_data(new.block, dst))
    assert salt == b"0123456789abcdef" and len(got) == 20_000
    assert m.stats.leaves_hashed == 1 and m.stats.reused == 19_999
    assert verify_trees(top, src, new, dst) == 20_001


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cut=st.integers(0, 10_000),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
)
def test_map_file_damage_is_never_a_crash(tmp_path_factory, cut, flips):
    """A damaged map file loads what decodes before the damage and cuts the rest."""
    d = tmp_path_factory.mktemp("map")
    src = _MAP_SRC
    mapfile = d / "m.map"
    mapfile.write_bytes(_MAP_BYTES)
    raw = bytearray(_MAP_BYTES[: len(_MAP_BYTES) - cut % len(_MAP_BYTES)])
    for at, octet in flips:
        if raw:
            raw[at % len(raw)] = octet
    mapfile.write_bytes(bytes(raw))
    dst = MemoryStore(hashclass=Hash_SHA1)
    dst.add_many(list(_MAP_DST_DATA))
    try:
        m = Migrator(src, dst, mapfile=str(mapfile))
    except MigrateError as e:
        assert "not a map of this migration" in str(e)
        return
    new = m.dirent(_MAP_TOP)
    assert verify_trees(_MAP_TOP, src, new, dst) == 31


def _map_fixture():
    import tempfile

    src = MemoryStore(hashclass=Hash_BLAKE3)
    top = make_dir(
        [FileDirent(f"f{i}", block=block_for(os.urandom(5000 + i), src)) for i in range(30)], src
    )
    dst = MemoryStore(hashclass=Hash_SHA1)
    with tempfile.TemporaryDirectory() as t:
        m = Migrator(src, dst, mapfile=f"{t}/m.map")
        m.dirent(top)
        m.commit()
        data = open(f"{t}/m.map", "rb").read()
    return src, top, data, [dst[h] for h in dst]


_MAP_SRC, _MAP_TOP, _MAP_BYTES, _MAP_DST_DATA = _map_fixture()


def _serve(tmp_path, name: str, *global_args: str):
    ready = tmp_path / f"ready-{name}"
    p = subprocess.Popen(
        [sys.executable, "-m", "vtstore.cli.main", "-q", *global_args, "serve"]
        + ["--insecure-no-auth", "--ready-file", str(ready), str(tmp_path / f"{name}.sock")],
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert p.poll() is None and time.monotonic() < deadline, "vt serve did not start"
        time.sleep(0.02)
    return p, ready.read_text().strip()


def test_between_two_servers_over_unix_sockets(tmp_path):
    """SRC and DST are `vt serve` processes: the map file named by --map."""
    src = str(tmp_path / "src")
    make_rich_tree(src)
    old, new = tmp_path / "old", tmp_path / "new"
    vt("-q", "pack", src, store=old)
    procs = []
    try:
        p1, spec1 = _serve(tmp_path, "s1", "-S", str(old))
        procs.append(p1)
        p2, spec2 = _serve(tmp_path, "s2", "-H", "sha1", "-S", str(new))
        procs.append(p2)
        out = str(tmp_path / "m.vt")
        mapfile = str(tmp_path / "m.map")
        r = vt("migrate", "--verify", "--map", mapfile, "-o", out, spec1, spec2, src + ".vt")
        assert b"verified" in r.stderr and os.path.getsize(mapfile) > 1000
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert p.wait(30) == 0
    restored = str(tmp_path / "restored")
    vt("-q", "unpack", out, restored, store=new)
    assert rsync_diff(src, restored) == []


def test_archive_resume_appends_only_missing_states(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    src = _pack_states(tmp_path, old)
    out = str(tmp_path / "out.vt")
    with DataDir(str(old), readonly=True) as s, DataDir(str(new), hashclass=Hash_SHA1) as d:
        Migrator(s, d).archive(src + ".vt", out)
        full = open(out, "rb").read()
        lines = full.splitlines(keepends=True)
        open(out, "wb").write(lines[0])  # killed after the first state
        side = open(out + ".map", "rb").read().splitlines(keepends=True)
        open(out + ".map", "wb").write(side[0] + side[1][:17])  # ... in mid-append
        m = Migrator(s, d)
        assert len(m.archive(src + ".vt", out)) == 3
        assert open(out, "rb").read().count(b"\n") == 3
        from vtstore.archive import parse_line

        again = [(e.when, e.dirent) for e in Archive(out).entries()]
        assert again == [
            (parse_line(x.decode()).when, parse_line(x.decode()).dirent) for x in lines
        ]
        assert sum(1 for _ in open(out + ".map")) == 3
        # the torn record was cut off, not merged with the next one
        assert [json.loads(x)["when"] for x in open(out + ".map")] == [w for w, _ in again]
        # an output that is not a migration of this archive is refused
        other = str(tmp_path / "other.vt")
        Archive(other).update(Dirent(T_DIR), when=1.0)
        with pytest.raises(MigrateError, match="not a migration of"):
            Migrator(s, d).archive(src + ".vt", other)
