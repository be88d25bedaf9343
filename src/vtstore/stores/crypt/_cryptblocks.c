/* Batch AES-256-GCM for the crypt store's blocks (vtstore.stores.crypt.store).
 *
 * One call seals or opens a whole batch of blocks in the format of
 * docs/FORMATS.md §12.1:
 *
 *     block := version (1) flags (1) tag (32) AES-256-GCM(key, nonce = tag[0:12],
 *                                                 payload, aad = version flags tag)
 *
 * The `cryptography` package does the same one block per call, holding the
 * GIL, with a new cipher context each time: about 1.5 us of overhead on an
 * 8 KiB block that the cipher itself encrypts in under 1 us.  Here the key
 * schedule is made once per call and thread, the outputs are allocated as
 * bytes objects up front (the datadir keeps them without a copy), and the
 * cipher runs without the GIL, split over two threads for large batches.
 * OpenSSL's libcrypto does the cipher (AES-NI and PCLMULQDQ where the CPU has
 * them).
 *
 * `open_checked` also checks each plaintext against its BLAKE3 digest in the
 * same pass (BLAKE3 is vtstore's own, src/vtstore/_blake3.c, compiled in as
 * stores/_vtdread.c does), so a read is one call on two threads.
 *
 * The tags (block names: keyed BLAKE2b of the plaintext hashcode, _blake2b.h)
 * are made here too: `tag_many` for reading, and `seal_hashed`, which takes
 * the batch's plaintext digests and makes each tag just before sealing its
 * block, without the GIL; hashlib does one tag per Python call, 0.5 us each.
 */
#include "../../_blake3.c" /* defines PY_SSIZE_T_CLEAN, includes Python.h */

#include <openssl/evp.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "../../_vtbuf.h"
#include "_blake2b.h"
#include "_gcm512.h"

#define VERSION 1
#define F_ZSTD 1
#define TAG_LEN 32
#define HEADER (2 + TAG_LEN)
#define GCM_TAG 16
#define OVERHEAD (HEADER + GCM_TAG)
#define NONCE_LEN 12
#define KEY_LEN 32

/* Below this many bytes a batch keeps the GIL and one thread: the cipher
 * takes a few microseconds, a thread switch or a GIL hand-over more. */
#define CRYPT_GIL_MIN (32 * 1024)
#define TWO_THREADS_MIN (256 * 1024)

/* error codes open_many gives for a block instead of its payload
 * (E_HASH: open_checked only) */
enum { E_SHORT = 1, E_NOT_CRYPT = 2, E_OTHER_TAG = 3, E_AUTH = 4, E_HASH = 5 };

/* open_checked decrypts this many octets of blocks, then BLAKE3-checks their
 * plaintexts while they are still in the core's cache (L2), in one BLAKE3
 * batch so the blocks fill its SIMD lanes side by side. */
#define CHECK_GROUP (64 * 1024)
#define CHECK_GROUP_MAX 64 /* blocks */

typedef struct {
    const uint8_t *in;   /* seal: the payload; open: the whole block */
    Py_ssize_t in_len;
    uint8_t *tag;        /* the 32-octet tag (seal: to write; open: expected) */
    const uint8_t *digest; /* seal_hashed: the plaintext digest to make `tag` from;
                            * open_checked: the BLAKE3 digest the plaintext must have */
    uint8_t flags;       /* seal: to write; open: the block's (read before it is opened) */
    uint8_t *out;        /* seal: the whole block; open: the payload */
    int err;             /* open only: 0 or an E_ code */
    int inplace;         /* open: decrypted in the block's own buffer (out = in + HEADER),
                          * then moved to its start (settle) */
} item;

enum { M_OPEN = 0, M_SEAL = 1, M_CHECK = 2 }; /* open, seal, open and check */

/* A batch's work: its items taken a group at a time by whichever threads
 * take part (run_batch's caller, and the pool's thread if it is free). */
typedef struct {
    const uint8_t *key;
    item *items;
    size_t n;
    int mode;
    const b2b_state *tagger; /* seal_hashed: the name key's state after the prefix */
    size_t dsize;            /* seal_hashed: octets per digest */
    size_t group;            /* items per group (about CHECK_GROUP octets) */
    size_t next;             /* atomic: the first item no thread has taken */
    int rc;                  /* 0, or -1 when libcrypto failed or memory ran out */
} work;

/* The AES-256-GCM of one thread's job: libcrypto's context, or the key of
 * _gcm512.h when the CPU has VAES (`gk`). */
typedef struct {
    EVP_CIPHER_CTX *ctx;
    void *gk; /* gcm512_key */
} cipher;

/* Which GCM the jobs use: 1 _gcm512.h, 0 libcrypto (set_gcm_implementation). */
static int use_gcm512 = 0;

static int seal_one(cipher *c, item *it)
{
    uint8_t *out = it->out;
    int len;
    EVP_CIPHER_CTX *ctx = c->ctx;
    out[0] = VERSION;
    out[1] = it->flags;
    memcpy(out + 2, it->tag, TAG_LEN);
#if HAVE_GCM512
    if (c->gk)
        return gcm512_crypt(c->gk, 1, it->tag, out, HEADER, it->in, (size_t)it->in_len,
                            out + HEADER, NULL, out + HEADER + it->in_len);
#endif
    if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, it->tag) != 1)
        return -1;
    if (EVP_EncryptUpdate(ctx, NULL, &len, out, HEADER) != 1)
        return -1;
    if (it->in_len > 0 && EVP_EncryptUpdate(ctx, out + HEADER, &len, it->in, (int)it->in_len) != 1)
        return -1;
    if (EVP_EncryptFinal_ex(ctx, out + HEADER + it->in_len, &len) != 1)
        return -1;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, GCM_TAG, out + HEADER + it->in_len) != 1)
        return -1;
    return 0;
}

