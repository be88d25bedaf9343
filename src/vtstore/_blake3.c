/*
 * _blake3: batch BLAKE3 hashing for vtstore, with the GIL released.
 *
 * Written from the BLAKE3 specification (plain hash mode).  In short:
 *   - input is split into 1024-byte chunks, each chunk into 64-byte blocks;
 *   - the compression function runs 7 rounds of the G mixing function over a
 *     16-word state (8 words of chaining value, 4 IV words, the 64-bit
 *     counter, the block length and the flags), permuting the 16 message
 *     words between rounds;
 *   - a chunk's blocks are chained with the chunk index as counter and the
 *     CHUNK_START / CHUNK_END flags on its first / last block;
 *   - chunk chaining values are combined by PARENT nodes (message = left CV ||
 *     right CV, counter 0, block length 64) into a left-complete binary tree;
 *   - the root node (the only chunk, or the top parent) also gets ROOT, and
 *     its output CV is the 32-byte digest.
 *
 * Speed comes from hashing many independent compressions side by side, one
 * per SIMD lane (8 lanes with AVX2, 16 with AVX-512).  Every lane carries its
 * own counter, flags and block count, so a batch gathers the chunks of *all*
 * the blocks it holds into lanes, then the parent nodes of all those blocks
 * level by level, again across lanes.  The unit of work is a `job`: one
 * chain of 1..16 compressions (a chunk, or a parent node with one block).
 *
 * The tree is built level by level: pair neighbours (0,1), (2,3), ... and
 * carry an odd last node up unchanged.  This gives the same tree as the
 * specification's "left subtree = largest power of two chunks that leaves at
 * least one byte for the right", because every power-of-two prefix is paired
 * off within itself.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_vtbuf.h"
#include "_vtimpl.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* SIMD code needs GCC or Clang (target attributes, __builtin_cpu_supports) */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define HAVE_X86 1
#include <immintrin.h>
#else
#define HAVE_X86 0
#endif

/* ---- constants from the specification ------------------------------------ */

#define CHUNK_LEN 1024
#define BLOCK_LEN 64
#define OUT_LEN 32

enum {
    CHUNK_START = 1 << 0,
    CHUNK_END = 1 << 1,
    PARENT = 1 << 2,
    ROOT = 1 << 3,
    KEYED_HASH = 1 << 4, /* not used yet: a keyed mode passes its key as `key` */
};

/* The IV is the SHA-256 IV. */
static const uint32_t IV[8] = {0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
                               0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19};

/* Message word permutation applied between rounds. */
static const uint8_t PERMUTATION[16] = {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8};

/* SCHEDULE[r][i]: which original message word is word i in round r, i.e.
 * PERMUTATION applied r times.  Spelled out (rather than computed) so the SIMD
 * rounds index registers with constants; check_schedule() verifies it against
 * PERMUTATION when the module is imported. */
