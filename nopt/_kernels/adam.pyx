# Adam / AdamW (and AMSGrad): one elementwise pass per batch.
#
# ptrs[a] = (param, grad, exp_avg, exp_avg_sq[, max_exp_avg_sq]). Python gives
# the per-step scalars (bias corrections folded into ``neg_step`` and
# ``inv_bc2_sqrt``), so the loop only reads and writes the streams once.
# Order of operations follows torch's single-tensor Adam:
#   g = ±grad (+ wd*p, coupled)   p = p * (1 - lr*wd) (decoupled; 1 otherwise)
#   m = lerp(m, g, 1-beta1)       v = v*beta2 + ((1-beta2)*g)*g
#   v^ = max(v^, v) (amsgrad)     p = p + (neg_step*m) / (sqrt(v^)*inv_bc2_sqrt + eps)
# ``lerp`` is torch's two-sided formula (chosen by the weight, once per call).
#
# Speed (see _common.pxd, _compat.h and sgd.pyx for the pattern):
# - _adam_loop takes its three flags (coupled decay, small lerp weight,
#   amsgrad) as arguments, but _adam_task only calls it with literal
#   True/False, so every inlined copy is a branch-free loop that gcc
#   vectorises; the flags are never tested per element.
# - _adam_task (one chunk) is compiled for AVX-512, AVX2 and the baseline and
#   picked at load time (nopt_dispatched): same bits, wider vectors. An
#   in-cache step is bound by the divide and the square root, so the width
#   matters there; a large step is bound by memory.
# - With n_threads <= 1 the chunks run in the caller's thread, without an
#   OpenMP team (a team costs about a microsecond: most of a small step).
# The sign (maximize) and the decoupled factor stay multiplications by
# +-1 and by 1: exact, and free next to the divide.

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from ._common cimport (floating, fabs_, fsqrt, max_nan, nopt_dispatched, nopt_ftz_enter,
                       nopt_ftz_exit)


