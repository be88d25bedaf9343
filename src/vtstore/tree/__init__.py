"""Trees: dirents, metadata, directories, and import/export of real filesystems."""

from vtstore.tree.dirent import (
    DeviceDirent,
    DirDirent,
    Dirent,
    FifoDirent,
    FileDirent,
    HardLinkDirent,
    SocketDirent,
    SymlinkDirent,
    WhiteoutDirent,
    decode_dirent,
    parse_dirent,
)
from vtstore.tree.meta import Meta

__all__ = [
    "Dirent",
    "FileDirent",
    "DirDirent",
    "SymlinkDirent",
    "HardLinkDirent",
    "DeviceDirent",
    "FifoDirent",
    "SocketDirent",
    "WhiteoutDirent",
    "Meta",
    "decode_dirent",
    "parse_dirent",
]