static const uint8_t SCHEDULE[7][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
    {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
    {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

static int check_schedule(void)
{
    uint8_t cur[16];
    for (int i = 0; i < 16; i++)
        cur[i] = (uint8_t)i;
    for (int r = 0; r < 7; r++) {
        if (memcmp(cur, SCHEDULE[r], 16) != 0)
            return -1;
        uint8_t next[16];
        for (int i = 0; i < 16; i++)
            next[i] = cur[PERMUTATION[i]];
        memcpy(cur, next, 16);
    }
    return 0;
}

/* ---- jobs ------------------------------------------------------------------ */

/* One chain of compressions: `nblocks` blocks read from `data` (the last one
 * holding `last_len` bytes, zero-padded), starting from the key as CV.  Every
 * block gets `flags_all`; the first also `flags_first`, the last also
 * `flags_last`.  The final CV (8 little-endian words) goes to `out`.
 * A chunk: flags_first = CHUNK_START, flags_last = CHUNK_END [| ROOT].
 * A parent: nblocks = 1, data = two adjacent CVs, flags_all = PARENT. */
typedef struct {
    const uint8_t *data;
    uint8_t *out;
    uint64_t counter;
    uint32_t nblocks;  /* 1..16 */
    uint32_t last_len; /* 0..64; 0 only for the empty input */
    uint32_t flags_all, flags_first, flags_last;
} job;

/* Each implementation hashes n jobs.  A job reads its input before its output
 * is written, and no job starts before the ones ahead of it have read theirs:
 * batch_flush() and reduce_cvs() rely on that to combine CVs in place. */
typedef void (*hash_jobs_fn)(const job *jobs, size_t n, const uint32_t key[8]);

/* ---- portable implementation ------------------------------------------------ */

static inline uint32_t load32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline void store32(uint8_t *p, uint32_t w)
{
    p[0] = (uint8_t)w;
    p[1] = (uint8_t)(w >> 8);
    p[2] = (uint8_t)(w >> 16);
    p[3] = (uint8_t)(w >> 24);
}

static inline uint32_t rotr32(uint32_t x, int n)
{
    return (x >> n) | (x << (32 - n));
}

/* The G mixing function on state words a, b, c, d with message words x, y. */
#define G1(v, a, b, c, d, x, y)                                                                  \
    do {                                                                                         \
        v[a] = v[a] + v[b] + (x);                                                                \
        v[d] = rotr32(v[d] ^ v[a], 16);                                                          \
        v[c] = v[c] + v[d];                                                                      \
        v[b] = rotr32(v[b] ^ v[c], 12);                                                          \
        v[a] = v[a] + v[b] + (y);                                                                \
        v[d] = rotr32(v[d] ^ v[a], 8);                                                           \
        v[c] = v[c] + v[d];                                                                      \
        v[b] = rotr32(v[b] ^ v[c], 7);                                                           \
    } while (0)

/* One round: the four columns, then the four diagonals. */
#define ROUND(G, v, m, r)                                                                        \
    do {                                                                                         \
        const uint8_t *s_ = SCHEDULE[r];                                                         \
        G(v, 0, 4, 8, 12, m[s_[0]], m[s_[1]]);                                                   \
        G(v, 1, 5, 9, 13, m[s_[2]], m[s_[3]]);                                                   \
        G(v, 2, 6, 10, 14, m[s_[4]], m[s_[5]]);                                                  \
        G(v, 3, 7, 11, 15, m[s_[6]], m[s_[7]]);                                                  \
        G(v, 0, 5, 10, 15, m[s_[8]], m[s_[9]]);                                                  \
        G(v, 1, 6, 11, 12, m[s_[10]], m[s_[11]]);                                                \
        G(v, 2, 7, 8, 13, m[s_[12]], m[s_[13]]);                                                 \
        G(v, 3, 4, 9, 14, m[s_[14]], m[s_[15]]);                                                 \
    } while (0)

#define SEVEN_ROUNDS(G, v, m)                                                                    \
    do {                                                                                         \
        ROUND(G, v, m, 0);                                                                       \
        ROUND(G, v, m, 1);                                                                       \
        ROUND(G, v, m, 2);                                                                       \
        ROUND(G, v, m, 3);                                                                       \
        ROUND(G, v, m, 4);                                                                       \
        ROUND(G, v, m, 5);                                                                       \
        ROUND(G, v, m, 6);                                                                       \
    } while (0)

/* Compress one block into cv (only the chaining-value half of the output is
 * needed: plain 32-byte digests never use the extended output). */
static void compress1(uint32_t cv[8], const uint8_t block[BLOCK_LEN], uint64_t counter,
                      uint32_t block_len, uint32_t flags)
{
    uint32_t m[16], v[16];
    for (int i = 0; i < 16; i++)
        m[i] = load32(block + 4 * i);
    for (int i = 0; i < 8; i++)
        v[i] = cv[i];
    for (int i = 0; i < 4; i++)
        v[8 + i] = IV[i];
    v[12] = (uint32_t)counter;
    v[13] = (uint32_t)(counter >> 32);
    v[14] = block_len;
    v[15] = flags;
    SEVEN_ROUNDS(G1, v, m);
    for (int i = 0; i < 8; i++)
        cv[i] = v[i] ^ v[i + 8];
}

static void hash_job1(const job *jb, const uint32_t key[8])
{
    uint32_t cv[8];
    memcpy(cv, key, sizeof cv);
    for (uint32_t j = 0; j < jb->nblocks; j++) {
        int last = j + 1 == jb->nblocks;
        uint32_t len = last ? jb->last_len : BLOCK_LEN;
        const uint8_t *p = jb->data + (size_t)BLOCK_LEN * j;
        uint8_t pad[BLOCK_LEN];
        if (len < BLOCK_LEN) {
            /* a short final block is zero-padded; never read past the input */
            memset(pad, 0, sizeof pad);
            if (len)
                memcpy(pad, p, len);
            p = pad;
        }
        uint32_t flags = jb->flags_all | (j == 0 ? jb->flags_first : 0) |
                         (last ? jb->flags_last : 0);
        compress1(cv, p, jb->counter, len, flags);
    }
    for (int i = 0; i < 8; i++)
        store32(jb->out + 4 * i, cv[i]);
}

static void hash_jobs_portable(const job *jobs, size_t n, const uint32_t key[8])
{
    for (size_t i = 0; i < n; i++)
        hash_job1(&jobs[i], key);
}

/* ---- lane set-up shared by the SIMD kernels ----------------------------------- */

#if HAVE_X86

#define MAX_LANES 16

static const uint8_t ZERO_BLOCK[BLOCK_LEN];

/* Per-lane parameters of one SIMD group, as arrays the kernels load as vectors. */
typedef struct {
    uint32_t ctr_lo[MAX_LANES], ctr_hi[MAX_LANES];
    uint32_t nblocks[MAX_LANES], nfull[MAX_LANES], last_len[MAX_LANES];
    uint32_t fall[MAX_LANES], ffirst[MAX_LANES], flast[MAX_LANES];
    const uint8_t *data[MAX_LANES];
    uint8_t pad[MAX_LANES][BLOCK_LEN]; /* each lane's short final block, zero-padded */
    uint32_t max_blocks;
} lanes;

/* Fill `lanes` lanes from n <= lanes jobs; the rest are idle (0 blocks). */
static void lanes_setup(lanes *L, const job *jobs, size_t n, size_t width)
{
    L->max_blocks = 0;
    for (size_t l = 0; l < width; l++) {
        if (l < n) {
            const job *jb = &jobs[l];
            L->ctr_lo[l] = (uint32_t)jb->counter;
            L->ctr_hi[l] = (uint32_t)(jb->counter >> 32);
            L->nblocks[l] = jb->nblocks;
            L->last_len[l] = jb->last_len;
            L->fall[l] = jb->flags_all;
            L->ffirst[l] = jb->flags_first;
            L->flast[l] = jb->flags_last;
            L->data[l] = jb->data;
            L->nfull[l] = jb->nblocks;
            if (jb->last_len < BLOCK_LEN) {
                L->nfull[l]--;
                memset(L->pad[l], 0, BLOCK_LEN);
                if (jb->last_len)
                    memcpy(L->pad[l], jb->data + (size_t)BLOCK_LEN * L->nfull[l], jb->last_len);
            }
            if (jb->nblocks > L->max_blocks)
                L->max_blocks = jb->nblocks;
        } else {
            L->ctr_lo[l] = L->ctr_hi[l] = 0;
            L->nblocks[l] = L->nfull[l] = L->last_len[l] = 0;
            L->fall[l] = L->ffirst[l] = L->flast[l] = 0;
            L->data[l] = ZERO_BLOCK;
        }
    }
}

/* Where lane l reads block j: the input itself, its padded copy of a short
 * final block, or zeros once the lane is done (that result is discarded). */
static inline const uint8_t *lane_block(const lanes *L, size_t l, uint32_t j)
{
    if (j < L->nfull[l])
        return L->data[l] + (size_t)BLOCK_LEN * j;
    if (j < L->nblocks[l])
        return L->pad[l];
    return ZERO_BLOCK;
}

/* Memory prefetch.  A lane reads its chunk as only 16 lines, too short a
 * stream for the hardware prefetchers to catch on, and the lanes' streams are
 * 1 KiB apart.  So at step j each lane asks for its own line j + 2 (into L1),
 * and line j of each job of the *next* group is asked for (into L2): by the
 * time that group starts, its data is in cache.  Prefetches never fault, so
 * addresses past a lane's input are harmless (hence the uintptr_t sums).
 * always_inline: out of line, GCC finds the function free of side effects
 * and drops the calls. */
#define LANE_AHEAD 2

static inline __attribute__((always_inline)) void
prefetch_step(const lanes *L, size_t width, const job *next, size_t nnext, uint32_t j)
{
    for (size_t l = 0; l < width; l++)
        _mm_prefetch((const char *)((uintptr_t)L->data[l] + BLOCK_LEN * (j + LANE_AHEAD)),
                     _MM_HINT_T0);
    for (size_t l = 0; l < nnext; l++)
        if (j < next[l].nblocks)
            _mm_prefetch((const char *)((uintptr_t)next[l].data + BLOCK_LEN * j), _MM_HINT_T1);
}

/* ---- 8 lanes: AVX2, and AVX-512VL for the AVX-512 tails --------------------------- */

#define AVX2_FN static inline __attribute__((target("avx2")))

AVX2_FN __m256i add8(__m256i a, __m256i b)
{
    return _mm256_add_epi32(a, b);
}

AVX2_FN __m256i xor8(__m256i a, __m256i b)
{
    return _mm256_xor_si256(a, b);
}

/* Rotations by 16 and 8 move whole bytes: one byte shuffle.  12 and 7 need
 * two shifts and an or. */
AVX2_FN __m256i rot16_8(__m256i x)
{
    const __m256i idx = _mm256_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13,
                                         2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    return _mm256_shuffle_epi8(x, idx);
}

AVX2_FN __m256i rot8_8(__m256i x)
{
    const __m256i idx = _mm256_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12,
                                         1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12);
    return _mm256_shuffle_epi8(x, idx);
}

AVX2_FN __m256i rot12_8(__m256i x)
{
    return _mm256_or_si256(_mm256_srli_epi32(x, 12), _mm256_slli_epi32(x, 20));
}

AVX2_FN __m256i rot7_8(__m256i x)
{
    return _mm256_or_si256(_mm256_srli_epi32(x, 7), _mm256_slli_epi32(x, 25));
}

/* G on 8 lanes, with the rotation ROT(x, n) as a parameter. */
#define G8_WITH(ROT, v, a, b, c, d, x, y)                                                        \
    do {                                                                                         \
        v[a] = add8(add8(v[a], v[b]), (x));                                                      \
        v[d] = ROT(xor8(v[d], v[a]), 16);                                                        \
        v[c] = add8(v[c], v[d]);                                                                 \
        v[b] = ROT(xor8(v[b], v[c]), 12);                                                        \
        v[a] = add8(add8(v[a], v[b]), (y));                                                      \
        v[d] = ROT(xor8(v[d], v[a]), 8);                                                         \
        v[c] = add8(v[c], v[d]);                                                                 \
        v[b] = ROT(xor8(v[b], v[c]), 7);                                                         \
    } while (0)

#define ROT_AVX2(x, n) rot##n##_8(x)
#define ROT_VL(x, n) _mm256_ror_epi32((x), (n))
#define G8_AVX2(v, a, b, c, d, x, y) G8_WITH(ROT_AVX2, v, a, b, c, d, x, y)
#define G8_VL(v, a, b, c, d, x, y) G8_WITH(ROT_VL, v, a, b, c, d, x, y)

/* In-place 8x8 transpose of 32-bit words: row i (lane i's words) becomes
 * column i (word i of every lane), and back. */
AVX2_FN void transpose8(__m256i r[8])
{
    __m256i t[8], u[8];
    for (int k = 0; k < 4; k++) {
        t[2 * k] = _mm256_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm256_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
    }
    for (int g = 0; g < 2; g++) {
        __m256i *tt = t + 4 * g, *uu = u + 4 * g;
        uu[0] = _mm256_unpacklo_epi64(tt[0], tt[2]);
        uu[1] = _mm256_unpackhi_epi64(tt[0], tt[2]);
        uu[2] = _mm256_unpacklo_epi64(tt[1], tt[3]);
        uu[3] = _mm256_unpackhi_epi64(tt[1], tt[3]);
    }
    /* u[j] holds word j (low half) and word j+4 (high half) of lanes 0-3,
     * u[4+j] the same of lanes 4-7 */
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x20);
        r[j + 4] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x31);
    }
}

