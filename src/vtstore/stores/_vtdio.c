/*
 * _vtdio: the `.vtd` writer's hot path in one call, with the GIL released.
 *
 * The datadir's writer thread appends frames of blocks to `.vtd` data files
 * (format: vtstore/stores/vtd.py and docs/FORMATS.md).  One record is
 *
 *     record  := varint(flags) varint(n) payload[n] crc32[4]
 *     crc32   := CRC-32 (IEEE, as zlib.crc32) of the two header varints and
 *                the n payload octets, 4 octets big-endian
 *     payload := entry+  (plain blocks record)  or  a zstd frame of entry+
 *     entry   := varint(len) data[len]
 *
 * with the big-endian base-128 varints of vtstore.codec (7 bits an octet,
 * most significant group first, 0x80 on every octet but the last).
 *
 * Doing that in Python costs a join, a CRC call, a pwritev and an index entry
 * per block, each of them giving up and re-taking the GIL, and every re-take
 * can stall behind the other threads.  Here `write_record` builds an iovec
 * array over the caller's buffers (no copy), computes the CRC over the pieces
 * and writes them, all in one GIL release; `index_values` encodes the index
 * values of a frame's blocks in one call.
 *
 * The CRC is CRC-32/IEEE (reflected polynomial 0xEDB88320, pre- and
 * post-inverted, so crc32(b, crc32(a)) == crc32(a + b)).  The fast paths fold
 * the data with carry-less multiplication, after Intel's "Fast CRC Computation
 * for Generic Polynomials Using PCLMULQDQ Instruction" (Gopal et al., 2009):
 * four 128-bit lanes fold 64 octets a step (the AVX-512 path: four 512-bit
 * registers, 256 octets a step), the lanes fold into one, then 128 -> 64 -> 32
 * bits and a Barrett reduction.  The fold constants are x^k mod P for the
 * fold distances, bit-reflected; they were computed (and the algorithm
 * checked against zlib) in Python, and check_crc() re-checks every
 * implementation on import.  Without PCLMULQDQ, slice-by-16 tables.
 */

#define _GNU_SOURCE 1 /* sync_file_range, pwritev; pyconfig.h defines it the same way */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "../_vtbuf.h"
#include "../_vtimpl.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* SIMD code needs GCC or Clang (target attributes, __builtin_cpu_supports) */
#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_X86 1
#include <immintrin.h>
#else
#define HAVE_X86 0
#endif

/* A record payload longer than this is refused (vtd.MAX_PAYLOAD). */
#define MAX_PAYLOAD (64 * 1024 * 1024)

/* Below this many octets a CRC call keeps the GIL: computing it takes a few
 * microseconds, while a thread that gives the GIL up can wait a whole switch
 * interval (5 ms) to get it back when other threads are busy. */
#define GIL_RELEASE_MIN (32 * 1024)

/* entries_payload copies; below this it keeps the GIL (a copy is ~20 GB/s). */
#define COPY_RELEASE_MIN (1024 * 1024)

/* ---- varints --------------------------------------------------------------- */

/* The longest varint of a uint64_t: ceil(64 / 7). */
#define VARINT_MAX 10

static inline size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Write varint(v) at out; return its length. */
static inline size_t put_varint(uint8_t *out, uint64_t v)
{
    if (v < 0x80) {
        out[0] = (uint8_t)v;
        return 1;
    }
    size_t n = varint_len(v);
    out[n - 1] = (uint8_t)(v & 0x7F);
    for (size_t i = n - 1; i-- > 0;) {
        v >>= 7;
        out[i] = (uint8_t)(0x80 | (v & 0x7F));
    }
    return n;
}

/* ---- CRC-32: tables --------------------------------------------------------
 *
 * Every implementation updates the raw CRC register (the zlib value with the
 * pre/post inversion taken off): crc32(data, value) = ~update(~value, data). */

static uint32_t crc_table[16][256];

static void make_tables(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = crc_table[0][i];
        for (int t = 1; t < 16; t++) {
            c = (c >> 8) ^ crc_table[0][c & 0xFF];
            crc_table[t][i] = c;
        }
    }
}

static inline uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Slice-by-16: 16 table lookups per 16 octets. */
static uint32_t crc_update_table(uint32_t crc, const uint8_t *p, size_t n)
{
    const uint32_t(*t)[256] = (const uint32_t(*)[256])crc_table;
    while (n >= 16) {
        uint32_t a = crc ^ le32(p), b = le32(p + 4), c = le32(p + 8), d = le32(p + 12);
        crc = t[15][a & 0xFF] ^ t[14][(a >> 8) & 0xFF] ^ t[13][(a >> 16) & 0xFF] ^ t[12][a >> 24] ^
              t[11][b & 0xFF] ^ t[10][(b >> 8) & 0xFF] ^ t[9][(b >> 16) & 0xFF] ^ t[8][b >> 24] ^
              t[7][c & 0xFF] ^ t[6][(c >> 8) & 0xFF] ^ t[5][(c >> 16) & 0xFF] ^ t[4][c >> 24] ^
              t[3][d & 0xFF] ^ t[2][(d >> 8) & 0xFF] ^ t[1][(d >> 16) & 0xFF] ^ t[0][d >> 24];
        p += 16;
        n -= 16;
    }
    while (n--)
        crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFF];
    return crc;
}

/* ---- CRC-32: carry-less multiplication ------------------------------------
 *
 * Reflected representation: a 128-bit lane loaded little-endian holds the
 * message's earlier (higher degree) bits in its low quadword.  Folding a lane
 * forward by D bits multiplies its low quadword by K(D + 32) and its high
 * quadword by K(D - 32) (imm 0x00 and 0x11), where K(e) is x^e mod P
 * bit-reflected over 32 bits and shifted left by one (the reflected product is
 * one bit short).  Computed in Python from P = 0x104C11DB7:
 *
 *   K(4*128+32) = 0x154442bd4  K(4*128-32) = 0x1c6e41596   (fold 64 octets)
 *   K(128+32)   = 0x1751997d0  K(128-32)   = 0x0ccaa009e   (fold 16 octets)
 *   K(64)       = 0x163cd6124                             (64 -> 32 bits)
 *   K(16*128+32)= 0x11542778a  K(16*128-32)= 0x1322d1430   (fold 256 octets)
 *   P'  = 0x1db710641 (P reflected over 33 bits)
 *   mu' = 0x1f7011641 (floor(x^64 / P) reflected over 33 bits)
 */

#if HAVE_X86
#define K_FOLD64_LO 0x154442bd4ull
#define K_FOLD64_HI 0x1c6e41596ull
#define K_FOLD16_LO 0x1751997d0ull
#define K_FOLD16_HI 0x0ccaa009eull
#define K_64TO32 0x163cd6124ull
#define K_FOLD256_LO 0x11542778aull
#define K_FOLD256_HI 0x1322d1430ull
#define K_POLY 0x1db710641ull
#define K_MU 0x1f7011641ull

#define PCLMUL_FN static inline __attribute__((always_inline, target("pclmul,sse4.1")))

/* x folded forward by the distance of k, plus y */
PCLMUL_FN __m128i fold128(__m128i x, __m128i k, __m128i y)
{
    __m128i lo = _mm_clmulepi64_si128(x, k, 0x00);
    __m128i hi = _mm_clmulepi64_si128(x, k, 0x11);
    return _mm_xor_si128(_mm_xor_si128(lo, hi), y);
}

