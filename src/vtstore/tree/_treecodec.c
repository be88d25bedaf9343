/* _treecodec: the C `scan_dirent` of vtstore.tree.dirscan.
 *
 * It recognises a dirent in canonical form (the octets Dirent.encode writes) and
 * returns the summary the importer's stat cache needs, or None for anything else;
 * see dirscan.py, whose pure-Python `py_scan_dirent` is the reference this must
 * agree with exactly (the tests run both over the same inputs).  Nothing here
 * raises for bad input: None hands the entry to the full Python decoder, which
 * judges it.  Varints are the format's canonical big-endian base-128, at most 10
 * octets (70 bits), so values are carried in unsigned __int128.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

__extension__ typedef unsigned __int128 u128; /* a GCC and Clang extension */

#define MAX_VARINT_OCTETS 10
#define MAX_LITERAL_SPAN (32 * 64)
/* the ranges Dirent and Meta check: a value past one defers to the decoder */
#define U64_MAX_ ((u128)UINT64_MAX) /* spans, ino, zig-zagged times */
#define U32_MAX_ ((u128)0xFFFFFFFFu) /* uid, gid, device major and minor */

/* One canonical varint at *pos (before end): 0 and the value, or -1. */
static int
varint(const unsigned char *b, Py_ssize_t *pos, Py_ssize_t end, u128 *out)
{
    Py_ssize_t p = *pos, start = p;
    u128 n = 0;
    unsigned char c;
    if (p >= end)
        return -1;
    c = b[p];
    if (c < 0x80) {
        *out = c;
        *pos = p + 1;
        return 0;
    }
    if (c == 0x80)
        return -1; /* a redundant leading zero group */
    for (;;) {
        p++;
        n = (n << 7) | (c & 0x7F);
        if (!(c & 0x80)) {
            *out = n;
            *pos = p;
            return 0;
        }
        if (p - start >= MAX_VARINT_OCTETS || p >= end)
            return -1;
        c = b[p];
    }
}

static PyObject *
long_from_u128(u128 v)
{
    PyObject *hi, *lo, *sh, *r;
    if (v <= (u128)UINT64_MAX)
        return PyLong_FromUnsignedLongLong((unsigned long long)v);
    hi = PyLong_FromUnsignedLongLong((unsigned long long)(v >> 64));
    lo = PyLong_FromUnsignedLongLong((unsigned long long)v);
    sh = PyLong_FromLong(64);
    r = NULL;
    if (hi && lo && sh) {
        PyObject *t = PyNumber_Lshift(hi, sh);
        if (t) {
            r = PyNumber_Or(t, lo);
            Py_DECREF(t);
        }
    }
    Py_XDECREF(hi);
    Py_XDECREF(lo);
    Py_XDECREF(sh);
    return r;
}

/* unzigzag(n) as a Python int: n // 2 for even n, -(n + 1) // 2 for odd. */
static PyObject *
long_unzigzag(u128 n)
{
    u128 half = n >> 1;
    PyObject *pos, *neg;
    if (!(n & 1))
        return long_from_u128(half);
    if (half < (u128)INT64_MAX)
        return PyLong_FromLongLong(-(long long)half - 1);
    pos = long_from_u128(half + 1);
    if (!pos)
        return NULL;
    neg = PyNumber_Negative(pos);
    Py_DECREF(pos);
    return neg;
}

/* rank of a metadata tag in the order Meta.encode writes them (0: unknown) */
static int
meta_rank(unsigned char tag)
{
    static const int rank[11] = {0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 8};
    return tag <= 10 ? rank[tag] : 0;
}

/* Result codes: OK, DEFER (not canonical), ERR (a Python exception is set). */
enum { OK = 0, DEFER = 1, ERR = -1 };

/* The xattr (name, value) at [p, vend) as the Python tuple Meta.decode sorts by. */
static PyObject *
xattr_key(const unsigned char *b, Py_ssize_t p, Py_ssize_t xn, Py_ssize_t vend)
{
    PyObject *name = PyUnicode_DecodeUTF8((const char *)b + p, xn, "surrogateescape");
    PyObject *value, *t;
    if (!name)
        return NULL;
    value = PyBytes_FromStringAndSize((const char *)b + p + xn, vend - p - xn);
    if (!value) {
        Py_DECREF(name);
        return NULL;
    }
    t = PyTuple_Pack(2, name, value);
    Py_DECREF(name);
    Py_DECREF(value);
    return t;
}

