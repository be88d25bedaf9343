/* AES-256-GCM with VAES and VPCLMULQDQ on 512-bit registers (AVX-512), for
 * the crypt store's blocks (_cryptblocks.c).
 *
 * Why: the system's libcrypto (Debian's OpenSSL 3.0) has no VAES path for
 * GCM and runs at about 4 GB/s (2.0 us an 8 KiB block); reading an encrypted
 * block costs that on top of everything a plain read costs.  Here the counter
 * blocks are encrypted four to a register and GHASH multiplies four blocks an
 * instruction, 32 blocks reduced at once.  The output is AES-256-GCM
 * (NIST SP 800-38D) byte for byte, for a 12-octet nonce: tests compare it with
 * libcrypto's at every length, both ways, and with tampered input.
 *
 * GHASH is computed as POLYVAL (RFC 8452, appendix A): GHASH(H, X...) =
 * ByteReverse(POLYVAL(mulX_POLYVAL(ByteReverse(H)), ByteReverse(X)...)), so
 * the field arithmetic works on little-endian words with no bit reflection
 * (the multiplication and reduction of Gueron and Lindell's AES-GCM-SIV).
 * POLYVAL's product is dot(a, b) = a b x^-128; the powers kept are dot-powers,
 * so a sum of unreduced products over sixteen blocks reduces once.
 *
 * Constant time as far as the data and key go: AES by the AES instructions,
 * GF(2^128) by carry-less multiplication, the tag compared by CRYPTO_memcmp.
 * Only lengths steer branches.  Used only when the CPU has AVX512F, AVX512BW,
 * VAES and VPCLMULQDQ (gcm512_supported); libcrypto otherwise.
 */
#ifndef VTSTORE_GCM512_H
#define VTSTORE_GCM512_H

#include <openssl/crypto.h>
#include <stdint.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define HAVE_GCM512 1
#include <immintrin.h>

#define GCM512_FN                                                                                  \
    static inline __attribute__((target("avx512f,avx512bw,vaes,vpclmulqdq,aes,pclmul,sse4.1")))

typedef struct {
    __m512i rk[15]; /* the AES-256 round keys, each in all four lanes */
    __m512i pw[8];  /* lanes of register r: dot-powers H^(32-4r), ..., H^(29-4r) */
    __m128i h1;     /* POLYVAL's key: mulX_POLYVAL(ByteReverse(H)) */
} gcm512_key;

static int gcm512_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("vaes") && __builtin_cpu_supports("vpclmulqdq") &&
           __builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul");
}

GCM512_FN __m128i gcm512_rev(__m128i x)
{
    return _mm_shuffle_epi8(x, _mm_setr_epi8(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0));
}

GCM512_FN __m512i gcm512_rev4(__m512i x)
{
    const __m512i m = _mm512_broadcast_i32x4(
        _mm_setr_epi8(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0));
    return _mm512_shuffle_epi8(x, m);
}

/* POLYVAL's reduction of the 256-bit product hi:lo (times x^-128). */
GCM512_FN __m128i gcm512_reduce(__m128i lo, __m128i hi)
{
    const __m128i poly = _mm_setr_epi32(1, 0, 0, (int)0xc2000000);
    __m128i t = _mm_clmulepi64_si128(lo, poly, 0x10);
    lo = _mm_xor_si128(_mm_shuffle_epi32(lo, 78), t);
    t = _mm_clmulepi64_si128(lo, poly, 0x10);
    lo = _mm_xor_si128(_mm_shuffle_epi32(lo, 78), t);
    return _mm_xor_si128(hi, lo);
}

/* Fold a middle term into lo and hi. */
GCM512_FN void gcm512_fold(__m128i mid, __m128i *lo, __m128i *hi)
{
    *lo = _mm_xor_si128(*lo, _mm_slli_si128(mid, 8));
    *hi = _mm_xor_si128(*hi, _mm_srli_si128(mid, 8));
}

/* dot(a, b) = a b x^-128 in POLYVAL's field. */
GCM512_FN __m128i gcm512_dot(__m128i a, __m128i b)
{
    __m128i lo = _mm_clmulepi64_si128(a, b, 0x00);
    __m128i hi = _mm_clmulepi64_si128(a, b, 0x11);
    __m128i mid = _mm_xor_si128(_mm_clmulepi64_si128(a, b, 0x10), _mm_clmulepi64_si128(a, b, 0x01));
    gcm512_fold(mid, &lo, &hi);
    return gcm512_reduce(lo, hi);
}

GCM512_FN __m128i gcm512_xor4(__m512i v)
{
    return _mm_xor_si128(
        _mm_xor_si128(_mm512_extracti32x4_epi32(v, 0), _mm512_extracti32x4_epi32(v, 1)),
        _mm_xor_si128(_mm512_extracti32x4_epi32(v, 2), _mm512_extracti32x4_epi32(v, 3)));
}

