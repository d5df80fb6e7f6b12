# Adam / AdamW (and AMSGrad): one elementwise pass per batch.
#
# ptrs[a] = (param, grad, exp_avg, exp_avg_sq[, max_exp_avg_sq]). Python gives
# the per-step scalars (bias corrections folded into ``neg_step`` and
# ``inv_bc2_sqrt``), so the loop only reads and writes the streams once.
# Order of operations follows torch's single-tensor Adam:
#   g = ±grad (+ wd*p, coupled)   p = p * (1 - lr*wd) (decoupled; 1 otherwise)
#   m = lerp(m, g, 1-beta1)       v = v*beta2 + ((1-beta2)*g)*g
#   v^ = max(v^, v) (amsgrad)     p = p + (neg_step*m) / (sqrt(v^)*inv_bc2_sqrt + eps)
# ``lerp`` is torch's two-sided formula. The three flags
# (coupled decay, small lerp weight, amsgrad) are passed as literals to an
# inline body, so each combination compiles to its own branch-free loop.

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from ._common cimport floating, fabs_, fsqrt, max_nan, nopt_ftz_enter, nopt_ftz_exit


cdef inline void _adam_range(
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
    cdef floating g, p, m, v, d
    cdef floating w_minus_1 = w - 1
    for j in range(n):
        g = sign * grad[j]
        p = param[j] * decay
        if coupled:
            g = g + wd * p
        m = exp_avg[j]
        if small:
            m = m + w * (g - m)
        else:
            m = g + w_minus_1 * (g - m)
        exp_avg[j] = m
        v = exp_avg_sq[j] * beta2 + one_minus_beta2 * g * g
        exp_avg_sq[j] = v
        if amsgrad:
            v = max_nan(max_exp_avg_sq[j], v)
            max_exp_avg_sq[j] = v
        d = fsqrt(v) * inv_bc2_sqrt + eps
        param[j] = p + neg_step * m / d


cdef inline void _adam_chunk(
    floating* p, const floating* g, floating* m, floating* v, floating* vmax, Py_ssize_t n,
    floating sign, floating decay, floating wd, floating w, floating beta2, floating omb2,
    floating inv, floating eps, floating step, bint coupled, bint small, bint amsgrad,
) noexcept nogil:
    # Literal flags per call site: each combination gets its own loop.
    if amsgrad:
        if coupled:
            if small:
                _adam_range(p, g, m, v, vmax, n, sign, decay, wd, w, beta2, omb2, inv, eps,
                            step, True, True, True)
            else:
                _adam_range(p, g, m, v, vmax, n, sign, decay, wd, w, beta2, omb2, inv, eps,
                            step, True, False, True)
        else:
            if small:
                _adam_range(p, g, m, v, vmax, n, sign, decay, wd, w, beta2, omb2, inv, eps,
                            step, False, True, True)
            else:
                _adam_range(p, g, m, v, vmax, n, sign, decay, wd, w, beta2, omb2, inv, eps,
                            step, False, False, True)
    else:
        if coupled:
            if small:
                _adam_range(p, g, m, v, vmax, n, sign, decay, wd, w, beta2, omb2, inv, eps,
                            step, True, True, False)
            else:
                _adam_range(p, g, m, v, vmax, n, sign, decay, wd, w, beta2, omb2, inv, eps,
                            step, True, False, False)
        else:
            if small:
                _adam_range(p, g, m, v, vmax, n, sign, decay, wd, w, beta2, omb2, inv, eps,
                            step, False, True, False)
            else:
                _adam_range(p, g, m, v, vmax, n, sign, decay, wd, w, beta2, omb2, inv, eps,
                            step, False, False, False)


cdef void _adam(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double sign, double decay, double wd, double w, double beta2, double inv_bc2_sqrt,
    double eps, double neg_step, bint amsgrad,
) noexcept nogil:
    cdef Py_ssize_t c, a, start, n_chunks = chunks.shape[0]
    cdef unsigned long long fp
    cdef floating sign_t = <floating> sign, decay_t = <floating> decay, wd_t = <floating> wd
    cdef floating w_t = <floating> w, beta2_t = <floating> beta2
    cdef floating omb2_t = <floating> (1.0 - beta2), inv_t = <floating> inv_bc2_sqrt
    cdef floating eps_t = <floating> eps, step_t = <floating> neg_step
    cdef bint coupled = wd != 0
    # torch picks the lerp formula from the weight in the tensor's type.
    cdef bint small = fabs_(w_t) < 0.5
    cdef int max_stream = 4 if amsgrad else 3
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            a = chunks[c, 0]
            start = chunks[c, 1]
            _adam_chunk(
                <floating*> ptrs[a, 0] + start,
                <const floating*> ptrs[a, 1] + start,
                <floating*> ptrs[a, 2] + start,
                <floating*> ptrs[a, 3] + start,
                <floating*> ptrs[a, max_stream] + start,
                chunks[c, 2] - start,
                sign_t, decay_t, wd_t, w_t, beta2_t, omb2_t, inv_t, eps_t, step_t,
                coupled, small, amsgrad,
            )
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
