"""Closure protocol and scipy's Wolfe line search, shared by LBFGS and CG.

Design
------
* :class:`FlatParams` sees an optimizer's Parameters as one flat vector. It
  gathers the gradients into a flat array (one copy per evaluation: the
  closure may reuse its gradient buffers) and writes ``x0 + t * d`` back into
  the parameters. When the parameters are consecutive views of one buffer
  (as ``nopt.flat_parameters`` lays them out) that write is one NumPy call.
* :class:`ClosureLine` is the line ``phi(a) = f(x0 + a * scale * d)`` through
  a closure. One closure call gives ``f`` and ``g`` together, so the line
  remembers ``f`` and ``g . d`` at every step it evaluated and the full
  gradient at the last one: ``phi`` and ``derphi`` at a step seen before cost
  nothing, and no point is evaluated twice.
* :func:`wolfe_search` runs scipy's own searches on that line, as scipy's
  CG and BFGS do (``scipy.optimize._optimize._line_search_wolfe12``):
  MINPACK's DCSRCH (``scalar_search_wolfe1``) first, then the Nocedal-Wright
  zoom search (``scalar_search_wolfe2``) if it fails. Two guards are ours:
  a step with a non-finite loss or gradient abandons those searches for a
  halving (Armijo) backtrack from it, and an evaluation budget stops the
  search on the best point it can vouch for. The accepted step must give
  sufficient decrease; otherwise the search reports failure and the
  parameters go back to ``x0``.
"""
import math
import warnings

import numpy as np

def _scipy_searches():
    """scipy's (LineSearchWarning, scalar_search_wolfe1, scalar_search_wolfe2).

    Imported at the first search, not with nopt: scipy.optimize is most of
    ``import nopt``'s time, and a training loop never needs it.
    """
    try:  # scipy >= 1.8 keeps them here; scipy's own CG and BFGS use these.
        from scipy.optimize._linesearch import (
            LineSearchWarning,
            scalar_search_wolfe1,
            scalar_search_wolfe2,
        )
    except ImportError:  # pragma: no cover - older layouts
        from scipy.optimize.linesearch import (  # type: ignore[no-redef]
            LineSearchWarning,
            scalar_search_wolfe1,
            scalar_search_wolfe2,
        )
    return LineSearchWarning, scalar_search_wolfe1, scalar_search_wolfe2


__all__ = [
    "NonFiniteError",
    "FlatParams",
    "ClosureLine",
    "SearchResult",
    "StepReport",
    "wolfe_search",
    "call_closure",
    "stop_reason",
    "ClosureSpace",
    "FlatArray",
    "loss_value",
    "check_common_options",
    "REASONS",
]

# Why a step() returned: key -> (scipy-style status, message).
REASONS = {
    "gtol": (0, "max |gradient| <= tolerance_grad"),
    "ftol": (0, "relative reduction of the loss <= ftol"),
    "tolerance_change": (0, "loss or step change below tolerance_change"),
    "max_iter": (1, "max_iter iterations done"),
    "max_eval": (1, "max_eval closure evaluations done"),
    "not_descent": (2, "direction is not a descent direction (g.d > -tolerance_change)"),
    "line_search": (2, "ABNORMAL_TERMINATION_IN_LNSRCH: the line search found no step with "
                       "sufficient decrease, also after a restart along steepest descent"),
    "nonfinite": (3, "non-finite loss or gradient at every step tried"),
    "callback": (99, "callback requested a stop"),
}


class NonFiniteError(FloatingPointError):
    """The closure gave a non-finite loss or gradient where the optimizer cannot step around it."""


class StepReport:
    """What the last ``step`` did: why it stopped, iterations and closure calls.

    Attributes
    ----------
    reason : str
        A key of :data:`REASONS` (``"gtol"``, ``"max_iter"``, ``"line_search"``, ...).
    status : int
        scipy's status code for that reason (0 converged, 1 budget, 2 line
        search failed, 3 non-finite, 99 callback).
    message : str
    n_iter : int
        Iterations done in this step.
    n_evals : int
        Closure calls made in this step.
    loss : float
        The loss at the parameters the step left.
    grad : ndarray
        The flat gradient there.
    """

    __slots__ = ("reason", "n_iter", "n_evals", "loss", "grad")

    def __init__(self, reason, n_iter, n_evals, loss, grad=None):
        self.reason = reason
        self.n_iter = n_iter
        self.n_evals = n_evals
        self.loss = loss
        self.grad = grad

    @property
    def status(self):
        return REASONS[self.reason][0]

    @property
    def message(self):
        return REASONS[self.reason][1]

    def __repr__(self):
        return (f"StepReport(reason={self.reason!r}, n_iter={self.n_iter}, "
                f"n_evals={self.n_evals}, loss={self.loss!r})")


