/* The exact hotword index's query in C: signatures.py's SignatureIndex.find for errors = 0.
 *
 * Every key length L the index holds, at every position x of the heard phonemes: the hash of
 * phonemes [x, x + L) (prefix hashes, polynomial in BASE modulo 2^64), made a signature as
 * signatures.combine() makes it (tag L << 8 times TAG, plus the hash times SLOT0, splitmix64's
 * finalizer), tested against the bitmap of the signatures' top bits, and looked up by binary search
 * in the sorted signatures for the few the bitmap lets through; a key found is compared with the
 * heard phonemes, so a hash collision (or an edited file) finds nothing. The same arithmetic as the
 * numpy code that builds the index (uint64 wraps modulo 2^64 in both), so a key's stored signature
 * is found here; a test checks the two against each other.
 *
 * Why C: the numpy version was ~30 array operations of a few hundred elements each, mostly call
 * overhead (exact query p50 86 us, p99 144 us at a million entries; aim p99 <= 50 us); here it is one
 * call. It reads only arrays the database has range-checked at load (signatures sorted, key ids in
 * range, key offsets increasing within the phonemes), and checks every index against its array
 * again: a file never makes it read outside them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

#define CODE_POINT_BASE 0xE000u /* strings.py: phoneme id i <-> chr(0xE000 + i) */
static const uint64_t BASE = 0x9E3779B97F4A7C15ull;
static const uint64_t SLOT0 = 0xD6E8FEB86659FD93ull;
static const uint64_t TAG = 0xE7037ED1A0B428DBull;
#define BITMAP_BITS 24 /* signatures.py _BITMAP_BITS: the bitmap holds 2^24 bits */

static uint64_t inverse(uint64_t b) { /* b^-1 modulo 2^64, b odd (Newton: 3 -> 6 -> ... -> 96 bits) */
    uint64_t x = b;
    for (int i = 0; i < 6; i++) x *= 2 - b * x;
    return x;
}

static uint64_t mix(uint64_t x) { /* signatures.mix */
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return x;
}

