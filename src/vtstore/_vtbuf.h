/* Shared by vtstore's C extensions: taking a buffer from a Python object. */
#ifndef VTSTORE_VTBUF_H
#define VTSTORE_VTBUF_H

#include <Python.h>

/* A contiguous read-only view of `obj`, or -1 with a TypeError that names the type. */
static inline int get_buffer(PyObject *obj, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "data must be a contiguous bytes-like object, not %.100s",
                         Py_TYPE(obj)->tp_name);
        }
        return -1;
    }
    return 0;
}

#endif