AVX2_FN __m256i loadv8(const uint32_t *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}

/* Hash up to 8 jobs side by side; prefetch the nnext jobs at `next`.  The
 * body is a macro because it is built twice, for AVX2 and for AVX-512VL (G8 is
 * G8_AVX2 or G8_VL): GCC cannot inline AVX-512VL rotations into an AVX2
 * function, and an out-of-line call for the rounds costs 20% on 8 lanes. */
#define DEFINE_HASH8(NAME, TARGET, G8)                                                           \
    __attribute__((target(TARGET))) static void NAME(                                            \
        const job *jobs, size_t n, const uint32_t key[8], const job *next, size_t nnext)         \
    {                                                                                            \
        lanes L;                                                                                 \
        lanes_setup(&L, jobs, n, 8);                                                             \
        __m256i h[8], m[16], v[16];                                                              \
        for (int i = 0; i < 8; i++)                                                              \
            h[i] = _mm256_set1_epi32((int)key[i]);                                               \
        const __m256i ctr_lo = loadv8(L.ctr_lo), ctr_hi = loadv8(L.ctr_hi);                      \
        const __m256i nblocks = loadv8(L.nblocks), last_len = loadv8(L.last_len);                \
        const __m256i fall = loadv8(L.fall), ffirst = loadv8(L.ffirst);                          \
        const __m256i flast = loadv8(L.flast), full_len = _mm256_set1_epi32(BLOCK_LEN);          \
                                                                                                 \
        for (uint32_t j = 0; j < L.max_blocks; j++) {                                            \
            for (int l = 0; l < 8; l++) {                                                        \
                const uint8_t *p = lane_block(&L, l, j);                                         \
                m[l] = _mm256_loadu_si256((const __m256i *)p);                                   \
                m[8 + l] = _mm256_loadu_si256((const __m256i *)(p + 32));                        \
            }                                                                                    \
            prefetch_step(&L, 8, next, nnext, j);                                                \
            transpose8(m);                                                                       \
            transpose8(m + 8);                                                                   \
                                                                                                 \
            /* lanes still running, and lanes at their last block */                             \
            const __m256i active = _mm256_cmpgt_epi32(nblocks, _mm256_set1_epi32((int)j));       \
            const __m256i is_last = _mm256_cmpeq_epi32(nblocks, _mm256_set1_epi32((int)j + 1));  \
            __m256i flags = j == 0 ? _mm256_or_si256(fall, ffirst) : fall;                       \
            flags = _mm256_or_si256(flags, _mm256_and_si256(flast, is_last));                    \
                                                                                                 \
            for (int i = 0; i < 8; i++)                                                          \
                v[i] = h[i];                                                                     \
            for (int i = 0; i < 4; i++)                                                          \
                v[8 + i] = _mm256_set1_epi32((int)IV[i]);                                        \
            v[12] = ctr_lo;                                                                      \
            v[13] = ctr_hi;                                                                      \
            v[14] = _mm256_blendv_epi8(full_len, last_len, is_last);                             \
            v[15] = flags;                                                                       \
            SEVEN_ROUNDS(G8, v, m);                                                              \
            for (int i = 0; i < 8; i++)                                                          \
                h[i] = _mm256_blendv_epi8(h[i], xor8(v[i], v[i + 8]), active);                   \
        }                                                                                        \
        transpose8(h);                                                                           \
        for (size_t l = 0; l < n; l++)                                                           \
            _mm256_storeu_si256((__m256i *)jobs[l].out, h[l]);                                   \
    }

