# Included by _plan.pyx: checking a step's parameters and gradients.
#
# gather() checks every parameter and gradient of a group before anything
# changes, naming ``param_groups[i]['params'][j]`` in its errors, and keeps
# what it found in a GatherCache so that an unchanged group is revalidated by
# identity; check_numbers() checks the groups' numeric hyperparameters.

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


cdef int _check_pair(object praw, object graw, Py_ssize_t gi, Py_ssize_t pi) except -1:
    """Check one parameter and its (not None) gradient; return the type number."""
    cdef int t = _check_param(praw, gi, pi), gflags
    cdef cnp.ndarray p = <cnp.ndarray> praw, g
    if not cnp.PyArray_Check(graw):
        if type(graw).__module__.startswith("scipy.sparse"):
            raise TypeError(
                f"the grad of {_where(gi, pi)} is a scipy.sparse {type(graw).__name__}: this "
                "optimizer does not support sparse gradients, please consider SparseAdam instead")
        raise TypeError(
            f"the grad of {_where(gi, pi)} must be a numpy.ndarray of "
            f"dtype {praw.dtype} and shape {praw.shape}, got {_describe(graw)}")
    g = <cnp.ndarray> graw
    if cnp.PyArray_TYPE(g) != t:
        raise TypeError(
            f"the grad of {_where(gi, pi)} has dtype {graw.dtype}; expected "
            f"{praw.dtype}, the parameter's dtype")
    if not cnp.PyArray_SAMESHAPE(g, p):
        raise ValueError(
            f"the grad of {_where(gi, pi)} has shape {graw.shape}; expected "
            f"{praw.shape}, the parameter's shape")
    gflags = cnp.PyArray_FLAGS(g)
    if not (gflags & cnp.NPY_ARRAY_C_CONTIGUOUS) or not (gflags & cnp.NPY_ARRAY_ALIGNED):
        raise ValueError(
            f"the grad of {_where(gi, pi)} (shape {graw.shape}, dtype {graw.dtype}) "
            "is not an aligned C-contiguous array; pass np.ascontiguousarray(grad)")
    if _overlap(g, p):
        raise ValueError(
            f"the grad of {_where(gi, pi)} shares memory with the "
            "parameter; expected a separate array")
    return t


cdef inline object _grad_of(object p):
    # A Parameter keeps its gradient in ``_grad`` (the ``grad`` property
    # only returns it); read it directly, which is several times cheaper.
    if type(p) is _Parameter:
        return p._grad
    return getattr(p, "grad", None)


cdef class GatherCache:
    """What ``gather`` found for one group last time, to revalidate cheaply.

    The next ``gather`` with this cache takes a fast path when the group's
    list is the same object, with the same parameters in the same order,
    each with the same gradient object as before (``None`` included), and
    every parameter still has its data pointer and is still writeable,
    aligned and C-contiguous. Anything else (a gradient replaced, a
    parameter added, removed or reflagged) runs the full check. Gradients
    are held by weak reference, so a replaced gradient is never kept alive
    (and never mistaken for a new one at the same address).
    """
    cdef object group_list
    cdef Py_ssize_t group_index, n
    cdef tuple items          # the group's parameters
    cdef list grad_refs       # weakref to each gradient, or None
    cdef object pdata         # intp array: each parameter's data pointer (0: no gradient)
    cdef list result          # [(params, indices, is_double)]: no gradients (weak refs only)
    cdef unsigned long long grad_epoch  # _grad_epoch when filled
    cdef bint exact           # every parameter is exactly a Parameter
    # (reliability) True when the last gather refilled the cache: the step's
    # arrays may have changed, so Optimizer runs its aliasing check.
    cdef public bint rebuilt

    def __cinit__(self):
        self.rebuilt = True
        self.group_list = None
        self.n = -1
        self.exact = False


cdef bint _cache_valid(GatherCache cache, list group_params, Py_ssize_t group_index, list grads_out):
    """True when the cache still holds; then ``grads_out[k]`` is parameter k's gradient."""
    cdef Py_ssize_t k, n = PyList_GET_SIZE(group_params)
    cdef object p, g, ref
    cdef int need = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED | cnp.NPY_ARRAY_WRITEABLE
    cdef intptr_t* pdata
    if cache.group_list is not group_params or cache.n != n or cache.group_index != group_index:
        return False
    pdata = <intptr_t*> cnp.PyArray_DATA(<cnp.ndarray> cache.pdata)
    # No Parameter's gradient was set or deleted since the fill: the weak
    # references still name every gradient (each held by its Parameter), so
    # skip reading the attribute.
    cdef bint same_grads = cache.exact and cache.grad_epoch == _grad_epoch
    for k in range(n):
        p = <object> PyList_GET_ITEM(group_params, k)
        if p is not <object> PyTuple_GET_ITEM(cache.items, k):
            return False
        ref = <object> PyList_GET_ITEM(cache.grad_refs, k)
        if same_grads:
            g = None if ref is None else nopt_weakref_get(ref)
        else:
            g = _grad_of(p)
        if ref is None:
            if g is not None:
                return False
            continue
        if g is None or nopt_weakref_get(ref) is not g:
            return False
        if (<intptr_t> cnp.PyArray_DATA(<cnp.ndarray> p) != pdata[k]
                or (cnp.PyArray_FLAGS(<cnp.ndarray> p) & need) != need):
            return False
        grads_out[k] = g
    return True


