# SGD with momentum, dampening, Nesterov, weight decay and maximize.
#
# One call updates every array of a param group: ptrs[a] = (param, grad,
# momentum_buffer) and chunks as built by _plan.make_table. ``first`` means the
# momentum buffers are fresh and take the (decayed) gradient, as torch clones it.
# With n_threads == 1 (small steps, or inside a parallel region) the chunks
# run in the calling thread without opening an OpenMP team.

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from ._common cimport floating, nopt_dispatched, nopt_ftz_enter, nopt_ftz_exit


# The loops take their flags as arguments, but _sgd_task only ever calls
# them with literal True/False: once inlined, every flag is a compile-time
# constant, so each copy is a branch-free loop that gcc vectorises. (Left as
# run-time flags, gcc unswitches only some of them and, in the inlined
# copies, keeps a scalar loop with a test per element: 3x slower.)
# _sgd_task is compiled for AVX-512, AVX2 and the baseline and picked at load
# time (nopt_dispatched, see _compat.h): same bits, wider vectors.
cdef inline void _plain_loop(
    floating* param,              # IN/OUT
    const floating* grad,         # IN
    Py_ssize_t n,
    floating lr, floating weight_decay, bint decay, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating g, p
    for j in range(n):
        p = param[j]
        g = grad[j]
        if maximize:
            g = -g
        if decay:
            g = g + weight_decay * p
        param[j] = p - lr * g


cdef inline void _momentum_loop(
    floating* param,              # IN/OUT
    const floating* grad,         # IN
    floating* buf,                # IN/OUT
    Py_ssize_t n,
    floating lr, floating momentum, floating keep, floating weight_decay,
    bint decay, bint nesterov, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating g, b, p
    for j in range(n):
        p = param[j]
        g = grad[j]
        if maximize:
            g = -g
        if decay:
            g = g + weight_decay * p
        b = buf[j] * momentum + keep * g
        buf[j] = b
        if nesterov:
            g = g + momentum * b
        else:
            g = b
        param[j] = p - lr * g


cdef inline void _first_loop(
    floating* param,              # IN/OUT
    const floating* grad,         # IN
    floating* buf,                # OUT
    Py_ssize_t n,
    floating lr, floating momentum, floating weight_decay,
    bint decay, bint nesterov, bint maximize,
) noexcept nogil:
    # A fresh buffer takes the gradient itself (once per parameter: not
    # worth specialising).
    cdef Py_ssize_t j
    cdef floating g, p
    for j in range(n):
        p = param[j]
        g = grad[j]
        if maximize:
            g = -g
        if decay:
            g = g + weight_decay * p
        buf[j] = g
        if nesterov:
            g = g + momentum * g
        param[j] = p - lr * g


cdef nopt_dispatched _sgd_task(
    const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, Py_ssize_t c,
    floating lr, floating momentum, floating keep, floating wd,
    bint use_momentum, bint nesterov, bint maximize, bint first,
) noexcept nogil:
    cdef Py_ssize_t a = chunks[c, 0], start = chunks[c, 1], n = chunks[c, 2] - start
    cdef floating* p = <floating*> ptrs[a, 0] + start
    cdef const floating* g = <const floating*> ptrs[a, 1] + start
    cdef floating* b
    cdef bint decay = wd != 0
    if not use_momentum:
        if maximize:
            if decay:
                _plain_loop(p, g, n, lr, wd, True, True)
            else:
                _plain_loop(p, g, n, lr, wd, False, True)
        elif decay:
            _plain_loop(p, g, n, lr, wd, True, False)
        else:
            _plain_loop(p, g, n, lr, wd, False, False)
        return
    b = <floating*> ptrs[a, 2] + start
    if first:
        _first_loop(p, g, b, n, lr, momentum, wd, decay, nesterov, maximize)
    elif nesterov:
        if maximize:
            if decay:
                _momentum_loop(p, g, b, n, lr, momentum, keep, wd, True, True, True)
            else:
                _momentum_loop(p, g, b, n, lr, momentum, keep, wd, False, True, True)
        elif decay:
            _momentum_loop(p, g, b, n, lr, momentum, keep, wd, True, True, False)
        else:
            _momentum_loop(p, g, b, n, lr, momentum, keep, wd, False, True, False)
    elif maximize:
        if decay:
            _momentum_loop(p, g, b, n, lr, momentum, keep, wd, True, False, True)
        else:
            _momentum_loop(p, g, b, n, lr, momentum, keep, wd, False, False, True)
    elif decay:
        _momentum_loop(p, g, b, n, lr, momentum, keep, wd, True, False, False)
    else:
        _momentum_loop(p, g, b, n, lr, momentum, keep, wd, False, False, False)


cdef void _sgd(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double lr, double momentum, double dampening, double weight_decay,
    bint nesterov, bint maximize, bint first,
) noexcept nogil:
    cdef Py_ssize_t c, n_chunks = chunks.shape[0]
    cdef bint use_momentum = momentum != 0
    cdef unsigned long long fp
    cdef floating lr_t = <floating> lr, momentum_t = <floating> momentum
    cdef floating keep_t = <floating> (1.0 - dampening), wd_t = <floating> weight_decay
    if n_threads <= 1:
        # No parallel region at all: a one-thread team still costs about a
        # microsecond, which is most of a small model's step.
        fp = nopt_ftz_enter()
        for c in range(n_chunks):
            _sgd_task(ptrs, chunks, c, lr_t, momentum_t, keep_t, wd_t,
                      use_momentum, nesterov, maximize, first)
        nopt_ftz_exit(fp)
        return
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            _sgd_task(ptrs, chunks, c, lr_t, momentum_t, keep_t, wd_t,
                      use_momentum, nesterov, maximize, first)
        nopt_ftz_exit(fp)


def sgd(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
        int n_threads, double lr, double momentum, double dampening,
        double weight_decay, bint nesterov, bint maximize, bint first):
    """Apply one SGD step to every array in the table (releases the GIL)."""
    with nogil:
        if is_double:
            _sgd(<double*> NULL, ptrs, chunks, n_threads, lr, momentum, dampening,
                 weight_decay, nesterov, maximize, first)
        else:
            _sgd(<float*> NULL, ptrs, chunks, n_threads, lr, momentum, dampening,
                 weight_decay, nesterov, maximize, first)