DEFINE_HASH8(hash8_avx2, "avx2", G8_AVX2)
DEFINE_HASH8(hash8_avx512vl, "avx512f,avx512vl", G8_VL)

typedef void (*hash8_fn)(const job *, size_t, const uint32_t[8], const job *, size_t);

/* Jobs in groups of 8; a lone job left over is cheaper without SIMD. */
static void hash_jobs_8(const job *jobs, size_t n, const uint32_t key[8], hash8_fn hash8)
{
    while (n >= 8) {
        size_t nn = n - 8 < 8 ? n - 8 : 8;
        hash8(jobs, 8, key, jobs + 8, nn);
        jobs += 8;
        n -= 8;
    }
    if (n > 1)
        hash8(jobs, n, key, NULL, 0);
    else if (n)
        hash_jobs_portable(jobs, n, key);
}

static void hash_jobs_avx2(const job *jobs, size_t n, const uint32_t key[8])
{
    hash_jobs_8(jobs, n, key, hash8_avx2);
}

/* ---- AVX-512: 16 lanes ------------------------------------------------------------ */

#define AVX512_FN static inline __attribute__((target("avx512f")))

AVX512_FN __m512i add16(__m512i a, __m512i b)
{
    return _mm512_add_epi32(a, b);
}

#define G16(v, a, b, c, d, x, y)                                                                 \
    do {                                                                                         \
        v[a] = add16(add16(v[a], v[b]), (x));                                                    \
        v[d] = _mm512_ror_epi32(_mm512_xor_si512(v[d], v[a]), 16);                               \
        v[c] = add16(v[c], v[d]);                                                                \
        v[b] = _mm512_ror_epi32(_mm512_xor_si512(v[b], v[c]), 12);                               \
        v[a] = add16(add16(v[a], v[b]), (y));                                                    \
        v[d] = _mm512_ror_epi32(_mm512_xor_si512(v[d], v[a]), 8);                                \
        v[c] = add16(v[c], v[d]);                                                                \
        v[b] = _mm512_ror_epi32(_mm512_xor_si512(v[b], v[c]), 7);                                \
    } while (0)

