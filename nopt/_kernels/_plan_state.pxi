# Included by _plan.pyx: optimizer state, its change tracking and the step cache.
#
# The cache rules, enforced here rather than documented:
# - every write to a StateDict or StateMap goes through ``_changed`` (Python
#   writes through the overridden methods, C writes through ``store`` and the
#   counting loops), so a StepCache never trusts a dict written since it
#   counted the step;
# - a StepCache caches only columns of arrays (``_step_fill`` refuses any
#   other value), so a scalar state that changes every step (NAdam's
#   ``mu_product``) can never be served stale from it.

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


cdef tuple _step_hit(StepCache c, object state, list params, tuple keys, object step_key,
                     list old_out):
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
    if old_out is not None:
        # (reliability) the count objects the dicts hold now, for an exact undo
        old_out.append(c.steps)
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
    for col in columns:
        for k in range(n):
            if not cnp.PyArray_Check(<object> PyList_GET_ITEM(<list> col, k)):
                # Only arrays are cached: a scalar state is rewritten every step.
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
                          StepCache cache=None, list old_out=None):
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

    ``old_out``, if given, gets appended the list of the count objects the
    dicts held before (when counted), so a failed step can put back the
    very same objects.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    if cache is not None:
        hit = _step_hit(cache, state, params, keys, step_key, old_out)
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
    steps, common = _increment_dicts(dicts, step_key, old_out)
    if cache is not None:
        _step_fill(cache, state, params, keys, step_key, dicts, out, steps, common)
        if cache.token:
            return cache.columns, 0, steps, common
    return out, 0, steps, common


cdef tuple _increment_dicts(list dicts, object key, list old_out=None):
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
    cdef list olds = None
    if old_out is not None:
        olds = [None] * n
        old_out.append(olds)
    for k in range(n):
        d = PyList_GET_ITEM(dicts, k)
        old = PyDict_GetItemWithError(<dict> d, key)
        if olds is not None:
            olds[k] = <object> old
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
