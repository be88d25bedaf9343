/*
 * _vtdread: batched reads of a datadir's blocks (`DataDir.get_many`).
 *
 * Reading one block at a time costs, per 8 KiB block, an index entry decoded
 * in Python, a pread, a hash and the Python glue around them: about 250 MB/s.
 * Here a batch is read the way a disk likes it:
 *
 *   decode_entries(values)  the raw LMDB values (six varints each, see
 *                           vtstore.stores.index.IndexEntry) decoded at once;
 *   read_entries(...)       the spans sorted by (file, offset), identical ones
 *                           read once, neighbours within `max_gap` coalesced
 *                           into one preadv straight into the result bytes
 *                           objects (a gap goes to a scratch buffer), plain
 *                           blocks verified with BLAKE3; all of it with the GIL
 *                           released and split over `threads` threads;
 *   read_joined(...)        the same for a run of plain blocks wanted end to
 *                           end (a file streamed): read straight into one
 *                           result, no object per block, no join after;
 *   check_blake3(...)       the same check for blocks cut out of zstd frames
 *                           (decoded by the caller with the zstandard module).
 *
 * BLAKE3 is vtstore's own (src/vtstore/_blake3.c), compiled into this module
 * so that its batch hashing runs here without the GIL; the `_blake3` module is
 * untouched.
 */

#include "../_blake3.c" /* defines PY_SSIZE_T_CLEAN, includes Python.h */

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sys/uio.h>
#include <unistd.h>

/* The bounds of vtstore.stores.vtd: an entry beyond them is damage. */
#define MAX_BLOCK_SIZE (16u << 20)
#define MAX_PAYLOAD (64u << 20)
#define MAX_OFFSET ((uint64_t)1 << 48)
#define MAX_THREADS 8
#define ENC_MASK 3
#define ENC_PLAIN 0
#define ENC_ZSTD 1
#define FIELDS 6
#define NONE UINT64_MAX

/* What an entry reads as, besides bytes and None. */
enum { E_BOUNDS = 1, E_TRUNCATED = 2, E_MISMATCH = 3 };

/* ---- decode_entries ---------------------------------------------------------- */

/* Six canonical varints (at most 10 octets each) filling `p[0..n)` exactly. */
static int decode6(const uint8_t *p, Py_ssize_t n, uint64_t out[FIELDS])
{
    int k = 0, used = 0;
    uint64_t v = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t b = p[i];
        if (used == 0 && b == 0x80)
            return -1;
        v = (v << 7) | (b & 0x7F);
        used++;
        if (b & 0x80) {
            if (used >= 10)
                return -1;
            continue;
        }
        if (k == FIELDS)
            return -1;
        out[k++] = v;
        v = 0;
        used = 0;
    }
    return used || k != FIELDS ? -1 : 0;
}

PyDoc_STRVAR(decode_entries_doc,
             "decode_entries(values) -> (packed, filenums)\n\n"
             "Decode raw index values (bytes, or None for a block not indexed) into\n"
             "`packed`: six native uint64 per value (filenum, flags, payload_offset,\n"
             "payload_length, data_offset, data_length; all ones for None), and the\n"
             "distinct file numbers, sorted.  ValueError naming the first malformed one.");

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static PyObject *decode_entries(PyObject *Py_UNUSED(mod), PyObject *arg)
{
    PyObject *fast = PySequence_Fast(arg, "decode_entries() takes a sequence");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject *packed = PyBytes_FromStringAndSize(NULL, n * FIELDS * 8);
    uint64_t *nums = malloc((size_t)(n ? n : 1) * sizeof *nums);
    PyObject *res = NULL, *files = NULL;
    if (!packed || !nums) {
        if (packed)
            PyErr_NoMemory();
        goto done;
    }
    uint64_t *out = (uint64_t *)PyBytes_AS_STRING(packed);
    Py_ssize_t nf = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PySequence_Fast_GET_ITEM(fast, i);
        uint64_t *e = out + i * FIELDS;
        if (v == Py_None) {
            for (int k = 0; k < FIELDS; k++)
                e[k] = NONE;
            continue;
        }
        Py_buffer view;
        if (get_buffer(v, &view) < 0)
            goto done;
        int bad = decode6(view.buf, view.len, e);
        PyBuffer_Release(&view);
        if (bad || e[0] == NONE) {
            PyErr_Format(PyExc_ValueError, "index entry %zd is malformed", i);
            goto done;
        }
        if (nf == 0 || nums[nf - 1] != e[0])
            nums[nf++] = e[0];
    }
    qsort(nums, (size_t)nf, sizeof *nums, cmp_u64);
    files = PyList_New(0);
    for (Py_ssize_t i = 0; files && i < nf; i++) {
        if (i && nums[i] == nums[i - 1])
            continue;
        PyObject *x = PyLong_FromUnsignedLongLong(nums[i]);
        if (!x || PyList_Append(files, x) < 0)
            Py_CLEAR(files);
        Py_XDECREF(x);
    }
    if (files)
        res = PyTuple_Pack(2, packed, files);
