/*
 * _cdc: the native content-defined chunker of vtstore.
 *
 * A FastCDC-style gear-hash chunker with normalised chunking.  The algorithm
 * is specified in docs/CHUNKING.md; the cut points are part of the store's
 * format (identical content must give identical blocks forever), so any change
 * here that moves a cut is a format change.  src/vtstore/chunking/reference.py
 * is the pure-Python statement of the same algorithm and the tests check that
 * both agree.
 *
 * In short:
 *   H(q)  = sum_{k=0}^{63} GEAR[d[q-k]] << k   (mod 2^64), the gear hash of
 *           the 64 bytes ending at byte q;
 *   a chunk starting at s may end at e = q + 1 (length L = e - s) by hash if
 *           min <= L < avg and (H(q) & MASK_S) == 0, or
 *           avg <= L < max and (H(q) & MASK_L) == 0,
 *   where MASK_S is the top log2(avg)+2 bits and MASK_L the top log2(avg)-2
 *   bits; otherwise it ends at the next accepted forced boundary or at s + max,
 *   whichever comes first.  A forced (format) boundary f, L = f - s, is
 *     dropped   if L < max(min, forced_min): no format cut makes a block below
 *               the minimum, so small records (mail messages, tar members) are
 *               merged into one block;
 *     accepted  if L >= avg, or if the boundary proposed before f (or the
 *               start of the stream) is at least max(min, forced_min) before
 *               it: a record that could be a block of its own;
 *     accepted  if the next boundary proposed (or the end) is at least
 *               max(min, forced_min) after it: it starts such a record;
 *     otherwise accepted iff it is *strong*, (J(f) & MASK_F) == 0, where J(f)
 *               is the gear hash of the 64 bytes from f on and MASK_F the top
 *               FORMAT_BITS bits, and no boundary in (f, f + fmin) starts a
 *               record of fmin or more (that one is the better cut); a
 *               boundary not taken is passed over (merged into the block) and
 *               the search goes on.  Such a boundary less than 2 fmin before
 *               the end of the stream is dropped, and the end is the next cut.
 *   Which boundaries end blocks thus depends only on the content next to them
 *   and the distance from the last cut, so after an insertion the cuts fall
 *   back onto the same strong boundaries within a block or two.
 * Because min >= 64, H(q) only ever covers bytes of the current chunk, and the
 * first min - 64 bytes of a chunk are never read at all.
 *
 * The GIL is released while scanning; a Chunker refuses concurrent use.
 */

#define _GNU_SOURCE /* memmem */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "../_vtbuf.h"
#include <stdint.h>
#include <string.h>

/* splitmix64 seed of the gear table: ASCII "vtstgear" */
#define GEAR_SEED 0x7674737467656172ULL

static uint64_t GEAR[256];

static void init_gear(void)
{
    uint64_t x = GEAR_SEED;
    for (int i = 0; i < 256; i++) {
        x += 0x9E3779B97F4A7C15ULL;
        uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        GEAR[i] = z ^ (z >> 31);
    }
}

#define DEFAULT_MIN 2048
#define DEFAULT_AVG 8192
#define DEFAULT_MAX 65536
#define DEFAULT_FORCED_MIN 64
#define WINDOW 64
/* a format boundary between min and avg is taken with probability 2^-FORMAT_BITS */
#ifndef FORMAT_BITS
#define FORMAT_BITS 4
#endif
#define LIMIT_MAX (1ULL << 30)

enum { CUT_HASH = 0, CUT_FORMAT = 1, CUT_MAX = 2, CUT_END = 3, N_KINDS = 4 };

typedef struct {
    uint64_t min, avg, max, forced_min;
    uint64_t fmin; /* max(min, forced_min): the smallest block a format cut makes */
    uint64_t mask_s, mask_l, mask_f;
} cdc_params;

typedef struct {
    cdc_params p;
    uint64_t start; /* absolute offset of the current chunk's start (last cut) */
    uint64_t pos;   /* absolute offset of the next byte to hash */
    uint64_t h;     /* gear hash after bytes [.., pos) */
    uint64_t fed;   /* bytes fed so far */
    /* accepted-or-pending forced boundaries, ascending, fq[fq_head..fq_len),
     * with the gear hashes of their windows fjh[] (complete below fq_judged) */
    uint64_t *fq, *fjh, *fgap; /* fgap: distance from the boundary proposed before */
    size_t fq_head, fq_len, fq_cap, fq_judged;
    uint64_t hcut; /* a hash cut found beyond a boundary still to judge, or 0 */
    /* the bytes [pos, fed) when the scan stopped short of them (waiting to
     * judge a boundary): at most 2 fmin */
    uint8_t *hist;
    size_t hist_len, hist_cap;
    uint64_t last_proposed; /* largest boundary ever queued, or 0 */
    int have_proposed;
    /* cut offsets produced by the current call */
    uint64_t *cuts;
    size_t n_cuts, cuts_cap;
    int cuts_oom;
    uint64_t counts[N_KINDS];
    uint64_t dropped, merged;
} cdc_state;

/* ---- the scan ------------------------------------------------------------ */

/* Hash bytes d[0..n) into *hp without testing. */
static inline void gear_skim(const uint8_t *d, size_t n, uint64_t *hp)
{
    uint64_t h = *hp;
    for (size_t i = 0; i < n; i++)
        h = (h << 1) + GEAR[d[i]];
    *hp = h;
}

