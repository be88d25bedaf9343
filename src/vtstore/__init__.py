"""vtstore: a content-hash-addressed data store with a filesystem layer.

Data is cut into variable sized blocks by a content-defined chunker, each block is
stored once under its hash, files and directories are hash trees, and archives log
the history of a tree.  See docs/ for the formats and the `vt` manual.
"""

__version__ = "0.1.0"