static int
scan_meta(const unsigned char *b, Py_ssize_t pos, Py_ssize_t end, PyObject **mtime,
          PyObject **ctime)
{
    int rank = 0, r;
    PyObject *last_xattr = NULL;
    int rc = OK;
    u128 n, v;
    while (pos < end) {
        unsigned char tag = b[pos];
        Py_ssize_t vend, p;
        r = meta_rank(tag);
        if (r == 0 || r < rank || (r == rank && tag != 8))
            goto defer;
        rank = r;
        pos++;
        if (varint(b, &pos, end, &n) || n > (u128)(end - pos))
            goto defer;
        vend = pos + (Py_ssize_t)n;
        switch (tag) {
        case 1: case 2: case 3: case 6: case 7: case 10:
            p = pos;
            if (varint(b, &p, vend, &v) || p != vend)
                goto defer;
            if (tag == 1 && v > 07777)
                goto defer;
            if (v > ((tag == 2 || tag == 3) ? U32_MAX_ : U64_MAX_))
                goto defer;
            if (tag == 6 || tag == 7) {
                PyObject **slot = tag == 6 ? mtime : ctime;
                PyObject *t = long_unzigzag(v);
                if (!t)
                    goto error;
                Py_XSETREF(*slot, t);
            }
            break;
        case 8: {
            PyObject *key;
            p = pos;
            if (varint(b, &p, vend, &v) || v > (u128)(vend - p) || v == 0 ||
                memchr(b + p, 0, (size_t)v))
                goto defer;
            key = xattr_key(b, p, (Py_ssize_t)v, vend);
            if (!key)
                goto error;
            if (last_xattr) {
                int lt = PyObject_RichCompareBool(key, last_xattr, Py_LT);
                if (lt < 0) {
                    Py_DECREF(key);
                    goto error;
                }
                if (lt) {
                    Py_DECREF(key);
                    goto defer;
                }
            }
            Py_XSETREF(last_xattr, key);
            break;
        }
        case 9: {
            PyObject *s = PyUnicode_DecodeUTF8((const char *)b + pos, vend - pos, "strict");
            if (!s) {
                if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                    goto error;
                PyErr_Clear();
                goto defer;
            }
            Py_DECREF(s);
            break;
        }
        default: /* 4, 5: user and group names, no NUL */
            if (memchr(b + pos, 0, (size_t)(vend - pos)))
                goto defer;
            break;
        }
        pos = vend;
    }
    goto done;
defer:
    rc = DEFER;
    goto done;
error:
    rc = ERR;
done:
    Py_XDECREF(last_xattr);
    return rc;
}

static int
scan_blockref(const unsigned char *b, Py_ssize_t pos, Py_ssize_t end, u128 *span)
{
    u128 n;
    Py_ssize_t p = pos;
    unsigned char flags;
    if (varint(b, &p, end, &n) || n != (u128)(end - p) || p >= end)
        return DEFER;
    flags = b[p++];
    if (varint(b, &p, end, span) || *span > U64_MAX_)
        return DEFER;
    if (flags <= 1) { /* hashcode leaf or indirect, untyped */
        Py_ssize_t size;
        if (p >= end)
            return DEFER;
        switch (b[p]) {
        case 0: size = 20; break; /* sha1 */
        case 1: case 2: case 3: size = 32; break; /* sha256, blake3, sha3_256 */
        default: return DEFER;
        }
        return p + 1 + size == end ? OK : DEFER;
    }
    if (flags == 2 && p < end) {
        unsigned char btype = b[p];
        if (btype == 1 && p + 2 == end)
            return OK; /* RLE */
        if (btype == 2 && *span <= MAX_LITERAL_SPAN && (u128)(end - p - 1) == *span)
            return OK; /* literal */
    }
    return DEFER;
}

