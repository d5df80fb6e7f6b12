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
#define NOPT_HAVE_FTZ 1
#else
static inline unsigned long long nopt_ftz_enter(void) { return 0; }
static inline void nopt_ftz_exit(unsigned long long old) { (void)old; }
static inline unsigned long long nopt_fp_mode(void) { return 0; }
static inline void nopt_set_fp_mode(unsigned long long mode) { (void)mode; }
#define NOPT_HAVE_FTZ 0
#endif

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

/* A prefetch hint for the per-parameter loops of _plan.pyx: after a large
   kernel every Python object they read is a cache miss, and the loops know
   which objects come next. */
#if defined(__GNUC__) || defined(__clang__)
#define nopt_prefetch(p) __builtin_prefetch((const void *)(p))
#else
#define nopt_prefetch(p) ((void)(p))
#endif

#endif
