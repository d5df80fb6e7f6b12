# Shared declarations for every kernel: the float types, OpenMP (or its
# serial stubs) and the flush-to-zero guard.
#
# Kernel calling convention (see _plan.pyx):
#   ptrs[a, s]   address of stream s (0 = param, 1 = grad, 2.. = state) of array a
#   chunks[c]    (array a, start, stop): the elements one task updates
# A kernel loops over the chunks with prange; every chunk is independent and
# elementwise, so results do not depend on the thread count.

from libc.stdint cimport intptr_t

ctypedef fused floating:
    float
    double

cdef extern from "_compat.h" nogil:
    int NOPT_HAVE_OPENMP
    int NOPT_HAVE_FTZ
    int omp_get_max_threads()
    void omp_set_num_threads(int n)
    int omp_in_parallel()
    int omp_get_thread_num()
    int omp_get_num_threads()
    unsigned long long nopt_ftz_enter()
    void nopt_ftz_exit(unsigned long long old)
    unsigned long long nopt_ieee_enter()
    void nopt_ieee_exit(unsigned long long old)
    unsigned long long nopt_fp_mode()
    void nopt_set_fp_mode(unsigned long long mode)
    void nopt_prefetch(const void* p)
    # Return type of a per-chunk kernel function compiled for several ISAs
    # and picked at load time (see _compat.h):
    #     cdef nopt_dispatched _task(...) noexcept nogil
    ctypedef void nopt_dispatched "NOPT_TARGET_CLONES void"
    int NOPT_HAVE_CLONES
    const char* nopt_simd_level()
    # As nopt_dispatched, with an FMA-capable middle clone (rules using fma_).
    ctypedef void nopt_fma_dispatched "NOPT_FMA_CLONES void"
    float nopt_fma32(float a, float b, float c)
    int NOPT_FMA32_EXACT

cdef extern from "math.h" nogil:
    float sqrtf(float x)
    double sqrt(double x)
    float fabsf(float x)
    double fabs(double x)
    float fmaxf(float x, float y)
    double fmax(double x, double y)
    float fminf(float x, float y)
    double fmin(double x, double y)
    float powf(float x, float y)
    double pow(double x, double y)


# Fused-type helpers: the float32 specialisation stays in float32 (sqrtf),
# which gcc can vectorise.
cdef inline floating fsqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating fabs_(floating x) noexcept nogil:
    if floating is float:
        return fabsf(x)
    else:
        return fabs(x)


cdef inline floating fmax_(floating x, floating y) noexcept nogil:
    if floating is float:
        return fmaxf(x, y)
    else:
        return fmax(x, y)


cdef inline floating fmin_(floating x, floating y) noexcept nogil:
    if floating is float:
        return fminf(x, y)
    else:
        return fmin(x, y)


# a*b + c: rounded once in float32 (as torch's FMA kernels; see _compat.h),
# twice in float64. Use with isa="fma" in the rule spec.
cdef inline floating fma_(floating a, floating b, floating c) noexcept nogil:
    if floating is float:
        return nopt_fma32(a, b, c)
    else:
        return a * b + c


# NaN-propagating max/min, as torch.maximum / torch.minimum.
# One select each (no early return), so loops using them still vectorise.
cdef inline floating max_nan(floating x, floating y) noexcept nogil:
    return x if (x > y) | (x != x) else y


cdef inline floating min_nan(floating x, floating y) noexcept nogil:
    return x if (x < y) | (x != x) else y