static PyObject *
scan_dirent(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos = 0, end = -1;
    const unsigned char *b;
    PyObject *mtime = NULL, *ctime = NULL, *name = NULL, *spanobj = NULL, *result = NULL;
    unsigned char dtype, last = 0;
    long fields = 0;
    int have_span = 0, rc;
    u128 span = 0, n, v;
    Py_ssize_t bstart = 0, bend = 0, name_at = -1, name_len = 0;

    (void)self;

    if (!PyArg_ParseTuple(args, "y*|nn:scan_dirent", &view, &pos, &end))
        return NULL;
    if (end < 0 && PyTuple_GET_SIZE(args) < 3)
        end = view.len;
    if (pos < 0 || pos > end || end > view.len) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "bad bounds %zd..%zd over %zd octets", pos, end,
                     view.len);
        return NULL;
    }
    b = view.buf;
    if (pos >= end || (dtype = b[pos]) > 7)
        goto defer;
    pos++;
    while (pos < end) {
        unsigned char tag = b[pos];
        Py_ssize_t vend, p;
        if (tag <= last || tag > 9)
            goto defer;
        last = tag;
        pos++;
        if (varint(b, &pos, end, &n) || n > (u128)(end - pos))
            goto defer;
        vend = pos + (Py_ssize_t)n;
        fields |= 1L << tag;
        switch (tag) {
        case 1:
            if (n == 0 || memchr(b + pos, '/', n) || memchr(b + pos, 0, n))
                goto defer;
            if (b[pos] == '.' && (n == 1 || (n == 2 && b[pos + 1] == '.')))
                goto defer;
            name_at = pos;
            name_len = (Py_ssize_t)n;
            break;
        case 2:
            rc = scan_meta(b, pos, vend, &mtime, &ctime);
            if (rc == ERR)
                goto error;
            if (rc == DEFER)
                goto defer;
            break;
        case 3:
            if (n != 16)
                goto defer;
            break;
        case 4:
            if (scan_blockref(b, pos, vend, &span))
                goto defer;
            have_span = 1;
            bstart = pos;
            bend = vend;
            break;
        case 5: {
            u128 ignored;
            if (scan_blockref(b, pos, vend, &ignored))
                goto defer;
            break;
        }
        case 7:
            p = pos;
            if (varint(b, &p, vend, &v) || p != vend || v > U64_MAX_)
                goto defer;
            break;
        case 8:
            if (n < 3 || (b[pos] != 'c' && b[pos] != 'b'))
                goto defer;
            p = pos + 1;
            if (varint(b, &p, vend, &v) || v > U32_MAX_ || varint(b, &p, vend, &v) ||
                v > U32_MAX_ || p != vend)
                goto defer;
            break;
        case 6: /* a symlink target: no NUL */
            if (memchr(b + pos, 0, n))
                goto defer;
            break;
        default: /* 9 ext: any octets */
            break;
        }
        pos = vend;
    }
    if (name_at < 0)
        goto defer;
    name = PyBytes_FromStringAndSize((const char *)b + name_at, name_len);
    if (!name)
        goto error;
    if (have_span) {
        spanobj = long_from_u128(span);
        if (!spanobj)
            goto error;
    }
    result = Py_BuildValue("(iOlOOOnn)", (int)dtype, name, fields, mtime ? mtime : Py_None,
                           ctime ? ctime : Py_None, spanobj ? spanobj : Py_None, bstart, bend);
    goto done;
defer:
    result = Py_NewRef(Py_None);
    goto done;
error:
    result = NULL;
done:
    Py_XDECREF(name);
    Py_XDECREF(spanobj);
    Py_XDECREF(mtime);
    Py_XDECREF(ctime);
    PyBuffer_Release(&view);
    return result;
}

/* ---- encoding a plain file's dirent -------------------------------------------- */