/* Finish from four lanes x0..x3 of consecutive 16-octet blocks (p, n: what
 * remains of the data after them, a multiple of 16): fold the lanes into one,
 * fold in the remaining blocks, reduce to 32 bits. */
PCLMUL_FN uint32_t crc_finish(__m128i x0, __m128i x1, __m128i x2, __m128i x3, const uint8_t *p,
                              size_t n)
{
    const __m128i k34 = _mm_set_epi64x((long long)K_FOLD16_HI, (long long)K_FOLD16_LO);
    __m128i x = fold128(x0, k34, x1);
    x = fold128(x, k34, x2);
    x = fold128(x, k34, x3);
    for (; n >= 16; p += 16, n -= 16)
        x = fold128(x, k34, _mm_loadu_si128((const __m128i *)p));

    /* 128 -> 64 bits: the low quadword times K(96) into the high one */
    const __m128i mask32 = _mm_setr_epi32(-1, 0, -1, 0);
    __m128i t = _mm_clmulepi64_si128(x, k34, 0x10);
    x = _mm_xor_si128(_mm_srli_si128(x, 8), t);
    /* 64 -> 32 bits */
    const __m128i k5 = _mm_set_epi64x(0, (long long)K_64TO32);
    t = _mm_srli_si128(x, 4);
    x = _mm_and_si128(x, mask32);
    x = _mm_xor_si128(_mm_clmulepi64_si128(x, k5, 0x00), t);
    /* Barrett reduction */
    const __m128i pm = _mm_set_epi64x((long long)K_MU, (long long)K_POLY);
    t = _mm_and_si128(x, mask32);
    t = _mm_and_si128(_mm_clmulepi64_si128(t, pm, 0x10), mask32);
    t = _mm_clmulepi64_si128(t, pm, 0x00);
    x = _mm_xor_si128(x, t);
    return (uint32_t)_mm_extract_epi32(x, 1);
}

__attribute__((target("pclmul,sse4.1"))) static uint32_t crc_update_pclmul(uint32_t crc,
                                                                          const uint8_t *p,
                                                                          size_t n)
{
    if (n < 64)
        return crc_update_table(crc, p, n);
    size_t tail = n & 15;
    n -= tail;
    __m128i x0 = _mm_loadu_si128((const __m128i *)p);
    __m128i x1 = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i x2 = _mm_loadu_si128((const __m128i *)(p + 32));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(p + 48));
    x0 = _mm_xor_si128(x0, _mm_cvtsi32_si128((int)crc));
    p += 64;
    n -= 64;
    const __m128i k12 = _mm_set_epi64x((long long)K_FOLD64_HI, (long long)K_FOLD64_LO);
    for (; n >= 64; p += 64, n -= 64) {
        x0 = fold128(x0, k12, _mm_loadu_si128((const __m128i *)p));
        x1 = fold128(x1, k12, _mm_loadu_si128((const __m128i *)(p + 16)));
        x2 = fold128(x2, k12, _mm_loadu_si128((const __m128i *)(p + 32)));
        x3 = fold128(x3, k12, _mm_loadu_si128((const __m128i *)(p + 48)));
    }
    crc = crc_finish(x0, x1, x2, x3, p, n);
    return crc_update_table(crc, p + n, tail);
}

#define VPCLMUL_TARGET "avx512f,avx512vl,vpclmulqdq,pclmul,sse4.1"
#define VPCLMUL_FN static inline __attribute__((always_inline, target(VPCLMUL_TARGET)))

VPCLMUL_FN __m512i fold512(__m512i x, __m512i k, __m512i y)
{
    __m512i lo = _mm512_clmulepi64_epi128(x, k, 0x00);
    __m512i hi = _mm512_clmulepi64_epi128(x, k, 0x11);
    return _mm512_ternarylogic_epi64(lo, hi, y, 0x96); /* lo ^ hi ^ y */
}

/* The same fold, each 128-bit lane of a 512-bit register on its own: four
 * registers fold 256 octets a step, then fold into one 64 octets apart. */
__attribute__((target(VPCLMUL_TARGET))) static uint32_t crc_update_vpclmul(uint32_t crc,
                                                                          const uint8_t *p,
                                                                          size_t n)
{
    if (n < 512)
        return crc_update_pclmul(crc, p, n);
    size_t tail = n & 15;
    n -= tail;
    __m512i z0 = _mm512_loadu_si512((const void *)p);
    __m512i z1 = _mm512_loadu_si512((const void *)(p + 64));
    __m512i z2 = _mm512_loadu_si512((const void *)(p + 128));
    __m512i z3 = _mm512_loadu_si512((const void *)(p + 192));
    z0 = _mm512_xor_si512(z0, _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)crc)));
    p += 256;
    n -= 256;
    const __m512i k256 = _mm512_broadcast_i32x4(
        _mm_set_epi64x((long long)K_FOLD256_HI, (long long)K_FOLD256_LO));
    for (; n >= 256; p += 256, n -= 256) {
        z0 = fold512(z0, k256, _mm512_loadu_si512((const void *)p));
        z1 = fold512(z1, k256, _mm512_loadu_si512((const void *)(p + 64)));
        z2 = fold512(z2, k256, _mm512_loadu_si512((const void *)(p + 128)));
        z3 = fold512(z3, k256, _mm512_loadu_si512((const void *)(p + 192)));
    }
    const __m512i k64 =
        _mm512_broadcast_i32x4(_mm_set_epi64x((long long)K_FOLD64_HI, (long long)K_FOLD64_LO));
    __m512i z = fold512(z0, k64, z1);
    z = fold512(z, k64, z2);
    z = fold512(z, k64, z3);
    for (; n >= 64; p += 64, n -= 64)
        z = fold512(z, k64, _mm512_loadu_si512((const void *)p));
    crc = crc_finish(_mm512_extracti32x4_epi32(z, 0), _mm512_extracti32x4_epi32(z, 1),
                     _mm512_extracti32x4_epi32(z, 2), _mm512_extracti32x4_epi32(z, 3), p, n);
    /* GCC does not always clear the upper register state itself; left dirty,
     * it makes every later SSE instruction in the process slower (on Zen 4,
     * legacy-encoded PCLMULQDQ runs at half speed) */
    _mm256_zeroupper();
    return crc_update_table(crc, p + n, tail);
}
#endif /* HAVE_X86 */

/* ---- choosing an implementation --------------------------------------------- */

typedef uint32_t (*crc_fn)(uint32_t crc, const uint8_t *p, size_t n);

typedef struct {
    const char *name;
    crc_fn update;
    int (*supported)(void);
} impl;

static int always(void)
{
    return 1;
}

#if HAVE_X86
static int have_pclmul(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
}

static int have_vpclmul(void)
{
    __builtin_cpu_init();
    return have_pclmul() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("vpclmulqdq");
}
#endif

/* Fastest first. */
static const impl IMPLS[] = {
#if HAVE_X86
    {"vpclmul", crc_update_vpclmul, have_vpclmul},
    {"pclmul", crc_update_pclmul, have_pclmul},
#endif
    {"table", crc_update_table, always},
};
#define N_IMPLS (sizeof IMPLS / sizeof IMPLS[0])

