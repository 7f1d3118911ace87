/* Compiled fast path of media_node/audio.py: the same streaming FIR resamplers as its numpy fallback.
 *
 *   Upsampler2(taps)  .process(ulaw: bytes) -> bytes   mu-law 8 kHz -> PCM16LE 16 kHz (4 bytes out per byte in)
 *   Decimator3(taps)  .process(pcm: bytes) -> bytes    PCM16LE 24 kHz (even length) -> mu-law 8 kHz
 *   set_ulaw_tables(decode: bytes, encode: bytes)      256 float64 decode values, 65536 encode bytes (from numpy)
 *
 * The filter taps and the mu-law tables come from audio.py as bytes, so both paths use one design. Arithmetic is
 * float64 like numpy's; only the summation order differs, so outputs agree within 1 LSB (in practice exactly).
 * Rounding is numpy's: clip to int16, then round half to even. Inputs of any size are processed in blocks of at
 * most MAX_BLOCK samples, so the memory each object keeps is fixed (a few tens of KB), whatever the chunk size.
 * No state is global except the constant mu-law tables; each object holds one direction of one call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define KERNEL_VERSION 1
#define MAX_BLOCK 1024 /* input samples per inner pass */

static double ulaw_decode[256];
static uint8_t ulaw_encode[65536];
static int tables_ready = 0;

/* y[k] += sum_t h[t] * x[k + t] for k < n, each output summed in tap order. LANES outputs are computed together
 * in vector registers (GCC/Clang vector extensions: SSE2/NEON, AVX2 where the CPU has it). Neither x86-64 variant
 * uses fused multiply-add (AVX2 is not FMA), so both give bit-identical results. */
#define LANES 16
#define FIR_TAIL                                                                                          \
    for (; k < n; k++) {                                                                                  \
        double acc = y[k];                                                                                \
        for (Py_ssize_t t = 0; t < taps; t++) acc += h[t] * x[k + t];                                     \
        y[k] = acc;                                                                                       \
    }
typedef void (*fir_fn)(const double *restrict, const double *restrict, Py_ssize_t, Py_ssize_t, double *restrict);

#if (defined(__GNUC__) || defined(__clang__)) && !defined(AUDIOKERNEL_PLAIN) /* -D...: try the portable C */
#define DEFINE_FIR(name, vec, attr)                                                                       \
    attr static void name(const double *restrict x, const double *restrict h, Py_ssize_t taps, Py_ssize_t n, \
                          double *restrict y) {                                                           \
        enum { WIDTH = sizeof(vec) / sizeof(double), VECS = LANES / WIDTH };                              \
        Py_ssize_t k = 0;                                                                                 \
        for (; k + LANES <= n; k += LANES) {                                                              \
            vec acc[VECS];                                                                                \
            memcpy(acc, y + k, sizeof acc);                                                               \
            for (Py_ssize_t t = 0; t < taps; t++) {                                                       \
                const vec c = (vec){0} + h[t];                                                            \
                for (int j = 0; j < VECS; j++) {                                                          \
                    vec v;                                                                                \
                    memcpy(&v, x + k + t + j * WIDTH, sizeof v); /* unaligned load */                     \
                    acc[j] += c * v;                                                                      \
                }                                                                                         \
            }                                                                                             \
            memcpy(y + k, acc, sizeof acc);                                                               \
        }                                                                                                 \
        FIR_TAIL                                                                                          \
    }
typedef double vec2 __attribute__((vector_size(16)));
DEFINE_FIR(fir_add_vec2, vec2, )
#if defined(__x86_64__)
typedef double vec4 __attribute__((vector_size(32)));
DEFINE_FIR(fir_add_avx2, vec4, __attribute__((target("avx2"))))
#endif
static fir_fn pick_fir(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) return fir_add_avx2;
#endif
    return fir_add_vec2;
}
#else
static void fir_add_plain(const double *restrict x, const double *restrict h, Py_ssize_t taps, Py_ssize_t n,
                          double *restrict y) {
    Py_ssize_t k = 0;
    FIR_TAIL
}
static fir_fn pick_fir(void) { return fir_add_plain; }
#endif
static fir_fn fir_add;

/* np.clip(v, -32768, 32767) then np.rint (half to even: adding and removing 1.5 * 2**52 rounds in IEEE). */
static inline int16_t to_int16(double v) {
    if (v > 32767.0) v = 32767.0;
    if (v < -32768.0) v = -32768.0;
    return (int16_t)((v + 6755399441055744.0) - 6755399441055744.0);
}

