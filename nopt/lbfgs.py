"""L-BFGS with torch.optim.LBFGS's API and state, and scipy's Wolfe line search."""
import math

import numpy as np

from ._closure_optimizer import ClosureOptimizer, Method, absmax as _absmax, iterate
from ._lbfgsb import Box, History, check_param_bounds, lbfgsb_run
from ._linesearch import (
    ClosureSpace,
    NonFiniteError,
    SearchResult,
    StepReport,
    call_closure,
    check_common_options,
)

__all__ = ["LBFGS"]

class LBFGS(ClosureOptimizer):
    r"""Limited-memory BFGS, with ``torch.optim.LBFGS``'s API and state.

    Each :meth:`step` runs up to ``max_iter`` iterations of

    .. math::
        \begin{aligned}
        d_k &= -H_k \nabla f(x_k) \quad\text{(two-loop recursion over the last
              } m \text{ pairs } s_i = x_{i+1}-x_i,\ y_i = g_{i+1}-g_i,\
              H_k^0 = \tfrac{s^\top y}{y^\top y} I) \\
        x_{k+1} &= x_k + t_k d_k
        \end{aligned}

    where a pair is kept only when :math:`s^\top y > 10^{-10}` (torch's
    test, fixed-step mode) or, with the line search, when
    :math:`s^\top y > \epsilon\,|s^\top g_{k-1}|` (L-BFGS-B's relative
    test; the absolute one drops every pair once steps get small).

    With ``line_search_fn=None`` the step is fixed, :math:`t_k = \gamma`
    (:math:`\min(1, 1/\|g_0\|_1)\,\gamma` on the very first iteration), and
    the trajectory is torch's.

    With ``line_search_fn="strong_wolfe"`` each iteration is **L-BFGS-B**'s
    (:mod:`nopt._lbfgsb`, the code ``nopt.minimize`` runs too): with
    :math:`B_k = \theta I - W M W^\top` the compact form of the same
    memory, the generalized Cauchy point :math:`x^c` along the projected
    path :math:`P(x_k - t g_k)`, then the model's minimiser over the
    variables free at :math:`x^c`, projected into the box, gives
    :math:`\bar x`; without bounds :math:`\bar x - x_k = -H_k g_k` exactly.
    :math:`t_k \in (0, t_{\max}]` along :math:`d_k = \bar x - x_k`
    satisfies

    .. math::
        f(x_k + t d_k) \le f(x_k) + 10^{-3}\, t\, g_k^\top d_k, \qquad
        |\nabla f(x_k + t d_k)^\top d_k| \le 0.9\, |g_k^\top d_k|

    found by MINPACK's DCSRCH (scipy's port), with :math:`t_{\max}` the
    largest feasible step. First trial step: :math:`\gamma
    \min(1/\|d_0\|_2, 1)` on the very first iteration, :math:`\gamma`
    after. A failed search drops the memory and retries from the Cauchy
    step (steepest descent); a second failure stops the step (reason
    ``"line_search"``) with the parameters at the lowest point evaluated.

    Parameters
    ----------
    params : iterable of Parameter
        One group only. Shapes may differ; float32 and float64 both work.
    lr : float, default 1
        Step length :math:`\gamma` (the line search's first trial step).
    max_iter : int, default 20
        Iterations per :meth:`step`.
    max_eval : int, optional
        Closure calls per :meth:`step` (default ``max_iter * 5 // 4``).
    tolerance_grad : float, default 1e-7
        Stop when :math:`\max_i |g_i| \le` ``tolerance_grad``.
    tolerance_change : float, default 1e-9
        Stop when :math:`g^\top d > -`\ ``tolerance_change``, when the step
        :math:`\max_i |t d_i|` or the loss change falls to it or below.
    history_size : int, default 100
        Number :math:`m` of stored pairs.
    line_search_fn : {None, "strong_wolfe"}
        Fixed steps (torch's trajectory) or the L-BFGS-B iteration.
    bounds : list of (low, high), optional
        Box bounds, one pair per parameter (``None`` for a free one);
        ``low``/``high`` are None, numbers or arrays broadcastable to the
        parameter's shape. Needs ``line_search_fn="strong_wolfe"``.
        Parameters outside the box are clipped before the first evaluation;
        ``tolerance_grad`` then applies to the projected gradient
        :math:`\max_i |P(x - g) - x|_i`. Checked at construction
        (``ValueError`` for a wrong count, NaN or ``low > high``).

    Notes
    -----
    **Closure.** ``step(closure)`` calls ``closure()`` to evaluate the
    objective at the current parameters: it must set ``p.grad`` on the
    parameters (a parameter left at ``None`` counts as a zero gradient, none
    at all is an error) and return the loss. Every call gives the loss and the
    gradient together; the line search never evaluates a point twice, and
    ``state["func_evals"]`` counts every call.

    **State** (torch's keys, on the first parameter's state so
    ``state_dict`` has torch's layout): ``func_evals``, ``n_iter`` (ints),
    ``d``, ``prev_flat_grad`` (flat arrays), ``t``, ``H_diag``, ``prev_loss``
    (floats), ``old_dirs``, ``old_stps`` (lists of flat arrays), ``ro``,
    ``al`` (lists of floats).

    **Bad closures.** A non-finite loss or gradient at the starting point of
    a step raises :class:`nopt._linesearch.NonFiniteError` (a
    ``FloatingPointError``) and changes nothing. In fixed-step mode a
    non-finite value after a step puts the parameters back and raises the
    same error. With the line search, a non-finite value at a trial step
    makes the search backtrack (halving) from it; if the search still finds
    no decrease the memory is dropped and steepest descent is tried once (as
    L-BFGS-B does), and then the step stops with the parameters at the last
    good point and ``last_step.reason == "line_search"`` (or
    ``"nonfinite"``). An exception raised by the closure propagates, with the
    parameters put back at the last accepted point.

    One line search makes at most ``optimizer.max_ls`` (25, torch's
    ``max_ls``) closure calls; reaching that cap counts as a failed search.
    It is an attribute rather than a hyperparameter so that
    ``param_groups`` keep torch's keys.

    After each :meth:`step`, ``optimizer.last_step`` is a
    :class:`nopt._linesearch.StepReport` saying why it stopped.

    References
    ----------
    .. [1] Nocedal and Wright, *Numerical Optimization*, 2nd ed., Springer
       2006, Algorithms 7.4 and 7.5.
    .. [2] Moré and Thuente, "Line search algorithms with guaranteed
       sufficient decrease", ACM TOMS 20 (1994).
    """

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, history_size=100, line_search_fn=None, bounds=None):
        defaults = dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                        tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                        history_size=history_size, line_search_fn=line_search_fn)
        defaults = self._check_options(defaults)
        super().__init__(params, defaults)
        box = check_param_bounds(bounds, self.param_groups[0]["params"])
        if box is not None and line_search_fn is None:
            raise ValueError("bounds need line_search_fn='strong_wolfe' (L-BFGS-B's iteration)")
        self.bounds = box

    @staticmethod
    def _check_options(group):
        """Validate a group's hyperparameters; return them normalised (also used on load)."""
        lr = group["lr"]
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)) \
                or not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        max_eval = check_common_options(group["max_iter"], group["max_eval"],
                                         group["tolerance_grad"], group["tolerance_change"])
        history_size = group["history_size"]
        if isinstance(history_size, bool) or not isinstance(history_size, (int, np.integer)) \
                or history_size < 1:
            raise ValueError(f"Invalid history_size: {history_size!r} (expected an int >= 1)")
        line_search_fn = group["line_search_fn"]
        if line_search_fn not in (None, "strong_wolfe"):
            raise ValueError(f"only 'strong_wolfe' is supported, got line_search_fn={line_search_fn!r}")
        return dict(group, max_iter=int(group["max_iter"]), max_eval=max_eval,
                    history_size=int(history_size))

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("bounds", None)

    _state_spec = {"d": "array", "prev_flat_grad": "array", "old_dirs": "arrays",
                   "old_stps": "arrays", "ro": "floats", "al": "floats_or_none", "t": "number",
                   "H_diag": "number", "prev_loss": "number"}
    _state_required = ("d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad")

    def _step(self, closure, on_iter=None):
        """``step`` with ``on_iter(loss, prev_loss) -> reason or None`` after each iteration."""
        group, flat, state = self._begin(closure)
        if group["line_search_fn"] is not None:
            return self._lbfgsb_step(closure, group, flat, state, on_iter)
        return self._fixed_step(closure, group, flat, state, on_iter)

    def _lbfgsb_step(self, closure, group, flat, state, on_iter):
        box = None
        if self.bounds is not None:
            lower, upper = self.bounds
            if lower.size != flat.numel:
                raise ValueError(f"LBFGS: the bounds cover {lower.size} values but the parameters "
                                 f"now hold {flat.numel}; construct the optimizer again")
            box = Box(lower.astype(flat.dtype), upper.astype(flat.dtype))
            x = flat.get()
            clipped = box.clip(x)
            if not np.array_equal(clipped, x):
                flat.set(clipped)  # x0 outside the box is clipped, as scipy does
        orig_loss, loss, flat_grad, _ = self._first_evaluation(closure, flat, state)
        m = group["history_size"]
        hist = History(m, flat.numel, flat.dtype)
        if state.get("old_stps"):
            hist.load(state["old_stps"][-m:], state["old_dirs"][-m:])
        state.setdefault("al", [None] * m)
        options = dict(max_iter=group["max_iter"], max_eval=group["max_eval"], max_ls=self.max_ls,
                       tolerance_grad=group["tolerance_grad"],
                       tolerance_change=group["tolerance_change"], lr=float(group["lr"]))
        x = flat.get()
        reason, n_iter, n_evals, loss, flat_grad = lbfgsb_run(
            ClosureSpace(flat, closure), x, loss, flat_grad, state, hist, box, options, on_iter)
        self.last_step = StepReport(reason, n_iter, n_evals, loss, flat_grad)
        return orig_loss

    def _fixed_step(self, closure, group, flat, state, on_iter):
        """torch's LBFGS iteration with a fixed step (no line search)."""
        orig_loss, loss, flat_grad, _ = self._first_evaluation(closure, flat, state)
        method = _FixedStep(flat, state, group, self._x0_buffer(flat))
        self.last_step = StepReport(*iterate(method, closure, state, group, loss, flat_grad,
                                             on_iter))
        return orig_loss


