# RAdam: Adam with variance rectification, one elementwise pass per batch.
#
# ptrs[a] = (param, grad, exp_avg, exp_avg_sq). Python decides, per batch,
# whether the step is rectified (rho_t > 5, as torch) and folds lr, the bias
# corrections and the rectification term into one coefficient:
#   g = ±grad (+ wd*p, coupled)   p = p * (1 - lr*wd) (decoupled; 1 otherwise)
#   m = lerp(m, g, 1-beta1)       v = v*beta2 + ((1-beta2)*g)*g
#   rectified:   p = p + (coef*m) / (sqrt(v) + eps),  coef = -lr r_t sqrt(1-beta2^t)/(1-beta1^t)
#   otherwise:   p = p + coef*m,                      coef = -lr/(1-beta1^t)
#
# Speed: the fast-path pattern of sgd.pyx and adam.pyx. _radam_loop's three
# flags (coupled decay, small lerp weight, rectified) are only ever literals
# (from _radam_task), so each inlined copy is a branch-free vectorised loop;
# _radam_task is compiled per ISA (nopt_dispatched); one thread runs the
# chunks without an OpenMP team.

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from ._common cimport (floating, fabs_, fsqrt, nopt_dispatched, nopt_ftz_enter,
                       nopt_ftz_exit)


cdef inline void _radam_loop(
    floating* param,              # IN/OUT
    const floating* grad,         # IN
    floating* exp_avg,            # IN/OUT
    floating* exp_avg_sq,         # IN/OUT
    Py_ssize_t n,
    floating sign, floating decay, floating wd, floating w, floating beta2,
    floating one_minus_beta2, floating eps, floating coef,
    bint coupled, bint small, bint rectified,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating g, p, m, v
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
        if rectified:
            param[j] = p + coef * m / (fsqrt(v) + eps)
        else:
            param[j] = p + coef * m


cdef nopt_dispatched _radam_task(
    const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, Py_ssize_t c,
    floating sign, floating decay, floating wd, floating w, floating beta2,
    floating omb2, floating eps, floating coef, bint coupled, bint small, bint rectified,
) noexcept nogil:
    cdef Py_ssize_t a = chunks[c, 0], start = chunks[c, 1], n = chunks[c, 2] - start
    cdef floating* p = <floating*> ptrs[a, 0] + start
    cdef const floating* g = <const floating*> ptrs[a, 1] + start
    cdef floating* m = <floating*> ptrs[a, 2] + start
    cdef floating* v = <floating*> ptrs[a, 3] + start
    if rectified:
        if coupled:
            if small:
                _radam_loop(p, g, m, v, n, sign, decay, wd, w, beta2, omb2, eps, coef,
                            True, True, True)
            else:
                _radam_loop(p, g, m, v, n, sign, decay, wd, w, beta2, omb2, eps, coef,
                            True, False, True)
        elif small:
            _radam_loop(p, g, m, v, n, sign, decay, wd, w, beta2, omb2, eps, coef,
                        False, True, True)
        else:
            _radam_loop(p, g, m, v, n, sign, decay, wd, w, beta2, omb2, eps, coef,
                        False, False, True)
    elif coupled:
        if small:
            _radam_loop(p, g, m, v, n, sign, decay, wd, w, beta2, omb2, eps, coef,
                        True, True, False)
        else:
            _radam_loop(p, g, m, v, n, sign, decay, wd, w, beta2, omb2, eps, coef,
                        True, False, False)
    elif small:
        _radam_loop(p, g, m, v, n, sign, decay, wd, w, beta2, omb2, eps, coef,
                    False, True, False)
    else:
        _radam_loop(p, g, m, v, n, sign, decay, wd, w, beta2, omb2, eps, coef,
                    False, False, False)


cdef void _radam(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double sign, double decay, double wd, double w, double beta2, double eps, double coef,
    bint rectified,
) noexcept nogil:
    cdef Py_ssize_t c, n_chunks = chunks.shape[0]
    cdef unsigned long long fp = 0   # set per thread; initialised for -Wuninitialized
    cdef floating sign_t = <floating> sign, decay_t = <floating> decay, wd_t = <floating> wd
    cdef floating w_t = <floating> w, beta2_t = <floating> beta2
    cdef floating omb2_t = <floating> (1.0 - beta2), eps_t = <floating> eps
    cdef floating coef_t = <floating> coef
    cdef bint coupled = wd != 0
    # torch picks the lerp formula from the weight in the tensor's type.
    cdef bint small = fabs_(w_t) < 0.5
    if n_threads <= 1:
        # No OpenMP team for one thread (it costs about a microsecond).
        fp = nopt_ftz_enter()
        for c in range(n_chunks):
            _radam_task(ptrs, chunks, c, sign_t, decay_t, wd_t, w_t, beta2_t, omb2_t, eps_t,
                        coef_t, coupled, small, rectified)
        nopt_ftz_exit(fp)
        return
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            _radam_task(ptrs, chunks, c, sign_t, decay_t, wd_t, w_t, beta2_t, omb2_t, eps_t,
                        coef_t, coupled, small, rectified)
        nopt_ftz_exit(fp)


def radam(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
          int n_threads, double sign, double decay, double weight_decay, double weight,
          double beta2, double eps, double coef, bint rectified):
    """Apply one RAdam step to every array in the table (releases the GIL).

    ``sign`` is -1 to maximize; ``decay`` the decoupled factor ``1 - lr*wd``
    (1 when coupled); ``weight_decay`` the coupled L2 term (0 when
    decoupled); ``weight`` the lerp weight ``1 - beta1``; ``coef`` the
    (negative) step coefficient, with the adaptive denominator only when
    ``rectified``.
    """
    with nogil:
        if is_double:
            _radam(<double*> NULL, ptrs, chunks, n_threads, sign, decay, weight_decay, weight,
                   beta2, eps, coef, rectified)
        else:
            _radam(<float*> NULL, ptrs, chunks, n_threads, sign, decay, weight_decay, weight,
                   beta2, eps, coef, rectified)