done:
    Py_XDECREF(files);
    Py_XDECREF(packed);
    free(nums);
    Py_DECREF(fast);
    return res;
}

/* ---- read_entries -------------------------------------------------------------------- */

typedef struct {
    int fd;
    int plain;
    uint64_t off, len;
    Py_ssize_t entry; /* the first entry asking for it (before dedup: its own) */
    uint8_t *buf;     /* the result bytes object's storage */
    int status;       /* 0, E_TRUNCATED */
    uint8_t digest[OUT_LEN];
} range_t;

static int cmp_range(const void *a, const void *b)
{
    const range_t *x = a, *y = b;
    if (x->fd != y->fd)
        return x->fd < y->fd ? -1 : 1;
    if (x->off != y->off)
        return x->off < y->off ? -1 : 1;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->entry < y->entry ? -1 : x->entry > y->entry;
}

typedef struct {
    size_t first, n; /* ranges[first .. first+n) read by one preadv */
    uint64_t bytes;
} run_t;

typedef struct {
    range_t *ranges;
    const run_t *runs;
    size_t first_run, nruns;
    uint64_t max_gap;
    int verify;
    int err; /* errno of a failed read, else 0 */
} work_t;

static long iov_max(void)
{
    long v = sysconf(_SC_IOV_MAX);
    return v > 0 && v < 1024 ? v : 1024;
}

/* pread `len` octets at `off` into `buf`, looping on short reads; returns the
 * octets read (fewer at the end of the file), or -1 with errno. */
static ssize_t pread_full(int fd, uint8_t *buf, uint64_t len, uint64_t off)
{
    uint64_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, buf + got, len - got, (off_t)(off + got));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break;
        got += (uint64_t)r;
    }
    return (ssize_t)got;
}

/* One run: a single preadv over its ranges and the gaps between them; if it
 * comes up short (a truncated file), each range is read on its own to tell
 * which are whole. */
static int read_run(range_t *rg, const run_t *run, uint8_t *scratch, struct iovec *iov)
{
    range_t *r0 = &rg[run->first];
    uint64_t start = r0->off, pos = start;
    int niov = 0;
    for (size_t i = 0; i < run->n; i++) {
        range_t *r = &r0[i];
        if (r->off > pos) {
            iov[niov].iov_base = scratch;
            iov[niov++].iov_len = r->off - pos;
        }
        if (r->len) {
            iov[niov].iov_base = r->buf;
            iov[niov++].iov_len = r->len;
        }
        pos = r->off + r->len;
    }
    uint64_t total = pos - start;
    ssize_t got = 0;
    if (niov) {
        for (;;) {
            got = preadv(r0->fd, iov, niov, (off_t)start);
            if (got >= 0 || errno != EINTR)
                break;
        }
        if (got < 0)
            return errno;
    }
    if ((uint64_t)got == total)
        return 0;
    for (size_t i = 0; i < run->n; i++) {
        range_t *r = &r0[i];
        ssize_t g = pread_full(r->fd, r->buf, r->len, r->off);
        if (g < 0)
            return errno;
        if ((uint64_t)g != r->len)
            r->status = E_TRUNCATED;
    }
    return 0;
}

