# Included by _plan.pyx: the work tables the kernels walk, and their cache.

cdef int _threads_for(Py_ssize_t total, Py_ssize_t n_chunks) noexcept nogil:
    """Threads a kernel over ``total`` elements in ``n_chunks`` tasks should use.

    One thread for small steps (no OpenMP start-up), and inside an active
    parallel region (kernels never nest teams), never more than the tasks.
    """
    cdef int n
    if total < _SERIAL_BELOW or omp_in_parallel():
        return 1
    n = omp_get_max_threads()
    if n > n_chunks:
        n = <int> n_chunks
    return n if n > 1 else 1


cdef inline bint _walkable(object x, bint written, int t0, Py_ssize_t size) noexcept:
    """Can a kernel read (and write) ``size`` elements of type ``t0`` from ``x``?"""
    cdef int flags, need = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
    if written:
        need |= cnp.NPY_ARRAY_WRITEABLE
    if not cnp.PyArray_Check(x):
        return False
    flags = cnp.PyArray_FLAGS(<cnp.ndarray> x)
    return (cnp.PyArray_TYPE(<cnp.ndarray> x) == t0 and cnp.PyArray_SIZE(<cnp.ndarray> x) == size
            and (flags & need) == need)


cdef _stream_error(object x, Py_ssize_t s, Py_ssize_t k, int t0, Py_ssize_t size):
    what = "gradient" if s == 1 else ("parameter" if s == 0 else f"state array (stream {s})")
    return ValueError(
        f"the {what} of array {k} in this step is {_describe(x)}; expected "
        f"{'a writeable, ' if s != 1 else 'an '}aligned C-contiguous array of "
        f"{_type_name(t0)} with {size} elements, like its parameter "
        "(was optimizer.state changed by hand?)")


cdef str _type_name(int t):
    return "float64" if t == cnp.NPY_DOUBLE else ("float32" if t == cnp.NPY_FLOAT else f"type {t}")


cdef class TableCache:
    """The last table ``make_table`` built for one call site, to reuse it.

    Reused when the streams hold the same parameter and state array objects
    (held here) at the same addresses, and gradients (not held: only their
    addresses are kept) at the same addresses: then every pointer, size and
    merge is what it was, and the checks made then still hold.
    """
    cdef Py_ssize_t n_streams, n, total, n_chunks
    cdef tuple objects        # per stream but the gradients: a tuple of the arrays
    cdef tuple streams        # the stream sequences of the last call (see _table_valid)
    cdef object addresses     # intp array (n, n_streams): each array's data address
    cdef object ptrs, chunks
    # (reliability) True when the last make_table built a new table (see GatherCache.rebuilt).
    cdef public bint rebuilt

    def __cinit__(self):
        self.rebuilt = True
        self.n_streams = -1
        self.n = -1


cdef bint _table_valid(TableCache cache, list streams, Py_ssize_t n_streams, Py_ssize_t n):
    cdef Py_ssize_t k, s
    cdef object x, stream
    cdef tuple objs
    cdef intptr_t* addr
    cdef bint is_list
    if cache.n_streams != n_streams or cache.n != n:
        return False
    addr = <intptr_t*> cnp.PyArray_DATA(<cnp.ndarray> cache.addresses)
    for s in range(n_streams):
        stream = <object> PyList_GET_ITEM(streams, s)
        is_list = type(stream) is list
        if not is_list and type(stream) is not tuple:
            return False
        if s >= 2 and not is_list and stream is <object> PyTuple_GET_ITEM(cache.streams, s):
            # The very tuple of state arrays seen last time (a step cache's
            # column): the same arrays, and at the same addresses (held here
            # and by the state, no array can be resized in place). Skip them:
            # after a large kernel each array read is a cache miss.
            continue
        if (PyList_GET_SIZE(stream) if is_list else PyTuple_GET_SIZE(stream)) != n:
            return False
        objs = <tuple> PyTuple_GET_ITEM(cache.objects, s)
        for k in range(n):
            x = <object> (PyList_GET_ITEM(stream, k) if is_list else PyTuple_GET_ITEM(stream, k))
            if s != 1:
                if x is not <object> PyTuple_GET_ITEM(objs, k):
                    return False
            elif not cnp.PyArray_Check(x):
                return False
            if <intptr_t> cnp.PyArray_DATA(<cnp.ndarray> x) != addr[k * n_streams + s]:
                return False
    cache.streams = tuple(streams)
    return True