/* The implementation in use; read once per call, so a switch never affects a
 * call already running. */
static const impl *current_impl = &IMPLS[N_IMPLS - 1];

static const impl *get_impl(void)
{
    return __atomic_load_n(&current_impl, __ATOMIC_ACQUIRE);
}

/* Check an implementation against the bytewise definition on every length up
 * to 2 KiB and at every alignment; 0 if it agrees. */
static int check_crc(const impl *im)
{
    enum { N = 2048 + 64 };
    static uint8_t buf[N];
    uint32_t x = 12345;
    for (size_t i = 0; i < N; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
    /* the bytewise CRC of each prefix extends the previous one: linear, not
     * quadratic.  Every length to 160 (the vector loops' tails and their
     * first full rounds) at each of 16 alignments, then lengths 37 apart to
     * 2 KiB at three: about 0.1 ms a start (every length to 600 at 16
     * alignments took 2.2 ms of each vt that opened a store) */
    for (size_t off = 0; off < 16; off++) {
        uint32_t want = 0x5A5A5A5Au;
        size_t done = 0;
        size_t last = (off == 0 || off == 1 || off == 7) ? N : 160;
        for (size_t n = 0; n + off + 16 <= N && n <= last; n += (n < 160 ? 1 : 37)) {
            for (; done < n; done++)
                want = (want >> 8) ^ crc_table[0][(want ^ buf[off + done]) & 0xFF];
            if (im->update(0x5A5A5A5Au, buf + off, n) != want)
                return -1;
        }
    }
    return 0;
}

/* ---- argument helpers --------------------------------------------------------- */

/* A non-negative int below 2**64, or -1 with an OverflowError (or TypeError). */
static int get_u64(PyObject *obj, const char *what, uint64_t *out)
{
    PyObject *idx = PyNumber_Index(obj);
    if (!idx)
        return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(idx);
    Py_DECREF(idx);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_OverflowError, "%s must be an int in 0..2**64-1, not %R", what,
                         obj);
        }
        return -1;
    }
    *out = v;
    return 0;
}

static int check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi)
{
    if (nargs < lo || nargs > hi) {
        if (lo == hi)
            PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)", name,
                         lo, nargs);
        else
            PyErr_Format(PyExc_TypeError, "%s() takes %zd to %zd arguments (%zd given)", name, lo,
                         hi, nargs);
        return -1;
    }
    return 0;
}

/* The length of a bytes-like object, or -1 with a TypeError. */
static Py_ssize_t buffer_len(PyObject *obj)
{
    if (PyBytes_CheckExact(obj))
        return PyBytes_GET_SIZE(obj);
    Py_buffer view;
    if (get_buffer(obj, &view) < 0)
        return -1;
    Py_ssize_t n = view.len;
    PyBuffer_Release(&view);
    return n;
}

static PyObject *as_sequence(PyObject *obj, const char *name)
{
    if (!PyList_Check(obj) && !PyTuple_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s() takes a list or tuple of bytes-like objects, not %.100s",
                     name, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return PySequence_Fast(obj, "");
}

/* ---- crc32 ---------------------------------------------------------------------- */

PyDoc_STRVAR(crc32_doc,
             "crc32(data, value=0, /) -> int\n\n"
             "CRC-32 (IEEE) of a bytes-like object, continuing from `value`: the same\n"
             "result as zlib.crc32(data, value), so crc32(b, crc32(a)) == crc32(a + b).\n"
             "Uses carry-less multiplication when the CPU has it; the GIL is released\n"
             "for inputs of 32 KiB and more.");

static PyObject *vt_crc32(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("crc32", nargs, 1, 2) < 0)
        return NULL;
    uint32_t value = 0;
    if (nargs == 2) {
        /* like zlib: any int, taken modulo 2**32 */
        PyObject *idx = PyNumber_Index(args[1]);
        if (!idx)
            return NULL;
        unsigned long v = PyLong_AsUnsignedLongMask(idx);
        Py_DECREF(idx);
        if (v == (unsigned long)-1 && PyErr_Occurred())
            return NULL;
        value = (uint32_t)v;
    }
    Py_buffer view;
    if (get_buffer(args[0], &view) < 0)
        return NULL;
    const impl *im = get_impl();
    uint32_t crc;
    if (view.len < GIL_RELEASE_MIN) {
        crc = ~im->update(~value, view.buf, (size_t)view.len);
    } else {
        Py_BEGIN_ALLOW_THREADS
        crc = ~im->update(~value, view.buf, (size_t)view.len);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(crc);
}

PyDoc_STRVAR(crc_implementation_doc,
             "crc_implementation() -> str\n\n"
             "The CRC implementation in use: 'vpclmul' (AVX-512 VPCLMULQDQ), 'pclmul'\n"
             "(PCLMULQDQ) or 'table' (slice-by-16, portable).");

static PyObject *vt_crc_implementation(PyObject *Py_UNUSED(mod), PyObject *Py_UNUSED(ignored))
{
    return PyUnicode_FromString(get_impl()->name);
}

PyDoc_STRVAR(crc_implementations_doc,
             "crc_implementations() -> tuple[str, ...]\n\n"
             "The CRC implementations this CPU can run, fastest first.");

static PyObject *vt_crc_implementations(PyObject *Py_UNUSED(mod), PyObject *Py_UNUSED(ignored))
{
    return vt_impl_names(VT_IMPL_TABLE(IMPLS, impl));
}

PyDoc_STRVAR(set_crc_implementation_doc,
             "set_crc_implementation(name) -> None\n\n"
             "Use CRC implementation `name` from now on (for every thread); None picks\n"
             "the fastest.  ValueError if the name is unknown or this CPU lacks it.");

static PyObject *vt_set_crc_implementation(PyObject *Py_UNUSED(mod), PyObject *arg)
{
    Py_ssize_t i = vt_impl_pick(VT_IMPL_TABLE(IMPLS, impl), arg, "CRC");
    if (i < 0)
        return NULL;
    __atomic_store_n(&current_impl, &IMPLS[i], __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

/* ---- entries_payload ------------------------------------------------------------- */

PyDoc_STRVAR(entries_payload_doc,
             "entries_payload(datas, /) -> bytes\n\n"
             "The blocks payload of `datas` (a list or tuple of bytes-like objects):\n"
             "varint(len(d)) + d for each d, concatenated (b'' for no blocks).  The same\n"
             "octets as vtstore.stores.vtd.encode_entries(datas)[0].");

static PyObject *vt_entries_payload(PyObject *Py_UNUSED(mod), PyObject *arg)
{
    PyObject *fast = as_sequence(arg, "entries_payload");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast), got = 0;
    Py_buffer *views = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *views);
    PyObject *res = NULL;
    if (!views) {
        PyErr_NoMemory();
        goto done;
    }
    size_t total = 0;
    for (; got < n; got++) {
        if (get_buffer(PySequence_Fast_GET_ITEM(fast, got), &views[got]) < 0)
            goto done;
        size_t len = (size_t)views[got].len;
        size_t add = varint_len(len) + len;
        if (total + add < total || total + add > (size_t)PY_SSIZE_T_MAX) {
            PyErr_SetString(PyExc_OverflowError, "entries_payload(): payload too large");
            goto done;
        }
        total += add;
    }
    res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (!res)
        goto done;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(res);
    PyThreadState *ts = total >= COPY_RELEASE_MIN ? PyEval_SaveThread() : NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        size_t len = (size_t)views[i].len;
        out += put_varint(out, len);
        if (len)
            memcpy(out, views[i].buf, len);
        out += len;
    }
    if (ts)
        PyEval_RestoreThread(ts);
done:
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    Py_DECREF(fast);
    return res;
}

