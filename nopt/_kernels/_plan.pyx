# Validation and work tables for the multi-tensor kernels.
#
# A step checks every parameter and gradient first (gather / check_group),
# and only then builds the table the kernel walks (make_table):
#   ptrs[a, s]  address of stream s of array a (0 = param, 1 = grad, 2.. = state)
#   chunks[c]   (a, start, stop): one task of at most CHUNK elements
# Arrays whose every stream lies right after the previous array's (flat
# storage) are merged into one, so a flat model is one contiguous loop.
#
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
from cpython.weakref cimport PyWeakref_GET_OBJECT, PyWeakref_NewRef
from cython.parallel cimport parallel
cimport cython
from libc.stdint cimport intptr_t

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


# ---------------------------------------------------------------- change tracking
# A step over a many-parameter group that is unchanged since the last step
# should not re-read every parameter's attributes and state dict (about
# 60 ns a parameter, the bulk of a 2000-array step's set-up). So:
#   _grad_epoch       moves whenever any Parameter's gradient is set or deleted;
#   StateMap.version  moves whenever an optimizer's state map is changed;
#   StateDict.owner   names the step cache (see StepCache) that last counted
#                     the step in this dict, and is reset to 0 by every other
#                     write: a change from Python, or an uncached count.
cdef unsigned long long _grad_epoch = 0
cdef unsigned long long _last_token = 0


def grads_changed():
    """Note that some Parameter's gradient object was set or deleted."""
    global _grad_epoch
    _grad_epoch += 1


@cython.auto_pickle(False)
cdef class _NotingDict(dict):
    """A dict whose every mutating method first calls ``_changed``."""

    cdef void _changed(self) noexcept:
        pass

    def __setitem__(self, key, value):
        self._changed()
        PyDict_SetItem(self, key, value)

    def __delitem__(self, key):
        self._changed()
        dict.__delitem__(self, key)

    def __ior__(self, other):
        self._changed()
        dict.update(self, other)
        return self

    def clear(self):
        self._changed()
        dict.clear(self)

    def pop(self, *args):
        self._changed()
        return dict.pop(self, *args)

    def popitem(self):
        self._changed()
        return dict.popitem(self)

    def setdefault(self, key, default=None):
        self._changed()
        return dict.setdefault(self, key, default)

    def update(self, *args, **kwargs):
        self._changed()
        dict.update(self, *args, **kwargs)

    def __reduce__(self):
        return (type(self), (dict(self),))


@cython.auto_pickle(False)
cdef class StateDict(_NotingDict):
    """One parameter's optimizer state: a dict that notes its own changes.

    Behaves exactly as a dict (``isinstance(d, dict)`` holds; copies are
    plain dicts). Each mutating method first marks the dict as changed
    (``owner = 0``), so a step cache re-reads it; nothing else differs.
    """
    cdef unsigned long long owner

    cdef void _changed(self) noexcept:
        self.owner = 0


@cython.auto_pickle(False)
cdef class StateMap(_NotingDict):
    """An optimizer's ``state``: parameter -> StateDict, like ``defaultdict(dict)``.

    Looking up a parameter that has no state yet inserts (and returns) an
    empty StateDict, as torch's ``defaultdict(dict)`` does. Every mutating
    method moves ``version``, so step caches built from the map re-read it.
    """
    cdef unsigned long long version

    cdef void _changed(self) noexcept:
        self.version += 1

    def __missing__(self, key):
        d = StateDict()
        self._changed()
        PyDict_SetItem(self, key, d)
        return d


def get_max_threads():
    """OpenMP's current thread count for this thread (1 without OpenMP)."""
    return omp_get_max_threads()


def set_max_threads(int n):
    omp_set_num_threads(n)


def in_parallel():
    """True when called from inside an active OpenMP parallel region."""
    return bool(omp_in_parallel())


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


