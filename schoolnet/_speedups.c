/*
 * schoolnet._speedups: the collector's per-row loops in C.
 *
 * The collector checks, hashes and formats every row of every v2 group it receives (a
 * 48-port switch message is ~50 rows of ~16 values). In Python, even written as C-level
 * map chains, that was two thirds of its CPU per message (bench/collector_cpu.py).
 * These functions do the same work in one pass each, with the same results as the
 * pure-Python code they accelerate, which stays the reference and the fallback:
 *
 *   uniform_types  <->  schoolnet/wire_groups.py  uniform_types_py (the row checks)
 *   format_rows    <->  collector/lineproto.py    GroupEncoder.encode (the fast path)
 *   row_keys       <->  collector/validate.py     _group_keys_py (series budget hashes)
 *
 * uniform_types and format_rows only ever answer "yes, here is the result" or "not
 * sure" (None): every case they do not handle (a null, a value that needs escaping, a
 * type mix, an integer beyond 64 bits) goes to the Python code, which finds the exact
 * answer or the exact error. tests/unit/test_speedups.py compares both sides on random
 * rows.
 *
 * Built by setuptools as an optional extension (pyproject.toml): where it cannot be
 * compiled, the Python code runs alone, slower and otherwise the same.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------- uniform_types */

/*
 * uniform_types(rows, nt, nf, max_tag_len, max_str_len, check_floats, check_ints)
 *
 * The tuple of value types of the rows when every row is a list of nt + nf values
 * with exactly these types, the first nt (tag columns) non-empty str of at most
 * max_tag_len characters, the others (fields) bool, int, float or str (at most
 * max_str_len characters), no null; floats finite (if check_floats) and ints within
 * 64 bits (if check_ints). Else None.
 */
static PyObject *
uniform_types(PyObject *self, PyObject *args)
{
    PyObject *rows;
    Py_ssize_t nt, nf, max_tag, max_str;
    int check_floats, check_ints;
    if (!PyArg_ParseTuple(args, "Onnnnpp", &rows, &nt, &nf, &max_tag, &max_str,
                          &check_floats, &check_ints))
        return NULL;
    if (!PyList_Check(rows) || PyList_GET_SIZE(rows) == 0 || nt < 0 || nf <= 0)
        Py_RETURN_NONE;
    Py_ssize_t ncols = nt + nf;
    PyObject *first = PyList_GET_ITEM(rows, 0);
    if (!PyList_CheckExact(first) || PyList_GET_SIZE(first) != ncols)
        Py_RETURN_NONE;
    PyTypeObject **types = PyMem_Malloc(sizeof(PyTypeObject *) * (size_t)ncols);
    if (types == NULL)
        return PyErr_NoMemory();
    PyObject *result = NULL;
    for (Py_ssize_t c = 0; c < ncols; c++) {
        PyTypeObject *t = Py_TYPE(PyList_GET_ITEM(first, c));
        int ok = c < nt ? t == &PyUnicode_Type
                        : (t == &PyUnicode_Type || t == &PyLong_Type || t == &PyFloat_Type
                           || t == &PyBool_Type);
        if (!ok)
            goto none;
        types[c] = t;
    }
    Py_ssize_t n = PyList_GET_SIZE(rows);
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *row = PyList_GET_ITEM(rows, j);
        if (!PyList_CheckExact(row) || PyList_GET_SIZE(row) != ncols)
            goto none;
        for (Py_ssize_t c = 0; c < ncols; c++) {
            PyObject *v = PyList_GET_ITEM(row, c);
            PyTypeObject *t = Py_TYPE(v);
            if (t != types[c])
                goto none;
            if (t == &PyUnicode_Type) {
                Py_ssize_t len = PyUnicode_GetLength(v);
                if (len < 0) {
                    PyErr_Clear();
                    goto none;
                }
                if (c < nt ? (len == 0 || len > max_tag) : len > max_str)
                    goto none;
            } else if (t == &PyFloat_Type) {
                if (check_floats && !isfinite(PyFloat_AS_DOUBLE(v)))
                    goto none;
            } else if (t == &PyLong_Type && check_ints) {
                int overflow = 0;
                long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
                if (overflow || (x == -1 && PyErr_Occurred())) {
                    PyErr_Clear();
                    goto none;
                }
            }
        }
    }
    result = PyTuple_New(ncols);
    if (result != NULL) {
        for (Py_ssize_t c = 0; c < ncols; c++) {
            Py_INCREF(types[c]);
            PyTuple_SET_ITEM(result, c, (PyObject *)types[c]);
        }
    }
    PyMem_Free(types);
    return result;
