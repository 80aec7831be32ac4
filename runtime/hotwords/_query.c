/* The hotword indexes' queries in C: exact (find_exact) and tolerant (find_tolerant), over the
 * arrays signatures.py builds in numpy.
 *
 * Exact: every key length L the index holds, at every position x of the heard phonemes: the hash of
 * phonemes [x, x + L) (prefix hashes, polynomial in BASE modulo 2^64), made a signature as
 * signatures.combine() makes it (tag L << 8 times TAG, plus the hash times SLOTS[0], splitmix64's
 * finalizer), tested against the bitmap of the signatures' top bits, and looked up (lower_bound64)
 * in the sorted signatures for the few the bitmap lets through; a key found is compared with the
 * heard phonemes, so a hash collision (or an edited file) finds nothing.
 *
 * Tolerant: every probe of the index (signatures.Probe: which parts of a key of which length are
 * intact, and where) at every position, filtered by the single-part signatures, looked up, popular
 * signatures refined by their first missing part as heard; each key found gives the windows it can
 * lie in (the edits its probe leaves for before and after), and each window is verified by edit
 * distance, tones forgiven, against the key. The numpy code that builds the indexes does the same
 * arithmetic (uint64 wraps modulo 2^64 in both), so a key's stored signature is found here; tests
 * check the two against each other and against brute force.
 *
 * Keep rules (judge, settle): in _keep.c.
 *
 * Why C: in numpy each query was tens of array operations of a few hundred elements each, mostly call
 * overhead (exact p99 144 us, tolerant p99 4.6-5.8 ms at a million entries; aims 50 us and 1 ms).
 * Both read only arrays the database has range-checked at load (signatures sorted, key ids in range,
 * key offsets increasing within the phonemes), and check every index against its array again: a
 * file never makes them read outside them.
 */
#include "_query.h"

#define CODE_POINT_BASE 0xE000u /* strings.py: phoneme id i <-> chr(0xE000 + i) */
static const uint64_t BASE = 0x9E3779B97F4A7C15ull;
static const uint64_t SLOTS[4] = {0xD6E8FEB86659FD93ull, 0xA0761D6478BD642Full, 0x8EBC6AF09C88C6E3ull,
                                  0x589965CC75374CC3ull}; /* signatures._SLOTS: one multiplier per part */
static const uint64_t TAG = 0xE7037ED1A0B428DBull;
#define BITMAP_BITS 24 /* signatures.py _BITMAP_BITS: the exact index's bitmap holds 2^24 bits */
#define PIECE_BITS 16 /* signatures.py _PIECE_BITS: a tolerant index's single-part bitmap, 2^16 bits */

static int bit_set(const uint64_t *bits, uint64_t q, int width) {
    const uint64_t top = q >> (64 - width);
    return (bits[top >> 6] >> (top & 63)) & 1;
}

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

/* Prefix hashes of the heard phonemes: h[k] = sum_{t<k} (id_t + 1) BASE^t, inv[t] = BASE^-t and, when
 * pw is not NULL, pw[t] = BASE^t, for t <= n (signatures.prefix_hashes): the hash of [a, b) is
 * (h[b] - h[a]) * inv[a]. A character below the code-point base wraps around as strings.code_ids does. */
static void hash_prefixes(int kind, const void *data, Py_ssize_t n, uint64_t *h, uint64_t *inv, uint64_t *pw) {
    const uint64_t base_inv = inverse(BASE);
    uint64_t power = 1;
    h[0] = 0, inv[0] = 1;
    if (pw) pw[0] = 1;
    for (Py_ssize_t t = 0; t < n; t++) {
        const uint64_t id = (uint32_t)(PyUnicode_READ(kind, data, t) - CODE_POINT_BASE);
        h[t + 1] = h[t] + (id + 1) * power;
        power *= BASE;
        inv[t + 1] = inv[t] * base_inv;
        if (pw) pw[t + 1] = power;
    }
}

int hotwords_get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (view->itemsize != itemsize || view->len % itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: items of %zd bytes expected", name, itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* The first i with a[i] >= q (size when none) in a sorted array of hash values, spread evenly (they
 * are splitmix64 outputs): a few interpolation steps, each guessing from the values at the ends of the
 * range left where q lies (about log log n of them, where a binary search of 5.6M signatures reads
 * 23 places, most of them cache misses), then binary search. Right for any sorted array; an uneven
 * one (an edited file) costs time only: at most INTERPOLATIONS guesses. */
