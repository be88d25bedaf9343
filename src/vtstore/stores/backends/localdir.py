"""A backend in a local directory: one file per object.

Objects are written with `vtstore.fileio.write_durably` (a temporary file,
fsync, rename or link, directory fsync), so a crash leaves an object whole or
absent; `put_if_absent` links, so of two racing writers exactly one wins.  It
serves the pack layer's fast tests and any store kept on a mounted file system
(NFS, a USB disk) in the object layouts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from vtstore.fileio import write_durably
from vtstore.stores.backends.base import Backend, BackendError, ObjectInfo, check_name


class LocalDirBackend(Backend):
    """Objects as files under `root` (created on the first write)."""

    def __init__(self, root):
        self.root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        self.url = self.root

    def _path(self, name: str) -> str:
        return os.path.join(self.root, check_name(name))

    def _fail(self, what: str, name: str, e: OSError) -> BackendError:
        return BackendError(f"{self.url}: {what} {name}: {e.strerror or e}")

    def put(self, name, data) -> None:
        try:
            write_durably(self._path(name), data, replace=True)
        except OSError as e:
            raise self._fail("writing", name, e) from None

    def put_if_absent(self, name, data) -> bool:
        try:
            write_durably(self._path(name), data, replace=False)
        except FileExistsError:
            return False
        except OSError as e:
            raise self._fail("writing", name, e) from None
        return True

    def get(self, name) -> bytes | None:
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise self._fail("reading", name, e) from None

    def get_range(self, name, start, end) -> bytes:
        try:
            with open(self._path(name), "rb") as f:
                return os.pread(f.fileno(), max(0, end - start), start)
        except OSError as e:
            raise self._fail("reading", name, e) from None

    def stat(self, name) -> ObjectInfo | None:
        try:
            st = os.stat(self._path(name))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise self._fail("stat of", name, e) from None
        return ObjectInfo(name, st.st_size, st.st_mtime)

    def list(self, prefix="", start_after=None) -> Iterator[ObjectInfo]:
        out = []
        for dirpath, dirs, files in os.walk(self.root):
            dirs.sort()
            rel = os.path.relpath(dirpath, self.root)
            rel = "" if rel == "." else rel + "/"
            for f in files:
                name = rel + f
                if f.startswith(".") or not name.startswith(prefix):
                    continue  # write_durably's temporary files begin with a dot
                if start_after is not None and name <= start_after:
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, f))
                except FileNotFoundError:
                    continue
                out.append(ObjectInfo(name, st.st_size, st.st_mtime))
        out.sort(key=lambda o: o.name)
        return iter(out)

    def delete(self, name) -> None:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise self._fail("deleting", name, e) from None
