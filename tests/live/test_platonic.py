"""The platonic store on a real tree: served in place (unpack equal, the same
blocks `vt pack` makes), a changed file refused until the index catches up,
vanished files forgotten, kept current by the monitor, read-only."""

import os
import subprocess
import sys
import threading
import time

import pytest

from vtstore.errors import CorruptBlockError, MissingBlockError, ReadOnlyError
from vtstore.live.platonic import PlatonicStore
from vtstore.tree.dir import resolve
from vtstore.tree.fsexport import export_tree

from ..tree.conftest import make_rich_tree, rsync_diff

# until stores/spec.py names the provider (PROVIDERS["platonic"]), a `vt` process
# must import the module before it parses -S platonic:...
VT = [
    sys.executable,
    "-c",
    "import sys, vtstore.live.platonic; from vtstore.cli.main import main; sys.exit(main())",
]


def vt(*args, env=None):
    r = subprocess.run([*VT, "-q", *args], capture_output=True, env=env)
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr.decode()
    return r.stdout


@pytest.fixture
def tree(tmp_path):
    t = str(tmp_path / "tree")
    make_rich_tree(t)
    os.makedirs(f"{t}/media")
    with open(f"{t}/media/movie.bin", "wb") as f:
        f.write(os.urandom(12 << 20))  # chunked: indirect blocks, many leaves
    return t


def read_file(store, top, rpath):
    d = resolve(top, rpath, store)
    return d.block.data(store)


def test_serves_the_tree_in_place(tmp_path, tree):
    before = sum(os.lstat(os.path.join(r, f)).st_size for r, _, fs in os.walk(tree) for f in fs)
    with PlatonicStore(tree, str(tmp_path / "idx")) as st:
        top = st.archive.last().dirent
        out = str(tmp_path / "out")
        export_tree(top, st, out)
        idx = sum(
            os.path.getsize(os.path.join(r, f))
            for r, _, fs in os.walk(tmp_path / "idx")
            for f in fs
        )
    assert rsync_diff(tree, out) == []
    # the index is small beside the tree: no content was copied
    assert idx < before / 10, (idx, before)
    # the same blocks `vt pack` makes: a state pushed from here dedups against packs
    ref = vt("-S", str(tmp_path / "dd"), "pack", "-a", str(tmp_path / "x.vt"), tree)
    assert ref.decode().strip() == str(top)


def test_cli_unpack_through_the_spec(tmp_path, tree):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    ref = None
    with PlatonicStore(tree, str(tmp_path / "idx")) as st:
        ref = str(st.archive.last().dirent)
    spec = f"platonic:{tree}"
    vt("-S", spec, "unpack", ref, str(tmp_path / "out"), env=env)
    assert rsync_diff(tree, str(tmp_path / "out")) == []
    assert (
        vt("-S", spec, "cat", ref + "/media/movie.bin", env=env)
        == open(f"{tree}/media/movie.bin", "rb").read()
    )
    assert os.listdir(tmp_path / "cache" / "vt" / "platonic")  # its index went to the cache


def test_refuses_a_block_whose_file_changed(tmp_path, tree):
    path = f"{tree}/media/movie.bin"
    with PlatonicStore(tree, str(tmp_path / "idx")) as st:
        top = st.archive.last().dirent
        old = read_file(st, top, "media/movie.bin")
        # flip one octet in place, same size and a restored mtime: stat alone cannot tell
        s = os.stat(path)
        with open(path, "r+b") as f:
            f.seek(5 << 20)
            b = f.read(1)
            f.seek(5 << 20)
            f.write(bytes([b[0] ^ 0xFF]))
        os.utime(path, ns=(s.st_atime_ns, s.st_mtime_ns))
        with pytest.raises(CorruptBlockError, match="changed since it was indexed"):
            read_file(st, top, "media/movie.bin")
        # other files are still served
        assert read_file(st, top, "regular.txt") == b"hello world\n" * 100
        # the update re-reads it (its ctime changed) and serves the new bytes
        new_top = st.update()
        assert new_top != top
        new = read_file(st, new_top, "media/movie.bin")
        assert new == open(path, "rb").read() and new != old
        assert len(list(st.archive.entries())) == 2


def test_vanished_and_truncated_files(tmp_path, tree):
    with PlatonicStore(tree, str(tmp_path / "idx")) as st:
        top = st.archive.last().dirent
        leaf = resolve(top, "large.bin", st).block
        os.truncate(f"{tree}/media/movie.bin", 1000)
        with pytest.raises(CorruptBlockError):
            read_file(st, top, "media/movie.bin")
        os.unlink(f"{tree}/large.bin")
        top2 = st.update()
        with pytest.raises(MissingBlockError):
            leaf.data(st)
        assert (
            read_file(st, top2, "media/movie.bin") == open(f"{tree}/media/movie.bin", "rb").read()
        )


def test_kept_current_by_the_monitor(tmp_path, tree):
    with PlatonicStore(tree, str(tmp_path / "idx")) as st:
        stop = threading.Event()
        t = threading.Thread(target=st.follow, args=(stop,), kwargs={"settle": 0.2})
        t.start()
        try:
            time.sleep(0.5)
            with open(f"{tree}/regular.txt", "w") as f:
                f.write("edited\n")
            end = time.monotonic() + 20
            while time.monotonic() < end:
                top = st.archive.last().dirent
                try:
                    if read_file(st, top, "regular.txt") == b"edited\n":
                        break
                except CorruptBlockError:
                    pass  # the edit is seen, the index not updated yet: refused, not wrong
                time.sleep(0.2)
            else:
                raise AssertionError("the index did not follow the edit")
        finally:
            stop.set()
            t.join(10)
        assert not t.is_alive()


def test_read_only(tmp_path, tree):
    with PlatonicStore(tree, str(tmp_path / "idx")) as st:
        with pytest.raises(ReadOnlyError):
            st.add(b"nope")


def test_config_clause_and_its_archive(tmp_path, tree):
    rc = tmp_path / "vtrc"
    rc.write_text(f"[media]\ntype = platonic\npath = {tree}\nindex = {tmp_path / 'idx'}\n")
    names = vt("-c", str(rc), "ls", "[media]tree/media").split()
    assert names == [b"movie.bin"]
    data = vt("-c", str(rc), "cat", "[media]tree/media/movie.bin")
    assert data == open(f"{tree}/media/movie.bin", "rb").read()
    # the tree unchanged: opening again records no new state
    vt("-c", str(rc), "ls", "[media]tree")
    assert len((tmp_path / "idx" / "blake3" / "tree.vt").read_text().splitlines()) == 1
    r = subprocess.run(
        [*VT, "-c", str(rc), "-S", "[media]", "save", str(rc)], capture_output=True, text=True
    )
    assert r.returncode == 1 and "read-only" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_damaged_index_is_built_again(tmp_path, tree):
    idx = tmp_path / "idx"
    with PlatonicStore(tree, str(idx)) as st:
        top = st.archive.last().dirent
    data = idx / "blake3" / "index" / "data.mdb"
    os.truncate(data, os.path.getsize(data) // 3)  # LMDB would SIGBUS on this
    with PlatonicStore(tree, str(idx)) as st:
        assert st.archive.last().dirent == top
        assert read_file(st, top, "media/movie.bin") == open(f"{tree}/media/movie.bin", "rb").read()


def test_unwritable_index_is_one_clear_error(tmp_path, tree):
    os.chmod(tmp_path, 0o755)
    env = {**os.environ, "XDG_CACHE_HOME": "/proc/nonexistent"}
    r = subprocess.run(
        [*VT, "-S", f"platonic:{tree}", "ls", "x"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr and "index" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
