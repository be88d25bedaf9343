/* Shared by vtstore's C extensions: choosing among the implementations of a
 * function (SIMD variants) by what the CPU supports.
 *
 * An implementation table is an array of structs, fastest first, each with a
 * `const char *name` and an `int (*supported)(void)`; the functions below
 * take the table as (table, count, stride, offset of name, offset of
 * supported), which VT_IMPL_TABLE(tbl, type) spells out. */
#ifndef VTSTORE_VTIMPL_H
#define VTSTORE_VTIMPL_H

#include <Python.h>
#include <stddef.h>
#include <string.h>

#define VT_IMPL_TABLE(tbl, type)                                                             \
    (const void *)(tbl), sizeof(tbl) / sizeof((tbl)[0]), sizeof(type), offsetof(type, name), \
        offsetof(type, supported)

static inline const char *vt_impl_name(const void *tbl, size_t i, size_t stride, size_t noff)
{
    return *(const char *const *)((const char *)tbl + i * stride + noff);
}

static inline int vt_impl_supported(const void *tbl, size_t i, size_t stride, size_t soff)
{
    int (*supported)(void);
    memcpy(&supported, (const char *)tbl + i * stride + soff, sizeof supported);
    return supported();
}

/* The names of the implementations this CPU runs, fastest first, as a tuple. */
static inline PyObject *vt_impl_names(const void *tbl, size_t n, size_t stride, size_t noff,
                                      size_t soff)
{
    PyObject *names = PyList_New(0);
    for (size_t i = 0; names && i < n; i++) {
        if (!vt_impl_supported(tbl, i, stride, soff))
            continue;
        PyObject *name = PyUnicode_FromString(vt_impl_name(tbl, i, stride, noff));
        if (!name || PyList_Append(names, name) < 0)
            Py_CLEAR(names);
        Py_XDECREF(name);
    }
    if (!names)
        return NULL;
    PyObject *t = PyList_AsTuple(names);
    Py_DECREF(names);
    return t;
}

/* The index of the implementation named by `arg` (None: the fastest this CPU
 * runs), or -1 with TypeError / ValueError; `what` names the function in
 * messages ("CRC", "BLAKE3"). */
static inline Py_ssize_t vt_impl_pick(const void *tbl, size_t n, size_t stride, size_t noff,
                                      size_t soff, PyObject *arg, const char *what)
{
    if (arg == Py_None) {
        for (size_t i = 0; i < n; i++)
            if (vt_impl_supported(tbl, i, stride, soff))
                return (Py_ssize_t)i;
        PyErr_Format(PyExc_ValueError, "no %s implementation runs on this CPU", what);
        return -1;
    }
    if (!PyUnicode_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "implementation name must be a str, not %.100s",
                     Py_TYPE(arg)->tp_name);
        return -1;
    }
    const char *name = PyUnicode_AsUTF8(arg);
    if (!name)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(vt_impl_name(tbl, i, stride, noff), name) != 0)
            continue;
        if (!vt_impl_supported(tbl, i, stride, soff)) {
            PyErr_Format(PyExc_ValueError, "this CPU cannot run the %s %s implementation", name,
                         what);
            return -1;
        }
        return (Py_ssize_t)i;
    }
    PyErr_Format(PyExc_ValueError, "unknown %s implementation %R", what, arg);
    return -1;
}

#endif
