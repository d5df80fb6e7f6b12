# RMSprop, with momentum, the centered variant, weight decay and maximize.
#
# One call updates every array of a batch: ptrs[a] = (param, grad, square_avg
# [, momentum_buffer] [, grad_avg]); buf_stream / avg_stream say where the
# optional streams are (0, the param, when absent: never touched then). No
# scalar depends on the step count, so a batch is never split.
#
# The order of operations is torch's single-tensor one, and so are its fused
# multiply-adds (torch's CPU kernels use FMA for add(alpha=), addcmul and lerp):
#   g          = fma(weight_decay, param, g)
#   square_avg = fma((1 - alpha) * g, g, square_avg * alpha)
#   grad_avg   = lerp(grad_avg, g, 1 - alpha)          (centered; two-sided, fused)
#   avg        = sqrt(fma(-grad_avg, grad_avg, square_avg)) + eps   (or sqrt(square_avg) + eps)
#   buf        = buf * momentum + g / avg;  param = fma(-lr, buf, param)   (momentum > 0)
#   param      = param + (-lr * g) / avg                                   (otherwise)
# The centered variance is a difference of nearly equal terms, so one extra
# rounding there changes float32 results visibly after a few dozen steps;
# rounding once, as torch does, keeps float32 runs on torch's numbers.
# fma32 is computed in double: the float product is exact there (it fits in
# 53 bits); the sum rounds to double, then to float (this differs from a
# single rounding only when the double sum falls exactly on a float32
# halfway point, vanishingly rare). It is plain SSE2 / AVX arithmetic, the
# same operations in every ISA clone, so the clones give identical bits and
# all vectorise (fmaf would be a libm call per element in the baseline and
# AVX2 clones: gcc's "avx2" target has no FMA). float64 rounds twice (an
# exact double FMA would need -mfma or a slow libm call).
#
# Fast path (as sgd.pyx): the per-chunk functions (_plain_task, _momentum_task,
# _centered_task, _centered_momentum_task) are compiled for AVX-512 / AVX2 /
# baseline (nopt_dispatched) and call the loop only with literal flags
# (maximize, weight decay, momentum, centered: 16 branch-free copies that gcc
# vectorises; the lerp branch is a select). With
# n_threads <= 1 the chunks run in the calling thread, without an OpenMP team.

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from ._common cimport fabs_, floating, fsqrt, nopt_ftz_enter, nopt_ftz_exit


cdef extern from * nogil:
    """
    #include <math.h>
    #include "_compat.h"
    /* Float32 multiply-add rounded once, as torch's FMA kernels. fmaf is
     * exact everywhere (one IEEE rounding), so every ISA clone gives the same
     * bits: the AVX-512 and FMA clones below get the hardware instruction,
     * vectorised; the baseline clone (x86-64 CPUs without FMA, now rare)
     * calls libm's fmaf per element. A build without clones and without
     * FMA (e.g. MSVC, or macOS on x86-64) rounds in double instead, which
     * vectorises: the product is exact in double, then the sum rounds to
     * double and to float, which differs from fmaf only when the double sum
     * falls exactly on a float32 halfway point (vanishingly rare). */
    #if NOPT_HAVE_CLONES || defined(__FMA__) || defined(__aarch64__)
    #define nopt_fma32(a, b, c) fmaf((a), (b), (c))
    #define NOPT_FMA32_EXACT 1
    #else
    #define nopt_fma32(a, b, c) ((float)((double)(a) * (double)(b) + (double)(c)))
    #define NOPT_FMA32_EXACT 0
    #endif
    /* The shared clones are AVX-512, AVX2 and the baseline; gcc's "avx2"
     * target has no FMA, so there fmaf would be a libm call per element.
     * RMSprop's middle clone is x86-64-v3 instead (AVX2 + FMA, which every
     * AVX2 CPU has; gcc >= 12 resolves it by CPU features), or "fma" (AVX +
     * FMA) for older gcc and clang. */
    #if NOPT_HAVE_CLONES && !defined(__clang__) && __GNUC__ >= 12
    #define NOPT_FMA_CLONES __attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
    #elif NOPT_HAVE_CLONES
    #define NOPT_FMA_CLONES __attribute__((target_clones("avx512f", "fma", "default")))
    #else
    #define NOPT_FMA_CLONES
    #endif
    """
    float nopt_fma32(float a, float b, float c)
    int NOPT_FMA32_EXACT
    # Return type of RMSprop's per-chunk functions (as _common's nopt_dispatched).
    ctypedef void nopt_fma_dispatched "NOPT_FMA_CLONES void"


