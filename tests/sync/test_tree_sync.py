"""Tree sync between real stores: everything arrives, present subtrees are
skipped, bad source blocks stay behind, an interrupted sync resumes."""

from __future__ import annotations

import pytest

from vtstore.blocks import IndirectBlock, decode_blockrefs
from vtstore.errors import FormatError
from vtstore.stores.datadir import DataDir
from vtstore.stores.memory import MemoryStore
from vtstore.sync import TreeSync, sync_tree
from vtstore.tree.check import check
from vtstore.tree.fsimport import import_tree

from .conftest import CountingStore, make_tree


@pytest.fixture
def packed(tmp_path):
    """A datadir holding a 200-file tree; yields (store, root dirent, tree path)."""
    make_tree(tmp_path / "t", size=60_000)
    st = DataDir(tmp_path / "src")
    root, _ = import_tree(str(tmp_path / "t"), st)
    st.flush()
    yield st, root, tmp_path / "t"
    st.close()


def all_blocks(store) -> set:
    return set(store.hashcodes())


def test_copies_everything_and_second_run_sends_nothing(packed, tmp_path):
    src, root, _ = packed
    with DataDir(tmp_path / "dst") as dst:
        s = sync_tree(src, dst, [root])
        assert s.problems == [] and s.failed == 0
        assert s.done == s.total > 200 and s.outstanding == 0
        assert check(root, dst).problems == []
        assert all_blocks(dst) == all_blocks(src)
        assert s.bytes_sent == sum(len(src[h]) for h in all_blocks(src))
        c = CountingStore(dst)
        again = sync_tree(src, c, [root])
        assert again.total == 0 and c.blocks["add"] == 0
        # the root directory is present: one question answers for the whole tree
        assert c.blocks["contains"] == 1 and again.subtrees_skipped == 1


def test_present_subtree_is_skipped_not_walked(packed, tmp_path):
    src, root, tree = packed
    dst = CountingStore(MemoryStore())
    # one directory of the tree is already there
    sub, _ = import_tree(str(tree / "d3"), dst.inner)
    n_sub = len(dst.inner)
    s = sync_tree(src, dst, [root])
    assert s.problems == []
    assert s.done == len(all_blocks(src)) - n_sub
    assert s.subtrees_skipped >= 1
    # nothing under d3 was asked about: its blocks were neither sent nor checked
    assert dst.blocks["contains"] < len(all_blocks(src)) - n_sub + 2
    assert check(root, dst.inner).problems == []
    # --full asks about every block, finds nothing to send
    c2 = CountingStore(dst.inner)
    full = sync_tree(src, c2, [root], full=True)
    assert full.total == 0 and c2.blocks["contains"] >= len(all_blocks(src))


def test_batched_requests(packed, tmp_path):
    src, root, _ = packed
    dst = CountingStore(MemoryStore())
    s = sync_tree(src, dst, [root], batch=256)
    assert s.done > 200 and s.total_bytes == s.bytes_sent
    # a round trip per batch (or level of the tree), not per block
    assert dst.calls["contains"] < s.done / 20
    assert dst.calls["add"] < s.done / 20


def test_dry_run_sends_nothing(packed):
    src, root, _ = packed
    dst = MemoryStore()
    s = sync_tree(src, dst, [root], dry_run=True)
    assert s.total > 200 and s.total_bytes > 200 * 10_000
    assert len(dst) == 0


def test_children_before_parents(packed):
    src, root, _ = packed
    order = []

    class Recording(CountingStore):
        def add_many(self, datas):
            out = super().add_many(datas)
            order.extend(out)
            return out

    dst = Recording(MemoryStore())
    sync_tree(src, dst, [root])
    pos = {h: i for i, h in enumerate(order)}
    checked = 0
    for h in order:
        try:
            subs = list(decode_blockrefs(src[h]))
        except FormatError:
            continue  # not an indirect block
        for sb in subs:
            if hasattr(sb, "hashcode") and sb.hashcode in pos:
                assert pos[sb.hashcode] < pos[h]
                checked += 1
    # the root directory block is the last one sent
    assert checked > 50 and order[-1] == root.block.hashcode