static int open_one(cipher *c, item *it)
{
    EVP_CIPHER_CTX *ctx = c->ctx;
    const uint8_t *in = it->in;
    Py_ssize_t n = it->in_len - OVERHEAD;
    int len;
    if (it->in_len < OVERHEAD) {
        it->err = E_SHORT;
        return 0;
    }
    if (in[0] != VERSION || (in[1] & ~F_ZSTD)) {
        it->err = E_NOT_CRYPT;
        return 0;
    }
    if (memcmp(in + 2, it->tag, TAG_LEN) != 0) {
        it->err = E_OTHER_TAG;
        return 0;
    }
    it->flags = in[1]; /* in place, the header is gone once settled */
#if HAVE_GCM512
    if (c->gk) {
        if (gcm512_crypt(c->gk, 0, in + 2, in, HEADER, in + HEADER, (size_t)n, it->out,
                         in + HEADER + n, NULL) < 0)
            it->err = E_AUTH;
        return 0;
    }
#endif
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, in + 2) != 1)
        return -1;
    if (EVP_DecryptUpdate(ctx, NULL, &len, in, HEADER) != 1)
        return -1;
    if (n > 0 && EVP_DecryptUpdate(ctx, it->out, &len, in + HEADER, (int)n) != 1)
        return -1;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, GCM_TAG, (void *)(in + HEADER + n)) != 1)
        return -1;
    if (EVP_DecryptFinal_ex(ctx, it->out + n, &len) != 1)
        it->err = E_AUTH;
    return 0;
}

/* An opened block decrypted in place: its payload moved to the start of its
 * buffer, where the bytes object that held the block will hold the payload. */
static void settle(item *it)
{
    if (it->inplace && !it->err) {
        memmove((uint8_t *)it->in, it->out, (size_t)(it->in_len - OVERHEAD));
        it->out = (uint8_t *)it->in;
    }
}

/* Open items[0..n) (one group, at most CHECK_GROUP_MAX) and check each
 * plaintext against its BLAKE3 digest (item.digest): all decrypted, then
 * hashed while in cache, in one BLAKE3 batch `hb`.  A compressed payload is
 * not checked here (its caller decompresses, then checks).  -1: libcrypto
 * failed or no memory. */
static int open_checked_group(cipher *c, batch *hb, item *items, size_t n)
{
    uint8_t got[CHECK_GROUP_MAX][OUT_LEN];
    for (size_t i = 0; i < n; i++)
        if (open_one(c, &items[i]) < 0)
            return -1;
    for (size_t i = 0; i < n; i++) {
        item *it = &items[i];
        if (!it->err && !(it->flags & F_ZSTD) &&
            batch_block(hb, it->out, (uint64_t)(it->in_len - OVERHEAD), got[i]) < 0)
            return -1;
    }
    batch_flush(hb);
    for (size_t i = 0; i < n; i++) {
        item *it = &items[i];
        if (!it->err && !(it->flags & F_ZSTD) && memcmp(got[i], it->digest, OUT_LEN))
            it->err = E_HASH;
        settle(it);
    }
    return 0;
}

/* Take part in `w`: take groups of items until none is left.  -1: failed. */
static int take_part(work *w)
{
    cipher c = {EVP_CIPHER_CTX_new(), NULL};
    batch *hb = NULL; /* _blake3.c's batch: ~85 KB, one per thread and batch */
    int seal = w->mode == M_SEAL, rc = -1;
    if (!c.ctx)
        return -1;
    if ((seal ? EVP_EncryptInit_ex(c.ctx, EVP_aes_256_gcm(), NULL, w->key, NULL)
              : EVP_DecryptInit_ex(c.ctx, EVP_aes_256_gcm(), NULL, w->key, NULL)) != 1)
        goto done;
#if HAVE_GCM512
    if (__atomic_load_n(&use_gcm512, __ATOMIC_RELAXED)) {
        if (!(c.gk = aligned_alloc(64, sizeof(gcm512_key))))
            goto done;
        gcm512_init(c.gk, w->key);
    }
#endif
    if (w->mode == M_CHECK) {
        if (!(hb = malloc(sizeof *hb)))
            goto done;
        hb->im = get_impl();
        hb->key = IV;
        hb->kflags = 0;
        hb->nunits = hb->njobs = hb->npartial = 0;
    }
    rc = 0;
    for (;;) {
        size_t a = __atomic_fetch_add(&w->next, w->group, __ATOMIC_RELAXED);
        if (a >= w->n || rc < 0 || __atomic_load_n(&w->rc, __ATOMIC_RELAXED) < 0)
            break;
        size_t b = a + w->group < w->n ? a + w->group : w->n;
        if (w->mode == M_CHECK) {
            rc = open_checked_group(&c, hb, w->items + a, b - a);
            continue;
        }
        for (size_t i = a; i < b && rc == 0; i++) {
            item *it = &w->items[i];
            if (it->digest) /* the tag just before the block: its digest is in cache */
                b2b_tag(w->tagger, it->digest, w->dsize, it->tag);
            rc = seal ? seal_one(&c, it) : open_one(&c, it);
            if (!seal)
                settle(it);
        }
    }
done:
    free(hb);
    if (c.gk) {
        OPENSSL_cleanse(c.gk, sizeof(gcm512_key)); /* round keys */
        free(c.gk);
    }
    EVP_CIPHER_CTX_free(c.ctx);
    if (rc < 0)
        __atomic_store_n(&w->rc, -1, __ATOMIC_RELAXED);
    return rc;
}