none:
    PyMem_Free(types);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- format_rows */

typedef struct {
    char *p;
    Py_ssize_t len, cap;
} Buf;

static int
buf_reserve(Buf *b, Py_ssize_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more)
        cap *= 2;
    char *p = PyMem_Realloc(b->p, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static int
buf_put(Buf *b, const char *s, Py_ssize_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->p + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

/* Decimal digits of an unsigned 64-bit integer, written backwards from end; returns the start. */
static char *
utoa_back(unsigned long long u, char *end)
{
    do {
        *--end = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    return end;
}

static int
put_int(Buf *b, long long x)
{
    char tmp[24];
    char *end = tmp + sizeof tmp;
    unsigned long long u = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
    char *s = utoa_back(u, end);
    if (x < 0)
        *--s = '-';
    return buf_put(b, s, end - s);
}

/*
 * repr(d) for a finite double. The common case of metrics (an integral value, or one
 * with at most 3 decimals, below 2**43) is written directly; everything else by
 * CPython's own repr code. Why the shortcut is exactly repr: below 2**43 the spacing
 * of doubles (ulp) is under 10**-3, so at most one decimal with k <= 3 fractional
 * digits lies within half an ulp of d, and it can only be floor or ceil of d * 10**k;
 * n / 10**k computed in IEEE arithmetic is the correctly rounded value of that decimal,
 * the same double strtod would give, so "== d" means the decimal reads back as d. The
 * first k that works gives the fewest digits, which is the digit string repr picks
 * (shortest round-trip), in repr's fixed notation for this range.
 */
static const double POW10[4] = {1.0, 10.0, 100.0, 1000.0};

static int
put_float(Buf *b, double d)
{
    double a = fabs(d);
    if (a == 0.0)
        return signbit(d) ? buf_put(b, "-0.0", 4) : buf_put(b, "0.0", 3);
    if (a < 8796093022208.0) { /* 2**43 */
        for (int k = 0; k <= 3; k++) {
            double f = floor(a * POW10[k]);
            for (int up = 0; up <= 1; up++) {
                double n = f + up;
                if (n / POW10[k] != a)
                    continue;
                unsigned long long u = (unsigned long long)n;
                char tmp[40];
                char *const end = tmp + sizeof tmp;
                char *s = end;
                if (k == 0) {
                    *--s = '0';
                    *--s = '.';
                    s = utoa_back(u, s);
                } else {
                    unsigned long long scale = (unsigned long long)POW10[k];
                    unsigned long long frac = u % scale;
                    s = end;
                    for (int i = 0; i < k; i++) {
                        *--s = (char)('0' + frac % 10);
                        frac /= 10;
                    }
                    *--s = '.';
                    s = utoa_back(u / scale, s);
                }
                if (d < 0)
                    *--s = '-';
                return buf_put(b, s, end - s);
            }
        }
    }
    /* Exactly what repr(float) writes (Objects/floatobject.c float_repr). */
    char *s = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (s == NULL)
        return -1;
    int rc = buf_put(b, s, (Py_ssize_t)strlen(s));
    PyMem_Free(s);
    return rc;
}

/* Characters a tag value (or a string field value) must not hold unescaped. */
static int
has_any(const char *s, Py_ssize_t n, const char *bad)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x80 && strchr(bad, ch) != NULL && ch != 0)
            return 1;
    }
    return 0;
}

