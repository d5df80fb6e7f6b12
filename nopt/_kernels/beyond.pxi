# Kernels of the update rules beyond torch.optim that the rule layer
# (rules.pyx.tp, one spec per rule) cannot express, and of the combinators
# (nopt/combinators.py). Lion, AdaBelief and the schedule-free rules are
# specs (nopt/lion.py, adabelief.py, schedule_free.py); here are
# - LAMB and LARS (nopt/lamb.py, lars.py): a per-parameter norm reduction,
#   then an elementwise pass scaled per parameter, in one call;
# - Prodigy's first pass (nopt/prodigy.py): its two global sums (its
#   second, elementwise pass, moments and update, is a spec), and its run phase;
# - Adan (nopt/adan.py): elementwise, but eleven streams: as a spec its loop
#   is not vectorised (below), so it is a C loop with restrict pointers;
# - Lookahead's synchronisation and MultiSteps' accumulation.
#
# Same calling convention and pattern as adam.pyx (see _common.pxd):
#   ptrs[a, s]   address of stream s of array a (0 = param, 1 = grad, 2.. = state)
#   chunks[c]    (array a, start, stop)
# Python computes the per-step scalars; one nogil call walks every chunk of a
# batch. Each rule has
# - a `cdef inline` loop over one chunk taking its flags as arguments, called
#   only with literal True/False from the task function, so each inlined copy
#   is a branch-free loop gcc vectorises;
# - a task function compiled for AVX-512, AVX2 and the baseline
#   (nopt_dispatched), picked at load time;
# - a driver that runs the chunks in the caller's thread when n_threads <= 1
#   (no OpenMP team) and with prange otherwise, with flush-to-zero set and
#   restored in each thread;
# - a Python wrapper that switches on the dtype.
#
# Reductions (LAMB's and LARS's per-parameter norms, Prodigy's dot product
# and |s| sum) must not depend on the thread count: each chunk writes its
# own partial (in double, also for float32) and partials are combined
# serially in chunk order; the chunk table depends only on the arrays. LAMB
# and LARS take a table whose rows are single parameters (see
# segment_table), so a row's chunks are that parameter's elements.
# Inside a chunk, values are reduced (per block of _BLOCK elements where the
# values are computed first) with 32 accumulators in a fixed pattern, so the
# loop is vectorised and keeps the CPU busy without reassociating.

cimport numpy as cnp
from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from ._common cimport (floating, fabs_, fsqrt, nopt_dispatched, nopt_ftz_enter,
                       nopt_ftz_exit)

import numpy as np

cnp.import_array()

DEF _BLOCK = 512

