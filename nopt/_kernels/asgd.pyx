# ASGD (averaged SGD), with weight decay and maximize.
#
# One call updates every array of a batch: ptrs[a] = (param, grad, ax). The
# per-parameter scalars eta and mu live in Python (the caller splits a batch
# whose parameters differ in step, eta or mu); the kernel gets
# decay = 1 - lambd * eta, -eta and mu. Order as torch's single-tensor rule:
#   param = param * decay;  param += -eta * g
#   ax += (param - ax) * mu      if mu != 1 (with the *updated* param)
#   ax  = param                  if mu == 1

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from ._common cimport floating, nopt_ftz_enter, nopt_ftz_exit


cdef inline void _asgd_range(
    floating* param,              # IN/OUT
    const floating* grad,         # IN
    floating* ax,                 # IN/OUT
    Py_ssize_t n,
    floating decay, floating neg_eta, floating mu, floating sign, floating weight_decay,
    bint use_decay, bint average,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating g, p, x
    for j in range(n):
        p = param[j]
        g = sign * grad[j]
        if use_decay:
            g = g + weight_decay * p
        p = p * decay
        p = p + neg_eta * g
        param[j] = p
        if average:
            x = ax[j]
            ax[j] = x + (p - x) * mu
        else:
            ax[j] = p


cdef void _asgd(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double decay, double eta, double mu, double weight_decay, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t c, a, start, n_chunks = chunks.shape[0]
    cdef unsigned long long fp = 0   # set per thread; initialised for -Wuninitialized
    cdef floating decay_t = <floating> decay, neg_eta_t = <floating> (-eta)
    cdef floating mu_t = <floating> mu, wd_t = <floating> weight_decay
    cdef floating sign_t = -1 if maximize else 1
    cdef bint use_decay = weight_decay != 0
    cdef bint average = mu != 1
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            a = chunks[c, 0]
            start = chunks[c, 1]
            _asgd_range(
                <floating*> ptrs[a, 0] + start,
                <const floating*> ptrs[a, 1] + start,
                <floating*> ptrs[a, 2] + start,
                chunks[c, 2] - start,
                decay_t, neg_eta_t, mu_t, sign_t, wd_t, use_decay, average,
            )
        nopt_ftz_exit(fp)


def asgd(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
         int n_threads, double decay, double eta, double mu, double weight_decay,
         bint maximize):
    """Apply one ASGD step to every array in the table (releases the GIL).

    ``decay`` is ``1 - lambd * eta``; ``mu == 1`` copies the parameter into
    ``ax`` instead of averaging.
    """
    with nogil:
        if is_double:
            _asgd(<double*> NULL, ptrs, chunks, n_threads, decay, eta, mu, weight_decay, maximize)
        else:
            _asgd(<float*> NULL, ptrs, chunks, n_threads, decay, eta, mu, weight_decay, maximize)
