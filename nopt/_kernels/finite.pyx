# All-finite check over many arrays, for skipping steps with inf/NaN gradients.
#
# Each chunk writes its own flag, and the flags are combined after the
# parallel loop, so the answer does not depend on the thread count.

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

import numpy as np

from ._common cimport floating


cdef inline bint _range_finite(const floating* x, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating d
    cdef int bad = 0
    # x - x is 0 for finite x and NaN for inf/NaN; an integer OR reduction
    # keeps the loop branch-free and vectorisable.
    for j in range(n):
        d = x[j] - x[j]
        bad |= d != d
    return bad == 0


cdef void _all_finite(floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks,
                      unsigned char[::1] flags, int n_threads) noexcept nogil:
    cdef Py_ssize_t c, a, start
    with parallel(num_threads=n_threads):
        for c in prange(chunks.shape[0], schedule="static"):
            a = chunks[c, 0]
            start = chunks[c, 1]
            flags[c] = _range_finite(<const floating*> ptrs[a, 0] + start, chunks[c, 2] - start)


def all_finite(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double, int n_threads):
    """True when every element of every array in the table is finite."""
    flags = np.ones(chunks.shape[0], dtype=np.uint8)
    cdef unsigned char[::1] f = flags
    with nogil:
        if is_double:
            _all_finite(<double*> NULL, ptrs, chunks, f, n_threads)
        else:
            _all_finite(<float*> NULL, ptrs, chunks, f, n_threads)
    return bool(flags.all())
