"""The run phase of a step, and the aliasing check that guards it.

Why this is in Cython:

* A step must be all or nothing with respect to Ctrl-C. Python runs signal
  handlers only between bytecodes, so a run phase written in Python
  (``for f, args in calls: f(*args)``) can raise KeyboardInterrupt between
  two kernels, leaving one group updated and the next not. ``run`` calls
  the planned kernels (and the stores of scalar state that follow them,
  ``_plan.store``) back to back from C: no bytecode runs until the whole
  step is applied, and a pending signal is raised only after ``run`` returns.
* ``find_alias`` sorts a step's arrays by address once, which is cheap
  enough to run whenever a step's arrays change.
"""
cimport numpy as cnp
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject_CallObject
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.stdint cimport intptr_t
from libc.stdlib cimport free, malloc, qsort


cnp.import_array()


def run(list calls):
    """Call ``function(*args)`` for each ``(function, args)`` pair, from C.

    ``args`` must be a tuple and every ``function`` a C function (a kernel,
    or ``_plan.store``): then no Python signal handler can run between two
    calls, and a signal received meanwhile is handled after the last.
    """
    cdef Py_ssize_t k, n = PyList_GET_SIZE(calls)
    cdef tuple pair
    for k in range(n):
        pair = <tuple> PyList_GET_ITEM(calls, k)
        PyObject_CallObject(<object> PyTuple_GET_ITEM(pair, 0), <object> PyTuple_GET_ITEM(pair, 1))


cdef struct Span:
    intptr_t start, end
    int role               # 0 parameter, 1 gradient, 2 state array
    Py_ssize_t t, s, k     # table t (-1: a group's list), stream s (or group), row k


cdef int _by_start(const void* a, const void* b) noexcept nogil:
    cdef Span* x = <Span*> a
    cdef Span* y = <Span*> b
    # By address; ties in listing order (groups' parameters first), as
    # qsort is not stable.
    if x.start != y.start:
        return -1 if x.start < y.start else 1
    if x.t != y.t:
        return -1 if x.t < y.t else 1
    if x.s != y.s:
        return -1 if x.s < y.s else 1
    return -1 if x.k < y.k else (1 if x.k > y.k else 0)


cdef inline object _item(object seq, Py_ssize_t k):
    if type(seq) is list:
        return <object> PyList_GET_ITEM(seq, k)
    if type(seq) is tuple:
        return <object> PyTuple_GET_ITEM(seq, k)
    return seq[k]


cdef inline Py_ssize_t _put(Span* spans, Py_ssize_t n, object x, int role,
                            Py_ssize_t t, Py_ssize_t s, Py_ssize_t k):
    cdef Py_ssize_t nbytes
    if not cnp.PyArray_Check(x):
        return n
    nbytes = cnp.PyArray_NBYTES(<cnp.ndarray> x)
    if nbytes <= 0:
        return n
    spans[n].start = <intptr_t> cnp.PyArray_DATA(<cnp.ndarray> x)
    spans[n].end = spans[n].start + nbytes
    spans[n].role = role
    spans[n].t = t
    spans[n].s = s
    spans[n].k = k
    return n + 1


cdef tuple _entry(Span sp, list groups, list tables):
    if sp.t < 0:
        return (_item(groups[sp.s], sp.k), 0, (sp.s, sp.k), 0)
    streams = tables[sp.t]
    return (_item(streams[sp.s], sp.k), sp.role, _item(streams[0], sp.k), sp.s)


def find_alias(list groups, list tables):
    """The first two arrays of a step whose memory overlaps, or None.

    Parameters
    ----------
    groups : list of lists
        Every group's ``params`` (all of them, with or without gradients).
    tables : list of sequences
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

    One sort of C records by address: no Python object per array unless
    an overlap is found.
    """
    cdef Py_ssize_t g, t, s, k, n = 0, total = 0, rows, i
    cdef object streams, stream, first
    for g in range(PyList_GET_SIZE(groups)):
        total += len(<object> PyList_GET_ITEM(groups, g))
    for streams in tables:
        total += len(streams) * len(streams[0])
    if total < 2:
        return None
    cdef Span* spans = <Span*> malloc(total * sizeof(Span))
    if spans is NULL:
        raise MemoryError()
    cdef Py_ssize_t best_all = -1, best_rw = -1, a = -1, b = -1
    try:
        for g in range(PyList_GET_SIZE(groups)):
            stream = <object> PyList_GET_ITEM(groups, g)
            for k in range(len(stream)):
                n = _put(spans, n, _item(stream, k), 0, -1, g, k)
        for t in range(PyList_GET_SIZE(tables)):
            streams = <object> PyList_GET_ITEM(tables, t)
            rows = len(streams[0])
            for s in range(1, len(streams)):
                stream = streams[s]
                for k in range(min(rows, len(stream))):
                    n = _put(spans, n, _item(stream, k), 1 if s == 1 else 2, t, s, k)
        qsort(spans, n, sizeof(Span), _by_start)
        # Sweep in address order, keeping the furthest end seen among all
        # records and among non-gradients: record i overlaps an earlier one
        # iff that one ends after i starts.
        for i in range(n):
            if spans[i].role == 1:
                if best_rw >= 0 and spans[best_rw].end > spans[i].start:
                    a, b = best_rw, i
                    break
            elif best_all >= 0 and spans[best_all].end > spans[i].start:
                a, b = best_all, i
                break
            if best_all < 0 or spans[i].end > spans[best_all].end:
                best_all = i
            if spans[i].role != 1 and (best_rw < 0 or spans[i].end > spans[best_rw].end):
                best_rw = i
        if a < 0:
            return None
        return _entry(spans[a], groups, tables), _entry(spans[b], groups, tables)
    finally:
        free(spans)
