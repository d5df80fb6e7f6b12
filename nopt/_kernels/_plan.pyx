# Validation and work tables for the multi-tensor kernels.
#
# A step checks every parameter and gradient first (check_group), and only
# then builds the table the kernel walks (make_table):
#   ptrs[a, s]  address of stream s of array a (0 = param, 1 = grad, 2.. = state)
#   chunks[c]   (a, start, stop): one task of at most CHUNK elements
# Arrays whose every stream lies right after the previous array's (flat
# storage) are merged into one, so a flat model is one contiguous loop.

cimport numpy as cnp
from libc.stdint cimport intptr_t

from ._common cimport omp_get_max_threads, omp_set_num_threads, NOPT_HAVE_OPENMP, NOPT_HAVE_FTZ

import numpy as np

cnp.import_array()

# Elements per task: large enough to amortise scheduling, small enough to
# balance threads. Below SERIAL_BELOW elements a step runs on one thread, so
# tiny models pay no OpenMP start-up.
DEF _CHUNK = 32768
DEF _SERIAL_BELOW = 65536
CHUNK = _CHUNK
SERIAL_BELOW = _SERIAL_BELOW

HAVE_OPENMP = bool(NOPT_HAVE_OPENMP)
HAVE_FTZ = bool(NOPT_HAVE_FTZ)


def get_max_threads():
    """OpenMP's current thread count for this thread (1 without OpenMP)."""
    return omp_get_max_threads()


def set_max_threads(int n):
    omp_set_num_threads(n)


cdef str _where(Py_ssize_t group_index, Py_ssize_t param_index):
    return f"param_groups[{group_index}]['params'][{param_index}]"


cdef str _describe(object x):
    if isinstance(x, np.ndarray):
        return f"ndarray of dtype {x.dtype} and shape {x.shape}"
    return f"{type(x).__name__}"


cdef inline bint _overlap(cnp.ndarray a, cnp.ndarray b):
    cdef char* a0 = <char*> cnp.PyArray_DATA(a)
    cdef char* b0 = <char*> cnp.PyArray_DATA(b)
    cdef Py_ssize_t na = cnp.PyArray_NBYTES(a)
    cdef Py_ssize_t nb = cnp.PyArray_NBYTES(b)
    if na == 0 or nb == 0:
        return False
    return a0 < b0 + nb and b0 < a0 + na


cdef int _check_param(object p, Py_ssize_t gi, Py_ssize_t pi) except -1:
    cdef cnp.ndarray a
    if not cnp.PyArray_Check(p):
        raise TypeError(f"{_where(gi, pi)} must be a nopt.Parameter, got {_describe(p)}")
    a = <cnp.ndarray> p
    cdef int t = cnp.PyArray_TYPE(a)
    if t != cnp.NPY_FLOAT and t != cnp.NPY_DOUBLE:
        raise TypeError(
            f"{_where(gi, pi)} has dtype {(<object> a).dtype}; expected float32 or float64")
    cdef int flags = cnp.PyArray_FLAGS(a)
    if not (flags & cnp.NPY_ARRAY_C_CONTIGUOUS) or not (flags & cnp.NPY_ARRAY_ALIGNED):
        raise ValueError(
            f"{_where(gi, pi)} (shape {(<object> a).shape}, dtype {(<object> a).dtype}) is not an aligned "
            "C-contiguous array; expected C-contiguous memory")
    if not (flags & cnp.NPY_ARRAY_WRITEABLE):
        raise ValueError(
            f"{_where(gi, pi)} (shape {(<object> a).shape}, dtype {(<object> a).dtype}) is read-only; "
            "expected a writeable array")
    return t