/* -- the pool: one thread that helps with large batches ------------------------
 *
 * A batch is posted; the caller takes part at once and the pool's thread
 * joins when the system schedules it.  The caller never waits for the thread
 * to start: when the cores are busy with other work it does the whole batch
 * itself, and waits only for groups the thread has taken.  (A thread made per
 * call, or Python's own thread and the GIL, made the caller wait for the
 * helper to be scheduled: measured slower on a loaded machine.)  The thread
 * ends after POOL_IDLE_S seconds without work, and is made again when needed;
 * a child after fork starts without it. */

#define POOL_IDLE_S 2

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t pool_idle = PTHREAD_COND_INITIALIZER;
static work *pool_job;       /* the batch posted, or NULL */
static unsigned long pool_gen; /* batches posted so far */
static int pool_busy;        /* pool threads working on pool_job */
static int pool_alive;       /* the pool's thread exists */

static void *pool_main(void *Py_UNUSED(arg))
{
    unsigned long seen = 0; /* any batch still posted is one to help with */
    pthread_mutex_lock(&pool_mu);
    for (;;) {
        while (!pool_job || pool_gen == seen) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += POOL_IDLE_S;
            if (pthread_cond_timedwait(&pool_wake, &pool_mu, &until) != 0 &&
                (!pool_job || pool_gen == seen)) {
                pool_alive = 0;
                pthread_mutex_unlock(&pool_mu);
                return NULL;
            }
        }
        work *w = pool_job;
        seen = pool_gen;
        pool_busy++;
        pthread_mutex_unlock(&pool_mu);
        take_part(w);
        pthread_mutex_lock(&pool_mu);
        if (--pool_busy == 0)
            pthread_cond_broadcast(&pool_idle);
    }
}

static void pool_after_fork(void)
{
    pthread_mutex_init(&pool_mu, NULL);
    pthread_cond_init(&pool_wake, NULL);
    pthread_cond_init(&pool_idle, NULL);
    pool_job = NULL;
    pool_busy = pool_alive = 0;
}

/* Run `w` here, with the pool's help if no other batch has it. */
static void run_pooled(work *w)
{
    int posted = 0;
    pthread_mutex_lock(&pool_mu);
    if (!pool_job) {
        if (!pool_alive) {
            pthread_attr_t at;
            pthread_t th;
            pthread_attr_init(&at);
            pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
            pool_alive = pthread_create(&th, &at, pool_main, NULL) == 0;
            pthread_attr_destroy(&at);
        }
        if (pool_alive) {
            pool_job = w;
            pool_gen++;
            posted = 1;
            pthread_cond_signal(&pool_wake);
        }
    }
    pthread_mutex_unlock(&pool_mu);
    take_part(w);
    if (!posted)
        return;
    pthread_mutex_lock(&pool_mu);
    pool_job = NULL; /* no thread joins from now on */
    while (pool_busy)
        pthread_cond_wait(&pool_idle, &pool_mu);
    pthread_mutex_unlock(&pool_mu);
}

static int cpus(void)
{
    static int n = 0;
    if (n == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    return n;
}

/* Run the batch: with the GIL released when it is large, with the pool's
 * thread's help when it is larger still and `split`. */
static int run_batch(const uint8_t *key, item *items, size_t n, int mode, Py_ssize_t total,
                     const b2b_state *tagger, size_t dsize, int split)
{
    size_t per = n ? (size_t)(total / (Py_ssize_t)n) : 1, group = CHECK_GROUP / (per ? per : 1);
    group = group < 1 ? 1 : group > CHECK_GROUP_MAX ? CHECK_GROUP_MAX : group;
    work w = {key, items, n, mode, tagger, dsize, group, 0, 0};
    if (total < CRYPT_GIL_MIN) {
        take_part(&w);
        return w.rc;
    }
    /* opening and checking is twice the work per octet: two threads sooner */
    Py_ssize_t two_min = mode == M_CHECK ? TWO_THREADS_MIN / 2 : TWO_THREADS_MIN;
    int two = split && total >= two_min && n >= 2 && cpus() >= 2;
    Py_BEGIN_ALLOW_THREADS
    if (two)
        run_pooled(&w);
    else
        take_part(&w);
    Py_END_ALLOW_THREADS
    return w.rc;
}

static int get_key(PyObject *obj, Py_buffer *key)
{
    if (get_buffer(obj, key) < 0)
        return -1;
    if (key->len != KEY_LEN) {
        PyBuffer_Release(key);
        PyErr_Format(PyExc_ValueError, "key must be %d octets, not %zd", KEY_LEN, key->len);
        return -1;
    }
    return 0;
}

/* The buffers of `seq`'s items (a list or tuple), each released by release_all. */
static Py_buffer *get_all(PyObject *seq, Py_ssize_t n, const char *what)
{
    Py_buffer *views = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_buffer));
    if (!views)
        return (Py_buffer *)PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        if (get_buffer(PySequence_Fast_GET_ITEM(seq, i), &views[i]) < 0) {
            for (Py_ssize_t k = 0; k < i; k++)
                PyBuffer_Release(&views[k]);
            PyMem_Free(views);
            return NULL;
        }
        if (views[i].len > INT_MAX - OVERHEAD) {
            for (Py_ssize_t k = 0; k <= i; k++)
                PyBuffer_Release(&views[k]);
            PyMem_Free(views);
            PyErr_Format(PyExc_ValueError, "%s %zd is too large", what, i);
            return NULL;
        }
    }
    return views;
}

