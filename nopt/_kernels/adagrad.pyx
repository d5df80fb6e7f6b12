# Adagrad (dense gradients), with lr decay, weight decay and maximize.
#
# One call updates every array of a batch: ptrs[a] = (param, grad, sum). The
# decayed step size clr = lr / (1 + (step - 1) * lr_decay) is computed once in
# Python (the caller splits a batch whose parameters differ in step count) and
# passed negated. The order of operations is torch's single-tensor one:
#   sum += g * g;   param += (-clr * g) / (sqrt(sum) + eps)

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from ._common cimport floating, fsqrt, nopt_ftz_enter, nopt_ftz_exit


cdef inline void _adagrad_range(
    floating* param,              # IN/OUT
    const floating* grad,         # IN
    floating* state_sum,          # IN/OUT
    Py_ssize_t n,
    floating neg_clr, floating eps, floating sign, floating weight_decay,
    bint decay,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating g, s
    for j in range(n):
        g = sign * grad[j]
        if decay:
            g = g + weight_decay * param[j]
        s = state_sum[j] + g * g
        state_sum[j] = s
        param[j] = param[j] + (neg_clr * g) / (fsqrt(s) + eps)


cdef void _adagrad(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double clr, double eps, double weight_decay, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t c, a, start, n_chunks = chunks.shape[0]
    cdef unsigned long long fp = 0   # set per thread; initialised for -Wuninitialized
    cdef floating neg_clr_t = <floating> (-clr), eps_t = <floating> eps
    cdef floating wd_t = <floating> weight_decay
    cdef floating sign_t = -1 if maximize else 1
    cdef bint decay = weight_decay != 0
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            a = chunks[c, 0]
            start = chunks[c, 1]
            _adagrad_range(
                <floating*> ptrs[a, 0] + start,
                <const floating*> ptrs[a, 1] + start,
                <floating*> ptrs[a, 2] + start,
                chunks[c, 2] - start,
                neg_clr_t, eps_t, sign_t, wd_t, decay,
            )
        nopt_ftz_exit(fp)


def adagrad(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
            int n_threads, double clr, double eps, double weight_decay, bint maximize):
    """Apply one Adagrad step (step size ``clr``) to every array in the table (releases the GIL)."""
    with nogil:
        if is_double:
            _adagrad(<double*> NULL, ptrs, chunks, n_threads, clr, eps, weight_decay, maximize)
        else:
            _adagrad(<float*> NULL, ptrs, chunks, n_threads, clr, eps, weight_decay, maximize)