def check_common_options(max_iter, max_eval, tolerance_grad, tolerance_change):
    """Validate the stopping options LBFGS and CG share; return ``max_eval``."""
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"Invalid max_iter: {max_iter!r} (expected an int >= 1)")
    if max_eval is None:
        max_eval = int(max_iter) * 5 // 4
    if isinstance(max_eval, bool) or not isinstance(max_eval, (int, np.integer)) or max_eval < 1:
        raise ValueError(f"Invalid max_eval: {max_eval!r} (expected an int >= 1 or None)")
    for name, value in (("tolerance_grad", tolerance_grad), ("tolerance_change", tolerance_change)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                or not value >= 0:
            raise ValueError(f"Invalid {name}: {value!r} (expected a number >= 0)")
    return int(max_eval)


def stop_reason(on_iter, loss, prev_loss, n_iter, max_iter, n_evals, max_eval, gmax,
                tolerance_grad, step_max, tolerance_change):
    """The stopping tests LBFGS and CG share, after an iteration; a REASONS key or None.

    ``on_iter(loss, prev_loss)`` (``nopt.minimize``'s callback and ``ftol``
    test) runs first, every iteration; a converged gradient outranks its
    ``"ftol"``. Then torch's tests: ``max_iter``, ``max_eval``, ``max |g| <=
    tolerance_grad``, ``max |t d| <= tolerance_change`` and ``|f_k -
    f_{k-1}| < tolerance_change``.
    """
    stop = on_iter(loss, prev_loss) if on_iter is not None else None
    if stop == "callback":
        return stop
    if gmax <= tolerance_grad:
        return "gtol"
    if stop:
        return stop
    if n_iter >= max_iter:
        return "max_iter"
    if n_evals >= max_eval:
        return "max_eval"
    if step_max <= tolerance_change or abs(loss - prev_loss) < tolerance_change:
        return "tolerance_change"
    return None


def call_closure(closure):
    """Call ``closure()`` and return its loss as a Python float."""
    return loss_value(closure())


def loss_value(loss):
    """A closure's return value as a Python float (clear errors for None or arrays)."""
    if loss is None:
        raise TypeError(
            "the closure returned None; it must set .grad on the parameters and return the loss"
        )
    try:
        return float(loss)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"the closure must return a scalar loss, got {type(loss).__name__}"
            + (f" of shape {np.shape(loss)}" if isinstance(loss, np.ndarray) else "")
        ) from exc


def _contiguous_view(params, dtype):
    """One 1-D array over all ``params`` if they are consecutive in one buffer, else None."""
    if any(p.dtype != dtype for p in params):
        return None
    root = params[0]
    while isinstance(root.base, np.ndarray):
        root = root.base
    if not root.flags.c_contiguous:
        return None
    start = root.__array_interface__["data"][0]
    first = params[0].__array_interface__["data"][0]
    itemsize = dtype.itemsize
    offset = first - start
    if offset < 0 or offset % itemsize:
        return None
    address = first
    for p in params:
        if p.__array_interface__["data"][0] != address:
            return None
        address += p.nbytes
    total = sum(p.size for p in params)
    if offset + total * itemsize > root.nbytes:
        return None
    flat = root.view(np.ndarray).reshape(-1).view(np.uint8)[offset:offset + total * itemsize]
    return flat.view(dtype)