def check_group(list params, list grads, Py_ssize_t group_index, list indices):
    """Check params and their grads; return the common type number or -1.

    ``indices[k]`` is the position of ``params[k]`` in its group, used in
    messages. Raises TypeError/ValueError naming the parameter; changes nothing.
    """
    cdef Py_ssize_t k, n = len(params)
    cdef int t, common = -2
    for k in range(n):
        t = _check_pair(params[k], grads[k], group_index, indices[k])
        if common == -2:
            common = t
        elif common != t:
            common = -1
    return common


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

    def __cinit__(self):
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
            g = None if ref is None else <object> PyWeakref_GET_OBJECT(ref)
        else:
            g = _grad_of(p)
        if ref is None:
            if g is not None:
                return False
            continue
        if g is None or <object> PyWeakref_GET_OBJECT(ref) is not g:
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
            return [(list(p), grads_now if type(i) is range else [grads_now[k] for k in i], i, d)
                    for p, i, d in cache.result]
    result = _gather_full(group_params, group_index)
    if cache is not None:
        _cache_fill(cache, group_params, group_index, result)
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


def column(object state, list params, object key):
    """``[state[p][key] for p in params]``, None where missing; and the missing count.

    ``state`` is an optimizer's per-parameter state dict (missing parameters
    are not added, unlike ``defaultdict.__getitem__``).
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    cdef Py_ssize_t k, n = PyList_GET_SIZE(params), missing = 0
    cdef list out = [None] * n
    cdef PyObject* d
    cdef PyObject* v
    cdef object value
    for k in range(n):
        d = PyDict_GetItemWithError(<dict> state, <object> PyList_GET_ITEM(params, k))
        value = None
        if d is not NULL:
            if isinstance(<object> d, dict):
                v = PyDict_GetItemWithError(<dict> d, key)
                if v is not NULL:
                    value = <object> v
            else:
                value = (<object> d).get(key)
        if value is None:
            missing += 1
        else:
            out[k] = value
    return out, missing


def columns(object state, list params, tuple keys):
    """``column`` for several keys at once (one state lookup per parameter).

    Returns
    -------
    values : list of lists
        ``values[i][k] = state[params[k]][keys[i]]`` or None.
    missing : int
        The number of parameters missing any of the keys.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    cdef Py_ssize_t i, k, n = PyList_GET_SIZE(params), n_keys = len(keys), missing = 0
    cdef list out = [[None] * n for i in range(n_keys)]
    cdef PyObject* d
    cdef PyObject* v
    cdef bint absent
    for k in range(n):
        d = PyDict_GetItemWithError(<dict> state, <object> PyList_GET_ITEM(params, k))
        absent = False
        for i in range(n_keys):
            v = NULL
            if d is not NULL:
                if isinstance(<object> d, dict):
                    v = PyDict_GetItemWithError(<dict> d, keys[i])
                else:
                    value = (<object> d).get(keys[i])
                    v = <PyObject*> value if value is not None else NULL
            if v is NULL or <object> v is None:
                absent = True
            else:
                (<list> out[i])[k] = <object> v
        if absent:
            missing += 1
    return out, missing


cdef class StepCache:
    """What ``columns_and_increment`` read for one batch, to skip re-reading it.

    Valid for the next call while the state map is the same StateMap at the
    same ``version``, the batch lists the same parameters for the same keys,
    and every state dict still names this cache as its ``owner``: nothing
    wrote to it since this cache counted its step. Then the state arrays are
    the ones gathered before and the counts are the ones written last.
    """
    cdef object state
    cdef unsigned long long version, token
    cdef tuple params, keys
    cdef object step_key
    cdef list dicts, columns, steps
    cdef object common

    def __cinit__(self):
        self.token = 0


cdef tuple _step_hit(StepCache c, object state, list params, tuple keys, object step_key):
    """The cached columns with every count incremented, or None when the cache does not hold."""
    cdef Py_ssize_t k, n = PyList_GET_SIZE(params)
    cdef object d, value = None, last_old = None, old
    cdef list steps
    if (c.token == 0 or c.state is not state or (<StateMap> state).version != c.version
            or n != PyTuple_GET_SIZE(c.params) or c.keys != keys or c.step_key != step_key):
        return None
    for k in range(n):
        if k + _AHEAD < n:
            # After a large kernel each state dict is a cache miss: ask early.
            nopt_prefetch(PyList_GET_ITEM(c.dicts, k + _AHEAD))
        if <object> PyList_GET_ITEM(params, k) is not <object> PyTuple_GET_ITEM(c.params, k):
            return None
        if (<StateDict> PyList_GET_ITEM(c.dicts, k)).owner != c.token:
            return None
    if c.common is not None:
        # The usual case: one count, one new float shared by every dict.
        value = PyFloat_FromDouble(PyFloat_AS_DOUBLE(c.common) + 1.0)
        for k in range(n):
            PyDict_SetItem(<dict> PyList_GET_ITEM(c.dicts, k), step_key, value)
        c.common = value
        c.steps = [value] * n
    else:
        steps = [None] * n
        for k in range(n):
            old = <object> PyList_GET_ITEM(c.steps, k)
            if old is not last_old:
                value = PyFloat_FromDouble(PyFloat_AS_DOUBLE(old) + 1.0)
                last_old = old
            PyDict_SetItem(<dict> PyList_GET_ITEM(c.dicts, k), step_key, value)
            steps[k] = value
        c.steps = steps
    return c.columns, 0, c.steps, c.common


