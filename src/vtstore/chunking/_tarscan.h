/*
 * The tar scanner's header walk, natively (included by _cdc.c).
 *
 * The same walk as the pure-Python `TarScannerReference.parse` in
 * scanners/tar.py, header by header, with the same proposals: a Python
 * generator step, two `sum`s of 512 bytes and two `int(..., 8)` per member
 * made the tar scanner the largest Python cost of packing a tarball (39,540
 * headers of a Django sdist: 0.2 s of GIL-holding work for 59 MB).  Numeric
 * fields that are not plain octal digits (signs, "0o", underscores, other
 * white space) are parsed by Python's own `int(text, 8)`, so the two agree on
 * any input, hostile ones included (tests/chunking/test_tar_native.py).
 */

#define TAR_BLOCK 512
#define TAR_DATA_SPLIT 4096
/* a number too large for the walk: the rest of the stream is one member */
#define TAR_HUGE (INT64_C(1) << 60)

enum { TAR_OK = 0, TAR_BAD = 1, TAR_NOMEM = 2, TAR_NEGSKIP = 3 };

/* The value of a tar numeric field, or *bad = 1 where Python's `_number`
 * gives None.  Called without the GIL; takes it for the rare field Python
 * must parse (`ts` is the thread state saved by Py_BEGIN_ALLOW_THREADS). */
static int64_t tar_number(const uint8_t *f, size_t len, int *bad, PyThreadState **ts)
{
    *bad = 0;
    if (len && (f[0] & 0x80)) { /* GNU base-256 (the sign bit is not looked at) */
        int64_t v = f[0] & 0x3F;
        for (size_t k = 1; k < len; k++) {
            if (v >= (TAR_HUGE >> 8))
                return TAR_HUGE;
            v = v << 8 | f[k];
        }
        return v;
    }
    const uint8_t *nul = memchr(f, 0, len);
    size_t end = nul ? (size_t)(nul - f) : len, beg = 0;
    while (beg < end && f[beg] == ' ')
        beg++;
    while (end > beg && f[end - 1] == ' ')
        end--;
    if (beg == end)
        return 0;
    int64_t v = 0;
    size_t k;
    for (k = beg; k < end && f[k] >= '0' && f[k] <= '7'; k++)
        v = v << 3 | (f[k] - '0'); /* at most 12 digits: no overflow */
    if (k == end)
        return v;
    /* anything else: what int(text, 8) says, exactly */
    char text[16];
    memcpy(text, f + beg, end - beg);
    text[end - beg] = 0;
    PyEval_RestoreThread(*ts);
    char *stop = NULL;
    PyObject *o = PyLong_FromString(text, &stop, 8);
    if (o != NULL && stop != text + (end - beg)) {
        Py_DECREF(o);
        o = NULL;
    }
    if (o == NULL) {
        PyErr_Clear();
        *bad = 1;
    } else {
        int over = 0;
        long long x = PyLong_AsLongLongAndOverflow(o, &over);
        Py_DECREF(o);
        if (over > 0 || x > TAR_HUGE)
            v = TAR_HUGE;
        else if (over < 0 || x < -TAR_HUGE)
            v = -TAR_HUGE;
        else
            v = x;
    }
    *ts = PyEval_SaveThread();
    return v;
}

typedef struct {
    uint64_t pos;         /* absolute offset of d[i] */
    int64_t skip;         /* octets still to pass over */
    int64_t member;       /* start of the pending member's first header, or -1 */
    int done;             /* the walk ended for good */
    uint64_t *out;        /* proposals */
    size_t n_out, cap;
} tar_state;

static int tar_propose(tar_state *s, uint64_t off)
{
    if (s->n_out == s->cap) {
        size_t c = s->cap ? s->cap * 2 : 256;
        uint64_t *o = realloc(s->out, c * sizeof(uint64_t));
        if (!o)
            return -1;
        s->out = o;
        s->cap = c;
    }
    s->out[s->n_out++] = off;
    return 0;
}

/* Walk d[i..n): the pending skip, then every whole header; return the index
 * where it stopped (fewer than 512 octets left, or the skip not done) and set
 * *status. */