/* Unreduced products of four blocks by four powers, added to lo, mid, hi. */
GCM512_FN void gcm512_mul4(__m512i x, __m512i p, __m512i *lo, __m512i *mid, __m512i *hi)
{
    *lo = _mm512_xor_si512(*lo, _mm512_clmulepi64_epi128(x, p, 0x00));
    *hi = _mm512_xor_si512(*hi, _mm512_clmulepi64_epi128(x, p, 0x11));
    *mid = _mm512_xor_si512(*mid, _mm512_xor_si512(_mm512_clmulepi64_epi128(x, p, 0x10),
                                                   _mm512_clmulepi64_epi128(x, p, 0x01)));
}

GCM512_FN __m128i gcm512_sum(__m512i lo, __m512i mid, __m512i hi)
{
    __m128i l = gcm512_xor4(lo), h = gcm512_xor4(hi);
    gcm512_fold(gcm512_xor4(mid), &l, &h);
    return gcm512_reduce(l, h);
}

/* x ^ x << 32 ^ x << 64 ^ x << 96: each word of a key-schedule step xored with
 * the words before it. */
GCM512_FN __m128i gcm512_spread(__m128i x)
{
    x = _mm_xor_si128(x, _mm_slli_si128(x, 4));
    return _mm_xor_si128(x, _mm_slli_si128(x, 8));
}

GCM512_FN __m128i gcm512_assist1(__m128i t1, __m128i t2)
{
    return _mm_xor_si128(gcm512_spread(t1), _mm_shuffle_epi32(t2, 0xff));
}

GCM512_FN __m128i gcm512_assist2(__m128i t1, __m128i t3)
{
    return _mm_xor_si128(gcm512_spread(t3),
                         _mm_shuffle_epi32(_mm_aeskeygenassist_si128(t1, 0x0), 0xaa));
}

#define GCM512_EXPAND(RCON, i)                                                                     \
    do {                                                                                           \
        t1 = gcm512_assist1(t1, _mm_aeskeygenassist_si128(t3, RCON));                              \
        rk[i] = t1;                                                                                \
        if (i + 1 < 15) {                                                                          \
            t3 = gcm512_assist2(t1, t3);                                                           \
            rk[i + 1] = t3;                                                                        \
        }                                                                                          \
    } while (0)

/* The key schedule, H and its powers for `key` (32 octets). */
GCM512_FN void gcm512_init(gcm512_key *k, const uint8_t *key)
{
    __m128i rk[15];
    __m128i t1 = _mm_loadu_si128((const __m128i *)key);
    __m128i t3 = _mm_loadu_si128((const __m128i *)(key + 16));
    rk[0] = t1;
    rk[1] = t3;
    GCM512_EXPAND(0x01, 2);
    GCM512_EXPAND(0x02, 4);
    GCM512_EXPAND(0x04, 6);
    GCM512_EXPAND(0x08, 8);
    GCM512_EXPAND(0x10, 10);
    GCM512_EXPAND(0x20, 12);
    GCM512_EXPAND(0x40, 14);
    for (int i = 0; i < 15; i++)
        k->rk[i] = _mm512_broadcast_i32x4(rk[i]);
    __m128i h = _mm_xor_si128(_mm_setzero_si128(), rk[0]);
    for (int i = 1; i < 14; i++)
        h = _mm_aesenc_si128(h, rk[i]);
    h = gcm512_rev(_mm_aesenclast_si128(h, rk[14]));
    /* mulX_POLYVAL: h * x, reduced by x^128 = x^127 + x^126 + x^121 + 1 */
    uint64_t w[2];
    _mm_storeu_si128((__m128i *)w, h);
    uint64_t carry = w[1] >> 63;
    w[1] = (w[1] << 1) | (w[0] >> 63);
    w[0] <<= 1;
    w[1] ^= carry * 0xc200000000000000ULL;
    w[0] ^= carry;
    k->h1 = _mm_loadu_si128((const __m128i *)w);
    __m128i p[33];
    p[1] = k->h1;
    for (int i = 2; i <= 32; i++)
        p[i] = gcm512_dot(p[i - 1], k->h1);
    for (int r = 0; r < 8; r++) {
        __m128i lanes[4] = {p[32 - 4 * r], p[31 - 4 * r], p[30 - 4 * r], p[29 - 4 * r]};
        k->pw[r] = _mm512_loadu_si512(lanes);
    }
}

/* Four counter blocks from the byte-reversed counter `c` (its low dword is
 * the big-endian 32-bit counter), each encrypted. */
GCM512_FN __m512i gcm512_aes4(const gcm512_key *k, __m512i blocks)
{
    __m512i x = _mm512_xor_si512(blocks, k->rk[0]);
    for (int i = 1; i < 14; i++)
        x = _mm512_aesenc_epi128(x, k->rk[i]);
    return _mm512_aesenclast_epi128(x, k->rk[14]);
}

/* R registers of four blocks (R = 8, 4 or 1) at `in`: the counter blocks
 * encrypted and xored in, the ciphertext's POLYVAL added to `s` with one
 * reduction; returns the new `s`. */