typedef struct {
    PyObject_HEAD
    Py_ssize_t k;     /* taps per polyphase branch */
    Py_ssize_t hist;  /* input samples kept between calls */
    int phase;        /* Decimator3: input samples to skip before the next kept output */
    double *taps;     /* branches, each reversed: Upsampler2 2*k (even, odd), Decimator3 3*k */
    double *buf;      /* hist samples of history, then up to MAX_BLOCK new ones */
    double *work;     /* Upsampler2: two output rows; Decimator3: three de-interleaved branches + output */
} Fir;

/* work_blocks * MAX_BLOCK + work_taps * k doubles of scratch space */
static PyObject *fir_new(PyTypeObject *type, PyObject *args, PyObject *kwargs, int branches, Py_ssize_t work_blocks,
                         Py_ssize_t work_taps) {
    Py_buffer taps;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "takes no keyword arguments");
        return NULL;
    }
    if (!tables_ready) {
        PyErr_SetString(PyExc_RuntimeError, "set_ulaw_tables() must be called first");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*", &taps)) return NULL;
    Py_ssize_t count = taps.len / (Py_ssize_t)sizeof(double);
    if (taps.len % ((Py_ssize_t)sizeof(double) * branches) || count < 2 * branches) {
        PyBuffer_Release(&taps);
        PyErr_Format(PyExc_ValueError, "taps: float64 bytes, a multiple of %d and at least %d", branches,
                     2 * branches);
        return NULL;
    }
    Fir *self = (Fir *)type->tp_alloc(type, 0);
    if (self == NULL) {
        PyBuffer_Release(&taps);
        return NULL;
    }
    self->k = count / branches;
    self->hist = branches == 2 ? self->k - 1 : count - 1;
    self->taps = PyMem_Malloc(taps.len);
    self->buf = PyMem_Calloc(self->hist + MAX_BLOCK, sizeof(double));
    self->work = PyMem_Malloc((work_blocks * MAX_BLOCK + work_taps * self->k) * sizeof(double));
    if (self->taps != NULL) memcpy(self->taps, taps.buf, taps.len);
    PyBuffer_Release(&taps);
    if (self->taps == NULL || self->buf == NULL || self->work == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void fir_dealloc(Fir *self) {
    PyTypeObject *type = Py_TYPE(self);
    PyMem_Free(self->taps);
    PyMem_Free(self->buf);
    PyMem_Free(self->work);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyObject *up_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    return fir_new(type, args, kwargs, 2, 2, 0); /* work: the even and odd output rows */
}

static PyObject *up_process(Fir *self, PyObject *arg) {
    Py_buffer in;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, in.len * 4);
    if (out == NULL) {
        PyBuffer_Release(&in);
        return NULL;
    }
    const uint8_t *src = in.buf;
    uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
    double *even = self->work, *odd = self->work + MAX_BLOCK;
    for (Py_ssize_t done = 0; done < in.len;) {
        Py_ssize_t n = in.len - done < MAX_BLOCK ? in.len - done : MAX_BLOCK;
        double *x = self->buf + self->hist;
        for (Py_ssize_t i = 0; i < n; i++) x[i] = ulaw_decode[src[done + i]];
        memset(even, 0, n * sizeof(double));
        memset(odd, 0, n * sizeof(double));
        fir_add(self->buf, self->taps, self->k, n, even);
        fir_add(self->buf, self->taps + self->k, self->k, n, odd);
        for (Py_ssize_t i = 0; i < n; i++) {
            uint16_t a = (uint16_t)to_int16(even[i]), b = (uint16_t)to_int16(odd[i]);
            uint8_t *o = dst + 4 * (done + i);
            o[0] = a & 0xFF, o[1] = a >> 8, o[2] = b & 0xFF, o[3] = b >> 8;
        }
        memmove(self->buf, self->buf + n, self->hist * sizeof(double));
        done += n;
    }
    PyBuffer_Release(&in);
    return out;
}

static PyObject *down_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    /* work: three branches of MAX_BLOCK / 3 + k samples each, then up to MAX_BLOCK / 3 + 1 outputs */
    return fir_new(type, args, kwargs, 3, 2, 3);
}

