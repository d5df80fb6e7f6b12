"""``nopt.minimize``: scipy.optimize.minimize's interface over nopt's optimizers.

``minimize(fun, x0, method="L-BFGS")`` runs the iteration of
:class:`nopt.LBFGS` (``line_search_fn="strong_wolfe"``: L-BFGS-B,
``nopt._lbfgsb``) or :class:`nopt.CG` (``cg.cg_run``) on a plain array: the
same loop code as the closure optimizers, without Parameters, closures or
optimizer objects, so the per-call overhead is scipy's. Any other nopt
optimizer runs on one flat :class:`nopt.Parameter` for a fixed number of
steps. :func:`scipy_method` turns the same thing into a custom method for
``scipy.optimize.minimize(method=...)``.
"""
import inspect
import math
import warnings

import numpy as np

from ._lbfgsb import Box, History, check_bounds_pairs, lbfgsb_run
from ._closure_optimizer import MAX_LS
from ._linesearch import REASONS, FlatArray
from ._parameter import Parameter
from .optimizer import Optimizer

__all__ = ["minimize", "scipy_method"]

_LBFGS_OPTIONS = {"maxiter", "maxfun", "maxfev", "gtol", "ftol", "maxcor", "maxls", "lr",
                  "tolerance_change", "eps", "disp", "iprint"}
_CG_OPTIONS = {"maxiter", "maxfun", "maxfev", "gtol", "ftol", "beta", "restart_every",
               "c1", "c2", "tolerance_change", "eps", "disp"}
_STEP_OPTIONS = {"maxiter", "gtol", "eps", "disp"}
_HUGE = 2 ** 62  # "no limit" for closure calls



def _scipy_optimize():
    """scipy.optimize, imported at the first minimize() rather than with nopt (most of its import time)."""
    import scipy.optimize
    return scipy.optimize


def _wrap_callback(callback):
    """scipy's rule: ``callback(intermediate_result=res)`` when that is its only
    parameter, else ``callback(x)`` with a copy of x."""
    if callback is None:
        return None
    try:
        params = set(inspect.signature(callback).parameters)
    except (TypeError, ValueError):
        params = set()
    if params == {"intermediate_result"}:
        return lambda res: callback(intermediate_result=res)
    return lambda res: callback(np.copy(res.x))


class _Objective:
    """``fun``/``jac`` as a closure on the Parameter ``x``, counting evaluations."""

    def __init__(self, fun, x, args, jac, eps):
        self.fun = fun
        self.x = x
        self.args = args
        self.jac = jac
        self.eps = eps
        self.nfev = 0
        self.njev = 0
        self.n = x.size
        self.dtype = x.dtype

    def _f(self, xk):
        self.nfev += 1
        value = self.fun(xk, *self.args)
        if self.jac is True:
            if not (isinstance(value, (tuple, list)) and len(value) == 2):
                raise TypeError("with jac=True, fun must return a (loss, gradient) pair")
            return self._scalar(value[0]), value[1]
        return self._scalar(value), None

    @staticmethod
    def _scalar(value):
        if type(value) is float or type(value) is np.float64:
            return float(value)  # the common case, without an array
        a = np.asarray(value)
        if a.size != 1 or a.dtype.kind not in "fiub":
            raise ValueError(
                f"fun must return a real scalar, got {type(value).__name__}"
                + (f" of shape {a.shape}" if a.ndim else "")
            )
        return float(a.reshape(()))

    def _grad(self, g):
        g = np.asarray(g)
        if g.size != self.n:
            raise ValueError(f"the gradient has shape {g.shape}; expected ({self.n},)")
        if g.dtype.kind not in "fiub":
            raise TypeError(f"the gradient must be real, got dtype {g.dtype}")
        return np.ascontiguousarray(g.reshape(self.n), dtype=self.x.dtype)

    def _finite_difference(self, xk, f0):
        """2-point forward differences with absolute step ``eps`` (scipy.optimize.approx_fprime)."""
        g = np.empty(self.n, dtype=np.float64)
        xh = xk.copy()
        for i in range(self.n):
            xi = xh[i]
            xh[i] = xi + self.eps
            h = float(xh[i]) - float(xi)  # the step actually taken
            if h == 0:
                raise FloatingPointError(
                    f"finite-difference step eps={self.eps} vanishes at x[{i}]={xi}; pass a larger 'eps'"
                )
            self.nfev += 1
            g[i] = (self._scalar(self.fun(xh.copy(), *self.args)) - f0) / h
            xh[i] = xi
        return g

    def _value_and_gradient(self, xk):
        """``(f, g)`` at ``xk`` (a copy of the point), ``g`` as ``fun``/``jac`` gave it."""
        f, g = self._f(xk)
        self.njev += 1
        if self.jac is True:
            pass
        elif callable(self.jac):
            g = self.jac(xk.copy(), *self.args)
        else:
            g = self._finite_difference(xk, f)
        return f, g

    def __call__(self):
        f, g = self._value_and_gradient(self.x.view(np.ndarray).copy())
        self.x.grad = self._grad(g)
        return f

    def evaluate(self):
        f = self()
        return f, self.x.grad

    def fg(self, x):
        """``(f, g)`` at the flat array ``x`` (the lean path: no Parameter)."""
        f, g = self._value_and_gradient(x.copy())
        return f, self._grad_copy(g)

    def _grad_copy(self, g):
        if type(g) is np.ndarray and g.dtype == self.dtype and g.shape == (self.n,):
            return g.copy()  # the common case
        g = np.asarray(g)
        if g.size != self.n:
            raise ValueError(f"the gradient has shape {g.shape}; expected ({self.n},)")
        if g.dtype.kind not in "fiub":
            raise TypeError(f"the gradient must be real, got dtype {g.dtype}")
        return np.array(g.reshape(self.n), dtype=self.dtype, copy=True)