/*
 * Hash bytes d[0..n) into *hp; return the index i of the first byte after
 * which (h & mask) == 0, or n if there is none.  *hp is the hash after the
 * last byte hashed (d[i], or d[n-1]).
 *
 * `ahead` is how far ahead to prefetch: the next chunk's first hashed byte is
 * about min_size past the cut, beyond where the hardware prefetcher follows
 * the sequential scan, and a cache miss there per chunk costs ~20% of the
 * speed.  Prefetching never faults, so addresses past the buffer are harmless.
 */
static inline size_t gear_find(const uint8_t *d, size_t n, uint64_t *hp, uint64_t mask,
                               size_t ahead)
{
    uint64_t h = *hp;
    size_t i = 0;
#define STEP(k)                                                                \
    h = (h << 1) + GEAR[d[i + (k)]];                                           \
    if (__builtin_expect(!(h & mask), 0)) {                                    \
        *hp = h;                                                               \
        return i + (k);                                                        \
    }
    for (; i + 16 <= n; i += 16) {
        __builtin_prefetch((const void *)((uintptr_t)d + i + ahead));
        STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5) STEP(6) STEP(7)
        STEP(8) STEP(9) STEP(10) STEP(11) STEP(12) STEP(13) STEP(14) STEP(15)
    }
    for (; i < n; i++) {
        STEP(0)
    }
#undef STEP
    *hp = h;
    return n;
}

static int push_cut(cdc_state *st, uint64_t e, int kind)
{
    if (st->n_cuts == st->cuts_cap) {
        size_t cap = st->cuts_cap ? st->cuts_cap * 2 : 256;
        uint64_t *c = realloc(st->cuts, cap * sizeof(uint64_t));
        if (!c) {
            st->cuts_oom = 1;
            return -1;
        }
        st->cuts = c;
        st->cuts_cap = cap;
    }
    st->cuts[st->n_cuts++] = e;
    st->counts[kind]++;
    st->start = e;
    return 0;
}

/*
 * Hash the windows of the queued boundaries that lie in the bytes d[0..n) at
 * absolute offsets [base, base + n): boundary f is judged by the gear hash of
 * the bytes [f, f + WINDOW), which arrive after it was queued (a boundary is
 * never queued behind the bytes fed), so each window is hashed as its bytes
 * come and no byte before `base` is ever needed.
 */
static void judge_windows(cdc_state *st, const uint8_t *d, uint64_t base, uint64_t n)
{
    const uint64_t end = base + n;
    size_t i = st->fq_judged > st->fq_head ? st->fq_judged : st->fq_head;
    size_t first_open = 0; /* the first window not complete (+1), 0: none yet */
    for (; i < st->fq_len; i++) {
        uint64_t f = st->fq[i];
        if (f >= end)
            break;
        uint64_t from = f > base ? f : base, to = f + WINDOW < end ? f + WINDOW : end;
        gear_skim(d + (from - base), to - from, &st->fjh[i]);
        if (f + WINDOW > end && !first_open)
            first_open = i + 1; /* goes on in the next bytes (and so do later ones) */
    }
    st->fq_judged = first_open ? first_open - 1 : i;
}

/*
 * Search for a hash cut end e in [first, bound) (first = start + min); on a
 * find, st->hcut = e.  Returns 0 when the search is over (found or exhausted)
 * and -1 when it needs more data.
 */
static int hash_search(cdc_state *st, const uint8_t *d, uint64_t base, uint64_t end,
                       uint64_t bound)
{
    const cdc_params *p = &st->p;
    uint64_t first = st->start + p->min; /* smallest hash cut end */
    if (bound <= first)
        return 0;
    /* search cut ends e in [first, bound), i.e. bytes q = e - 1 */
    uint64_t warm = first - WINDOW;
    if (st->pos < warm) {
        st->pos = warm;
        st->h = 0;
    }
    if (st->pos + 1 >= bound)
        return 0; /* searched up to bound already */
    if (st->pos >= end)
        return -1; /* need more data (possibly skipping ahead) */
    /* warm-up: bytes before first - 1 are hashed without a test */
    if (st->pos < first - 1) {
        uint64_t stop = first - 1 < end ? first - 1 : end;
        gear_skim(d + (st->pos - base), stop - st->pos, &st->h);
        st->pos = stop;
        if (st->pos >= end)
            return -1;
    }
    /* small-mask region: e in [first, start + avg), then large-mask region */
    for (int region = 0; region < 2; region++) {
        uint64_t r_end = region == 0 ? st->start + p->avg : bound; /* exclusive bound on e */
        if (r_end > bound)
            r_end = bound;
        if (st->pos + 1 >= r_end)
            continue;
        uint64_t stop = r_end - 1 < end ? r_end - 1 : end;
        size_t len = stop - st->pos;
        size_t i = gear_find(d + (st->pos - base), len, &st->h,
                             region == 0 ? p->mask_s : p->mask_l, p->min + 512);
        if (i < len) {
            st->pos = st->pos + i + 1;
            st->hcut = st->pos;
            return 0;
        }
        st->pos = stop;
        if (st->pos >= end && stop < r_end - 1)
            return -1;
    }
    return 0;
}

