# Adadelta, with weight decay and maximize.
#
# One call updates every array of a batch: ptrs[a] = (param, grad, square_avg,
# acc_delta). No scalar depends on the step count, so a batch is never split.
# The order of operations is torch's single-tensor one:
#   square_avg = square_avg * rho + ((1 - rho) * g) * g
#   delta      = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g
#   acc_delta  = acc_delta * rho + ((1 - rho) * delta) * delta
#   param     += -lr * delta
#
# Fast path (as sgd.pyx): _adadelta_task, the per-chunk function, is compiled
# for AVX-512 / AVX2 / baseline (nopt_dispatched; same bits) and calls the
# loop only with literal flags, so every inlined copy is a branch-free loop
# that gcc vectorises (two square roots and a division per element: wide
# vectors matter here). With n_threads <= 1 the chunks run in the calling
# thread, without an OpenMP team.

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from ._common cimport floating, fsqrt, nopt_dispatched, nopt_ftz_enter, nopt_ftz_exit


cdef inline void _adadelta_loop(
    floating* param,              # IN/OUT
    const floating* grad,         # IN
    floating* square_avg,         # IN/OUT
    floating* acc_delta,          # IN/OUT
    Py_ssize_t n,
    floating neg_lr, floating rho, floating one_minus_rho, floating eps,
    floating weight_decay, bint decay, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating g, p, v, u, d
    for j in range(n):
        p = param[j]
        g = grad[j]
        v = square_avg[j]
        u = acc_delta[j]
        if maximize:
            g = -g
        if decay:
            g = g + weight_decay * p
        v = v * rho + (one_minus_rho * g) * g
        square_avg[j] = v
        d = fsqrt(u + eps) / fsqrt(v + eps) * g
        acc_delta[j] = u * rho + (one_minus_rho * d) * d
        param[j] = p + neg_lr * d


cdef nopt_dispatched _adadelta_task(
    const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, Py_ssize_t c,
    floating neg_lr, floating rho, floating omr, floating eps, floating wd,
    bint decay, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t a = chunks[c, 0], start = chunks[c, 1], n = chunks[c, 2] - start
    cdef floating* p = <floating*> ptrs[a, 0] + start
    cdef const floating* g = <const floating*> ptrs[a, 1] + start
    cdef floating* v = <floating*> ptrs[a, 2] + start
    cdef floating* u = <floating*> ptrs[a, 3] + start
    if maximize:
        if decay:
            _adadelta_loop(p, g, v, u, n, neg_lr, rho, omr, eps, wd, True, True)
        else:
            _adadelta_loop(p, g, v, u, n, neg_lr, rho, omr, eps, wd, False, True)
    elif decay:
        _adadelta_loop(p, g, v, u, n, neg_lr, rho, omr, eps, wd, True, False)
    else:
        _adadelta_loop(p, g, v, u, n, neg_lr, rho, omr, eps, wd, False, False)


cdef void _adadelta(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double lr, double rho, double eps, double weight_decay, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t c, n_chunks = chunks.shape[0]
    cdef unsigned long long fp = 0   # set per thread; initialised for -Wuninitialized
    cdef floating neg_lr_t = <floating> (-lr), rho_t = <floating> rho
    cdef floating omr_t = <floating> (1.0 - rho), eps_t = <floating> eps
    cdef floating wd_t = <floating> weight_decay
    cdef bint decay = weight_decay != 0
    if n_threads <= 1:
        # No parallel region at all (a one-thread team still costs about a
        # microsecond, most of a small model's step).
        fp = nopt_ftz_enter()
        for c in range(n_chunks):
            _adadelta_task(ptrs, chunks, c, neg_lr_t, rho_t, omr_t, eps_t, wd_t, decay, maximize)
        nopt_ftz_exit(fp)
        return
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            _adadelta_task(ptrs, chunks, c, neg_lr_t, rho_t, omr_t, eps_t, wd_t, decay, maximize)
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
