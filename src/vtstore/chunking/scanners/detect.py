"""Type detection: which scanner suits a file.

By file name (extension, also inside rsync temporary names such as
`.name.mp4.Ab12Cd`), else by MIME type (e.g. the `user.mime_type` xattr),
else by sniffing the first bytes.  The result is a scanner class (call it
with the `ChunkParams`) or None for "no format known: hash cuts only".
"""

from __future__ import annotations

import os
import re

from vtstore.chunking.scanners.gzip import GzipScanner, is_member_start
from vtstore.chunking.scanners.mail import EmailScanner, MboxScanner
from vtstore.chunking.scanners.mp3 import MP3Scanner, frame_length
from vtstore.chunking.scanners.mp4 import MP4Scanner
from vtstore.chunking.scanners.tar import TarScanner, _checksum_ok
from vtstore.chunking.scanners.text import TextScanner
from vtstore.chunking.scanners.vtd import VTDScanner
from vtstore.chunking.scanners.zip import ZipScanner

__all__ = ["SCANNERS", "scanner_for", "scanner_by_name", "real_name", "SNIFF_BYTES"]

#: how many leading bytes `scanner_for` wants for sniffing
SNIFF_BYTES = 1024

SCANNERS = {
    cls.name: cls
    for cls in (
        MP4Scanner,
        MP3Scanner,
        MboxScanner,
        EmailScanner,
        TarScanner,
        ZipScanner,
        TextScanner,
        VTDScanner,
        GzipScanner,
    )
}

_TEXT_EXT = (
    "py pyi pyx pxd c h cc cpp cxx hpp hh m mm go rs java kt kts scala swift js mjs cjs"
    " ts tsx jsx rb pl pm php lua sh bash zsh fish ps1 r jl ex exs erl hrl hs ml mli fs"
    " fsx cs vb dart nim zig v sv vhd tcl el lisp clj cljs scm rkt sql proto thrift"
    " txt md rst org tex adoc csv tsv json yaml yml toml ini cfg conf xml html htm css"
    " scss sass less svg diff patch mk cmake gradle"
).split()

_BY_EXT: dict[str, str] = {
    **{e: "mp4" for e in "mp4 m4a m4v m4b m4p mov qt 3gp 3g2 mj2 heic heif avif f4v".split()},
    "mp3": "mp3",
    "mp2": "mp3",
    **{e: "mbox" for e in "mbox mbx mbs".split()},
    **{e: "email" for e in "eml msg mht".split()},
    "tar": "tar",
    **{
        e: "zip"
        for e in "zip jar war ear apk aar whl egg xpi docx xlsx pptx odt ods odp epub kmz"
        " ipa nupkg vsix".split()
    },
    **{e: "gzip" for e in "gz tgz bgz bgzf".split()},
    "vtd": "vtd",
    **{e: "text" for e in _TEXT_EXT},
}
_BY_BASENAME = {"mbox": "mbox", "makefile": "text", "dockerfile": "text", "readme": "text"}

_BY_MIME: dict[str, str] = {
    **{
        m: "mp4"
        for m in (
            "video/mp4",
            "audio/mp4",
            "audio/x-m4a",
            "audio/m4a",
            "video/x-m4v",
            "video/quicktime",
            "video/3gpp",
            "video/3gpp2",
            "audio/3gpp",
            "image/heic",
            "image/heif",
            "image/avif",
            "application/mp4",
        )
    },
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/x-mpeg": "mp3",
    "application/mbox": "mbox",
    "application/x-mbox": "mbox",
    "message/rfc822": "email",
    "application/x-tar": "tar",
    "application/x-gtar": "tar",
    "application/x-ustar": "tar",
    "application/zip": "zip",
    "application/x-zip-compressed": "zip",
    "application/java-archive": "zip",
    "application/epub+zip": "zip",
    "application/gzip": "gzip",
    "application/x-gzip": "gzip",
    "application/x-vtd": "vtd",
    "application/json": "text",
    "application/javascript": "text",
    "application/xml": "text",
    "application/x-sh": "text",
}

# ".name.ext.XXXXXX": rsync's temporary name for name.ext
_RSYNC_TEMP = re.compile(r"^\.(.+)\.[A-Za-z0-9_]{6}$")


def real_name(name: str) -> str:
    """The name a file will have: strips rsync's `.NAME.XXXXXX` temporary wrapping."""
    base = os.path.basename(name)
    m = _RSYNC_TEMP.match(base)
    if m and "." in m.group(1):
        return m.group(1)
    return base


def _by_name(name: str) -> str | None:
    base = real_name(name).lower()
    if base in _BY_BASENAME:
        return _BY_BASENAME[base]
    if base.endswith((".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst")):
        return "gzip" if base.endswith(".gz") else None
    _, dot, ext = base.rpartition(".")
    return _BY_EXT.get(ext) if dot else None


def _by_mime(mime_type: str) -> str | None:
    m = mime_type.split(";", 1)[0].strip().lower()
    if m in _BY_MIME:
        return _BY_MIME[m]
    if m.startswith("text/"):
        return "text"
    if m.endswith("+zip"):
        return "zip"
    if m.endswith(("+xml", "+json")):
        return "text"
    return None


_MAIL_HEADER = re.compile(rb"^[A-Za-z][A-Za-z0-9-]*: ")
_MAIL_NAMES = (b"received:", b"return-path:", b"message-id:", b"from:", b"date:", b"subject:")


def _sniff(head: bytes) -> str | None:
    if len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "mp4"
    if head[:3] == b"ID3":
        return "mp3"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        return "zip"
    if len(head) >= 512 and head[257:262] == b"ustar" and _checksum_ok(head[:512]):
        return "tar"
    if head[:5] == b"From ":
        return "mbox"
    if _MAIL_HEADER.match(head) and head.split(b":", 1)[0].lower() + b":" in _MAIL_NAMES:
        return "email"
    n = frame_length(head[:4])
    if n and frame_length(head[n : n + 4]):
        return "mp3"
    if _looks_like_text(head):
        return "text"
    return None


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        # a multi-byte character cut off at the end of the sample is fine
        if e.start < len(head) - 4:
            return False
    printable = sum(1 for c in head if c >= 32 or c in (9, 10, 13))
    return printable >= 0.95 * len(head)


def scanner_by_name(name: str):
    """The scanner class called `name` (as `vt scan` prints it); KeyError if none."""
    return SCANNERS[name]


def scanner_for(name: str | None = None, mime_type: str | None = None, head: bytes = b""):
    """The scanner class for a file, or None if no format is recognised.

    `name`: the file's name or path; `mime_type`: e.g. its `user.mime_type`
    xattr; `head`: its first bytes (up to `SNIFF_BYTES`).  The name wins, then
    the MIME type, then the content.  A gzip guess from the name is checked
    against the content when there is some, since `.gz` is also used for
    single-member files that gain nothing.
    """
    kind = None
    if name:
        kind = _by_name(name)
    if kind is None and mime_type:
        kind = _by_mime(mime_type)
    if kind is None and head:
        kind = _sniff(bytes(head[:SNIFF_BYTES]))
    if kind == "gzip" and head and not is_member_start(bytes(head[:512])):
        return None
    return SCANNERS[kind] if kind else None