GCM512_FN __attribute__((always_inline)) __m128i
gcm512_step(const gcm512_key *k, int enc, const uint8_t *in, uint8_t *out, __m512i *ctr,
            __m128i s, const int R)
{
    const __m512i four = _mm512_setr_epi32(4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0);
    __m512i ks[8], x[8], lo = _mm512_setzero_si512(), mid = lo, hi = lo;
    for (int r = 0; r < R; r++) {
        ks[r] = _mm512_xor_si512(gcm512_rev4(*ctr), k->rk[0]);
        *ctr = _mm512_add_epi32(*ctr, four);
    }
    for (int i = 1; i < 14; i++)
        for (int r = 0; r < R; r++)
            ks[r] = _mm512_aesenc_epi128(ks[r], k->rk[i]);
    for (int r = 0; r < R; r++) {
        __m512i c = _mm512_loadu_si512(in + 64 * r);
        __m512i p = _mm512_xor_si512(c, _mm512_aesenclast_epi128(ks[r], k->rk[14]));
        _mm512_storeu_si512(out + 64 * r, p);
        x[r] = gcm512_rev4(enc ? p : c);
    }
    x[0] = _mm512_xor_si512(x[0], _mm512_zextsi128_si512(s));
    for (int r = 0; r < R; r++)
        gcm512_mul4(x[r], k->pw[8 - R + r], &lo, &mid, &hi);
    return gcm512_sum(lo, mid, hi);
}

/* POLYVAL of up to 4 byte-reversed blocks in `x` (the first `nb`), one at a time. */
GCM512_FN __m128i gcm512_horner(const gcm512_key *k, __m128i s, __m512i x, int nb)
{
    __m128i b[4];
    _mm512_storeu_si512(b, x);
    for (int i = 0; i < nb; i++)
        s = gcm512_dot(_mm_xor_si128(s, b[i]), k->h1);
    return s;
}

/* Encrypt (`enc`) or decrypt `n` octets of `in` to `out` (may be `in`) with
 * nonce `iv` (12 octets) and associated data `aad`; encrypting writes the
 * 16-octet tag to `tag_out`, decrypting compares it with `tag_in`: 0 if it
 * matches (or when encrypting), -1 if not (`out` then holds unauthenticated
 * octets, for the caller to refuse). */
GCM512_FN int gcm512_crypt(const gcm512_key *k, int enc, const uint8_t *iv, const uint8_t *aad,
                           size_t aadlen, const uint8_t *in, size_t n, uint8_t *out,
                           const uint8_t *tag_in, uint8_t *tag_out)
{
    uint8_t j0[16];
    memcpy(j0, iv, 12);
    j0[12] = j0[13] = j0[14] = 0;
    j0[15] = 1;
    __m128i c0 = gcm512_rev(_mm_loadu_si128((const __m128i *)j0)); /* low dword: 1 */
    __m512i ctr = _mm512_add_epi32(_mm512_broadcast_i32x4(c0),
                                   _mm512_setr_epi32(1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0));
    __m128i s = _mm_setzero_si128();
    /* the associated data, zero-padded to whole blocks */
    for (size_t off = 0; off < aadlen; off += 64) {
        size_t r = aadlen - off < 64 ? aadlen - off : 64;
        __m512i x = _mm512_maskz_loadu_epi8(r == 64 ? ~0ULL : (1ULL << r) - 1, aad + off);
        s = gcm512_horner(k, s, gcm512_rev4(x), (int)((r + 15) / 16));
    }
    size_t off = 0;
    for (; n - off >= 512; off += 512) /* 32 blocks, one reduction */
        s = gcm512_step(k, enc, in + off, out + off, &ctr, s, 8);
    for (; n - off >= 256; off += 256)
        s = gcm512_step(k, enc, in + off, out + off, &ctr, s, 4);
    for (; n - off >= 64; off += 64)
        s = gcm512_step(k, enc, in + off, out + off, &ctr, s, 1);
    if (off < n) { /* the last 1..63 octets, zero-padded for GHASH */
        size_t r = n - off;
        __mmask64 m = (1ULL << r) - 1;
        __m512i c = _mm512_maskz_loadu_epi8(m, in + off);
        __m512i p = _mm512_maskz_mov_epi8(m, _mm512_xor_si512(c, gcm512_aes4(k, gcm512_rev4(ctr))));
        _mm512_mask_storeu_epi8(out + off, m, p);
        s = gcm512_horner(k, s, gcm512_rev4(enc ? p : c), (int)((r + 15) / 16));
    }
    /* the lengths block: bits of aad || bits of text, big-endian; reversed */
    __m128i len = _mm_set_epi64x((long long)((uint64_t)aadlen * 8), (long long)((uint64_t)n * 8));
    s = gcm512_dot(_mm_xor_si128(s, len), k->h1);
    __m128i t = _mm_xor_si128(gcm512_rev(s), _mm512_castsi512_si128(gcm512_aes4(
                                                  k, _mm512_broadcast_i32x4(gcm512_rev(c0)))));
    if (enc) {
        _mm_storeu_si128((__m128i *)tag_out, t);
        return 0;
    }
    uint8_t want[16];
    _mm_storeu_si128((__m128i *)want, t);
    return CRYPTO_memcmp(want, tag_in, 16) == 0 ? 0 : -1;
}

#else
#define HAVE_GCM512 0
#endif

#endif