static void *work(void *arg)
{
    work_t *w = arg;
    uint8_t *scratch = malloc(w->max_gap ? w->max_gap : 1);
    long nio = iov_max();
    struct iovec *iov = malloc((size_t)nio * sizeof *iov);
    if (!scratch || !iov) {
        w->err = ENOMEM;
        goto done;
    }
    for (size_t k = w->first_run; k < w->first_run + w->nruns && !w->err; k++)
        w->err = read_run(w->ranges, &w->runs[k], scratch, iov);
    if (w->err || !w->verify)
        goto done;
    /* hash the plain ranges this thread read, in batches for the SIMD lanes */
    const impl *im = get_impl();
    span sp[64];
    uint8_t *outs[64];
    uint8_t dig[64 * OUT_LEN];
    size_t ns = 0;
    for (size_t k = w->first_run; k < w->first_run + w->nruns; k++) {
        const run_t *run = &w->runs[k];
        for (size_t i = run->first; i < run->first + run->n; i++) {
            range_t *r = &w->ranges[i];
            if (!r->plain || r->status)
                continue;
            sp[ns].p = r->buf;
            sp[ns].len = r->len;
            outs[ns++] = r->digest;
            if (ns == 64) {
                if (hash_spans(im, sp, ns, dig) < 0) {
                    w->err = ENOMEM;
                    goto done;
                }
                for (size_t j = 0; j < ns; j++)
                    memcpy(outs[j], dig + j * OUT_LEN, OUT_LEN);
                ns = 0;
            }
        }
    }
    if (ns && hash_spans(im, sp, ns, dig) < 0)
        w->err = ENOMEM;
    else
        for (size_t j = 0; j < ns; j++)
            memcpy(outs[j], dig + j * OUT_LEN, OUT_LEN);
done:
    free(scratch);
    free(iov);
    return NULL;
}

/* Run `ws[0..n)`: the first in the calling thread, the others in threads of
 * their own (each joined before returning; a thread that cannot start is run
 * here instead). */
static void run_parallel(work_t *ws, int n)
{
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int t = 1; t < n; t++)
        started[t] = pthread_create(&tid[t], NULL, work, &ws[t]) == 0;
    work(&ws[0]);
    for (int t = 1; t < n; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            work(&ws[t]);
    }
}

/* Below this many octets a call keeps the GIL and one thread (see _blake3.c). */
#define READ_GIL_MIN (64 * 1024)
#define THREAD_MIN (512 * 1024)

/* Read the ranges `rg[0..nr)` (sorted by cmp_range, `total` octets) into their
 * buffers: neighbours in one file (no overlap, gap at most `max_gap`, run at
 * most `max_run` octets and IOV_MAX iovecs) go in one preadv, consecutive
 * runs of about the same octets to each of `threads` threads; plain ranges
 * are hashed when `verify`.  Without the GIL from READ_GIL_MIN octets.
 * `runs` has room for `nr`.  -1 with an exception set if a read failed. */
static int read_ranges(range_t *rg, size_t nr, run_t *runs, uint64_t total, uint64_t max_gap,
                       uint64_t max_run, int threads, int verify)
{
    size_t nruns = 0;
    long nio = iov_max();
    for (size_t i = 0; i < nr; i++) {
        if (nruns) {
            run_t *cur = &runs[nruns - 1];
            range_t *last = &rg[cur->first + cur->n - 1];
            uint64_t end = last->off + last->len;
            if (last->fd == rg[i].fd && rg[i].off >= end && rg[i].off - end <= max_gap &&
                rg[i].off + rg[i].len - rg[cur->first].off <= max_run &&
                (long)(2 * cur->n + 2) <= nio) {
                cur->n++;
                cur->bytes += rg[i].len;
                continue;
            }
        }
        runs[nruns].first = i;
        runs[nruns].n = 1;
        runs[nruns].bytes = rg[i].len;
        nruns++;
    }
    int nt = total >= THREAD_MIN ? threads : 1;
    if ((size_t)nt > nruns)
        nt = nruns ? (int)nruns : 1;
    work_t ws[MAX_THREADS];
    size_t k = 0;
    uint64_t done_bytes = 0;
    for (int t = 0; t < nt; t++) {
        ws[t] = (work_t){rg, runs, k, 0, max_gap, verify, 0};
        uint64_t target = total * (uint64_t)(t + 1) / (uint64_t)nt;
        while (k < nruns && (t == nt - 1 || done_bytes < target)) {
            done_bytes += runs[k].bytes;
            ws[t].nruns++;
            k++;
        }
    }
    if (total >= READ_GIL_MIN) {
        Py_BEGIN_ALLOW_THREADS
        run_parallel(ws, nt);
        Py_END_ALLOW_THREADS
    } else {
        run_parallel(ws, nt);
    }
    for (int t = 0; t < nt; t++) {
        if (ws[t].err) {
            errno = ws[t].err;
            PyErr_SetFromErrno(ws[t].err == ENOMEM ? PyExc_MemoryError : PyExc_OSError);
            return -1;
        }
    }
    return 0;
}

