/* retrieval.py's keep rules over an utterance's matches as a table of Row records, for _query (a busy
 * tolerant utterance has ~150 matches; as Python objects they cost more than the search). judge: a
 * match inside a longer one, a key too short, a group with no entry left, each group's weight; settle:
 * a guess beaten by a closer match, then the ranking. tests/test_hotwords.py checks both against the
 * Python rules of retrieval._judged_few. */
#include "_query.h"

/* A match's verdict: retrieval._VERDICTS[v] is its Rejection (KEPT: None). */
enum { KEPT, INSIDE_LONGER, TOO_SHORT, REMOVED, CLOSER_MATCH };

static int get_table(PyObject *obj, Py_buffer *view, Py_ssize_t *m) {
    if (hotwords_get_buffer(obj, view, 8, "table") < 0) return -1;
    if (view->len % sizeof(Row)) {
        PyErr_SetString(PyExc_ValueError, "table: rows of 7 int64 expected");
        PyBuffer_Release(view);
        return -1;
    }
    *m = view->len / sizeof(Row);
    return 0;
}

/* Whether a longer match y contains x, heard with no more errors than it (retrieval._inside_a_longer). */
static int shadows(const Row *y, const Row *x) {
    return y->start <= x->start && x->end <= y->end && y->end - y->start > x->end - x->start && y->errors <= x->errors;
}

static int shadowed_at(const Row *rows, Py_ssize_t m, Py_ssize_t i) {
    for (Py_ssize_t j = 0; j < m; j++)
        if (shadows(&rows[j], &rows[i])) return 1;
    return 0;
}

/* One segment's arrays, as judge reads them. */
typedef struct { Py_buffer syllables, offsets, entries, weights; int got; } SegmentViews;

/* judge(table, min_syllables, segments: [(key_syllables int16[], group_offsets int64[keys + 1],
 *     group_entries int32[], weights float32[])]) -> (verdicts bytearray, weights bytearray of float64):
 * INSIDE_LONGER for a match a longer one shadows, else TOO_SHORT for a database key of fewer than
 * min_syllables syllables, else REMOVED for a key with no entry left in its group; a database match's
 * weight is its group's heaviest entry's (groups list theirs heaviest first). A stream's additions
 * (SOURCE_STREAM) are KEPT with weight 0: retrieval.py reads their groups. */
PyObject *hotwords_judge(PyObject *self, PyObject *args) {
    PyObject *obj, *segments_obj, *out = NULL, *verdicts = NULL, *weights = NULL;
    Py_buffer view;
    Py_ssize_t m, min_syllables, num_segments = 0;
    SegmentViews segs[2] = {{.got = 0}, {.got = 0}};
    if (!PyArg_ParseTuple(args, "OnO!", &obj, &min_syllables, &PyList_Type, &segments_obj)) return NULL;
    if (get_table(obj, &view, &m) < 0) return NULL;
    if (PyList_GET_SIZE(segments_obj) > 2) {
        PyErr_SetString(PyExc_ValueError, "segments: a database has one or two");
        goto done;
    }
    for (; num_segments < PyList_GET_SIZE(segments_obj); num_segments++) {
        PyObject *t = PyList_GET_ITEM(segments_obj, num_segments), *a[4];
        SegmentViews *v = &segs[num_segments];
        if (!PyTuple_Check(t)) {
            PyErr_SetString(PyExc_TypeError, "segments: a tuple of four arrays each");
            goto done;
        }
        if (!PyArg_ParseTuple(t, "OOOO", &a[0], &a[1], &a[2], &a[3])) goto done;
        if (hotwords_get_buffer(a[0], &v->syllables, 2, "key_syllables") < 0) goto done;
        v->got = 1;
        if (hotwords_get_buffer(a[1], &v->offsets, 8, "group_offsets") < 0) goto done;
        v->got = 2;
        if (hotwords_get_buffer(a[2], &v->entries, 4, "group_entries") < 0) goto done;
        v->got = 3;
        if (hotwords_get_buffer(a[3], &v->weights, 4, "weights") < 0) goto done;
        v->got = 4;
        if (v->offsets.len / 8 != v->syllables.len / 2 + 1) {
            PyErr_SetString(PyExc_ValueError, "group offsets and key syllables do not fit together");
            goto done;
        }
    }
    verdicts = PyByteArray_FromStringAndSize(NULL, m);
    weights = PyByteArray_FromStringAndSize(NULL, m * (Py_ssize_t)sizeof(double));
    if (!verdicts || !weights) goto done;
    const Row *rows = view.buf;
    char *verdict = PyByteArray_AS_STRING(verdicts);
    double *weight = (double *)PyByteArray_AS_STRING(weights);
    for (Py_ssize_t i = 0; i < m; i++) {
        const Row *r = &rows[i];
        verdict[i] = KEPT, weight[i] = 0;
        if (shadowed_at(rows, m, i)) {
            verdict[i] = INSIDE_LONGER;
            continue;
        }
        if (r->source == SOURCE_STREAM) continue;
        if (r->segment < 0 || r->segment >= num_segments) {
            PyErr_SetString(PyExc_ValueError, "a match names a segment not given");
            goto done;
        }
        const SegmentViews *v = &segs[r->segment];
        const int16_t *syllables = v->syllables.buf;
        const int64_t *offsets = v->offsets.buf;
        const int32_t *entries = v->entries.buf;
        const float *entry_weights = v->weights.buf;
        if (r->key < 0 || r->key >= v->syllables.len / 2) {
            PyErr_SetString(PyExc_ValueError, "a match names a key that does not exist");
            goto done;
        }
        if (syllables[r->key] < min_syllables) {
            verdict[i] = TOO_SHORT;
            continue;
        }
        const int64_t first = offsets[r->key];
        if (first >= offsets[r->key + 1]) {
            verdict[i] = REMOVED; /* no entry left (retrieval.HotwordRetriever.rejection) */
            continue;
        }
        if (first < 0 || first >= v->entries.len / 4 || entries[first] < 0 || entries[first] >= v->weights.len / 4) {
            PyErr_SetString(PyExc_ValueError, "a key's group is out of range");
            goto done;
        }
        weight[i] = entry_weights[entries[first]];
    }
    out = PyTuple_Pack(2, verdicts, weights);
done:
    Py_XDECREF(verdicts);
    Py_XDECREF(weights);
    for (Py_ssize_t s = 0; s < 2; s++) {
        if (segs[s].got > 0) PyBuffer_Release(&segs[s].syllables);
        if (segs[s].got > 1) PyBuffer_Release(&segs[s].offsets);
        if (segs[s].got > 2) PyBuffer_Release(&segs[s].entries);
        if (segs[s].got > 3) PyBuffer_Release(&segs[s].weights);
    }
    PyBuffer_Release(&view);
    return out;
}

