"""Every command on the object layouts, as a user runs them: `vt pack`,
`unpack`, `fsck`, `push`/`pull` between a datadir and both layouts (the
conversion between layouts is a push), a cache store in front (`-C`), and an
encrypted off-site copy (`crypt` over `s3://`)."""

from __future__ import annotations

import filecmp
import json
import os
import random

from .conftest import BUCKET, vt


def make_tree(root, files: int = 60, seed: int = 7) -> None:
    """A tree of text and random files, a few of them large, some shared."""
    rnd = random.Random(seed)
    for i in range(files):
        d = root / f"d{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        if i % 3 == 0:
            data = rnd.randbytes(rnd.randrange(1, 400_000))
        else:
            data = (f"line {i} " * rnd.randrange(1, 20_000)).encode()
        (d / f"f{i}.dat").write_bytes(data)
    (root / "same1").write_bytes(b"shared " * 50_000)
    (root / "same2").write_bytes(b"shared " * 50_000)


def same_tree(a, b) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files:
        return False
    return all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def rc_file(tmp_path, weed, prefix, **extra) -> str:
    """A config with [packs] and [blocks] clauses on the test bucket."""
    lines = []
    for name, layout in (("packs", "packs"), ("blocks", "blocks")):
        lines += [
            f"[{name}]",
            "type = s3",
            f"url = s3://{BUCKET}/{prefix}-{name}",
            f"endpoint = {weed.endpoint}",
            f"layout = {layout}",
            "pack_size = 2MiB",
            *[f"{k} = {v}" for k, v in extra.items()],
            "",
        ]
    p = tmp_path / "vtrc"
    p.write_text("\n".join(lines))
    return str(p)


def test_pack_unpack_fsck_both_layouts(tmp_path, s3_env, weed, prefix):
    src = tmp_path / "src"
    make_tree(src)
    rc = rc_file(tmp_path, weed, prefix)
    for clause in ("packs", "blocks"):
        S = ["-c", rc, "-S", f"[{clause}]", "-q"]
        vt(s3_env, *S, "pack", str(src))
        out = tmp_path / f"out-{clause}"
        vt(s3_env, *S, "unpack", f"{src}.vt", str(out))
        assert same_tree(src, out)
        r = vt(s3_env, *S, "fsck")
        assert "ok" in r.stdout, r.stdout
        # a second pack of an unchanged tree reads nothing and adds a state
        vt(s3_env, *S, "pack", str(src))
        os.unlink(f"{src}.vt")


def test_url_spec_and_a_fresh_cache(tmp_path, s3_env, weed, prefix):
    """`-S s3://...` with credentials from the environment; a second machine
    (another cache directory) reads what the first wrote, and a cache store
    in front (`-C`) is filled by an unpack."""
    src = tmp_path / "src"
    make_tree(src, files=20)
    S = ["-S", f"s3://{BUCKET}/{prefix}", "-q"]
    vt(s3_env, *S, "pack", str(src))
    other = {**s3_env, "XDG_CACHE_HOME": str(tmp_path / "other-cache")}
    cache = tmp_path / "front"
    vt(other, *S, "-C", str(cache), "unpack", f"{src}.vt", str(tmp_path / "out"))
    assert same_tree(src, tmp_path / "out")
    assert any((cache / "data").iterdir())  # the datadir in front holds blocks now
    r = vt(other, *S, "info", "--json", check=False)
    assert r.returncode == 0, r.stderr


def test_push_between_datadir_and_both_layouts(tmp_path, s3_env, weed, prefix):
    src = tmp_path / "src"
    make_tree(src, files=30)
    dd = tmp_path / "dd"
    rc = rc_file(tmp_path, weed, prefix)
    vt(s3_env, "-S", str(dd), "-q", "pack", str(src))
    arch = f"{src}.vt"
    # datadir -> packs -> blocks (the conversion) -> a new datadir
    vt(s3_env, "-c", rc, "push", str(dd), "[packs]", arch)
    vt(s3_env, "-c", rc, "push", "[packs]", "[blocks]", arch)
    vt(s3_env, "-c", rc, "push", "[blocks]", str(tmp_path / "dd2"), arch)
    for S in (["-S", "[packs]"], ["-S", "[blocks]"], ["-S", str(tmp_path / "dd2")]):
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        vt(s3_env, "-c", rc, *S, "-q", "unpack", arch, str(out))
        assert same_tree(src, out)
    # pushing again sends nothing new and succeeds
    vt(s3_env, "-c", rc, "push", "[packs]", "[blocks]", arch)