/* The distance from queued boundary i to the next one (or "far": none is
 * queued, and every proposal before the bytes fed is) */
static inline uint64_t next_gap(const cdc_state *st, size_t i)
{
    return i + 1 < st->fq_len ? st->fq[i + 1] - st->fq[i] : UINT64_MAX;
}

/*
 * Whether queued boundary i, between min and avg from the last cut and less
 * than fmin after the boundary before it, ends the block: yes if the record
 * it starts is at least fmin long; else only if it is strong and no record
 * that long starts within fmin after it (that boundary is the better cut:
 * the start of an MP4's mdat payload after its small moov boxes).
 */
static int judge_takes(const cdc_state *st, size_t i)
{
    const cdc_params *p = &st->p;
    uint64_t f = st->fq[i];
    if (next_gap(st, i) >= p->fmin)
        return 1;
    if (st->fjh[i] & p->mask_f)
        return 0; /* weak */
    for (size_t j = i + 1; j < st->fq_len && st->fq[j] < f + p->fmin; j++)
        if (next_gap(st, j) >= p->fmin)
            return 0;
    return 1;
}

/*
 * Scan the bytes d[0..end - base) at absolute offsets [base, end), appending
 * every cut decided to st->cuts; st->pos >= base.
 *
 * The scan only moves forward: a boundary f that must be judged (between min
 * and avg from the last cut) stops the hash search at f + WINDOW, so when f
 * is taken, nothing past where the next chunk's search begins was looked at.
 * Judging f waits for the bytes up to f + 2 fmin (the proposals after it), so
 * the scan may stop short of `end`: cdc_run keeps those bytes for the next.
 */
static void cdc_core(cdc_state *st, const uint8_t *d, const uint64_t base, const uint64_t end)
{
    const cdc_params *p = &st->p;

    for (;;) {
        /* drop proposals too close to the last cut */
        while (st->fq_head < st->fq_len && st->fq[st->fq_head] < st->start + p->fmin) {
            st->fq_head++;
            st->dropped++;
        }
        uint64_t limit = st->start + p->max;
        int have_f = st->fq_head < st->fq_len && st->fq[st->fq_head] <= limit;
        uint64_t f = have_f ? st->fq[st->fq_head] : 0;
        /* taken only if strong: one that ends a record shorter than the
         * minimum (a small mail message), short of avg from the last cut */
        int judged = have_f && f - st->start < p->avg && st->fgap[st->fq_head] < p->fmin;
        if (!st->hcut) {
            uint64_t bound = limit;
            if (have_f)
                bound = judged ? (f + WINDOW < limit ? f + WINDOW : limit) : f;
            if (hash_search(st, d, base, end, bound) < 0)
                return;
        }
        uint64_t cut;
        int kind;
        if (have_f && (!st->hcut || f < st->hcut)) {
            if (f > end)
                return;
            if (judged) {
                /* what follows f decides: wait until every proposal up to
                 * f + 2 fmin is known (all before `end` are queued) */
                if (f + 2 * p->fmin > end)
                    return; /* need more data (at the end: dropped) */
                if (!judge_takes(st, st->fq_head)) {
                    /* merged into the block; the search goes on */
                    st->fq_head++;
                    st->merged++;
                    continue;
                }
            }
            st->fq_head++;
            cut = f;
            kind = CUT_FORMAT;
        } else if (st->hcut) {
            cut = st->hcut;
            kind = CUT_HASH;
        } else {
            if (limit > end)
                return;
            cut = limit;
            kind = CUT_MAX;
        }
        st->hcut = 0;
        if (st->pos < cut)
            st->pos = cut;
        if (push_cut(st, cut, kind) < 0)
            return;
    }
}

/* Keep the bytes [st->pos, end) of d (at absolute offsets from base) for the
 * next call: the scan stopped there waiting to judge a boundary. */
static void keep_history(cdc_state *st, const uint8_t *d, uint64_t base, uint64_t end)
{
    if (st->pos >= end) {
        st->hist_len = 0;
        return;
    }
    size_t len = (size_t)(end - st->pos);
    if (len > st->hist_cap) {
        uint8_t *h = malloc(len); /* not realloc: d may point into the old one */
        if (!h) {
            st->cuts_oom = 1;
            st->hist_len = 0;
            return;
        }
        memcpy(h, d + (st->pos - base), len);
        free(st->hist);
        st->hist = h;
        st->hist_cap = len;
    } else {
        memmove(st->hist, d + (st->pos - base), len);
    }
    st->hist_len = len;
}

/*
 * Scan data d[0..n), the bytes at absolute offsets [st->fed, st->fed + n),
 * appending every cut decided to st->cuts.  Runs without the GIL.
 */