/* The arguments read_entries and read_joined share: -1 with ValueError if
 * one is out of range; `threads` clamped to 1..MAX_THREADS. */
static int check_read_args(Py_ssize_t packed_len, Py_ssize_t digests_len, uint64_t max_gap,
                           uint64_t max_run, int *threads)
{
    if (packed_len % (FIELDS * 8)) {
        PyErr_SetString(PyExc_ValueError, "packed entries have a partial entry");
        return -1;
    }
    if (digests_len >= 0 && digests_len != packed_len / (FIELDS * 8) * OUT_LEN) {
        PyErr_SetString(PyExc_ValueError, "digests must be 32 octets per entry");
        return -1;
    }
    if (max_gap > (64u << 20) || max_run > ((uint64_t)1 << 30)) {
        PyErr_SetString(PyExc_ValueError, "max_gap or max_run out of range");
        return -1;
    }
    *threads = *threads < 1 ? 1 : *threads > MAX_THREADS ? MAX_THREADS : *threads;
    return 0;
}

PyDoc_STRVAR(
    read_entries_doc,
    "read_entries(packed, fds, digests=None, skip=None, max_gap=65536, max_run=4194304,\n"
    "             threads=2) -> list\n\n"
    "Read the entries of `packed` (from decode_entries) from the open data files\n"
    "`fds` ({filenum: fd}).  For each entry: a plain block's data, a zstd\n"
    "entry's whole stored payload (one object for every entry of the same\n"
    "frame), None if it is not indexed, skipped (`skip[i]` true) or its file is\n"
    "not in `fds`, else an int: 1 out of bounds, 2 truncated, 3 data not matching\n"
    "its BLAKE3 digest (plain blocks are checked only when `digests`, 32 octets\n"
    "per entry, is given).  Identical spans are read once; spans of one file at\n"
    "most `max_gap` apart are read by one preadv of at most `max_run` octets.\n"
    "OSError if a read fails.");

/* The open file descriptor `fds` (a dict: file number -> fd) has for file
 * `num`: 1 and *fd set, 0 if it has none, -1 with an exception set. */
static int lookup_fd(PyObject *fds, uint64_t num, int *fd)
{
    PyObject *key = PyLong_FromUnsignedLongLong(num);
    if (!key)
        return -1;
    PyObject *fdo = PyDict_GetItemWithError(fds, key);
    Py_DECREF(key);
    if (!fdo)
        return PyErr_Occurred() ? -1 : 0;
    long fdl = PyLong_AsLong(fdo);
    if (fdl == -1 && PyErr_Occurred())
        return -1;
    if (fdl < 0 || fdl > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "a file descriptor out of range");
        return -1;
    }
    *fd = (int)fdl;
    return 1;
}

