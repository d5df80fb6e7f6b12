# NAdam: Adam with Nesterov momentum (Dozat), one elementwise pass per batch.
#
# ptrs[a] = (param, grad, exp_avg, exp_avg_sq). Python keeps the momentum
# schedule (mu_t, mu_{t+1}, their running product) and passes the two step
# coefficients; the loop follows torch's single-tensor NAdam:
#   g = ±grad (+ wd*p, coupled)   p = p * (1 - lr*wd) (decoupled; 1 otherwise)
#   m = lerp(m, g, 1-beta1)       v = v*beta2 + ((1-beta2)*g)*g
#   d = sqrt(v * inv_bc2) + eps
#   p = p + (c_grad*g)/d ;  p = p + (c_avg*m)/d
# with c_grad = -lr(1-mu_t)/(1-prod mu_1..t), c_avg = -lr mu_{t+1}/(1-prod mu_1..t+1).
#
# Speed: the fast-path pattern of sgd.pyx and adam.pyx. _nadam_loop's two
# flags (coupled decay, small lerp weight) are only ever literals (from
# _nadam_task), so each inlined copy is a branch-free vectorised loop;
# _nadam_task is compiled per ISA (nopt_dispatched); one thread runs the
# chunks without an OpenMP team. (torch divides twice by d; so does this,
# for the same bits.)

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from ._common cimport (floating, fabs_, fsqrt, nopt_dispatched, nopt_ftz_enter,
                       nopt_ftz_exit)


cdef inline void _nadam_loop(
    floating* param,              # IN/OUT
    const floating* grad,         # IN
    floating* exp_avg,            # IN/OUT
    floating* exp_avg_sq,         # IN/OUT
    Py_ssize_t n,
    floating sign, floating decay, floating wd, floating w, floating beta2,
    floating one_minus_beta2, floating inv_bc2, floating eps, floating c_grad, floating c_avg,
    bint coupled, bint small,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating g, p, m, v, d
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
        d = fsqrt(v * inv_bc2) + eps
        p = p + c_grad * g / d
        param[j] = p + c_avg * m / d


cdef nopt_dispatched _nadam_task(
    const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, Py_ssize_t c,
    floating sign, floating decay, floating wd, floating w, floating beta2, floating omb2,
    floating inv, floating eps, floating cg, floating cm, bint coupled, bint small,
) noexcept nogil:
    cdef Py_ssize_t a = chunks[c, 0], start = chunks[c, 1], n = chunks[c, 2] - start
    cdef floating* p = <floating*> ptrs[a, 0] + start
    cdef const floating* g = <const floating*> ptrs[a, 1] + start
    cdef floating* m = <floating*> ptrs[a, 2] + start
    cdef floating* v = <floating*> ptrs[a, 3] + start
    if coupled:
        if small:
            _nadam_loop(p, g, m, v, n, sign, decay, wd, w, beta2, omb2, inv, eps, cg, cm,
                        True, True)
        else:
            _nadam_loop(p, g, m, v, n, sign, decay, wd, w, beta2, omb2, inv, eps, cg, cm,
                        True, False)
    elif small:
        _nadam_loop(p, g, m, v, n, sign, decay, wd, w, beta2, omb2, inv, eps, cg, cm,
                    False, True)
    else:
        _nadam_loop(p, g, m, v, n, sign, decay, wd, w, beta2, omb2, inv, eps, cg, cm,
                    False, False)


cdef void _nadam(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double sign, double decay, double wd, double w, double beta2, double inv_bc2, double eps,
    double c_grad, double c_avg,
) noexcept nogil:
    cdef Py_ssize_t c, n_chunks = chunks.shape[0]
    cdef unsigned long long fp = 0   # set per thread; initialised for -Wuninitialized
    cdef floating sign_t = <floating> sign, decay_t = <floating> decay, wd_t = <floating> wd
    cdef floating w_t = <floating> w, beta2_t = <floating> beta2
    cdef floating omb2_t = <floating> (1.0 - beta2), inv_t = <floating> inv_bc2
    cdef floating eps_t = <floating> eps, cg_t = <floating> c_grad, cm_t = <floating> c_avg
    cdef bint coupled = wd != 0
    # torch picks the lerp formula from the weight in the tensor's type.
    cdef bint small = fabs_(w_t) < 0.5
    if n_threads <= 1:
        # No OpenMP team for one thread (it costs about a microsecond).
        fp = nopt_ftz_enter()
        for c in range(n_chunks):
            _nadam_task(ptrs, chunks, c, sign_t, decay_t, wd_t, w_t, beta2_t, omb2_t, inv_t,
                        eps_t, cg_t, cm_t, coupled, small)
        nopt_ftz_exit(fp)
        return
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            _nadam_task(ptrs, chunks, c, sign_t, decay_t, wd_t, w_t, beta2_t, omb2_t, inv_t,
                        eps_t, cg_t, cm_t, coupled, small)
        nopt_ftz_exit(fp)


def nadam(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
          int n_threads, double sign, double decay, double weight_decay, double weight,
          double beta2, double inv_bc2, double eps, double c_grad, double c_avg):
    """Apply one NAdam step to every array in the table (releases the GIL).

    ``sign`` is -1 to maximize; ``decay`` the decoupled factor ``1 - lr*wd``
    (1 when coupled); ``weight_decay`` the coupled L2 term (0 when
    decoupled); ``weight`` the lerp weight ``1 - beta1``; ``inv_bc2`` is
    ``1/(1 - beta2**t)``; ``c_grad`` and ``c_avg`` the (negative) step
    coefficients of the gradient and of the first moment.
    """
    with nogil:
        if is_double:
            _nadam(<double*> NULL, ptrs, chunks, n_threads, sign, decay, weight_decay, weight,
                   beta2, inv_bc2, eps, c_grad, c_avg)
        else:
            _nadam(<float*> NULL, ptrs, chunks, n_threads, sign, decay, weight_decay, weight,
                   beta2, inv_bc2, eps, c_grad, c_avg)
