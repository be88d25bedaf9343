"""Exclude and include rules through the commands, as a user runs them: real
`vt` processes, a real datadir inside a home-like tree.

- vt's own files (the datadir at ~/.local/share/vt, the archive) are never
  packed: five packs of an unchanged home add nothing to the store;
- the rule options of `vt pack`, a `.vtrc` `exclude` key, rule-file errors;
- a restore of a subset (`vt unpack`/`vt export` with rules);
- `vt mount` rules: matched files live in the mount's scratch only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest

from vtstore.tree.filters import CACHEDIR_SIGNATURE

from ..fs.conftest import mounts, needs_fuse  # noqa: F401 - the fixture

VT = [sys.executable, "-m", "vtstore.cli.main"]


def vt(env, *args, check=True, cwd=None):
    r = subprocess.run([*VT, *args], capture_output=True, env=env, cwd=cwd)
    assert b"Traceback" not in r.stderr, r.stderr.decode()
    if check and r.returncode != 0:
        raise AssertionError(f"vt {' '.join(args)} failed ({r.returncode}): {r.stderr.decode()}")
    return r


def home_env(home) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VT_", "XDG_"))}
    env["HOME"] = str(home)
    return env


def make_home(home) -> None:
    """A small home: documents, a project with build output, a cache."""
    rnd = os.urandom
    for d in ("docs", "src/proj/build", "src/proj/node_modules/pkg", ".cache/app", "Music"):
        (home / d).mkdir(parents=True, exist_ok=True)
    for i in range(40):
        (home / "docs" / f"note{i}.txt").write_bytes(rnd(3000))
    (home / "src/proj/main.c").write_text("int main(){}\n")
    (home / "src/proj/main.o").write_bytes(rnd(800))
    (home / "src/proj/build/out.bin").write_bytes(rnd(5000))
    (home / "src/proj/node_modules/pkg/index.js").write_text("x")
    (home / ".cache/CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE + b"\n")
    (home / ".cache/app/blob").write_bytes(rnd(9000))
    (home / "Music/song.flac").write_bytes(rnd(300_000))


def data_bytes(datadir) -> int:
    return sum(p.stat().st_size for p in (datadir / "data").glob("*.vtd"))


def listing(env, ref) -> set[str]:
    out = vt(env, "ls", "-R", ref).stdout.decode()
    # `ls -R` prints "dir:" headers and names; rebuild the paths
    paths, cur = set(), ""
    for line in out.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            cur = line[:-1].strip("/")
            cur = "" if cur in (".", "") else cur
            continue
        if line.strip():
            name = line.strip().rstrip("/")
            paths.add(f"{cur}/{name}" if cur else name)
    return paths


def test_home_packed_five_times_unchanged_adds_nothing(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    make_home(home)
    env = home_env(home)
    datadir = home / ".local/share/vt"
    sizes, summaries = [], []
    for _ in range(5):
        r = vt(env, "pack", "--json", str(home))
        summaries.append(json.loads(r.stdout))
        sizes.append(data_bytes(datadir))
    # the first pack creates the datadir in ~/.local/share while it walks, so
    # the second one stores that directory's new mtime; then nothing changes
    assert sizes[2:] == [sizes[1]] * 3, sizes
    assert [s["bytes_added"] for s in summaries[2:]] == [0] * 3
    assert all(s["files_unchanged"] == s["files"] for s in summaries[1:])
    assert str(datadir) in summaries[-1]["own_files_left_out"]
    ref = summaries[-1]["dirent"]
    names = listing(env, ref)
    assert "docs/note0.txt" in names and ".local/share" in names
    assert not any(n.startswith(".local/share/vt") for n in names)


def test_without_default_excludes_the_store_is_packed_into_itself(tmp_path):
    """The counter-test: --no-default-excludes stores the datadir too, and
    every pack grows it (what the five-runs test would see without the rule)."""
    home = tmp_path / "home"
    home.mkdir()
    make_home(home)
    env = home_env(home)
    datadir = home / ".local/share/vt"
    sizes = []
    for _ in range(3):
        r = vt(env, "pack", "--json", "--no-default-excludes", str(home))
        sizes.append(data_bytes(datadir))
    assert sizes[2] > sizes[1] > sizes[0]
    assert any(
        n.startswith(".local/share/vt/data") for n in listing(env, json.loads(r.stdout)["dirent"])
    )


def test_pack_rule_options(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    make_home(home)
    (home / "src/proj/.vtignore").write_text("build/\n")
    (home / "docs/.nobackup").write_text("")
    rules = tmp_path / "rules"
    rules.write_text("# build products\n*.o\n+ /src/proj/node_modules/pkg/\nnode_modules/\n")
    env = home_env(home)
    r = vt(
        env,
        "pack",
        "--json",
        "-a",
        str(tmp_path / "h.vt"),
        "--exclude-from",
        str(rules),
        "--exclude-caches",
        "--exclude-if-present",
        ".nobackup",
        "--exclude-larger-than",
        "100K",
        "--include",
        "/Music/",
        "--exclude",
        "/Music/*",
        str(home),
    )
    s = json.loads(r.stdout)
    names = listing(env, s["dirent"])
    assert "src/proj/main.c" in names and "src/proj/main.o" not in names
    assert "src/proj/build" not in names and "src/proj/.vtignore" in names
    # rsync's rule: including a/b/c does not take it when a/b is excluded
    assert "src/proj/node_modules" not in names
    assert ".cache/CACHEDIR.TAG" in names and ".cache/app" not in names
    assert {n for n in names if n.startswith("docs/")} == {"docs/.nobackup"}
    assert "Music" in names and "Music/song.flac" not in names
    assert s["excluded"] > 0
    # with no .vtignore read, build/ is back
    r = vt(env, "pack", "--json", "-a", str(tmp_path / "h2.vt"), "--vtignore", "", str(home))
    assert "src/proj/build/out.bin" in listing(env, json.loads(r.stdout)["dirent"])


def test_vtrc_exclude_key(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    make_home(home)
    more = tmp_path / "more"
    more.write_text("Music/\n")
    (home / ".vtrc").write_text(
        f"[GLOBAL]\nexclude = *.o\n  + main.c\n  *.c\nexclude_from = {more}\n"
    )
    env = home_env(home)
    r = vt(env, "pack", "--json", "-a", str(tmp_path / "h.vt"), str(home))
    names = listing(env, json.loads(r.stdout)["dirent"])
    assert "src/proj/main.o" not in names and "src/proj/main.c" in names
    assert "Music" not in names
    # vt config shows the rules as a value that reads back
    shown = vt(env, "config").stdout.decode()
    assert "exclude = *.o\n  + main.c\n  *.c\n" in shown
    # the command line comes first
    r = vt(env, "pack", "--json", "-a", str(tmp_path / "h2.vt"), "--include", "*.o", str(home))
    assert "src/proj/main.o" in listing(env, json.loads(r.stdout)["dirent"])


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--exclude-from", "/nonexistent/rules"], b"/nonexistent/rules: No such file"),
        (["--exclude", ""], b"empty exclude pattern"),
        (["--exclude-larger-than", "lots"], b"bad size"),
    ],
)
def test_bad_rules_are_one_line_before_reading(tmp_path, args, needle):
    home = tmp_path / "home"
    home.mkdir()
    make_home(home)
    env = home_env(home)
    archive = tmp_path / "h.vt"
    r = vt(env, "pack", "-a", str(archive), *args, str(home), check=False)
    assert r.returncode not in (0,) and r.returncode < 128
    assert r.stderr.count(b"\n") == 1 and needle in r.stderr, r.stderr
    assert not archive.exists()


def test_restore_a_subset(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_home(src)
    os.link(src / "docs/note5.txt", src / "docs/note15.txt.link")  # first name left out
    env = home_env(tmp_path)
    archive = str(tmp_path / "src.vt")
    vt(env, "-q", "pack", "-a", archive, str(src))
    out = tmp_path / "out"
    only_docs = ["--include", "/docs/", "--include", "/docs/note1*", "--exclude", "*"]
    vt(env, "-q", "unpack", archive, str(out), *only_docs)
    got = {str(p.relative_to(out)) for p in out.rglob("*")}
    want = {"docs", "docs/note15.txt.link"} | {f"docs/note{i}.txt" for i in [1, *range(10, 20)]}
    assert got == want
    assert (out / "docs/note1.txt").read_bytes() == (src / "docs/note1.txt").read_bytes()
    assert (out / "docs/note15.txt.link").read_bytes() == (src / "docs/note5.txt").read_bytes()
    tar = tmp_path / "x.tar"
    vt(env, "export", archive, "-o", str(tar), "--exclude", "*.o", "--exclude-larger-than", "6000")
    with tarfile.open(tar) as t:
        names = {m.name.strip("./") for m in t.getmembers()}
    assert "src/proj/main.c" in names and "src/proj/build/out.bin" in names
    assert not any(n.endswith(("main.o", "song.flac", "blob")) for n in names)
    tar2 = tmp_path / "y.tar"
    vt(env, "export", archive, "-o", str(tar2), *only_docs)
    with tarfile.open(tar2) as t:
        assert {m.name.strip("./") for m in t.getmembers()} - {""} == want


def test_save_and_import_take_the_rules(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_home(src)
    env = home_env(tmp_path)
    store = ["-S", str(tmp_path / "store")]
    ref = vt(env, *store, "save", "--exclude", "*.o", "--exclude-caches", str(src))
    r = vt(env, *store, "ls", "-R", ref.stdout.decode().strip()).stdout.decode()
    assert "main.c" in r and "main.o" not in r and "blob" not in r and "CACHEDIR.TAG" in r
    archive = str(tmp_path / "i.vt")
    vt(env, *store, "import", "--exclude", "/Music/", "--exclude", "docs/", str(src), archive)
    r = vt(env, *store, "ls", "-R", archive).stdout.decode()
    assert "main.o" in r and "song.flac" not in r and "note1.txt" not in r


@needs_fuse
def test_mount_exclude_lives_in_scratch_only(tmp_path, mounts):  # noqa: F811
    """A real FUSE mount with rules: what they match is readable in the mount,
    absent from the recorded state, and its bytes never reach the store; a
    matching file the state already had keeps its stored version."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "old.o").write_bytes(b"old object")
    (src / "keep.txt").write_text("keep")
    store = str(tmp_path / "store")
    archive = str(tmp_path / "src.vt")
    env = home_env(tmp_path)
    vt(env, "-q", "-S", store, "pack", "-a", archive, str(src))
    before = data_bytes(tmp_path / "store")
    mnt = str(tmp_path / "mnt")
    rules = ["--exclude", "*.o", "--exclude", "/build/", "--exclude-larger-than", "1M"]
    m = mounts(store, archive, mnt, "--sync-interval", "0", *rules)
    blobs = {name: os.urandom(2 << 20) for name in ("new.o", "build/out", "big.bin")}
    os.mkdir(f"{mnt}/build")
    for name, data in blobs.items():
        with open(f"{mnt}/{name}", "wb") as f:
            f.write(data)
    with open(f"{mnt}/old.o", "wb") as f:
        f.write(b"changed object")
    with open(f"{mnt}/new.txt", "w") as f:
        f.write("stored")
    for name, data in blobs.items():
        with open(f"{mnt}/{name}", "rb") as f:
            assert f.read() == data, name
    subprocess.run(["sync", "-f", f"{mnt}/new.txt"], check=False)
    assert m.umount() == 0, m.output()
    r = vt(env, "-S", store, "ls", "-R", archive).stdout.decode()
    assert "new.txt" in r and "keep.txt" in r and "old.o" in r
    assert "new.o" not in r and "build" not in r and "big.bin" not in r
    assert vt(env, "-S", store, "cat", archive + "/old.o").stdout == b"old object"
    assert data_bytes(tmp_path / "store") - before < 1 << 20  # 6 MiB written, none stored


