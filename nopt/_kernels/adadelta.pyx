# Adadelta, with weight decay and maximize.
#
# One call updates every array of a batch: ptrs[a] = (param, grad, square_avg,
# acc_delta). No scalar depends on the step count, so a batch is never split.
# The order of operations is torch's single-tensor one:
#   square_avg = square_avg * rho + ((1 - rho) * g) * g
#   delta      = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g
#   acc_delta  = acc_delta * rho + ((1 - rho) * delta) * delta
#   param     += -lr * delta

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from ._common cimport floating, fsqrt, nopt_ftz_enter, nopt_ftz_exit


cdef inline void _adadelta_range(
    floating* param,              # IN/OUT
    const floating* grad,         # IN
    floating* square_avg,         # IN/OUT
    floating* acc_delta,          # IN/OUT
    Py_ssize_t n,
    floating neg_lr, floating rho, floating one_minus_rho, floating eps,
    floating sign, floating weight_decay, bint decay,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating g, v, u, d
    for j in range(n):
        g = sign * grad[j]
        if decay:
            g = g + weight_decay * param[j]
        v = square_avg[j] * rho + (one_minus_rho * g) * g
        square_avg[j] = v
        u = acc_delta[j]
        d = fsqrt(u + eps) / fsqrt(v + eps) * g
        acc_delta[j] = u * rho + (one_minus_rho * d) * d
        param[j] = param[j] + neg_lr * d


cdef void _adadelta(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double lr, double rho, double eps, double weight_decay, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t c, a, start, n_chunks = chunks.shape[0]
    cdef unsigned long long fp = 0   # set per thread; initialised for -Wuninitialized
    cdef floating neg_lr_t = <floating> (-lr), rho_t = <floating> rho
    cdef floating omr_t = <floating> (1.0 - rho), eps_t = <floating> eps
    cdef floating wd_t = <floating> weight_decay
    cdef floating sign_t = -1 if maximize else 1
    cdef bint decay = weight_decay != 0
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            a = chunks[c, 0]
            start = chunks[c, 1]
            _adadelta_range(
                <floating*> ptrs[a, 0] + start,
                <const floating*> ptrs[a, 1] + start,
                <floating*> ptrs[a, 2] + start,
                <floating*> ptrs[a, 3] + start,
                chunks[c, 2] - start,
                neg_lr_t, rho_t, omr_t, eps_t, sign_t, wd_t, decay,
            )
        nopt_ftz_exit(fp)


def adadelta(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
             int n_threads, double lr, double rho, double eps, double weight_decay,
             bint maximize):
    """Apply one Adadelta step to every array in the table (releases the GIL)."""
    with nogil:
        if is_double:
            _adadelta(<double*> NULL, ptrs, chunks, n_threads, lr, rho, eps, weight_decay, maximize)
        else:
            _adadelta(<float*> NULL, ptrs, chunks, n_threads, lr, rho, eps, weight_decay, maximize)
