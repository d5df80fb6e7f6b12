# Adagrad (dense gradients), with lr decay, weight decay and maximize.
#
# One call updates every array of a batch: ptrs[a] = (param, grad, sum). The
# decayed step size clr = lr / (1 + (step - 1) * lr_decay) is computed once in
# Python (the caller splits a batch whose parameters differ in step count) and
# passed negated. The order of operations is torch's single-tensor one:
#   sum += g * g;   param += (-clr * g) / (sqrt(sum) + eps)
#
# Fast path (as sgd.pyx): _adagrad_task, the per-chunk function, is compiled
# for AVX-512 / AVX2 / baseline (nopt_dispatched; same bits) and calls the
# loop only with literal flags, so every inlined copy is a branch-free loop
# that gcc vectorises (sqrt and division included). With n_threads <= 1 the
# chunks run in the calling thread, without an OpenMP team.

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from ._common cimport floating, fsqrt, nopt_dispatched, nopt_ftz_enter, nopt_ftz_exit


cdef inline void _adagrad_loop(
    floating* param,              # IN/OUT
    const floating* grad,         # IN
    floating* state_sum,          # IN/OUT
    Py_ssize_t n,
    floating neg_clr, floating eps, floating weight_decay,
    bint decay, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating g, p, s
    for j in range(n):
        p = param[j]
        g = grad[j]
        s = state_sum[j]
        if maximize:
            g = -g
        if decay:
            g = g + weight_decay * p
        s = s + g * g
        state_sum[j] = s
        param[j] = p + (neg_clr * g) / (fsqrt(s) + eps)


cdef nopt_dispatched _adagrad_task(
    const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, Py_ssize_t c,
    floating neg_clr, floating eps, floating wd, bint decay, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t a = chunks[c, 0], start = chunks[c, 1], n = chunks[c, 2] - start
    cdef floating* p = <floating*> ptrs[a, 0] + start
    cdef const floating* g = <const floating*> ptrs[a, 1] + start
    cdef floating* s = <floating*> ptrs[a, 2] + start
    if maximize:
        if decay:
            _adagrad_loop(p, g, s, n, neg_clr, eps, wd, True, True)
        else:
            _adagrad_loop(p, g, s, n, neg_clr, eps, wd, False, True)
    elif decay:
        _adagrad_loop(p, g, s, n, neg_clr, eps, wd, True, False)
    else:
        _adagrad_loop(p, g, s, n, neg_clr, eps, wd, False, False)


cdef void _adagrad(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double clr, double eps, double weight_decay, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t c, n_chunks = chunks.shape[0]
    cdef unsigned long long fp = 0   # set per thread; initialised for -Wuninitialized
    cdef floating neg_clr_t = <floating> (-clr), eps_t = <floating> eps
    cdef floating wd_t = <floating> weight_decay
    cdef bint decay = weight_decay != 0
    if n_threads <= 1:
        # No parallel region at all (a one-thread team still costs about a
        # microsecond, most of a small model's step).
        fp = nopt_ftz_enter()
        for c in range(n_chunks):
            _adagrad_task(ptrs, chunks, c, neg_clr_t, eps_t, wd_t, decay, maximize)
        nopt_ftz_exit(fp)
        return
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            _adagrad_task(ptrs, chunks, c, neg_clr_t, eps_t, wd_t, decay, maximize)
        nopt_ftz_exit(fp)


def adagrad(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
            int n_threads, double clr, double eps, double weight_decay, bint maximize):
    """Apply one Adagrad step (step size ``clr``) to every array in the table (releases the GIL)."""
    with nogil:
        if is_double:
            _adagrad(<double*> NULL, ptrs, chunks, n_threads, clr, eps, weight_decay, maximize)
        else:
            _adagrad(<float*> NULL, ptrs, chunks, n_threads, clr, eps, weight_decay, maximize)