class _ArraySpace:
    """The L-BFGS-B iteration's view of ``fun``: a plain array, no Parameter (see ``_lbfgsb``)."""

    __slots__ = ("fg", "x")

    def __init__(self, fg, x):
        self.fg = fg
        self.x = x

    def evaluate(self, x):
        self.x = x
        return self.fg(x)

    def put(self, x):
        self.x = x


def _check_options(options, known, method):
    unknown = set(options) - known
    if unknown:
        warnings.warn(f"Unknown solver options for {method}: {', '.join(sorted(unknown))}",
                      _scipy_optimize().OptimizeWarning, stacklevel=4)


def _resolve(method):
    """Return ('lbfgs' | 'cg' | 'steps', optimizer class)."""
    import nopt

    if isinstance(method, type) and issubclass(method, Optimizer):
        cls = method
    elif isinstance(method, str):
        key = method.replace("-", "").replace("_", "").lower()
        if key in ("lbfgs", "lbfgsb"):
            return "lbfgs", nopt.LBFGS
        if key == "cg":
            return "cg", nopt.CG
        try:
            cls = getattr(nopt, method, None)
        except ImportError:  # a lazily resolved module that is not there
            cls = None
        if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
            raise ValueError(
                f"Unknown method {method!r}: use 'L-BFGS', 'CG', or the class name of a nopt "
                "optimizer (e.g. 'Adam', 'SGD')"
            )
    else:
        raise TypeError(f"method must be a str or a nopt Optimizer class, got {type(method).__name__}")
    if cls is nopt.LBFGS:
        return "lbfgs", cls
    if cls is nopt.CG:
        return "cg", cls
    return "steps", cls