static PyObject *read_entries(PyObject *Py_UNUSED(mod), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"packed", "fds", "digests", "skip", "max_gap", "max_run",
                             "threads", NULL};
    Py_buffer pk = {0}, dg = {0}, sk = {0};
    PyObject *fds, *dg_obj = Py_None, *sk_obj = Py_None;
    unsigned long long max_gap = 65536, max_run = 4u << 20;
    int threads = 2;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*O!|OOKKi:read_entries", kwlist, &pk,
                                     &PyDict_Type, &fds, &dg_obj, &sk_obj, &max_gap, &max_run,
                                     &threads))
        return NULL;
    PyObject *res = NULL, **objs = NULL;
    range_t *rg = NULL;
    run_t *runs = NULL;
    Py_ssize_t *of = NULL; /* entry -> range index, or -code */
    Py_ssize_t n = pk.len / (FIELDS * 8);
    const uint64_t *ent = pk.buf;
    if (dg_obj != Py_None && PyObject_GetBuffer(dg_obj, &dg, PyBUF_SIMPLE) < 0)
        goto done;
    if (check_read_args(pk.len, dg.obj ? dg.len : -1, max_gap, max_run, &threads) < 0)
        goto done;
    if (sk_obj != Py_None) {
        if (PyObject_GetBuffer(sk_obj, &sk, PyBUF_SIMPLE) < 0)
            goto done;
        if (sk.len != n) {
            PyErr_SetString(PyExc_ValueError, "skip must be one octet per entry");
            goto done;
        }
    }
    size_t cap = (size_t)(n ? n : 1);
    rg = malloc(cap * sizeof *rg);
    of = malloc(cap * sizeof *of);
    runs = malloc(cap * sizeof *runs);
    objs = calloc(cap, sizeof *objs);
    if (!rg || !of || !runs || !objs) {
        PyErr_NoMemory();
        goto done;
    }
    /* the spans to read */
    size_t nr = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint64_t *e = ent + i * FIELDS;
        of[i] = PY_SSIZE_T_MIN; /* None */
        if (e[0] == NONE || (sk.buf && ((const uint8_t *)sk.buf)[i]))
            continue;
        uint64_t flags = e[1], po = e[2], pl = e[3], doff = e[4], dl = e[5];
        int enc = (int)(flags & ENC_MASK);
        if (dl > MAX_BLOCK_SIZE || pl > MAX_PAYLOAD || doff > MAX_PAYLOAD || po >= MAX_OFFSET ||
            (enc != ENC_PLAIN && enc != ENC_ZSTD)) {
            of[i] = -E_BOUNDS;
            continue;
        }
        int fd;
        int found = lookup_fd(fds, e[0], &fd);
        if (found < 0)
            goto done;
        if (!found)
            continue;
        range_t *r = &rg[nr++];
        r->fd = fd;
        r->plain = enc == ENC_PLAIN;
        r->off = r->plain ? po + doff : po;
        r->len = r->plain ? dl : pl;
        r->entry = i;
        r->status = 0;
        of[i] = (Py_ssize_t)nr - 1;
    }
    qsort(rg, nr, sizeof *rg, cmp_range);
    /* identical spans become one; each entry learns its range's new place */
    size_t nu = 0;
    for (size_t i = 0; i < nr; i++) {
        if (nu && rg[nu - 1].fd == rg[i].fd && rg[nu - 1].off == rg[i].off &&
            rg[nu - 1].len == rg[i].len && rg[nu - 1].plain == rg[i].plain) {
            of[rg[i].entry] = (Py_ssize_t)nu - 1;
            continue;
        }
        rg[nu] = rg[i];
        of[rg[i].entry] = (Py_ssize_t)nu;
        nu++;
    }
    /* a bytes object per range, read into in place */
    uint64_t total = 0;
    for (size_t i = 0; i < nu; i++) {
        objs[i] = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)rg[i].len);
        if (!objs[i])
            goto done;
        rg[i].buf = (uint8_t *)PyBytes_AS_STRING(objs[i]);
        total += rg[i].len;
    }
    if (read_ranges(rg, nu, runs, total, max_gap, max_run, threads, dg.buf != NULL) < 0)
        goto done;
    res = PyList_New(n);
    if (!res)
        goto done;
    const uint8_t *want = dg.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t x = of[i];
        PyObject *v;
        if (x == PY_SSIZE_T_MIN) {
            v = Py_NewRef(Py_None);
        } else if (x < 0) {
            v = PyLong_FromLong((long)-x);
        } else if (rg[x].status) {
            v = PyLong_FromLong(rg[x].status);
        } else if (want && rg[x].plain && memcmp(rg[x].digest, want + i * OUT_LEN, OUT_LEN)) {
            v = PyLong_FromLong(E_MISMATCH);
        } else {
            v = Py_NewRef(objs[x]);
        }
        if (!v) {
            Py_CLEAR(res);
            goto done;
        }
        PyList_SET_ITEM(res, i, v);
    }
done:
    if (objs) {
        for (size_t i = 0; i < cap; i++)
            Py_XDECREF(objs[i]);
    }
    free(objs);
    free(rg);
    free(runs);
    free(of);
    PyBuffer_Release(&pk);
    if (dg.obj)
        PyBuffer_Release(&dg);
    if (sk.obj)
        PyBuffer_Release(&sk);
    return res;
}

