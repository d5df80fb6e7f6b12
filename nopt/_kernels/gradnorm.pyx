# Gradient norms, scaling and clamping for nopt.utils (clip_grad_norm_ & co).
#
# Norms are reductions, so thread count must not change the result: each
# chunk of the _plan.make_table work table writes its own partial (in double,
# also for float32 input) into partials[c], and the partials are then combined
# serially in chunk order. The chunk table depends only on the arrays, never
# on the thread count, so the result is bitwise identical for any number of
# threads. Inside a chunk, eight independent accumulators in a fixed pattern
# give the CPU (and gcc's SLP vectoriser) parallel work without reassociation.
#
# Scale and clamp are elementwise, as in the optimizer kernels. None of these
# kernels sets flush-to-zero: a norm must see subnormal gradients (|x| near
# 1e-40 still makes the inf norm and the 1-norm nonzero), and scaling or
# clamping must give torch's IEEE results bit for bit.

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from libc.math cimport INFINITY, NAN
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy

from ._common cimport floating, fabs_, max_nan, min_nan, pow

import numpy as np

# Norm kinds; nopt/utils.py picks one from norm_type.
cdef enum:
    _L1 = 1        # sum |x|
    _L2 = 2        # sum x*x
    _INF = 3       # max |x|   (NaN if any NaN)
    _NEG_INF = 4   # min |x|   (NaN if any NaN)
    _P = 5         # sum |x|**p

NORM_L1 = _L1
NORM_L2 = _L2
NORM_INF = _INF
NORM_NEG_INF = _NEG_INF
NORM_P = _P


cdef double _sum_abs(const floating* a, Py_ssize_t n) noexcept nogil:
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0
    cdef Py_ssize_t j, m = n - n % 8
    for j in range(0, m, 8):
        s0 = s0 + fabs_(<double> a[j])
        s1 = s1 + fabs_(<double> a[j + 1])
        s2 = s2 + fabs_(<double> a[j + 2])
        s3 = s3 + fabs_(<double> a[j + 3])
        s4 = s4 + fabs_(<double> a[j + 4])
        s5 = s5 + fabs_(<double> a[j + 5])
        s6 = s6 + fabs_(<double> a[j + 6])
        s7 = s7 + fabs_(<double> a[j + 7])
    for j in range(m, n):
        s0 = s0 + fabs_(<double> a[j])
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


cdef double _sum_sq(const floating* a, Py_ssize_t n) noexcept nogil:
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0
    cdef double x0, x1, x2, x3, x4, x5, x6, x7
    cdef Py_ssize_t j, m = n - n % 8
    for j in range(0, m, 8):
        x0 = a[j]
        x1 = a[j + 1]
        x2 = a[j + 2]
        x3 = a[j + 3]
        x4 = a[j + 4]
        x5 = a[j + 5]
        x6 = a[j + 6]
        x7 = a[j + 7]
        s0 = s0 + x0 * x0
        s1 = s1 + x1 * x1
        s2 = s2 + x2 * x2
        s3 = s3 + x3 * x3
        s4 = s4 + x4 * x4
        s5 = s5 + x5 * x5
        s6 = s6 + x6 * x6
        s7 = s7 + x7 * x7
    for j in range(m, n):
        x0 = a[j]
        s0 = s0 + x0 * x0
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


cdef double _sum_pow(const floating* a, Py_ssize_t n, double p) noexcept nogil:
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t j, m = n - n % 4
    for j in range(0, m, 4):
        s0 = s0 + pow(fabs_(<double> a[j]), p)
        s1 = s1 + pow(fabs_(<double> a[j + 1]), p)
        s2 = s2 + pow(fabs_(<double> a[j + 2]), p)
        s3 = s3 + pow(fabs_(<double> a[j + 3]), p)
    for j in range(m, n):
        s0 = s0 + pow(fabs_(<double> a[j]), p)
    return (s0 + s1) + (s2 + s3)


cdef double _max_abs(const floating* a, Py_ssize_t n) noexcept nogil:
    # On the IEEE bit patterns with the sign cleared, unsigned integer order
    # is |x| order, and every NaN is above inf: an integer max (which
    # vectorises) gives max |x|, or a NaN if there is one, as torch's max.
    cdef const uint32_t* b32
    cdef const uint64_t* b64
    cdef uint32_t v32, m32 = 0
    cdef uint64_t v64, m64 = 0
    cdef float f
    cdef double d
    cdef Py_ssize_t j
    if floating is float:
        b32 = <const uint32_t*> a
        for j in range(n):
            v32 = b32[j] & 0x7fffffffu
            m32 = v32 if v32 > m32 else m32
        memcpy(&f, &m32, 4)
        return f
    else:
        b64 = <const uint64_t*> a
        for j in range(n):
            v64 = b64[j] & 0x7fffffffffffffffULL
            m64 = v64 if v64 > m64 else m64
        memcpy(&d, &m64, 8)
        return d


cdef double _min_abs(const floating* a, Py_ssize_t n) noexcept nogil:
    cdef floating m0 = INFINITY, x0
    cdef int nan = 0
    cdef Py_ssize_t j
    for j in range(n):
        x0 = fabs_(a[j])
        nan = nan | (x0 != x0)
        m0 = x0 if x0 < m0 else m0
    return NAN if nan else m0