static void release_all(Py_buffer *views, Py_ssize_t n)
{
    if (!views)
        return;
    for (Py_ssize_t i = 0; i < n; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
}

/* The n 32-octet bytes objects of `tags`, copied (the cipher runs without
 * the GIL, when another thread could change the list), or NULL. */
static uint8_t *copy_tags(PyObject *tags, Py_ssize_t n)
{
    if (PySequence_Fast_GET_SIZE(tags) != n) {
        PyErr_SetString(PyExc_ValueError, "one tag per block");
        return NULL;
    }
    uint8_t *out = PyMem_Malloc((size_t)(n ? n : 1) * TAG_LEN);
    if (!out)
        return (uint8_t *)PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PySequence_Fast_GET_ITEM(tags, i);
        if (!PyBytes_Check(t) || PyBytes_GET_SIZE(t) != TAG_LEN) {
            PyMem_Free(out);
            PyErr_Format(PyExc_TypeError, "tag %zd must be %d bytes", i, TAG_LEN);
            return NULL;
        }
        memcpy(out + (size_t)i * TAG_LEN, PyBytes_AS_STRING(t), TAG_LEN);
    }
    return out;
}

/* What seal_many and open_many both take: the key, the tags (copied), the
 * buffers of the payloads or blocks, and an item per block to fill. */
typedef struct {
    Py_buffer key;
    int have_key;
    PyObject *tags, *seq;
    Py_buffer *views;
    item *items;
    uint8_t *tagbuf;
    Py_ssize_t n;
} cbatch;

static void batch_close(cbatch *b)
{
    release_all(b->views, b->n);
    PyMem_Free(b->items);
    PyMem_Free(b->tagbuf);
    Py_XDECREF(b->tags);
    Py_XDECREF(b->seq);
    if (b->have_key)
        PyBuffer_Release(&b->key);
}