/* 1: written; 0: not this function's case (the caller answers None); -1: error. */
static int
put_value(Buf *b, PyObject *v, char kind)
{
    switch (kind) {
    case 't':
    case 's': {
        if (!PyUnicode_CheckExact(v))
            return 0;
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(v, &n);
        if (s == NULL) {  /* lone surrogates: not UTF-8, the Python path decides */
            PyErr_Clear();
            return 0;
        }
        if (kind == 't' ? (n == 0 || has_any(s, n, ",= \\\n\r\t")) : has_any(s, n, "\"\\\n\r\t"))
            return 0;
        return buf_put(b, s, n) < 0 ? -1 : 1;
    }
    case 'i': {
        if (!PyLong_CheckExact(v))
            return 0;
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || (x == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;
        }
        return put_int(b, x) < 0 ? -1 : 1;
    }
    case 'f': {
        if (!PyFloat_CheckExact(v))
            return 0;
        double d = PyFloat_AS_DOUBLE(v);
        if (!isfinite(d))
            return 0;
        return put_float(b, d) < 0 ? -1 : 1;
    }
    case 'b':
        if (v == Py_True)
            return buf_put(b, "true", 4) < 0 ? -1 : 1;
        if (v == Py_False)
            return buf_put(b, "false", 5) < 0 ? -1 : 1;
        return 0;
    default:
        PyErr_Format(PyExc_ValueError, "unknown value kind %c", kind);
        return -1;
    }
}

/*
 * format_rows(rows, cols, kinds, segments, suffix) -> list[str] | None
 *
 * One line per row: segments[0] value(row[cols[0]]) segments[1] ... segments[-1] suffix,
 * each value written as its kind says: 't' a tag value, 's' a string field (quotes are
 * in the segments), 'i' an integer, 'f' a float as repr() writes it, 'b' true/false.
 * segments and suffix are UTF-8 bytes. None if any value is not of its kind or needs
 * escaping (an empty tag value, a comma, a quote, ...): the Python encoder does those.
 */
static PyObject *
format_rows(PyObject *self, PyObject *args)
{
    PyObject *rows, *cols, *segments;
    const char *kinds, *suffix;
    Py_ssize_t nkinds, nsuffix;
    if (!PyArg_ParseTuple(args, "OO!y#O!y#", &rows, &PyTuple_Type, &cols, &kinds, &nkinds,
                          &PyTuple_Type, &segments, &suffix, &nsuffix))
        return NULL;
    Py_ssize_t ncols = PyTuple_GET_SIZE(cols);
    if (nkinds != ncols || PyTuple_GET_SIZE(segments) != ncols + 1) {
        PyErr_SetString(PyExc_ValueError, "cols, kinds and segments do not fit");
        return NULL;
    }
    Py_ssize_t *idx = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(ncols ? ncols : 1));
    if (idx == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t k = 0; k < ncols; k++) {
        idx[k] = PyLong_AsSsize_t(PyTuple_GET_ITEM(cols, k));
        if (idx[k] < 0) {
            PyMem_Free(idx);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "negative column index");
            return NULL;
        }
    }
    for (Py_ssize_t k = 0; k <= ncols; k++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(segments, k))) {
            PyMem_Free(idx);
            PyErr_SetString(PyExc_TypeError, "segments must be bytes");
            return NULL;
        }
    }
    PyObject *seq = PySequence_Fast(rows, "rows must be a sequence");
    if (seq == NULL) {
        PyMem_Free(idx);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyList_New(n);
    Buf b = {NULL, 0, 0};
    if (out == NULL)
        goto error;
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *row = PySequence_Fast_GET_ITEM(seq, j);
        if (!PyList_Check(row))
            goto none;
        Py_ssize_t width = PyList_GET_SIZE(row);
        b.len = 0;
        for (Py_ssize_t k = 0; k < ncols; k++) {
            PyObject *seg = PyTuple_GET_ITEM(segments, k);
            if (buf_put(&b, PyBytes_AS_STRING(seg), PyBytes_GET_SIZE(seg)) < 0)
                goto error;
            if (idx[k] >= width)
                goto none;
            int rc = put_value(&b, PyList_GET_ITEM(row, idx[k]), kinds[k]);
            if (rc < 0)
                goto error;
            if (rc == 0)
                goto none;
        }
        PyObject *tail = PyTuple_GET_ITEM(segments, ncols);
        if (buf_put(&b, PyBytes_AS_STRING(tail), PyBytes_GET_SIZE(tail)) < 0
            || buf_put(&b, suffix, nsuffix) < 0)
            goto error;
        PyObject *line = PyUnicode_DecodeUTF8(b.p, b.len, "strict");
        if (line == NULL)
            goto error;
        PyList_SET_ITEM(out, j, line);
    }
    PyMem_Free(b.p);
    PyMem_Free(idx);
    Py_DECREF(seq);
    return out;
