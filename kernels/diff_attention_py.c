/* edgecc._native: the Python binding of the fused diff-attention kernel (Python C API, buffer protocol; no NumPy
 * headers at build time). Callers validate shapes; this layer checks buffer format, contiguity and length again and
 * releases the GIL while the kernel runs. The public Python API is edgecc.fusion.
 *
 *     from edgecc import _native
 *     _native.diff_attention(a, b, out, B, N, C, heads, topk, nthreads, simd)   # a, b, out: float32 C-contiguous
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "diff_attention.h"

static int float32_format(const char *fmt) {
    if (fmt == NULL) return 1; /* PyBUF_FORMAT not honoured: unsigned bytes; the length check still applies */
    if (fmt[0] == '@' || fmt[0] == '=' || fmt[0] == '<') {
#if PY_BIG_ENDIAN
        if (fmt[0] == '<') return 0;
#endif
        ++fmt;
    }
    return strcmp(fmt, "f") == 0;
}

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t count, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous%s float32 buffer", name,
                     writable ? " writable" : "");
        return -1;
    }
    if (view->itemsize != 4 || !float32_format(view->format)) {
        PyErr_Format(PyExc_ValueError, "%s must hold float32 (buffer format %s)", name,
                     view->format ? view->format : "B");
        PyBuffer_Release(view);
        return -1;
    }
    if (view->len != count * 4) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd float32 values, expected %zd", name, view->len / 4, count);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *py_diff_attention(PyObject *self, PyObject *args) {
    PyObject *oa, *ob, *oout;
    long long batch, tokens, channels, heads, topk;
    int nthreads, simd;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOLLLLLii:diff_attention", &oa, &ob, &oout, &batch, &tokens, &channels, &heads,
                          &topk, &nthreads, &simd))
        return NULL;
    if (batch < 1 || tokens < 1 || channels < 1 || heads < 1 || channels % heads != 0) {
        PyErr_SetString(PyExc_ValueError, "diff_attention: sizes must be positive and channels % heads == 0");
        return NULL;
    }
    if (tokens > PY_SSIZE_T_MAX / channels || batch > PY_SSIZE_T_MAX / 4 / (tokens * channels)) {
        PyErr_SetString(PyExc_ValueError, "diff_attention: tensor too large");
        return NULL;
    }
    Py_ssize_t count = (Py_ssize_t)(batch * tokens * channels);
    Py_buffer va, vb, vo;
    if (get_buffer(oa, &va, 0, count, "a") != 0) return NULL;
    if (get_buffer(ob, &vb, 0, count, "b") != 0) {
        PyBuffer_Release(&va);
        return NULL;
    }
    if (get_buffer(oout, &vo, 1, count, "out") != 0) {
        PyBuffer_Release(&va);
        PyBuffer_Release(&vb);
        return NULL;
    }
    edgecc_status st;
    Py_BEGIN_ALLOW_THREADS
    st = edgecc_diff_attention_f32_simd((const float *)va.buf, (const float *)vb.buf, (float *)vo.buf, batch, tokens,
                                        channels, heads, topk, nthreads, (edgecc_simd)simd);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&va);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&vo);
    if (st == EDGECC_ERR_OUT_OF_MEMORY) return PyErr_NoMemory();
    if (st != EDGECC_OK) {
        PyErr_Format(PyExc_ValueError, "diff_attention: %s (simd path %s)", edgecc_status_string(st),
                     edgecc_simd_name((edgecc_simd)simd));
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *py_workspace_bytes(PyObject *self, PyObject *args) {
    long long batch, tokens, channels, heads, topk;
    int nthreads;
    (void)self;
    if (!PyArg_ParseTuple(args, "LLLLLi:workspace_bytes", &batch, &tokens, &channels, &heads, &topk, &nthreads))
        return NULL;
    return PyLong_FromSize_t(edgecc_diff_attention_workspace_bytes(batch, tokens, channels, heads, topk, nthreads));
}

static PyObject *py_threads(PyObject *self, PyObject *args) {
    long long batch, tokens, channels, heads, topk;
    int nthreads;
    (void)self;
    if (!PyArg_ParseTuple(args, "iLLLLL:threads", &nthreads, &batch, &tokens, &channels, &heads, &topk)) return NULL;
    return PyLong_FromLong(edgecc_diff_attention_threads(nthreads, batch, tokens, channels, heads, topk));
}

static PyObject *py_info(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    PyObject *paths = PyDict_New();
    if (!paths) return NULL;
    for (int s = EDGECC_SIMD_SCALAR; s <= EDGECC_SIMD_AVX512; ++s) {
        PyObject *code = PyLong_FromLong(s);
        int bad = code == NULL;
        if (!bad && edgecc_diff_attention_simd_supported((edgecc_simd)s))
            bad = PyDict_SetItemString(paths, edgecc_simd_name((edgecc_simd)s), code) != 0;
        Py_XDECREF(code);
        if (bad) {
            Py_DECREF(paths);
            return NULL;
        }
    }
    return Py_BuildValue("{s:i,s:s,s:N,s:O,s:i}", "version", EDGECC_DIFF_ATTENTION_VERSION, "simd",
                         edgecc_simd_name(edgecc_diff_attention_best_simd()), "simd_paths", paths, "openmp",
                         edgecc_diff_attention_openmp() ? Py_True : Py_False, "max_threads",
                         edgecc_diff_attention_threads(0, 1, 1LL << 40, 1, 1, 0));
}

static PyMethodDef methods[] = {
    {"diff_attention", py_diff_attention, METH_VARARGS,
     "diff_attention(a, b, out, batch, tokens, channels, heads, topk, nthreads, simd) -> None"},
    {"workspace_bytes", py_workspace_bytes, METH_VARARGS,
     "workspace_bytes(batch, tokens, channels, heads, topk, nthreads) -> heap bytes one call allocates"},
    {"threads", py_threads, METH_VARARGS,
     "threads(nthreads, batch, tokens, channels, heads, topk) -> threads a call uses"},
    {"info", py_info, METH_NOARGS, "info() -> dict(version, simd, simd_paths, openmp, max_threads)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "edgecc._native",
                                    "Fused diff-attention kernel (see edgecc.fusion).", -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