/* Fill `b` from the arguments; on -1 the error is set (call batch_close). */
static int batch_open(cbatch *b, PyObject *key_obj, PyObject *tags_obj, PyObject *seq_obj,
                      const char *what)
{
    memset(b, 0, sizeof(*b));
    if (get_key(key_obj, &b->key) < 0)
        return -1;
    b->have_key = 1;
    b->seq = PySequence_Fast(seq_obj, "blocks and payloads must be a sequence");
    if (!b->seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(b->seq);
    if (tags_obj) {
        b->tags = PySequence_Fast(tags_obj, "tags must be a sequence");
        if (!b->tags)
            return -1;
        b->tagbuf = copy_tags(b->tags, n);
    } else { /* made from digests while sealing */
        b->tagbuf = PyMem_Malloc((size_t)(n ? n : 1) * TAG_LEN);
        if (!b->tagbuf)
            PyErr_NoMemory();
    }
    if (!b->tagbuf)
        return -1;
    b->views = get_all(b->seq, n, what);
    if (!b->views)
        return -1;
    b->n = n;
    b->items = PyMem_Calloc((size_t)(n ? n : 1), sizeof(item));
    if (!b->items) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* A new bytes object of `len` octets for item i's output, set in `list`. */
static int batch_output(cbatch *b, PyObject *list, Py_ssize_t i, Py_ssize_t len, uint8_t flags)
{
    PyObject *o = PyBytes_FromStringAndSize(NULL, len);
    if (!o)
        return -1;
    PyList_SET_ITEM(list, i, o);
    b->items[i] = (item){b->views[i].buf, b->views[i].len, b->tagbuf + (size_t)i * TAG_LEN,
                         NULL, flags, (uint8_t *)PyBytes_AS_STRING(o), 0, 0};
    return 0;
}

/* Seal batch `b` (opened) with `flags_obj` (bytes, one per block): the
 * list of blocks, or NULL with the error set.  With `digests` (dsize octets
 * each), each block's tag is made from its digest by `tagger` first. */
static PyObject *seal_batch(cbatch *b, PyObject *flags_obj, const uint8_t *digests, size_t dsize,
                            const b2b_state *tagger, int split)
{
    const uint8_t *flags = (const uint8_t *)PyBytes_AS_STRING(flags_obj);
    if (PyBytes_GET_SIZE(flags_obj) != b->n) {
        PyErr_SetString(PyExc_ValueError, "one flags octet per block");
        return NULL;
    }
    PyObject *res = PyList_New(b->n);
    if (!res)
        return NULL;
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < b->n; i++) {
        if (flags[i] & ~F_ZSTD) {
            PyErr_Format(PyExc_ValueError, "bad flags %d", flags[i]);
            goto fail;
        }
        if (batch_output(b, res, i, b->views[i].len + OVERHEAD, flags[i]) < 0)
            goto fail;
        if (digests)
            b->items[i].digest = digests + (size_t)i * dsize;
        total += b->views[i].len;
    }
    if (run_batch(b->key.buf, b->items, (size_t)b->n, M_SEAL, total, tagger, dsize, split) < 0) {
        PyErr_SetString(PyExc_RuntimeError, "libcrypto failed to encrypt");
        goto fail;
    }
    return res;
fail:
    Py_DECREF(res);
    return NULL;
}

PyDoc_STRVAR(seal_many_doc,
             "seal_many(key, tags, flags, payloads) -> list[bytes]\n\n"
             "The encrypted blocks of `payloads` (bytes-like) under the 32-octet block key:\n"
             "version, flags[i], tags[i], then AES-256-GCM with nonce tags[i][:12] and the\n"
             "header as associated data.  `tags`: 32-octet bytes; `flags`: one octet per\n"
             "payload (bytes).");

static PyObject *seal_many(PyObject *Py_UNUSED(mod), PyObject *args)
{
    PyObject *key_obj, *tags_obj, *flags_obj, *pay_obj;
    if (!PyArg_ParseTuple(args, "OOSO:seal_many", &key_obj, &tags_obj, &flags_obj, &pay_obj))
        return NULL;
    cbatch b;
    PyObject *res = NULL;
    if (batch_open(&b, key_obj, tags_obj, pay_obj, "payload") == 0)
        res = seal_batch(&b, flags_obj, NULL, 0, NULL, 1);
    batch_close(&b);
    return res;
}

PyDoc_STRVAR(open_many_doc,
             "open_many(key, blobs, tags, split=True) -> list[bytes | int]\n\n"
             "For each encrypted block of `blobs`, its payload (still compressed when\n"
             "blob[1] says so), or why not: 1 too short, 2 not an encrypted block\n"
             "(version or flags), 3 a tag other than tags[i] (moved, or another key),\n"
             "4 fails authentication.  `split`: two threads for a large batch.");

static int list_append_index(PyObject *list, Py_ssize_t i)
{
    PyObject *o = PyLong_FromSsize_t(i);
    int rc = o ? PyList_Append(list, o) : -1;
    Py_XDECREF(o);
    return rc;
}

/* Whether block object `o` (its buffer `v` taken) can be decrypted in place:
 * a bytes object that nothing but the caller's sequence holds (and our view
 * of it), so no one else ever sees its octets change.  Not on Pythons whose
 * bytes objects keep no hash field we can reset (3.14 on). */
static int can_open_in_place(PyObject *o, const Py_buffer *v)
{
#if PY_VERSION_HEX < 0x030E0000
    return PyBytes_CheckExact(o) && Py_REFCNT(o) == 2 && v->obj == o && v->len >= OVERHEAD;
#else
    (void)o;
    (void)v;
    return 0;
#endif
}

/* The bytes object `o`, decrypted in place, shrunk to its payload's `n` octets
 * (the allocation keeps its size; a bytes object's size is its ob_size). */
static void shrink_to_payload(PyObject *o, Py_ssize_t n)
{
#if PY_VERSION_HEX < 0x030E0000
    Py_SET_SIZE(o, n);
    PyBytes_AS_STRING(o)[n] = 0;
    _Py_COMP_DIAG_PUSH
    _Py_COMP_DIAG_IGNORE_DEPR_DECLS
    ((PyBytesObject *)o)->ob_shash = -1; /* not hashed as these octets */
    _Py_COMP_DIAG_POP
#else
    (void)o;
    (void)n;
#endif
}

/* open_many, and with `digests` (a buffer of 32 octets per block) open_checked;
 * then `*todo` is set to the list of the indices of blocks refused or left
 * compressed.  `inplace`: each block the caller alone holds is decrypted in
 * its own buffer and becomes its payload (no new memory to fault in). */
static PyObject *open_blocks(PyObject *key_obj, PyObject *blobs_obj, PyObject *tags_obj,
                             const Py_buffer *digests, int split, PyObject **todo, int inplace)
{
    cbatch b;
    PyObject *outs = NULL;
    if (batch_open(&b, key_obj, tags_obj, blobs_obj, "block") < 0)
        goto done;
    if (digests && digests->len != b.n * OUT_LEN) {
        PyErr_SetString(PyExc_ValueError, "digests must be 32 octets per block");
        goto done;
    }
    outs = PyList_New(b.n);
    if (!outs)
        goto done;
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < b.n; i++) {
        Py_ssize_t len = b.views[i].len;
        PyObject *o = PySequence_Fast_GET_ITEM(b.seq, i);
        if (inplace && can_open_in_place(o, &b.views[i])) {
            uint8_t *buf = b.views[i].buf;
            PyList_SET_ITEM(outs, i, Py_NewRef(o));
            b.items[i] = (item){buf, len, b.tagbuf + (size_t)i * TAG_LEN, NULL, 0, buf + HEADER,
                                0, 1};
        } else if (batch_output(&b, outs, i, len >= OVERHEAD ? len - OVERHEAD : 0, 0) < 0) {
            goto fail;
        }
        if (digests)
            b.items[i].digest = (const uint8_t *)digests->buf + (size_t)i * OUT_LEN;
        total += len;
    }
    if (run_batch(b.key.buf, b.items, (size_t)b.n, digests ? M_CHECK : M_OPEN, total, NULL, 0,
                  split) < 0) {
        PyErr_SetString(PyExc_RuntimeError, "libcrypto failed to decrypt, or out of memory");
        goto fail;
    }
    if (todo && !(*todo = PyList_New(0)))
        goto fail;
    for (Py_ssize_t i = 0; i < b.n; i++) {
        const item *it = &b.items[i];
        if (it->err) {
            PyObject *e = PyLong_FromLong(it->err);
            if (!e)
                goto fail;
            PyList_SetItem(outs, i, e); /* drops the payload's bytes */
        } else if (it->inplace) {
            shrink_to_payload(PyList_GET_ITEM(outs, i), it->in_len - OVERHEAD);
        }
        if (todo && (it->err || (it->flags & F_ZSTD)) && list_append_index(*todo, i) < 0)
            goto fail;
    }
    goto done;
fail:
    Py_CLEAR(outs);
    if (todo)
        Py_CLEAR(*todo);
done:
    batch_close(&b);
    return outs;
}

static PyObject *open_many(PyObject *Py_UNUSED(mod), PyObject *args)
{
    PyObject *key_obj, *blobs_obj, *tags_obj;
    int split = 1;
    if (!PyArg_ParseTuple(args, "OOO|p:open_many", &key_obj, &blobs_obj, &tags_obj, &split))
        return NULL;
    return open_blocks(key_obj, blobs_obj, tags_obj, NULL, split, NULL, 0);
}