/* ---- write_record ------------------------------------------------------------------ */

static int iov_max(void)
{
    static int cached;
    if (!cached) {
        long v = sysconf(_SC_IOV_MAX);
        cached = v > 0 && v <= INT_MAX ? (int)v : 1024;
    }
    return cached;
}

/* Write all of iov[0..n) at `offset` with pwritev, at most IOV_MAX at a time,
 * resuming after short writes and EINTR.  0, or -1 with errno set.  Modifies
 * the iovecs.  Runs without the GIL. */
static int pwrite_all(int fd, struct iovec *iov, size_t n, off_t offset)
{
    size_t i = 0;
    const size_t maxv = (size_t)iov_max();
    while (i < n) {
        if (iov[i].iov_len == 0) {
            i++;
            continue;
        }
        size_t cnt = n - i < maxv ? n - i : maxv;
        ssize_t w = pwritev(fd, iov + i, (int)cnt, offset);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO; /* no progress: do not spin */
            return -1;
        }
        offset += w;
        size_t left = (size_t)w;
        while (i < n && left >= iov[i].iov_len) {
            left -= iov[i].iov_len;
            i++;
        }
        if (left) {
            iov[i].iov_base = (uint8_t *)iov[i].iov_base + left;
            iov[i].iov_len -= left;
        }
    }
    return 0;
}

PyDoc_STRVAR(
    write_record_doc,
    "write_record(fd, offset, flags, parts, entries, /) -> tuple[int, int, int]\n\n"
    "Write one record at file offset `offset` of file descriptor `fd` and return\n"
    "(record_size, payload_offset, payload_length); payload_offset is the header\n"
    "length, the payload's offset within the record.\n\n"
    "The record is varint(flags) varint(n) payload[n] crc32[4], the CRC-32 of the\n"
    "header and payload stored big-endian.  The payload is entries_payload(parts)\n"
    "if `entries` is true, else the concatenation of `parts` (a list or tuple of\n"
    "bytes-like objects).  The parts are not copied: they are written with\n"
    "pwritev, the CRC computed over them, with the GIL released throughout.\n"
    "ValueError if flags is outside 0..127 or n is 0 or above 64 MiB; OSError if\n"
    "a write fails (part of the record may then have been written).");

/* One record ready to write: views of its parts, and iovecs over them with
 * the header, the entry varints and the CRC. */
typedef struct {
    Py_buffer *views;
    Py_ssize_t nviews;
    struct iovec *iov;
    size_t nv;
    uint8_t *scratch; /* entry varints */
    uint8_t head[1 + 4];
    uint8_t crcbuf[4];
    size_t hlen;
    uint64_t total; /* payload octets */
} rec;

static void rec_release(rec *r)
{
    for (Py_ssize_t i = 0; i < r->nviews; i++)
        PyBuffer_Release(&r->views[i]);
    r->nviews = 0;
    PyMem_Free(r->views);
    PyMem_Free(r->iov);
    PyMem_Free(r->scratch);
    r->views = NULL;
    r->iov = NULL;
    r->scratch = NULL;
}

/* Take views of the parts of `fast` (a PySequence_Fast) and lay the record
 * out; with the GIL.  0, or -1 with an exception set (and `r` released). */
static int rec_prepare(rec *r, PyObject *fast, int entries, uint64_t flags, const char *name)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    memset(r, 0, sizeof *r);
    r->views = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *r->views);
    /* header, (varint, data) per part, crc */
    r->iov = PyMem_Malloc(((size_t)n * 2 + 2) * sizeof *r->iov);
    /* entry varints: payload <= 64 MiB, so each is at most 4 octets */
    r->scratch = entries ? PyMem_Malloc((size_t)(n ? n : 1) * 4) : NULL;
    if (!r->views || !r->iov || (entries && !r->scratch)) {
        PyErr_NoMemory();
        rec_release(r);
        return -1;
    }
    uint8_t *sp = r->scratch;
    uint64_t total = 0;
    size_t nv = 1; /* iov[0] is the header, filled in below */
    while (r->nviews < n) {
        Py_buffer *v = &r->views[r->nviews];
        if (get_buffer(PySequence_Fast_GET_ITEM(fast, r->nviews), v) < 0) {
            rec_release(r);
            return -1;
        }
        r->nviews++;
        uint64_t len = (uint64_t)v->len;
        if (len > MAX_PAYLOAD) {
            total = MAX_PAYLOAD + 1;
            break;
        }
        if (entries) {
            size_t k = put_varint(sp, len);
            r->iov[nv].iov_base = sp;
            r->iov[nv++].iov_len = k;
            sp += k;
            total += k;
        }
        if (len) {
            r->iov[nv].iov_base = v->buf;
            r->iov[nv++].iov_len = (size_t)len;
        }
        total += len;
        if (total > MAX_PAYLOAD)
            break;
    }
    if (total == 0 || total > MAX_PAYLOAD) {
        if (total == 0)
            PyErr_Format(PyExc_ValueError, "%s(): empty record payload", name);
        else
            PyErr_Format(PyExc_ValueError, "%s(): record payload above %d octets", name,
                         MAX_PAYLOAD);
        rec_release(r);
        return -1;
    }
    size_t hlen = put_varint(r->head, flags);
    hlen += put_varint(r->head + hlen, total);
    r->iov[0].iov_base = r->head;
    r->iov[0].iov_len = hlen;
    r->iov[nv].iov_base = r->crcbuf;
    r->iov[nv++].iov_len = 4;
    r->nv = nv;
    r->hlen = hlen;
    r->total = total;
    return 0;
}

/* The record's size in the file. */
static inline uint64_t rec_size(const rec *r)
{
    return r->hlen + r->total + 4;
}

/* Compute the CRC and write the record at `offset`; without the GIL.  0, or
 * -1 with errno set.  Once only: the iovecs are consumed. */
static int rec_write(rec *r, const impl *im, int fd, off_t offset)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i + 1 < r->nv; i++)
        crc = im->update(crc, r->iov[i].iov_base, r->iov[i].iov_len);
    crc = ~crc;
    r->crcbuf[0] = (uint8_t)(crc >> 24);
    r->crcbuf[1] = (uint8_t)(crc >> 16);
    r->crcbuf[2] = (uint8_t)(crc >> 8);
    r->crcbuf[3] = (uint8_t)crc;
    return pwrite_all(fd, r->iov, r->nv, offset);
}

/* flags as a record's: an int in 0..127.  0, or -1 with an exception. */
static int get_flags(PyObject *obj, uint64_t *out)
{
    PyObject *idx = PyNumber_Index(obj);
    if (!idx)
        return -1;
    int overflow;
    long long f = PyLong_AsLongLongAndOverflow(idx, &overflow);
    Py_DECREF(idx);
    if (f == -1 && PyErr_Occurred())
        return -1;
    if (overflow || f < 0 || f > 127) {
        PyErr_Format(PyExc_ValueError, "record flags must be in 0..127, not %R", obj);
        return -1;
    }
    *out = (uint64_t)f;
    return 0;
}

