# Running parameter averages (SWA / EMA) and the swap used to evaluate them.
#
# One call covers every array of one dtype: ptrs[a] = (average, current) and
# chunks as built by _plan.make_table([averages, currents]). Operations:
#   COPY  average = current                     (the first update)
#   SWA   average += (current - average) / k     k = n_averaged + 1, in the
#         array's dtype: torch's get_swa_avg_fn, AveragedModel's CPU path
#   EMA   torch.lerp(average, current, w), w = 1 - decay, in torch's two-sided
#         form: |w| < 0.5: average + w * (current - average)
#                  else: current + (w - 1) * (current - average)
#         (plain multiply and add, no FMA: torch's vector lerp fuses them, so
#         it can differ by an ulp per update; NumPy gives our bits exactly)
#   SWAP  exchange average and current bit for bit
# COPY and SWAP only move bits, so they run without flush-to-zero: swapping
# in and out restores every bit (subnormals, -0.0, NaN payloads).

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t
from libc.string cimport memcpy

from ._common cimport fabs_, floating, nopt_ftz_enter, nopt_ftz_exit

cdef enum:
    _COPY = 0
    _SWA = 1
    _EMA = 2
    _SWAP = 3

COPY = _COPY
SWA = _SWA
EMA = _EMA
SWAP = _SWAP


cdef inline void _swa_range(
    floating* avg,              # IN/OUT
    const floating* cur,        # IN
    Py_ssize_t n, floating count,
) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        avg[j] = avg[j] + (cur[j] - avg[j]) / count


cdef inline void _lerp_range(
    floating* avg,              # IN/OUT
    const floating* cur,        # IN
    Py_ssize_t n, floating w, bint low,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating w_minus_1 = w - 1
    if low:
        for j in range(n):
            avg[j] = avg[j] + w * (cur[j] - avg[j])
    else:
        for j in range(n):
            avg[j] = cur[j] + w_minus_1 * (cur[j] - avg[j])


cdef inline void _swap_range(
    floating* avg,              # IN/OUT
    floating* cur,              # IN/OUT
    Py_ssize_t n,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating t
    for j in range(n):
        t = avg[j]
        avg[j] = cur[j]
        cur[j] = t


cdef void _average(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    int op, double value,
) noexcept nogil:
    cdef Py_ssize_t c, a, start, n, n_chunks = chunks.shape[0]
    cdef unsigned long long fp = 0  # firstprivate in the parallel block
    cdef floating value_t = <floating> value
    # torch picks the lerp form from the weight in the array's dtype.
    cdef bint low = fabs_(value_t) < 0.5
    cdef bint arithmetic = op == _SWA or op == _EMA
    with parallel(num_threads=n_threads):
        if arithmetic:
            fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            a = chunks[c, 0]
            start = chunks[c, 1]
            n = chunks[c, 2] - start
            if op == _COPY:
                memcpy(<floating*> ptrs[a, 0] + start, <const floating*> ptrs[a, 1] + start,
                       n * sizeof(floating))
            elif op == _SWA:
                _swa_range(<floating*> ptrs[a, 0] + start, <const floating*> ptrs[a, 1] + start,
                           n, value_t)
            elif op == _EMA:
                _lerp_range(<floating*> ptrs[a, 0] + start, <const floating*> ptrs[a, 1] + start,
                            n, value_t, low)
            else:
                _swap_range(<floating*> ptrs[a, 0] + start, <floating*> ptrs[a, 1] + start, n)
        if arithmetic:
            nopt_ftz_exit(fp)


def average(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
            int n_threads, int op, double value):
    """Apply ``op`` (COPY, SWA with ``value`` = n_averaged + 1, EMA with ``value`` = 1 - decay,
    or SWAP) to every (average, current) pair in the table (releases the GIL)."""
    if op < _COPY or op > _SWAP:
        raise ValueError(f"unknown averaging op {op}")
    with nogil:
        if is_double:
            _average(<double*> NULL, ptrs, chunks, n_threads, op, value)
        else:
            _average(<float*> NULL, ptrs, chunks, n_threads, op, value)