PyDoc_STRVAR(open_checked_doc,
             "open_checked(key, blobs, tags, digests, split=True, inplace=False)\n"
             "    -> (list[bytes | int], list[int])\n\n"
             "open_many, and each plaintext checked against its BLAKE3 digest (`digests`:\n"
             "32 octets per block, concatenated) in the same pass, without the GIL and on\n"
             "two threads for a large batch: 5 for a block whose plaintext does not hash\n"
             "to its digest.  A compressed payload (blob[1] & 1) is returned unchecked:\n"
             "the caller decompresses it, then checks.  The second list: the indices of\n"
             "the blocks refused or compressed, in order (what is left to the caller).\n"
             "`inplace`: a block that only `blobs` holds (a bytes object) is decrypted in\n"
             "its own buffer and becomes the payload returned: no new memory, but `blobs`\n"
             "is spent (a refused block's octets are then undefined).");

static PyObject *open_checked(PyObject *Py_UNUSED(mod), PyObject *args)
{
    PyObject *key_obj, *blobs_obj, *tags_obj;
    Py_buffer dg;
    int split = 1, inplace = 0;
    if (!PyArg_ParseTuple(args, "OOOy*|pp:open_checked", &key_obj, &blobs_obj, &tags_obj, &dg,
                          &split, &inplace))
        return NULL;
    PyObject *todo = NULL, *res = NULL;
    PyObject *outs = open_blocks(key_obj, blobs_obj, tags_obj, &dg, split, &todo, inplace);
    PyBuffer_Release(&dg);
    if (outs)
        res = PyTuple_Pack(2, outs, todo);
    Py_XDECREF(outs);
    Py_XDECREF(todo);
    return res;
}

/* -- tags: keyed BLAKE2b (_blake2b.h) ------------------------------------ */

/* `cls` if it is bytes or a subclass adding no fields (a HashCode class). */
static PyTypeObject *code_class(PyObject *cls)
{
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &PyBytes_Type) ||
        ((PyTypeObject *)cls)->tp_basicsize != PyBytes_Type.tp_basicsize ||
        ((PyTypeObject *)cls)->tp_itemsize != PyBytes_Type.tp_itemsize) {
        PyErr_SetString(PyExc_TypeError, "cls must be bytes or a subclass without fields");
        return NULL;
    }
    return (PyTypeObject *)cls;
}

/* bytes.__new__(cls, p[:n]) without the call: what HashCode.from_data_many
 * makes per block, at a tenth of its cost (as CPython's bytes_subtype_new). */
static PyObject *new_code(PyTypeObject *cls, const uint8_t *p, Py_ssize_t n)
{
    if (cls == &PyBytes_Type)
        return PyBytes_FromStringAndSize((const char *)p, n);
#if PY_VERSION_HEX < 0x030E0000
    PyObject *o = cls->tp_alloc(cls, n);
    if (!o)
        return NULL;
    memcpy(PyBytes_AS_STRING(o), p, (size_t)n);
    PyBytes_AS_STRING(o)[n] = 0;
    _Py_COMP_DIAG_PUSH
    _Py_COMP_DIAG_IGNORE_DEPR_DECLS
    ((PyBytesObject *)o)->ob_shash = -1; /* not hashed yet */
    _Py_COMP_DIAG_POP
    return o;
#else
    return PyObject_CallMethod((PyObject *)&PyBytes_Type, "__new__", "Oy#", cls, p, n);
#endif
}

/* A list of n `cls` objects of `size` octets each from buf. */
static PyObject *codes_list(PyTypeObject *cls, const uint8_t *buf, Py_ssize_t n, size_t size)
{
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++) {
        PyObject *o = new_code(cls, buf + (size_t)i * size, (Py_ssize_t)size);
        if (!o)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, o);
    }
    return out;
}

/* The BLAKE2b-256 state keyed with `key_obj` after `prefix_obj` (bytes-like). */
static int get_tagger(PyObject *key_obj, PyObject *prefix_obj, b2b_state *s)
{
    Py_buffer k, p;
    if (get_buffer(key_obj, &k) < 0)
        return -1;
    if (k.len > B2B_KEY_MAX) {
        PyBuffer_Release(&k);
        PyErr_Format(PyExc_ValueError, "name key must be at most %d octets", B2B_KEY_MAX);
        return -1;
    }
    if (get_buffer(prefix_obj, &p) < 0) {
        PyBuffer_Release(&k);
        return -1;
    }
    b2b_init(s, TAG_LEN, k.buf, (size_t)k.len);
    b2b_update(s, p.buf, (size_t)p.len);
    PyBuffer_Release(&k);
    PyBuffer_Release(&p);
    return 0;
}

PyDoc_STRVAR(blake2b_doc,
             "blake2b(data, key=b'', digest_size=32) -> bytes\n\n"
             "hashlib.blake2b(data, key=key, digest_size=digest_size).digest(): the\n"
             "implementation of the tags, for tests.");

static PyObject *blake2b(PyObject *Py_UNUSED(mod), PyObject *args, PyObject *kw)
{
    static char *names[] = {"data", "key", "digest_size", NULL};
    Py_buffer data, key = {0};
    int size = TAG_LEN;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|y*i:blake2b", names, &data, &key, &size))
        return NULL;
    PyObject *res = NULL;
    if (key.len > B2B_KEY_MAX || size < 1 || size > B2B_OUT_MAX) {
        PyErr_SetString(PyExc_ValueError, "key of at most 64 octets, digest_size 1 to 64");
    } else {
        b2b_state s;
        uint8_t out[B2B_OUT_MAX];
        b2b_init(&s, (size_t)size, key.buf, (size_t)key.len);
        b2b_update(&s, data.buf, (size_t)data.len);
        b2b_final(&s, out);
        res = PyBytes_FromStringAndSize((const char *)out, size);
    }
    PyBuffer_Release(&data);
    if (key.obj)
        PyBuffer_Release(&key);
    return res;
}

