# Rprop (resilient backpropagation), with maximize.
#
# One call updates every array of a batch: ptrs[a] = (param, grad, prev,
# step_size). Nothing depends on the step count, so a batch is never split.
# Per element, following torch's single-tensor rule op by op:
#   s = g * prev                      (the product, as torch: its sign decides)
#   f = etaplus if s > 0, etaminus if s < 0, else 1  (NaN -> 1: torch.sign(NaN) = 0)
#   step_size = clamp(step_size * f, step_min, step_max)   (NaN propagates)
#   g = 0 where f == etaminus        (after a sign change: no move, prev = 0)
#   param += -sign(g) * step_size;  prev = g
# etaplus / etaminus are compared in the tensor's type, as torch compares its
# float32 "sign" tensor with etaminus.
#
# Unlike the other kernels this one runs in IEEE mode (flush-to-zero and
# denormals-are-zero off, on every thread), as torch does by default: Rprop
# uses only signs, so a subnormal gradient is a full-size step, not a zero.
#
# Fast path (as sgd.pyx): _rprop_task, the per-chunk function, is compiled
# for AVX-512 / AVX2 / baseline (nopt_dispatched; same bits) and calls the
# loop only with a literal maximize flag, so each inlined copy is a
# branch-free loop that gcc vectorises. With n_threads <= 1 the chunks run in
# the calling thread (IEEE mode set around them), without an OpenMP team.

from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from ._common cimport floating, nopt_dispatched

cdef extern from *:
    """
    /* Clear flush-to-zero and denormals-are-zero; return the old mode. */
    #if defined(__SSE__) || defined(_M_X64) || defined(_M_AMD64)
    #include <xmmintrin.h>
    static inline unsigned long long nopt_rprop_ieee_enter(void) {
        unsigned int old = _mm_getcsr();
        _mm_setcsr(old & ~0x8040u);
        return (unsigned long long)old;
    }
    static inline void nopt_rprop_ieee_exit(unsigned long long old) { _mm_setcsr((unsigned int)old); }
    #elif defined(__aarch64__)
    static inline unsigned long long nopt_rprop_ieee_enter(void) {
        unsigned long long old, now;
        __asm__ __volatile__("mrs %0, fpcr" : "=r"(old));
        now = old & ~(1ULL << 24);
        __asm__ __volatile__("msr fpcr, %0" : : "r"(now));
        return old;
    }
    static inline void nopt_rprop_ieee_exit(unsigned long long old) {
        __asm__ __volatile__("msr fpcr, %0" : : "r"(old));
    }
    #else
    static inline unsigned long long nopt_rprop_ieee_enter(void) { return 0; }
    static inline void nopt_rprop_ieee_exit(unsigned long long old) { (void)old; }
    #endif
    """
    unsigned long long nopt_rprop_ieee_enter() nogil
    void nopt_rprop_ieee_exit(unsigned long long old) nogil


cdef inline void _rprop_loop(
    floating* param,              # IN/OUT
    const floating* grad,         # IN
    floating* prev,               # IN/OUT
    floating* step_size,          # IN/OUT
    Py_ssize_t n,
    floating etaminus, floating etaplus, floating step_min, floating step_max,
    bint maximize,
) noexcept nogil:
    # Comparisons are evaluated unconditionally and the branches only pick
    # values, so gcc turns them into blends and vectorizes the loop (a nested
    # select for sign(g) defeats it, hence the arithmetic form).
    cdef Py_ssize_t j
    cdef floating g, p, q, s, f, x, y, d
    cdef floating zero = 0, one = 1
    cdef bint pos, neg, above, below, nan
    for j in range(n):
        p = param[j]
        g = grad[j]
        q = prev[j]
        x = step_size[j]
        if maximize:
            g = -g
        s = g * q
        pos = s > zero
        neg = s < zero
        f = etaplus if pos else (etaminus if neg else one)
        # clamp(x, step_min, step_max), NaN propagating (torch.clamp).
        x = x * f
        nan = x != x
        above = x > step_min
        y = x if above else step_min
        below = y < step_max
        y = y if below else step_max
        y = x if nan else y
        step_size[j] = y
        g = zero if f == etaminus else g
        d = <floating> (g > zero) - <floating> (g < zero)     # torch.sign (0 for NaN)
        param[j] = p + (-d) * y
        prev[j] = g


cdef nopt_dispatched _rprop_task(
    const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, Py_ssize_t c,
    floating etaminus, floating etaplus, floating step_min, floating step_max, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t a = chunks[c, 0], start = chunks[c, 1], n = chunks[c, 2] - start
    cdef floating* p = <floating*> ptrs[a, 0] + start
    cdef const floating* g = <const floating*> ptrs[a, 1] + start
    cdef floating* q = <floating*> ptrs[a, 2] + start
    cdef floating* s = <floating*> ptrs[a, 3] + start
    if maximize:
        _rprop_loop(p, g, q, s, n, etaminus, etaplus, step_min, step_max, True)
    else:
        _rprop_loop(p, g, q, s, n, etaminus, etaplus, step_min, step_max, False)


cdef void _rprop(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double etaminus, double etaplus, double step_min, double step_max, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t c, n_chunks = chunks.shape[0]
    cdef unsigned long long fp = 0   # set per thread; initialised for -Wuninitialized
    cdef floating etaminus_t = <floating> etaminus, etaplus_t = <floating> etaplus
    cdef floating min_t = <floating> step_min, max_t = <floating> step_max
    if n_threads <= 1:
        # No parallel region at all (a one-thread team still costs about a
        # microsecond, most of a small model's step).
        fp = nopt_rprop_ieee_enter()
        for c in range(n_chunks):
            _rprop_task(ptrs, chunks, c, etaminus_t, etaplus_t, min_t, max_t, maximize)
        nopt_rprop_ieee_exit(fp)
        return
    with parallel(num_threads=n_threads):
        fp = nopt_rprop_ieee_enter()
        for c in prange(n_chunks, schedule="static"):
            _rprop_task(ptrs, chunks, c, etaminus_t, etaplus_t, min_t, max_t, maximize)
        nopt_rprop_ieee_exit(fp)


def rprop(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
          int n_threads, double etaminus, double etaplus, double step_min, double step_max,
          bint maximize):
    """Apply one Rprop step to every array in the table (releases the GIL)."""
    with nogil:
        if is_double:
            _rprop(<double*> NULL, ptrs, chunks, n_threads, etaminus, etaplus, step_min,
                   step_max, maximize)
        else:
            _rprop(<float*> NULL, ptrs, chunks, n_threads, etaminus, etaplus, step_min,
                   step_max, maximize)
