"""The run phase of a step, and the aliasing check that guards it.

Why this is in Cython:

* A step must be all or nothing with respect to Ctrl-C. Python runs signal
  handlers only between bytecodes, so a run phase written in Python
  (``for f, args in calls: f(*args)``) can raise KeyboardInterrupt between
  two kernels, leaving one group updated and the next not. ``run`` calls
  the planned kernels (and the stores of scalar state that follow them)
  back to back from C: no bytecode runs until the whole step is applied,
  and a pending signal is raised only after ``run`` returns.
* The stores (``store``, ``store2``) are C loops for the same reason: a
  Python function would check for pending signals on entry.
* ``find_alias`` sorts a step's arrays by address once, which is cheap
  enough to run whenever a step's arrays change.
"""
cimport numpy as cnp
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject_Call
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.stdint cimport intptr_t

import numpy as np

cnp.import_array()


def run(list calls):
    """Call ``function(*args)`` for each ``(function, args)`` pair, from C.

    ``args`` must be a tuple and every ``function`` a C function (a kernel,
    or ``store``/``store2``): then no Python signal handler can run between
    two calls, and a signal received meanwhile is handled after the last.
    """
    cdef Py_ssize_t k, n = PyList_GET_SIZE(calls)
    cdef tuple pair
    for k in range(n):
        pair = <tuple> PyList_GET_ITEM(calls, k)
        PyObject_Call(<object> PyTuple_GET_ITEM(pair, 0), <object> PyTuple_GET_ITEM(pair, 1), None)


def store(object state, list params, object key, object value):
    """``state[p][key] = value`` for every ``p`` in ``params`` (a C loop; see ``run``)."""
    cdef Py_ssize_t k, n = PyList_GET_SIZE(params)
    for k in range(n):
        state[<object> PyList_GET_ITEM(params, k)][key] = value


def store2(object state, list params, object key1, object value1, object key2, object value2):
    """``store`` for two keys at once."""
    cdef Py_ssize_t k, n = PyList_GET_SIZE(params)
    cdef object d
    for k in range(n):
        d = state[<object> PyList_GET_ITEM(params, k)]
        d[key1] = value1
        d[key2] = value2


cdef inline void _add(list entries, object x, int role, object owner, Py_ssize_t s):
    if cnp.PyArray_Check(x) and cnp.PyArray_NBYTES(<cnp.ndarray> x) > 0:
        entries.append((x, role, owner, s))


def find_alias(list groups, list tables):
    """The first two arrays of a step whose memory overlaps, or None.

    Parameters
    ----------
    groups : list of lists
        Every group's ``params`` (all of them, with or without gradients).
    tables : list of lists
        The streams of each kernel call of the step: parameters, gradients,
        then state arrays (see ``_plan.make_table``).

    Returns
    -------
    None, or ((x, role, owner, where), (y, role, owner, where))
        ``role`` is 0 for a parameter (``owner`` is ``(group, index)``), 1 for
        a gradient and 2 for a state array (``owner`` is the parameter it
        belongs to, ``where`` its stream). Two gradients may overlap (both
        are only read); any other overlap is reported, a parameter listed
        twice included.
    """
    cdef list entries = [], streams, stream, first
    cdef Py_ssize_t g, k, s, n, i, j
    for g in range(PyList_GET_SIZE(groups)):
        stream = <list> PyList_GET_ITEM(groups, g)
        for k in range(PyList_GET_SIZE(stream)):
            _add(entries, <object> PyList_GET_ITEM(stream, k), 0, (g, k), 0)
    for streams in tables:
        first = list(streams[0])
        for s in range(1, len(streams)):
            stream = list(streams[s])
            for k in range(min(len(stream), len(first))):
                _add(entries, stream[k], 1 if s == 1 else 2, first[k], s)
    n = len(entries)
    if n < 2:
        return None
    starts = np.empty(n, dtype=np.intp)
    cdef intptr_t[::1] st = starts
    cdef intptr_t[::1] en = np.empty(n, dtype=np.intp)
    cdef int[::1] roles = np.empty(n, dtype=np.intc)
    cdef cnp.ndarray a
    for i in range(n):
        a = <cnp.ndarray> (<tuple> entries[i])[0]
        st[i] = <intptr_t> cnp.PyArray_DATA(a)
        en[i] = st[i] + cnp.PyArray_NBYTES(a)
        roles[i] = (<tuple> entries[i])[1]
    cdef intptr_t[::1] order = np.argsort(starts, kind="stable").astype(np.intp)
    # Sweep in address order, keeping the furthest end seen among all
    # entries and among non-gradients: entry i overlaps an earlier one iff
    # that earlier one ends after i starts.
    cdef Py_ssize_t best_all = -1, best_rw = -1
    for j in range(n):
        i = order[j]
        if roles[i] == 1:
            if best_rw >= 0 and en[best_rw] > st[i]:
                return entries[best_rw], entries[i]
        elif best_all >= 0 and en[best_all] > st[i]:
            return entries[best_all], entries[i]
        if best_all < 0 or en[i] > en[best_all]:
            best_all = i
        if roles[i] != 1 and (best_rw < 0 or en[i] > en[best_rw]):
            best_rw = i
    return None