class FlatParams:
    """The parameters of one group as one flat vector.

    Parameters
    ----------
    params : list of Parameter
        Mixed shapes are fine. With mixed float32/float64 parameters the
        flat vector is float64 (torch's ``cat`` promotes the same way).
    """

    def __init__(self, params):
        self.params = list(params)
        self.dtype = np.result_type(*[p.dtype for p in self.params])
        self.sizes = [p.size for p in self.params]
        self.numel = int(sum(self.sizes))
        bounds = np.cumsum([0] + self.sizes)
        self.slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        # Plain 1-D views of each parameter (writes go straight to the Parameter).
        self.views = [p.view(np.ndarray).reshape(-1) for p in self.params]
        self.view = _contiguous_view(self.params, self.dtype)

    def matches(self, params):
        return len(params) == len(self.params) and all(a is b for a, b in zip(params, self.params))

    def gather_grad(self):
        """A new flat array of the gradients (a missing grad counts as zeros)."""
        out = np.empty(self.numel, dtype=self.dtype)
        missing = 0
        for p, sl in zip(self.params, self.slices):
            g = p.grad
            if g is None:
                out[sl] = 0
                missing += 1
            else:
                out[sl] = g.reshape(-1)
        if missing == len(self.params):
            raise RuntimeError(
                "the closure set no gradient: every parameter's .grad is None after calling it "
                "(the closure must set p.grad for the parameters and return the loss)"
            )
        return out

    def get(self, out=None):
        """The parameters' values as a flat array (into ``out`` if given)."""
        if out is None:
            out = np.empty(self.numel, dtype=self.dtype)
        if self.view is not None:
            out[...] = self.view
        else:
            for v, sl in zip(self.views, self.slices):
                out[sl] = v
        return out

    def set(self, x):
        """Write the flat array ``x`` into the parameters."""
        if self.view is not None:
            self.view[...] = x
        else:
            for v, sl in zip(self.views, self.slices):
                v[...] = x[sl]

    def set_step(self, x0, t, d):
        """Set the parameters to ``x0 + t * d`` (without touching ``x0`` or ``d``)."""
        if self.view is not None:
            np.multiply(d, t, out=self.view)
            self.view += x0
        else:
            for v, sl in zip(self.views, self.slices):
                if v.dtype == self.dtype:
                    np.multiply(d[sl], t, out=v)
                    v += x0[sl]
                else:
                    v[...] = x0[sl] + t * d[sl]

    def add_(self, t, d):
        """``params += t * d`` in place, as torch's ``_add_grad``."""
        if self.view is not None:
            self.view += d * t
        else:
            for v, sl in zip(self.views, self.slices):
                v += (d[sl] * t).astype(v.dtype, copy=False)


class FlatArray:
    """A plain 1-D array with :class:`FlatParams`'s methods: ``nopt.minimize``'s
    lean path runs CG's loop on it, without Parameters. ``grad`` is set by
    the closure."""

    __slots__ = ("x", "dtype", "numel", "grad")

    def __init__(self, x):
        self.x = x
        self.dtype = x.dtype
        self.numel = x.size
        self.grad = None

    def gather_grad(self):
        return self.grad

    def get(self, out=None):
        if out is None:
            return self.x.copy()
        out[...] = self.x
        return out

    def set(self, x):
        self.x[...] = x

    def set_step(self, x0, t, d):
        np.multiply(d, t, out=self.x)
        self.x += x0


class ClosureSpace:
    """A flat point ``x`` as the optimizer's parameters, evaluated by the closure.

    The L-BFGS-B iteration (:mod:`nopt._lbfgsb`) sees the problem only
    through ``evaluate(x) -> (f, g)`` and ``put(x)``; ``nopt.minimize``
    gives it the same two over a plain array.
    """

    __slots__ = ("flat", "closure")

    def __init__(self, flat, closure):
        self.flat = flat
        self.closure = closure

    def evaluate(self, x):
        self.flat.set(x)
        f = call_closure(self.closure)
        return f, self.flat.gather_grad()

    def put(self, x):
        self.flat.set(x)


class _OutOfEvals(Exception):
    pass


class _NonFinite(Exception):
    def __init__(self, alpha):
        super().__init__(alpha)
        self.alpha = alpha


