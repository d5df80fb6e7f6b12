# SGD with momentum, dampening, Nesterov, weight decay and maximize.
#
# One call updates every array of a param group: ptrs[a] = (param, grad,
# momentum_buffer) and chunks as built by _plan.make_table. ``first`` means the
# momentum buffers are fresh and take the (decayed) gradient, as torch clones it.
# With n_threads == 1 (small steps, or inside a parallel region) the chunks
# run in the calling thread without opening an OpenMP team.

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from ._common cimport floating, nopt_ftz_enter, nopt_ftz_exit


cdef inline void _sgd_range(
    floating* param,              # IN/OUT
    const floating* grad,         # IN
    floating* buf,                # IN/OUT (unused without momentum)
    Py_ssize_t n,
    floating lr, floating momentum, floating keep, floating weight_decay,
    bint use_momentum, bint nesterov, bint maximize, bint first,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating g, b
    for j in range(n):
        g = -grad[j] if maximize else grad[j]
        if weight_decay != 0:
            g = g + weight_decay * param[j]
        if use_momentum:
            if first:
                b = g
            else:
                b = buf[j] * momentum + keep * g
            buf[j] = b
            if nesterov:
                g = g + momentum * b
            else:
                g = b
        param[j] = param[j] - lr * g


cdef inline void _sgd_task(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, Py_ssize_t c,
    int buf_stream, floating lr, floating momentum, floating keep, floating weight_decay,
    bint use_momentum, bint nesterov, bint maximize, bint first,
) noexcept nogil:
    cdef Py_ssize_t a = chunks[c, 0], start = chunks[c, 1]
    _sgd_range(
        <floating*> ptrs[a, 0] + start,
        <const floating*> ptrs[a, 1] + start,
        <floating*> ptrs[a, buf_stream] + start,
        chunks[c, 2] - start,
        lr, momentum, keep, weight_decay, use_momentum, nesterov, maximize, first,
    )


cdef void _sgd(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double lr, double momentum, double dampening, double weight_decay,
    bint nesterov, bint maximize, bint first,
) noexcept nogil:
    cdef Py_ssize_t c, n_chunks = chunks.shape[0]
    cdef bint use_momentum = momentum != 0
    cdef int buf_stream = 2 if use_momentum else 0
    cdef unsigned long long fp
    cdef floating lr_t = <floating> lr, momentum_t = <floating> momentum
    cdef floating keep_t = <floating> (1.0 - dampening), wd_t = <floating> weight_decay
    if n_threads <= 1:
        # No parallel region at all: a one-thread team still costs about a
        # microsecond, which is most of a small model's step.
        fp = nopt_ftz_enter()
        for c in range(n_chunks):
            _sgd_task(tag, ptrs, chunks, c, buf_stream, lr_t, momentum_t, keep_t, wd_t,
                      use_momentum, nesterov, maximize, first)
        nopt_ftz_exit(fp)
        return
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            _sgd_task(tag, ptrs, chunks, c, buf_stream, lr_t, momentum_t, keep_t, wd_t,
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