static void cdc_run(cdc_state *st, const uint8_t *d, uint64_t n)
{
    const uint64_t base = st->fed, end = st->fed + n;

    judge_windows(st, d, base, n);
    if (st->hist_len) {
        /* the scan stopped in the bytes before these: go on over them joined
         * with enough new ones that, after, it is past `base` or waiting */
        uint64_t hbase = base - st->hist_len;
        uint64_t j = 2 * st->p.fmin + 2 * WINDOW;
        size_t take = (size_t)(n < j ? n : j);
        size_t len = st->hist_len + take;
        if (len > st->hist_cap) {
            uint8_t *h = realloc(st->hist, len);
            if (!h) {
                st->cuts_oom = 1;
                return;
            }
            st->hist = h;
            st->hist_cap = len;
        }
        memcpy(st->hist + st->hist_len, d, take);
        cdc_core(st, st->hist, hbase, base + take);
        if (take == n || st->pos < base) {
            keep_history(st, st->hist, hbase, base + take);
            return;
        }
    }
    if (st->pos < base)
        st->pos = base; /* cannot happen: the scan never needs bytes it was not kept */
    cdc_core(st, d, base, end);
    keep_history(st, d, base, end);
}

/* ---- parameters ---------------------------------------------------------- */

static int log2_exact(uint64_t v)
{
    int b = 0;
    while ((1ULL << b) < v)
        b++;
    return (1ULL << b) == v ? b : -1;
}

static int params_init(cdc_params *p, Py_ssize_t min, Py_ssize_t avg, Py_ssize_t max,
                       Py_ssize_t forced_min)
{
    if (avg < 256 || (uint64_t)avg > LIMIT_MAX || log2_exact((uint64_t)avg) < 0) {
        PyErr_Format(PyExc_ValueError,
                     "avg_size must be a power of two from 256 to 2**30, got %zd", avg);
        return -1;
    }
    if (min < WINDOW || min > avg) {
        PyErr_Format(PyExc_ValueError,
                     "min_size must be from %d to avg_size (%zd), got %zd", WINDOW, avg, min);
        return -1;
    }
    if (max < avg || (uint64_t)max > LIMIT_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "max_size must be from avg_size (%zd) to 2**30, got %zd", avg, max);
        return -1;
    }
    if (forced_min < 1 || forced_min > max) {
        PyErr_Format(PyExc_ValueError,
                     "forced_min must be from 1 to max_size (%zd), got %zd", max, forced_min);
        return -1;
    }
    int bits = log2_exact((uint64_t)avg);
    p->min = (uint64_t)min;
    p->avg = (uint64_t)avg;
    p->max = (uint64_t)max;
    p->forced_min = (uint64_t)forced_min;
    p->fmin = p->min > p->forced_min ? p->min : p->forced_min;
    p->mask_f = ~0ULL << (64 - FORMAT_BITS);
    p->mask_s = ~0ULL << (64 - (bits + 2));
    p->mask_l = ~0ULL << (64 - (bits - 2));
    return 0;
}

/* ---- boundaries ---------------------------------------------------------- */

/* Queue proposals from a Python iterable; with the GIL held. */
static int queue_boundaries(cdc_state *st, PyObject *seq)
{
    if (seq == NULL || seq == Py_None)
        return 0;
    PyObject *fast = PySequence_Fast(seq, "boundaries must be a sequence of offsets");
    if (!fast)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    /* compact the queue */
    if (st->fq_head) {
        size_t keep = st->fq_len - st->fq_head;
        memmove(st->fq, st->fq + st->fq_head, keep * sizeof(uint64_t));
        memmove(st->fjh, st->fjh + st->fq_head, keep * sizeof(uint64_t));
        memmove(st->fgap, st->fgap + st->fq_head, keep * sizeof(uint64_t));
        st->fq_judged = st->fq_judged > st->fq_head ? st->fq_judged - st->fq_head : 0;
        st->fq_len = keep;
        st->fq_head = 0;
    }
    if (st->fq_len + (size_t)n > st->fq_cap) {
        size_t cap = st->fq_cap ? st->fq_cap : 64;
        while (cap < st->fq_len + (size_t)n)
            cap *= 2;
        uint64_t *q = realloc(st->fq, cap * sizeof(uint64_t));
        if (q)
            st->fq = q;
        uint64_t *j = q ? realloc(st->fjh, cap * sizeof(uint64_t)) : NULL;
        if (j)
            st->fjh = j;
        uint64_t *g = j ? realloc(st->fgap, cap * sizeof(uint64_t)) : NULL;
        if (g)
            st->fgap = g;
        if (!q || !j || !g) {
            Py_DECREF(fast);
            PyErr_NoMemory();
            return -1;
        }
        st->fq_cap = cap;
    }
    size_t old_len = st->fq_len;
    uint64_t last = st->last_proposed;
    int have = st->have_proposed;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long long v = PyLong_AsUnsignedLongLong(items[i]);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "boundary offsets must be non-negative ints, got %R",
                         items[i]);
            goto fail;
        }
        if (have && v <= last) {
            PyErr_Format(PyExc_ValueError,
                         "boundary offsets must be strictly increasing: %llu after %llu", v,
                         (unsigned long long)last);
            goto fail;
        }
        if (v < st->fed) {
            PyErr_Format(PyExc_ValueError,
                         "boundary offset %llu is before the %llu bytes already fed", v,
                         (unsigned long long)st->fed);
            goto fail;
        }
        st->fjh[st->fq_len] = 0;
        st->fgap[st->fq_len] = have ? v - last : v;
        st->fq[st->fq_len++] = v;
        last = v;
        have = 1;
    }
    st->last_proposed = last;
    st->have_proposed = have;
    Py_DECREF(fast);
    return 0;
fail:
    st->fq_len = old_len; /* all or nothing */
    Py_DECREF(fast);
    return -1;
}

