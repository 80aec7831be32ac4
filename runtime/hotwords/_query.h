/* What _query.c (the searches, the module) and _keep.c (the keep rules) share. */
#ifndef NIM4_HOTWORDS_QUERY_H
#define NIM4_HOTWORDS_QUERY_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

/* A match as retrieval.py's table holds it (its _table): its Row fields in order, int64 each; `source`
 * is the index of its MatchSource in retrieval._SOURCES. find_tolerant's `best` holds these too. */
typedef struct { int64_t start, end, key, source, errors, segment, distance; } Row;
enum { SOURCE_BASE, SOURCE_STREAM, SOURCE_TOLERANT };

#define CMP(u, v) if ((u) != (v)) return (u) < (v) ? -1 : 1

/* A C-contiguous buffer of items of `itemsize` bytes, else a ValueError naming `name`. */
int hotwords_get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, const char *name);

/* _keep.c: _query.judge and _query.settle (their docstrings there). */
PyObject *hotwords_judge(PyObject *self, PyObject *args);
PyObject *hotwords_settle(PyObject *self, PyObject *args);
#endif