static size_t tar_walk(const uint8_t *d, size_t i, size_t n, tar_state *s, int *status,
                       PyThreadState **ts)
{
    *status = TAR_OK;
    while (!s->done) {
        if (s->skip > 0) {
            uint64_t k = (uint64_t)s->skip < n - i ? (uint64_t)s->skip : n - i;
            i += k;
            s->pos += k;
            s->skip -= (int64_t)k;
            if (s->skip > 0)
                return i;
        }
        if (n - i < TAR_BLOCK)
            return i;
        const uint8_t *h = d + i;
        uint64_t start = s->pos;
        i += TAR_BLOCK;
        s->pos += TAR_BLOCK;
        uint64_t sum = 0;
        int zero = 1;
        for (int k = 0; k < TAR_BLOCK; k++) {
            sum += h[k];
            zero &= h[k] == 0;
        }
        if (zero) { /* end-of-archive marker */
            s->done = 1;
            if (tar_propose(s, start) < 0)
                *status = TAR_NOMEM;
            return i;
        }
        int bad;
        int64_t stored = tar_number(h + 148, 8, &bad, ts);
        for (int k = 148; k < 156; k++)
            sum -= h[k];
        if (bad || stored != (int64_t)(sum + 8 * 32)) {
            s->done = 1;
            return i;
        }
        int64_t size = tar_number(h + 124, 12, &bad, ts);
        if (bad) {
            s->done = 1;
            return i;
        }
        uint8_t type = h[156];
        if (s->member < 0)
            s->member = (int64_t)start;
        if (type && strchr("xgLKX", type)) {
            /* the extension's data belongs to the header that follows */
        } else {
            if (tar_propose(s, (uint64_t)s->member) < 0) {
                *status = TAR_NOMEM;
                return i;
            }
            s->member = -1;
            if (type && strchr("1256", type))
                size = 0; /* links, devices, fifos: no data */
            if (size >= TAR_DATA_SPLIT && tar_propose(s, s->pos) < 0) {
                *status = TAR_NOMEM;
                return i;
            }
        }
        /* -(-size // 512) * 512, floor division as Python's */
        int64_t m = -size;
        int64_t fl = m >= 0 ? m / TAR_BLOCK : -((-m + TAR_BLOCK - 1) / TAR_BLOCK);
        int64_t skip = -fl * TAR_BLOCK;
        if (skip < 0) {
            *status = TAR_NEGSKIP;
            return i;
        }
        s->skip = skip;
    }
    return i;
}

PyDoc_STRVAR(tar_scan_doc,
             "tar_scan(data, start, pos, skip, member) -> (offsets, stop, pos, skip, member, done)\n\n"
             "The tar scanner's walk over data[start:] (without the GIL): `pos` is the\n"
             "absolute offset of data[start], `skip` the octets of member data still to\n"
             "pass over, `member` the start of a member whose extension headers were\n"
             "read (-1: none).  Returns the proposed offsets (member starts, data starts\n"
             "of members of 4096 octets or more, the end-of-archive marker), the index\n"
             "where the walk stopped (a header cut by the end of data starts there when\n"
             "`skip` is 0), the new state, and whether the walk ended for good.\n"
             "ValueError where the Python parser raises (a negative size).");

static PyObject *cdc_tar_scan(PyObject *Py_UNUSED(mod), PyObject *args)
{
    PyObject *data;
    Py_ssize_t start;
    unsigned long long pos;
    long long skip, member;
    if (!PyArg_ParseTuple(args, "OnKLL:tar_scan", &data, &start, &pos, &skip, &member))
        return NULL;
    Py_buffer view;
    if (get_buffer(data, &view) < 0)
        return NULL;
    if (start < 0 || start > view.len || skip < 0) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "tar_scan: start %zd or skip %lld out of range", start,
                     skip);
        return NULL;
    }
    tar_state s = {.pos = pos, .skip = skip, .member = member < 0 ? -1 : member};
    int status;
    size_t stop;
    PyThreadState *ts = PyEval_SaveThread();
    stop = tar_walk(view.buf, (size_t)start, (size_t)view.len, &s, &status, &ts);
    PyEval_RestoreThread(ts);
    PyBuffer_Release(&view);
    PyObject *list = NULL, *result = NULL;
    if (status == TAR_NOMEM) {
        PyErr_NoMemory();
        goto done;
    }
    if (status == TAR_NEGSKIP) {
        PyErr_SetString(PyExc_ValueError, "tar member of negative size");
        goto done;
    }
    list = PyList_New((Py_ssize_t)s.n_out);
    if (!list)
        goto done;
    for (size_t k = 0; k < s.n_out; k++) {
        PyObject *v = PyLong_FromUnsignedLongLong(s.out[k]);
        if (!v)
            goto done;
        PyList_SET_ITEM(list, (Py_ssize_t)k, v);
    }
    result = Py_BuildValue("(OnKLLO)", list, (Py_ssize_t)stop, (unsigned long long)s.pos,
                           (long long)s.skip, (long long)s.member, s.done ? Py_True : Py_False);
done:
    Py_XDECREF(list);
    free(s.out);
    return result;
}