def test_corrupt_source_block_is_reported_and_not_sent(packed, tmp_path):
    src, root, _ = packed
    mem = MemoryStore()
    for h in src.hashcodes():
        mem.add(src[h])
    # replace one file's leaf with garbage under its hashcode
    from vtstore.tree.dir import walk

    victim_path, victim = next((p, d) for p, d in walk(root, mem) if d.is_file and d.size > 0)
    leaf = next(iter(victim.block.leaves(mem)))
    mem._blocks[leaf.hashcode] = b"garbage" * 10
    dst = MemoryStore()
    s = sync_tree(mem, dst, [root])
    assert s.failed >= 1
    assert any(str(leaf.hashcode) in p and "corrupt" in p for p in s.problems), s.problems
    assert leaf.hashcode not in dst
    # nothing above the bad block was sent: the root is absent, so a later
    # sync (once the source is repaired) walks down to it again
    assert root.block.hashcode not in dst
    mem._blocks[leaf.hashcode] = src[leaf.hashcode]
    s2 = sync_tree(mem, dst, [root])
    assert s2.problems == [] and check(root, dst).problems == []
    assert s2.done < s.done


def test_resume_after_interruption_sends_only_the_rest(packed):
    src, root, _ = packed

    class Dies(MemoryStore):
        def __init__(self, after):
            super().__init__()
            self.after = after

        def add_many(self, datas):
            if len(self) >= self.after:
                raise KeyboardInterrupt
            return super().add_many(datas)

    dst = Dies(after=100)
    assert TreeSync(src, dst, batch=64).run().total == 0  # no roots: nothing
    with pytest.raises(KeyboardInterrupt):
        sync_tree(src, dst, [root], batch=64)
    arrived = len(dst)
    assert 100 <= arrived < len(all_blocks(src))
    dst.after = 10**9
    s = sync_tree(src, dst, [root], batch=64)
    assert s.problems == [] and s.done == len(all_blocks(src)) - arrived
    assert check(root, dst).problems == []


class Vouching(CountingStore):
    """A destination that walks a tree itself, as a block server answers
    INDIRECT_COMPLETE (`vtstore.net.indirect.missing_blocks` next to the store)."""

    def missing_blocks(self, block):
        from vtstore.net.indirect import missing_blocks

        self.calls["vouch"] = self.calls.get("vouch", 0) + 1
        return missing_blocks(self.inner, block)


def test_full_uses_the_destinations_own_walk_and_finds_a_hole(packed):
    src, root, _ = packed
    mem = MemoryStore()
    sync_tree(src, mem, [root])
    plain = CountingStore(mem)
    sync_tree(src, plain, [root], full=True)
    dst = Vouching(mem)
    s = sync_tree(src, dst, [root], full=True)
    assert s.total == 0 and dst.calls["vouch"] > 10
    # the files' leaves were not asked about one by one, nor their indirect blocks read
    assert dst.blocks["contains"] < plain.blocks["contains"] / 2
    # a leaf lost from the destination under a present indirect block: found, sent
    from vtstore.tree.dir import walk

    f = next(d for _, d in walk(root, src) if d.is_file and isinstance(d.block, IndirectBlock))
    leaf = next(iter(f.block.leaves(src)))
    del mem._blocks[leaf.hashcode]
    mem._keys = type(mem._keys)()
    mem._keys.extend(sorted(mem._blocks))
    assert sync_tree(src, dst, [root]).total == 0  # trusting the top: not seen
    s = sync_tree(src, Vouching(mem), [root], full=True)
    assert s.done == 1 and leaf.hashcode in mem
    assert check(root, mem).problems == []


def test_source_reads_are_batched_too(packed):
    """A remote source (vt pull) is read a batch per round, directories included,
    and each block read once: not a request per directory or per block."""
    src, root, _ = packed
    counting = CountingStore(src)
    s = sync_tree(counting, MemoryStore(), [root])
    dirs = 1 + 10 + 30
    assert s.done > 400 and s.problems == []
    assert counting.calls["get"] < dirs / 2, counting.calls
    assert counting.blocks["get"] <= s.done + 5, counting.blocks