none:
    PyMem_Free(b.p);
    PyMem_Free(idx);
    Py_DECREF(seq);
    Py_XDECREF(out);
    Py_RETURN_NONE;
error:
    PyMem_Free(b.p);
    PyMem_Free(idx);
    Py_DECREF(seq);
    Py_XDECREF(out);
    return NULL;
}

/* ---------------------------------------------------------------- row_keys */

/*
 * row_keys(rows, names, base) -> list[int]
 *
 * The series hash of each row (collector/validate.py _group_keys): base XOR, for each
 * tag column j with a value, hash((names[j], row[j])). The first len(names) values of
 * each row are the tag columns.
 */
static PyObject *
row_keys(PyObject *self, PyObject *args)
{
    PyObject *rows, *names;
    Py_ssize_t base;
    if (!PyArg_ParseTuple(args, "OO!n", &rows, &PyTuple_Type, &names, &base))
        return NULL;
    PyObject *seq = PySequence_Fast(rows, "rows must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), nt = PyTuple_GET_SIZE(names);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        goto error;
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *row = PySequence_Fast_GET_ITEM(seq, j);
        if (!PyList_Check(row) || PyList_GET_SIZE(row) < nt) {
            PyErr_SetString(PyExc_ValueError, "a row is shorter than its tag columns");
            goto error;
        }
        Py_hash_t key = (Py_hash_t)base;
        for (Py_ssize_t c = 0; c < nt; c++) {
            PyObject *v = PyList_GET_ITEM(row, c);
            if (v == Py_None)
                continue;
            PyObject *pair = PyTuple_Pack(2, PyTuple_GET_ITEM(names, c), v);
            if (pair == NULL)
                goto error;
            Py_hash_t h = PyObject_Hash(pair);
            Py_DECREF(pair);
            if (h == -1 && PyErr_Occurred())
                goto error;
            key ^= h;
        }
        PyObject *k = PyLong_FromSsize_t((Py_ssize_t)key);
        if (k == NULL)
            goto error;
        PyList_SET_ITEM(out, j, k);
    }
    Py_DECREF(seq);
    return out;
error:
    Py_DECREF(seq);
    Py_XDECREF(out);
    return NULL;
}

/* ---------------------------------------------------------------- module */

static PyMethodDef methods[] = {
    {"uniform_types", uniform_types, METH_VARARGS,
     "uniform_types(rows, nt, nf, max_tag_len, max_str_len, check_floats, check_ints)\n"
     "The value types of rows that pass the uniform-group checks, else None."},
    {"format_rows", format_rows, METH_VARARGS,
     "format_rows(rows, cols, kinds, segments, suffix) -> list[str] | None\n"
     "Line protocol lines of rows without characters to escape, else None."},
    {"row_keys", row_keys, METH_VARARGS,
     "row_keys(rows, names, base) -> list[int]\n"
     "The series hash of each row: base XOR hash((name, value)) per tag column."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "schoolnet._speedups",
    "The collector's per-row check and format loops in C (see _speedups.c).", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