def test_encrypted_offsite_copy(tmp_path, s3_env, weed, prefix):
    """The documented off-site copy: a crypt clause over s3://; the bucket
    holds no plaintext."""
    src = tmp_path / "src"
    src.mkdir()
    secret = b"the quarterly numbers are " + b"very secret " * 20_000
    (src / "report.txt").write_bytes(secret)
    key = tmp_path / "offsite.key"
    rc = tmp_path / "vtrc"
    rc.write_text(
        "[offsite]\ntype = crypt\n"
        f"store = s3://{BUCKET}/{prefix}\nkey_file = {key}\n"
        f"index = {tmp_path / 'offsite.idx'}\n"
    )
    env = {**s3_env, "VT_PASSPHRASE": "correct horse"}
    vt(env, "-c", str(rc), "crypt", "--scrypt-log-n", "10", "init", "[offsite]")
    vt(env, "-c", str(rc), "-S", "[offsite]", "-q", "pack", str(src))
    vt(env, "-c", str(rc), "-S", "[offsite]", "-q", "unpack", f"{src}.vt", str(tmp_path / "out"))
    assert (tmp_path / "out" / "report.txt").read_bytes() == secret
    # a named archive in the bucket, its lines encrypted like the blocks
    vt(env, "-c", str(rc), "-q", "pack", "-a", "[offsite]reports", "-m", "q3 numbers", str(src))
    r = vt(env, "-c", str(rc), "snapshots", "--json", "[offsite]")
    listed = json.loads(r.stdout)
    assert [a["archive"] for a in listed] == ["reports"], r.stdout
    vt(env, "-c", str(rc), "-q", "unpack", "[offsite]reports", str(tmp_path / "out2"))
    assert (tmp_path / "out2" / "report.txt").read_bytes() == secret
    b = weed.backend(prefix)
    archive_objects = list(b.list("archives/"))
    assert archive_objects, "the named archive is kept as objects"
    for o in [*b.list("data/"), *archive_objects]:
        body = b.get(o.name)
        assert b"very secret" not in body and b"q3 numbers" not in body, o.name
    b.close()


def test_archives_kept_as_objects(tmp_path, weed, prefix):
    """`archive_names`/`named_archive` of both layouts (what
    `vtstore.named_archives` uses): states from two stores on one archive
    are all kept, in time order."""
    from vtstore.archive import ArchiveError
    from vtstore.named_archives import list_archives, open_archive
    from vtstore.stores.backends.objects import BlockObjectStore
    from vtstore.stores.backends.packs import PackStore
    from vtstore.tree.dirent import SymlinkDirent

    for kind in ("packs", "blocks"):
        pre = f"{prefix}-{kind}"
        if kind == "packs":
            a = PackStore(weed.backend(pre), tmp_path / "c1")
            b = PackStore(weed.backend(pre), tmp_path / "c2")
        else:
            a, b = BlockObjectStore(weed.backend(pre)), BlockObjectStore(weed.backend(pre))
        with a, b:
            d = SymlinkDirent("f", "target")
            for i in range(5):
                open_archive(a, "home", create=True).update(d, when=1000.0 + 2 * i)
                open_archive(b, "home", create=True).update(d, when=1001.0 + 2 * i)
            assert list_archives(a) == ["home"]
            when = [e.when for e in open_archive(b, "home").entries()]
            assert when == sorted(when) and len(when) == 10
            try:
                open_archive(a, "absent")
            except ArchiveError as e:
                assert "no such archive" in str(e)
            else:
                raise AssertionError("an absent archive opened")