/* Whether kept tolerant match x is beaten by kept match y: y overlaps it and was heard more closely
 * (errors, then distance), and x does not contain y while two phonemes or more longer
 * (retrieval.py's closer-match rule, at _judged_table). */
static int beats(const Row *y, const Row *x) {
    return y->start < x->end && x->start < y->end &&
           (y->errors < x->errors || (y->errors == x->errors && y->distance < x->distance)) &&
           !(x->start <= y->start && y->end <= x->end && (x->end - x->start) - (y->end - y->start) >= 2);
}

typedef struct { const Row *row; double weight; Py_ssize_t index; } Ranked;

static int rank_order(const void *p, const void *q) { /* retrieval._rank of kept matches, then row order */
    const Ranked *a = p, *b = q;
    CMP(a->row->source == SOURCE_TOLERANT, b->row->source == SOURCE_TOLERANT);
    CMP(a->row->errors, b->row->errors);
    CMP(a->row->distance, b->row->distance);
    CMP(a->row->start - a->row->end, b->row->start - b->row->end);
    CMP(-a->weight, -b->weight);
    CMP(a->row->start, b->row->start);
    CMP(a->index, b->index);
    return 0;
}

/* settle(table, verdicts, weights float64) -> (verdicts bytes, [kept row indices, best first]):
 * CLOSER_MATCH for each kept tolerant match a kept match beats (kept as the verdicts given say), then
 * the kept ranked by retrieval._rank. */
PyObject *hotwords_settle(PyObject *self, PyObject *args) {
    PyObject *obj, *out = NULL, *verdicts = NULL, *ranked = NULL;
    Py_buffer view, given, weights;
    Py_ssize_t m;
    Ranked *kept = NULL;
    if (!PyArg_ParseTuple(args, "Oy*y*", &obj, &given, &weights)) return NULL;
    if (get_table(obj, &view, &m) < 0) {
        PyBuffer_Release(&given), PyBuffer_Release(&weights);
        return NULL;
    }
    if (given.len != m || weights.len != m * (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_ValueError, "verdicts and weights: one per match expected");
        goto done;
    }
    const Row *rows = view.buf;
    const char *was = given.buf;
    const double *weight = weights.buf;
    verdicts = PyBytes_FromStringAndSize(was, m);
    kept = malloc((m ? m : 1) * sizeof *kept);
    if (!verdicts || !kept) { PyErr_NoMemory(); goto done; }
    char *verdict = PyBytes_AS_STRING(verdicts);
    Py_ssize_t num_kept = 0;
    for (Py_ssize_t i = 0; i < m; i++) {
        if (was[i] != KEPT) continue;
        if (rows[i].source == SOURCE_TOLERANT) /* only a guess is beaten; exact matches stay */
            for (Py_ssize_t j = 0; j < m && verdict[i] == KEPT; j++)
                if (was[j] == KEPT && beats(&rows[j], &rows[i])) verdict[i] = CLOSER_MATCH;
        if (verdict[i] == KEPT) kept[num_kept++] = (Ranked){&rows[i], weight[i], i};
    }
    qsort(kept, num_kept, sizeof *kept, rank_order);
    ranked = PyList_New(num_kept);
    if (!ranked) goto done;
    for (Py_ssize_t i = 0; i < num_kept; i++) {
        PyObject *index = PyLong_FromSsize_t(kept[i].index);
        if (!index) goto done;
        PyList_SET_ITEM(ranked, i, index);
    }
    out = PyTuple_Pack(2, verdicts, ranked);
done:
    Py_XDECREF(verdicts);
    Py_XDECREF(ranked);
    free(kept);
    PyBuffer_Release(&view);
    PyBuffer_Release(&given);
    PyBuffer_Release(&weights);
    return out;
}