cdef void _cache_fill(GatherCache cache, list group_params, Py_ssize_t group_index, list result):
    cdef Py_ssize_t k, n = PyList_GET_SIZE(group_params)
    cdef object p, g
    cdef list refs = [None] * n
    cdef bint exact = True
    pdata = np.zeros(n, dtype=np.intp)
    cdef intptr_t* pd = <intptr_t*> cnp.PyArray_DATA(<cnp.ndarray> pdata)
    cache.grad_epoch = _grad_epoch
    for k in range(n):
        p = <object> PyList_GET_ITEM(group_params, k)
        if type(p) is not _Parameter:
            exact = False
        g = _grad_of(p)
        if g is not None:
            refs[k] = PyWeakref_NewRef(g, None)
            pd[k] = <intptr_t> cnp.PyArray_DATA(<cnp.ndarray> p)
    cache.exact = exact
    cache.group_list = group_params
    cache.group_index = group_index
    cache.n = n
    cache.items = tuple(group_params)
    cache.grad_refs = refs
    cache.pdata = pdata
    cache.result = [(list(params), indices, is_double) for params, grads, indices, is_double in result]


def gather(list group_params, Py_ssize_t group_index, GatherCache cache=None):
    """Collect and check a group's parameters that have gradients.

    Parameters
    ----------
    group_params : list
        ``param_groups[group_index]["params"]``.
    group_index : int
        Used in error messages, which name ``param_groups[i]['params'][j]``.

    Returns
    -------
    list of (params, grads, indices, is_double)
        Nothing when no parameter has a gradient; one entry when all share a
        dtype; else the float32 entry, then the float64 one. ``indices``
        (positions in the group) is a sequence: a ``range`` when every
        parameter has a gradient, else a list.

    cache : GatherCache, optional
        Revalidate against the previous call's findings (see GatherCache);
        filled with this call's. The lists returned are fresh either way.

    Raises
    ------
    TypeError, ValueError
        On the first bad parameter or gradient; nothing is changed.
    """
    global _Parameter
    if _Parameter is None:
        from .._parameter import Parameter
        _Parameter = Parameter
    cdef list grads_now
    if cache is not None and cache.n == PyList_GET_SIZE(group_params):
        grads_now = [None] * cache.n
        if _cache_valid(cache, group_params, group_index, grads_now):
            cache.rebuilt = False
            return [(list(p), grads_now if type(i) is range else [grads_now[k] for k in i], i, d)
                    for p, i, d in cache.result]
    result = _gather_full(group_params, group_index)
    if cache is not None:
        _cache_fill(cache, group_params, group_index, result)
        cache.rebuilt = True
    return result


cdef list _gather_full(list group_params, Py_ssize_t group_index):
    cdef Py_ssize_t k, m = 0, n = PyList_GET_SIZE(group_params)
    # Pre-sized lists, filled in place and trimmed at the end (no appends).
    cdef list params = [None] * n, grads = [None] * n
    cdef list where = None
    cdef int t, common = -2
    cdef object p, g
    for k in range(n):
        p = <object> PyList_GET_ITEM(group_params, k)
        g = _grad_of(p)
        if g is None:
            if where is None:
                where = list(range(m))
            continue
        t = _check_pair(p, g, group_index, k)
        if common == -2:
            common = t
        elif common != t:
            common = -1
        params[m] = p
        grads[m] = g
        if where is not None:
            where.append(k)
        m += 1
    if common == -2:
        return []
    if m < n:
        del params[m:]
        del grads[m:]
    # Positions in the group: a range when every parameter has a gradient
    # (the usual case; no int objects to make), else a list.
    indices = range(n) if where is None else where
    if common != -1:
        return [(params, grads, indices, common == cnp.NPY_DOUBLE)]
    out = []
    for want in (cnp.NPY_FLOAT, cnp.NPY_DOUBLE):
        keep = [k for k in range(m) if cnp.PyArray_TYPE(<cnp.ndarray> params[k]) == want]
        out.append(([params[k] for k in keep], [grads[k] for k in keep],
                    [indices[k] for k in keep], want == cnp.NPY_DOUBLE))
    return out


def check_numbers(list groups, tuple keys):
    """Raise TypeError naming ``param_groups[i]['key']`` if a value is not a real number.

    A step calls this before planning, so a hyperparameter set by hand to
    a non-number fails before any kernel ran. Floats and ints pass at C speed.
    """
    cdef Py_ssize_t gi, i
    cdef PyObject* v
    global _Real
    for gi in range(PyList_GET_SIZE(groups)):
        group = <object> PyList_GET_ITEM(groups, gi)
        for i in range(PyTuple_GET_SIZE(keys)):
            key = <object> PyTuple_GET_ITEM(keys, i)
            v = PyDict_GetItemWithError(group, key) if type(group) is dict else NULL
            value = <object> v if v is not NULL else group[key]
            if PyFloat_CheckExact(value) or PyLong_CheckExact(value):
                continue
            if _Real is None:
                import numbers
                _Real = numbers.Real
            if not isinstance(value, _Real):
                raise TypeError(f"param_groups[{gi}]['{key}'] must be a real number, got {value!r}")


cdef object _Real = None