static PyObject *vt_write_record(PyObject *Py_UNUSED(mod), PyObject *const *args,
                                 Py_ssize_t nargs)
{
    if (check_nargs("write_record", nargs, 5, 5) < 0)
        return NULL;
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0)
        return NULL;
    uint64_t offset, flags;
    if (get_u64(args[1], "offset", &offset) < 0)
        return NULL;
    if (offset > (uint64_t)INT64_MAX)
        return PyErr_Format(PyExc_OverflowError, "offset %R is past 2**63-1", args[1]);
    if (get_flags(args[2], &flags) < 0)
        return NULL;
    PyObject *fast = as_sequence(args[3], "write_record");
    if (!fast)
        return NULL;
    int entries = PyObject_IsTrue(args[4]);
    if (entries < 0) {
        Py_DECREF(fast);
        return NULL;
    }
    rec r;
    if (rec_prepare(&r, fast, entries, flags, "write_record") < 0) {
        Py_DECREF(fast);
        return NULL;
    }
    const impl *im = get_impl();
    int rc, err = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = rec_write(&r, im, fd, (off_t)offset);
    if (rc < 0)
        err = errno;
    Py_END_ALLOW_THREADS
    PyObject *res = NULL;
    if (rc < 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
    } else {
        res = Py_BuildValue("(KnK)", (unsigned long long)rec_size(&r), (Py_ssize_t)r.hlen,
                            (unsigned long long)r.total);
    }
    rec_release(&r);
    Py_DECREF(fast);
    return res;
}

/* ---- Appender: records written by a thread of its own -------------------------------- */

/*
 * A Python writer thread must take the GIL back after every write, and while
 * the thread that adds blocks keeps running Python (giving the GIL up only
 * for a moment in each LMDB call) that can take milliseconds: the writer
 * starves and the adder ends up waiting for it.  An Appender's thread is a
 * plain pthread that never touches a Python object: the views of a record's
 * parts are taken when it is submitted and released when it is reaped, both
 * with the GIL, and in between only their memory is read.
 */

typedef struct ajob {
    struct ajob *next;
    PyObject *token; /* the caller's, given back by reap() */
    PyObject *parts; /* kept alive while the views are held */
    uint64_t flags;
    rec r;
    uint64_t offset; /* where it was written */
    int err;         /* errno if it was not */
} ajob;

typedef struct {
    PyObject_HEAD
    int fd;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t work; /* signalled on submit and stop */
    pthread_cond_t done; /* signalled when a job is finished */
    ajob *qhead, *qtail; /* submitted, not yet written */
    ajob *dhead, *dtail; /* written or failed, not yet reaped */
    size_t pending;      /* submitted and not finished */
    size_t max_pending;
    int stopping;
    /* the thread's, read under mu */
    uint64_t end;       /* just past the last good record */
    uint64_t kicked;    /* writeback started up to here */
    uint64_t writeback; /* start writeback every this many octets (0: never) */
    int err;            /* the first failure: every later job fails with it */
} Appender;

static void *appender_main(void *arg)
{
    Appender *a = arg;
    const impl *im = get_impl();
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->qhead && !a->stopping)
            pthread_cond_wait(&a->work, &a->mu);
        ajob *j = a->qhead;
        if (!j)
            break; /* stopping, and nothing left */
        a->qhead = j->next;
        if (!a->qhead)
            a->qtail = NULL;
        j->next = NULL;
        int err = a->err;
        uint64_t at = a->end;
        pthread_mutex_unlock(&a->mu);

        uint64_t kick_from = 0, kick_len = 0;
        if (!err) {
            if (rec_write(&j->r, im, a->fd, (off_t)at) < 0)
                err = errno ? errno : EIO;
        }
        pthread_mutex_lock(&a->mu);
        j->offset = at;
        j->err = err;
        if (err) {
            a->err = err;
        } else {
            a->end = at + rec_size(&j->r);
            if (a->writeback && a->end - a->kicked >= a->writeback) {
                kick_from = a->kicked;
                kick_len = a->end - a->kicked;
                a->kicked = a->end;
            }
        }
        if (a->dtail)
            a->dtail->next = j;
        else
            a->dhead = j;
        a->dtail = j;
        a->pending--;
        pthread_cond_broadcast(&a->done);
        if (kick_len) {
            /* start writeback, so that a later fdatasync finds little to do;
             * only a hint, so its errors do not matter */
            pthread_mutex_unlock(&a->mu);
            (void)sync_file_range(a->fd, (off64_t)kick_from, (off64_t)kick_len,
                                  SYNC_FILE_RANGE_WRITE);
            pthread_mutex_lock(&a->mu);
        }
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static void ajob_free(ajob *j)
{
    rec_release(&j->r);
    Py_XDECREF(j->token);
    Py_XDECREF(j->parts);
    PyMem_Free(j);
}

/* Stop and join the thread (GIL released while waiting); idempotent. */
static void appender_stop(Appender *a)
{
    if (!a->started)
        return;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&a->mu);
    a->stopping = 1;
    pthread_cond_broadcast(&a->work);
    pthread_cond_broadcast(&a->done);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    Py_END_ALLOW_THREADS
    a->started = 0;
}

static int Appender_init(Appender *a, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "offset", "writeback", "max_pending", NULL};
    PyObject *fdobj, *offobj;
    unsigned long long writeback = 0;
    Py_ssize_t max_pending = 4;
    if (a->started) {
        PyErr_SetString(PyExc_RuntimeError, "Appender already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|Kn:Appender", kwlist, &fdobj, &offobj,
                                     &writeback, &max_pending))
        return -1;
    int fd = PyObject_AsFileDescriptor(fdobj);
    if (fd < 0)
        return -1;
    uint64_t offset;
    if (get_u64(offobj, "offset", &offset) < 0)
        return -1;
    if (offset > (uint64_t)INT64_MAX) {
        PyErr_Format(PyExc_OverflowError, "offset %R is past 2**63-1", offobj);
        return -1;
    }
    if (max_pending < 1) {
        PyErr_SetString(PyExc_ValueError, "max_pending must be at least 1");
        return -1;
    }
    a->fd = fd;
    a->end = a->kicked = offset;
    a->writeback = writeback;
    a->max_pending = (size_t)max_pending;
    int rc = pthread_create(&a->thread, NULL, appender_main, a);
    if (rc) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    a->started = 1;
    return 0;
}

static PyObject *Appender_new(PyTypeObject *type, PyObject *Py_UNUSED(args),
                              PyObject *Py_UNUSED(kwds))
{
    Appender *a = (Appender *)type->tp_alloc(type, 0);
    if (!a)
        return NULL;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->work, NULL);
    pthread_cond_init(&a->done, NULL);
    return (PyObject *)a;
}

static void Appender_dealloc(Appender *a)
{
    appender_stop(a); /* writes what was submitted: the thread empties the queue */
    ajob *j = a->dhead;
    while (j) {
        ajob *next = j->next;
        ajob_free(j);
        j = next;
    }
    pthread_cond_destroy(&a->done);
    pthread_cond_destroy(&a->work);
    pthread_mutex_destroy(&a->mu);
    Py_TYPE(a)->tp_free((PyObject *)a);
}

