/* OpenMP and floating-point-environment helpers shared by every kernel.
 *
 * OpenMP is optional: without it the stubs below make every kernel serial.
 * Flush-to-zero is per-thread state, so kernels set it on entry to each
 * thread's work and restore the caller's mode on exit:
 *
 *     fp = nopt_ftz_enter();   (inside the parallel block, or around a serial loop)
 *     ... loop ...
 *     nopt_ftz_exit(fp);
 *
 * nopt_fp_mode / nopt_set_fp_mode read and write the whole control word
 * (for the tests that check a step leaves the caller's mode as it was). */
#ifndef NOPT_COMPAT_H
#define NOPT_COMPAT_H

#ifdef _OPENMP
#include <omp.h>
#define NOPT_HAVE_OPENMP 1
#else
#define NOPT_HAVE_OPENMP 0
static inline int omp_get_max_threads(void) { return 1; }
static inline void omp_set_num_threads(int n) { (void)n; }
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_in_parallel(void) { return 0; }
#endif

#if defined(__SSE__) || defined(_M_X64) || defined(_M_AMD64)
#include <xmmintrin.h>
/* MXCSR: FTZ (bit 15) flushes subnormal results, DAZ (bit 6) subnormal inputs. */
static inline unsigned long long nopt_ftz_enter(void) {
    unsigned int old = _mm_getcsr();
    _mm_setcsr(old | 0x8040u);
    return (unsigned long long)old;
}
static inline void nopt_ftz_exit(unsigned long long old) { _mm_setcsr((unsigned int)old); }
static inline unsigned long long nopt_fp_mode(void) { return (unsigned long long)_mm_getcsr(); }
static inline void nopt_set_fp_mode(unsigned long long mode) { _mm_setcsr((unsigned int)mode); }
/* IEEE mode (FTZ and DAZ off), for kernels that must see subnormals (Rprop). */
static inline unsigned long long nopt_ieee_enter(void) {
    unsigned int old = _mm_getcsr();
    _mm_setcsr(old & ~0x8040u);
    return (unsigned long long)old;
}
#define NOPT_HAVE_FTZ 1
#elif defined(__aarch64__)
/* FPCR bit 24 (FZ) flushes subnormals to zero. */
static inline unsigned long long nopt_ftz_enter(void) {
    unsigned long long old, now;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(old));
    now = old | (1ULL << 24);
    __asm__ __volatile__("msr fpcr, %0" : : "r"(now));
    return old;
}
static inline void nopt_ftz_exit(unsigned long long old) {
    __asm__ __volatile__("msr fpcr, %0" : : "r"(old));
}
static inline unsigned long long nopt_fp_mode(void) {
    unsigned long long mode;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(mode));
    return mode;
}
static inline void nopt_set_fp_mode(unsigned long long mode) {
    __asm__ __volatile__("msr fpcr, %0" : : "r"(mode));
}
static inline unsigned long long nopt_ieee_enter(void) {
    unsigned long long old, now;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(old));
    now = old & ~(1ULL << 24);
    __asm__ __volatile__("msr fpcr, %0" : : "r"(now));
    return old;
}
#define NOPT_HAVE_FTZ 1
#else
static inline unsigned long long nopt_ftz_enter(void) { return 0; }
static inline void nopt_ftz_exit(unsigned long long old) { (void)old; }
static inline unsigned long long nopt_fp_mode(void) { return 0; }
static inline void nopt_set_fp_mode(unsigned long long mode) { (void)mode; }
static inline unsigned long long nopt_ieee_enter(void) { return 0; }
#define NOPT_HAVE_FTZ 0
#endif
/* Leaving IEEE mode restores the caller's whole control word, as nopt_ftz_exit. */
#define nopt_ieee_exit(old) nopt_ftz_exit(old)

