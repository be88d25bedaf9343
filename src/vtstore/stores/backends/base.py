"""The backend interface: a flat namespace of immutable objects.

A backend is where a store's bytes live: a local directory, an S3 bucket.  It
knows nothing of blocks, packs or indexes; the stores built on it
(`vtstore.stores.backends.packs`, `vtstore.stores.backends.objects`) do.  The
interface is restic's: put an object whole, get it whole or a range of it, stat,
list by prefix, delete, and a conditional create (`put_if_absent`) so that
writers on different machines never overwrite each other.  Retries are not a
backend's business: `Retrying` wraps any backend with them.

Names are `/`-separated relative paths of printable ASCII without `..`
components; a backend rejects anything else (`check_name`), so a hostile index
or archive name cannot reach outside the store.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

from vtstore.errors import StoreError

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9._+=@,-]+(/[A-Za-z0-9._+=@,-]+)*")


class BackendError(StoreError):
    """A backend operation failed (after its retries, if it is retried)."""

    #: whether trying again may help (a dropped connection, a 5xx answer)
    transient: bool = False


class TransientBackendError(BackendError):
    """A failure that may go away: connection refused or reset, a timeout, a
    server error.  `Retrying` tries again after these only."""

    transient = True


class AccessDeniedError(BackendError):
    """The server refused the credentials or the operation (HTTP 401/403):
    wrong or expired keys, a read-only key, a bucket policy."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What `stat` and `list` say about an object; `mtime`, when the backend
    tells it, is when the object was written (seconds since the epoch, by the
    server's clock)."""

    name: str
    size: int
    mtime: float | None = None


def check_name(name: str) -> str:
    """Return `name` if it is an acceptable object name, else raise ValueError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > 512:
        raise ValueError(f"bad object name {name!r:.80}")
    if any(part in (".", "..") for part in name.split("/")):
        raise ValueError(f"bad object name {name!r:.80}")
    return name


class Backend:
    """Abstract base of the backends.  Every method may be called from several
    threads at once.  Objects are immutable: `put` is for names that are
    unique to their writer (or whose content is fixed by the name), and
    `put_if_absent` for names another writer may race for."""

    #: a short text naming the place, for messages (`s3://bucket/prefix`, a path)
    url: str = "?"

    def put(self, name: str, data) -> None:
        """Store `data` (any buffer) as object `name`, replacing any old one."""
        raise NotImplementedError

    def put_if_absent(self, name: str, data) -> bool:
        """Store `data` as `name` unless an object of that name exists; return
        whether this call created it.  Atomic against other writers."""
        raise NotImplementedError

    def get(self, name: str) -> bytes | None:
        """The whole object, or None if there is none of that name."""
        raise NotImplementedError

    def get_range(self, name: str, start: int, end: int) -> bytes:
        """Octets `[start, end)` of object `name` (fewer if it ends sooner);
        raises `BackendError` if the object does not exist."""
        raise NotImplementedError

    def stat(self, name: str) -> ObjectInfo | None:
        """The object's size, or None if it does not exist."""
        raise NotImplementedError

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        """The objects whose names begin with `prefix`, in ascending name
        order, beginning after `start_after` if given."""
        raise NotImplementedError

    def delete(self, name: str) -> None:
        """Remove object `name` (no error if it is gone already)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections and threads."""


class Retrying(Backend):
    """A backend that retries the transient failures of another, with
    exponential back-off and jitter, for at most `max_time` seconds a call.

    A `put_if_absent` retried after a lost answer may find the object its first
    attempt created: the names it is used for are unique to their writer, so
    it then reports success (see `put_if_absent`)."""

    def __init__(
        self,
        inner: Backend,
        max_time: float = 60.0,
        base: float = 0.1,
        cap: float = 5.0,
        first_time: float = 10.0,
    ):
        self.inner = inner
        self.url = inner.url
        self.max_time = max_time
        #: until a first call has succeeded, retries stop after this long: a
        #: server that was never reached (a wrong endpoint, no network) is one
        #: error in seconds, not a minute of silence; once reached, an outage
        #: (a restart) is waited out for `max_time`
        self.first_time = min(first_time, max_time)
        self.reached = False
        self.base = base
        self.cap = cap
        #: how many retries were made (for tests and `info`)
        self.retries = 0

    def _call(self, what: str, fn, *args):
        budget = self.max_time if self.reached else self.first_time
        deadline = time.monotonic() + budget
        delay = self.base
        while True:
            try:
                out = fn(*args)
                self.reached = True
                return out
            except TransientBackendError as e:
                left = deadline - time.monotonic()
                if left <= 0:
                    never = "" if self.reached else ", never reached"
                    raise BackendError(
                        f"{e} (gave up after {budget:g} s of retries{never})"
                    ) from None
                self.retries += 1
                pause = min(delay * (0.5 + random.random()), left, self.cap)
                log.info("%s %s failed (%s); retrying in %.1f s", what, args[0], e, pause)
                time.sleep(pause)
                delay = min(delay * 2, self.cap)

    def put(self, name, data):
        return self._call("put", self.inner.put, name, data)

    def put_if_absent(self, name, data):
        return self._call("put", self.inner.put_if_absent, name, data)

    def get(self, name):
        return self._call("get", self.inner.get, name)

    def get_range(self, name, start, end):
        return self._call("get", self.inner.get_range, name, start, end)

    def stat(self, name):
        return self._call("stat", self.inner.stat, name)

    def list(self, prefix="", start_after=None):
        # a listing is retried whole, then handed out: callers see no repeats
        return iter(self._call("list", lambda p: list(self.inner.list(p, start_after)), prefix))

    def delete(self, name):
        return self._call("delete", self.inner.delete, name)

    def close(self):
        self.inner.close()