/* A canonical varint of v at out; its length. */
static size_t
put_varint(unsigned char *out, uint64_t v)
{
    unsigned char tmp[10];
    size_t n = 0;
    tmp[n++] = v & 0x7F;
    while (v >>= 7)
        tmp[n++] = 0x80 | (v & 0x7F);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/* tag, varint(len(varint(v))), varint(v): a metadata integer field */
static size_t
put_int_field(unsigned char *out, unsigned tag, uint64_t v)
{
    size_t k = put_varint(out + 2, v);
    out[0] = (unsigned char)tag;
    out[1] = (unsigned char)k;
    return 2 + k;
}

static size_t
put_lbytes(unsigned char *out, unsigned tag, const char *p, Py_ssize_t n)
{
    size_t k = 0;
    out[k++] = (unsigned char)tag;
    k += put_varint(out + k, (uint64_t)n);
    memcpy(out + k, p, (size_t)n);
    return k + (size_t)n;
}

static uint64_t
zigzag64(long long v)
{
    return v >= 0 ? (uint64_t)v * 2 : ((uint64_t)(-(v + 1))) * 2 + 1;
}

static PyObject *
file_dirent(PyObject *Py_UNUSED(self), PyObject *args)
{
    const char *name, *user = NULL, *group = NULL, *block;
    Py_ssize_t name_len, user_len = 0, group_len = 0, block_len;
    unsigned long mode, uid, gid;
    long long mtime, ctime;
    if (!PyArg_ParseTuple(args, "y#kkkz#z#LLy#", &name, &name_len, &mode, &uid, &gid, &user,
                          &user_len, &group, &group_len, &mtime, &ctime, &block, &block_len))
        return NULL;
    if (name_len == 0 || mode > 07777 || uid > 0xFFFFFFFFul || gid > 0xFFFFFFFFul) {
        PyErr_SetString(PyExc_ValueError, "file_dirent: empty name or value out of range");
        return NULL;
    }
    /* meta: 3 small ints, 2 names, 2 times; each field at most 2 + 10 octets */
    size_t meta_max = 3 * 12 + 2 * 11 + (size_t)user_len + (size_t)group_len + 2 * 12;
    size_t max = 1 + 11 + (size_t)name_len + 11 + meta_max + 11 + (size_t)block_len;
    unsigned char *buf = PyMem_Malloc(max + meta_max);
    if (!buf)
        return PyErr_NoMemory();
    unsigned char *meta = buf + max;
    size_t m = 0;
    m += put_int_field(meta + m, 1, mode);
    m += put_int_field(meta + m, 2, uid);
    m += put_int_field(meta + m, 3, gid);
    if (user)
        m += put_lbytes(meta + m, 4, user, user_len);
    if (group)
        m += put_lbytes(meta + m, 5, group, group_len);
    m += put_int_field(meta + m, 6, zigzag64(mtime));
    m += put_int_field(meta + m, 7, zigzag64(ctime));
    size_t k = 0;
    buf[k++] = 0; /* T_FILE */
    k += put_lbytes(buf + k, 1, name, name_len);
    k += put_lbytes(buf + k, 2, (const char *)meta, (Py_ssize_t)m);
    k += put_lbytes(buf + k, 4, block, block_len);
    PyObject *r = PyBytes_FromStringAndSize((const char *)buf, (Py_ssize_t)k);
    PyMem_Free(buf);
    return r;
}

static PyMethodDef methods[] = {
    {"scan_dirent", scan_dirent, METH_VARARGS,
     "scan_dirent(buf, pos=0, end=len(buf)) -> summary tuple or None\n\n"
     "The C version of vtstore.tree.dirscan.py_scan_dirent."},
    {"file_dirent", file_dirent, METH_VARARGS,
     "file_dirent(name, mode, uid, gid, user, group, mtime_ns, ctime_ns, blockref) -> bytes\n\n"
     "Dirent(T_FILE, name, Meta(mode, uid, gid, user, group, mtime_ns, ctime_ns),\n"
     "block).encode() for a file without xattrs: name, user, group as bytes (user\n"
     "and group may be None), blockref the block's encoding."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef treecodec_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "vtstore.tree._treecodec",
    .m_doc = "Fast recognition of canonical binary dirents (see vtstore.tree.dirscan).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__treecodec(void)
{
    PyObject *m = PyModule_Create(&treecodec_module);
    PyObject *sizes;
    if (!m)
        return NULL;
    /* the digest sizes scan_blockref knows, for the tests to hold against hashes.py */
    sizes = Py_BuildValue("{iiiiiiii}", 0, 20, 1, 32, 2, 32, 3, 32);
    if (!sizes || PyModule_AddObject(m, "DIGEST_SIZES", sizes) < 0) {
        Py_XDECREF(sizes);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
