"""Content-defined chunking: cut data into blocks, helped by file formats.

- `Chunker`, `cut_offsets`: the native gear-hash chunker (`_cdc`, C, GIL
  released), FastCDC-style with normalised chunking; see docs/CHUNKING.md;
- `ChunkParams`: min/avg/max sizes, recorded per store;
- `vtstore.chunking.scanners`: format scanners that propose boundary offsets,
  and `scanner_for` (type detection by name, MIME type and first bytes);
- `blockify`: bytes, a file or a stream in, leaf blocks into a store, the top
  block out.
"""

from vtstore.chunking._cdc import Chunker, cut_offsets, gear_table, run_byte

# last: it needs the names above (and shadows its own module name with the function)
from vtstore.chunking.blockify import BlockifyStats, blockify, chunks_of  # noqa: E402
from vtstore.chunking.params import DEFAULT_PARAMS, ChunkParams

__all__ = [
    "BlockifyStats",
    "Chunker",
    "ChunkParams",
    "DEFAULT_PARAMS",
    "blockify",
    "chunks_of",
    "cut_offsets",
    "gear_table",
    "run_byte",
]