FMA32_EXACT = bool(NOPT_FMA32_EXACT)


cdef inline floating _fma(floating a, floating b, floating c) noexcept nogil:
    if floating is float:
        return nopt_fma32(a, b, c)
    else:
        return a * b + c


cdef inline void _rmsprop_loop(
    floating* param,              # IN/OUT
    const floating* grad,         # IN
    floating* square_avg,         # IN/OUT
    floating* buf,                # IN/OUT (only with momentum)
    floating* grad_avg,           # IN/OUT (only when centered)
    Py_ssize_t n,
    floating neg_lr, floating alpha, floating one_minus_alpha, floating lerp_coef,
    bint lerp_from_start, floating eps, floating momentum, floating weight_decay,
    bint decay, bint maximize, bint use_momentum, bint centered,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating g, p, v, m, b, base, avg
    for j in range(n):
        p = param[j]
        g = grad[j]
        v = square_avg[j]
        if maximize:
            g = -g
        if decay:
            g = _fma(weight_decay, p, g)
        v = _fma(one_minus_alpha * g, g, v * alpha)
        square_avg[j] = v
        if centered:
            # torch.lerp(m, g, w): fma(w, g - m, m) for |w| < 0.5, else
            # fma(-(1 - w), g - m, g); lerp_coef holds w or -(1 - w).
            m = grad_avg[j]
            base = m if lerp_from_start else g
            m = _fma(lerp_coef, g - m, base)
            grad_avg[j] = m
            avg = fsqrt(_fma(-m, m, v)) + eps
        else:
            avg = fsqrt(v) + eps
        if use_momentum:
            b = buf[j]
            b = b * momentum + g / avg
            buf[j] = b
            param[j] = _fma(neg_lr, b, p)
        else:
            param[j] = p + (neg_lr * g) / avg


# Four per-chunk functions, one per (momentum, centered) pair, each with its
# four (weight decay, maximize) loops: sixteen inlined loops in one function
# exceed gcc's inlining budget, and a loop left out of line keeps its flags as
# run-time tests (and the baseline ISA): 5-10x slower.
cdef nopt_fma_dispatched _plain_task(
    floating* p, const floating* g, floating* v, floating* b, floating* m, Py_ssize_t n,
    floating neg_lr, floating alpha, floating oma, floating coef, bint from_start,
    floating eps, floating momentum, floating wd, bint decay, bint maximize,
) noexcept nogil:
    if maximize:
        if decay:
            _rmsprop_loop(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start, eps,
                          momentum, wd, True, True, False, False)
        else:
            _rmsprop_loop(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start, eps,
                          momentum, wd, False, True, False, False)
    elif decay:
        _rmsprop_loop(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start, eps,
                      momentum, wd, True, False, False, False)
    else:
        _rmsprop_loop(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start, eps,
                      momentum, wd, False, False, False, False)


cdef nopt_fma_dispatched _momentum_task(
    floating* p, const floating* g, floating* v, floating* b, floating* m, Py_ssize_t n,
    floating neg_lr, floating alpha, floating oma, floating coef, bint from_start,
    floating eps, floating momentum, floating wd, bint decay, bint maximize,
) noexcept nogil:
    if maximize:
        if decay:
            _rmsprop_loop(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start, eps,
                          momentum, wd, True, True, True, False)
        else:
            _rmsprop_loop(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start, eps,
                          momentum, wd, False, True, True, False)
    elif decay:
        _rmsprop_loop(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start, eps,
                      momentum, wd, True, False, True, False)
    else:
        _rmsprop_loop(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start, eps,
                      momentum, wd, False, False, True, False)


cdef nopt_fma_dispatched _centered_task(
    floating* p, const floating* g, floating* v, floating* b, floating* m, Py_ssize_t n,
    floating neg_lr, floating alpha, floating oma, floating coef, bint from_start,
    floating eps, floating momentum, floating wd, bint decay, bint maximize,
) noexcept nogil:
    if maximize:
        if decay:
            _rmsprop_loop(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start, eps,
                          momentum, wd, True, True, False, True)
        else:
            _rmsprop_loop(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start, eps,
                          momentum, wd, False, True, False, True)
    elif decay:
        _rmsprop_loop(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start, eps,
                      momentum, wd, True, False, False, True)
    else:
        _rmsprop_loop(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start, eps,
                      momentum, wd, False, False, False, True)


cdef nopt_fma_dispatched _centered_momentum_task(
    floating* p, const floating* g, floating* v, floating* b, floating* m, Py_ssize_t n,
    floating neg_lr, floating alpha, floating oma, floating coef, bint from_start,
    floating eps, floating momentum, floating wd, bint decay, bint maximize,
) noexcept nogil:
    if maximize:
        if decay:
            _rmsprop_loop(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start, eps,
                          momentum, wd, True, True, True, True)
        else:
            _rmsprop_loop(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start, eps,
                          momentum, wd, False, True, True, True)
    elif decay:
        _rmsprop_loop(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start, eps,
                      momentum, wd, True, False, True, True)
    else:
        _rmsprop_loop(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start, eps,
                      momentum, wd, False, False, True, True)


cdef inline void _rmsprop_chunk(
    const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, Py_ssize_t c,
    int buf_stream, int avg_stream,
    floating neg_lr, floating alpha, floating oma, floating coef, bint from_start,
    floating eps, floating momentum, floating wd,
    bint decay, bint maximize, bint use_momentum, bint centered,
) noexcept nogil:
    cdef Py_ssize_t a = chunks[c, 0], start = chunks[c, 1], n = chunks[c, 2] - start
    cdef floating* p = <floating*> ptrs[a, 0] + start
    cdef const floating* g = <const floating*> ptrs[a, 1] + start
    cdef floating* v = <floating*> ptrs[a, 2] + start
    cdef floating* b = <floating*> ptrs[a, buf_stream] + start
    cdef floating* m = <floating*> ptrs[a, avg_stream] + start
    if centered:
        if use_momentum:
            _centered_momentum_task(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start,
                                    eps, momentum, wd, decay, maximize)
        else:
            _centered_task(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start,
                           eps, momentum, wd, decay, maximize)
    elif use_momentum:
        _momentum_task(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start,
                       eps, momentum, wd, decay, maximize)
    else:
        _plain_task(p, g, v, b, m, n, neg_lr, alpha, oma, coef, from_start,
                    eps, momentum, wd, decay, maximize)


cdef void _rmsprop(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    int buf_stream, int avg_stream, double lr, double alpha, double eps,
    double weight_decay, double momentum, bint centered, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t c, n_chunks = chunks.shape[0]
    cdef unsigned long long fp = 0   # set per thread; initialised for -Wuninitialized
    cdef floating neg_lr_t = <floating> (-lr), alpha_t = <floating> alpha
    cdef floating oma_t = <floating> (1.0 - alpha), eps_t = <floating> eps
    # torch converts the lerp weight w = 1 - alpha to the tensor's type first.
    cdef floating w_t = <floating> (1.0 - alpha)
    cdef bint from_start = fabs_(w_t) < 0.5
    cdef floating coef_t = w_t if from_start else -(1 - w_t)
    cdef floating momentum_t = <floating> momentum, wd_t = <floating> weight_decay
    cdef bint decay = weight_decay != 0
    cdef bint use_momentum = momentum > 0
    if n_threads <= 1:
        # No parallel region at all (a one-thread team still costs about a
        # microsecond, most of a small model's step).
        fp = nopt_ftz_enter()
        for c in range(n_chunks):
            _rmsprop_chunk(ptrs, chunks, c, buf_stream, avg_stream, neg_lr_t, alpha_t, oma_t,
                          coef_t, from_start, eps_t, momentum_t, wd_t, decay, maximize,
                          use_momentum, centered)
        nopt_ftz_exit(fp)
        return
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            _rmsprop_chunk(ptrs, chunks, c, buf_stream, avg_stream, neg_lr_t, alpha_t, oma_t,
                          coef_t, from_start, eps_t, momentum_t, wd_t, decay, maximize,
                          use_momentum, centered)
        nopt_ftz_exit(fp)


def rmsprop(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
            int n_threads, int buf_stream, int avg_stream, double lr, double alpha,
            double eps, double weight_decay, double momentum, bint centered, bint maximize):
    """Apply one RMSprop step to every array in the table (releases the GIL).

    ``buf_stream`` / ``avg_stream`` index the momentum buffer and grad_avg
    streams of ``ptrs``; they are used only when ``momentum > 0`` / ``centered``.
    """
    if not (0 <= buf_stream < ptrs.shape[1] and 0 <= avg_stream < ptrs.shape[1]):
        raise ValueError(f"stream indices ({buf_stream}, {avg_stream}) out of range")
    with nogil:
        if is_double:
            _rmsprop(<double*> NULL, ptrs, chunks, n_threads, buf_stream, avg_stream, lr, alpha,
                     eps, weight_decay, momentum, centered, maximize)
        else:
            _rmsprop(<float*> NULL, ptrs, chunks, n_threads, buf_stream, avg_stream, lr, alpha,
                     eps, weight_decay, momentum, centered, maximize)