# Adan's and Prodigy's first-pass loops touch six or seven streams, five or
# four of them written: more pointer pairs than gcc checks for overlap at run
# time (--param vect-max-version-for-alias-checks, 10), so written in Cython
# they are not vectorised. Here they are plain C with ``restrict`` pointers
# (the streams never overlap: make_table's arrays are distinct state, and
# Optimizer refuses parameters that share memory), static inline, so each
# call site with literal flags becomes its own branch-free vector loop in
# every ISA clone of the calling task.
cdef extern from *:
    """
    #include <math.h>
    #include <stddef.h>
    #if defined(_MSC_VER) && !defined(restrict)
    #define restrict __restrict
    #endif
    #define NOPT_ADAN_LOOP(T, SQRT)                                                     \
    static inline void nopt_adan_loop_##T(                                             \
        T *restrict param, const T *restrict grad, T *restrict exp_avg,                \
        T *restrict exp_avg_diff, T *restrict exp_avg_sq, T *restrict pre_grad,        \
        ptrdiff_t n, T sign, T beta1, T omb1, T beta2, T omb2, T beta3, T omb3,        \
        T c1, T c2, T inv_bc3_sqrt, T eps, T neg_lr, T pre, T post, int first) {       \
        for (ptrdiff_t j = 0; j < n; j++) {                                            \
            T g = sign * grad[j];                                                      \
            T d = first ? (T) 0 : g - pre_grad[j];                                     \
            pre_grad[j] = g;                                                           \
            T m = exp_avg[j] * beta1 + omb1 * g;                                       \
            T v = exp_avg_diff[j] * beta2 + omb2 * d;                                  \
            T u = g + beta2 * d;                                                       \
            T s = exp_avg_sq[j] * beta3 + omb3 * u * u;                                \
            exp_avg[j] = m;                                                            \
            exp_avg_diff[j] = v;                                                       \
            exp_avg_sq[j] = s;                                                         \
            param[j] = (param[j] * pre                                                 \
                        + neg_lr * ((m * c1 + v * c2) / (SQRT(s) * inv_bc3_sqrt + eps))) * post; \
        }                                                                              \
    }
    NOPT_ADAN_LOOP(float, sqrtf)
    NOPT_ADAN_LOOP(double, sqrt)

    #define NOPT_PRODIGY_LOOP(T)                                                       \
    static inline void nopt_prodigy_sums_##T(                                          \
        const T *restrict param, const T *restrict grad, const T *restrict p0,         \
        T *restrict s, T *restrict dot, ptrdiff_t n, T wd, T beta3, T a_s,             \
        int coupled) {                                                                 \
        for (ptrdiff_t j = 0; j < n; j++) {                                            \
            T g = grad[j];                                                             \
            T p = param[j];                                                            \
            if (coupled) g = g + wd * p;                                               \
            dot[j] = g * (p0[j] - p);                                                  \
            s[j] = s[j] * beta3 + a_s * g;                                             \
        }                                                                              \
    }
    NOPT_PRODIGY_LOOP(float)
    NOPT_PRODIGY_LOOP(double)

    /* LARS's norm pass over one chunk: the sums of p*p and of g*g, in one
       loop over both streams, in a fixed order (the same bits on any thread
       count). float32: the squares are summed in float in 32 lanes over
       blocks of 4096 elements (128 per lane: a vector loop at memory speed,
       as accurate as NumPy's float32 sum), and the blocks' sums in double. A
       block whose float sum is not in [2^-60, 2^100] (a square may have
       underflowed, flushed to zero, or overflowed) is summed again in
       double: slower, but only for such data, and the same for any threads.
       float64: 16 lanes in double. */
    #if defined(__GNUC__) || defined(__clang__)
    #define NOPT_BEYOND_INLINE static inline __attribute__((always_inline))
    #else
    #define NOPT_BEYOND_INLINE static inline
    #endif
    #define NOPT_LARS_BLOCK 4096
    NOPT_BEYOND_INLINE void nopt_lars_norms_float(const float *restrict p, const float *restrict g,
                                                  ptrdiff_t n, double *out_p, double *out_g) {
        double dp = 0, dg = 0;
        ptrdiff_t j = 0;
        while (j < n) {
            ptrdiff_t start = j, stop = n - j > NOPT_LARS_BLOCK ? j + NOPT_LARS_BLOCK : n;
            ptrdiff_t m = stop - (stop - j) % 32;
            float sp[32] = {0}, sg[32] = {0};
            for (; j < m; j += 32)
                for (int i = 0; i < 32; i++) {
                    float x = p[j + i], y = g[j + i];
                    sp[i] += x * x;
                    sg[i] += y * y;
                }
            for (; j < stop; j++) { sp[0] += p[j] * p[j]; sg[0] += g[j] * g[j]; }
            for (int w = 16; w > 0; w /= 2)
                for (int i = 0; i < w; i++) { sp[i] += sp[i + w]; sg[i] += sg[i + w]; }
            double bp = sp[0], bg = sg[0];
            if (!(bp >= 0x1p-60 && bp <= 0x1p100)) {
                bp = 0;
                for (ptrdiff_t k = start; k < stop; k++) bp += (double) p[k] * (double) p[k];
            }
            if (!(bg >= 0x1p-60 && bg <= 0x1p100)) {
                bg = 0;
                for (ptrdiff_t k = start; k < stop; k++) bg += (double) g[k] * (double) g[k];
            }
            dp += bp;
            dg += bg;
        }
        *out_p = dp;
        *out_g = dg;
    }
    NOPT_BEYOND_INLINE void nopt_lars_norms_double(const double *restrict p, const double *restrict g,
                                                   ptrdiff_t n, double *out_p, double *out_g) {
        double sp[16] = {0}, sg[16] = {0};
        ptrdiff_t j, m = n - n % 16;
        for (j = 0; j < m; j += 16)
            for (int i = 0; i < 16; i++) {
                double x = p[j + i], y = g[j + i];
                sp[i] += x * x;
                sg[i] += y * y;
            }
        for (j = m; j < n; j++) { sp[0] += p[j] * p[j]; sg[0] += g[j] * g[j]; }
        for (int w = 8; w > 0; w /= 2)
            for (int i = 0; i < w; i++) { sp[i] += sp[i + w]; sg[i] += sg[i + w]; }
        *out_p = sp[0];
        *out_g = sg[0];
    }

    /* LARS's update over one chunk, with the parameter's scale = lr * trust. */
    #define NOPT_LARS_LOOP(T)                                                          \
    NOPT_BEYOND_INLINE void nopt_lars_update_##T(                                      \
        T *restrict param, const T *restrict grad, T *restrict buf, ptrdiff_t n,       \
        T sign, T wd, T momentum, T scale, int nesterov) {                             \
        for (ptrdiff_t j = 0; j < n; j++) {                                            \
            T p = param[j];                                                            \
            T d = sign * grad[j] + wd * p;                                             \
            T b = momentum * buf[j] + scale * d;                                       \
            buf[j] = b;                                                                \
            param[j] = nesterov ? p - (scale * d + momentum * b) : p - b;              \
        }                                                                              \
    }
    NOPT_LARS_LOOP(float)
    NOPT_LARS_LOOP(double)

    /* Sums in double of x, x*x or |x| over n elements, in a fixed order (32
       accumulators, element j into accumulator j % 32, combined pairwise):
       the same bits for the same input on any thread count. The inner
       32-wide step is what gcc turns into vector conversions and adds. */
    #define NOPT_SUM(T, NAME, F)                                                       \
    static inline double nopt_##NAME##_##T(const T *restrict a, ptrdiff_t n) {         \
        double s[32] = {0};                                                            \
        ptrdiff_t j, m = n - n % 32;                                                   \
        for (j = 0; j < m; j += 32)                                                    \
            for (int i = 0; i < 32; i++) { double x = (double) a[j + i]; s[i] += F; }  \
        for (j = m; j < n; j++) { double x = (double) a[j]; s[0] += F; }               \
        for (int w = 16; w > 0; w /= 2)                                                \
            for (int i = 0; i < w; i++) s[i] += s[i + w];                              \
        return s[0];                                                                   \
    }
    NOPT_SUM(float, sum, x)
    NOPT_SUM(double, sum, x)
    NOPT_SUM(float, sum_sq, x * x)
    NOPT_SUM(double, sum_sq, x * x)
    NOPT_SUM(float, sum_abs, fabs(x))
    NOPT_SUM(double, sum_abs, fabs(x))
    """
    void nopt_adan_loop_float(float* param, const float* grad, float* exp_avg,
                              float* exp_avg_diff, float* exp_avg_sq, float* pre_grad,
                              Py_ssize_t n, float sign, float beta1, float omb1, float beta2,
                              float omb2, float beta3, float omb3, float c1, float c2,
                              float inv_bc3_sqrt, float eps, float neg_lr, float pre, float post,
                              int first) nogil
    void nopt_adan_loop_double(double* param, const double* grad, double* exp_avg,
                               double* exp_avg_diff, double* exp_avg_sq, double* pre_grad,
                               Py_ssize_t n, double sign, double beta1, double omb1, double beta2,
                               double omb2, double beta3, double omb3, double c1, double c2,
                               double inv_bc3_sqrt, double eps, double neg_lr, double pre,
                               double post, int first) nogil
    void nopt_prodigy_sums_float(const float* param, const float* grad, const float* p0,
                                 float* s, float* dot, Py_ssize_t n, float wd, float beta3,
                                 float a_s, int coupled) nogil
    void nopt_prodigy_sums_double(const double* param, const double* grad, const double* p0,
                                  double* s, double* dot, Py_ssize_t n, double wd, double beta3,
                                  double a_s, int coupled) nogil
    void nopt_lars_norms_float(const float* p, const float* g, Py_ssize_t n, double* out_p,
                               double* out_g) nogil
    void nopt_lars_norms_double(const double* p, const double* g, Py_ssize_t n, double* out_p,
                                double* out_g) nogil
    void nopt_lars_update_float(float* param, const float* grad, float* buf, Py_ssize_t n,
                                float sign, float wd, float momentum, float scale,
                                int nesterov) nogil
    void nopt_lars_update_double(double* param, const double* grad, double* buf, Py_ssize_t n,
                                 double sign, double wd, double momentum, double scale,
                                 int nesterov) nogil
    double nopt_sum_float(const float* a, Py_ssize_t n) nogil
    double nopt_sum_double(const double* a, Py_ssize_t n) nogil
    double nopt_sum_sq_float(const float* a, Py_ssize_t n) nogil
    double nopt_sum_sq_double(const double* a, Py_ssize_t n) nogil
    double nopt_sum_abs_float(const float* a, Py_ssize_t n) nogil
    double nopt_sum_abs_double(const double* a, Py_ssize_t n) nogil


