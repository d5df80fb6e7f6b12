# Adamax: Adam with an exponentially weighted infinity norm, one elementwise
# pass per batch.
#
# ptrs[a] = (param, grad, exp_avg, exp_inf). Order of operations follows
# torch's single-tensor Adamax:
#   g = ±grad (+ wd*p)            m = lerp(m, g, 1-beta1)
#   u = max(u*beta2, |g| + eps)   (NaN-propagating, as torch.maximum)
#   p = p + (neg_clr*m) / u       with neg_clr = -lr/(1 - beta1**t)
#
# Speed: the fast-path pattern of sgd.pyx and adam.pyx. _adamax_loop's two
# flags (weight decay on, small lerp weight) are only ever literals (from
# _adamax_task), so each inlined copy is a branch-free vectorised loop;
# _adamax_task is compiled per ISA (nopt_dispatched); one thread runs the
# chunks without an OpenMP team.

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from ._common cimport (floating, fabs_, max_nan, nopt_dispatched, nopt_ftz_enter,
                       nopt_ftz_exit)


cdef inline void _adamax_loop(
    floating* param,              # IN/OUT
    const floating* grad,         # IN
    floating* exp_avg,            # IN/OUT
    floating* exp_inf,            # IN/OUT
    Py_ssize_t n,
    floating sign, floating wd, floating w, floating beta2, floating eps, floating neg_clr,
    bint coupled, bint small,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating g, p, m, u
    cdef floating w_minus_1 = w - 1
    for j in range(n):
        g = sign * grad[j]
        p = param[j]
        m = exp_avg[j]
        u = exp_inf[j]
        if coupled:
            g = g + wd * p
        if small:
            m = m + w * (g - m)
        else:
            m = g + w_minus_1 * (g - m)
        u = max_nan(u * beta2, fabs_(g) + eps)
        exp_avg[j] = m
        exp_inf[j] = u
        param[j] = p + neg_clr * m / u


cdef nopt_dispatched _adamax_task(
    const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, Py_ssize_t c,
    floating sign, floating wd, floating w, floating beta2, floating eps, floating clr,
    bint coupled, bint small,
) noexcept nogil:
    cdef Py_ssize_t a = chunks[c, 0], start = chunks[c, 1], n = chunks[c, 2] - start
    cdef floating* p = <floating*> ptrs[a, 0] + start
    cdef const floating* g = <const floating*> ptrs[a, 1] + start
    cdef floating* m = <floating*> ptrs[a, 2] + start
    cdef floating* u = <floating*> ptrs[a, 3] + start
    if coupled:
        if small:
            _adamax_loop(p, g, m, u, n, sign, wd, w, beta2, eps, clr, True, True)
        else:
            _adamax_loop(p, g, m, u, n, sign, wd, w, beta2, eps, clr, True, False)
    elif small:
        _adamax_loop(p, g, m, u, n, sign, wd, w, beta2, eps, clr, False, True)
    else:
        _adamax_loop(p, g, m, u, n, sign, wd, w, beta2, eps, clr, False, False)


cdef void _adamax(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double sign, double wd, double w, double beta2, double eps, double neg_clr,
) noexcept nogil:
    cdef Py_ssize_t c, n_chunks = chunks.shape[0]
    cdef unsigned long long fp = 0   # set per thread; initialised for -Wuninitialized
    cdef floating sign_t = <floating> sign, wd_t = <floating> wd, w_t = <floating> w
    cdef floating beta2_t = <floating> beta2, eps_t = <floating> eps, clr_t = <floating> neg_clr
    cdef bint coupled = wd != 0
    # torch picks the lerp formula from the weight in the tensor's type.
    cdef bint small = fabs_(w_t) < 0.5
    if n_threads <= 1:
        # No OpenMP team for one thread (it costs about a microsecond).
        fp = nopt_ftz_enter()
        for c in range(n_chunks):
            _adamax_task(ptrs, chunks, c, sign_t, wd_t, w_t, beta2_t, eps_t, clr_t,
                         coupled, small)
        nopt_ftz_exit(fp)
        return
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            _adamax_task(ptrs, chunks, c, sign_t, wd_t, w_t, beta2_t, eps_t, clr_t,
                         coupled, small)
        nopt_ftz_exit(fp)


def adamax(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
           int n_threads, double sign, double weight_decay, double weight, double beta2,
           double eps, double neg_clr):
    """Apply one Adamax step to every array in the table (releases the GIL).

    ``sign`` is -1 to maximize; ``weight`` the lerp weight ``1 - beta1``;
    ``neg_clr`` is ``-lr/(1 - beta1**t)``.
    """
    with nogil:
        if is_double:
            _adamax(<double*> NULL, ptrs, chunks, n_threads, sign, weight_decay, weight, beta2,
                    eps, neg_clr)
        else:
            _adamax(<float*> NULL, ptrs, chunks, n_threads, sign, weight_decay, weight, beta2,
                    eps, neg_clr)