PyDoc_STRVAR(tag_many_doc,
             "tag_many(name_key, prefix, hashcodes, cls) -> list[cls]\n\n"
             "The tag of each hashcode: BLAKE2b-256 keyed with name_key over prefix ||\n"
             "hashcode (the crypt store's block names), each a `cls` (bytes or a bytes\n"
             "subclass).");

static PyObject *tag_many(PyObject *Py_UNUSED(mod), PyObject *args)
{
    PyObject *key_obj, *prefix_obj, *hs_obj, *cls_obj;
    if (!PyArg_ParseTuple(args, "OOOO:tag_many", &key_obj, &prefix_obj, &hs_obj, &cls_obj))
        return NULL;
    b2b_state base;
    PyTypeObject *cls = code_class(cls_obj);
    if (!cls || get_tagger(key_obj, prefix_obj, &base) < 0)
        return NULL;
    PyObject *fast = PySequence_Fast(hs_obj, "hashcodes must be a sequence");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++) {
        PyObject *h = PySequence_Fast_GET_ITEM(fast, i), *o = NULL;
        uint8_t tag[TAG_LEN];
        if (PyBytes_Check(h)) { /* HashCodes: no buffer to take */
            b2b_tag(&base, (const uint8_t *)PyBytes_AS_STRING(h), (size_t)PyBytes_GET_SIZE(h),
                    tag);
            o = new_code(cls, tag, TAG_LEN);
        } else {
            Py_buffer v;
            if (get_buffer(h, &v) == 0) {
                b2b_tag(&base, v.buf, (size_t)v.len, tag);
                PyBuffer_Release(&v);
                o = new_code(cls, tag, TAG_LEN);
            }
        }
        if (!o)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, o);
    }
    Py_DECREF(fast);
    return out;
}

PyDoc_STRVAR(seal_hashed_doc,
             "seal_hashed(block_key, name_key, prefix, digests, cls, flags, payloads,\n"
             "            split=True) -> (list[cls], list[bytes])\n\n"
             "The hashcodes (`cls`) of the plaintext digests (`digests`: one per payload,\n"
             "concatenated) and the encrypted blocks of `payloads`, each tagged as\n"
             "tag_many does and sealed as seal_many does, in one call: the tags are made\n"
             "without the GIL, beside the cipher.  `split`: two threads for a large batch.");

static PyObject *seal_hashed(PyObject *Py_UNUSED(mod), PyObject *args)
{
    PyObject *bkey, *nkey, *prefix, *dig_obj, *cls_obj, *flags_obj, *pay_obj;
    int split = 1;
    if (!PyArg_ParseTuple(args, "OOOOOSO|p:seal_hashed", &bkey, &nkey, &prefix, &dig_obj,
                          &cls_obj, &flags_obj, &pay_obj, &split))
        return NULL;
    b2b_state base;
    PyTypeObject *cls = code_class(cls_obj);
    if (!cls || get_tagger(nkey, prefix, &base) < 0)
        return NULL;
    Py_buffer dig;
    if (get_buffer(dig_obj, &dig) < 0)
        return NULL;
    cbatch b;
    PyObject *hs = NULL, *blocks = NULL, *res = NULL;
    if (batch_open(&b, bkey, NULL, pay_obj, "payload") < 0)
        goto done;
    size_t dsize = b.n ? (size_t)(dig.len / b.n) : 0;
    if (b.n ? (dsize < 1 || dsize > B2B_OUT_MAX || dig.len % b.n) : dig.len) {
        PyErr_SetString(PyExc_ValueError, "digests: one per payload, all of one size");
        goto done;
    }
    hs = codes_list(cls, dig.buf, b.n, dsize);
    if (hs)
        blocks = seal_batch(&b, flags_obj, dig.buf, dsize, &base, split);
    if (blocks)
        res = PyTuple_Pack(2, hs, blocks);
done:
    Py_XDECREF(hs);
    Py_XDECREF(blocks);
    batch_close(&b);
    PyBuffer_Release(&dig);
    return res;
}

PyDoc_STRVAR(header_names_doc,
             "header_names(cls, blocks) -> list[cls | None]\n\n"
             "The tag in the header of each encrypted block (a `cls`), or None for a\n"
             "block that is not one (too short, another version or flags).");

static PyObject *header_names(PyObject *Py_UNUSED(mod), PyObject *args)
{
    PyObject *cls_obj, *seq_obj;
    if (!PyArg_ParseTuple(args, "OO:header_names", &cls_obj, &seq_obj))
        return NULL;
    PyTypeObject *cls = code_class(cls_obj);
    if (!cls)
        return NULL;
    PyObject *fast = PySequence_Fast(seq_obj, "blocks must be a sequence");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++) {
        Py_buffer v;
        PyObject *o;
        if (get_buffer(PySequence_Fast_GET_ITEM(fast, i), &v) < 0) {
            Py_CLEAR(out);
            break;
        }
        const uint8_t *p = v.buf;
        if (v.len >= OVERHEAD && p[0] == VERSION && !(p[1] & ~F_ZSTD))
            o = new_code(cls, p + 2, TAG_LEN);
        else
            o = Py_NewRef(Py_None);
        PyBuffer_Release(&v);
        if (!o)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, o);
    }
    Py_DECREF(fast);
    return out;
}