def minimize(fun, x0, args=(), method="L-BFGS", jac=None, tol=None, callback=None, options=None,
             bounds=None):
    r"""Minimize a scalar function with a nopt optimizer, as ``scipy.optimize.minimize``.

    Parameters
    ----------
    fun : callable
        ``fun(x, *args) -> float`` (or ``(float, ndarray)`` when ``jac=True``),
        with ``x`` a 1-D array (a fresh copy at each call).
    x0 : array_like, shape (n,)
        Starting point. float32 stays float32; anything else becomes float64.
    args : tuple
        Extra arguments for ``fun`` and ``jac``.
    method : str or Optimizer subclass, default "L-BFGS"
        ``"L-BFGS"`` (or scipy's name ``"L-BFGS-B"``): the L-BFGS-B iteration
        of :class:`nopt.LBFGS` with ``line_search_fn="strong_wolfe"``
        (generalized Cauchy point, subspace minimisation, MINPACK's line
        search), with or without ``bounds``. ``"CG"`` (:class:`nopt.CG`), or
        a nopt optimizer's class name such as ``"Adam"`` or ``"SGD"`` (run
        for ``maxiter`` steps).
    jac : {True, callable, None}
        ``True``: ``fun`` returns the loss and the gradient. A callable:
        ``jac(x, *args) -> ndarray``. ``None`` (or ``"2-point"``): 2-point
        forward differences with absolute step ``eps`` (as
        ``scipy.optimize.approx_fprime``), ``n + 1`` calls of ``fun`` per
        gradient; a ``RuntimeWarning`` says so.
    tol : float, optional
        As scipy: sets ``gtol`` and ``ftol`` for L-BFGS (as for
        L-BFGS-B), ``gtol`` for CG, when not in ``options``.
    callback : callable, optional
        Called after every iteration as ``callback(intermediate_result)``
        (an ``OptimizeResult`` with ``x`` and ``fun``) when that is its only
        parameter's name, else as ``callback(x)``. Raising ``StopIteration``
        stops the run: ``status`` 99, ``success`` False (scipy >= 1.11).
    options : dict, optional
        L-BFGS: scipy's L-BFGS-B names and defaults, ``maxiter`` (15000),
        ``maxfun`` (15000), ``gtol`` (1e-5, on the projected gradient
        :math:`\max_i |P(x - g) - x|_i`), ``ftol`` (2.2e-9, on
        :math:`(f_k - f_{k+1}) / \max(|f_k|, |f_{k+1}|, 1)`), ``maxcor``
        (history size, 10), ``maxls`` (calls per line search, 20); also
        ``lr`` (first trial step's factor, 1), ``tolerance_change`` (0),
        ``eps``.
        CG: ``maxiter`` (200 n), ``maxfev`` (no limit), ``gtol`` (1e-5),
        ``ftol`` (0: off, as scipy's CG), ``beta`` ("PR+"),
        ``restart_every`` (none: as scipy's CG, restart only when the new
        direction is not a sufficient descent direction), ``c1`` (1e-4), ``c2`` (0.4),
        ``tolerance_change`` (0), ``eps``. Other optimizers: ``maxiter``
        (steps, 1000), ``gtol`` (1e-5), ``eps``; everything else (``lr``,
        ``betas``, ``momentum``, ...) goes to the optimizer's constructor.

    bounds : scipy.optimize.Bounds or sequence of (low, high), optional
        Box bounds for ``"L-BFGS"``, one ``(low, high)`` pair per variable,
        ``None`` or ``+-inf`` for "unbounded". ``x0`` outside them is
        clipped, as scipy does. A wrong length, NaN, or ``low > high``
        raises ``ValueError`` before ``fun`` is called.

    Returns
    -------
    scipy.optimize.OptimizeResult
        ``x``, ``fun``, ``jac``, ``nit``, ``nfev`` (calls of ``fun``),
        ``njev`` (gradients), ``success``, ``status`` (0 converged,
        1 iteration/evaluation limit, 2 line search failed (after a restart
        from steepest descent; ``message`` starts with scipy's
        ``ABNORMAL_TERMINATION_IN_LNSRCH``), 3 non-finite values, 99 callback
        stop) and ``message``.

    Notes
    -----
    Every gradient comes with its loss: a closure call evaluates both, and
    no point is evaluated twice, so with ``jac=True`` ``nfev == njev``.
    ``x`` is the lowest point evaluated: never worse than ``x0``.
    """
    x0 = np.atleast_1d(np.asarray(x0))
    if x0.ndim != 1:
        raise ValueError("'x0' must only have one dimension.")
    if x0.dtype.kind not in "fiub":
        raise TypeError(f"x0 must be real numbers, got dtype {x0.dtype}")
    dtype = np.float32 if x0.dtype == np.float32 else np.float64
    if not isinstance(args, tuple):
        args = (args,)
    options = dict(options or {})
    kind, cls = _resolve(method)
    name = method if isinstance(method, str) else cls.__name__

    if jac in (None, "2-point", False):
        warnings.warn(
            "nopt.minimize: no gradient given (jac=None); using 2-point finite differences, "
            "n + 1 calls of fun per gradient. Pass jac=True or a callable for speed and accuracy.",
            RuntimeWarning, stacklevel=2)
        jac = None
    elif jac is not True and not callable(jac):
        raise ValueError(f"jac must be True, a callable, None or '2-point', got {jac!r}")

    if tol is not None:
        options.setdefault("gtol", tol)
        if kind == "lbfgs":
            options.setdefault("ftol", tol)
    options.pop("disp", None)
    options.pop("iprint", None)
    eps = options.pop("eps", math.sqrt(np.finfo(dtype).eps))
    box = None
    if bounds is not None:
        if kind != "lbfgs":
            raise ValueError(f"method {name!r} does not support bounds; use method='L-BFGS-B' "
                             "(or 'L-BFGS')")
        box = check_bounds_pairs(bounds, x0.size)
        if box is not None:
            box = Box(box.lower.astype(dtype), box.upper.astype(dtype))
            x0 = box.clip(np.asarray(x0, dtype=dtype))
    if kind == "cg":
        _check_options(options, _CG_OPTIONS, name)
        return _run_cg(np.array(x0, dtype=dtype, copy=True), fun, args, jac, eps,
                       _wrap_callback(callback), options)
    if kind == "lbfgs":
        _check_options(options, _LBFGS_OPTIONS, name)
        return _run_lbfgsb(np.array(x0, dtype=dtype, copy=True), fun, args, jac, eps, box,
                           _wrap_callback(callback), options)

    x = Parameter(np.array(x0, dtype=dtype, copy=True))
    objective = _Objective(fun, x, args, jac, eps)
    report = _wrap_callback(callback)

    _check_options({k: v for k, v in options.items() if k in _STEP_OPTIONS}, _STEP_OPTIONS, name)
    return _run_steps(cls, x, objective, report, options)