/* Run-time ISA dispatch for the kernels' per-chunk functions.
 *
 * Kernels are compiled for the baseline ISA (SSE2 on x86-64), which keeps
 * wheels portable but uses 16-byte vectors. A function declared with
 * NOPT_TARGET_CLONES is compiled three times (AVX-512, AVX2, baseline) and
 * the best one the CPU supports is picked once, at load time (an ifunc).
 * The clones run the same C operations in the same order, and setup.py
 * builds with -ffp-contract=off (no FMA contraction), so every clone gives
 * bitwise identical results; only the vector width differs. It matters
 * when the data sits in cache (about 2x for an Adam step on 1M floats);
 * memory-bound steps are unchanged.
 *
 * Needs GCC >= 8 or clang >= 14 on x86-64 Linux with glibc (ifuncs);
 * elsewhere, or with -DNOPT_NO_CLONES, it expands to nothing. In Cython,
 * declare the per-chunk function with _common.pxd's return type
 * ``nopt_dispatched`` (void):  cdef nopt_dispatched _task(...) noexcept nogil  */
#if !defined(NOPT_NO_CLONES) && defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) \
    && ((defined(__clang__) && __clang_major__ >= 14) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 8))
#define NOPT_TARGET_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define NOPT_HAVE_CLONES 1
static inline const char *nopt_simd_level(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return "avx512f";
    if (__builtin_cpu_supports("avx2")) return "avx2";
    return "default";
}
#else
#define NOPT_TARGET_CLONES
#define NOPT_HAVE_CLONES 0
static inline const char *nopt_simd_level(void) { return "baseline (no run-time dispatch)"; }
#endif

/* A float32 multiply-add rounded once, as torch's FMA kernels (RMSprop
 * matches torch's add(alpha=), addcmul and lerp with it). fmaf is one IEEE
 * rounding everywhere, so every ISA clone gives the same bits. gcc's "avx2"
 * target has no FMA (fmaf would be a libm call per element there), so a
 * rule that uses it is cloned with NOPT_FMA_CLONES instead: AVX-512,
 * x86-64-v3 (AVX2 + FMA, which every AVX2 CPU has; gcc >= 12 resolves it by
 * CPU features) or "fma" (AVX + FMA) for older gcc and clang, and the
 * baseline (which calls libm's fmaf per element: x86-64 CPUs without FMA
 * are now rare). A build without clones and without FMA (MSVC, macOS on
 * x86-64) rounds in double instead, which vectorises: the product of two
 * floats is exact in double, then the sum rounds to double and to float;
 * that differs from fmaf only when the double sum falls exactly on a
 * float32 halfway point (vanishingly rare). float64 always rounds twice
 * (an exact double FMA would need -mfma or a slow libm call). */
#include <math.h>
#if NOPT_HAVE_CLONES || defined(__FMA__) || defined(__aarch64__)
#define nopt_fma32(a, b, c) fmaf((a), (b), (c))
#define NOPT_FMA32_EXACT 1
#else
#define nopt_fma32(a, b, c) ((float)((double)(a) * (double)(b) + (double)(c)))
#define NOPT_FMA32_EXACT 0
#endif
#if NOPT_HAVE_CLONES && !defined(__clang__) && __GNUC__ >= 12
#define NOPT_FMA_CLONES __attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
#elif NOPT_HAVE_CLONES
#define NOPT_FMA_CLONES __attribute__((target_clones("avx512f", "fma", "default")))
#else
#define NOPT_FMA_CLONES
#endif

/* The referent of a weak reference, as a new reference (None once dead).
   PyWeakref_GET_OBJECT is deprecated from CPython 3.13, whose
   PyWeakref_GetRef returns a strong reference instead. */
#if PY_VERSION_HEX >= 0x030D0000
static inline PyObject *nopt_weakref_get(PyObject *ref) {
    PyObject *obj = NULL;
    if (PyWeakref_GetRef(ref, &obj) < 0) return NULL;
    if (obj == NULL) { Py_INCREF(Py_None); return Py_None; }
    return obj;
}
#else
static inline PyObject *nopt_weakref_get(PyObject *ref) {
    PyObject *obj = PyWeakref_GET_OBJECT(ref);
    Py_INCREF(obj);
    return obj;
}
#endif

/* A prefetch hint for the per-parameter loops of _plan.pyx: after a large
   kernel every Python object they read is a cache miss, and the loops know
   which objects come next. */
#if defined(__GNUC__) || defined(__clang__)
#define nopt_prefetch(p) __builtin_prefetch((const void *)(p))
#else
#define nopt_prefetch(p) ((void)(p))
#endif

#endif