static PyObject *cuts_to_list(cdc_state *st)
{
    if (st->cuts_oom) {
        st->cuts_oom = 0;
        st->n_cuts = 0;
        return PyErr_NoMemory();
    }
    PyObject *list = PyList_New((Py_ssize_t)st->n_cuts);
    if (!list)
        return NULL;
    for (size_t i = 0; i < st->n_cuts; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(st->cuts[i]);
        if (!v) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, v);
    }
    st->n_cuts = 0;
    return list;
}


/* ---- the Chunker type ---------------------------------------------------- */

typedef struct {
    PyObject_HEAD cdc_state st;
    int busy;
    int finished;
} ChunkerObject;

static void Chunker_dealloc(ChunkerObject *self)
{
    free(self->st.fq);
    free(self->st.fjh);
    free(self->st.fgap);
    free(self->st.hist);
    free(self->st.cuts);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Chunker_init(ChunkerObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"min_size", "avg_size", "max_size", "forced_min", NULL};
    Py_ssize_t min = DEFAULT_MIN, avg = DEFAULT_AVG, max = DEFAULT_MAX,
               forced_min = DEFAULT_FORCED_MIN;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|nnnn:Chunker", kwlist, &min, &avg, &max,
                                     &forced_min))
        return -1;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Chunker is in use by another thread");
        return -1;
    }
    free(self->st.fq);
    free(self->st.fjh);
    free(self->st.fgap);
    free(self->st.hist);
    free(self->st.cuts);
    memset(&self->st, 0, sizeof self->st);
    self->finished = 0;
    if (params_init(&self->st.p, min, avg, max, forced_min) < 0)
        return -1;
    return 0;
}

