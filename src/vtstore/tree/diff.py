"""Differences between two trees, reading only the subtrees that differ.

`TreeDiff(store).changes(a, b)` yields a `Change` per path that differs between
the trees under dirents `a` (old) and `b` (new), in path order (each directory
before its entries, names in octet order, as `vtstore.tree.dir.walk`):

- `+` added, `-` removed (every entry below an added or removed directory too);
- `T` the type changed (a file became a symlink, a directory a file, ...): the
  entries below the old directory are listed as removed, those below the new
  one as added;
- `M` modified: `what` says which of `content`, `mode`, `owner` (uid, gid,
  user or group), `mtime`, `xattrs` (POSIX ACLs among them), `target` (a
  symlink's), `device` (numbers), `link` (the hard-link group) differ.  `ctime`
  is compared only when asked: every restore sets it anew.  A directory is `M`
  only for its own metadata; its changed entries are listed by their paths.
- `!` damaged: a directory of either side could not be read (missing or
  corrupt block); the entries below it are not compared, the walk goes on.

Why it is fast: two directories with equal content blocks hold equal entries,
so they are skipped without reading a block, and inside two directories that
do differ the entries are compared by their binary form (`scan_dir_data`), so
only the entries that differ are decoded.  A tree where 1% of the files changed
costs the directories on the paths to them, not the whole tree.

A hard link is compared as what it is in the tree: a name for an inode group
(`link`); the group's content belongs to its first name, which shows `M`
when the content changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

from vtstore.codec import Reader, encode_varint
from vtstore.errors import FormatError, VTError
from vtstore.tree.dir import DF_SALTED, DIR_VERSION, dir_entries, read_dir_data, walk
from vtstore.tree.dirent import T_DIR, Dirent, decode_dirent, fsenc

#: how a binary directory dirent begins (its type varint)
_DIR_TYPE = encode_varint(T_DIR)

ADDED = "+"
REMOVED = "-"
MODIFIED = "M"
TYPE_CHANGED = "T"
DAMAGED = "!"

#: the aspects `Change.what` can name, in the order they are listed
ASPECTS = (
    "type",
    "content",
    "mode",
    "owner",
    "mtime",
    "ctime",
    "xattrs",
    "target",
    "device",
    "link",
)


@dataclass(frozen=True)
class Change:
    """One path that differs between two trees (see the module docstring)."""

    kind: str
    path: str
    old: Dirent | None = None
    new: Dirent | None = None
    what: tuple[str, ...] = ()
    error: str | None = None

    @property
    def type_name(self) -> str:
        """The type of the entry (the new one's, else the old one's)."""
        d = self.new if self.new is not None else self.old
        return d.type_name if d is not None else "?"

    @property
    def shown_path(self) -> str:
        """The path as listings show it: a directory ends with `/`."""
        d = self.new if self.new is not None else self.old
        return self.path + ("/" if d is not None and d.is_dir and self.path != "." else "")

    def to_json(self) -> dict:
        """The change as a JSON object."""
        out: dict = {"kind": self.kind, "path": self.path, "type": self.type_name}
        if self.old is not None:
            out["old_size"] = self.old.size
            out["old_type"] = self.old.type_name
        if self.new is not None:
            out["new_size"] = self.new.size
            out["new_type"] = self.new.type_name
        if self.what:
            out["what"] = list(self.what)
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class DiffStats:
    """Counts of a diff: changes by kind, file bytes added and removed, and how
    many directories were read and skipped (equal content blocks)."""

    added: int = 0
    removed: int = 0
    modified: int = 0
    type_changed: int = 0
    damaged: int = 0
    added_bytes: int = 0
    removed_bytes: int = 0
    dirs_read: int = 0
    dirs_skipped: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        """How many paths differ (damage not counted)."""
        return self.added + self.removed + self.modified + self.type_changed

    def count(self, c: Change) -> None:
        """Add `c` to the counts."""
        if c.kind == ADDED:
            self.added += 1
            self.added_bytes += c.new.size if c.new is not None and c.new.is_file else 0
        elif c.kind == REMOVED:
            self.removed += 1
            self.removed_bytes += c.old.size if c.old is not None and c.old.is_file else 0
        elif c.kind == MODIFIED:
            self.modified += 1
            if "content" in c.what:
                self.added_bytes += c.new.size
                self.removed_bytes += c.old.size
        elif c.kind == TYPE_CHANGED:
            self.type_changed += 1
            self.added_bytes += c.new.size if c.new.is_file else 0
            self.removed_bytes += c.old.size if c.old.is_file else 0
        elif c.kind == DAMAGED:
            self.damaged += 1
            self.problems.append(f"{c.path}: {c.error}")

    def to_json(self) -> dict:
        """The counts as a JSON object."""
        out = asdict(self)
        del out["problems"]
        return out


def _meta_aspects(a: Dirent, b: Dirent, ctime: bool) -> list[str]:
    ma, mb = a.meta, b.meta
    if ma == mb:
        return []
    out = []

    def get(m, k):
        return getattr(m, k) if m is not None else None

    if get(ma, "mode") != get(mb, "mode"):
        out.append("mode")
    if any(get(ma, k) != get(mb, k) for k in ("uid", "gid", "user", "group")):
        out.append("owner")
    if get(ma, "mtime_ns") != get(mb, "mtime_ns"):
        out.append("mtime")
    if ctime and get(ma, "ctime_ns") != get(mb, "ctime_ns"):
        out.append("ctime")
    if (get(ma, "xattrs") or ()) != (get(mb, "xattrs") or ()):
        out.append("xattrs")
    return out


def compare_dirents(a: Dirent, b: Dirent, ctime: bool = False) -> tuple[str, ...]:
    """The aspects (`ASPECTS`) in which dirents `a` and `b` of one path differ;
    a directory's `content` (its entries) is not among them."""
    if a.type != b.type:
        return ("type",)
    out = []
    if a.type != T_DIR and a.block != b.block:
        out.append("content")
    out += _meta_aspects(a, b, ctime)
    if a.target != b.target:
        out.append("target")
    if a.rdev != b.rdev:
        out.append("device")
    if a.ino != b.ino:
        out.append("link")
    return tuple(out)