PyDoc_STRVAR(submit_doc,
             "submit(token, flags, parts, entries, /) -> None\n\n"
             "Queue one record, as write_record(fd, <end>, flags, parts, entries) would\n"
             "write it, to be appended after the records submitted before it.  `token`\n"
             "comes back from reap().  Waits, without the GIL, while max_pending records\n"
             "are queued.  The parts must not change until the record is reaped.");

static PyObject *Appender_submit(Appender *a, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("submit", nargs, 4, 4) < 0)
        return NULL;
    if (!a->started || a->stopping)
        return PyErr_Format(PyExc_ValueError, "submit() on a closed Appender");
    uint64_t flags;
    if (get_flags(args[1], &flags) < 0)
        return NULL;
    int entries = PyObject_IsTrue(args[3]);
    if (entries < 0)
        return NULL;
    PyObject *fast = as_sequence(args[2], "submit");
    if (!fast)
        return NULL;
    ajob *j = PyMem_Calloc(1, sizeof *j);
    if (!j) {
        Py_DECREF(fast);
        return PyErr_NoMemory();
    }
    if (rec_prepare(&j->r, fast, entries, flags, "submit") < 0) {
        Py_DECREF(fast);
        PyMem_Free(j);
        return NULL;
    }
    j->parts = fast; /* the views point into its items */
    Py_INCREF(args[0]);
    j->token = args[0];
    j->flags = flags;
    int queued = 0;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&a->mu);
    while (a->pending >= a->max_pending && !a->stopping)
        pthread_cond_wait(&a->done, &a->mu);
    if (!a->stopping) { /* closed meanwhile by another thread: its thread is gone */
        if (a->qtail)
            a->qtail->next = j;
        else
            a->qhead = j;
        a->qtail = j;
        a->pending++;
        queued = 1;
        pthread_cond_signal(&a->work);
    }
    pthread_mutex_unlock(&a->mu);
    Py_END_ALLOW_THREADS
    if (!queued) {
        ajob_free(j);
        return PyErr_Format(PyExc_ValueError, "submit() on a closed Appender");
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(reap_doc,
             "reap() -> tuple[list, list, int]\n\n"
             "Take the finished records: (written, failed, errno).  `written` holds\n"
             "(token, flags, offset, record_size, payload_offset, payload_length) for\n"
             "each record written, in file order; `failed` the tokens of records not\n"
             "written, after the first failure, whose errno is the third item (0 if\n"
             "none).  Does not wait.");

static PyObject *Appender_reap(Appender *a, PyObject *Py_UNUSED(ignored))
{
    pthread_mutex_lock(&a->mu);
    ajob *j = a->dhead;
    a->dhead = a->dtail = NULL;
    int err = a->err;
    pthread_mutex_unlock(&a->mu);
    PyObject *written = PyList_New(0), *failed = PyList_New(0);
    PyObject *res = NULL;
    if (!written || !failed)
        goto out;
    while (j) {
        ajob *next = j->next;
        int rc;
        if (j->err) {
            rc = PyList_Append(failed, j->token);
        } else {
            PyObject *t = Py_BuildValue("(OKKKnK)", j->token, (unsigned long long)j->flags,
                                        (unsigned long long)j->offset,
                                        (unsigned long long)rec_size(&j->r), (Py_ssize_t)j->r.hlen,
                                        (unsigned long long)j->r.total);
            rc = t ? PyList_Append(written, t) : -1;
            Py_XDECREF(t);
        }
        ajob_free(j);
        j = next;
        if (rc < 0)
            goto out;
    }
    res = Py_BuildValue("(OOi)", written, failed, err);
out:
    while (j) { /* only after an error above */
        ajob *next = j->next;
        ajob_free(j);
        j = next;
    }
    Py_XDECREF(written);
    Py_XDECREF(failed);
    return res;
}

PyDoc_STRVAR(drain_doc, "drain() -> None\n\nWait, without the GIL, until every record submitted is "
                        "written (or has failed).");

static PyObject *Appender_drain(Appender *a, PyObject *Py_UNUSED(ignored))
{
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&a->mu);
    while (a->pending)
        pthread_cond_wait(&a->done, &a->mu);
    pthread_mutex_unlock(&a->mu);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(close_doc, "close() -> None\n\nWrite what was submitted, then stop the thread; "
                        "unreaped records stay to reap.");

static PyObject *Appender_close(Appender *a, PyObject *Py_UNUSED(ignored))
{
    appender_stop(a);
    Py_RETURN_NONE;
}

static PyObject *Appender_get_end(Appender *a, void *Py_UNUSED(closure))
{
    pthread_mutex_lock(&a->mu);
    uint64_t end = a->end;
    pthread_mutex_unlock(&a->mu);
    return PyLong_FromUnsignedLongLong(end);
}

static PyObject *Appender_get_pending(Appender *a, void *Py_UNUSED(closure))
{
    pthread_mutex_lock(&a->mu);
    size_t n = a->pending;
    pthread_mutex_unlock(&a->mu);
    return PyLong_FromSize_t(n);
}

static PyMethodDef Appender_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))Appender_submit, METH_FASTCALL, submit_doc},
    {"reap", (PyCFunction)Appender_reap, METH_NOARGS, reap_doc},
    {"drain", (PyCFunction)Appender_drain, METH_NOARGS, drain_doc},
    {"close", (PyCFunction)Appender_close, METH_NOARGS, close_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Appender_getset[] = {
    {"end", (getter)Appender_get_end, NULL, "offset just past the last record written", NULL},
    {"pending", (getter)Appender_get_pending, NULL, "records submitted and not yet finished",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(Appender_doc,
             "Appender(fd, offset, writeback=0, max_pending=4)\n\n"
             "Appends records to `fd` from `offset` on, in a thread of its own that never\n"
             "needs the GIL: submit() queues a record, reap() takes the finished ones.\n"
             "Every `writeback` octets (0: never) it starts writeback of what it wrote\n"
             "(sync_file_range), so that a later fdatasync has little left to do.  After\n"
             "a failed write it writes nothing more; `end` stays just past the last good\n"
             "record, where the caller truncates the file.");

static PyTypeObject AppenderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vtstore.stores._vtdio.Appender",
    .tp_basicsize = sizeof(Appender),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = Appender_doc,
    .tp_new = Appender_new,
    .tp_init = (initproc)Appender_init,
    .tp_dealloc = (destructor)Appender_dealloc,
    .tp_methods = Appender_methods,
    .tp_getset = Appender_getset,
};

/* ---- index_values --------------------------------------------------------------------- */

PyDoc_STRVAR(index_values_doc,
             "index_values(filenum, flags, payload_offset, payload_length, datas, /)\n"
             "    -> list[bytes]\n\n"
             "The index values of the blocks `datas` of one record: for each d, the\n"
             "varints of filenum, flags, payload_offset, payload_length, data_offset and\n"
             "len(d), where data_offset is where d begins in entries_payload(datas).\n"
             "Equal to vtstore.stores.index.IndexEntry(...).encode().  The integers must\n"
             "be in 0..2**64-1 (OverflowError otherwise).");

static PyObject *vt_index_values(PyObject *Py_UNUSED(mod), PyObject *const *args,
                                 Py_ssize_t nargs)
{
    if (check_nargs("index_values", nargs, 5, 5) < 0)
        return NULL;
    static const char *const names[4] = {"filenum", "flags", "payload_offset", "payload_length"};
    uint8_t prefix[4 * VARINT_MAX];
    size_t plen = 0;
    for (int i = 0; i < 4; i++) {
        uint64_t v;
        if (get_u64(args[i], names[i], &v) < 0)
            return NULL;
        plen += put_varint(prefix + plen, v);
    }
    PyObject *fast = as_sequence(args[4], "index_values");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject *list = PyList_New(n);
    if (!list)
        goto fail;
    uint64_t pos = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len = buffer_len(PySequence_Fast_GET_ITEM(fast, i));
        if (len < 0)
            goto fail;
        pos += varint_len((uint64_t)len);
        uint8_t buf[4 * VARINT_MAX + 2 * VARINT_MAX];
        memcpy(buf, prefix, plen);
        size_t k = plen;
        k += put_varint(buf + k, pos);
        k += put_varint(buf + k, (uint64_t)len);
        PyObject *b = PyBytes_FromStringAndSize((const char *)buf, (Py_ssize_t)k);
        if (!b)
            goto fail;
        PyList_SET_ITEM(list, i, b);
        pos += (uint64_t)len;
    }
    Py_DECREF(fast);
    return list;
fail:
    Py_XDECREF(list);
    Py_DECREF(fast);
    return NULL;
}

/* ---- sample_entropy -------------------------------------------------------------------- */

PyDoc_STRVAR(sample_entropy_doc,
             "sample_entropy(datas, sample=16384, /) -> float\n\n"
             "The order-0 entropy, in bits per octet (0 to 8), of about `sample` octets\n"
             "of the blocks `datas` (a list or tuple of bytes-like objects) taken as\n"
             "they follow one another: 32 pieces, one from each 32nd of the whole, at\n"
             "scattered offsets (so that data alternating at a fixed period is not\n"
             "sampled at one phase).  Random data gives ~7.99; what zstd can shrink by\n"
             "1/64 has at most ~7.875, unless it only repeats itself (which this does\n"
             "not see).  8.0 for no data.");

#define ENTROPY_PIECES 32

static PyObject *vt_sample_entropy(PyObject *Py_UNUSED(mod), PyObject *const *args,
                                   Py_ssize_t nargs)
{
    if (check_nargs("sample_entropy", nargs, 1, 2) < 0)
        return NULL;
    uint64_t sample = 16384;
    if (nargs > 1 && get_u64(args[1], "sample", &sample) < 0)
        return NULL;
    PyObject *fast = as_sequence(args[0], "sample_entropy");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    Py_buffer *views = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *views);
    if (!views) {
        Py_DECREF(fast);
        return PyErr_NoMemory();
    }
    Py_ssize_t got = 0;
    uint64_t total = 0;
    PyObject *res = NULL;
    for (; got < n; got++) {
        if (get_buffer(PySequence_Fast_GET_ITEM(fast, got), &views[got]) < 0)
            goto done;
        total += (uint64_t)views[got].len;
    }
    uint32_t counts[256] = {0};
    uint64_t counted = 0;
    if (total) {
        uint64_t stride = total / ENTROPY_PIECES, piece = sample / ENTROPY_PIECES;
        if (piece == 0)
            piece = 1;
        Py_ssize_t b = 0;   /* the block holding `start` */
        uint64_t base = 0; /* where block b begins */
        for (uint64_t k = 0; k < ENTROPY_PIECES; k++) {
            uint64_t start = k * stride;
            if (stride > piece) /* a scattered offset within the stride */
                start += (k * 2654435761u) % (stride - piece);
            uint64_t want = piece;
            while (want && b < n) {
                uint64_t len = (uint64_t)views[b].len;
                if (start >= base + len) {
                    base += len;
                    b++;
                    continue;
                }
                const uint8_t *p = (const uint8_t *)views[b].buf + (start - base);
                uint64_t k2 = base + len - start < want ? base + len - start : want;
                for (uint64_t j = 0; j < k2; j++)
                    counts[p[j]]++;
                counted += k2;
                want -= k2;
                start += k2;
            }
        }
    }
    double h = 8.0;
    if (counted) {
        h = 0.0;
        double t = (double)counted;
        for (int c = 0; c < 256; c++) {
            if (counts[c]) {
                double f = counts[c] / t;
                h -= f * log2(f);
            }
        }
    }
    res = PyFloat_FromDouble(h);
done:
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    Py_DECREF(fast);
    return res;
}