static int Chunker_enter(ChunkerObject *self)
{
    if (self->st.p.avg == 0) {
        PyErr_SetString(PyExc_RuntimeError, "Chunker is not initialised");
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Chunker is in use by another thread");
        return -1;
    }
    if (self->finished) {
        PyErr_SetString(PyExc_RuntimeError, "Chunker is finished");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(Chunker_feed_doc,
             "feed(data, boundaries=None) -> list[int]\n\n"
             "Scan the next bytes of the stream and return the absolute offsets of the\n"
             "chunk ends decided so far (each is final).  `data` is any contiguous\n"
             "buffer (bytes, bytearray, memoryview, mmap); it is not kept.\n"
             "`boundaries` are forced boundary proposals: absolute offsets, strictly\n"
             "increasing across calls and not before the bytes already fed (they may\n"
             "lie beyond this buffer).  The GIL is released while scanning.");

static PyObject *Chunker_feed(ChunkerObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data", "boundaries", NULL};
    PyObject *data, *bounds = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:feed", kwlist, &data, &bounds))
        return NULL;
    if (Chunker_enter(self) < 0)
        return NULL;
    Py_buffer view;
    if (get_buffer(data, &view) < 0)
        return NULL;
    if (queue_boundaries(&self->st, bounds) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    self->busy = 1;
    if (view.len >= 65536) {
        Py_BEGIN_ALLOW_THREADS
        cdc_run(&self->st, view.buf, (uint64_t)view.len);
        Py_END_ALLOW_THREADS
    } else {
        cdc_run(&self->st, view.buf, (uint64_t)view.len);
    }
    self->busy = 0;
    self->st.fed += (uint64_t)view.len;
    PyBuffer_Release(&view);
    return cuts_to_list(&self->st);
}

PyDoc_STRVAR(Chunker_finish_doc,
             "finish() -> list[int]\n\n"
             "End the stream: return [offset of the end] if bytes remain after the last\n"
             "cut, else [].  Boundaries proposed at or beyond the end are dropped.\n"
             "The Chunker cannot be fed afterwards.");

static PyObject *Chunker_finish(ChunkerObject *self, PyObject *Py_UNUSED(ignored))
{
    if (Chunker_enter(self) < 0)
        return NULL;
    cdc_state *st = &self->st;
    self->finished = 1;
    st->dropped += st->fq_len - st->fq_head;
    st->fq_head = st->fq_len = st->fq_judged = 0;
    st->hcut = 0;
    st->hist_len = 0;
    if (st->fed > st->start && push_cut(st, st->fed, CUT_END) < 0)
        return PyErr_NoMemory();
    return cuts_to_list(st);
}

static PyObject *Chunker_get_counts(ChunkerObject *self, void *Py_UNUSED(c))
{
    const uint64_t *k = self->st.counts;
    return Py_BuildValue("{sKsKsKsKsKsK}", "hash", (unsigned long long)k[CUT_HASH], "format",
                         (unsigned long long)k[CUT_FORMAT], "max",
                         (unsigned long long)k[CUT_MAX], "end", (unsigned long long)k[CUT_END],
                         "dropped", (unsigned long long)self->st.dropped, "merged",
                         (unsigned long long)self->st.merged);
}

#define U64_GETTER(name, expr)                                                                 \
    static PyObject *Chunker_get_##name(ChunkerObject *self, void *Py_UNUSED(c))               \
    {                                                                                          \
        return PyLong_FromUnsignedLongLong(expr);                                              \
    }
U64_GETTER(min_size, self->st.p.min)
U64_GETTER(avg_size, self->st.p.avg)
U64_GETTER(max_size, self->st.p.max)
U64_GETTER(forced_min, self->st.p.forced_min)
U64_GETTER(position, self->st.fed)
U64_GETTER(last_cut, self->st.start)

static PyObject *Chunker_get_finished(ChunkerObject *self, void *Py_UNUSED(c))
{
    return PyBool_FromLong(self->finished);
}

static PyGetSetDef Chunker_getset[] = {
    {"min_size", (getter)Chunker_get_min_size, NULL, "minimum chunk size", NULL},
    {"avg_size", (getter)Chunker_get_avg_size, NULL, "normal chunk size (mask switch)", NULL},
    {"max_size", (getter)Chunker_get_max_size, NULL, "maximum chunk size", NULL},
    {"forced_min", (getter)Chunker_get_forced_min, NULL,
     "a forced boundary closer than this to the last cut is dropped", NULL},
    {"position", (getter)Chunker_get_position, NULL, "bytes fed so far", NULL},
    {"last_cut", (getter)Chunker_get_last_cut, NULL, "offset of the last cut (0 at first)",
     NULL},
    {"counts", (getter)Chunker_get_counts, NULL,
     "cuts made so far by kind (hash, format, max, end), boundaries dropped (too close\n"
     "to the last cut or at the end) and merged (weak ones passed over)", NULL},
    {"finished", (getter)Chunker_get_finished, NULL, "whether finish() was called", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Chunker_methods[] = {
    {"feed", (PyCFunction)(void (*)(void))Chunker_feed, METH_VARARGS | METH_KEYWORDS,
     Chunker_feed_doc},
    {"finish", (PyCFunction)Chunker_finish, METH_NOARGS, Chunker_finish_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(Chunker_doc,
             "Chunker(min_size=2048, avg_size=8192, max_size=65536, forced_min=64)\n\n"
             "A streaming content-defined chunker.  Feed it the stream in buffers of any\n"
             "sizes; the cuts are the same however the stream is split.  avg_size is a\n"
             "power of two (256..2**30); 64 <= min_size <= avg_size <= max_size.");

static PyTypeObject ChunkerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "vtstore.chunking._cdc.Chunker",
    .tp_basicsize = sizeof(ChunkerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = Chunker_doc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Chunker_init,
    .tp_dealloc = (destructor)Chunker_dealloc,
    .tp_methods = Chunker_methods,
    .tp_getset = Chunker_getset,
};

/* ---- module functions ---------------------------------------------------- */

PyDoc_STRVAR(cut_offsets_doc,
             "cut_offsets(data, min_size=2048, avg_size=8192, max_size=65536,\n"
             "            boundaries=None, forced_min=64) -> list[int]\n\n"
             "The chunk end offsets of `data` taken as a whole stream (the last one is\n"
             "len(data) when data is not empty).  The GIL is released while scanning.");

static PyObject *cdc_cut_offsets(PyObject *Py_UNUSED(mod), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data",       "min_size",   "avg_size", "max_size",
                             "boundaries", "forced_min", NULL};
    PyObject *data, *bounds = Py_None;
    Py_ssize_t min = DEFAULT_MIN, avg = DEFAULT_AVG, max = DEFAULT_MAX,
               forced_min = DEFAULT_FORCED_MIN;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|nnnOn:cut_offsets", kwlist, &data, &min,
                                     &avg, &max, &bounds, &forced_min))
        return NULL;
    cdc_state st;
    memset(&st, 0, sizeof st);
    if (params_init(&st.p, min, avg, max, forced_min) < 0)
        return NULL;
    Py_buffer view;
    if (get_buffer(data, &view) < 0)
        return NULL;
    PyObject *result = NULL;
    if (queue_boundaries(&st, bounds) < 0)
        goto done;
    Py_BEGIN_ALLOW_THREADS
    cdc_run(&st, view.buf, (uint64_t)view.len);
    Py_END_ALLOW_THREADS
    st.fed = (uint64_t)view.len;
    if (st.fed > st.start)
        push_cut(&st, st.fed, CUT_END);
    result = cuts_to_list(&st);
done:
    PyBuffer_Release(&view);
    free(st.fq);
    free(st.fjh);
    free(st.fgap);
    free(st.hist);
    free(st.cuts);
    return result;
}

PyDoc_STRVAR(gear_table_doc, "gear_table() -> tuple[int, ...]\n\nThe 256 gear hash values.");

static PyObject *cdc_gear_table(PyObject *Py_UNUSED(mod), PyObject *Py_UNUSED(ignored))
{
    PyObject *t = PyTuple_New(256);
    if (!t)
        return NULL;
    for (int i = 0; i < 256; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(GEAR[i]);
        if (!v) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

PyDoc_STRVAR(run_byte_doc,
             "run_byte(data) -> int\n\n"
             "The byte value if `data` is one byte value repeated (len >= 1), else -1.");

static PyObject *cdc_run_byte(PyObject *Py_UNUSED(mod), PyObject *arg)
{
    Py_buffer view;
    if (get_buffer(arg, &view) < 0)
        return NULL;
    const uint8_t *d = view.buf;
    size_t n = (size_t)view.len;
    long r = -1;
    if (n > 0 && d[0] == d[n - 1] && d[0] == d[n / 2]) {
        /* compare the buffer with itself shifted by one: memcmp is vectorised */
        if (n == 1 || memcmp(d, d + 1, n - 1) == 0)
            r = d[0];
    }
    PyBuffer_Release(&view);
    return PyLong_FromLong(r);
}

/* The cut list of run_bytes as offsets, checked: increasing, after
 * `start`, inside the `len` octets of data that begin at offset `base`. */
static int parse_cuts(PyObject **items, Py_ssize_t n, uint64_t start, uint64_t base, uint64_t len,
                      uint64_t *ends)
{
    uint64_t prev = start;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long long e = PyLong_AsUnsignedLongLong(items[i]);
        if (e == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        if (e <= prev || prev < base || e > base + len) {
            PyErr_Format(PyExc_ValueError, "cut %llu out of order or outside the data", e);
            return -1;
        }
        ends[i] = e;
        prev = e;
    }
    return 0;
}

/* The byte value if s[0..len) is one value repeated, else -1; three probes
 * reject almost every chunk before the (vectorised) self-shifted memcmp. */
static inline int16_t run_value(const uint8_t *s, size_t len)
{
    if (s[0] == s[len - 1] && s[0] == s[len / 2] && (len == 1 || !memcmp(s, s + 1, len - 1)))
        return s[0];
    return -1;
}

PyDoc_STRVAR(run_bytes_doc,
             "run_bytes(data, start, cuts, base=0) -> list[int] | None\n\n"
             "For the chunks [start, cuts[0]), [cuts[0], cuts[1]), ... of `data`, whose\n"
             "first byte is at absolute offset `base`: None if no chunk is one repeated\n"
             "byte value, else each chunk's byte value or -1.  blockify hands the chunks\n"
             "out as views of the data, uncopied; this runs without the GIL.");

static PyObject *cdc_run_bytes(PyObject *Py_UNUSED(mod), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data", "start", "cuts", "base", NULL};
    PyObject *data, *cuts_obj;
    unsigned long long start, base = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OKO|K:run_bytes", kwlist, &data, &start,
                                     &cuts_obj, &base))
        return NULL;
    Py_buffer view;
    if (get_buffer(data, &view) < 0)
        return NULL;
    PyObject *fast = PySequence_Fast(cuts_obj, "cuts must be a sequence of offsets");
    PyObject *result = NULL;
    uint64_t *ends = NULL;
    int16_t *rb = NULL;
    if (!fast)
        goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    ends = malloc((size_t)(n ? n : 1) * sizeof *ends);
    rb = malloc((size_t)(n ? n : 1) * sizeof *rb);
    if (!ends || !rb) {
        PyErr_NoMemory();
        goto done;
    }
    if (parse_cuts(items, n, start, base, (uint64_t)view.len, ends) < 0)
        goto done;
    uint64_t prev;
    int any_run = 0;
    const uint8_t *src = view.buf;
    Py_BEGIN_ALLOW_THREADS
    prev = start;
    for (Py_ssize_t i = 0; i < n; i++) {
        size_t len = (size_t)(ends[i] - prev);
        const uint8_t *s = src + (prev - base);
        rb[i] = run_value(s, len);
        any_run |= rb[i] >= 0;
        prev = ends[i];
    }
    Py_END_ALLOW_THREADS
    if (!any_run) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    result = PyList_New(n);
    if (!result)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLong(rb[i]);
        if (!v) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, v);
    }
done:
    Py_XDECREF(fast);
    free(ends);
    free(rb);
    PyBuffer_Release(&view);
    return result;
}


/* ---- the mbox scanner's search ----------------------------------------------- */

/* Offsets of mbox boundaries in d[i..n), appended to *out (grown as needed);
 * returns the index where the search stopped (a pattern that may run past n
 * is left for the next buffer), or (size_t)-1 when out of memory.  *in_header
 * says whether the search is inside a message's header (looking for the blank
 * line that ends it) or in a body (looking for "From " after a blank line). */
static size_t mbox_search(const uint8_t *d, size_t i, size_t n, int *in_header, int split,
                          uint64_t **out, size_t *n_out, size_t *cap, int *done)
{
    for (;;) {
        size_t found;
        if (*in_header) {
            /* the first "\n\n" or "\r\n\r\n" starting at or after i */
            size_t k = i;
            found = (size_t)-1;
            while (k < n) {
                const uint8_t *nl = memchr(d + k, '\n', n - k);
                if (!nl)
                    break;
                k = (size_t)(nl - d);
                if (k + 1 >= n)
                    break;
                if (d[k + 1] == '\n') {
                    found = k + 2;
                    break;
                }
                if (d[k + 1] == '\r' && k >= i + 1 && d[k - 1] == '\r') {
                    if (k + 2 >= n)
                        break;
                    if (d[k + 2] == '\n') {
                        found = k + 3;
                        break;
                    }
                }
                k++;
            }
            if (found == (size_t)-1)
                return i;
            *in_header = 0;
        } else {
            /* "\nFrom " after a blank line */
            found = (size_t)-1;
            size_t k = i;
            while (k + 6 <= n) {
                const uint8_t *f = memmem(d + k, n - k, "\nFrom ", 6);
                if (!f)
                    break;
                size_t j = (size_t)(f - d);
                if ((j >= 1 && d[j - 1] == '\n') ||
                    (j >= 3 && d[j - 3] == '\r' && d[j - 2] == '\n' && d[j - 1] == '\r')) {
                    found = j + 1;
                    break;
                }
                k = j + 1;
                i = k;
            }
            if (found == (size_t)-1)
                return i;
            *in_header = 1;
        }
        if (*n_out == *cap) {
            size_t c = *cap ? *cap * 2 : 1024;
            uint64_t *o = realloc(*out, c * sizeof(uint64_t));
            if (!o)
                return (size_t)-1;
            *out = o;
            *cap = c;
        }
        (*out)[(*n_out)++] = found;
        if (*in_header) {
            i = found + 5; /* past "From " */
        } else {
            i = found;
            if (!split) {
                *done = 1;
                return i;
            }
        }
    }
}

PyDoc_STRVAR(mbox_scan_doc,
             "mbox_scan(data, start, in_header, split_messages=True, base=0)\n"
             "    -> (offsets, in_header, stop, done)\n\n"
             "The mbox scanner's search over data[start:] (without the GIL): the\n"
             "offsets (base + index into data) where a message's body starts (after the blank line\n"
             "ending its header) and where a message starts (\"From \" after a blank\n"
             "line), alternating from the state `in_header`; the state after them;\n"
             "the index where the search stopped (what lies after may be part of a\n"
             "pattern cut by the end of data); whether it ended for good\n"
             "(split_messages false: after the first body start).");

static PyObject *cdc_mbox_scan(PyObject *Py_UNUSED(mod), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data", "start", "in_header", "split_messages", "base", NULL};
    PyObject *data;
    Py_ssize_t start;
    unsigned long long base = 0;
    int in_header, split = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Onp|pK:mbox_scan", kwlist, &data, &start,
                                     &in_header, &split, &base))
        return NULL;
    Py_buffer view;
    if (get_buffer(data, &view) < 0)
        return NULL;
    if (start < 0 || start > view.len) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "start %zd outside the data (%zd bytes)", start,
                     view.len);
        return NULL;
    }
    uint64_t *out = NULL;
    size_t n_out = 0, cap = 0, stop;
    int done = 0;
    Py_BEGIN_ALLOW_THREADS
    stop = mbox_search(view.buf, (size_t)start, (size_t)view.len, &in_header, split, &out,
                       &n_out, &cap, &done);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    PyObject *list = NULL, *result = NULL;
    if (stop == (size_t)-1) {
        PyErr_NoMemory();
        goto done;
    }
    list = PyList_New((Py_ssize_t)n_out);
    if (!list)
        goto done;
    for (size_t k = 0; k < n_out; k++) {
        PyObject *v = PyLong_FromUnsignedLongLong(base + out[k]);
        if (!v)
            goto done;
        PyList_SET_ITEM(list, (Py_ssize_t)k, v);
    }
    result = Py_BuildValue("(OOnO)", list, in_header ? Py_True : Py_False, (Py_ssize_t)stop,
                           done ? Py_True : Py_False);