cdef double _sum_cube(const floating* a, Py_ssize_t n) noexcept nogil:
    # |x|**3 by multiplication: exact in double for float32 input, and far
    # faster than pow.
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0, x0, x1, x2, x3
    cdef Py_ssize_t j, m = n - n % 4
    for j in range(0, m, 4):
        x0 = fabs_(<double> a[j])
        x1 = fabs_(<double> a[j + 1])
        x2 = fabs_(<double> a[j + 2])
        x3 = fabs_(<double> a[j + 3])
        s0 = s0 + x0 * x0 * x0
        s1 = s1 + x1 * x1 * x1
        s2 = s2 + x2 * x2 * x2
        s3 = s3 + x3 * x3 * x3
    for j in range(m, n):
        x0 = fabs_(<double> a[j])
        s0 = s0 + x0 * x0 * x0
    return (s0 + s1) + (s2 + s3)


cdef void _partials(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    int kind, double p,
    double* out,                  # OUT: one partial per chunk
) noexcept nogil:
    cdef Py_ssize_t c, start, n, n_chunks = chunks.shape[0]
    cdef const floating* a
    with parallel(num_threads=n_threads):
        for c in prange(n_chunks, schedule="static"):
            start = chunks[c, 1]
            n = chunks[c, 2] - start
            a = <const floating*> ptrs[chunks[c, 0], 0] + start
            if kind == _L1:
                out[c] = _sum_abs(a, n)
            elif kind == _L2:
                out[c] = _sum_sq(a, n)
            elif kind == _INF:
                out[c] = _max_abs(a, n)
            elif kind == _NEG_INF:
                out[c] = _min_abs(a, n)
            elif p == 3.0:
                out[c] = _sum_cube(a, n)
            else:
                out[c] = _sum_pow(a, n, p)


def norm_partial(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
                 int n_threads, int kind, double p=2.0):
    """Reduce every array in the table (stream 0) to one double (releases the GIL).

    Returns the sum of |x| (NORM_L1), x*x (NORM_L2) or |x|**p (NORM_P), or
    the max (NORM_INF) / min (NORM_NEG_INF) of |x|, over all elements, with
    partials combined in chunk order. An empty table gives 0 for the sums,
    and None for the max/min (which have no identity).
    """
    if kind < _L1 or kind > _P:
        raise ValueError(f"unknown norm kind {kind}")
    cdef Py_ssize_t c, n_chunks = chunks.shape[0]
    if n_chunks == 0:
        return None if kind in (_INF, _NEG_INF) else 0.0
    partials_arr = np.empty(n_chunks, dtype=np.float64)
    cdef double[::1] partials = partials_arr
    cdef double total
    with nogil:
        if is_double:
            _partials(<double*> NULL, ptrs, chunks, n_threads, kind, p, &partials[0])
        else:
            _partials(<float*> NULL, ptrs, chunks, n_threads, kind, p, &partials[0])
        total = partials[0]
        for c in range(1, n_chunks):
            if kind == _INF:
                total = max_nan(partials[c], total)
            elif kind == _NEG_INF:
                total = min_nan(partials[c], total)
            else:
                total = total + partials[c]
    return total


cdef void _scale(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double coef,
) noexcept nogil:
    cdef Py_ssize_t c, j, start, n, n_chunks = chunks.shape[0]
    cdef floating* g                # IN/OUT: the gradient
    cdef floating coef_t = <floating> coef
    with parallel(num_threads=n_threads):
        for c in prange(n_chunks, schedule="static"):
            start = chunks[c, 1]
            n = chunks[c, 2] - start
            g = <floating*> ptrs[chunks[c, 0], 0] + start
            for j in range(n):
                g[j] = g[j] * coef_t


def scale(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
          int n_threads, double coef):
    """Multiply every array in the table by ``coef`` (cast to the arrays' dtype)."""
    with nogil:
        if is_double:
            _scale(<double*> NULL, ptrs, chunks, n_threads, coef)
        else:
            _scale(<float*> NULL, ptrs, chunks, n_threads, coef)


cdef void _clamp(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double lo, double hi,
) noexcept nogil:
    cdef Py_ssize_t c, j, start, n, n_chunks = chunks.shape[0]
    cdef floating* g                # IN/OUT: the gradient
    cdef floating x, lo_t = <floating> lo, hi_t = <floating> hi
    with parallel(num_threads=n_threads):
        for c in prange(n_chunks, schedule="static"):
            start = chunks[c, 1]
            n = chunks[c, 2] - start
            g = <floating*> ptrs[chunks[c, 0], 0] + start
            for j in range(n):
                # torch's clamp_min then clamp_max: a NaN element stays NaN
                # (both compares are false), lo > hi gives hi. NaN bounds are
                # handled by the caller.
                x = g[j]
                x = lo_t if x < lo_t else x
                g[j] = hi_t if x > hi_t else x


def clamp(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
          int n_threads, double lo, double hi):
    """Clamp every array in the table to [lo, hi] in place, as torch's clamp_."""
    if lo != lo or hi != hi:  # torch: a NaN bound makes every element NaN
        scale(ptrs, chunks, is_double, n_threads, NAN)
        return
    with nogil:
        if is_double:
            _clamp(<double*> NULL, ptrs, chunks, n_threads, lo, hi)
        else:
            _clamp(<float*> NULL, ptrs, chunks, n_threads, lo, hi)