#define INTERPOLATIONS 8
#define LOWER_BOUND(name, type)                                                                                    \
    static Py_ssize_t name(const type *a, Py_ssize_t size, type q) {                                               \
        Py_ssize_t lo = 0, hi = size; /* the answer is in [lo, hi] */                                              \
        for (int step = 0; step < INTERPOLATIONS && hi - lo > 8; step++) {                                         \
            const type first = a[lo], last = a[hi - 1];                                                            \
            if (q <= first) return lo;                                                                             \
            if (q > last) return hi;                                                                               \
            Py_ssize_t g = lo + (Py_ssize_t)((double)(q - first) / (double)(last - first) * (double)(hi - 1 - lo)); \
            g = g <= lo ? lo + 1 : g > hi - 1 ? hi - 1 : g;                                                        \
            if (a[g] < q) lo = g + 1; else hi = g;                                                                 \
        }                                                                                                          \
        while (lo < hi) {                                                                                          \
            const Py_ssize_t mid = lo + (hi - lo) / 2;                                                             \
            if (a[mid] < q) lo = mid + 1; else hi = mid;                                                           \
        }                                                                                                          \
        return lo;                                                                                                 \
    }
LOWER_BOUND(lower_bound32, uint32_t)
LOWER_BOUND(lower_bound64, uint64_t)

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

/* find_exact(code: str, new_from: int, lengths: int32[], signatures: uint64[] sorted, key_ids: int32[],
 *      bitmap: uint64[2^24 / 64], key_starts: int64[keys + 1], key_phonemes: uint16[])
 * -> list of (key id, x, length): the keys heard at x, for spans ending past new_from */