/* In-place 16x16 transpose of 32-bit words (self-inverse). */
AVX512_FN void transpose16(__m512i r[16])
{
    __m512i t[16], u[16];
    for (int k = 0; k < 8; k++) {
        t[2 * k] = _mm512_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
    }
    /* u[4g+j], 128-bit part q: word 4q+j of rows 4g..4g+3 */
    for (int g = 0; g < 4; g++) {
        __m512i *tt = t + 4 * g, *uu = u + 4 * g;
        uu[0] = _mm512_unpacklo_epi64(tt[0], tt[2]);
        uu[1] = _mm512_unpackhi_epi64(tt[0], tt[2]);
        uu[2] = _mm512_unpacklo_epi64(tt[1], tt[3]);
        uu[3] = _mm512_unpackhi_epi64(tt[1], tt[3]);
    }
    /* gather part q of u[j], u[4+j], u[8+j], u[12+j] into row 4q+j */
    for (int j = 0; j < 4; j++) {
        __m512i a01 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0x44);      /* A0 A1 B0 B1 */
        __m512i a23 = _mm512_shuffle_i32x4(u[j], u[4 + j], 0xEE);      /* A2 A3 B2 B3 */
        __m512i c01 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0x44); /* C0 C1 D0 D1 */
        __m512i c23 = _mm512_shuffle_i32x4(u[8 + j], u[12 + j], 0xEE); /* C2 C3 D2 D3 */
        r[j] = _mm512_shuffle_i32x4(a01, c01, 0x88);                   /* A0 B0 C0 D0 */
        r[4 + j] = _mm512_shuffle_i32x4(a01, c01, 0xDD);               /* A1 B1 C1 D1 */
        r[8 + j] = _mm512_shuffle_i32x4(a23, c23, 0x88);
        r[12 + j] = _mm512_shuffle_i32x4(a23, c23, 0xDD);
    }
}

AVX512_FN __m512i loadv16(const uint32_t *p)
{
    return _mm512_loadu_si512((const void *)p);
}

/* Hash up to 16 jobs side by side; prefetch the nnext jobs at `next`. */
__attribute__((target("avx512f"))) static void hash16_avx512(const job *jobs, size_t n,
                                                             const uint32_t key[8],
                                                             const job *next, size_t nnext)
{
    lanes L;
    lanes_setup(&L, jobs, n, 16);
    __m512i h[16], m[16], v[16];
    for (int i = 0; i < 8; i++)
        h[i] = _mm512_set1_epi32((int)key[i]);
    const __m512i ctr_lo = loadv16(L.ctr_lo), ctr_hi = loadv16(L.ctr_hi);
    const __m512i nblocks = loadv16(L.nblocks), last_len = loadv16(L.last_len);
    const __m512i fall = loadv16(L.fall), ffirst = loadv16(L.ffirst), flast = loadv16(L.flast);
    const __m512i full_len = _mm512_set1_epi32(BLOCK_LEN);

    for (uint32_t j = 0; j < L.max_blocks; j++) {
        for (int l = 0; l < 16; l++)
            m[l] = _mm512_loadu_si512((const void *)lane_block(&L, l, j));
        prefetch_step(&L, 16, next, nnext, j);
        transpose16(m);

        const __m512i jv = _mm512_set1_epi32((int)j);
        const __mmask16 active = _mm512_cmpgt_epu32_mask(nblocks, jv);
        const __mmask16 is_last = _mm512_cmpeq_epi32_mask(nblocks, _mm512_set1_epi32((int)j + 1));
        __m512i flags = j == 0 ? _mm512_or_si512(fall, ffirst) : fall;
        flags = _mm512_mask_or_epi32(flags, is_last, flags, flast);

        for (int i = 0; i < 8; i++)
            v[i] = h[i];
        for (int i = 0; i < 4; i++)
            v[8 + i] = _mm512_set1_epi32((int)IV[i]);
        v[12] = ctr_lo;
        v[13] = ctr_hi;
        v[14] = _mm512_mask_blend_epi32(is_last, full_len, last_len);
        v[15] = flags;
        SEVEN_ROUNDS(G16, v, m);
        for (int i = 0; i < 8; i++)
            h[i] = _mm512_mask_mov_epi32(h[i], active, _mm512_xor_si512(v[i], v[i + 8]));
    }
    /* rows 8..15 are don't-care: only the low 8 words of each lane are stored */
    for (int i = 8; i < 16; i++)
        h[i] = _mm512_setzero_si512();
    transpose16(h);
    for (size_t l = 0; l < n; l++)
        _mm256_storeu_si256((__m256i *)jobs[l].out, _mm512_castsi512_si256(h[l]));
}

static void hash_jobs_avx512(const job *jobs, size_t n, const uint32_t key[8])
{
    while (n >= 16) {
        size_t nn = n - 16 < 16 ? n - 16 : 16;
        hash16_avx512(jobs, 16, key, jobs + 16, nn);
        jobs += 16;
        n -= 16;
    }
    /* a short tail is cheaper in 8 lanes than in 16 mostly idle ones */
    if (n > 8)
        hash16_avx512(jobs, n, key, NULL, 0);
    else if (n)
        hash_jobs_8(jobs, n, key, hash8_avx512vl);
}

#endif /* HAVE_X86 */

/* ---- implementations -------------------------------------------------------------- */

typedef struct {
    const char *name;
    hash_jobs_fn hash_jobs;
    int (*supported)(void);
} impl;

static int always(void)
{
    return 1;
}

#if HAVE_X86
static int have_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

static int have_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512vl");
}
#endif

/* Fastest first. */
static const impl IMPLS[] = {
#if HAVE_X86
    {"avx512", hash_jobs_avx512, have_avx512},
    {"avx2", hash_jobs_avx2, have_avx2},
#endif
    {"portable", hash_jobs_portable, always},
};
#define N_IMPLS (sizeof IMPLS / sizeof IMPLS[0])

/* The implementation in use; read once per call, so a switch never affects a
 * call already running. */
static const impl *current_impl = &IMPLS[N_IMPLS - 1];

static const impl *get_impl(void)
{
    return __atomic_load_n(&current_impl, __ATOMIC_ACQUIRE);
}

/* ---- batches: chunks of many blocks, then their parents ------------------------------- */