def _result(x, fun, grad, nit, objective, reason, extra_message=None):
    status, message = REASONS[reason]
    if extra_message:
        message = f"{message}: {extra_message}"
    return _scipy_optimize().OptimizeResult(
        x=x.view(np.ndarray).copy(), fun=fun,
        jac=None if grad is None else np.asarray(grad).copy(),
        nit=nit, nfev=objective.nfev, njev=objective.njev,
        status=status, success=status == 0, message=message,
    )


def _stopping_options(options, maxiter, maxfun, ftol):
    """The stopping options L-BFGS and CG share, popped from ``options`` with these defaults.

    Returns ``(max_iter, max_eval, tolerance_grad, tolerance_change, ftol)``.
    """
    given = options.pop("maxfun", options.pop("maxfev", None))
    ftol = options.pop("ftol", ftol)
    if isinstance(ftol, bool) or not isinstance(ftol, (int, float, np.number)) or not ftol >= 0:
        raise ValueError(f"Invalid ftol: {ftol!r} (expected a number >= 0)")
    return (options.pop("maxiter", maxiter), maxfun if given is None else given,
            options.pop("gtol", 1e-5), options.pop("tolerance_change", 0.0), ftol)


def _run_lean(objective, x0, report, ftol, run, where):
    """The lean paths' frame: evaluate ``x0``, run the iterations, report as scipy.

    ``run(f, g, state, on_iter) -> (reason, nit, n_evals, f, g)`` runs the
    method's loop (``lbfgsb_run`` or ``cg_run``) from ``x0``; ``where()``
    is the point it is at. ``on_iter`` is scipy's callback (``StopIteration``
    stops the run) and its ``ftol`` test, after every iteration.
    """
    f, g = objective.fg(x0)
    if not (math.isfinite(f) and np.isfinite(g).all()):
        return _array_result(objective, x0, math.nan, g, 0, "nonfinite",
                             f"the loss or gradient is not finite at x0 (loss={f})")

    def on_iter(loss, prev_loss):
        if report is not None:
            try:
                report(_scipy_optimize().OptimizeResult(x=where().copy(), fun=loss))
            except StopIteration:
                return "callback"
        if ftol > 0 and prev_loss - loss <= ftol * max(abs(prev_loss), abs(loss), 1.0):
            return "ftol"
        return None

    state = {"func_evals": 1, "n_iter": 0}
    reason, nit, _, f, g = run(f, g, state, on_iter)
    return _array_result(objective, where(), f, g, nit, reason)


def _run_lbfgsb(x0, fun, args, jac, eps, box, report, options):
    """The lean path: LBFGS's L-BFGS-B iteration on a plain array (no Parameter, no closure)."""
    from .lbfgs import LBFGS

    max_iter, max_eval, gtol, tolerance_change, ftol = _stopping_options(
        options, 15000, 15000, 2.2204460492503131e-09)
    group = LBFGS._check_options(dict(
        lr=options.pop("lr", 1), max_iter=max_iter, max_eval=max_eval, tolerance_grad=gtol,
        tolerance_change=tolerance_change, history_size=options.pop("maxcor", 10),
        line_search_fn="strong_wolfe"))
    max_ls = options.pop("maxls", 20)
    if isinstance(max_ls, bool) or not isinstance(max_ls, (int, np.integer)) or max_ls < 1:
        raise ValueError(f"Invalid maxls: {max_ls!r} (expected an int >= 1)")
    objective = _Objective(fun, x0, args, jac, eps)
    space = _ArraySpace(objective.fg, x0)
    hist = History(group["history_size"], x0.size, x0.dtype)
    run_options = dict(max_iter=group["max_iter"], max_eval=group["max_eval"], max_ls=max_ls,
                       tolerance_grad=group["tolerance_grad"],
                       tolerance_change=group["tolerance_change"], lr=float(group["lr"]))

    def run(f, g, state, on_iter):
        return lbfgsb_run(space, x0, f, g, state, hist, box, run_options, on_iter)

    return _run_lean(objective, x0, report, ftol, run, lambda: space.x)