class ClosureLine:
    """``phi(a) = f(x0 + a * scale * d)`` and its derivative, through a closure.

    Every closure call evaluates both ``f`` and ``g``; the line keeps
    ``(f, g . d)`` for every step it has evaluated and the full gradient for
    the last one, so asking for ``phi`` and ``derphi`` at a known step never
    calls the closure again.

    Parameters
    ----------
    flat : FlatParams
    closure : callable
    x0, d : ndarray
        Flat start point and direction (not modified).
    scale : float
        Step ``a`` on the line moves the parameters by ``a * scale * d``.
    f0 : float
    g0 : ndarray
        Loss and flat gradient at ``x0`` (the parameters are at ``x0``).
    gtd0 : float
        ``g0 . d``.
    max_evals : int
        Closure calls left in the optimizer's budget.
    max_ls : int, optional
        Closure calls allowed in this search (a cap below ``max_evals``).
    """

    _KEEP = 4  # gradients kept: the accepted step is almost always the latest

    def __init__(self, flat, closure, x0, d, scale, f0, g0, gtd0, max_evals, max_ls=None):
        self.flat = flat
        self.closure = closure
        self.x0 = x0
        self.d = d
        self.scale = float(scale)
        self.f0 = float(f0)
        self.derphi0 = float(gtd0) * self.scale
        # Whether running out of calls means the optimizer's budget is spent.
        self.budget_spent = max_ls is None or max_evals <= max_ls
        self.max_evals = max_evals if self.budget_spent else max_ls
        self.n_evals = 0
        self.g0 = g0
        self.values = {0.0: (self.f0, self.derphi0)}
        self.grads = {}  # gradients of the few latest points, alpha -> g
        self.last = (0.0, self.f0, g0)  # the point the parameters are at
        self.best = (0.0, self.f0, g0)  # the lowest point evaluated

    def _evaluate(self, alpha):
        if self.n_evals >= self.max_evals:
            raise _OutOfEvals()
        self.flat.set_step(self.x0, alpha * self.scale, self.d)
        self.last = (alpha, math.nan, None)  # the parameters are here now
        self.n_evals += 1
        f = call_closure(self.closure)
        g = self.flat.gather_grad()
        # g . d is non-finite whenever g has a nan or inf (d is finite).
        derphi = float(np.dot(g, self.d)) * self.scale
        self.last = (alpha, f, g)
        if not (math.isfinite(f) and math.isfinite(derphi)):
            raise _NonFinite(alpha)
        self.values[alpha] = (f, derphi)
        self.grads[alpha] = g
        if f < self.best[1]:
            self.best = (alpha, f, g)
        if len(self.grads) > self._KEEP:
            del self.grads[next(iter(self.grads))]

    def phi(self, alpha):
        alpha = float(alpha)
        if alpha not in self.values:
            self._evaluate(alpha)
        return self.values[alpha][0]

    def derphi(self, alpha):
        alpha = float(alpha)
        if alpha not in self.values:
            self._evaluate(alpha)
        return self.values[alpha][1]

    def gradient(self, alpha):
        """The flat gradient at ``alpha``, moving the parameters there."""
        alpha = float(alpha)
        if self.last[0] != alpha:
            if alpha == 0.0:
                self.restore()
            elif alpha in self.grads:
                # Seen recently: move back there without calling the closure.
                self.flat.set_step(self.x0, alpha * self.scale, self.d)
                self.last = (alpha, self.values[alpha][0], self.grads[alpha])
            else:
                self._evaluate(alpha)
        return self.last[2]

    def best_point(self):
        """``(f, x, g)`` at the lowest point this line evaluated, or None if that is ``x0``."""
        alpha, f, g = self.best
        if alpha == 0.0:
            return None
        x = np.empty_like(self.x0)
        np.multiply(self.d, alpha * self.scale, out=x)
        x += self.x0
        return f, x, g

    def restore(self):
        """Put the parameters back at ``x0``."""
        if self.last[0] != 0.0:
            self.flat.set(self.x0)
            self.last = (0.0, self.f0, self.g0)

    def armijo(self, alpha, f, c1):
        return f <= self.f0 + c1 * alpha * self.derphi0


class SearchResult:
    """Outcome of :func:`wolfe_search`.

    ``ok`` is True when a step was taken (``t > 0``); then the parameters
    are at ``x0 + t * d`` and ``loss``/``grad`` are theirs. Otherwise the
    parameters are back at ``x0``. ``reason`` is None for a Wolfe step, or
    ``"backtrack"`` (Armijo step after non-finite values), ``"max_eval"``,
    ``"line_search"`` or ``"nonfinite"``.
    """

    __slots__ = ("ok", "t", "loss", "grad", "gtd", "n_evals", "reason")

    def __init__(self, ok, t, loss, grad, gtd, n_evals, reason):
        self.ok = ok
        self.t = t
        self.loss = loss
        self.grad = grad
        self.gtd = gtd
        self.n_evals = n_evals
        self.reason = reason