def test_rm_keeps_a_dir_with_excluded_entries(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_home(src)
    env = home_env(tmp_path)
    r = vt(
        env, "pack", "--rm", "--exclude", "*.o", "-a", str(tmp_path / "a.vt"), str(src), check=False
    )
    assert (
        r.returncode == 1
        and b"excluded (not stored)" in r.stderr
        and (src / "src/proj/main.o").exists()
    )
    vt(env, "pack", "--rm", "-a", str(tmp_path / "b.vt"), str(src))
    assert not src.exists()


def test_own_archives_and_any_datadir_are_left_out(tmp_path):
    """An archive of this store and any datadir inside the packed tree are
    vt's own files; an archive of another store is the user's data."""
    home = tmp_path / "home"
    home.mkdir()
    make_home(home)
    env = home_env(home)
    vt(env, "-q", "pack", "-a", str(home / "docs.vt"), str(home / "docs"))  # this store
    other = ["-S", str(home / "otherstore")]  # a second datadir, inside the tree
    vt(env, "-q", *other, "pack", "-a", str(home / "music.vt"), str(home / "Music"))
    s = json.loads(vt(env, "pack", "--json", "-a", str(tmp_path / "h.vt"), str(home)).stdout)
    names = listing(env, s["dirent"])
    assert "docs.vt" not in names and "otherstore" not in names
    assert "music.vt" in names and "docs/note3.txt" in names
    assert {str(home / "docs.vt"), str(home / "otherstore")} <= set(s["own_files_left_out"])
    s = json.loads(
        vt(
            env, "pack", "--json", "--no-default-excludes", "-a", str(tmp_path / "h2.vt"), str(home)
        ).stdout
    )
    names = listing(env, s["dirent"])
    assert "docs.vt" in names and "otherstore/datadir.json" in names
