"""The control layer: operations on a working tree (`WorkTree`), shared by
`vt ftp`, `vt ctl` and the mount's controls."""

from vtstore.control.worktree import ControlError, WorkTree

__all__ = ["ControlError", "WorkTree"]