# ---------------------------------------------------------------- shared helpers
cdef inline double _sum8(const floating* a, Py_ssize_t n, bint square, bint absolute) noexcept nogil:
    """Sum of a[j] (or a[j]**2, or |a[j]|) in double, in a fixed order (the C sums above)."""
    if floating is float:
        if square:
            return nopt_sum_sq_float(a, n)
        if absolute:
            return nopt_sum_abs_float(a, n)
        return nopt_sum_float(a, n)
    else:
        if square:
            return nopt_sum_sq_double(a, n)
        if absolute:
            return nopt_sum_abs_double(a, n)
        return nopt_sum_double(a, n)


cdef _check_work(Py_ssize_t n_chunks, Py_ssize_t n_rows, double[::1] partials,
                 double[::1] scale):
    if partials.shape[0] < 2 * n_chunks or scale.shape[0] < n_rows:
        raise ValueError("the work space is smaller than the table (see segment_table)")


def segment_table(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, sizes,
                  Py_ssize_t itemsize, Py_ssize_t chunk):
    """Split a ``make_table`` table (whose rows may merge adjacent arrays) into one row per array.

    ``sizes`` lists the nonzero sizes of the arrays in table order. Returns
    ``(ptrs, chunks, rows, partials, scale)``: one row per array, chunks of
    at most ``chunk`` elements that never cross an array, ``rows[k]`` = the
    chunk range ``(first, stop)`` of array ``k``, and the work space of the
    per-parameter reductions (LAMB, LARS): ``partials``, two doubles per
    chunk, and ``scale``, one per row, cached with the table so that a step
    allocates nothing.
    """
    cdef Py_ssize_t n_rows = ptrs.shape[0], n_streams = ptrs.shape[1]
    cdef Py_ssize_t n = len(sizes), k, s, r = 0, offset = 0, c = 0, start, size
    row_size = np.zeros(n_rows, dtype=np.intp)
    cdef intptr_t[::1] row_size_v = row_size
    for k in range(chunks.shape[0]):
        row_size_v[chunks[k, 0]] = chunks[k, 2]
    cdef cnp.ndarray sizes_arr = np.asarray(sizes, dtype=np.intp)
    cdef intptr_t[::1] sz = sizes_arr
    cdef Py_ssize_t n_chunks = 0
    for k in range(n):
        n_chunks += (sz[k] + chunk - 1) // chunk
    out_ptrs = np.empty((n, n_streams), dtype=np.intp)
    out_chunks = np.empty((n_chunks, 3), dtype=np.intp)
    rows = np.empty((n, 2), dtype=np.intp)
    cdef intptr_t[:, ::1] op = out_ptrs
    cdef intptr_t[:, ::1] oc = out_chunks
    cdef intptr_t[:, ::1] rv = rows
    for k in range(n):
        size = sz[k]
        if r >= n_rows or size <= 0 or offset + size > row_size_v[r]:
            raise ValueError("segment_table: sizes do not match the table")
        for s in range(n_streams):
            op[k, s] = ptrs[r, s] + offset * itemsize
        rv[k, 0] = c
        start = 0
        while start < size:
            oc[c, 0] = k
            oc[c, 1] = start
            start = min(start + chunk, size)
            oc[c, 2] = start
            c += 1
        rv[k, 1] = c
        offset += size
        if offset == row_size_v[r]:
            r += 1
            offset = 0
    if r != n_rows:
        raise ValueError("segment_table: sizes do not match the table")
    return (out_ptrs, out_chunks, rows, np.empty(2 * n_chunks, dtype=np.float64),
            np.empty(n, dtype=np.float64))