class TreeDiff:
    """Compares trees of one store (or of two: `store_b` for the new side)."""

    def __init__(self, store, store_b=None, ctime: bool = False):
        self.store = store
        self.store_b = store_b if store_b is not None else store
        self.ctime = ctime
        self.stats = DiffStats()

    def changes(self, a: Dirent, b: Dirent, path: str = ".") -> Iterator[Change]:
        """Every `Change` from tree `a` (old) to tree `b` (new), in path order;
        also counted in `self.stats`."""
        stack: list[Iterator] = [iter(self._pair(path, a, b, top=True))]
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
                continue
            change, below = item
            if change is not None:
                self.stats.count(change)
                yield change
            if below is not None:
                stack.append(iter(below))

    # each of these yields (change or None, iterable of more such items or None)

    def _pair(self, path: str, a: Dirent, b: Dirent, top: bool = False):
        what = compare_dirents(a, b, self.ctime)
        if "type" in what:
            yield Change(TYPE_CHANGED, path, a, b, what), None
            if a.is_dir:
                yield None, self._whole(REMOVED, path, a, self.store, skip_top=True)
            if b.is_dir:
                yield None, self._whole(ADDED, path, b, self.store_b, skip_top=True)
            return
        if what:
            yield Change(MODIFIED, path, a, b, what), None
        if a.is_dir:
            if a.block == b.block:
                self.stats.dirs_skipped += 1
                return
            yield None, self._entries(path if not top else "", a, b)

    def _listing(self, path: str, d: Dirent, store) -> tuple[list[bytes] | None, Change | None]:
        """(the binary entries of directory `d` in order, None) or, when it
        cannot be read, (None, the damage change)."""
        if d.block is None:
            return [], None
        self.stats.dirs_read += 1
        try:
            return raw_entries(read_dir_data(d.block, store)), None
        except (VTError, KeyError) as e:
            return None, Change(DAMAGED, path or ".", None, d, error=str(e) or type(e).__name__)

    def _entries(self, prefix: str, a: Dirent, b: Dirent):
        old, damage = self._listing(prefix, a, self.store)
        new = None
        if old is not None:
            new, damage = self._listing(prefix, b, self.store_b)
        if damage is not None:
            yield damage, None
            return
        # an entry in both listings, octet for octet, is the same object down to
        # its content: only the others are decoded
        in_old, in_new = set(old), set(new)
        self.stats.dirs_skipped += sum(1 for r in old if r in in_new and r[:1] == _DIR_TYPE)
        try:
            gone = {
                fsenc(e.name): e for e in map(decode_dirent, (r for r in old if r not in in_new))
            }
            came = {
                fsenc(e.name): e for e in map(decode_dirent, (r for r in new if r not in in_old))
            }
        except VTError as e:
            yield Change(DAMAGED, prefix or ".", None, b, error=str(e)), None
            return
        for key in sorted(gone.keys() | came.keys()):
            da, db = gone.get(key), came.get(key)
            name = (db or da).name
            sub = f"{prefix}/{name}" if prefix else name
            if da is None:
                yield None, self._whole(ADDED, sub, db, self.store_b)
            elif db is None:
                yield None, self._whole(REMOVED, sub, da, self.store)
            else:
                yield None, self._pair(sub, da, db)

    def _whole(self, kind: str, path: str, d: Dirent, store, skip_top: bool = False):
        """`kind` for `d` at `path` and everything below it."""
        pending: list[Change] = []

        def entries(dd: Dirent, p: str) -> Iterable[Dirent]:
            self.stats.dirs_read += 1
            try:
                return dir_entries(dd, store)
            except (VTError, KeyError) as e:
                pending.append(Change(DAMAGED, p or ".", None, dd, error=str(e)))
                return []

        prefix = "" if path == "." else path
        for p, e in walk(d, store, prefix, entries=entries):
            if not (skip_top and p == prefix):
                old, new = (e, None) if kind == REMOVED else (None, e)
                yield Change(kind, p or ".", old, new), None
            while pending:
                yield pending.pop(0), None
        while pending:  # the listing of the last directory walked
            yield pending.pop(0), None


def raw_entries(data) -> list[bytes]:
    """The binary dirents of directory data, in order, without decoding them
    (chaff skipped).  Order and names are checked when an entry is decoded."""
    r = Reader(data)
    version = r.varint()
    if version != DIR_VERSION:
        raise FormatError(f"unknown directory format version {version}")
    flags = r.varint()
    if flags & ~DF_SALTED:
        raise FormatError(f"unknown directory flags 0x{flags:x} at offset 1")
    if flags & DF_SALTED:
        r.lbytes()
    out = []
    append = out.append
    while not r.at_end():
        raw = r.lbytes()
        if raw:
            append(bytes(raw))
        else:
            r.lbytes()  # chaff
    return out


def diff_trees(a: Dirent, b: Dirent, store, store_b=None, ctime: bool = False):
    """(list of `Change`s, `DiffStats`) from tree `a` to tree `b`."""
    d = TreeDiff(store, store_b, ctime)
    changes = list(d.changes(a, b))
    return changes, d.stats