def check_group(list params, list grads, Py_ssize_t group_index, list indices):
    """Check params and their grads; return the common type number or -1.

    ``indices[k]`` is the position of ``params[k]`` in its group, used in
    messages. Raises TypeError/ValueError naming the parameter; changes nothing.
    """
    cdef Py_ssize_t k, n = len(params)
    cdef int t, common = -2, gflags
    cdef cnp.ndarray g, p
    cdef object graw
    for k in range(n):
        pi = indices[k]
        t = _check_param(params[k], group_index, pi)
        praw = params[k]
        p = <cnp.ndarray> praw
        graw = grads[k]
        if not cnp.PyArray_Check(graw):
            raise TypeError(
                f"the grad of {_where(group_index, pi)} must be a numpy.ndarray of "
                f"dtype {praw.dtype} and shape {praw.shape}, got {_describe(graw)}")
        g = <cnp.ndarray> graw
        if cnp.PyArray_TYPE(g) != t:
            raise TypeError(
                f"the grad of {_where(group_index, pi)} has dtype {graw.dtype}; expected "
                f"{praw.dtype}, the parameter's dtype")
        if not cnp.PyArray_SAMESHAPE(g, p):
            raise ValueError(
                f"the grad of {_where(group_index, pi)} has shape {graw.shape}; expected "
                f"{praw.shape}, the parameter's shape")
        gflags = cnp.PyArray_FLAGS(g)
        if not (gflags & cnp.NPY_ARRAY_C_CONTIGUOUS) or not (gflags & cnp.NPY_ARRAY_ALIGNED):
            raise ValueError(
                f"the grad of {_where(group_index, pi)} (shape {graw.shape}, dtype {graw.dtype}) "
                "is not an aligned C-contiguous array; pass np.ascontiguousarray(grad)")
        if _overlap(g, p):
            raise ValueError(
                f"the grad of {_where(group_index, pi)} shares memory with the "
                "parameter; expected a separate array")
        if common == -2:
            common = t
        elif common != t:
            common = -1
    return common


def make_table(list streams):
    """Build (ptrs, chunks, n_threads) for a kernel over already-checked arrays.

    ``streams`` is a list of equally long lists of C-contiguous arrays of one
    dtype: parameters first, then gradients, then state arrays.
    """
    cdef Py_ssize_t n_streams = len(streams)
    cdef Py_ssize_t n = len(streams[0])
    cdef Py_ssize_t k, s, m = 0, size, total = 0, itemsize = 0, c, start, n_chunks = 0
    cdef cnp.ndarray a
    cdef bint adjacent
    ptrs_arr = np.empty((max(n, 1), n_streams), dtype=np.intp)
    sizes_arr = np.empty(max(n, 1), dtype=np.intp)
    cdef intptr_t[:, ::1] ptrs = ptrs_arr
    cdef intptr_t[::1] sizes = sizes_arr
    cdef list stream
    for k in range(n):
        a = <cnp.ndarray> (<list> streams[0])[k]
        size = cnp.PyArray_SIZE(a)
        if size == 0:
            continue
        itemsize = cnp.PyArray_ITEMSIZE(a)
        total += size
        adjacent = m > 0
        for s in range(n_streams):
            stream = <list> streams[s]
            address = <intptr_t> cnp.PyArray_DATA(<cnp.ndarray> stream[k])
            if adjacent and ptrs[m - 1, s] + sizes[m - 1] * itemsize != address:
                adjacent = False
            ptrs[m, s] = address
        if adjacent:
            sizes[m - 1] += size
        else:
            sizes[m] = size
            m += 1
    for k in range(m):
        n_chunks += (sizes[k] + _CHUNK - 1) // _CHUNK
    chunks_arr = np.empty((n_chunks, 3), dtype=np.intp)
    cdef intptr_t[:, ::1] chunks = chunks_arr
    c = 0
    for k in range(m):
        start = 0
        while start < sizes[k]:
            chunks[c, 0] = k
            chunks[c, 1] = start
            start = min(start + _CHUNK, sizes[k])
            chunks[c, 2] = start
            c += 1
    n_threads = 1 if total < _SERIAL_BELOW else omp_get_max_threads()
    return ptrs_arr[:m], chunks_arr, n_threads
