"""Naming things on the command line: archives, dirent refs, block refs, sub-paths.

A SPECIAL is one of:

- `PATH.vt`: an archive file (its latest state unless a time is given);
- a dirent transcription `D{...}`, `F{...}`, ... as printed by `vt save -F`;
- a block transcription `B{...}`, `I{...}`, ... as printed by `vt save`;
- an `x-vt:/REF/path` URI as printed by `vt publish`;
- `[clause]NAME`: the archive NAME kept by the store of that config clause;

each optionally followed by `/sub/path` into a directory.  An archive (`X.vt`
or `[clause]NAME`) may be followed by a state selector, `X.vt@SEL/sub/path`
(see `vtstore.archive.select_state`): `@latest`, `@-2` (the one before the
latest), `@0` (the oldest), `@1f3a` (a state ID prefix), `@2026-12-01` or
`@2026-12-01T10:00` (the last state made then or before, local time unless
`Z`).  An archive file whose own name holds `X.vt@...` is still that file: a
path that exists on disk wins over a selector.

A hard-linked file keeps its content in its first name only (the others are
hard-link dirents naming its inode group), and that name may lie outside the
sub-path asked for.  So a target inside a tree carries a `LinkResolver` over
the whole tree (the state's top, or the dirent ref), and a path naming a hard
link resolves to the group's file under the link's name.
"""

from __future__ import annotations

from vtstore.errors import FormatError, VTError

# The archive, block and tree modules are imported where used: every command
# module imports this one, and `vt CMD --help` should not load them (nor typing).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from vtstore.archive import Archive, ArchiveEntry
    from vtstore.blocks import Block
    from vtstore.tree.dirent import Dirent
    from vtstore.tree.links import LinkResolver


class Target:
    """What a SPECIAL names: a dirent or a block, and for a state of an archive
    the archive and the state; `links`: the hard-link groups of the whole tree
    the target lies in (None for a block)."""

    __slots__ = ("dirent", "block", "archive", "entry", "links")

    def __init__(
        self,
        dirent: Dirent | None = None,
        block: Block | None = None,
        archive: Archive | None = None,
        entry: ArchiveEntry | None = None,
        links: LinkResolver | None = None,
    ):
        self.dirent = dirent
        self.block = block
        self.archive = archive
        self.entry = entry
        self.links = links

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"Target({fields})"

    @property
    def content_block(self) -> Block | None:
        if self.block is not None:
            return self.block
        return self.dirent.block if self.dirent is not None else None


def parse_ref(text: str) -> tuple[object, str]:
    """Parse a transcribed ref and return `(value, rest-of-text)`.

    `x-vt:/REF/path` and `x-vt://HOST:PORT/REF/path` (whose host
    `use_clause_of` makes the store) give the REF and path; a URI copied from
    a browser, with the ref percent-encoded (`D%7B...`), is decoded first."""
    if text.startswith("x-vt:"):
        text = text[len("x-vt:") :]
        if text.startswith("//"):  # an authority: the server, not part of the ref
            text = "/" + text[2:].partition("/")[2]
        text = text.lstrip("/")
        if "{" not in text.split("/", 1)[0] and "%7b" in text[:8].lower():
            from urllib.parse import unquote

            text = unquote(text)
    from vtstore.blocks import Block
    from vtstore.transcribe import parse

    try:
        value, end = parse(text)
    except FormatError:
        # The dirent forms (D{...}, F{...}, ...) join the parser when tree.dirent
        # is imported: only now, so that `vt cat BLOCK` loads no tree code.
        from vtstore.tree import dirent  # noqa: F401

        value, end = parse(text)
    if not isinstance(value, Block):
        from vtstore.tree.dirent import Dirent

        if not isinstance(value, Dirent):
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
        if ".vt@" in text:
            raise VTError(f"{text}: this command takes a whole archive, not one state (@...)")
        raise VTError(f"{text}: not an archive (.vt file) or a ref")
    return path, inner


def archive_of(text: str, store) -> tuple[Archive, str]:
    """The archive a SPECIAL names and the path inside it.

    `[clause]NAME[/path]` is the archive NAME kept by the store, whatever its
    kind (`vtstore.named_archives.open_archive`: a datadir's `NAME.vt`, a block
    server's archive, ...; it need not exist yet); anything else is an
    `X.vt[/path]` file path.
    """
    if text.startswith("["):
        from vtstore.named_archives import open_archive

        clause, sep, rest = text[1:].partition("]")
        name, _, inner = rest.partition("/")
        if not sep or not clause or not name:
            raise VTError(f"{text}: a named archive is written [clause]NAME")
        return open_archive(store, name, create=True), inner
    from vtstore.archive import archive_in

    path, inner = split_archive_path(text)
    return archive_in(path, store), inner


