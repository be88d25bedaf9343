"""Naming things on the command line: archives, dirent refs, block refs, sub-paths.

A SPECIAL is one of:

- `PATH.vt`: an archive file (its latest state unless a time is given);
- a dirent transcription `D{...}`, `F{...}`, ... as printed by `vt save -F`;
- a block transcription `B{...}`, `I{...}`, ... as printed by `vt save`;
- an `x-vt:/REF/path` URI as printed by `vt publish`;
- `[clause]NAME`: the archive NAME kept by the store of that config clause;

each optionally followed by `/sub/path` into a directory.

A hard-linked file keeps its content in its first name only (the others are
hard-link dirents naming its inode group), and that name may lie outside the
sub-path asked for.  So a target inside a tree carries a `LinkResolver` over
the whole tree (the state's top, or the dirent ref), and a path naming a hard
link resolves to the group's file under the link's name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vtstore.archive import Archive, ArchiveEntry, archive_in
from vtstore.blocks import Block
from vtstore.errors import FormatError, VTError
from vtstore.transcribe import parse
from vtstore.tree.dir import resolve
from vtstore.tree.dirent import T_HARDLINK, Dirent
from vtstore.tree.links import LinkResolver


@dataclass
class Target:
    """What a SPECIAL names."""

    dirent: Dirent | None = None
    block: Block | None = None
    archive: Archive | None = None
    entry: ArchiveEntry | None = None
    #: the hard-link groups of the whole tree the target lies in (None for a block)
    links: LinkResolver | None = None

    @property
    def content_block(self) -> Block | None:
        if self.block is not None:
            return self.block
        return self.dirent.block if self.dirent is not None else None


def parse_ref(text: str) -> tuple[object, str]:
    """Parse a transcribed ref and return `(value, rest-of-text)`."""
    if text.startswith("x-vt:"):
        text = text[len("x-vt:") :].lstrip("/")
    value, end = parse(text)
    if not isinstance(value, Dirent | Block):
        raise FormatError(f"not a dirent or block ref: {text[:60]!r}")
    rest = text[end:]
    if rest and not rest.startswith("/"):
        raise FormatError(f"unexpected text after the ref at offset {end}: {rest[:40]!r}")
    return value, rest


def is_ref_text(text: str) -> bool:
    """Whether `text` looks like a transcription rather than a path."""
    head = text.split("{", 1)[0]
    return text.startswith("x-vt:") or ("{" in text and head.isidentifier())


def split_archive_path(text: str) -> tuple[str, str]:
    """`X.vt/inner/path` -> (`X.vt`, `inner/path`); raise unless it names a `.vt` file."""
    path, inner = text, ""
    if ".vt/" in text:
        path, _, inner = text.partition(".vt/")
        path += ".vt"
    if not path.endswith(".vt"):
        raise VTError(f"{text}: not an archive (.vt file) or a ref")
    return path, inner


def archive_of(text: str, store) -> tuple[Archive, str]:
    """The archive a SPECIAL names and the path inside it.

    `[clause]NAME[/path]` is the archive NAME kept by the store (a datadir keeps
    `NAME.vt` beside its data); anything else is an `X.vt[/path]` file path.
    """
    if text.startswith("["):
        clause, sep, rest = text[1:].partition("]")
        name, _, inner = rest.partition("/")
        if not sep or not clause or not name:
            raise VTError(f"{text}: a named archive is written [clause]NAME")
        path_of = getattr(store, "archive_path", None)
        if path_of is None:
            raise VTError(f"{text}: store {store.name} keeps no named archives")
        return archive_in(str(path_of(name)), store), inner
    path, inner = split_archive_path(text)
    return archive_in(path, store), inner


def use_clause_of(args, special: str | None) -> None:
    """For a `[clause]NAME` special with no -S, make the clause the command's store."""
    if special and special.startswith("[") and "]" in special and not args.store_spec:
        args.store_spec = special[: special.index("]") + 1]


def resolve_special(
    text: str, store, when: float | None = None, need_archive: bool = False
) -> Target:
    """Resolve a SPECIAL (see the module docstring) to a `Target`."""
    if is_ref_text(text) and not need_archive:
        value, rest = parse_ref(text)
        if isinstance(value, Block):
            if rest.strip("/"):
                raise FormatError("a block ref has no paths below it; use a dirent ref")
            return Target(block=value)
        links = LinkResolver(value, store)
        d = resolve(value, rest, store) if rest.strip("/") else value
        return Target(dirent=_file_of(d, links, text), links=links)
    archive, sub = archive_of(text, store)
    path = archive.path
    if not os.path.exists(path):
        raise VTError(f"{text}: no such archive")
    entry = archive.at(when) if when is not None else archive.last()
    if entry is None:
        raise VTError(f"{path}: archive has no states" + (" at that time" if when else ""))
    links = LinkResolver(entry.dirent, store)
    d = resolve(entry.dirent, sub, store) if sub.strip("/") else entry.dirent
    return Target(dirent=_file_of(d, links, text), archive=archive, entry=entry, links=links)


def _file_of(d: Dirent, links: LinkResolver, text: str) -> Dirent:
    """A hard-link dirent as its group's file under the link's name; others as they are."""
    if d.type != T_HARDLINK:
        return d
    try:
        return links.resolve_link(d)
    except FormatError as e:
        raise FormatError(f"{text}: {e}") from None