class _FixedStep(Method):
    """torch's L-BFGS part of the iteration: the two-loop direction and a fixed step."""

    def __init__(self, flat, state, group, x0_buffer):
        super().__init__(flat, state)
        self.state = state
        self.lr = group["lr"]
        self.history_size = group["history_size"]
        self.S = flat.dtype.type
        self.x0 = x0_buffer
        self.old_dirs = state.get("old_dirs")
        self.old_stps = state.get("old_stps")
        self.ro = state.get("ro")
        self.H_diag = state.get("H_diag")

    def direction(self, flat_grad, loss, prev_loss):
        state, S = self.state, self.S
        if state["n_iter"] == 1:
            self.d = np.negative(flat_grad)
            self.old_dirs, self.old_stps, self.ro = [], [], []
            self.H_diag = 1
        else:
            old_dirs, old_stps, ro = self.old_dirs, self.old_stps, self.ro
            y = flat_grad - self.prev_g
            s = self.d * S(self.t)
            ys = np.dot(y, s)
            if ys > 1e-10:  # torch's absolute test
                if len(old_dirs) == self.history_size:
                    old_dirs.pop(0)
                    old_stps.pop(0)
                    ro.pop(0)
                old_dirs.append(y)
                old_stps.append(s)
                ro.append(float(S(1.0) / ys))
                self.H_diag = float(ys / np.dot(y, y))
            if not isinstance(state.get("al"), list) or len(state["al"]) < len(old_dirs):
                state["al"] = [None] * self.history_size
            self.d = _two_loop(flat_grad, old_dirs, old_stps, ro, self.H_diag, state["al"], S)

        if self.prev_g is None or self.prev_g.shape != flat_grad.shape:
            self.prev_g = flat_grad.copy()
        else:
            np.copyto(self.prev_g, flat_grad)

        # The step length: a fixed one, shorter on the very first iteration.
        if state["n_iter"] == 1:
            self.t = float(min(1.0, 1.0 / np.abs(flat_grad).sum()) * self.lr)
        else:
            self.t = float(self.lr)
        return np.dot(flat_grad, self.d)

    def search(self, gtd, calls, budget, last):
        """Step by ``t d``; evaluate there, except after the step's last iteration (as torch)."""
        flat = self.flat
        x_prev = flat.get(self.x0)
        flat.add_(self.t, self.d)
        if last:
            return SearchResult(True, self.t, None, None, None, 0, None)
        try:
            new_loss = call_closure(calls)
            new_grad = flat.gather_grad()
        except BaseException:
            flat.set(x_prev)
            raise
        if not (math.isfinite(new_loss) and math.isfinite(_absmax(new_grad))):
            flat.set(x_prev)
            raise NonFiniteError(
                f"LBFGS: the closure returned a non-finite loss or gradient "
                f"(loss={new_loss}) after a fixed step; the parameters were put "
                "back (lower lr, or use line_search_fn='strong_wolfe')"
            )
        return SearchResult(True, self.t, new_loss, new_grad, None, 1, None)

    def step_max(self):
        return max(self.d.max(), -self.d.min()) * abs(self.S(self.t))

    def save(self, state, prev_loss):
        # torch's keys, in torch's order.
        state["d"] = self.d
        state["t"] = self.t
        state["old_dirs"] = self.old_dirs
        state["old_stps"] = self.old_stps
        state["ro"] = self.ro
        state["H_diag"] = self.H_diag
        state["prev_flat_grad"] = self.prev_g
        state["prev_loss"] = prev_loss


def _two_loop(flat_grad, old_dirs, old_stps, ro, H_diag, al, S):
    """-H g by the two-loop recursion, with torch's order of operations."""
    q = np.negative(flat_grad)
    tmp = np.empty_like(q)
    num_old = len(old_dirs)
    for i in range(num_old - 1, -1, -1):
        a = np.dot(old_stps[i], q) * S(ro[i])
        al[i] = float(a)
        np.multiply(old_dirs[i], -a, out=tmp)
        q += tmp
    d = q
    d *= S(H_diag)
    for i in range(num_old):
        be_i = np.dot(old_dirs[i], d) * S(ro[i])
        np.multiply(old_stps[i], S(al[i]) - be_i, out=tmp)
        d += tmp
    return d