PyDoc_STRVAR(gcm_implementation_doc,
             "gcm_implementation() -> str\n\n"
             "The AES-256-GCM in use: 'vaes512' (AVX-512 VAES and VPCLMULQDQ, _gcm512.h)\n"
             "or 'libcrypto' (the system's OpenSSL).");

static PyObject *gcm_implementation(PyObject *Py_UNUSED(mod), PyObject *Py_UNUSED(ignored))
{
    return PyUnicode_FromString(__atomic_load_n(&use_gcm512, __ATOMIC_RELAXED) ? "vaes512"
                                                                                : "libcrypto");
}

PyDoc_STRVAR(gcm_implementations_doc,
             "gcm_implementations() -> tuple[str, ...]\n\n"
             "The AES-256-GCM implementations this CPU can run, fastest first.");

static PyObject *gcm_implementations(PyObject *Py_UNUSED(mod), PyObject *Py_UNUSED(ignored))
{
#if HAVE_GCM512
    if (gcm512_supported())
        return Py_BuildValue("(ss)", "vaes512", "libcrypto");
#endif
    return Py_BuildValue("(s)", "libcrypto");
}

PyDoc_STRVAR(set_gcm_implementation_doc,
             "set_gcm_implementation(name) -> None\n\n"
             "Use AES-256-GCM implementation `name` from the next call on (both give the\n"
             "same octets); None: the default, libcrypto.  ValueError if unknown or this\n"
             "CPU lacks it.");

static PyObject *set_gcm_implementation(PyObject *Py_UNUSED(mod), PyObject *arg)
{
    int fast = 0;
#if HAVE_GCM512
    fast = gcm512_supported();
#endif
    int want;
    if (arg == Py_None) {
        want = 0;
    } else if (PyUnicode_Check(arg) && PyUnicode_CompareWithASCIIString(arg, "libcrypto") == 0) {
        want = 0;
    } else if (PyUnicode_Check(arg) && PyUnicode_CompareWithASCIIString(arg, "vaes512") == 0 &&
               fast) {
        want = 1;
    } else {
        PyErr_Format(PyExc_ValueError, "unknown or unsupported AES-256-GCM implementation %R",
                     arg);
        return NULL;
    }
    __atomic_store_n(&use_gcm512, want, __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}

/* TagCode.check: a method of bytes in C, so the datadir's check of every block
 * it reads costs one C call, not a Python function's body. */
static PyObject *tag_check(PyObject *self, PyObject *data)
{
    Py_buffer v;
    if (!PyBytes_Check(self))
        return PyErr_Format(PyExc_TypeError, "tag_check needs a tag, not %.100s",
                            Py_TYPE(self)->tp_name);
    if (get_buffer(data, &v) < 0)
        return NULL;
    const uint8_t *p = v.buf;
    if (v.len >= OVERHEAD && p[0] == VERSION && p[1] <= F_ZSTD) {
        int ok = PyBytes_GET_SIZE(self) == TAG_LEN &&
                 CRYPTO_memcmp(PyBytes_AS_STRING(self), p + 2, TAG_LEN) == 0;
        PyBuffer_Release(&v);
        return PyBool_FromLong(ok);
    }
    PyBuffer_Release(&v);
    /* not an encrypted block: named by a hash of all of it (rare; Python) */
    return PyObject_CallMethod(self, "_check_other", "O", data);
}

static PyMethodDef tag_check_def = {
    "check", (PyCFunction)tag_check, METH_O,
    "check(data) -> bool\n\n"
    "True if `data` carries this name: an encrypted block whose header holds this\n"
    "tag (compared in constant time), or else (self._check_other) whose hash it is."};

static PyMethodDef methods[] = {
    {"gcm_implementation", (PyCFunction)gcm_implementation, METH_NOARGS,
     gcm_implementation_doc},
    {"gcm_implementations", (PyCFunction)gcm_implementations, METH_NOARGS,
     gcm_implementations_doc},
    {"set_gcm_implementation", (PyCFunction)set_gcm_implementation, METH_O,
     set_gcm_implementation_doc},
    {"seal_many", (PyCFunction)seal_many, METH_VARARGS, seal_many_doc},
    {"open_many", (PyCFunction)open_many, METH_VARARGS, open_many_doc},
    {"open_checked", (PyCFunction)open_checked, METH_VARARGS, open_checked_doc},
    {"blake2b", (PyCFunction)(void (*)(void))blake2b, METH_VARARGS | METH_KEYWORDS, blake2b_doc},
    {"tag_many", (PyCFunction)tag_many, METH_VARARGS, tag_many_doc},
    {"seal_hashed", (PyCFunction)seal_hashed, METH_VARARGS, seal_hashed_doc},
    {"header_names", (PyCFunction)header_names, METH_VARARGS, header_names_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "vtstore.stores.crypt._cryptblocks",
    .m_doc = "Batch AES-256-GCM sealing and opening of crypt store blocks, and their keyed "
             "BLAKE2b name tags (GIL released).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__cryptblocks(void)
{
    if (blake3_init("vtstore.stores.crypt._cryptblocks") < 0) /* open_checked's BLAKE3 */
        return NULL;
    /* libcrypto by default: the VAES code is ours and young, so it runs only
     * when asked for (set_gcm_implementation, VT_CRYPT_GCM=vaes512) */
    use_gcm512 = 0;
    pthread_atfork(NULL, NULL, pool_after_fork);
    PyObject *m = PyModule_Create(&module);
    PyObject *check = m ? PyDescr_NewMethod(&PyBytes_Type, &tag_check_def) : NULL;
    if (!check || PyModule_AddObject(m, "tag_check", check) < 0) {
        Py_XDECREF(check);
        Py_XDECREF(m);
        return NULL;
    }
    return m;
}