/* A block of more than UNIT_CHUNKS chunks is cut into units of UNIT_CHUNKS
 * chunks (a power of two, so each full unit is a complete subtree); each unit
 * reduces to one CV, and the units' CVs are combined afterwards. */
#define UNIT_CHUNKS 64
/* A batch is hashed when it holds this many chunks: enough to fill the lanes
 * at every tree level for common block sizes, small enough to stay in cache. */
#define BATCH_CHUNKS 512
#define MAX_BATCH_JOBS (BATCH_CHUNKS + UNIT_CHUNKS)

typedef struct {
    uint32_t first; /* index of its first CV in batch.cv */
    uint32_t n;     /* nodes left at the current tree level */
    uint32_t root;  /* ROOT if the unit is a whole block, else 0 */
    uint8_t *out;   /* where its final CV goes */
} unit;

typedef struct {
    const impl *im;
    const uint32_t *key;
    uint32_t kflags; /* mode flags on every compression (0 in hash mode) */
    size_t nunits, njobs, npartial;
    unit units[BATCH_CHUNKS];
    job jobs[MAX_BATCH_JOBS];
    job partial[MAX_BATCH_JOBS]; /* chunks shorter than 1024 bytes */
    uint8_t cv[MAX_BATCH_JOBS][OUT_LEN];
} batch;

/* Queue the chunks of one unit: `len` bytes at `p`, its first chunk being
 * chunk number `chunk0` of its block. */
static void batch_add(batch *b, const uint8_t *p, uint64_t len, uint64_t chunk0, uint32_t root,
                      uint8_t *out)
{
    uint32_t nchunks = len == 0 ? 1 : (uint32_t)((len + CHUNK_LEN - 1) / CHUNK_LEN);
    uint32_t first = (uint32_t)b->njobs + (uint32_t)b->npartial;
    unit *u = &b->units[b->nunits++];
    u->first = first;
    u->n = nchunks;
    u->root = root;
    u->out = out;
    for (uint32_t c = 0; c < nchunks; c++) {
        uint64_t off = (uint64_t)c * CHUNK_LEN;
        uint32_t clen = len - off < CHUNK_LEN ? (uint32_t)(len - off) : CHUNK_LEN;
        uint32_t nblocks = clen == 0 ? 1 : (clen + BLOCK_LEN - 1) / BLOCK_LEN;
        job jb = {
            .data = p + off,
            .out = nchunks == 1 ? out : b->cv[first + c],
            .counter = chunk0 + c,
            .nblocks = nblocks,
            .last_len = clen - BLOCK_LEN * (nblocks - 1),
            .flags_all = b->kflags,
            .flags_first = CHUNK_START,
            .flags_last = CHUNK_END | (nchunks == 1 ? root : 0),
        };
        if (clen == CHUNK_LEN)
            b->jobs[b->njobs++] = jb;
        else
            b->partial[b->npartial++] = jb;
    }
}

/* A parent job combining the two CVs at `pair`. */
static job parent_job(const batch *b, const uint8_t *pair, uint8_t *out, uint32_t root)
{
    job jb = {
        .data = pair,
        .out = out,
        .counter = 0,
        .nblocks = 1,
        .last_len = BLOCK_LEN,
        .flags_all = b->kflags | PARENT,
        .flags_first = 0,
        .flags_last = root,
    };
    return jb;
}

static void batch_flush(batch *b)
{
    if (b->nunits == 0)
        return;
    /* Short chunks go after the full ones, longest first, so that lanes side
     * by side have nearly the same number of blocks (counting sort). */
    size_t count[17] = {0};
    for (size_t i = 0; i < b->npartial; i++)
        count[b->partial[i].nblocks]++;
    size_t pos[17], at = b->njobs;
    for (int k = 16; k >= 1; k--) {
        pos[k] = at;
        at += count[k];
    }
    for (size_t i = 0; i < b->npartial; i++)
        b->jobs[pos[b->partial[i].nblocks]++] = b->partial[i];
    b->im->hash_jobs(b->jobs, b->njobs + b->npartial, b->key);

    /* Parent levels across all units, in place: parent i reads slots 2i and
     * 2i+1 and writes slot i, whose old node was read by parent i/2 <= i. */
    for (;;) {
        size_t n = 0;
        for (size_t k = 0; k < b->nunits; k++) {
            unit *u = &b->units[k];
            if (u->n < 2)
                continue;
            uint8_t(*cv)[OUT_LEN] = b->cv + u->first;
            uint32_t pairs = u->n / 2;
            for (uint32_t i = 0; i < pairs; i++)
                b->jobs[n++] = parent_job(b, cv[2 * i], u->n == 2 ? u->out : cv[i],
                                          u->n == 2 ? u->root : 0);
        }
        if (n == 0)
            break;
        b->im->hash_jobs(b->jobs, n, b->key);
        for (size_t k = 0; k < b->nunits; k++) {
            unit *u = &b->units[k];
            if (u->n < 2)
                continue;
            if (u->n & 1) /* the odd last node moves up a level unchanged */
                memcpy(b->cv[u->first + u->n / 2], b->cv[u->first + u->n - 1], OUT_LEN);
            u->n = (u->n + 1) / 2;
        }
    }
    b->nunits = b->njobs = b->npartial = 0;
}

/* Combine n >= 2 CVs (in place) into the root, written to out. */
static void reduce_cvs(batch *b, uint8_t (*cv)[OUT_LEN], size_t n, uint8_t *out)
{
    while (n > 1) {
        size_t pairs = n / 2;
        for (size_t i0 = 0; i0 < pairs; i0 += MAX_BATCH_JOBS) {
            size_t k = pairs - i0 < MAX_BATCH_JOBS ? pairs - i0 : MAX_BATCH_JOBS;
            for (size_t i = 0; i < k; i++)
                b->jobs[i] = parent_job(b, cv[2 * (i0 + i)], n == 2 ? out : cv[i0 + i],
                                        n == 2 ? ROOT : 0);
            b->im->hash_jobs(b->jobs, k, b->key);
        }
        if (n & 1)
            memcpy(cv[n / 2], cv[n - 1], OUT_LEN);
        n = (n + 1) / 2;
    }
}