/* ---- read_joined ------------------------------------------------------------------- */

PyDoc_STRVAR(
    read_joined_doc,
    "read_joined(packed, fds, digests, max_gap=65536, max_run=4194304, threads=2,\n"
    "            verify=True, into=None) -> bytes | None\n\n"
    "The data of the entries of `packed` (from decode_entries), end to end in\n"
    "their order, as one bytes object: each block read straight into its place\n"
    "(spans sorted and coalesced as read_entries does) and checked against its\n"
    "BLAKE3 digest in `digests` (32 octets per entry), without the GIL.  None if\n"
    "any entry is not a plain block within bounds whose file is in `fds`, is cut\n"
    "short, or does not match: the caller then reads the batch the slow way,\n"
    "which names the damage.  OSError if a read fails.  `verify=False` leaves the\n"
    "hashing out (for a reader that checks every block itself: vt httpd's\n"
    "`b/get?joined&unchecked`); the digests must still be given.  `into`: a\n"
    "writable buffer of exactly the total length to read into (a buffer used\n"
    "again, no fresh memory to fault in): it is returned instead of new bytes.");

static PyObject *read_joined(PyObject *Py_UNUSED(mod), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"packed",  "fds",    "digests", "max_gap", "max_run",
                             "threads", "verify", "into",    NULL};
    Py_buffer pk = {0}, dg = {0}, into = {0};
    PyObject *fds, *into_obj = Py_None;
    unsigned long long max_gap = 65536, max_run = 4u << 20;
    int threads = 2, verify = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*O!y*|KKipO:read_joined", kwlist, &pk,
                                     &PyDict_Type, &fds, &dg, &max_gap, &max_run, &threads,
                                     &verify, &into_obj))
        return NULL;
    if (into_obj != Py_None && PyObject_GetBuffer(into_obj, &into, PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&pk);
        PyBuffer_Release(&dg);
        return NULL;
    }
    PyObject *res = NULL, *out = NULL;
    range_t *rg = NULL;
    run_t *runs = NULL;
    Py_ssize_t n = pk.len / (FIELDS * 8);
    const uint64_t *ent = pk.buf;
    if (check_read_args(pk.len, dg.len, max_gap, max_run, &threads) < 0)
        goto done;
    size_t cap = (size_t)(n ? n : 1);
    rg = malloc(cap * sizeof *rg);
    runs = malloc(cap * sizeof *runs);
    if (!rg || !runs) {
        PyErr_NoMemory();
        goto done;
    }
    /* every entry a plain block in bounds, in a file we have; its place in the result */
    uint64_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint64_t *e = ent + i * FIELDS;
        uint64_t po = e[2], doff = e[4], dl = e[5];
        if (e[0] == NONE || (e[1] & ENC_MASK) != ENC_PLAIN || dl > MAX_BLOCK_SIZE ||
            doff > MAX_PAYLOAD || po >= MAX_OFFSET) {
            res = Py_NewRef(Py_None);
            goto done;
        }
        int fd;
        int found = lookup_fd(fds, e[0], &fd);
        if (found <= 0) {
            if (!found)
                res = Py_NewRef(Py_None);
            goto done;
        }
        range_t *r = &rg[i];
        r->fd = fd;
        r->plain = 1;
        r->off = po + doff;
        r->len = dl;
        r->entry = i;
        r->status = 0;
        r->buf = (uint8_t *)(uintptr_t)total; /* an offset until the result exists */
        total += dl;
    }
    if (total > PY_SSIZE_T_MAX) {
        PyErr_NoMemory();
        goto done;
    }
    uint8_t *base;
    if (into.obj) {
        if ((uint64_t)into.len != total) {
            PyErr_SetString(PyExc_ValueError, "into is not the length of the blocks");
            goto done;
        }
        out = Py_NewRef(into_obj);
        base = into.buf;
    } else {
        out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
        if (!out)
            goto done;
        base = (uint8_t *)PyBytes_AS_STRING(out);
    }
    for (Py_ssize_t i = 0; i < n; i++)
        rg[i].buf = base + (uintptr_t)rg[i].buf;
    qsort(rg, (size_t)n, sizeof *rg, cmp_range);
    /* an identical span asked twice is read twice: each has its own place */
    if (read_ranges(rg, (size_t)n, runs, total, max_gap, max_run, threads, verify) < 0)
        goto done;
    const uint8_t *want = dg.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (rg[i].status ||
            (verify && memcmp(rg[i].digest, want + rg[i].entry * OUT_LEN, OUT_LEN))) {
            res = Py_NewRef(Py_None);
            goto done;
        }
    }
    res = Py_NewRef(out);
