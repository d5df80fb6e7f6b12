# ASGD (averaged SGD), with weight decay and maximize.
#
# One call updates every array of a batch: ptrs[a] = (param, grad, ax). The
# per-parameter scalars eta and mu live in Python (the caller splits a batch
# whose parameters differ in step, eta or mu); the kernel gets
# decay = 1 - lambd * eta, -eta and mu. Order as torch's single-tensor rule:
#   param = param * decay;  param += -eta * g
#   ax += (param - ax) * mu      if mu != 1 (with the *updated* param)
#   ax  = param                  if mu == 1
#
# Fast path (as sgd.pyx): _asgd_task, the per-chunk function, is compiled for
# AVX-512 / AVX2 / baseline (nopt_dispatched; same bits) and calls the loop
# only with literal flags (weight decay, averaging, maximize), so each inlined
# copy is a branch-free loop that gcc vectorises. With n_threads <= 1 the
# chunks run in the calling thread, without an OpenMP team.
#
# set_state writes the next eta and mu into every parameter's state dict in
# one C loop (a Python loop is most of a many-array step's overhead).

from cpython.dict cimport PyDict_GetItemWithError, PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from cython.parallel cimport parallel, prange
from libc.stdint cimport intptr_t

from ._common cimport floating, nopt_dispatched, nopt_ftz_enter, nopt_ftz_exit


cdef inline void _asgd_loop(
    floating* param,              # IN/OUT
    const floating* grad,         # IN
    floating* ax,                 # IN/OUT (OUT only without averaging)
    Py_ssize_t n,
    floating decay, floating neg_eta, floating mu, floating weight_decay,
    bint use_decay, bint average, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating g, p, x
    for j in range(n):
        p = param[j]
        g = grad[j]
        if maximize:
            g = -g
        if use_decay:
            g = g + weight_decay * p
        p = p * decay
        p = p + neg_eta * g
        param[j] = p
        if average:
            x = ax[j]
            ax[j] = x + (p - x) * mu
        else:
            ax[j] = p


cdef nopt_dispatched _asgd_task(
    const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, Py_ssize_t c,
    floating decay, floating neg_eta, floating mu, floating wd,
    bint use_decay, bint average, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t a = chunks[c, 0], start = chunks[c, 1], n = chunks[c, 2] - start
    cdef floating* p = <floating*> ptrs[a, 0] + start
    cdef const floating* g = <const floating*> ptrs[a, 1] + start
    cdef floating* x = <floating*> ptrs[a, 2] + start
    if average:
        if maximize:
            if use_decay:
                _asgd_loop(p, g, x, n, decay, neg_eta, mu, wd, True, True, True)
            else:
                _asgd_loop(p, g, x, n, decay, neg_eta, mu, wd, False, True, True)
        elif use_decay:
            _asgd_loop(p, g, x, n, decay, neg_eta, mu, wd, True, True, False)
        else:
            _asgd_loop(p, g, x, n, decay, neg_eta, mu, wd, False, True, False)
    elif maximize:
        if use_decay:
            _asgd_loop(p, g, x, n, decay, neg_eta, mu, wd, True, False, True)
        else:
            _asgd_loop(p, g, x, n, decay, neg_eta, mu, wd, False, False, True)
    elif use_decay:
        _asgd_loop(p, g, x, n, decay, neg_eta, mu, wd, True, False, False)
    else:
        _asgd_loop(p, g, x, n, decay, neg_eta, mu, wd, False, False, False)


cdef void _asgd(
    floating* tag, const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, int n_threads,
    double decay, double eta, double mu, double weight_decay, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t c, n_chunks = chunks.shape[0]
    cdef unsigned long long fp = 0   # set per thread; initialised for -Wuninitialized
    cdef floating decay_t = <floating> decay, neg_eta_t = <floating> (-eta)
    cdef floating mu_t = <floating> mu, wd_t = <floating> weight_decay
    cdef bint use_decay = weight_decay != 0
    cdef bint average = mu != 1
    if n_threads <= 1:
        # No parallel region at all (a one-thread team still costs about a
        # microsecond, most of a small model's step).
        fp = nopt_ftz_enter()
        for c in range(n_chunks):
            _asgd_task(ptrs, chunks, c, decay_t, neg_eta_t, mu_t, wd_t, use_decay, average,
                       maximize)
        nopt_ftz_exit(fp)
        return
    with parallel(num_threads=n_threads):
        fp = nopt_ftz_enter()
        for c in prange(n_chunks, schedule="static"):
            _asgd_task(ptrs, chunks, c, decay_t, neg_eta_t, mu_t, wd_t, use_decay, average,
                       maximize)
        nopt_ftz_exit(fp)


def asgd(const intptr_t[:, ::1] ptrs, const intptr_t[:, ::1] chunks, bint is_double,
         int n_threads, double decay, double eta, double mu, double weight_decay,
         bint maximize):
    """Apply one ASGD step to every array in the table (releases the GIL).

    ``decay`` is ``1 - lambd * eta``; ``mu == 1`` copies the parameter into
    ``ax`` instead of averaging.
    """
    with nogil:
        if is_double:
            _asgd(<double*> NULL, ptrs, chunks, n_threads, decay, eta, mu, weight_decay, maximize)
        else:
            _asgd(<float*> NULL, ptrs, chunks, n_threads, decay, eta, mu, weight_decay, maximize)


def set_state(object state, list params, object eta, object mu):
    """``state[p]["eta"] = eta; state[p]["mu"] = mu`` for every ``p`` in ``params``.

    ``state`` is the optimizer's state dict; every parameter must already
    have a state dict of its own (KeyError otherwise).
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    cdef Py_ssize_t k, n = PyList_GET_SIZE(params)
    cdef PyObject* d
    for k in range(n):
        d = PyDict_GetItemWithError(<dict> state, <object> PyList_GET_ITEM(params, k))
        if d is NULL or not isinstance(<object> d, dict):
            raise KeyError(f"set_state: parameter {k} has no state dict")
        PyDict_SetItem(<dict> d, "eta", eta)
        PyDict_SetItem(<dict> d, "mu", mu)


def float32(double x):
    """``x`` rounded to float32, as a Python float (``float(numpy.float32(x))``, faster).

    The C conversion rounds to nearest even and overflows to +-inf, as NumPy's.
    """
    return <double> (<float> x)