static PyObject *down_process(Fir *self, PyObject *arg) {
    Py_buffer in;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0) return NULL;
    if (in.len % 2) {
        PyBuffer_Release(&in);
        PyErr_SetString(PyExc_ValueError, "PCM16 input must have an even byte count");
        return NULL;
    }
    Py_ssize_t samples = in.len / 2;
    Py_ssize_t total = samples > self->phase ? (samples - self->phase + 2) / 3 : 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL) {
        PyBuffer_Release(&in);
        return NULL;
    }
    const uint8_t *src = in.buf;
    uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
    Py_ssize_t k = self->k, stride = MAX_BLOCK / 3 + k;
    double *branch = self->work, *y = self->work + 3 * stride;
    for (Py_ssize_t done = 0; done < samples;) {
        Py_ssize_t n = samples - done < MAX_BLOCK ? samples - done : MAX_BLOCK;
        double *x = self->buf + self->hist;
        for (Py_ssize_t i = 0; i < n; i++) {
            const uint8_t *p = src + 2 * (done + i);
            x[i] = (int16_t)(uint16_t)(p[0] | (p[1] << 8));
        }
        /* Kept outputs sit at phase, phase + 3, ... of the full-rate filter output. Output j is
         * sum_p sum_m taps_p[m] * buf[phase + p + 3 (j + m)]: de-interleave buf so each branch is contiguous. */
        Py_ssize_t kept = n > self->phase ? (n - self->phase + 2) / 3 : 0;
        if (kept) {
            for (int p = 0; p < 3; p++) {
                const double *from = self->buf + self->phase + p;
                double *to = branch + p * stride;
                for (Py_ssize_t i = 0; i < kept + k - 1; i++) to[i] = from[3 * i];
            }
            memset(y, 0, kept * sizeof(double));
            for (int p = 0; p < 3; p++) fir_add(branch + p * stride, self->taps + p * k, k, kept, y);
            for (Py_ssize_t i = 0; i < kept; i++) *dst++ = ulaw_encode[(uint16_t)to_int16(y[i])];
        }
        self->phase = (int)(((self->phase - n) % 3 + 3) % 3);
        memmove(self->buf, self->buf + n, self->hist * sizeof(double));
        done += n;
    }
    PyBuffer_Release(&in);
    return out;
}

static PyObject *set_ulaw_tables(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer dec, enc;
    if (!PyArg_ParseTuple(args, "y*y*", &dec, &enc)) return NULL;
    int ok = dec.len == (Py_ssize_t)sizeof ulaw_decode && enc.len == (Py_ssize_t)sizeof ulaw_encode;
    if (ok) {
        memcpy(ulaw_decode, dec.buf, sizeof ulaw_decode);
        memcpy(ulaw_encode, enc.buf, sizeof ulaw_encode);
        tables_ready = 1;
    }
    PyBuffer_Release(&dec);
    PyBuffer_Release(&enc);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "tables: 256 float64 decode values and 65536 encode bytes");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef up_methods[] = {
    {"process", (PyCFunction)up_process, METH_O, "mu-law 8 kHz bytes -> PCM16LE 16 kHz bytes"},
    {NULL, NULL, 0, NULL},
};
static PyMethodDef down_methods[] = {
    {"process", (PyCFunction)down_process, METH_O, "PCM16LE 24 kHz bytes (even length) -> mu-law 8 kHz bytes"},
    {NULL, NULL, 0, NULL},
};
static PyType_Slot up_slots[] = {
    {Py_tp_new, up_new}, {Py_tp_dealloc, fir_dealloc}, {Py_tp_methods, up_methods},
    {Py_tp_doc, "Upsampler2(taps): streaming x2 polyphase interpolator, mu-law in, PCM16LE out"}, {0, NULL},
};
static PyType_Slot down_slots[] = {
    {Py_tp_new, down_new}, {Py_tp_dealloc, fir_dealloc}, {Py_tp_methods, down_methods},
    {Py_tp_doc, "Decimator3(taps): streaming /3 polyphase decimator, PCM16LE in, mu-law out"}, {0, NULL},
};
static PyType_Spec up_spec = {"media_node._audiokernel.Upsampler2", sizeof(Fir), 0, Py_TPFLAGS_DEFAULT, up_slots};
static PyType_Spec down_spec = {"media_node._audiokernel.Decimator3", sizeof(Fir), 0, Py_TPFLAGS_DEFAULT,
                                down_slots};

static int exec_module(PyObject *module) {
    fir_add = pick_fir();
    PyObject *up = PyType_FromSpec(&up_spec);
    if (up == NULL || PyModule_AddObject(module, "Upsampler2", up) < 0) {
        Py_XDECREF(up);
        return -1;
    }
    PyObject *down = PyType_FromSpec(&down_spec);
    if (down == NULL || PyModule_AddObject(module, "Decimator3", down) < 0) {
        Py_XDECREF(down);
        return -1;
    }
    return PyModule_AddIntConstant(module, "KERNEL_VERSION", KERNEL_VERSION);
}

static PyMethodDef module_methods[] = {
    {"set_ulaw_tables", set_ulaw_tables, METH_VARARGS, "set_ulaw_tables(decode: bytes, encode: bytes)"},
    {NULL, NULL, 0, NULL},
};
static PyModuleDef_Slot module_slots[] = {{Py_mod_exec, exec_module}, {0, NULL}};
static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "media_node._audiokernel", "Streaming FIR resamplers for media_node.audio", 0,
    module_methods, module_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__audiokernel(void) { return PyModuleDef_Init(&module_def); }