def make_table(list streams, TableCache cache=None):
    """Build (ptrs, chunks, n_threads) for a kernel over a batch's arrays.

    ``streams`` is a list of equally long lists (or tuples) of C-contiguous arrays of one
    dtype: parameters first, then gradients, then state arrays. Arrays of
    size 0 are left out; arrays adjacent in every stream are merged.

    Parameters and gradients come checked from ``Optimizer._batches``; this
    still checks that every array of every stream is an aligned C-contiguous
    array of the parameters' dtype, with its parameter's size (and writeable,
    but for the gradients), so a state array replaced by hand raises
    ValueError here instead of corrupting memory in the kernel.

    With a ``cache`` (see TableCache, and ``Optimizer._table``), a call
    over the same arrays as the cache's last one returns that table again
    (treat ``ptrs`` and ``chunks`` as read-only), and any other call fills
    the cache.

    Returns
    -------
    ptrs : ndarray of intp, shape (rows, len(streams))
    chunks : ndarray of intp, shape (tasks, 3)
        (row, start, stop) in elements.
    n_threads : int
        1 below ``SERIAL_BELOW`` elements or inside a parallel region, else
        OpenMP's max threads (at most one per task).
    """
    cdef Py_ssize_t n_streams = PyList_GET_SIZE(streams)
    if n_streams == 0:
        raise ValueError("make_table: no streams")
    first = streams[0]
    cdef Py_ssize_t n = len(first)
    if cache is not None and _table_valid(cache, streams, n_streams, n):
        cache.rebuilt = False
        return cache.ptrs, cache.chunks, _threads_for(cache.total, cache.n_chunks)
    # Streams may be lists or tuples (a step cache's columns); walk lists.
    given = streams
    streams = [x if type(x) is list else list(x) for x in streams]
    cdef Py_ssize_t k, s, m = 0, size, total = 0, itemsize = 0, c, start, n_chunks = 0
    cdef cnp.ndarray a
    cdef bint adjacent
    cdef cnp.npy_intp dims[2]
    cdef intptr_t address
    cdef list stream
    for s in range(1, n_streams):
        if PyList_GET_SIZE(<list> streams[s]) != n:
            raise ValueError("make_table: every stream must list the same number of arrays")
    dims[0] = n if n > 0 else 1
    dims[1] = n_streams
    ptrs_arr = cnp.PyArray_EMPTY(2, dims, cnp.NPY_INTP, 0)
    cdef intptr_t* ptrs = <intptr_t*> cnp.PyArray_DATA(ptrs_arr)
    sizes_arr = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INTP, 0)
    cdef intptr_t* sizes = <intptr_t*> cnp.PyArray_DATA(sizes_arr)
    cdef int t0 = -1
    cdef object x
    for k in range(n):
        x = <object> PyList_GET_ITEM(<list> streams[0], k)
        if t0 == -1:
            if not cnp.PyArray_Check(x):
                raise ValueError(f"make_table: stream 0 holds {_describe(x)}, not an array")
            t0 = cnp.PyArray_TYPE(<cnp.ndarray> x)
            if t0 != cnp.NPY_FLOAT and t0 != cnp.NPY_DOUBLE:
                raise ValueError(f"make_table: arrays must be float32 or float64, got {_describe(x)}")
        size = cnp.PyArray_SIZE(<cnp.ndarray> x) if cnp.PyArray_Check(x) else -1
        adjacent = m > 0 and size > 0
        for s in range(n_streams):
            if s:
                x = <object> PyList_GET_ITEM(<list> streams[s], k)
            if not _walkable(x, s != 1, t0, size):
                raise _stream_error(x, s, k, t0, size)
            address = <intptr_t> cnp.PyArray_DATA(<cnp.ndarray> x)
            if adjacent and ptrs[(m - 1) * n_streams + s] + sizes[m - 1] * itemsize != address:
                adjacent = False
            ptrs[m * n_streams + s] = address
        if size == 0:
            continue
        itemsize = cnp.PyArray_ITEMSIZE(<cnp.ndarray> <object> PyList_GET_ITEM(<list> streams[0], k))
        total += size
        if adjacent:
            sizes[m - 1] += size
        else:
            sizes[m] = size
            m += 1
    for k in range(m):
        n_chunks += (sizes[k] + _CHUNK - 1) // _CHUNK
    dims[0] = n_chunks
    dims[1] = 3
    chunks_arr = cnp.PyArray_EMPTY(2, dims, cnp.NPY_INTP, 0)
    cdef intptr_t* chunks = <intptr_t*> cnp.PyArray_DATA(chunks_arr)
    c = 0
    for k in range(m):
        start = 0
        while start < sizes[k]:
            chunks[3 * c] = k
            chunks[3 * c + 1] = start
            start = min(start + _CHUNK, sizes[k])
            chunks[3 * c + 2] = start
            c += 1
    if m < n:
        ptrs_arr = ptrs_arr[:m]
    if cache is not None:
        _table_fill(cache, streams, n_streams, n, ptrs_arr, chunks_arr, total, n_chunks)
        cache.streams = tuple(given)
        cache.rebuilt = True
    return ptrs_arr, chunks_arr, _threads_for(total, n_chunks)


cdef void _table_fill(TableCache cache, list streams, Py_ssize_t n_streams, Py_ssize_t n,
                      object ptrs, object chunks, Py_ssize_t total, Py_ssize_t n_chunks):
    cdef Py_ssize_t k, s
    addresses = np.empty((n, n_streams), dtype=np.intp)
    cdef intptr_t* addr = <intptr_t*> cnp.PyArray_DATA(<cnp.ndarray> addresses)
    for s in range(n_streams):
        for k in range(n):
            addr[k * n_streams + s] = <intptr_t> cnp.PyArray_DATA(
                <cnp.ndarray> PyList_GET_ITEM(<list> streams[s], k))
    cache.objects = tuple([() if s == 1 else tuple(<list> streams[s]) for s in range(n_streams)])
    cache.addresses = addresses
    cache.n_streams = n_streams
    cache.n = n
    cache.ptrs = ptrs
    cache.chunks = chunks
    cache.total = total
    cache.n_chunks = n_chunks