done:
    Py_XDECREF(out);
    free(rg);
    free(runs);
    PyBuffer_Release(&pk);
    if (dg.obj)
        PyBuffer_Release(&dg);
    if (into.obj)
        PyBuffer_Release(&into);
    return res;
}

/* ---- check_blake3 ------------------------------------------------------------------ */

typedef struct {
    const span *s;
    size_t n;
    uint8_t *out;
    int rc;
} hash_work_t;

static void *hash_work(void *arg)
{
    hash_work_t *w = arg;
    w->rc = hash_spans(get_impl(), w->s, w->n, w->out);
    return NULL;
}

PyDoc_STRVAR(check_blake3_doc,
             "check_blake3(digests, datas, threads=2) -> bytes\n\n"
             "For each of `datas`, 1 if its BLAKE3 digest is the matching 32 octets of\n"
             "`digests`, else 0; hashed without the GIL, over `threads` threads for\n"
             "large batches.");

static PyObject *check_blake3(PyObject *Py_UNUSED(mod), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"digests", "datas", "threads", NULL};
    Py_buffer dg;
    PyObject *datas;
    int threads = 2;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*O|i:check_blake3", kwlist, &dg, &datas,
                                     &threads))
        return NULL;
    PyObject *fast = PySequence_Fast(datas, "datas must be a sequence");
    if (!fast) {
        PyBuffer_Release(&dg);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast), got = 0;
    PyObject *res = NULL;
    Py_buffer *views = malloc((size_t)(n ? n : 1) * sizeof *views);
    span *sp = malloc((size_t)(n ? n : 1) * sizeof *sp);
    uint8_t *out = malloc((size_t)(n ? n : 1) * OUT_LEN);
    if (!views || !sp || !out) {
        PyErr_NoMemory();
        goto done;
    }
    if (dg.len != n * OUT_LEN) {
        PyErr_SetString(PyExc_ValueError, "digests must be 32 octets per data");
        goto done;
    }
    uint64_t total = 0;
    for (; got < n; got++) {
        if (get_buffer(PySequence_Fast_GET_ITEM(fast, got), &views[got]) < 0)
            goto done;
        sp[got].p = views[got].buf;
        sp[got].len = (uint64_t)views[got].len;
        total += sp[got].len;
    }
    int nt = total >= THREAD_MIN && n > 1 ? (threads < 1 ? 1 : threads > 2 ? 2 : threads) : 1;
    hash_work_t hw[2] = {{sp, (size_t)n, out, 0}, {NULL, 0, NULL, 0}};
    if (nt == 2) {
        /* split by octets */
        uint64_t half = total / 2, acc = 0;
        size_t cut = 0;
        while (cut < (size_t)n && acc < half)
            acc += sp[cut++].len;
        hw[0].n = cut;
        hw[1] = (hash_work_t){sp + cut, (size_t)n - cut, out + cut * OUT_LEN, 0};
    }
    if (total >= READ_GIL_MIN) {
        Py_BEGIN_ALLOW_THREADS
        pthread_t tid;
        int started = nt == 2 && pthread_create(&tid, NULL, hash_work, &hw[1]) == 0;
        hash_work(&hw[0]);
        if (started)
            pthread_join(tid, NULL);
        else if (nt == 2)
            hash_work(&hw[1]);
        Py_END_ALLOW_THREADS
    } else {
        hash_work(&hw[0]);
        if (nt == 2)
            hash_work(&hw[1]);
    }
    if (hw[0].rc < 0 || hw[1].rc < 0) {
        PyErr_NoMemory();
        goto done;
    }
    res = PyBytes_FromStringAndSize(NULL, n);
    if (!res)
        goto done;
    uint8_t *ok = (uint8_t *)PyBytes_AS_STRING(res);
    for (Py_ssize_t i = 0; i < n; i++)
        ok[i] = memcmp(out + i * OUT_LEN, (const uint8_t *)dg.buf + i * OUT_LEN, OUT_LEN) == 0;
