# Adamax: Adam with an exponentially weighted infinity norm, one elementwise
# pass per batch.
#
# ptrs[a] = (param, grad, exp_avg, exp_inf). Order of operations follows
# torch's single-tensor Adamax:
#   g = ±grad (+ wd*p)            m = lerp(m, g, 1-beta1)
#   u = max(u*beta2, |g| + eps)   (NaN-propagating, as torch.maximum)
#   p = p + (neg_clr*m) / u       with neg_clr = -lr/(1 - beta1**t)
# The two flags (weight decay on, small lerp weight) are passed as literals
# to an inline body, so each combination compiles to its own loop.

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from ._common cimport floating, fabs_, nopt_ftz_enter, nopt_ftz_exit, max_nan


cdef inline void _adamax_range(
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
        if coupled:
            g = g + wd * p
        m = exp_avg[j]
        if small:
            m = m + w * (g - m)
        else:
            m = g + w_minus_1 * (g - m)
        exp_avg[j] = m
        u = max_nan(exp_inf[j] * beta2, fabs_(g) + eps)
        exp_inf[j] = u
        param[j] = p + neg_clr * m / u


cdef inline void _adamax_chunk(
    floating* p, const floating* g, floating* m, floating* u, Py_ssize_t n,
    floating sign, floating wd, floating w, floating beta2, floating eps, floating clr,
    bint coupled, bint small,
) noexcept nogil:
    # Literal flags per call site: each combination gets its own loop.
    if coupled:
        if small:
            _adamax_range(p, g, m, u, n, sign, wd, w, beta2, eps, clr, True, True)
        else:
            _adamax_range(p, g, m, u, n, sign, wd, w, beta2, eps, clr, True, False)
    else:
        if small:
            _adamax_range(p, g, m, u, n, sign, wd, w, beta2, eps, clr, False, True)
        else:
            _adamax_range(p, g, m, u, n, sign, wd, w, beta2, eps, clr, False, False)


cdef void _adamax(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double sign, double wd, double w, double beta2, double eps, double neg_clr,
) noexcept nogil:
    cdef Py_ssize_t c, a, start, n_chunks = chunks.shape[0]
    cdef unsigned long long fp
    cdef floating sign_t = <floating> sign, wd_t = <floating> wd, w_t = <floating> w
    cdef floating beta2_t = <floating> beta2, eps_t = <floating> eps, clr_t = <floating> neg_clr
    cdef bint coupled = wd != 0
    # torch picks the lerp formula from the weight in the tensor's type.
    cdef bint small = fabs_(w_t) < 0.5
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            a = chunks[c, 0]
            start = chunks[c, 1]
            _adamax_chunk(
                <floating*> ptrs[a, 0] + start,
                <const floating*> ptrs[a, 1] + start,
                <floating*> ptrs[a, 2] + start,
                <floating*> ptrs[a, 3] + start,
                chunks[c, 2] - start,
                sign_t, wd_t, w_t, beta2_t, eps_t, clr_t, coupled, small,
            )
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