done:
    Py_XDECREF(list);
    free(out);
    return result;
}

#include "_tarscan.h"

static PyMethodDef cdc_methods[] = {
    {"cut_offsets", (PyCFunction)(void (*)(void))cdc_cut_offsets, METH_VARARGS | METH_KEYWORDS,
     cut_offsets_doc},
    {"mbox_scan", (PyCFunction)(void (*)(void))cdc_mbox_scan, METH_VARARGS | METH_KEYWORDS,
     mbox_scan_doc},
    {"tar_scan", (PyCFunction)cdc_tar_scan, METH_VARARGS, tar_scan_doc},
    {"gear_table", (PyCFunction)cdc_gear_table, METH_NOARGS, gear_table_doc},
    {"run_byte", (PyCFunction)cdc_run_byte, METH_O, run_byte_doc},
    {"run_bytes", (PyCFunction)(void (*)(void))cdc_run_bytes, METH_VARARGS | METH_KEYWORDS,
     run_bytes_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef cdc_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "vtstore.chunking._cdc",
    .m_doc = "The native gear-hash content-defined chunker (see docs/CHUNKING.md).",
    .m_size = -1,
    .m_methods = cdc_methods,
};

PyMODINIT_FUNC PyInit__cdc(void)
{
    init_gear();
    if (PyType_Ready(&ChunkerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&cdc_module);
    if (!m)
        return NULL;
    Py_INCREF(&ChunkerType);
    if (PyModule_AddObject(m, "Chunker", (PyObject *)&ChunkerType) < 0) {
        Py_DECREF(&ChunkerType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "DEFAULT_MIN", DEFAULT_MIN) < 0 ||
        PyModule_AddIntConstant(m, "DEFAULT_AVG", DEFAULT_AVG) < 0 ||
        PyModule_AddIntConstant(m, "DEFAULT_MAX", DEFAULT_MAX) < 0 ||
        PyModule_AddIntConstant(m, "DEFAULT_FORCED_MIN", DEFAULT_FORCED_MIN) < 0 ||
        PyModule_AddIntConstant(m, "WINDOW", WINDOW) < 0 ||
        PyModule_AddIntConstant(m, "FORMAT_BITS", FORMAT_BITS) < 0 ||
        PyModule_AddObject(m, "GEAR_SEED", PyLong_FromUnsignedLongLong(GEAR_SEED)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
