/* BLAKE2b (RFC 7693), keyed, any digest size up to 64: the crypt store's
 * block-name tags, computed natively by _cryptblocks.c.
 *
 * A tag is BLAKE2b-256 keyed with the name key over "hashname:" || digest,
 * the same octets as hashlib.blake2b(data, key=k, digest_size=32).  The key
 * fills a whole first block, so a batch keeps the state after the key and the
 * prefix (`b2b_state`, copied per tag) and pays one compression per tag for
 * the last block.  Plain C: one 128-octet block per tag is too little for
 * SIMD to pay.
 */
#ifndef VTSTORE_BLAKE2B_H
#define VTSTORE_BLAKE2B_H

#include <stdint.h>
#include <string.h>

#define B2B_BLOCK 128
#define B2B_OUT_MAX 64
#define B2B_KEY_MAX 64

typedef struct {
    uint64_t h[8];
    uint64_t t;     /* octets compressed so far (the high word stays 0) */
    size_t c;       /* octets in b */
    size_t outlen;
    uint8_t b[B2B_BLOCK];
} b2b_state;

static const uint64_t B2B_IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static const uint8_t B2B_SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

static inline uint64_t b2b_rotr(uint64_t x, int n)
{
    return (x >> n) | (x << (64 - n));
}

static inline uint64_t b2b_load64(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    return w;
}

#define B2B_G(a, b, c, d, x, y)                                                                  \
    do {                                                                                         \
        v[a] = v[a] + v[b] + (x);                                                                \
        v[d] = b2b_rotr(v[d] ^ v[a], 32);                                                        \
        v[c] = v[c] + v[d];                                                                      \
        v[b] = b2b_rotr(v[b] ^ v[c], 24);                                                        \
        v[a] = v[a] + v[b] + (y);                                                                \
        v[d] = b2b_rotr(v[d] ^ v[a], 16);                                                        \
        v[c] = v[c] + v[d];                                                                      \
        v[b] = b2b_rotr(v[b] ^ v[c], 63);                                                        \
    } while (0)

static void b2b_compress(b2b_state *s, int last)
{
    uint64_t v[16], m[16];
    for (int i = 0; i < 16; i++)
        m[i] = b2b_load64(s->b + 8 * i);
    for (int i = 0; i < 8; i++) {
        v[i] = s->h[i];
        v[i + 8] = B2B_IV[i];
    }
    v[12] ^= s->t;
    if (last)
        v[14] = ~v[14];
    for (int r = 0; r < 12; r++) {
        const uint8_t *z = B2B_SIGMA[r];
        B2B_G(0, 4, 8, 12, m[z[0]], m[z[1]]);
        B2B_G(1, 5, 9, 13, m[z[2]], m[z[3]]);
        B2B_G(2, 6, 10, 14, m[z[4]], m[z[5]]);
        B2B_G(3, 7, 11, 15, m[z[6]], m[z[7]]);
        B2B_G(0, 5, 10, 15, m[z[8]], m[z[9]]);
        B2B_G(1, 6, 11, 12, m[z[10]], m[z[11]]);
        B2B_G(2, 7, 8, 13, m[z[12]], m[z[13]]);
        B2B_G(3, 4, 9, 14, m[z[14]], m[z[15]]);
    }
    for (int i = 0; i < 8; i++)
        s->h[i] ^= v[i] ^ v[i + 8];
}

/* hashlib.blake2b(key=key, digest_size=outlen): keylen <= 64, 1 <= outlen <= 64 */
static void b2b_init(b2b_state *s, size_t outlen, const uint8_t *key, size_t keylen)
{
    memcpy(s->h, B2B_IV, sizeof s->h);
    s->h[0] ^= 0x01010000ULL ^ ((uint64_t)keylen << 8) ^ (uint64_t)outlen;
    s->t = 0;
    s->c = 0;
    s->outlen = outlen;
    memset(s->b, 0, sizeof s->b);
    if (keylen > 0) {
        memcpy(s->b, key, keylen);
        s->c = B2B_BLOCK; /* compressed when more comes: the last block is flagged */
    }
}

static void b2b_update(b2b_state *s, const uint8_t *in, size_t n)
{
    while (n > 0) {
        if (s->c == B2B_BLOCK) {
            s->t += B2B_BLOCK;
            b2b_compress(s, 0);
            s->c = 0;
        }
        size_t k = B2B_BLOCK - s->c;
        if (k > n)
            k = n;
        memcpy(s->b + s->c, in, k);
        s->c += k;
        in += k;
        n -= k;
    }
}

static void b2b_final(b2b_state *s, uint8_t *out)
{
    uint8_t buf[B2B_OUT_MAX];
    s->t += s->c;
    memset(s->b + s->c, 0, B2B_BLOCK - s->c);
    b2b_compress(s, 1);
    for (int i = 0; i < 8; i++)
        for (int k = 0; k < 8; k++)
            buf[8 * i + k] = (uint8_t)(s->h[i] >> (8 * k));
    memcpy(out, buf, s->outlen);
}

/* The tag of `digest` from `base` (the state after the key and the prefix). */
static inline void b2b_tag(const b2b_state *base, const uint8_t *digest, size_t n, uint8_t *out)
{
    b2b_state s = *base;
    b2b_update(&s, digest, n);
    b2b_final(&s, out);
}

#endif