def wolfe_search(line, old_f0=None, c1=1e-4, c2=0.9, amin=1e-100, amax=1e100,
                 xtol=1e-14, extra_condition=None, max_backtracks=50):
    """Find a step on ``line`` satisfying the strong Wolfe conditions.

    The search is scipy's ``_line_search_wolfe12``: DCSRCH first, then the
    zoom search if DCSRCH fails or its step fails ``extra_condition``.

    Parameters
    ----------
    line : ClosureLine
    old_f0 : float or None
        Loss at the previous iterate: the first trial step is then
        ``min(1, 2.02 * (f0 - old_f0) / phi'(0))`` as in scipy; None gives 1.
    c1, c2 : float
        Sufficient decrease and curvature parameters, ``0 < c1 < c2 < 1``.
    amin, amax, xtol : float
        DCSRCH's bounds and tolerance (scipy's CG/BFGS pass 1e-100, 1e100).
    extra_condition : callable, optional
        ``extra_condition(alpha, f, g) -> bool``, another test a Wolfe step
        must pass (CG's sufficient-descent test for its next direction).
    max_backtracks : int
        Halvings tried after a non-finite value before giving up.

    Returns
    -------
    SearchResult
        With ``t`` the step along ``d`` (``alpha * scale``).
    """
    def extra2(alpha, f):
        return extra_condition(alpha, f, line.gradient(alpha))

    def finish(alpha, reason=None):
        g = line.gradient(alpha)
        f, derphi = line.values[alpha]
        return SearchResult(True, alpha * line.scale, f, g, derphi / line.scale,
                            line.n_evals, reason)

    def fail(reason):
        line.restore()
        return SearchResult(False, 0.0, line.f0, None, None, line.n_evals, reason)

    LineSearchWarning, scalar_search_wolfe1, scalar_search_wolfe2 = _scipy_searches()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LineSearchWarning)
            with np.errstate(all="ignore"):
                alpha = scalar_search_wolfe1(
                    line.phi, line.derphi, line.f0, old_f0, line.derphi0,
                    c1=c1, c2=c2, amax=amax, amin=amin, xtol=xtol)[0]
                if alpha is not None and extra_condition is not None and not extra2(alpha, line.phi(alpha)):
                    alpha = None
                if alpha is None:
                    alpha = scalar_search_wolfe2(
                        line.phi, line.derphi, line.f0, old_f0, line.derphi0,
                        c1=c1, c2=c2, amax=amax,
                        extra_condition=None if extra_condition is None else extra2)[0]
        if alpha is None or alpha <= 0:
            return fail("line_search")
        alpha = float(alpha)
        f = line.phi(alpha)
        # scipy's zoom search can hand back its last trial unchecked; we only
        # accept a step with sufficient decrease.
        if not line.armijo(alpha, f, c1):
            return fail("line_search")
        return finish(alpha)
    except _OutOfEvals:
        if not line.budget_spent:
            # The search's own cap: a failure, as L-BFGS-B treats maxls.
            return fail("line_search")
        # The optimizer's budget is spent: keep the last point if it
        # decreases the loss enough.
        alpha = line.last[0]
        if alpha > 0 and alpha in line.values and line.armijo(alpha, line.values[alpha][0], c1):
            return finish(alpha, "max_eval")
        return fail("max_eval")
    except _NonFinite as bad:
        alpha = bad.alpha
    except BaseException:
        line.restore()
        raise
    # A non-finite value at `alpha`: backtrack by halving until the loss and
    # gradient are finite and the loss decreases enough.
    try:
        for _ in range(max_backtracks):
            alpha *= 0.5
            if alpha < amin:
                break
            try:
                f = line.phi(alpha)
            except _NonFinite:
                continue
            if line.armijo(alpha, f, c1):
                return finish(alpha, "backtrack")
        return fail("nonfinite")
    except _OutOfEvals:
        return fail("max_eval" if line.budget_spent else "nonfinite")
    except BaseException:
        line.restore()
        raise