cdef inline void _adam_loop(
    floating* param,              # IN/OUT
    const floating* grad,         # IN
    floating* exp_avg,            # IN/OUT
    floating* exp_avg_sq,         # IN/OUT
    floating* max_exp_avg_sq,     # IN/OUT (amsgrad only)
    Py_ssize_t n,
    floating sign, floating decay, floating wd, floating w, floating beta2,
    floating one_minus_beta2, floating inv_bc2_sqrt, floating eps, floating neg_step,
    bint coupled, bint small, bint amsgrad,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating g, p, m, v, vmax, d
    cdef floating w_minus_1 = w - 1
    for j in range(n):
        g = sign * grad[j]
        p = param[j] * decay
        m = exp_avg[j]
        v = exp_avg_sq[j]
        if coupled:
            g = g + wd * p
        if small:
            m = m + w * (g - m)
        else:
            m = g + w_minus_1 * (g - m)
        v = v * beta2 + one_minus_beta2 * g * g
        exp_avg[j] = m
        exp_avg_sq[j] = v
        if amsgrad:
            vmax = max_nan(max_exp_avg_sq[j], v)
            max_exp_avg_sq[j] = vmax
            v = vmax
        d = fsqrt(v) * inv_bc2_sqrt + eps
        param[j] = p + neg_step * m / d


cdef nopt_dispatched _adam_task(
    const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, Py_ssize_t c,
    floating sign, floating decay, floating wd, floating w, floating beta2, floating omb2,
    floating inv, floating eps, floating step, bint coupled, bint small, bint amsgrad,
) noexcept nogil:
    cdef Py_ssize_t a = chunks[c, 0], start = chunks[c, 1], n = chunks[c, 2] - start
    cdef floating* p = <floating*> ptrs[a, 0] + start
    cdef const floating* g = <const floating*> ptrs[a, 1] + start
    cdef floating* m = <floating*> ptrs[a, 2] + start
    cdef floating* v = <floating*> ptrs[a, 3] + start
    cdef floating* vmax = NULL
    if amsgrad:
        vmax = <floating*> ptrs[a, 4] + start
        if coupled:
            if small:
                _adam_loop(p, g, m, v, vmax, n, sign, decay, wd, w, beta2, omb2, inv, eps, step,
                           True, True, True)
            else:
                _adam_loop(p, g, m, v, vmax, n, sign, decay, wd, w, beta2, omb2, inv, eps, step,
                           True, False, True)
        elif small:
            _adam_loop(p, g, m, v, vmax, n, sign, decay, wd, w, beta2, omb2, inv, eps, step,
                       False, True, True)
        else:
            _adam_loop(p, g, m, v, vmax, n, sign, decay, wd, w, beta2, omb2, inv, eps, step,
                       False, False, True)
    elif coupled:
        if small:
            _adam_loop(p, g, m, v, vmax, n, sign, decay, wd, w, beta2, omb2, inv, eps, step,
                       True, True, False)
        else:
            _adam_loop(p, g, m, v, vmax, n, sign, decay, wd, w, beta2, omb2, inv, eps, step,
                       True, False, False)
    elif small:
        _adam_loop(p, g, m, v, vmax, n, sign, decay, wd, w, beta2, omb2, inv, eps, step,
                   False, True, False)
    else:
        _adam_loop(p, g, m, v, vmax, n, sign, decay, wd, w, beta2, omb2, inv, eps, step,
                   False, False, False)


cdef void _adam(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double sign, double decay, double wd, double w, double beta2, double inv_bc2_sqrt,
    double eps, double neg_step, bint amsgrad,
) noexcept nogil:
    cdef Py_ssize_t c, n_chunks = chunks.shape[0]
    cdef unsigned long long fp = 0   # set per thread; initialised for -Wuninitialized
    cdef floating sign_t = <floating> sign, decay_t = <floating> decay, wd_t = <floating> wd
    cdef floating w_t = <floating> w, beta2_t = <floating> beta2
    cdef floating omb2_t = <floating> (1.0 - beta2), inv_t = <floating> inv_bc2_sqrt
    cdef floating eps_t = <floating> eps, step_t = <floating> neg_step
    cdef bint coupled = wd != 0
    # torch picks the lerp formula from the weight in the tensor's type.
    cdef bint small = fabs_(w_t) < 0.5
    if n_threads <= 1:
        # No parallel region at all: a one-thread team still costs about a
        # microsecond, which is most of a small model's step.
        fp = nopt_ftz_enter()
        for c in range(n_chunks):
            _adam_task(ptrs, chunks, c, sign_t, decay_t, wd_t, w_t, beta2_t, omb2_t, inv_t,
                       eps_t, step_t, coupled, small, amsgrad)
        nopt_ftz_exit(fp)
        return
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            _adam_task(ptrs, chunks, c, sign_t, decay_t, wd_t, w_t, beta2_t, omb2_t, inv_t,
                       eps_t, step_t, coupled, small, amsgrad)
        nopt_ftz_exit(fp)


def adam(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
         int n_threads, double sign, double decay, double weight_decay, double weight,
         double beta2, double inv_bc2_sqrt, double eps, double neg_step, bint amsgrad):
    """Apply one Adam step to every array in the table (releases the GIL).

    ``sign`` is -1 to maximize; ``decay`` the decoupled factor ``1 - lr*wd``
    (1 when coupled); ``weight_decay`` the coupled L2 term (0 when
    decoupled); ``weight`` the lerp weight ``1 - beta1``; ``inv_bc2_sqrt``
    is ``1/sqrt(1 - beta2**t)`` and ``neg_step`` is ``-lr/(1 - beta1**t)``.
    """
    with nogil:
        if is_double:
            _adam(<double*> NULL, ptrs, chunks, n_threads, sign, decay, weight_decay, weight,
                  beta2, inv_bc2_sqrt, eps, neg_step, amsgrad)
        else:
            _adam(<float*> NULL, ptrs, chunks, n_threads, sign, decay, weight_decay, weight,
                  beta2, inv_bc2_sqrt, eps, neg_step, amsgrad)