static PyObject *find_exact(PyObject *self, PyObject *args) {
    PyObject *code, *lengths_obj, *signatures_obj, *key_ids_obj, *bitmap_obj, *starts_obj, *phonemes_obj, *out = NULL;
    Py_ssize_t new_from;
    Py_buffer lengths, signatures, key_ids, bitmap, starts, phonemes;
    uint64_t *h = NULL, *inv = NULL;
    if (!PyArg_ParseTuple(args, "UnOOOOOO", &code, &new_from, &lengths_obj, &signatures_obj, &key_ids_obj, &bitmap_obj,
                          &starts_obj, &phonemes_obj))
        return NULL;
    if (hotwords_get_buffer(lengths_obj, &lengths, 4, "lengths") < 0) return NULL;
    if (hotwords_get_buffer(signatures_obj, &signatures, 8, "signatures") < 0) goto release_lengths;
    if (hotwords_get_buffer(key_ids_obj, &key_ids, 4, "key_ids") < 0) goto release_signatures;
    if (hotwords_get_buffer(bitmap_obj, &bitmap, 8, "bitmap") < 0) goto release_key_ids;
    if (hotwords_get_buffer(starts_obj, &starts, 8, "key_starts") < 0) goto release_bitmap;
    if (hotwords_get_buffer(phonemes_obj, &phonemes, 2, "key_phonemes") < 0) goto release_starts;
    const Py_ssize_t count = signatures.len / 8, n = PyUnicode_GET_LENGTH(code), num_keys = starts.len / 8 - 1;
    if (key_ids.len / 4 != count || bitmap.len * 8 != ((Py_ssize_t)1 << BITMAP_BITS) || num_keys < 0) {
        PyErr_SetString(PyExc_ValueError, "signatures, key ids and bitmap do not fit together");
        goto release_all;
    }
    h = malloc((n + 1) * sizeof *h);
    inv = malloc((n + 1) * sizeof *inv);
    out = PyList_New(0);
    if (!h || !inv || !out) {
        Py_CLEAR(out);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto release_all;
    }
    const int kind = PyUnicode_KIND(code);
    const void *data = PyUnicode_DATA(code);
    hash_prefixes(kind, data, n, h, inv, NULL);
    const int32_t *lens = lengths.buf, *keys = key_ids.buf;
    const uint64_t *sigs = signatures.buf, *bits = bitmap.buf;
    const int64_t *key_starts = starts.buf;
    const uint16_t *key_phonemes = phonemes.buf;
    for (Py_ssize_t i = 0; i < lengths.len / 4; i++) {
        const Py_ssize_t L = lens[i];
        if (L < 1 || L > n) continue;
        const uint64_t tag = ((uint64_t)L << 8) * TAG;
        for (Py_ssize_t x = new_from - L + 1 > 0 ? new_from - L + 1 : 0; x + L <= n; x++) {
            const uint64_t q = mix(tag + (h[x + L] - h[x]) * inv[x] * SLOTS[0]);
            if (!bit_set(bits, q, BITMAP_BITS)) continue; /* most positions stop here */
            for (Py_ssize_t lo = lower_bound64(sigs, count, q); lo < count && sigs[lo] == q; lo++) {
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


/* ---- tolerant ---- */

#define MAX_KEEP 4 /* intact parts per probe: signatures.PARTS - errors is 1, 2 or 3 */

/* The probe table's columns (signatures.SignatureIndex._probe_table), then per slot t < keep its
 * offset from x, its length and its kind (an index into `kinds`), then the first missing part's
 * extents: `extents` starts relative to x, then as many lengths (-1: none). */
enum { COL_TAG, COL_FIRST_START, COL_SPARE, COL_LAST, COL_KEY_END, COL_SPAN_END, COL_EXTENTS, COL_SLOTS };

/* A key found where a probe says it lies; pending ones travel to Python and back as these bytes. */
typedef struct { int32_t key, origin, end0, spare, flags; } Hit; /* flags: 1 edits before, 2 after */
typedef struct { int32_t a, b, key, errors, distance; } Found; /* a key heard in window [a, b) */


typedef struct { void *data; Py_ssize_t size, capacity, item; } Vec;

static void *vec_push(Vec *v) {
    if (v->size == v->capacity) {
        Py_ssize_t capacity = v->capacity ? 2 * v->capacity : 256;
        void *data = realloc(v->data, capacity * v->item);
        if (!data) return NULL;
        v->data = data, v->capacity = capacity;
    }
    return (char *)v->data + v->item * v->size++;
}

/* How many of a sorted array's values from `left` on equal q, counted up to limit + 1 (more is
 * "popular": its exact count is not needed). */
static Py_ssize_t run32(const uint32_t *a, Py_ssize_t size, Py_ssize_t left, uint32_t q, Py_ssize_t limit) {
    Py_ssize_t i = left;
    while (i < size && i - left <= limit && a[i] == q) i++;
    return i - left;
}

static int contains64(const uint64_t *a, Py_ssize_t size, uint64_t q) {
    const Py_ssize_t i = lower_bound64(a, size, q);
    return i < size && a[i] == q;
}

/* out[i] = the edit distance of s[0:i] and t, or cutoff + 1 when it is more, for every i <= ls: one
 * dynamic programme for every window that starts where s does (the band |i - j| <= cutoff only,
 * stopped when a whole row exceeds the cutoff: every later row does too). */
static void prefix_distances(const uint32_t *s, int ls, const uint32_t *t, int lt, int cutoff, int *prev, int *cur,
                             int *out) {
    const int big = cutoff + 1;
    for (int j = 0; j <= lt; j++) prev[j] = j < big ? j : big;
    out[0] = prev[lt];
    int i = 1;
    for (; i <= ls; i++) {
        const int lo = i - cutoff > 1 ? i - cutoff : 1, hi = i + cutoff < lt ? i + cutoff : lt;
        cur[lo - 1] = lo == 1 && i < big ? i : big;
        int best = cur[lo - 1];
        for (int j = lo; j <= hi; j++) {
            int v = prev[j - 1] + (s[i - 1] != t[j - 1]);
            if (prev[j] + 1 < v) v = prev[j] + 1;
            if (cur[j - 1] + 1 < v) v = cur[j - 1] + 1;
            cur[j] = v < big ? v : big;
            if (cur[j] < best) best = cur[j];
        }
        if (hi < lt) cur[hi + 1] = big;
        out[i] = hi == lt ? cur[lt] : big;
        if (best >= big) break;
        int *swap = prev;
        prev = cur, cur = swap;
    }
    for (i++; i <= ls; i++) out[i] = big;
}

static int found_order(const void *p, const void *q) { /* by (a, b, key): earliest first */
    const Found *x = p, *y = q;
    CMP(x->a, y->a);
    CMP(x->b, y->b);
    CMP(x->key, y->key);
    return 0;
}

static int closer(const Found *x, const Found *y) { /* fewer errors, then closer with tones, then earlier */
    if (x->errors != y->errors) return x->errors < y->errors;
    if (x->distance != y->distance) return x->distance < y->distance;
    return found_order(x, y) < 0;
}

/* The slot of key k in an open-addressing table of mask + 1 slots holding keys + 1 (0 marks an empty
 * slot): where k is, or the empty slot where it would go. */
static Py_ssize_t key_slot(const uint64_t *slots, Py_ssize_t mask, int32_t k) {
    Py_ssize_t i = (Py_ssize_t)(mix((uint64_t)(uint32_t)k) & (uint64_t)mask);
    while (slots[i] && slots[i] != (uint64_t)(uint32_t)k + 1) i = (i + 1) & mask;
    return i;
}

/* Adds v (never 0: 0 marks an empty slot) to an open-addressing set of mask + 1 slots; 1 if it is new. */
static int set_add(uint64_t *slots, Py_ssize_t mask, uint64_t v) {
    Py_ssize_t i = (Py_ssize_t)(mix(v) & (uint64_t)mask);
    while (slots[i]) {
        if (slots[i] == v) return 0;
        i = (i + 1) & mask;
    }
    slots[i] = v;
    return 1;
}


/* find_tolerant(code, new_from, pending, best, segment, errors, common, keep, width, probes int64[rows * width],
 *     kinds int64[], signatures uint32[] sorted, key_ids int32[], pieces uint64[] sorted,
 *     piece_bits uint64[2^16 / 64], sub_signatures uint32[] sorted, sub_key_ids int32[],
 *     key_starts int64[keys + 1], key_phonemes uint16[], toneless uint32[])
 * -> (best, pending): the keys of this index within `errors` edits of heard windows [a, b), for probes
 * whose span ends past new_from and for the hits `pending` from the last call (phonemes up to new_from
 * were verified then), merged into `best`, the last call's: each key's closest window so far, as Row
 * records of this segment (errors: tones forgiven; distance: with tones), in the order the keys were
 * first found (a call's new keys by (a, b, key)); a key's window is replaced only by a strictly closer
 * one (fewer errors, or as few and a smaller distance), so ties go to the earlier. Both bytes go back
 * in with the next call of the same utterance. */
#define MAX_KEY_PHONEMES 255 /* signatures.MAX_KEY */

static PyObject *find_tolerant(PyObject *self, PyObject *args) {
    PyObject *code, *arrays[11], *out = NULL;
    Py_buffer pending, best;
    Py_ssize_t new_from, segment, keep, width;
    int errors, common;
    if (!PyArg_ParseTuple(args, "Uny*y*niinnOOOOOOOOOOO", &code, &new_from, &pending, &best, &segment, &errors, &common,
                          &keep, &width, &arrays[0], &arrays[1], &arrays[2], &arrays[3], &arrays[4], &arrays[5], &arrays[6],
                          &arrays[7], &arrays[8], &arrays[9], &arrays[10]))
        return NULL;
    static const Py_ssize_t sizes[11] = {8, 8, 4, 4, 8, 8, 4, 4, 8, 2, 4};
    static const char *names[11] = {"probes", "kinds", "signatures", "key_ids", "pieces", "piece_bits", "sub_signatures",
                                    "sub_key_ids", "key_starts", "key_phonemes", "toneless"};
    Py_buffer views[11];
    int got = 0;
    Vec hits = {NULL, 0, 0, sizeof(Hit)}, left_over = {NULL, 0, 0, sizeof(Hit)};
    uint64_t *h = NULL, *inv = NULL, *pw = NULL;
    uint32_t *heard = NULL;
    uint8_t *present = NULL;
    Found *found = NULL;
    Row *merged = NULL;
    uint64_t *seen = NULL, *key_slots = NULL; /* the windows verified; the keys matched (+ 1: 0 is empty) */
    Py_ssize_t *key_index = NULL; /* where each matched key's best is in found */
    for (; got < 11; got++)
        if (hotwords_get_buffer(arrays[got], &views[got], sizes[got], names[got]) < 0) goto done;
    const int64_t *probes = views[0].buf, *kinds = views[1].buf, *key_starts = views[8].buf;
    const uint32_t *sigs = views[2].buf, *sub_sigs = views[6].buf, *lut = views[10].buf;
    const int32_t *key_ids = views[3].buf, *sub_key_ids = views[7].buf;
    const uint64_t *pieces = views[4].buf, *piece_bits = views[5].buf;
    const uint16_t *key_phonemes = views[9].buf;
    const Py_ssize_t num_kinds = views[1].len / 8, num_sigs = views[2].len / 4, num_pieces = views[4].len / 8,
                     num_sub = views[6].len / 4, num_keys = views[8].len / 8 - 1, num_phonemes = views[9].len / 2,
                     lut_size = views[10].len / 4, n = PyUnicode_GET_LENGTH(code);
    const Py_ssize_t extents_max = (width - COL_SLOTS - 3 * keep) / 2;
    if (keep < 1 || keep > MAX_KEEP || errors < 1 || errors > 2 || extents_max < 0 || views[0].len % (8 * width) ||
        views[3].len / 4 != num_sigs || views[7].len / 4 != num_sub || num_keys < 0 || pending.len % sizeof(Hit) ||
        best.len % sizeof(Row) ||
        views[5].len * 8 != (1 << PIECE_BITS)) {
        PyErr_SetString(PyExc_ValueError, "tolerant index arrays do not fit together");
        goto done;
    }
    if (n >= 1 << 16) { /* a window's ends are 16-bit in the set of windows verified */
        PyErr_SetString(PyExc_ValueError, "an utterance of 65,536 phonemes or more (over an hour of speech)");
        goto done;
    }
    const Py_ssize_t num_rows = views[0].len / 8 / width;
    for (Py_ssize_t r = 0; r < num_rows; r++) { /* every slot inside its probe's span, every kind known */
        const int64_t *p = probes + r * width;
        int ok = p[COL_EXTENTS] >= 0 && p[COL_EXTENTS] <= extents_max && p[COL_SPAN_END] > 0;
        for (Py_ssize_t t = 0; t < keep && ok; t++) {
            const int64_t offset = p[COL_SLOTS + t], length = p[COL_SLOTS + keep + t], k = p[COL_SLOTS + 2 * keep + t];
            ok = offset >= 0 && length >= 1 && offset + length <= p[COL_SPAN_END] && k >= 0 && k < num_kinds &&
                 kinds[k] % 256 == length;
        }
        if (!ok) {
            PyErr_SetString(PyExc_ValueError, "tolerant probe table out of range");
            goto done;
        }
    }
    h = malloc((n + 1) * sizeof *h);
    inv = malloc((n + 1) * sizeof *inv);
    pw = malloc((n + 1) * sizeof *pw);
    heard = malloc((n + 1) * sizeof *heard);
    present = calloc((size_t)(num_kinds ? num_kinds : 1) * (n + 1), 1);
    if (!h || !inv || !pw || !heard || !present) { PyErr_NoMemory(); goto done; }
    const int kind = PyUnicode_KIND(code);
    const void *data = PyUnicode_DATA(code);
    hash_prefixes(kind, data, n, h, inv, pw);
    for (Py_ssize_t t = 0; t < n; t++) {
        const uint32_t id = (uint32_t)(PyUnicode_READ(kind, data, t) - CODE_POINT_BASE);
        heard[t] = id < lut_size ? lut[id] : id; /* tones forgiven (Lexicon.toneless_ids) */
    }
#define SPAN(a, b) ((h[b] - h[a]) * inv[a])
    /* present[kind][x]: phonemes at x, as that kind of part (place * 256 + length), are some key's part */
    for (Py_ssize_t k = 0; k < num_kinds; k++) {
        const Py_ssize_t len = kinds[k] % 256;
        for (Py_ssize_t x = 0; x + len <= n; x++) {
            const uint64_t piece = mix((uint64_t)kinds[k] * TAG + SPAN(x, x + len) * SLOTS[0]);
            present[k * (n + 1) + x] =
                !num_pieces || (bit_set(piece_bits, piece, PIECE_BITS) && contains64(pieces, num_pieces, piece));
        }
    }
    for (Py_ssize_t r = 0; r < num_rows; r++) {
        const int64_t *p = probes + r * width;
        const int64_t *offsets = p + COL_SLOTS, *lengths = offsets + keep, *slot_kind = lengths + keep;
        const int64_t *extent_start = slot_kind + keep, *extent_length = extent_start + extents_max;
        const Py_ssize_t span = p[COL_SPAN_END];
        for (Py_ssize_t x = new_from - span + 1 > 0 ? new_from - span + 1 : 0; x + span <= n; x++) {
            int ok = 1;
            for (Py_ssize_t t = 0; t < keep && ok; t++) ok = present[slot_kind[t] * (n + 1) + x + offsets[t]];
            if (!ok) continue;
            uint64_t total = (uint64_t)p[COL_TAG] * TAG;
            for (Py_ssize_t t = 0; t < keep; t++) total += SPAN(x + offsets[t], x + offsets[t] + lengths[t]) * SLOTS[t];
            const uint64_t q = mix(total);
            const uint32_t f = (uint32_t)(q >> 32); /* signatures.fingerprint */
            const Py_ssize_t left = lower_bound32(sigs, num_sigs, f), count = run32(sigs, num_sigs, left, f, common);
            Hit found = {0, (int32_t)(x - p[COL_FIRST_START]), (int32_t)(x + p[COL_KEY_END]), (int32_t)p[COL_SPARE],
                         (p[COL_FIRST_START] > 0) | (p[COL_LAST] ? 0 : 2)};
            if (count > 0 && count <= common) {
                for (Py_ssize_t i = left; i < left + count; i++) {
                    Hit *hit = vec_push(&hits);
                    if (!hit) { PyErr_NoMemory(); goto done; }
                    *hit = found, hit->key = key_ids[i];
                }
                continue;
            }
            if (count <= common || !num_sub) continue;
            /* popular: its first missing part as heard, at each extent, whole and less each phoneme */
            for (int64_t e = 0; e < p[COL_EXTENTS]; e++) {
                const Py_ssize_t a = x + extent_start[e], ell = extent_length[e];
                if (ell < 0 || a < 0 || a + ell > n) continue;
                for (Py_ssize_t j = -1; j < ell; j++) {
                    const Py_ssize_t cut = j < 0 ? a : a + j, after = j < 0 ? a : a + j + 1;
                    const uint64_t v = SPAN(a, cut) + SPAN(after, a + ell) * pw[cut - a]; /* joined_hash */
                    const uint64_t sub = mix((uint64_t)(ell - (j >= 0)) * TAG + q * SLOTS[0] + v * SLOTS[1]);
                    const uint32_t sub_f = (uint32_t)(sub >> 32);
                    const Py_ssize_t sub_left = lower_bound32(sub_sigs, num_sub, sub_f),
                                     sub_count = run32(sub_sigs, num_sub, sub_left, sub_f, common);
                    if (sub_count <= 0 || sub_count > common) continue;
                    for (Py_ssize_t i = sub_left; i < sub_left + sub_count; i++) {
                        Hit *hit = vec_push(&hits);
                        if (!hit) { PyErr_NoMemory(); goto done; }
                        *hit = found, hit->key = sub_key_ids[i];
                    }
                }
            }
        }
    }
#undef SPAN
    /* The windows of the pending hits (those ending past new_from: the rest were verified) and of the
     * new ones, each verified once (many probes find the same key at the same place): start = origin -
     * before, end = end0 + after, for the edits before the first chosen part and after the last that the
     * hit's probe leaves room for (at most 2 in all: the most any index tolerates). A hit with a window
     * ending past n is pending: the next phonemes tell. */
    const Hit *old = pending.buf;
    const Py_ssize_t num_old = pending.len / sizeof(Hit), total = num_old + hits.size;
    Py_ssize_t capacity = 64, key_capacity = 64;
    while (capacity < 32 * total) capacity *= 2; /* at most 13 windows a hit: the set stays under 41% full */
    while (key_capacity < 2 * total) key_capacity *= 2;
    seen = calloc(capacity, sizeof *seen);
    key_slots = calloc(key_capacity, sizeof *key_slots);
    found = malloc((total ? total : 1) * sizeof *found);
    key_index = malloc(key_capacity * sizeof *key_index);
    if (!seen || !key_slots || !key_index || !found) { PyErr_NoMemory(); goto done; }
    uint32_t key[MAX_KEY_PHONEMES], toned_key[MAX_KEY_PHONEMES], toned[MAX_KEY_PHONEMES + 2];
    int prev[MAX_KEY_PHONEMES + 1], cur[MAX_KEY_PHONEMES + 1], distance[MAX_KEY_PHONEMES + 3],
        toned_distance[MAX_KEY_PHONEMES + 3];
    Py_ssize_t num_found = 0;
#define HIT(i) ((i) < num_old ? &old[i] : &((Hit *)hits.data)[(i) - num_old])
    for (Py_ssize_t i = 0; i < total; i++) {
        const Hit *hit = HIT(i);
        /* the keys a few hits ahead asked for now (their offsets, then their phonemes): out of cache, one
         * read waiting for the other was ~10% of a call with the caches emptied */
        if (i + 16 < total && HIT(i + 16)->key >= 0 && HIT(i + 16)->key < num_keys)
            __builtin_prefetch(&key_starts[HIT(i + 16)->key]);
        if (i + 8 < total && HIT(i + 8)->key >= 0 && HIT(i + 8)->key < num_keys) {
            const int64_t ahead = key_starts[HIT(i + 8)->key];
            if (ahead >= 0 && ahead < num_phonemes) __builtin_prefetch(&key_phonemes[ahead]);
        }
        const Py_ssize_t verified_to = i < num_old ? new_from : 0;
        const int32_t k = hit->key;
        int lk = 0, beyond = 0;
        for (int before = -2; before <= 2; before++) {
            const Py_ssize_t a = (Py_ssize_t)hit->origin - before;
            int ends[5], num_ends = 0; /* the new windows [a, b) of this hit */
            for (int after = -2; after <= 2; after++) {
                if (abs(before) + abs(after) > hit->spare) continue;
                if ((before && !(hit->flags & 1)) || (after && !(hit->flags & 2))) continue;
                const Py_ssize_t b = (Py_ssize_t)hit->end0 + after;
                if (a < 0 || b <= a) continue;
                if (b > n) { beyond = 1; continue; }
                if (b <= verified_to || !set_add(seen, capacity - 1, ((uint64_t)(uint32_t)k << 32) | (uint64_t)a << 16 | (uint64_t)b))
                    continue;
                ends[num_ends++] = (int)b;
            }
            if (!num_ends) continue;
            if (!lk) { /* the key, read once a hit (when it has a window to verify) */
                if (k < 0 || k >= num_keys) break;
                const int64_t ka = key_starts[k], kb = key_starts[k + 1];
                if (ka < 0 || kb > num_phonemes || kb - ka < 1 || kb - ka > MAX_KEY_PHONEMES) break;
                lk = (int)(kb - ka);
                for (int t = 0; t < lk; t++) {
                    toned_key[t] = key_phonemes[ka + t];
                    key[t] = toned_key[t] < lut_size ? lut[toned_key[t]] : toned_key[t];
                }
            }
            int longest = 0;
            for (int e = 0; e < num_ends; e++) longest = ends[e] - a > longest ? (int)(ends[e] - a) : longest;
            prefix_distances(heard + a, longest, key, lk, errors, prev, cur, distance);
            for (int e = 0; e < num_ends; e++) {
                const int lw = ends[e] - (int)a, d = distance[lw];
                if (d > errors) continue;
                /* with tones: ranks matches of equal errors. Banded first (most differ by a tone or two from
                 * their toneless distance), the whole programme when the band falls short: exact either way */
                for (int t = 0; t < lw; t++) toned[t] = (uint32_t)(PyUnicode_READ(kind, data, a + t) - CODE_POINT_BASE);
                prefix_distances(toned, lw, toned_key, lk, errors + 2, prev, cur, toned_distance);
                if (toned_distance[lw] > errors + 2) prefix_distances(toned, lw, toned_key, lk, lw + lk, prev, cur, toned_distance);
                const Found match = {(int32_t)a, ends[e], k, d, toned_distance[lw]};
                const Py_ssize_t slot = key_slot(key_slots, key_capacity - 1, k);
                if (!key_slots[slot]) { /* the key's first match: found[index - 1] */
                    key_slots[slot] = (uint64_t)(uint32_t)k + 1;
                    key_index[slot] = num_found;
                    found[num_found++] = match;
                } else if (closer(&match, &found[key_index[slot]])) {
                    found[key_index[slot]] = match;
                }
            }
        }
        if (beyond) {
            Hit *keep_hit = vec_push(&left_over);
            if (!keep_hit) { PyErr_NoMemory(); goto done; }
            *keep_hit = *hit;
        }
    }
#undef HIT
    if (num_found) qsort(found, num_found, sizeof *found, found_order);
    /* merged into the best so far: the keys table is rebuilt over best's keys, then this call's */
    const Row *before = best.buf;
    const Py_ssize_t num_before = best.len / sizeof(Row);
    Py_ssize_t merge_capacity = 64, num_merged = 0;
    while (merge_capacity < 2 * (num_before + num_found)) merge_capacity *= 2;
    free(key_slots), free(key_index);
    key_slots = calloc(merge_capacity, sizeof *key_slots);
    key_index = malloc(merge_capacity * sizeof *key_index);
    merged = malloc((num_before + num_found + 1) * sizeof *merged);
    if (!key_slots || !key_index || !merged) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < num_before + num_found; i++) {
        Row row;
        if (i < num_before) {
            row = before[i];
        } else {
            const Found *f = &found[i - num_before];
            row = (Row){f->a, f->b, f->key, SOURCE_TOLERANT, f->errors, segment, f->distance};
        }
        if (row.key < 0 || row.key >= num_keys || row.source != SOURCE_TOLERANT || row.segment != segment) {
            PyErr_SetString(PyExc_ValueError, "tolerant best matches are not this segment's keys");
            goto done;
        }
        const Py_ssize_t slot = key_slot(key_slots, merge_capacity - 1, (int32_t)row.key);
        if (!key_slots[slot]) {
            key_slots[slot] = (uint64_t)(uint32_t)row.key + 1;
            key_index[slot] = num_merged;
            merged[num_merged++] = row;
        } else {
            Row *m = &merged[key_index[slot]];
            if (row.errors < m->errors || (row.errors == m->errors && row.distance < m->distance)) *m = row;
        }
    }
    out = Py_BuildValue("(y#y#)", num_merged ? (const char *)merged : "", num_merged * (Py_ssize_t)sizeof(Row),
                        left_over.size ? (const char *)left_over.data : "", /* NULL: None */
                        left_over.size * (Py_ssize_t)sizeof(Hit));
done:
    free(h), free(inv), free(pw), free(heard), free(present);
    free(hits.data), free(left_over.data), free(found), free(merged), free(seen), free(key_slots),
        free(key_index);
    for (int i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    PyBuffer_Release(&pending);
    PyBuffer_Release(&best);
    return out;
}

static PyMethodDef methods[] = {
    {"find_exact", find_exact, METH_VARARGS,
     "find_exact(code, new_from, lengths, signatures, key_ids, bitmap, key_starts, key_phonemes) -> [(key id, x, length)]"},
    {"find_tolerant", find_tolerant, METH_VARARGS,
     "find_tolerant(code, new_from, pending, best, errors, common, keep, width, probes, kinds, signatures, key_ids, "
     "pieces, piece_bits, sub_signatures, sub_key_ids, key_starts, key_phonemes, toneless) -> (best, pending)"},
    {"judge", hotwords_judge, METH_VARARGS, "judge(table, min_syllables, segments) -> (verdicts, weights)"},
    {"settle", hotwords_settle, METH_VARARGS, "settle(table, verdicts, weights) -> (verdicts, kept indices best first)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_query", "The hotword indexes' queries (see _query.c) and keep rules (_keep.c).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__query(void) { return PyModule_Create(&module); }