# ---------------------------------------------------------------- Adan
# ptrs[a] = (param, grad, exp_avg, exp_avg_diff, exp_avg_sq, pre_grad). The
# official implementation's order (betas are decay rates):
#   g = ±grad   d = g - pre_grad (0 on the first step)   pre_grad = g
#   m = m*b1 + (1-b1)*g    v = v*b2 + (1-b2)*d    u = g + b2*d
#   n = n*b3 + (1-b3)*u*u
#   upd = (m*c1 + v*c2) / (sqrt(n)*inv_bc3_sqrt + eps)   c1 = 1/bc1, c2 = b2/bc2
#   p = (p*pre + neg_lr*upd) * post
# with pre = 1 - lr*wd, post = 1 (no_prox) or pre = 1, post = 1/(1 + lr*wd).
cdef inline void _adan_loop(
    floating* param, const floating* grad, floating* exp_avg, floating* exp_avg_diff,
    floating* exp_avg_sq, floating* pre_grad, Py_ssize_t n,
    floating sign, floating beta1, floating omb1, floating beta2, floating omb2,
    floating beta3, floating omb3, floating c1, floating c2, floating inv_bc3_sqrt,
    floating eps, floating neg_lr, floating pre, floating post, bint first,
) noexcept nogil:
    # The C loop above (restrict pointers), for this float type.
    if floating is float:
        nopt_adan_loop_float(param, grad, exp_avg, exp_avg_diff, exp_avg_sq, pre_grad, n, sign,
                             beta1, omb1, beta2, omb2, beta3, omb3, c1, c2, inv_bc3_sqrt, eps,
                             neg_lr, pre, post, first)
    else:
        nopt_adan_loop_double(param, grad, exp_avg, exp_avg_diff, exp_avg_sq, pre_grad, n, sign,
                              beta1, omb1, beta2, omb2, beta3, omb3, c1, c2, inv_bc3_sqrt, eps,
                              neg_lr, pre, post, first)


cdef nopt_dispatched _adan_task(
    const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, Py_ssize_t c,
    floating sign, floating b1, floating o1, floating b2, floating o2, floating b3, floating o3,
    floating c1, floating c2, floating inv, floating eps, floating neg_lr, floating pre,
    floating post, bint first,
) noexcept nogil:
    cdef Py_ssize_t a = chunks[c, 0], start = chunks[c, 1], n = chunks[c, 2] - start
    cdef floating* p = <floating*> ptrs[a, 0] + start
    cdef const floating* g = <const floating*> ptrs[a, 1] + start
    cdef floating* m = <floating*> ptrs[a, 2] + start
    cdef floating* v = <floating*> ptrs[a, 3] + start
    cdef floating* s = <floating*> ptrs[a, 4] + start
    cdef floating* q = <floating*> ptrs[a, 5] + start
    if first:
        _adan_loop(p, g, m, v, s, q, n, sign, b1, o1, b2, o2, b3, o3, c1, c2, inv, eps, neg_lr,
                   pre, post, True)
    else:
        _adan_loop(p, g, m, v, s, q, n, sign, b1, o1, b2, o2, b3, o3, c1, c2, inv, eps, neg_lr,
                   pre, post, False)


cdef void _adan(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double sign, double beta1, double beta2, double beta3, double c1, double c2,
    double inv_bc3_sqrt, double eps, double neg_lr, double pre, double post, bint first,
) noexcept nogil:
    cdef Py_ssize_t c, n_chunks = chunks.shape[0]
    cdef unsigned long long fp = 0
    cdef floating s_t = <floating> sign
    cdef floating b1 = <floating> beta1, o1 = <floating> (1.0 - beta1)
    cdef floating b2 = <floating> beta2, o2 = <floating> (1.0 - beta2)
    cdef floating b3 = <floating> beta3, o3 = <floating> (1.0 - beta3)
    cdef floating c1_t = <floating> c1, c2_t = <floating> c2, i_t = <floating> inv_bc3_sqrt
    cdef floating e_t = <floating> eps, l_t = <floating> neg_lr
    cdef floating pre_t = <floating> pre, post_t = <floating> post
    if n_threads <= 1:
        fp = nopt_ftz_enter()
        for c in range(n_chunks):
            _adan_task(ptrs, chunks, c, s_t, b1, o1, b2, o2, b3, o3, c1_t, c2_t, i_t, e_t, l_t,
                       pre_t, post_t, first)
        nopt_ftz_exit(fp)
        return
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            _adan_task(ptrs, chunks, c, s_t, b1, o1, b2, o2, b3, o3, c1_t, c2_t, i_t, e_t, l_t,
                       pre_t, post_t, first)
        nopt_ftz_exit(fp)


def adan(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
         int n_threads, double sign, double beta1, double beta2, double beta3, double c1,
         double c2, double inv_bc3_sqrt, double eps, double neg_lr, double pre, double post,
         bint first):
    """One Adan step over (param, grad, exp_avg, exp_avg_diff, exp_avg_sq, pre_grad) rows.

    ``c1`` is ``1/(1 - beta1**t)``, ``c2`` is ``beta2/(1 - beta2**t)``,
    ``inv_bc3_sqrt`` is ``1/sqrt(1 - beta3**t)``; ``pre`` and ``post``
    apply the weight decay (see above); ``first`` marks the first step,
    whose gradient difference is 0. Releases the GIL.
    """
    with nogil:
        if is_double:
            _adan(<double*> NULL, ptrs, chunks, n_threads, sign, beta1, beta2, beta3, c1, c2,
                  inv_bc3_sqrt, eps, neg_lr, pre, post, first)
        else:
            _adan(<float*> NULL, ptrs, chunks, n_threads, sign, beta1, beta2, beta3, c1, c2,
                  inv_bc3_sqrt, eps, neg_lr, pre, post, first)