done:
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    free(views);
    free(sp);
    free(out);
    Py_DECREF(fast);
    PyBuffer_Release(&dg);
    return res;
}

/* ---- split_leaf_refs --------------------------------------------------------------- */

PyDoc_STRVAR(
    split_leaf_refs_doc,
    "split_leaf_refs(data, hashid, digest_size) -> (bytes, list) | None\n\n"
    "The digests (end to end) and spans of an indirect block's data made only\n"
    "of leaf refs in their shortest form (flags 0, a canonical span varint, a\n"
    "hashcode of class `hashid`): what blocks.leaf_refs reads, without a Python\n"
    "object a leaf (the HTTP client's read-ahead plans a file's leaves from\n"
    "these).  None for any other data, for no refs, or for another hash class.");

static PyObject *split_leaf_refs(PyObject *Py_UNUSED(mod), PyObject *args)
{
    Py_buffer in = {0};
    int hashid, dsize;
    if (!PyArg_ParseTuple(args, "y*ii:split_leaf_refs", &in, &hashid, &dsize))
        return NULL;
    PyObject *res = NULL, *digests = NULL, *spans = NULL;
    const uint8_t *d = in.buf;
    Py_ssize_t n = in.len, pos = 0, count = 0;
    if (dsize < 1 || dsize > 64 || hashid < 0 || hashid > 255)
        goto none;
    /* first pass: validate and count */
    while (pos < n) {
        Py_ssize_t size = d[pos], end = pos + 1 + size;
        if (size >= 0x80 || size < 3 || end > n || d[pos + 1] != 0)
            goto none;
        Py_ssize_t p = pos + 2;
        uint8_t b = d[p++];
        if (b == 0x80)
            goto none;
        uint64_t span = b & 0x7F;
        while (b & 0x80) {
            if (p - pos > 11 || p >= end || span > (UINT64_MAX >> 7))
                goto none;
            b = d[p++];
            span = (span << 7) | (b & 0x7F);
        }
        if (p >= end || d[p] != hashid || p + 1 + dsize != end)
            goto none;
        count++;
        pos = end;
    }
    if (!count)
        goto none;
    digests = PyBytes_FromStringAndSize(NULL, count * dsize);
    spans = PyList_New(count);
    if (!digests || !spans)
        goto done;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(digests);
    pos = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t end = pos + 1 + d[pos], p = pos + 2;
        uint8_t b = d[p++];
        uint64_t span = b & 0x7F;
        while (b & 0x80) {
            b = d[p++];
            span = (span << 7) | (b & 0x7F);
        }
        PyObject *v = PyLong_FromUnsignedLongLong(span);
        if (!v)
            goto done;
        PyList_SET_ITEM(spans, i, v);
        memcpy(out + i * dsize, d + p + 1, (size_t)dsize);
        pos = end;
    }
    res = PyTuple_Pack(2, digests, spans);
    goto done;
none:
    res = Py_NewRef(Py_None);
done:
    Py_XDECREF(digests);
    Py_XDECREF(spans);
    PyBuffer_Release(&in);
    return res;
}

static PyMethodDef dread_methods[] = {
    {"decode_entries", (PyCFunction)decode_entries, METH_O, decode_entries_doc},
    {"read_entries", (PyCFunction)(void (*)(void))read_entries, METH_VARARGS | METH_KEYWORDS,
     read_entries_doc},
    {"read_joined", (PyCFunction)(void (*)(void))read_joined, METH_VARARGS | METH_KEYWORDS,
     read_joined_doc},
    {"check_blake3", (PyCFunction)(void (*)(void))check_blake3, METH_VARARGS | METH_KEYWORDS,
     check_blake3_doc},
    {"split_leaf_refs", split_leaf_refs, METH_VARARGS, split_leaf_refs_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef dread_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "vtstore.stores._vtdread",
    .m_doc = "Batched, coalesced, verified reads of datadir blocks (GIL released).",
    .m_size = -1,
    .m_methods = dread_methods,
};

PyMODINIT_FUNC PyInit__vtdread(void)
{
    if (blake3_init("vtstore.stores._vtdread") < 0)
        return NULL;
    return PyModule_Create(&dread_module);
}