/* ---- sync_file_range ----------------------------------------------------------------- */

PyDoc_STRVAR(sync_file_range_doc,
             "sync_file_range(fd, offset, nbytes, flags, /) -> None\n\n"
             "Linux sync_file_range(2) on `fd`, with the GIL released: start writeback\n"
             "of (SYNC_FILE_RANGE_WRITE) and/or wait for (SYNC_FILE_RANGE_WAIT_BEFORE,\n"
             "SYNC_FILE_RANGE_WAIT_AFTER) the pages of [offset, offset + nbytes); nbytes\n"
             "0 means to the end of the file.  Not a durability guarantee (no metadata,\n"
             "no disk cache flush).  OSError on failure.");

static PyObject *vt_sync_file_range(PyObject *Py_UNUSED(mod), PyObject *const *args,
                                    Py_ssize_t nargs)
{
    if (check_nargs("sync_file_range", nargs, 4, 4) < 0)
        return NULL;
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0)
        return NULL;
    uint64_t offset, nbytes, flags;
    if (get_u64(args[1], "offset", &offset) < 0 || get_u64(args[2], "nbytes", &nbytes) < 0 ||
        get_u64(args[3], "flags", &flags) < 0)
        return NULL;
    if (offset > (uint64_t)INT64_MAX || nbytes > (uint64_t)INT64_MAX || flags > UINT_MAX)
        return PyErr_Format(PyExc_OverflowError, "sync_file_range(): argument out of range");
    int rc, err = 0;
    Py_BEGIN_ALLOW_THREADS
    do {
        rc = sync_file_range(fd, (off_t)offset, (off_t)nbytes, (unsigned int)flags);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0)
        err = errno;
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* ---- map guard: a fault in a damaged LMDB map ends the process with one line ------- */

/* LMDB trusts its file: a damaged page can send a read past the end of the file
   (SIGBUS) or of the map (SIGSEGV).  The index registers each map it opens; a
   fault whose address lies in (or just past) a registered map writes one line
   naming that index to stderr and exits with status 1 instead of dying by a
   signal.  Any other fault goes to the handler that was there before.  The
   table is written under the GIL and read by the handler only. */

#include <signal.h>

#define GUARD_SLOTS 32
#define GUARD_SLACK ((uintptr_t)1 << 32) /* a node size is at most 32 bits */
#define GUARD_MSG 1024

typedef struct {
    volatile uintptr_t start, end; /* end includes the slack; 0: free slot */
    char msg[GUARD_MSG];
    volatile size_t msg_len;
} guard_slot;