cdef void _step_fill(StepCache c, object state, list params, tuple keys, object step_key,
                     list dicts, list columns, list steps, object common):
    """Make ``c`` describe this call, if every container reports its changes (else leave it empty)."""
    global _last_token
    cdef Py_ssize_t k, n = PyList_GET_SIZE(dicts)
    c.token = 0
    if type(state) is not StateMap:
        return
    for k in range(n):
        if type(<object> PyList_GET_ITEM(dicts, k)) is not StateDict:
            return
    _last_token += 1
    for k in range(n):
        (<StateDict> PyList_GET_ITEM(dicts, k)).owner = _last_token
    c.token = _last_token
    c.state = state
    c.version = (<StateMap> state).version
    c.params = tuple(params)
    c.keys = keys
    c.step_key = step_key
    c.dicts = dicts
    # Tuples: make_table recognises the very same (immutable) column again
    # and skips re-reading its arrays.
    c.columns = [tuple(col) for col in columns]
    c.steps = steps
    c.common = common


def columns_and_increment(object state, list params, tuple keys, object step_key,
                          StepCache cache=None):
    """``columns(state, params, keys)``, then (when nothing is missing) ``increment``.

    One pass reads every parameter's state dict for ``keys`` and
    ``step_key``; only if all are present (and every count is a number) does
    a second pass, over the same dicts, add 1 to the counts. This is the
    state set-up of an Adam-like step, touching each state dict once.

    With a ``cache`` (see StepCache) that still holds, neither pass reads
    the dicts: the counts are written from the cache. Use a cache only for
    keys whose values nothing but Python code replaces (state arrays; not
    scalars that a kernel module writes back). Treat the returned columns
    and counts as read-only: they may be the cache's own.

    Returns
    -------
    values : list of lists
        As ``columns``.
    missing : int
        Parameters missing any of ``keys`` or ``step_key``; when not 0,
        nothing was incremented (initialise their state and call again).
    steps : list of float or None
        The new counts (None when ``missing``).
    common : float or None
        The shared new count when all are equal.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    if cache is not None:
        hit = _step_hit(cache, state, params, keys, step_key)
        if hit is not None:
            return hit
        cache.token = 0
    cdef Py_ssize_t i, k, n = PyList_GET_SIZE(params), n_keys = len(keys), missing = 0
    cdef list out = [[None] * n for i in range(n_keys)]
    cdef list dicts = [None] * n
    cdef PyObject* d
    cdef PyObject* v
    cdef bint absent
    for k in range(n):
        d = PyDict_GetItemWithError(<dict> state, <object> PyList_GET_ITEM(params, k))
        absent = d is NULL or not isinstance(<object> d, dict)
        if not absent:
            for i in range(n_keys):
                v = PyDict_GetItemWithError(<dict> d, keys[i])
                if v is NULL or <object> v is None:
                    absent = True
                else:
                    (<list> out[i])[k] = <object> v
            v = PyDict_GetItemWithError(<dict> d, step_key)
            if v is NULL:
                absent = True
            elif not PyFloat_Check(<object> v):
                float(<object> v)  # raises now, before anything changed, if not a number
            dicts[k] = <object> d
        if absent:
            missing += 1
    if missing:
        return out, missing, None, None
    steps, common = _increment_dicts(dicts, step_key)
    if cache is not None:
        _step_fill(cache, state, params, keys, step_key, dicts, out, steps, common)
        if cache.token:
            return cache.columns, 0, steps, common
    return out, 0, steps, common


cdef tuple _increment_dicts(list dicts, object key):
    """Add 1 to ``d[key]`` in every (checked) dict; shared old floats give shared new ones.

    An uncached count: each StateDict's ``owner`` is reset, so no step cache
    trusts its old count any more.
    """
    cdef Py_ssize_t k, n = PyList_GET_SIZE(dicts)
    cdef list out = [None] * n
    cdef double v = 0.0, first = 0.0
    cdef bint same = True
    cdef PyObject* d
    cdef PyObject* old
    cdef object last_old = None   # a strong reference: its address stays its own
    cdef object value = None
    for k in range(n):
        d = PyList_GET_ITEM(dicts, k)
        old = PyDict_GetItemWithError(<dict> d, key)
        if <object> old is not last_old:
            if PyFloat_Check(<object> old):
                v = PyFloat_AS_DOUBLE(<object> old) + 1.0
            else:
                v = float(<object> old) + 1.0
            value = PyFloat_FromDouble(v)
            last_old = <object> old
        if type(<object> d) is StateDict:
            (<StateDict> d).owner = 0
        PyDict_SetItem(<dict> d, key, value)
        out[k] = value
        if k == 0:
            first = v
        elif v != first:
            same = False
    return out, (first if same and n > 0 else None)


def increment(object state, list params, object key):
    """Add 1 to ``state[p][key]`` (a number) for every ``p``; return the new values.

    Everything is checked first: a parameter without state or without
    ``key`` raises KeyError and nothing is changed. Parameters that shared
    one old float share the new one too, so the usual case (every count
    equal) allocates one float per step. The new values are Python floats.

    Returns
    -------
    values : list of float
    common : float or None
        The shared new value when all are equal (the usual case), else None.
    """
    cdef Py_ssize_t k, n = PyList_GET_SIZE(params)
    cdef list dicts = [None] * n
    cdef PyObject* d
    cdef PyObject* old
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    for k in range(n):
        d = PyDict_GetItemWithError(<dict> state, <object> PyList_GET_ITEM(params, k))
        if d is NULL:
            raise KeyError(f"no state for parameter {k}; initialise it before incrementing '{key}'")
        if not isinstance(<object> d, dict):
            raise TypeError(f"state of parameter {k} must be a dict")
        old = PyDict_GetItemWithError(<dict> d, key)
        if old is NULL:
            raise KeyError(f"state of parameter {k} has no '{key}'")
        if not PyFloat_Check(<object> old):
            float(<object> old)  # raises now, before anything changed, if not a number
        dicts[k] = <object> d
    return _increment_dicts(dicts, key)


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

    def __cinit__(self):
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


# ---------------------------------------------------------------- scalar state
def store(object state, list params, tuple keys, tuple values):
    """``state[p][keys[i]] = values[i]`` for every ``p`` in ``params``, through change tracking.

    A rule's scalar state (NAdam's ``mu_product``, ASGD's ``eta`` and
    ``mu``) is written here after its kernel ran, in one C loop. Every
    StateDict written is marked changed, as a write from Python would, so
    no step cache trusts what it held (see StepCache). Every parameter must
    already have a state dict (KeyError otherwise).
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    cdef Py_ssize_t i, k, n = PyList_GET_SIZE(params), n_keys = PyTuple_GET_SIZE(keys)
    if PyTuple_GET_SIZE(values) != n_keys:
        raise ValueError("store: one value per key")
    cdef PyObject* d
    for k in range(n):
        d = PyDict_GetItemWithError(<dict> state, <object> PyList_GET_ITEM(params, k))
        if d is NULL or not isinstance(<object> d, dict):
            raise KeyError(f"store: parameter {k} has no state dict")
        if type(<object> d) is StateDict:
            (<StateDict> d)._changed()
            for i in range(n_keys):
                PyDict_SetItem(<dict> d, <object> PyTuple_GET_ITEM(keys, i),
                               <object> PyTuple_GET_ITEM(values, i))
        else:
            for i in range(n_keys):
                (<object> d)[<object> PyTuple_GET_ITEM(keys, i)] = <object> PyTuple_GET_ITEM(values, i)


def float32(double x):
    """``x`` rounded to float32, as a Python float (``float(numpy.float32(x))``, faster).

    The C conversion rounds to nearest even and overflows to +-inf, as NumPy's.
    """
    return <double> (<float> x)