/* Hash one whole block into out[0..32).  Returns -1 when out of memory. */
static int batch_block(batch *b, const uint8_t *p, uint64_t len, uint8_t *out)
{
    const uint64_t unit_len = (uint64_t)UNIT_CHUNKS * CHUNK_LEN;
    if (len <= unit_len) {
        batch_add(b, p, len, 0, ROOT, out);
        if (b->njobs + b->npartial >= BATCH_CHUNKS)
            batch_flush(b);
        return 0;
    }
    size_t nunits = (size_t)((len + unit_len - 1) / unit_len);
    uint8_t(*ucv)[OUT_LEN] = malloc(nunits * OUT_LEN);
    if (!ucv)
        return -1;
    for (size_t i = 0; i < nunits; i++) {
        uint64_t off = i * unit_len;
        uint64_t n = len - off < unit_len ? len - off : unit_len;
        batch_add(b, p + off, n, (uint64_t)i * UNIT_CHUNKS, 0, ucv[i]);
        if (b->njobs + b->npartial >= BATCH_CHUNKS)
            batch_flush(b);
    }
    batch_flush(b);
    reduce_cvs(b, ucv, nunits, out);
    free(ucv);
    return 0;
}

typedef struct {
    const uint8_t *p;
    uint64_t len;
} span;

/* Digest every span into out (32 bytes each).  Needs no GIL.  -1: no memory. */
static int hash_spans(const impl *im, const span *s, size_t n, uint8_t *out)
{
    batch *b = malloc(sizeof *b);
    if (!b)
        return -1;
    b->im = im;
    b->key = IV;
    b->kflags = 0;
    b->nunits = b->njobs = b->npartial = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = batch_block(b, s[i].p, s[i].len, out + OUT_LEN * i);
    batch_flush(b);
    free(b);
    return rc;
}

/* ---- Python interface ----------------------------------------------------------------- */


/* An offset argument: a non-negative int below 2**64. */
static int get_offset(PyObject *obj, const char *what, uint64_t *out)
{
    PyObject *idx = PyNumber_Index(obj);
    if (!idx)
        return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(idx);
    Py_DECREF(idx);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "%s must be a non-negative offset below 2**64, not %R",
                         what, obj);
        }
        return -1;
    }
    *out = v;
    return 0;
}

/* Below this many bytes a call keeps the GIL: hashing them takes a few
 * microseconds, while a thread that gives the GIL up can wait a whole switch
 * interval (5 ms) to get it back when other threads are busy. */
#define GIL_RELEASE_MIN (32 * 1024)

/* Hash spans (without the GIL if they are large) into a new bytes object of
 * 32 * n bytes. */
static PyObject *digests(const span *s, size_t n)
{
    PyObject *res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n * OUT_LEN));
    if (!res)
        return NULL;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(res);
    const impl *im = get_impl();
    uint64_t total = 0;
    for (size_t i = 0; i < n && total < GIL_RELEASE_MIN; i++)
        total += s[i].len;
    int rc;
    if (total < GIL_RELEASE_MIN) {
        rc = hash_spans(im, s, n, out);
    } else {
        Py_BEGIN_ALLOW_THREADS
        rc = hash_spans(im, s, n, out);
        Py_END_ALLOW_THREADS
    }
    if (rc < 0) {
        Py_DECREF(res);
        return PyErr_NoMemory();
    }
    return res;
}

PyDoc_STRVAR(digest_doc, "digest(data) -> bytes\n\n"
                         "The 32-byte BLAKE3 hash of one bytes-like object.");

static PyObject *b3_digest(PyObject *Py_UNUSED(mod), PyObject *arg)
{
    Py_buffer view;
    if (get_buffer(arg, &view) < 0)
        return NULL;
    span s = {view.buf, (uint64_t)view.len};
    PyObject *res = digests(&s, 1);
    PyBuffer_Release(&view);
    return res;
}

PyDoc_STRVAR(digest_cuts_doc,
             "digest_cuts(buf, start, cuts, base=0) -> bytes\n\n"
             "The BLAKE3 digests of the blocks [start, cuts[0]), [cuts[0], cuts[1]), ...\n"
             "of `buf`, concatenated (32 bytes each).  Offsets are stream positions and\n"
             "`base` is the position of buf[0] (as in vtstore.chunking._cdc.run_bytes).\n"
             "Offsets must not decrease and must lie inside the buffer.");

