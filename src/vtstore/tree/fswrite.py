"""The restore's writer half: file jobs, batches, a pool of writing threads.

`vtstore.tree.fsexport` walks the tree and decides what is restored and how
(names, limits, damage, hard links, metadata order); this module holds what
writes files' content for it.  The walk plans a file as a `_FileJob` and adds
its pieces to a batch; `FileWriter._flush` reads the batch's stored leaves with
one `store.get_many` (`salvage.fetch_leaves`) and hands each file's pieces, as
one chunk, to a `_Pool` thread (or writes them inline with no threads), which
writes each contiguous run with one `pwrite`/`pwritev` of the fetched buffers
(no copies; holes are skipped).  The bytes read but not yet written and the
files open are bounded (`MAX_IN_FLIGHT`, `MAX_OPEN_FILES`); whoever writes a
file's last chunk finishes it (`Exporter._complete`: metadata, its final name).
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from bisect import bisect_left
from itertools import accumulate

from vtstore.blocks import HashCodeBlock, IndirectBlock, leaf_refs
from vtstore.tree.dirent import T_FILE
from vtstore.tree.salvage import (
    BAD,
    DAMAGE,
    DATA,
    FILL,
    LEAF,
    ZEROS,
    damage_text,
    fetch_leaves,
    iter_content,
    leaf_piece,
)

#: a batch entry: consecutive stored leaves of one file, `(hashcodes, spans)`
#: from one indirect block (no object a leaf); read as one slice of a get_many
RUN = 5
#: a piece to write: buffers written end to end (a RUN, read)
DATAS = 6

_NOFOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
#: errors of the target that stop a restore (going on would only fail again)
FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EMFILE, errno.ENFILE}
#: a batch read with one store.get_many: at most this many leaves...
BATCH_LEAVES = 1024
#: ...or this many bytes of content (one leaf more at most)
BATCH_BYTES = 4 << 20
#: at most this many files (and their pieces) gathered before a batch goes out
BATCH_ENTRIES = 1024
#: bytes read from the store but not yet written, at most (one batch more at most)
MAX_IN_FLIGHT = 8 << 20
#: files handed to the pool and not yet finished, at most (one batch more at most)
MAX_OPEN_FILES = 512
#: threads creating and writing files (0: all in the walking thread)
DEFAULT_THREADS = 2
#: threads reading batches (get_many) beside the walk, when there are writing threads
FETCH_THREADS = 1
#: the top indirect blocks of at most this many files of a directory, of at
#: most this many octets of content in all, are read with one get_many
AHEAD_FILES = 256
AHEAD_SPAN = 1 << 30
_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


class _FileJob:
    """A regular file being restored.  Its content goes out in chunks (one per
    batch it has pieces in), written by the pool in any order; `left` counts the
    chunks not yet written plus one until the walk has planned them all, and
    whoever brings it to 0 sets the metadata, closes and names the file."""

    __slots__ = (
        "frame", "dfd", "name", "tmp", "e", "rel", "replace", "perm", "seq", "size",
        "end", "fd", "left", "lock", "bad", "lost", "failed", "done", "final", "chunks",
    )  # fmt: skip

    def __init__(self, frame, dfd, name, tmp, e, rel, replace, perm, seq):
        self.frame = frame
        self.dfd = dfd
        self.name = name
        self.tmp = tmp
        self.e = e
        self.rel = rel
        self.replace = replace
        self.perm = perm
        self.seq = seq
        self.size = 0
        self.end = 0  # the end of the content written so far
        self.fd = None
        self.left = 1
        self.lock = threading.Lock()
        self.bad: list[tuple[int, str]] = []
        self.lost = 0
        self.failed = False
        self.done = False  # set under the exporter's lock; waited for on its condition
        self.final = name
        self.chunks = 0  # the batches it has pieces in so far (set by the walk)


class _Pool:
    """Writing threads, each with its own queue: work keyed alike runs on one
    thread, in order; work without a key goes round.  A failure in a task is
    handed to `fail` (the tasks catch their own; this is the last resort)."""

    def __init__(self, n: int, fail):
        self.queues = [queue.SimpleQueue() for _ in range(n)]
        self.fail = fail
        self.rr = 0
        self.threads = [
            threading.Thread(target=self._run, args=(q,), name=f"vt-restore-{i}", daemon=True)
            for i, q in enumerate(self.queues)
        ]
        for t in self.threads:
            t.start()

    def submit(self, key, fn, *args) -> None:
        if key is None:
            self.rr += 1
            key = self.rr
        self.queues[key % len(self.queues)].put((fn, args))

    def _run(self, q) -> None:
        while (item := q.get()) is not None:
            try:
                item[0](*item[1])
            except BaseException as err:  # pragma: no cover - the tasks catch theirs
                self.fail(err)

    def shutdown(self) -> None:
        """Finish what was submitted, then stop every thread."""
        for q in self.queues:
            q.put(None)
        for t in self.threads:
            t.join()


class FileWriter:
    """The writing methods of `vtstore.tree.fsexport.Exporter` (a mixin: the state
    they share with the walk, its lock, condition, batch and counts, is set up
    in `Exporter.__init__`; `_complete`, `_finish_dir` and `_os_error` are the
    walk's)."""

    def _drain(self) -> None:
        """Send the last batch and wait until every file is written."""
        self._flush()
        with self._cv:
            while self._jobs_open and self._fatal is None:
                self._cv.wait()
        self._check_fatal()

    def _check_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    def _fail(self, err: BaseException) -> None:
        """Stop the restore at the next step of the walk (the first error wins)."""
        with self._cv:
            if self._fatal is None:
                self._fatal = err
            self._cv.notify_all()

    def _plan_content(self, job: _FileJob, block) -> int:
        """Add the pieces of a file's content `block` to the batch; its span.

        An indirect block whose children are all stored leaves (the level
        above a large file's leaves) goes in as `RUN`s, its refs decoded into
        two lists (`blocks.leaf_refs`) with no object or Python step a leaf;
        anything else (runs, literals, sub-blocks, damage) piece by piece
        through `salvage.iter_content`, which reads past damage."""
        store = self.store
        pos = 0
        stack = [block]
        while stack:
            b = stack.pop()
            if type(b) is HashCodeBlock:  # a small file's one leaf, or a run's stray
                self._add_piece(job, pos, (LEAF, b.span, (b, 0, b.span)))
                pos += b.span
                continue
            if type(b) is IndirectBlock:
                try:
                    refs = leaf_refs(self._indirect_data(b.hashcode, b is block))
                except DAMAGE:
                    refs = False  # iter_content names the damage
                if refs and sum(refs[1]) == b.span:
                    self._add_run(job, pos, refs[0], refs[1])
                    pos += b.span
                    continue
                if refs is None:  # interior: its children (damage: piece by piece)
                    try:
                        stack.extend(reversed(b.subblocks(store)))
                        continue
                    except DAMAGE:
                        pass
            for piece in iter_content(b, store, fetch_leaves=False):
                self._add_piece(job, pos, piece)
                pos += piece[1]
        return pos

    def _indirect_data(self, h, top: bool) -> bytes:
        """The data of indirect block `h`; for a file's top block, read with
        those of the next files of its directory in one `get_many` (a tree of
        many small multi-leaf files otherwise costs a store lookup a file)."""
        ahead = self._ahead
        data = ahead.pop(h, None)
        if data is not None:
            return data
        if top:
            self._read_ahead_indirects(h)
            data = self._ahead.pop(h, None)
            if data is not None:
                return data
        return self.store[h]

    def _read_ahead_indirects(self, h) -> None:
        """Fill `_ahead` with the top indirect blocks of the files from the
        one being planned (top block `h`) on, in its directory: up to
        `AHEAD_FILES` of them, whose files sum to at most `AHEAD_SPAN` octets
        (their indirect blocks are about 1/200 of that)."""
        self._ahead = {}
        get_many = getattr(self.store, "get_many", None)
        f = getattr(self, "_cur", None)
        if get_many is None or f is None:
            return
        hs, span = [], 0
        for e in f.entries[max(f.i - 1, 0) :]:
            b = e.block
            if e.type != T_FILE or type(b) is not IndirectBlock:
                continue
            if hs and (len(hs) >= AHEAD_FILES or span + b.span > AHEAD_SPAN):
                break
            hs.append(b.hashcode)
            span += b.span
        if len(hs) < 2 or hs[0] != h:
            return
        try:
            datas = get_many(hs)
        except DAMAGE:
            return  # read one by one, where the damage is named
        self._ahead = dict(zip(hs, datas, strict=True))

    def _add_piece(self, job: _FileJob, pos: int, piece: tuple) -> None:
        kind, n = piece[0], piece[1]
        self._batch.append((job, pos, *piece))
        if kind == LEAF or kind == DATA:
            self._batch_bytes += n
            self._batch_leaves += kind == LEAF
            if self._batch_leaves >= BATCH_LEAVES or self._batch_bytes >= BATCH_BYTES:
                self._flush()

    def _add_run(self, job: _FileJob, pos: int, hashes: list, spans: list) -> None:
        """Add consecutive leaves at `pos` as RUN entries, cut where a batch fills."""
        acc = list(accumulate(spans, initial=0))  # acc[k]: octets of the first k
        i, n = 0, len(hashes)
        while i < n:
            # the batch is full with leaf j-1 (its bytes or leaves reach the limit)
            j = bisect_left(acc, acc[i] + BATCH_BYTES - self._batch_bytes, i + 1)
            j = max(i + 1, min(j, i + BATCH_LEAVES - self._batch_leaves, n))
            nb = acc[j] - acc[i]
            self._batch.append((job, pos + acc[i], RUN, nb, (hashes[i:j], spans[i:j])))
            self._batch_bytes += nb
            self._batch_leaves += j - i
            if self._batch_leaves >= BATCH_LEAVES or self._batch_bytes >= BATCH_BYTES:
                self._flush()
            i = j

    def _flush(self) -> None:
        """Send the batch out: its stored leaves are read with one get_many and
        each file's pieces handed to the pool as one chunk, by the fetching
        thread (the walk goes on meanwhile) or here with no threads."""
        batch = self._batch
        if not batch:
            return
        nbytes = self._batch_bytes
        self._batch = []
        self._batch_leaves = self._batch_bytes = 0
        # the files this batch holds pieces of, and whether their last (counted
        # here, in the walk's order, before any chunk of theirs can be written)
        last: dict[_FileJob, bool] = {}
        for x in batch:
            if x[1] is None:
                last[x[0]] = True
            elif x[0] not in last:
                last[x[0]] = False
        nfiles = 0
        for job, is_last in last.items():
            job.chunks += 1
            if is_last:
                nfiles += 1
            else:
                with job.lock:
                    job.left += 1
        with self._cv:  # bound the bytes read but not written, and the files open
            while self._fatal is None and (
                (self._in_flight and self._in_flight + nbytes > MAX_IN_FLIGHT)
                or self._jobs_open - nfiles > MAX_OPEN_FILES
            ):
                self._cv.wait()
            self._in_flight += nbytes
        self._check_fatal()
        if self._fetcher is not None:
            self._fetcher.submit(None, self._fetch, batch, last, nbytes)
        else:
            self._fetch(batch, last, nbytes)
        self._check_fatal()

    def _fetch(self, batch: list, last: dict, nbytes: int) -> None:
        """Read a batch and hand each file's chunk to the pool (or write it)."""
        try:
            chunks = self._read_batch(batch)
        except BaseException as err:
            self._fail(err)
            with self._cv:
                self._in_flight -= nbytes
                self._cv.notify_all()
            for job in last:  # count them out (nothing is written after an error)
                self._run_chunk(job, [], 0)
            return
        del batch
        for job, (pieces, held) in chunks.items():
            if self._pool is not None:
                # a file written in one piece goes to its directory's thread: two
                # threads creating in one directory take turns on its lock (and
                # spin on it, measured); pieces of big files go round the pool
                one = last[job] and job.chunks == 1
                self._pool.submit(
                    job.frame.slot if one else None, self._run_chunk, job, pieces, held
                )
            else:
                self._run_chunk(job, pieces, held)

    def _read_batch(self, batch: list) -> dict:
        """`{job: [pieces, bytes held]}` of a batch, its stored leaves read with
        one get_many (past damage leaf by leaf: `salvage.fetch_leaves`)."""
        hs: list = []
        for x in batch:
            if x[2] == LEAF:
                hs.append(x[4][0].hashcode)
            elif x[2] == RUN:
                hs.extend(x[4][0])
        datas = got = None
        if hs:
            try:
                datas = self.store.get_many(hs)
            except DAMAGE:
                got = fetch_leaves(self.store, hs)
        del hs
        chunks: dict[_FileJob, list] = {}
        i = 0
        for job, pos, kind, n, value in batch:
            c = chunks.get(job)
            if c is None:
                c = chunks[job] = [[], 0]
            if pos is None:
                continue
            pieces = c[0]
            if kind == RUN:
                c[1] += n
                hashes, spans = value
                k = len(hashes)
                if datas is not None:
                    ds = datas[i : i + k]
                    if list(map(len, ds)) == spans:  # (a wrong one: leaf_piece names it)
                        pieces.append((pos, DATAS, n, ds))
                        i += k
                        continue
                for h, span in zip(hashes, spans, strict=True):
                    d = datas[i] if datas is not None else got[h]
                    pieces.append((pos, *leaf_piece(HashCodeBlock(h, span), 0, span, d)))
                    pos += span
                    i += 1
                continue
            if kind == LEAF:
                c[1] += n
                leaf, s, end = value
                d = datas[i] if datas is not None else got[leaf.hashcode]
                i += 1
                kind, n, value = leaf_piece(leaf, s, end, d)
            elif kind == DATA:
                c[1] += n
            pieces.append((pos, kind, n, value))
        return chunks

    def _run_chunk(self, job: _FileJob, pieces: list, held: int) -> None:
        """Write one chunk of a file (in a pool thread); finish the file if last."""
        try:
            if not job.failed and self._fatal is None:
                self._write_pieces(job, pieces)
        except BaseException as err:
            self._job_failed(job, err)
        finally:
            del pieces
            with self._cv:
                self._in_flight -= held
                self._cv.notify_all()
        with job.lock:
            job.left -= 1
            last = job.left == 0
        if last:
            self._finish_file(job)

    def _job_fd(self, job: _FileJob) -> int:
        with job.lock:
            if job.fd is None:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
                job.fd = os.open(job.tmp, flags, job.perm, dir_fd=job.dfd)
            return job.fd

    def _write_pieces(self, job: _FileJob, pieces: list) -> None:
        """One pwrite/pwritev per contiguous run of pieces; holes are skipped."""
        fd = self._job_fd(job)
        iov: list = []
        start = end = 0
        for pos, kind, n, value in pieces:
            if kind == DATA:
                bufs = (value,)
            elif kind == DATAS:
                bufs = value
            elif kind == FILL or (kind == ZEROS and n < 4096):
                bufs = _run_buffers(value if kind == FILL else 0, n)
            else:  # zeros or an unreadable range: a hole
                if kind == BAD:
                    with job.lock:
                        job.bad.append((pos, f"{damage_text(value)} (bytes {pos}-{pos + n - 1})"))
                        job.lost += n
                continue
            if iov and pos != end:
                _pwrite_all(fd, iov, start)
                iov = []
            if not iov:
                start = pos
            iov.extend(bufs)
            end = pos + n
        if iov:
            _pwrite_all(fd, iov, start)
        with job.lock:
            job.end = max(job.end, end)

    def _job_failed(self, job: _FileJob, err: BaseException) -> None:
        job.failed = True
        if isinstance(err, OSError) and err.errno not in FATAL_ERRNOS:
            self._os_error(job.rel, err)
        else:
            self._fail(err)

    def _finish_file(self, job: _FileJob) -> None:
        """The last step of a file: metadata, close, its final name, the counts."""
        try:
            if not job.failed and self._fatal is None:
                self._complete(job)
        except BaseException as err:
            self._job_failed(job, err)
        finally:
            if job.fd is not None:
                os.close(job.fd)
                job.fd = None
                if job.failed and job.replace:
                    try:
                        os.unlink(job.tmp, dir_fd=job.dfd)
                    except OSError:
                        pass
            f = job.frame
            with self._cv:
                self._jobs_open -= 1
                self._pending_files -= 1
                self._pending_bytes -= job.e.size or 0
                f.pending -= 1
                ready = f.walked and f.pending == 0 and f in self._waiting
                if ready:
                    self._waiting.discard(f)
                job.done = True
                self._cv.notify_all()
        if ready:
            try:
                self._finish_dir(f)
            except BaseException as err:
                self._fail(err)


def _pwrite_all(fd: int, bufs: list, offset: int) -> None:
    """Write `bufs` at `offset` with as few calls as the kernel allows (one, for a
    small file), going on after short writes; the buffers are not copied."""
    if len(bufs) == 1:
        mv = memoryview(bufs[0])
        while mv:
            n = os.pwrite(fd, mv, offset)
            offset += n
            mv = mv[n:]
        return
    i = 0
    while i < len(bufs):
        part = bufs[i : i + _IOV_MAX]
        n = os.pwritev(fd, part, offset)
        offset += n
        for b in part:  # skip what was written; a short write splits one buffer
            blen = len(b)
            if n < blen:
                if n:
                    bufs[i] = memoryview(b)[n:]
                break
            n -= blen
            i += 1


_RUN_PIECE = 1 << 20


def _run_buffers(octet: int, n: int) -> list:
    """`n` octets `octet` as buffers of one shared piece (no run materialised)."""
    full = bytes((octet,)) * min(n, _RUN_PIECE)
    bufs = [full] * (n // len(full))
    if n % len(full):
        bufs.append(memoryview(full)[: n % len(full)])
    return bufs
