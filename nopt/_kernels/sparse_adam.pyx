# SparseAdam: Adam restricted to the entries a sparse gradient stores.
#
# One call updates every parameter of a batch (a param group's params of one
# dtype). nopt/sparse_adam.py has already checked and coalesced the gradients
# into flat arrays, so the kernel trusts its input:
#   ptrs[k]       addresses of (param, exp_avg, exp_avg_sq) of parameter k
#   uoff[k]       parameter k's entries are u in [uoff[k], uoff[k+1])
#   lin[u]        flat (C-order) index of entry u in its parameter
#   vals[seg[u]:seg[u+1]]  the stored values summed into entry u (duplicates,
#                 in their input order), already cast to the param dtype
#   neg_step[k]   -lr * sqrt(1 - beta2**t) / (1 - beta1**t), in double
# Entries of one parameter are unique, so every entry touches its own three
# elements: chunks of entries run in parallel without races, and each entry's
# arithmetic does not depend on the thread count. Float32 math stays float32,
# in torch's order of operations (torch/optim/_functional.py, sparse_adam).

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t, int64_t

from ._common cimport floating, fsqrt, nopt_ftz_enter, nopt_ftz_exit, omp_get_max_threads

import numpy as np

# Entries per task, and the entry count below which one thread does it all.
DEF _CHUNK = 4096
DEF _SERIAL_BELOW = 16384
CHUNK = _CHUNK
SERIAL_BELOW = _SERIAL_BELOW


cdef inline void _sparse_adam_range(
    floating* param,              # IN/OUT
    floating* exp_avg,            # IN/OUT
    floating* exp_avg_sq,         # IN/OUT
    const int64_t* lin,           # IN: entry u's flat index
    const int64_t* seg,           # IN: entry u's values are vals[seg[u]:seg[u+1]]
    const floating* vals,         # IN
    Py_ssize_t start, Py_ssize_t stop,
    floating keep1, floating keep2, floating eps, floating neg_step, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t u, q, i
    cdef floating g, m0, s0, dm, ds, numer, denom
    for u in range(start, stop):
        # coalesce: duplicates are summed (torch coalesces after negating;
        # negating the sum gives the same bits)
        g = vals[seg[u]]
        for q in range(seg[u] + 1, seg[u + 1]):
            g = g + vals[q]
        if maximize:
            g = -g
        i = lin[u]
        m0 = exp_avg[i]
        s0 = exp_avg_sq[i]
        dm = (g - m0) * keep1
        ds = (g * g - s0) * keep2
        exp_avg[i] = m0 + dm
        exp_avg_sq[i] = s0 + ds
        numer = dm + m0
        denom = fsqrt(ds + s0) + eps
        param[i] = param[i] + (numer / denom) * neg_step


cdef void _sparse_adam(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks,
    const int64_t[::1] lin, const int64_t[::1] seg, const floating* vals,
    const double[::1] neg_step, int n_threads,
    double beta1, double beta2, double eps, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t c, k, n_chunks = chunks.shape[0]
    cdef unsigned long long fp
    cdef floating keep1 = <floating> (1.0 - beta1), keep2 = <floating> (1.0 - beta2)
    cdef floating eps_t = <floating> eps
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            k = chunks[c, 0]
            _sparse_adam_range(
                <floating*> ptrs[k, 0], <floating*> ptrs[k, 1], <floating*> ptrs[k, 2],
                &lin[0], &seg[0], vals, chunks[c, 1], chunks[c, 2],
                keep1, keep2, eps_t, <floating> neg_step[k], maximize,
            )
        nopt_ftz_exit(fp)


def sparse_adam(const intptr_t[:, ::1] ptrs, const int64_t[::1] uoff,
                const int64_t[::1] lin, const int64_t[::1] seg, vals,
                const double[::1] neg_step, bint is_double,
                double beta1, double beta2, double eps, bint maximize):
    """Apply one SparseAdam step to every parameter in the table (releases the GIL).

    ``vals`` is a C-contiguous float64 (``is_double``) or float32 array. The
    index arrays must be valid (nopt/sparse_adam.py checks them); only their
    lengths are checked here.
    """
    cdef Py_ssize_t n_params = ptrs.shape[0], n_entries = lin.shape[0]
    cdef Py_ssize_t k, c, n_chunks = 0, start
    if ptrs.shape[1] != 3 or uoff.shape[0] != n_params + 1 or neg_step.shape[0] != n_params:
        raise ValueError("sparse_adam: ptrs, uoff and neg_step disagree on the parameter count")
    if seg.shape[0] != n_entries + 1 or uoff[n_params] != n_entries or uoff[0] != 0:
        raise ValueError("sparse_adam: lin, seg and uoff disagree on the entry count")
    vals = np.asarray(vals)
    if vals.dtype != (np.float64 if is_double else np.float32) or not vals.flags.c_contiguous:
        raise TypeError(f"sparse_adam: vals must be C-contiguous {'float64' if is_double else 'float32'}")
    if n_entries == 0:
        return
    if seg[0] != 0 or seg[n_entries] != vals.shape[0]:
        raise ValueError("sparse_adam: seg does not cover vals")
    for k in range(n_params):
        n_chunks += (uoff[k + 1] - uoff[k] + _CHUNK - 1) // _CHUNK
    chunks_arr = np.empty((n_chunks, 3), dtype=np.intp)
    cdef intptr_t[:, ::1] chunks = chunks_arr
    c = 0
    for k in range(n_params):
        start = uoff[k]
        while start < uoff[k + 1]:
            chunks[c, 0] = k
            chunks[c, 1] = start
            start = min(start + _CHUNK, uoff[k + 1])
            chunks[c, 2] = start
            c += 1
    cdef int n_threads = 1 if n_entries < _SERIAL_BELOW else omp_get_max_threads()
    cdef const double[::1] vd
    cdef const float[::1] vf
    if is_double:
        vd = vals
        with nogil:
            _sparse_adam(<double*> NULL, ptrs, chunks, lin, seg, &vd[0], neg_step, n_threads,
                         beta1, beta2, eps, maximize)
    else:
        vf = vals
        with nogil:
            _sparse_adam(<float*> NULL, ptrs, chunks, lin, seg, &vf[0], neg_step, n_threads,
                         beta1, beta2, eps, maximize)