# -- property: any tree, any downward-closed part already there ------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vtstore.blocks import block_for  # noqa: E402
from vtstore.tree.dir import make_dir  # noqa: E402
from vtstore.tree.dirent import FileDirent  # noqa: E402

# a tree: a list of entries, each a file (content seed, size) or a subdirectory
_files = st.tuples(st.integers(0, 5), st.sampled_from([0, 10, 3000, 40_000]))
_trees = st.recursive(
    st.lists(_files.map(lambda f: ("f", f)), max_size=4),
    lambda kids: st.lists(
        st.one_of(_files.map(lambda f: ("f", f)), kids.map(lambda k: ("d", k))), max_size=4
    ),
    max_leaves=25,
)


def _build(spec, store, name="", flags=None, out=None):
    """Store the tree `spec`; the subtrees whose flag is set are also put in `out`
    (written the way vt writes: a whole subtree, children first)."""
    entries = []
    for i, (kind, x) in enumerate(spec):
        if kind == "f":
            seed, size = x
            data = bytes([seed]) * 7 + (b"%d" % seed) * size  # shared content across files
            d = FileDirent(f"e{i}", block_for(data, store, max_block_size=4096))
        else:
            d = _build(x, store, f"e{i}", flags, out)
        if flags is not None and out is not None and next(flags, False):
            sync_tree(store, out, [d])
        entries.append(d)
    return make_dir(entries, store, name=name)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=_trees, pre=st.lists(st.booleans(), max_size=40), full=st.booleans())
def test_any_tree_any_part_present(spec, pre, full):
    src = MemoryStore()
    root = _build(spec, src)
    dst = MemoryStore()
    _build(spec, src, flags=iter(pre), out=dst)  # same tree: some subtrees copied first
    before = set(dst.hashcodes())
    counting = CountingStore(dst)
    s = sync_tree(src, counting, [root], full=full)
    assert s.problems == [] and s.failed == 0
    assert check(root, dst).problems == []
    # exactly what was missing was sent: nothing present went again
    reachable = set(src.hashcodes())
    assert s.done == counting.blocks["add"] == len(reachable - before)
    assert set(dst.hashcodes()) == reachable | before


def test_base_tree_spares_the_unchanged_entries(packed, tmp_path):
    """With the previous state as base, a second sync of a tree with a few
    files changed decodes and asks about the changed entries only, and the
    tree arrives whole; a base the source cannot read is walked in full."""
    import os
    import random

    src, root, tree = packed
    dst = CountingStore(MemoryStore())
    assert sync_tree(src, dst, [root]).problems == []
    rnd = random.Random(5)
    files = sorted(p for p in tree.rglob("*") if p.is_file())
    for p in rnd.sample(files, 4):
        p.write_bytes(os.urandom(30_000))
    (tree / "d1" / "new").mkdir()
    (tree / "d1" / "new" / "f").write_bytes(b"new file")
    root2, _ = import_tree(str(tree), src, root)
    src.flush()
    want = all_blocks(src) - all_blocks(dst.inner)

    def second(dst_store, base):
        ts = TreeSync(src, dst_store)
        ts.add_dirent(root2, base=base)
        return ts.run()

    plain_dst = CountingStore(MemoryStore())
    for h in all_blocks(dst.inner):
        plain_dst.inner.add(dst.inner[h])
    plain = second(plain_dst, None)
    dst.blocks["contains"] = 0
    s = second(dst, root)
    assert s.problems == [] and plain.problems == []
    assert s.done == plain.done == len(want)
    assert check(root2, dst.inner).problems == []
    # the unchanged entries of the changed directories were not asked about
    # (here every block asked about was missing: only the new ones were asked)
    assert s.unchanged >= 30 and s.checked == s.done < plain.checked
    assert dst.blocks["contains"] < plain_dst.blocks["contains"]
    # a base the source does not hold: every entry walked, still whole
    other = MemoryStore()
    stranger, _ = import_tree(str(tree / "d2"), other)
    third = CountingStore(MemoryStore())
    for h in all_blocks(dst.inner) - want:
        third.inner.add(dst.inner[h])
    s3 = second(third, stranger)
    assert s3.problems == [] and s3.unchanged == 0 and s3.done == len(want)
    assert check(root2, third.inner).problems == []
