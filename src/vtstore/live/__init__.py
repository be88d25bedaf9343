"""Live trees: following real directories as they change.

`monitor` yields `(rpath, old_state, new_state)` changes of a directory tree
(inotify, or a stat walk where there are no events), debounced so a file being
written is reported when it settles.  `vt watch` (cli/watch.py) records a new
state of an archive after each settled change.  `platonic` is the store
`platonic:/path`: the files of a tree served in place through an index.
"""