static PyObject *b3_digest_cuts(PyObject *Py_UNUSED(mod), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buf", "start", "cuts", "base", NULL};
    PyObject *data, *start_obj, *cuts_obj, *base_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|O:digest_cuts", kwlist, &data, &start_obj,
                                     &cuts_obj, &base_obj))
        return NULL;
    uint64_t start, base = 0;
    if (get_offset(start_obj, "start", &start) < 0)
        return NULL;
    if (base_obj && get_offset(base_obj, "base", &base) < 0)
        return NULL;
    Py_buffer view;
    if (get_buffer(data, &view) < 0)
        return NULL;
    PyObject *fast = NULL, *res = NULL;
    span *spans = NULL;
    if (base > UINT64_MAX - (uint64_t)view.len) {
        PyErr_SetString(PyExc_ValueError, "base + len(buf) is past 2**64");
        goto done;
    }
    const uint64_t end = base + (uint64_t)view.len;
    if (start < base || start > end) {
        PyErr_Format(PyExc_ValueError,
                     "start %llu outside the buffer (stream positions %llu..%llu)",
                     (unsigned long long)start, (unsigned long long)base,
                     (unsigned long long)end);
        goto done;
    }
    fast = PySequence_Fast(cuts_obj, "cuts must be a sequence of offsets");
    if (!fast)
        goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    spans = malloc((size_t)(n ? n : 1) * sizeof *spans);
    if (!spans) {
        PyErr_NoMemory();
        goto done;
    }
    const uint8_t *buf = view.buf;
    uint64_t prev = start;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t e;
        if (get_offset(PySequence_Fast_GET_ITEM(fast, i), "a cut", &e) < 0)
            goto done;
        if (e < prev) {
            PyErr_Format(PyExc_ValueError, "cuts[%zd] = %llu is before the previous offset %llu",
                         i, (unsigned long long)e, (unsigned long long)prev);
            goto done;
        }
        if (e > end) {
            PyErr_Format(PyExc_ValueError,
                         "cuts[%zd] = %llu is past the end of the buffer (stream position %llu)",
                         i, (unsigned long long)e, (unsigned long long)end);
            goto done;
        }
        spans[i].p = buf + (prev - base);
        spans[i].len = e - prev;
        prev = e;
    }
    res = digests(spans, (size_t)n);
done:
    free(spans);
    Py_XDECREF(fast);
    PyBuffer_Release(&view);
    return res;
}

PyDoc_STRVAR(digest_list_doc, "digest_list(buffers) -> bytes\n\n"
                              "The BLAKE3 digests of each bytes-like object of a sequence,\n"
                              "concatenated (32 bytes each).");

static PyObject *b3_digest_list(PyObject *Py_UNUSED(mod), PyObject *arg)
{
    PyObject *fast = PySequence_Fast(arg, "digest_list() takes a sequence of bytes-like objects");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast), got = 0;
    Py_buffer *views = malloc((size_t)(n ? n : 1) * sizeof *views);
    span *spans = malloc((size_t)(n ? n : 1) * sizeof *spans);
    PyObject *res = NULL;
    if (!views || !spans) {
        PyErr_NoMemory();
        goto done;
    }
    /* hold every view until hashing is done, so no buffer can move or shrink */
    for (; got < n; got++) {
        if (get_buffer(PySequence_Fast_GET_ITEM(fast, got), &views[got]) < 0)
            goto done;
        spans[got].p = views[got].buf;
        spans[got].len = (uint64_t)views[got].len;
    }
    res = digests(spans, (size_t)n);
done:
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    free(views);
    free(spans);
    Py_DECREF(fast);
    return res;
}

PyDoc_STRVAR(implementation_doc, "implementation() -> str\n\n"
                                 "The implementation in use: 'avx512', 'avx2' or 'portable'.");

static PyObject *b3_implementation(PyObject *Py_UNUSED(mod), PyObject *Py_UNUSED(ignored))
{
    return PyUnicode_FromString(get_impl()->name);
}

PyDoc_STRVAR(implementations_doc,
             "implementations() -> tuple[str, ...]\n\n"
             "The implementations this CPU can run, fastest first.");

static PyObject *b3_implementations(PyObject *Py_UNUSED(mod), PyObject *Py_UNUSED(ignored))
{
    return vt_impl_names(VT_IMPL_TABLE(IMPLS, impl));
}

PyDoc_STRVAR(set_implementation_doc,
             "set_implementation(name) -> None\n\n"
             "Use implementation `name` from now on (for every thread); None picks the\n"
             "fastest.  ValueError if the name is unknown or this CPU lacks it.");

static PyObject *b3_set_implementation(PyObject *Py_UNUSED(mod), PyObject *arg)
{
    Py_ssize_t i = vt_impl_pick(VT_IMPL_TABLE(IMPLS, impl), arg, "BLAKE3");
    if (i < 0)
        return NULL;
    __atomic_store_n(&current_impl, &IMPLS[i], __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

static PyMethodDef b3_methods[] = {
    {"digest", (PyCFunction)b3_digest, METH_O, digest_doc},
    {"digest_cuts", (PyCFunction)(void (*)(void))b3_digest_cuts, METH_VARARGS | METH_KEYWORDS,
     digest_cuts_doc},
    {"digest_list", (PyCFunction)b3_digest_list, METH_O, digest_list_doc},
    {"implementation", (PyCFunction)b3_implementation, METH_NOARGS, implementation_doc},
    {"implementations", (PyCFunction)b3_implementations, METH_NOARGS, implementations_doc},
    {"set_implementation", (PyCFunction)b3_set_implementation, METH_O, set_implementation_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef b3_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "vtstore._blake3",
    .m_doc = "Batch BLAKE3 (plain hash mode) with the GIL released, SIMD across blocks.",
    .m_size = -1,
    .m_methods = b3_methods,
};

/* At the start of a module that hashes (this one, and those that include
 * this file): check the message schedule table and pick the fastest
 * implementation this CPU runs.  -1 with ImportError set if the table is wrong. */
static int blake3_init(const char *module)
{
    if (check_schedule() < 0) {
        PyErr_Format(PyExc_ImportError, "%s: BLAKE3 message schedule table is wrong", module);
        return -1;
    }
    for (size_t i = 0; i < N_IMPLS; i++) {
        if (IMPLS[i].supported()) {
            current_impl = &IMPLS[i];
            break;
        }
    }
    return 0;
}

PyMODINIT_FUNC PyInit__blake3(void)
{
    if (blake3_init("vtstore._blake3") < 0)
        return NULL;
    return PyModule_Create(&b3_module);
}