def use_clause_of(args, special: str | None) -> None:
    """For a `[clause]NAME` special with no -S, make the clause the command's
    store; for an `x-vt://HOST:PORT/...` URI with no -S, that host's `vt httpd`
    (`http://HOST:PORT/`)."""
    if not special or args.store_spec:
        return
    if special.startswith("[") and "]" in special:
        args.store_spec = special[: special.index("]") + 1]
    elif special.startswith("x-vt://"):
        host = special[len("x-vt://") :].split("/", 1)[0]
        if not host:
            raise VTError(f"{special[:60]}: say x-vt://HOST:PORT/REF/path")
        args.store_spec = f"http://{host}/"


def split_selector(text: str) -> tuple[str, str | None]:
    """`X.vt@SEL/path` -> (`X.vt/path`, `SEL`), `[c]NAME@SEL/path` -> (`[c]NAME/path`,
    `SEL`); a SPECIAL without a selector -> (`text`, None).  Only the first
    `.vt@` of a file path counts: a `@` further down the path is a file name's."""
    if is_ref_text(text) and not text.startswith("["):
        return text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return text, None
        name, slash, inner = text[end + 1 :].partition("/")
        if "@" not in name:
            return text, None
        name, _, sel = name.partition("@")
        return text[: end + 1] + name + slash + inner, sel
    i = text.find(".vt@")
    if i < 0:
        return text, None
    sel, slash, inner = text[i + 4 :].partition("/")
    return text[: i + 3] + slash + inner, sel


def archive_target(text: str, store) -> tuple[Archive, str, str | None]:
    """The archive a SPECIAL names, the path inside it, and its state selector
    (None: none given).  A real archive whose name holds the `@` wins."""
    plain, sel = split_selector(text)
    if sel is not None:
        try:
            archive, inner = archive_of(text, store)
        except VTError:
            pass
        else:
            if archive.exists():
                return archive, inner, None
    archive, inner = archive_of(plain, store)
    return archive, inner, sel


def select_entry(archive, sel: str | None, when: float | None = None, text: str = ""):
    """The state of `archive` that selector `sel` (else time `when`, else the
    latest) names; raise a `VTError` naming `text` when there is none."""
    if sel is not None and when is not None:
        raise VTError(f"{text or archive.path}: give a state either as @{sel} or by time, not both")
    if sel is not None:
        from vtstore.archive import select_state

        return select_state(list(archive.entries()), sel, archive.path)
    entry = archive.at(when) if when is not None else archive.last()
    if entry is None:
        raise VTError(f"{archive.path}: archive has no states" + (" at that time" if when else ""))
    return entry


def archive_state(text: str, store, when: float | None = None):
    """(archive, selected state, inner path) for an archive SPECIAL with an
    optional `@SEL`; the archive must exist and hold the state."""
    archive, inner, sel = archive_target(text, store)
    if not archive.exists():
        shown = text
        if sel is not None:  # the archive, without the selector and the path after it
            plain = split_selector(text)[0]
            shown = plain[: len(plain) - len(inner)].rstrip("/") if inner else plain
        raise VTError(f"{shown}: no such archive")
    return archive, select_entry(archive, sel, when, text), inner


def resolve_special(
    text: str, store, when: float | None = None, need_archive: bool = False
) -> Target:
    """Resolve a SPECIAL (see the module docstring) to a `Target`."""
    from vtstore.blocks import Block

    archive = entry = None
    if is_ref_text(text) and not need_archive:
        top, rest = parse_ref(text)
        if isinstance(top, Block):
            if rest.strip("/"):
                raise FormatError("a block ref has no paths below it; use a dirent ref")
            return Target(block=top)
    else:
        archive, entry, rest = archive_state(text, store, when)
        top = entry.dirent
    # not before: `vt cat BLOCK` needs no directory code
    from vtstore.tree.dir import resolve
    from vtstore.tree.links import LinkResolver

    links = LinkResolver(top, store)
    d = resolve(top, rest, store) if rest.strip("/") else top
    return Target(dirent=_file_of(d, links, text), archive=archive, entry=entry, links=links)


def _file_of(d: Dirent, links: LinkResolver, text: str) -> Dirent:
    """A hard-link dirent as its group's file under the link's name; others as they are."""
    from vtstore.tree.dirent import T_HARDLINK

    if d.type != T_HARDLINK:
        return d
    try:
        return links.resolve_link(d)
    except FormatError as e:
        raise FormatError(f"{text}: {e}") from None