# ---------------------------------------------------------------- LAMB
# ptrs[a] = (param, grad, exp_avg, exp_avg_sq), one row per parameter.
# Pass 1 (per chunk): m = m*b1 + (1-b1)*g, v = v*b2 + (1-b2)*g*g, and the
# partial sums of p*p and r*r, r = m*c1 / (sqrt(v)*inv_bc2_sqrt + eps) + wd*p.
# Then per parameter: trust = |p| / |r| (1 if either is 0).
# Pass 2 (per chunk): recompute r from the new m, v and p (same code, same
# bits) and p = p - lr*trust*r. The update is never stored.
cdef inline floating _lamb_r(floating m, floating v, floating p, floating c1, floating inv,
                             floating eps, floating wd) noexcept nogil:
    return m * c1 / (fsqrt(v) * inv + eps) + wd * p


cdef inline void _lamb_moments(
    const floating* param, const floating* grad, floating* exp_avg, floating* exp_avg_sq,
    floating* r, Py_ssize_t n, floating sign, floating beta1, floating omb1, floating beta2,
    floating omb2, floating c1, floating inv, floating eps, floating wd,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating g, m, v
    for j in range(n):
        g = sign * grad[j]
        m = exp_avg[j] * beta1 + omb1 * g
        v = exp_avg_sq[j] * beta2 + omb2 * g * g
        exp_avg[j] = m
        exp_avg_sq[j] = v
        r[j] = _lamb_r(m, v, param[j], c1, inv, eps, wd)


cdef nopt_dispatched _lamb_task1(
    const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, Py_ssize_t c, double* partials,
    floating sign, floating b1, floating o1, floating b2, floating o2, floating c1,
    floating inv, floating eps, floating wd,
) noexcept nogil:
    cdef Py_ssize_t a = chunks[c, 0], start = chunks[c, 1], n = chunks[c, 2] - start
    cdef Py_ssize_t k, m
    cdef floating r[_BLOCK]
    cdef floating* p = <floating*> ptrs[a, 0] + start
    cdef const floating* g = <const floating*> ptrs[a, 1] + start
    cdef floating* ma = <floating*> ptrs[a, 2] + start
    cdef floating* va = <floating*> ptrs[a, 3] + start
    cdef double pp = 0, rr = 0
    for k in range(0, n, _BLOCK):
        m = min(_BLOCK, n - k)
        _lamb_moments(p + k, g + k, ma + k, va + k, r, m, sign, b1, o1, b2, o2, c1, inv, eps, wd)
        pp = pp + _sum8(p + k, m, True, False)
        rr = rr + _sum8(r, m, True, False)
    partials[2 * c] = pp
    partials[2 * c + 1] = rr


cdef nopt_dispatched _lamb_task2(
    const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, Py_ssize_t c, const double* scale,
    floating c1, floating inv, floating eps, floating wd,
) noexcept nogil:
    cdef Py_ssize_t a = chunks[c, 0], start = chunks[c, 1], n = chunks[c, 2] - start, j
    cdef floating* p = <floating*> ptrs[a, 0] + start
    cdef const floating* m = <const floating*> ptrs[a, 2] + start
    cdef const floating* v = <const floating*> ptrs[a, 3] + start
    cdef floating step = <floating> scale[a]
    for j in range(n):
        p[j] = p[j] + step * _lamb_r(m[j], v[j], p[j], c1, inv, eps, wd)


cdef void _trust(const intptr_t[:, ::1] rows, const double* partials, double* scale,
                 double factor, double coef, double wd, double eps, bint lars) noexcept nogil:
    # Per parameter, partials summed in chunk order: the two norms, then
    # factor * trust ratio (1 when either norm is 0, as optax).
    cdef Py_ssize_t a, c
    cdef double pp, uu, pn, un, ratio
    for a in range(rows.shape[0]):
        pp = 0
        uu = 0
        for c in range(rows[a, 0], rows[a, 1]):
            pp = pp + partials[2 * c]
            uu = uu + partials[2 * c + 1]
        pn = fsqrt(pp)
        un = fsqrt(uu)
        if pn == 0 or un == 0:
            ratio = 1
        elif lars:
            ratio = coef * pn / (un + wd * pn + eps)
        else:
            ratio = pn / un
        scale[a] = factor * ratio


cdef void _lamb(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks,
    const intptr_t[:, ::1] rows, int n_threads, double* partials, double* scale,
    double sign, double beta1, double beta2, double c1, double inv_bc2_sqrt, double eps,
    double wd, double neg_lr,
) noexcept nogil:
    cdef Py_ssize_t c, n_chunks = chunks.shape[0]
    cdef unsigned long long fp = 0
    cdef floating s_t = <floating> sign
    cdef floating b1 = <floating> beta1, o1 = <floating> (1.0 - beta1)
    cdef floating b2 = <floating> beta2, o2 = <floating> (1.0 - beta2)
    cdef floating c1_t = <floating> c1, i_t = <floating> inv_bc2_sqrt
    cdef floating e_t = <floating> eps, w_t = <floating> wd
    if n_threads <= 1:
        fp = nopt_ftz_enter()
        for c in range(n_chunks):
            _lamb_task1(ptrs, chunks, c, partials, s_t, b1, o1, b2, o2, c1_t, i_t, e_t, w_t)
        _trust(rows, partials, scale, neg_lr, 1.0, 0.0, 0.0, False)
        for c in range(n_chunks):
            _lamb_task2(ptrs, chunks, c, scale, c1_t, i_t, e_t, w_t)
        nopt_ftz_exit(fp)
        return
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            _lamb_task1(ptrs, chunks, c, partials, s_t, b1, o1, b2, o2, c1_t, i_t, e_t, w_t)
        nopt_ftz_exit(fp)
    _trust(rows, partials, scale, neg_lr, 1.0, 0.0, 0.0, False)
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            _lamb_task2(ptrs, chunks, c, scale, c1_t, i_t, e_t, w_t)
        nopt_ftz_exit(fp)


def lamb(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks,
         const intptr_t[:, ::1] rows, double[::1] partials, double[::1] scale, bint is_double,
         int n_threads, double sign, double beta1, double beta2, double c1, double inv_bc2_sqrt,
         double eps, double weight_decay, double neg_lr):
    """One LAMB step over (param, grad, exp_avg, exp_avg_sq) rows, one row per parameter.

    ``rows``, ``partials`` and ``scale`` come from :func:`segment_table`.
    ``c1`` is ``1/(1 - beta1**t)``, ``inv_bc2_sqrt`` is
    ``1/sqrt(1 - beta2**t)`` and ``neg_lr`` is ``-lr``. Releases the GIL.
    """
    cdef Py_ssize_t n_chunks = chunks.shape[0]
    if n_chunks == 0:
        return
    _check_work(n_chunks, rows.shape[0], partials, scale)
    with nogil:
        if is_double:
            _lamb(<double*> NULL, ptrs, chunks, rows, n_threads, &partials[0], &scale[0], sign,
                  beta1, beta2, c1, inv_bc2_sqrt, eps, weight_decay, neg_lr)
        else:
            _lamb(<float*> NULL, ptrs, chunks, rows, n_threads, &partials[0], &scale[0], sign,
                  beta1, beta2, c1, inv_bc2_sqrt, eps, weight_decay, neg_lr)


# ---------------------------------------------------------------- LARS
# ptrs[a] = (param, grad, momentum_buffer), one row per parameter.
# Pass 1 (per chunk): partial sums of p*p and g*g (one loop over both; see
# nopt_lars_norms above). Then per parameter: scale = lr * trust, trust =
# coef*|p| / (|g| + wd*|p| + eps) (1 if either norm is 0). Pass 2: d = g +
# wd*p, b = momentum*b + scale*d, p = p - b (or, Nesterov, p = p - (scale*d +
# momentum*b)). Two passes over memory, the least LARS allows beyond the
# caches: a parameter's norms are complete only after its last element.
cdef nopt_dispatched _lars_task1(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, Py_ssize_t c,
    double* partials,
) noexcept nogil:
    cdef Py_ssize_t a = chunks[c, 0], start = chunks[c, 1], n = chunks[c, 2] - start
    if floating is float:
        nopt_lars_norms_float(<const float*> ptrs[a, 0] + start, <const float*> ptrs[a, 1] + start,
                              n, &partials[2 * c], &partials[2 * c + 1])
    else:
        nopt_lars_norms_double(<const double*> ptrs[a, 0] + start,
                               <const double*> ptrs[a, 1] + start, n, &partials[2 * c],
                               &partials[2 * c + 1])


cdef nopt_dispatched _lars_task2(
    const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, Py_ssize_t c, const double* scale,
    floating sign, floating wd, floating momentum, bint nesterov,
) noexcept nogil:
    cdef Py_ssize_t a = chunks[c, 0], start = chunks[c, 1], n = chunks[c, 2] - start
    cdef floating* p = <floating*> ptrs[a, 0] + start
    cdef const floating* g = <const floating*> ptrs[a, 1] + start
    cdef floating* b = <floating*> ptrs[a, 2] + start
    # Literal flags: each call inlines to its own branch-free vector loop.
    if floating is float:
        if nesterov:
            nopt_lars_update_float(p, g, b, n, sign, wd, momentum, <float> scale[a], 1)
        else:
            nopt_lars_update_float(p, g, b, n, sign, wd, momentum, <float> scale[a], 0)
    else:
        if nesterov:
            nopt_lars_update_double(p, g, b, n, sign, wd, momentum, scale[a], 1)
        else:
            nopt_lars_update_double(p, g, b, n, sign, wd, momentum, scale[a], 0)


cdef void _lars(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks,
    const intptr_t[:, ::1] rows, int n_threads, double* partials, double* scale,
    double sign, double lr, double momentum, double wd, double coef, double eps, bint nesterov,
) noexcept nogil:
    cdef Py_ssize_t c, n_chunks = chunks.shape[0]
    cdef unsigned long long fp = 0
    cdef floating s_t = <floating> sign, w_t = <floating> wd, m_t = <floating> momentum
    if n_threads <= 1:
        fp = nopt_ftz_enter()
        for c in range(n_chunks):
            _lars_task1(tag, ptrs, chunks, c, partials)
        _trust(rows, partials, scale, lr, coef, wd, eps, True)
        for c in range(n_chunks):
            _lars_task2(ptrs, chunks, c, scale, s_t, w_t, m_t, nesterov)
        nopt_ftz_exit(fp)
        return
    # The trust ratios, between the two passes, in the caller's thread (the
    # chunk table, hence every partial sum, is the same for any thread count).
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            _lars_task1(tag, ptrs, chunks, c, partials)
        nopt_ftz_exit(fp)
    _trust(rows, partials, scale, lr, coef, wd, eps, True)
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            _lars_task2(ptrs, chunks, c, scale, s_t, w_t, m_t, nesterov)
        nopt_ftz_exit(fp)


def lars(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks,
         const intptr_t[:, ::1] rows, double[::1] partials, double[::1] scale, bint is_double,
         int n_threads, double sign, double lr, double momentum, double weight_decay,
         double trust_coefficient, double eps, bint nesterov):
    """One LARS step over (param, grad, momentum_buffer) rows, one row per parameter.

    ``rows``, and the work space ``partials`` (two doubles per chunk) and
    ``scale`` (one per row), come from :func:`segment_table`. Releases the GIL.
    """
    cdef Py_ssize_t n_chunks = chunks.shape[0]
    if n_chunks == 0:
        return
    _check_work(n_chunks, rows.shape[0], partials, scale)
    with nogil:
        if is_double:
            _lars(<double*> NULL, ptrs, chunks, rows, n_threads, &partials[0], &scale[0], sign,
                  lr, momentum, weight_decay, trust_coefficient, eps, nesterov)
        else:
            _lars(<float*> NULL, ptrs, chunks, rows, n_threads, &partials[0], &scale[0], sign,
                  lr, momentum, weight_decay, trust_coefficient, eps, nesterov)


# ---------------------------------------------------------------- Prodigy
# Pass 1, per batch: ptrs[a] = (param, grad, p0, s).
#   g = grad (+ wd*p, coupled)        dot += g*(p0 - p)
#   s = s*b3 + a_s*g                  abs_sum += |s|
# returns (dot, abs_sum); prodigy_run combines every batch's sums (in
# order) into the new d. Pass 2, a rule spec (nopt/prodigy.py), updates the
# moments (whose weights use the old d) and the parameters (which need the
# new d): each stream is read once per pass it is needed in, 48 bytes per
# float32 element in all.
cdef inline void _prodigy_sums(
    const floating* param, const floating* grad, const floating* p0, floating* s,
    floating* dot, Py_ssize_t n, floating wd, floating beta3, floating a_s, bint coupled,
) noexcept nogil:
    # The C loop above (restrict pointers), for this float type.
    if floating is float:
        nopt_prodigy_sums_float(param, grad, p0, s, dot, n, wd, beta3, a_s, coupled)
    else:
        nopt_prodigy_sums_double(param, grad, p0, s, dot, n, wd, beta3, a_s, coupled)


cdef nopt_dispatched _prodigy_task1(
    const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, Py_ssize_t c, double* partials,
    floating wd, floating b3, floating a_s, bint coupled,
) noexcept nogil:
    cdef Py_ssize_t a = chunks[c, 0], start = chunks[c, 1], n = chunks[c, 2] - start
    cdef Py_ssize_t k, m
    cdef floating dot[_BLOCK]
    cdef const floating* p = <const floating*> ptrs[a, 0] + start
    cdef const floating* g = <const floating*> ptrs[a, 1] + start
    cdef const floating* p0 = <const floating*> ptrs[a, 2] + start
    cdef floating* s = <floating*> ptrs[a, 3] + start
    cdef double dd = 0, ss = 0
    for k in range(0, n, _BLOCK):
        m = min(_BLOCK, n - k)
        if coupled:
            _prodigy_sums(p + k, g + k, p0 + k, s + k, dot, m, wd, b3, a_s, True)
        else:
            _prodigy_sums(p + k, g + k, p0 + k, s + k, dot, m, wd, b3, a_s, False)
        dd = dd + _sum8(dot, m, False, False)
        ss = ss + _sum8(s + k, m, False, True)
    partials[2 * c] = dd
    partials[2 * c + 1] = ss


cdef void _prodigy1(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double* partials, double wd, double beta3, double a_s,
) noexcept nogil:
    cdef Py_ssize_t c, n_chunks = chunks.shape[0]
    cdef unsigned long long fp = 0
    cdef floating w_t = <floating> wd, b3 = <floating> beta3, as_ = <floating> a_s
    cdef bint coupled = wd != 0
    if n_threads <= 1:
        fp = nopt_ftz_enter()
        for c in range(n_chunks):
            _prodigy_task1(ptrs, chunks, c, partials, w_t, b3, as_, coupled)
        nopt_ftz_exit(fp)
        return
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            _prodigy_task1(ptrs, chunks, c, partials, w_t, b3, as_, coupled)
        nopt_ftz_exit(fp)


def prodigy_sums(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks,
                 double[::1] partials, bint is_double, int n_threads, double weight_decay,
                 double beta3, double a_s):
    """Prodigy's first pass (see above); returns ``(dot, abs_sum)``, summed in chunk order.

    ``partials`` is the work space, two doubles per chunk; ``weight_decay``
    is the coupled L2 term (0 when decoupled). Releases the GIL.
    """
    cdef Py_ssize_t c, n_chunks = chunks.shape[0]
    if n_chunks == 0:
        return 0.0, 0.0
    if partials.shape[0] < 2 * n_chunks:
        raise ValueError("the work space is smaller than the table")
    cdef double dot = 0, abs_sum = 0
    with nogil:
        if is_double:
            _prodigy1(<double*> NULL, ptrs, chunks, n_threads, &partials[0], weight_decay, beta3,
                      a_s)
        else:
            _prodigy1(<float*> NULL, ptrs, chunks, n_threads, &partials[0], weight_decay, beta3,
                      a_s)
        for c in range(n_chunks):
            dot = dot + partials[2 * c]
            abs_sum = abs_sum + partials[2 * c + 1]
    return dot, abs_sum


# ---------------------------------------------------------------- combinators
# Lookahead's synchronisation, ptrs[a] = (fast, slow):
#   slow = slow + alpha*(fast - slow)    fast = slow
# MultiSteps' accumulation, ptrs[a] = (accumulator, grad):
#   acc = (acc + g) * scale   (acc = g * scale on the first mini-step)
cdef inline void _sync_loop(floating* fast, floating* slow, Py_ssize_t n,
                            floating alpha) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating s
    for j in range(n):
        s = slow[j]
        s = s + alpha * (fast[j] - s)
        slow[j] = s
        fast[j] = s


cdef inline void _accumulate_loop(floating* acc, const floating* grad, Py_ssize_t n,
                                  floating scale, bint first) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        if first:
            acc[j] = grad[j] * scale
        else:
            acc[j] = (acc[j] + grad[j]) * scale


cdef nopt_dispatched _combine_task(
    const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, Py_ssize_t c, floating value,
    int op,
) noexcept nogil:
    cdef Py_ssize_t a = chunks[c, 0], start = chunks[c, 1], n = chunks[c, 2] - start
    cdef floating* x = <floating*> ptrs[a, 0] + start
    cdef floating* y = <floating*> ptrs[a, 1] + start
    if op == 0:
        _sync_loop(x, y, n, value)
    elif op == 1:
        _accumulate_loop(x, y, n, value, True)
    else:
        _accumulate_loop(x, y, n, value, False)


cdef void _combine(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double value, int op,
) noexcept nogil:
    cdef Py_ssize_t c, n_chunks = chunks.shape[0]
    cdef unsigned long long fp = 0
    cdef floating v_t = <floating> value
    if n_threads <= 1:
        fp = nopt_ftz_enter()
        for c in range(n_chunks):
            _combine_task(ptrs, chunks, c, v_t, op)
        nopt_ftz_exit(fp)
        return
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            _combine_task(ptrs, chunks, c, v_t, op)
        nopt_ftz_exit(fp)


def lookahead_sync(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
                   int n_threads, double alpha):
    """slow += alpha*(fast - slow); fast = slow, over (fast, slow) rows (releases the GIL)."""
    with nogil:
        if is_double:
            _combine(<double*> NULL, ptrs, chunks, n_threads, alpha, 0)
        else:
            _combine(<float*> NULL, ptrs, chunks, n_threads, alpha, 0)


def accumulate(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
               int n_threads, double scale, bint first):
    """acc = (acc + grad)*scale (acc = grad*scale if ``first``), over (acc, grad) rows."""
    cdef int op = 1 if first else 2
    with nogil:
        if is_double:
            _combine(<double*> NULL, ptrs, chunks, n_threads, scale, op)
        else:
            _combine(<float*> NULL, ptrs, chunks, n_threads, scale, op)


def set_items(dict target, tuple keys, tuple values):
    """``target[k] = v`` for each pair: a group's counters, written in a step's run phase.

    A compiled function, so that ``_plan.run`` can call it between kernels
    (it calls each function from C with no keyword dict, which
    ``dict.update`` refuses) and no signal handler runs in between.
    """
    cdef Py_ssize_t k
    if len(keys) != len(values):
        raise ValueError("set_items: as many keys as values")
    for k in range(len(keys)):
        target[keys[k]] = values[k]


def prodigy_run(object state, list groups, tuple scalars, list parts, object update):
    """Prodigy's run phase: every batch's first pass, the new d, then every batch's update.

    Called by ``_plan.run`` as the step's one planned call (nopt/prodigy.py
    plans it), so no Python signal handler runs until the whole step is
    applied: d is global, so a step cannot be split into independent
    kernel calls per batch as other rules' are. Everything that can fail was
    checked when planning.

    ``scalars`` is ``(d, dlr, beta3, d_numerator, d_max, d_coef,
    growth_rate, last_d0, lr, has_exp_avg, beta1, beta2, a_m, a_v)``; each
    of ``parts`` is ``(sums, coef, params, old_steps, ptrs, chunks,
    is_double, n_threads, coupled_wd, neg_wd, eps, moments)``: the first
    pass's arguments (None for a group with lr 0), the weight of its dot
    product in the numerator, the batch's parameters and the step counts
    they held before this step, the update's table and scalars, and whether
    it updates the moments (not with lr 0). ``update`` is the rule kernel
    ``rules.prodigy_update``.
    """
    cdef double d, dlr, beta3, d_max, d_coef, growth, last_d0, lr
    cdef double numerator = 0, denominator = 0, dot, abs_sum, d_hat, global_numerator
    cdef Py_ssize_t k
    cdef bint has_exp_avg
    cdef tuple part
    d, dlr, beta3, global_numerator, d_max, d_coef, growth, last_d0, lr, has_exp_avg = scalars[:10]
    beta1, beta2, a_m, a_v = scalars[10:14]
    for part in parts:
        if part[0] is not None:
            dot, abs_sum = prodigy_sums(*part[0])
            numerator = numerator + <double> part[1] * dot
            denominator = denominator + abs_sum
    if denominator == 0:
        # As the package: no update, and neither the step nor k is counted.
        for part in parts:
            params, olds = part[2], part[3]
            for k in range(len(params) - 1, -1, -1):
                state[params[k]]["step"] = olds[k]
        return
    d_hat = d
    global_numerator = global_numerator * beta3 + numerator
    if lr > 0.0:
        d_hat = d_coef * global_numerator / denominator
        if d == last_d0:
            d = max(d, d_hat)
        d_max = max(d_max, d_hat)
        d = min(d_max, d * growth)
    for group in groups:
        group["d_numerator"] = global_numerator
        group["d_denom"] = denominator
        group["d"] = d
        group["d_max"] = d_max
        group["d_hat"] = d_hat
    for part in parts:
        # (A group with lr 0 skips the first pass and keeps its moments: part[11].)
        update(part[4], part[5], part[6], part[7], part[8], part[9],
               -dlr if has_exp_avg else -dlr * d, d * <double> part[10], beta1, a_m, beta2, a_v,
               has_exp_avg, part[11])
    for group in groups:
        group["k"] = group["k"] + 1
