# Planning a step: validation, state and its step cache, work tables.
#
# A step checks every parameter and gradient first (_plan_validation.pxi:
# gather), gathers and counts the state (_plan_state.pxi: StateMap /
# StateDict with their change tracking, columns_and_increment and its
# StepCache, store), and only then builds the table the kernel walks
# (_plan_tables.pxi: make_table and its TableCache):
#   ptrs[a, s]  address of stream s of array a (0 = param, 1 = grad, 2.. = state)
#   chunks[c]   (a, start, stop): one task of at most CHUNK elements
# Arrays whose every stream lies right after the previous array's (flat
# storage) are merged into one, so a flat model is one contiguous loop.
#
# The three concerns are files of one extension module (one compile, and
# the step cache and tables share the StateDict type at C level).
# Everything here runs once per step, so it is written against the C API
# (no Python-level loops): a step's fixed cost is what a 1x100 model pays,
# and its per-array cost is what a 2000-array model pays.

cimport numpy as cnp
from cpython.dict cimport PyDict_GetItemWithError, PyDict_SetItem
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_Check, PyFloat_CheckExact, PyFloat_FromDouble
from cpython.long cimport PyLong_CheckExact
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.object cimport PyObject
from cpython.weakref cimport PyWeakref_NewRef
from cython.parallel cimport parallel
cimport cython
from libc.stdint cimport intptr_t

cdef extern from "_compat.h":
    # The referent of a weak reference (a new reference; None once dead).
    object nopt_weakref_get(object ref)

from ._common cimport (
    NOPT_HAVE_CLONES,
    NOPT_HAVE_FTZ,
    NOPT_HAVE_OPENMP,
    nopt_fp_mode,
    nopt_prefetch,
    nopt_set_fp_mode,
    nopt_simd_level,
    omp_get_max_threads,
    omp_get_num_threads,
    omp_get_thread_num,
    omp_in_parallel,
    omp_set_num_threads,
)

import numpy as np

cnp.import_array()

# How many parameters ahead the step cache's loop prefetches state dicts.
DEF _AHEAD = 8

# Elements per task: large enough to amortise scheduling, small enough to
# balance threads. Below SERIAL_BELOW elements a step runs on one thread, so
# tiny models pay no OpenMP start-up.
DEF _CHUNK = 32768
DEF _SERIAL_BELOW = 65536
CHUNK = _CHUNK
SERIAL_BELOW = _SERIAL_BELOW

HAVE_OPENMP = bool(NOPT_HAVE_OPENMP)
HAVE_FTZ = bool(NOPT_HAVE_FTZ)
# Kernels compiled for several ISAs, and the one this CPU runs (see _compat.h).
HAVE_SIMD_DISPATCH = bool(NOPT_HAVE_CLONES)
SIMD_LEVEL = (<bytes> nopt_simd_level()).decode()

cdef object _Parameter = None


def get_max_threads():
    """OpenMP's current thread count for this thread (1 without OpenMP)."""
    return omp_get_max_threads()


def set_max_threads(int n):
    omp_set_num_threads(n)


def in_parallel():
    """True when called from inside an active OpenMP parallel region."""
    return bool(omp_in_parallel())


include "_plan_state.pxi"
include "_plan_validation.pxi"
include "_plan_tables.pxi"
include "_plan_safety.pxi"


# ---------------------------------------------------------------- test helpers
def fp_mode():
    """The calling thread's floating-point control word (MXCSR on x86, FPCR on arm64)."""
    return nopt_fp_mode()


def set_fp_mode(unsigned long long mode):
    """Set the calling thread's floating-point control word (tests only)."""
    nopt_set_fp_mode(mode)


def call_in_parallel(object callback, int n_threads):
    """Call ``callback()`` from each thread of an OpenMP team of ``n_threads``.

    For tests: lets a kernel be called from inside an active parallel region.
    Returns the results in thread order (None where a thread did not run).
    """
    results = [None] * n_threads
    errors = []
    cdef int tid
    with nogil, parallel(num_threads=n_threads):
        tid = omp_get_thread_num()
        with gil:
            try:
                results[tid] = callback()
            except BaseException as exc:  # re-raised below, in the caller's thread
                errors.append(exc)
    if errors:
        raise errors[0]
    return results