static int get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (view->itemsize != itemsize || view->len % itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: items of %zd bytes expected", name, itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Whether key k (phonemes[starts[k] : starts[k + 1]]) is the heard span [x, x + L). */
static int same_key(const int64_t *starts, Py_ssize_t num_keys, const uint16_t *phonemes, Py_ssize_t num_phonemes,
                    int32_t k, int kind, const void *data, Py_ssize_t x, Py_ssize_t L) {
    if (k < 0 || k >= num_keys) return 0;
    const int64_t a = starts[k], b = starts[k + 1];
    if (a < 0 || b > num_phonemes || b - a != L) return 0;
    for (Py_ssize_t t = 0; t < L; t++)
        if (PyUnicode_READ(kind, data, x + t) != CODE_POINT_BASE + phonemes[a + t]) return 0;
    return 1;
}

/* find(code: str, new_from: int, lengths: int32[], signatures: uint64[] sorted, key_ids: int32[],
 *      bitmap: uint64[2^24 / 64], key_starts: int64[keys + 1], key_phonemes: uint16[])
 * -> list of (key id, x, length): the keys heard at x, for spans ending past new_from */
static PyObject *find(PyObject *self, PyObject *args) {
    PyObject *code, *lengths_obj, *signatures_obj, *key_ids_obj, *bitmap_obj, *starts_obj, *phonemes_obj, *out = NULL;
    Py_ssize_t new_from;
    Py_buffer lengths, signatures, key_ids, bitmap, starts, phonemes;
    uint64_t *h = NULL, *inv = NULL;
    if (!PyArg_ParseTuple(args, "UnOOOOOO", &code, &new_from, &lengths_obj, &signatures_obj, &key_ids_obj, &bitmap_obj,
                          &starts_obj, &phonemes_obj))
        return NULL;
    if (get_buffer(lengths_obj, &lengths, 4, "lengths") < 0) return NULL;
    if (get_buffer(signatures_obj, &signatures, 8, "signatures") < 0) goto release_lengths;
    if (get_buffer(key_ids_obj, &key_ids, 4, "key_ids") < 0) goto release_signatures;
    if (get_buffer(bitmap_obj, &bitmap, 8, "bitmap") < 0) goto release_key_ids;
    if (get_buffer(starts_obj, &starts, 8, "key_starts") < 0) goto release_bitmap;
    if (get_buffer(phonemes_obj, &phonemes, 2, "key_phonemes") < 0) goto release_starts;
    const Py_ssize_t count = signatures.len / 8, n = PyUnicode_GET_LENGTH(code), num_keys = starts.len / 8 - 1;
    if (key_ids.len / 4 != count || bitmap.len * 8 != ((Py_ssize_t)1 << BITMAP_BITS) || num_keys < 0) {
        PyErr_SetString(PyExc_ValueError, "signatures, key ids and bitmap do not fit together");
        goto release_all;
    }
    h = malloc((n + 1) * sizeof *h); /* h[k] = sum_{t<k} (id_t + 1) BASE^t */
    inv = malloc((n + 1) * sizeof *inv); /* BASE^-t */
    out = PyList_New(0);
    if (!h || !inv || !out) {
        Py_CLEAR(out);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto release_all;
    }
    const int kind = PyUnicode_KIND(code);
    const void *data = PyUnicode_DATA(code);
    const uint64_t base_inv = inverse(BASE);
    uint64_t power = 1;
    h[0] = 0;
    inv[0] = 1;
    for (Py_ssize_t t = 0; t < n; t++) {
        /* strings.code_ids: uint32 wrap-around for a character below the base, as numpy's */
        const uint64_t id = (uint32_t)(PyUnicode_READ(kind, data, t) - CODE_POINT_BASE);
        h[t + 1] = h[t] + (id + 1) * power;
        power *= BASE;
        inv[t + 1] = inv[t] * base_inv;
    }
    const int32_t *lens = lengths.buf, *keys = key_ids.buf;
    const uint64_t *sigs = signatures.buf, *bits = bitmap.buf;
    const int64_t *key_starts = starts.buf;
    const uint16_t *key_phonemes = phonemes.buf;
    for (Py_ssize_t i = 0; i < lengths.len / 4; i++) {
        const Py_ssize_t L = lens[i];
        if (L < 1 || L > n) continue;
        const uint64_t tag = ((uint64_t)L << 8) * TAG;
        for (Py_ssize_t x = new_from - L + 1 > 0 ? new_from - L + 1 : 0; x + L <= n; x++) {
            const uint64_t q = mix(tag + (h[x + L] - h[x]) * inv[x] * SLOT0);
            const uint64_t top = q >> (64 - BITMAP_BITS);
            if (!((bits[top >> 6] >> (top & 63)) & 1)) continue; /* most positions stop here */
            Py_ssize_t lo = 0, hi = count; /* the first signature >= q */
            while (lo < hi) {
                const Py_ssize_t mid = lo + (hi - lo) / 2;
                if (sigs[mid] < q) lo = mid + 1; else hi = mid;
            }
            for (; lo < count && sigs[lo] == q; lo++) {
                if (!same_key(key_starts, num_keys, key_phonemes, phonemes.len / 2, keys[lo], kind, data, x, L)) continue;
                PyObject *hit = Py_BuildValue("(inn)", (int)keys[lo], x, L);
                if (!hit || PyList_Append(out, hit) < 0) {
                    Py_XDECREF(hit);
                    Py_CLEAR(out);
                    goto release_all;
                }
                Py_DECREF(hit);
            }
        }
    }
release_all:
    free(h);
    free(inv);
    PyBuffer_Release(&phonemes);
release_starts:
    PyBuffer_Release(&starts);
release_bitmap:
    PyBuffer_Release(&bitmap);
release_key_ids:
    PyBuffer_Release(&key_ids);
release_signatures:
    PyBuffer_Release(&signatures);
release_lengths:
    PyBuffer_Release(&lengths);
    return out;
}

static PyMethodDef methods[] = {
    {"find", find, METH_VARARGS, "find(code, new_from, lengths, signatures, key_ids, bitmap, key_starts, key_phonemes) -> [(key id, x, length)]"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_exact", "The exact hotword index's query (see _exact.c).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__exact(void) { return PyModule_Create(&module); }