static guard_slot guards[GUARD_SLOTS];
static struct sigaction old_bus, old_segv;
static int guard_installed;

static void guard_handler(int sig, siginfo_t *si, void *ctx)
{
    uintptr_t a = (uintptr_t)si->si_addr;
    for (int i = 0; i < GUARD_SLOTS; i++) {
        uintptr_t s = guards[i].start, e = guards[i].end;
        if (e && a >= s && a < e) {
            ssize_t r = write(2, guards[i].msg, guards[i].msg_len);
            (void)r;
            _exit(1);
        }
    }
    /* not ours: let the previous handler (or the default action) have it */
    struct sigaction *old = sig == SIGBUS ? &old_bus : &old_segv;
    sigaction(sig, old, NULL);
    if (!(old->sa_flags & SA_SIGINFO) && old->sa_handler != SIG_DFL &&
        old->sa_handler != SIG_IGN)
        old->sa_handler(sig);
    else if ((old->sa_flags & SA_SIGINFO) && old->sa_sigaction)
        old->sa_sigaction(sig, si, ctx);
    /* returning re-runs the faulting access under the old disposition */
}

static int guard_install(void)
{
    if (guard_installed)
        return 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = guard_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &old_bus) < 0 || sigaction(SIGSEGV, &sa, &old_segv) < 0)
        return -1;
    guard_installed = 1;
    return 0;
}

PyDoc_STRVAR(guard_map_doc,
             "guard_map(address, size, message, /) -> None\n\n"
             "Register the map [address, address + size) of a damaged-file risk: a\n"
             "SIGBUS or SIGSEGV at an address in it (or up to 4 GiB past it) writes\n"
             "`message` (bytes, at most 1023) to stderr and exits with status 1.");

static PyObject *vt_guard_map(PyObject *Py_UNUSED(mod), PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("guard_map", nargs, 3, 3) < 0)
        return NULL;
    uint64_t addr, size;
    if (get_u64(args[0], "address", &addr) < 0 || get_u64(args[1], "size", &size) < 0)
        return NULL;
    char *msg;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(args[2], &msg, &n) < 0)
        return NULL;
    if (n >= GUARD_MSG)
        n = GUARD_MSG - 1;
    if (!addr || !size)
        Py_RETURN_NONE;
    if (guard_install() < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    for (int i = 0; i < GUARD_SLOTS; i++) {
        if (guards[i].end == 0 || guards[i].start == (uintptr_t)addr) {
            guards[i].end = 0; /* the handler skips it while it changes */
            memcpy(guards[i].msg, msg, (size_t)n);
            guards[i].msg_len = (size_t)n;
            guards[i].start = (uintptr_t)addr;
            __atomic_store_n(&guards[i].end, (uintptr_t)addr + (uintptr_t)size + GUARD_SLACK,
                             __ATOMIC_RELEASE);
            Py_RETURN_NONE;
        }
    }
    Py_RETURN_NONE; /* table full: that map goes unguarded */
}

PyDoc_STRVAR(unguard_map_doc,
             "unguard_map(address, /) -> None\n\nForget the map registered at `address`.");

static PyObject *vt_unguard_map(PyObject *Py_UNUSED(mod), PyObject *arg)
{
    uint64_t addr;
    if (get_u64(arg, "address", &addr) < 0)
        return NULL;
    for (int i = 0; i < GUARD_SLOTS; i++)
        if (guards[i].end && guards[i].start == (uintptr_t)addr)
            __atomic_store_n(&guards[i].end, 0, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

/* ---- module -------------------------------------------------------------------------- */

static PyMethodDef vt_methods[] = {
    {"crc32", (PyCFunction)(void (*)(void))vt_crc32, METH_FASTCALL, crc32_doc},
    {"crc_implementation", (PyCFunction)vt_crc_implementation, METH_NOARGS,
     crc_implementation_doc},
    {"crc_implementations", (PyCFunction)vt_crc_implementations, METH_NOARGS,
     crc_implementations_doc},
    {"set_crc_implementation", (PyCFunction)vt_set_crc_implementation, METH_O,
     set_crc_implementation_doc},
    {"entries_payload", (PyCFunction)vt_entries_payload, METH_O, entries_payload_doc},
    {"write_record", (PyCFunction)(void (*)(void))vt_write_record, METH_FASTCALL,
     write_record_doc},
    {"sample_entropy", (PyCFunction)(void (*)(void))vt_sample_entropy, METH_FASTCALL,
     sample_entropy_doc},
    {"index_values", (PyCFunction)(void (*)(void))vt_index_values, METH_FASTCALL,
     index_values_doc},
    {"sync_file_range", (PyCFunction)(void (*)(void))vt_sync_file_range, METH_FASTCALL,
     sync_file_range_doc},
    {"guard_map", (PyCFunction)(void (*)(void))vt_guard_map, METH_FASTCALL, guard_map_doc},
    {"unguard_map", (PyCFunction)vt_unguard_map, METH_O, unguard_map_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(vt_doc,
             "The .vtd writer's hot path in C, with the GIL released.\n\n"
             "write_record() writes one record\n\n"
             "    varint(flags) varint(n) payload[n] crc32[4]\n\n"
             "(crc32: CRC-32/IEEE of the header varints and the payload, big-endian)\n"
             "with one pwritev over the caller's buffers and one GIL release;\n"
             "entries_payload() builds a blocks payload (entry := varint(len) data) to\n"
             "compress; index_values() encodes the index entries of a record's blocks;\n"
             "crc32() is zlib.crc32, faster (PCLMULQDQ folding); sync_file_range()\n"
             "wraps the Linux call; guard_map() turns a fault in a damaged index's\n"
             "map into one line and exit status 1.  Varints are those of vtstore.codec.");

static struct PyModuleDef vt_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "vtstore.stores._vtdio",
    .m_doc = vt_doc,
    .m_size = -1,
    .m_methods = vt_methods,
};

PyMODINIT_FUNC PyInit__vtdio(void)
{
    make_tables();
    const impl *pick = NULL;
    for (size_t i = 0; i < N_IMPLS; i++) {
        if (!IMPLS[i].supported())
            continue;
        if (check_crc(&IMPLS[i]) < 0) {
            PyErr_Format(PyExc_ImportError, "vtstore.stores._vtdio: the %s CRC is wrong",
                         IMPLS[i].name);
            return NULL;
        }
        if (!pick)
            pick = &IMPLS[i];
    }
    current_impl = pick;
    if (PyType_Ready(&AppenderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&vt_module);
    if (!m)
        return NULL;
    Py_INCREF(&AppenderType);
    if (PyModule_AddObject(m, "Appender", (PyObject *)&AppenderType) < 0) {
        Py_DECREF(&AppenderType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "SYNC_FILE_RANGE_WAIT_BEFORE", SYNC_FILE_RANGE_WAIT_BEFORE) < 0 ||
        PyModule_AddIntConstant(m, "SYNC_FILE_RANGE_WRITE", SYNC_FILE_RANGE_WRITE) < 0 ||
        PyModule_AddIntConstant(m, "SYNC_FILE_RANGE_WAIT_AFTER", SYNC_FILE_RANGE_WAIT_AFTER) < 0 ||
        PyModule_AddIntConstant(m, "MAX_PAYLOAD", MAX_PAYLOAD) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