def _run_cg(x0, fun, args, jac, eps, report, options):
    """The lean path: CG's loop (``cg.cg_run``) on a plain array, no Parameter or closure API."""
    from .cg import CG, cg_run

    max_iter, max_eval, gtol, tolerance_change, ftol = _stopping_options(
        options, 200 * x0.size, _HUGE, 0.0)
    group = CG._check_options(dict(
        max_iter=max_iter, max_eval=max_eval, tolerance_grad=gtol,
        tolerance_change=tolerance_change, beta=options.pop("beta", "PR+"),
        # scipy's CG restarts only on a bad direction, never periodically;
        # a restart every n iterations stalls on badly scaled problems.
        restart_every=options.pop("restart_every", None) or _HUGE,
        c1=options.pop("c1", 1e-4), c2=options.pop("c2", 0.4)))
    objective = _Objective(fun, x0, args, jac, eps)
    flat = FlatArray(x0)

    def closure():
        f, flat.grad = objective.fg(flat.x)
        return f

    def run(f, g, state, on_iter):
        return cg_run(flat, closure, state, group, f, g, MAX_LS, on_iter)

    return _run_lean(objective, x0, report, ftol, run, lambda: flat.x)


def _array_result(objective, x, f, g, nit, reason, extra=None):
    status, message = REASONS[reason]
    if extra:
        message = f"{message}: {extra}"
    return _scipy_optimize().OptimizeResult(x=np.array(x, copy=True), fun=f,
                          jac=None if g is None else np.array(g, copy=True), nit=nit,
                          nfev=objective.nfev, njev=objective.njev, status=status,
                          success=status == 0, message=message)


def _run_steps(cls, x, objective, report, options):
    maxiter = options.pop("maxiter", 1000)
    gtol = options.pop("gtol", 1e-5)
    if isinstance(maxiter, bool) or not isinstance(maxiter, (int, np.integer)) or maxiter < 0:
        raise ValueError(f"Invalid maxiter: {maxiter!r} (expected an int >= 0)")
    optimizer = cls([x], **options)
    f, g = objective.evaluate()
    nit = 0
    reason = "max_iter"
    while True:
        if not (math.isfinite(f) and np.isfinite(g).all()):
            reason = "nonfinite"
            break
        if np.abs(g).max(initial=0.0) <= gtol:
            reason = "gtol"
            break
        if nit >= maxiter:
            reason = "max_iter"
            break
        optimizer.step()
        nit += 1
        f, g = objective.evaluate()
        if report is not None:
            try:
                report(_scipy_optimize().OptimizeResult(x=x.view(np.ndarray).copy(), fun=f))
            except StopIteration:
                reason = "callback"
                break
    return _result(x, f, g, nit, objective, reason)


def scipy_method(method="L-BFGS"):
    """A nopt method as a custom method for ``scipy.optimize.minimize``.

    Parameters
    ----------
    method : str or Optimizer subclass
        As :func:`minimize`'s ``method``.

    Returns
    -------
    callable
        ``f(fun, x0, args, jac, hess, hessp, bounds, constraints, callback, **options)``,
        scipy's protocol for ``minimize(method=callable)``. Options and
        ``bounds`` (L-BFGS only) go to :func:`minimize`; scipy's ``tol``
        arrives as ``options["tol"]``.

    Examples
    --------
    >>> import scipy.optimize
    >>> res = scipy.optimize.minimize(scipy.optimize.rosen, [-1.2, 1.0],
    ...                               jac=scipy.optimize.rosen_der,
    ...                               method=nopt.scipy_method("L-BFGS"))
    """
    kind, cls = _resolve(method)  # fail early on a bad name

    def nopt_method(fun, x0, args=(), jac=None, hess=None, hessp=None, bounds=None,
                    constraints=(), callback=None, **options):
        if constraints:
            raise ValueError(f"nopt method {method!r} does not support constraints")
        if hess is not None or hessp is not None:
            warnings.warn(f"nopt method {method!r} does not use Hessian information (hess, hessp).",
                          RuntimeWarning, stacklevel=3)
        tol = options.pop("tol", None)
        return minimize(fun, x0, args=args, method=method, jac=jac, tol=tol,
                        callback=callback, options=options, bounds=bounds)

    nopt_method.__name__ = f"nopt_{cls.__name__}"
    nopt_method.__qualname__ = nopt_method.__name__
    return nopt_method
