# The memory roofline of an update rule, measured the way the rule runs.
#
# stream() walks the same work table as an optimizer kernel (ptrs/chunks
# from _plan.make_table, same thread count, same static schedule, flush to
# zero) and moves the same bytes: per element it reads ``n_read`` streams and
# writes the first ``n_write`` of them back in place, with trivial arithmetic
# (x = sum * a + b). Its time is what the update would take if it were
# limited by memory alone; nopt.bench divides the two.
#
# The loops are plain C (below) with compile-time stream counts and
# ``restrict`` pointers, so gcc vectorises every (n_read, n_write) variant
# without run-time alias checks; like the kernels' per-chunk functions they
# are compiled for AVX-512, AVX2 and the baseline (NOPT_TARGET_CLONES).

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from ._common cimport nopt_ftz_enter, nopt_ftz_exit

cdef extern from *:
    """
    #include <stddef.h>
    #include "_compat.h"
    #if defined(_MSC_VER) && !defined(restrict)
    #define restrict __restrict
    #endif
    #define NOPT_MAX_STREAMS 6
    /* Inlined into each ISA clone of the dispatcher below: left out of line (gcc's
       inlining budget runs out at 21 variants), a variant runs unvectorised. */
    #if defined(__GNUC__) || defined(__clang__)
    #define NOPT_STREAM_INLINE static inline __attribute__((always_inline))
    #else
    #define NOPT_STREAM_INLINE static inline
    #endif
    #define NOPT_R(R, k) if (R > k) s += p##k[j];
    #define NOPT_W(W, k) if (W > k) p##k[j] = s * a + b;
    #define NOPT_STREAM(T, R, W)                                                     \\
    NOPT_STREAM_INLINE void nopt_stream_##T##_##R##_##W(T **p, ptrdiff_t n, T a, T b) { \\
        T *restrict p0 = p[0];                                                       \\
        T *restrict p1 = R > 1 ? p[1] : NULL;                                        \\
        T *restrict p2 = R > 2 ? p[2] : NULL;                                        \\
        T *restrict p3 = R > 3 ? p[3] : NULL;                                        \\
        T *restrict p4 = R > 4 ? p[4] : NULL;                                        \\
        T *restrict p5 = R > 5 ? p[5] : NULL;                                        \\
        for (ptrdiff_t j = 0; j < n; j++) {                                          \\
            T s = 0;                                                                 \\
            NOPT_R(R, 0) NOPT_R(R, 1) NOPT_R(R, 2) NOPT_R(R, 3) NOPT_R(R, 4)         \\
            NOPT_R(R, 5)                                                             \\
            NOPT_W(W, 0) NOPT_W(W, 1) NOPT_W(W, 2) NOPT_W(W, 3) NOPT_W(W, 4)         \\
            NOPT_W(W, 5)                                                             \\
        }                                                                            \\
    }
    /* Every (R, W) with written streams among the read ones: 1 <= W <= R <= 6. */
    #define NOPT_ALL(X, T) X(T, 1, 1)                                                \\
        X(T, 2, 1) X(T, 2, 2)                                                        \\
        X(T, 3, 1) X(T, 3, 2) X(T, 3, 3)                                             \\
        X(T, 4, 1) X(T, 4, 2) X(T, 4, 3) X(T, 4, 4)                                  \\
        X(T, 5, 1) X(T, 5, 2) X(T, 5, 3) X(T, 5, 4) X(T, 5, 5)                       \\
        X(T, 6, 1) X(T, 6, 2) X(T, 6, 3) X(T, 6, 4) X(T, 6, 5) X(T, 6, 6)
    NOPT_ALL(NOPT_STREAM, float)
    NOPT_ALL(NOPT_STREAM, double)

    #define NOPT_CASE(T, R, W) case (R) * 8 + (W): nopt_stream_##T##_##R##_##W(p, n, a, b); break;
    #define NOPT_DISPATCH(T)                                                         \\
    static NOPT_TARGET_CLONES void nopt_stream_##T(T **p, ptrdiff_t n, int r, int w, T a, T b) {        \\
        switch (r * 8 + w) {                                                         \\
            NOPT_ALL(NOPT_CASE, T)                                                   \\
            default: break;                                                          \\
        }                                                                            \\
    }
    NOPT_DISPATCH(float)
    NOPT_DISPATCH(double)
    """
    int NOPT_MAX_STREAMS
    void nopt_stream_float(float** p, Py_ssize_t n, int r, int w, float a, float b) nogil
    void nopt_stream_double(double** p, Py_ssize_t n, int r, int w, double a, double b) nogil

MAX_STREAMS = NOPT_MAX_STREAMS


cdef inline void _task(
    const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, Py_ssize_t c,
    bint is_double, int n_read, int n_write,
) noexcept nogil:
    cdef Py_ssize_t a = chunks[c, 0], start = chunks[c, 1], n = chunks[c, 2] - start
    cdef int k
    cdef float* pf[6]
    cdef double* pd[6]
    if is_double:
        for k in range(n_read):
            pd[k] = <double*> ptrs[a, k] + start
        nopt_stream_double(pd, n, n_read, n_write, 0.5 / n_read, 1.0)
    else:
        for k in range(n_read):
            pf[k] = <float*> ptrs[a, k] + start
        nopt_stream_float(pf, n, n_read, n_write, <float> (0.5 / n_read), 1.0)


def stream(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
           int n_threads, int n_read, int n_write):
    """Read ``n_read`` streams and write the first ``n_write`` back, per element.

    Parameters
    ----------
    ptrs, chunks, n_threads
        A work table from ``_plan.make_table`` (at least ``n_read`` streams).
    is_double : bool
        float64 arrays (else float32).
    n_read, n_write : int
        1 <= n_write <= n_read <= MAX_STREAMS. Written streams are among the
        read ones, in place, like an optimizer's state.

    Notes
    -----
    Values stay bounded (each written element becomes 0.5 * mean + 1 of the
    element's streams), so repeated calls never reach infinities or
    subnormals. Releases the GIL.
    """
    if not 1 <= n_write <= n_read <= NOPT_MAX_STREAMS:
        raise ValueError(f"need 1 <= n_write <= n_read <= {NOPT_MAX_STREAMS}, got {n_read}, {n_write}")
    if ptrs.shape[0] > 0 and ptrs.shape[1] < n_read:
        raise ValueError(f"the table has {ptrs.shape[1]} streams; n_read is {n_read}")
    cdef Py_ssize_t c, n_chunks = chunks.shape[0]
    cdef unsigned long long fp
    with nogil:
        if n_threads <= 1:
            fp = nopt_ftz_enter()
            for c in range(n_chunks):
                _task(ptrs, chunks, c, is_double, n_read, n_write)
            nopt_ftz_exit(fp)
        else:
            with parallel(num_threads=n_threads):
                fp = nopt_ftz_enter()
                for c in prange(n_chunks, schedule="static"):
                    _task(ptrs, chunks, c, is_double, n_read, n_write)
                nopt_ftz_exit(fp)
