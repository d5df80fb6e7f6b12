"""Nonlinear conjugate gradient over a closure, with scipy's Wolfe line search."""
import math

import numpy as np

from ._closure_optimizer import ClosureOptimizer, Method, absmax as _absmax, iterate
from ._linesearch import ClosureLine, StepReport, check_common_options, wolfe_search

__all__ = ["CG"]

BETA_RULES = ("PR+", "FR", "PR", "HS", "DY")
# Sufficient descent asked of every new direction: g.d <= -SIGMA |g|^2
# (scipy's CG uses the same constant, sigma_3, for its PR+ check).
SIGMA = 0.01


def _beta(rule, gg1, g1g0, gg0, dg1, dg0):
    """beta_k from dot products: g1.g1, g1.g0, g0.g0, d.g1, d.g0 (y = g1 - g0)."""
    if rule in ("FR", "DY"):
        num = gg1
    else:
        num = gg1 - g1g0  # g1 . y
    if rule in ("HS", "DY"):
        den = dg1 - dg0  # d . y
    else:
        den = gg0
    if den == 0:
        return math.nan
    beta = num / den
    if rule == "PR+":
        beta = max(beta, 0.0)
    return beta


class CG(ClosureOptimizer):
    r"""Nonlinear conjugate gradient with a choice of :math:`\beta` rule.

    Each :meth:`step` runs up to ``max_iter`` iterations of

    .. math::
        \begin{aligned}
        d_k &= -g_k + \beta_k d_{k-1} \qquad (d_k = -g_k \text{ on a restart}) \\
        x_{k+1} &= x_k + t_k d_k
        \end{aligned}

    with :math:`y = g_k - g_{k-1}` and

    =========  ===============================================================
    ``"FR"``   :math:`\beta = g_k^\top g_k / g_{k-1}^\top g_{k-1}` (Fletcher-Reeves)
    ``"PR"``   :math:`\beta = g_k^\top y / g_{k-1}^\top g_{k-1}` (Polak-Ribière)
    ``"PR+"``  :math:`\beta = \max(0, \beta_{PR})` (default, as scipy's CG)
    ``"HS"``   :math:`\beta = g_k^\top y / d_{k-1}^\top y` (Hestenes-Stiefel)
    ``"DY"``   :math:`\beta = g_k^\top g_k / d_{k-1}^\top y` (Dai-Yuan)
    =========  ===============================================================

    :math:`t_k` satisfies the strong Wolfe conditions (``c1``, ``c2``),
    found by scipy's line search (DCSRCH, then the zoom search) through the
    closure, starting from scipy's CG guess
    :math:`\min(1, 2.02 (f_k - f_{k-1}) / g_k^\top d_k)`.

    The direction restarts at :math:`-g_k` every ``restart_every``
    iterations and whenever the new direction is not a sufficient descent
    direction, :math:`g_k^\top d_k > -0.01\,\|g_k\|^2`. As in scipy's CG,
    the line search also rejects Wolfe steps whose next direction would fail
    that test, so restarts for that reason are rare.

    Parameters
    ----------
    params : iterable of Parameter
        One group only. Shapes may differ; float32 and float64 both work.
    max_iter : int, default 20
        Iterations per :meth:`step`.
    max_eval : int, optional
        Closure calls per :meth:`step` (default ``3 * max_iter``: a line
        search iteration needs more than LBFGS's ``max_iter * 5 // 4``).
    tolerance_grad : float, default 1e-7
        Stop when :math:`\max_i |g_i| \le` ``tolerance_grad``.
    tolerance_change : float, default 1e-9
        Stop when :math:`g^\top d > -`\ ``tolerance_change``, or when the step
        :math:`\max_i |t d_i|` or the loss change falls to it or below.
    beta : {"PR+", "FR", "PR", "HS", "DY"}
        The :math:`\beta` rule.
    restart_every : int, optional
        Restart period; default: the number of variables.
    c1, c2 : float, default 1e-4, 0.4
        Wolfe parameters, ``0 < c1 < c2 < 1`` (scipy's CG defaults).

    Notes
    -----
    The closure protocol, ``last_step`` and the handling of bad closures are
    :class:`nopt.LBFGS`'s (with the line search). A failed line search
    along a conjugate direction is retried once along :math:`-g` (a
    restart); if that fails too, the step stops with ``last_step.reason ==
    "line_search"`` and the parameters at the lowest point evaluated, never
    above the step's start.

    State (on the first parameter): ``func_evals``, ``n_iter``, ``d``,
    ``t``, ``prev_flat_grad``, ``prev_loss``, ``n_since_restart``.

    References
    ----------
    .. [1] Nocedal and Wright, *Numerical Optimization*, 2nd ed., Springer
       2006, section 5.2.
    .. [2] Hager and Zhang, "A survey of nonlinear conjugate gradient
       methods", Pacific J. Optim. 2 (2006).
    .. [3] Gilbert and Nocedal, "Global convergence properties of conjugate
       gradient methods for optimization", SIAM J. Optim. 2 (1992).
    """

    def __init__(self, params, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, beta="PR+", restart_every=None, c1=1e-4, c2=0.4):
        if max_eval is None and isinstance(max_iter, (int, np.integer)) and not isinstance(max_iter, bool):
            # A CG iteration takes ~1.5 closure calls with scipy's search;
            # LBFGS's max_iter * 5 // 4 would starve it.
            max_eval = 3 * int(max_iter)
        defaults = self._check_options(dict(
            max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
            tolerance_change=tolerance_change, beta=beta, restart_every=restart_every,
            c1=c1, c2=c2))
        super().__init__(params, defaults)

    _state_spec = {"d": "array", "prev_flat_grad": "array", "t": "number", "prev_loss": "number",
                   "n_since_restart": "count"}
    _state_required = ("d", "prev_flat_grad")

    @staticmethod
    def _check_options(group):
        """Validate a group's hyperparameters; return them normalised (also used on load)."""
        max_eval = check_common_options(group["max_iter"], group["max_eval"],
                                        group["tolerance_grad"], group["tolerance_change"])
        beta = group["beta"]
        if beta not in BETA_RULES:
            raise ValueError(f"Invalid beta rule: {beta!r} (expected one of {', '.join(BETA_RULES)})")
        restart_every = group["restart_every"]
        if restart_every is not None and (
                isinstance(restart_every, bool) or not isinstance(restart_every, (int, np.integer))
                or restart_every < 1):
            raise ValueError(f"Invalid restart_every: {restart_every!r} (expected an int >= 1 or None)")
        c1, c2 = group["c1"], group["c2"]
        if not (isinstance(c1, (int, float)) and isinstance(c2, (int, float))
                and not isinstance(c1, bool) and not isinstance(c2, bool) and 0 < c1 < c2 < 1):
            raise ValueError(f"Invalid Wolfe parameters c1={c1!r}, c2={c2!r} (expected 0 < c1 < c2 < 1)")
        return dict(group, max_iter=int(group["max_iter"]), max_eval=max_eval,
                    restart_every=None if restart_every is None else int(restart_every),
                    c1=float(c1), c2=float(c2))

    def _step(self, closure, on_iter=None):
        """``step`` with ``on_iter(loss, prev_loss) -> reason or None`` after each iteration."""
        group, flat, state = self._begin(closure)
        orig_loss, loss, g, _ = self._first_evaluation(closure, flat, state)
        reason, n_iter, n_evals, loss, g = cg_run(flat, closure, state, group, loss, g,
                                                  self.max_ls, on_iter)
        self.last_step = StepReport(reason, n_iter, n_evals, loss, g)
        return orig_loss


def cg_run(flat, closure, state, group, loss, g, max_ls, on_iter=None):
    """CG iterations from the parameters ``flat`` (loss ``loss``, flat gradient ``g``).

    :func:`nopt._closure_optimizer.iterate` with CG's direction
    (:class:`_Conjugate`), on anything with :class:`FlatParams`'s methods, so
    ``nopt.minimize`` runs it on a plain array. Advances ``state["n_iter"]``
    and ``state["func_evals"]`` and writes ``d``, ``t``, ``prev_flat_grad``,
    ``prev_loss``, ``n_since_restart`` on exit.

    Returns
    -------
    reason, n_iter, n_evals, loss, g
    """
    return iterate(_Conjugate(flat, state, group, max_ls), closure, state, group, loss, g, on_iter)


class _Conjugate(Method):
    """CG's part of the iteration: the beta rule, scipy's Wolfe search, restarts along -g."""

    def __init__(self, flat, state, group, max_ls):
        super().__init__(flat, state)
        self.rule = group["beta"]
        self.c1, self.c2 = group["c1"], group["c2"]
        self.tolerance_grad = group["tolerance_grad"]
        self.restart_every = group["restart_every"] or max(flat.numel, 1)
        self.max_ls = max_ls
        self.since = state.get("n_since_restart", 0)
        self.x0 = np.empty(flat.numel, dtype=flat.dtype)

    def direction(self, g, loss, prev_loss):
        d, prev_g, since = self.d, self.prev_g, self.since
        gg = float(np.dot(g, g))
        self.restarted = True
        if d is None or prev_g is None or since + 1 >= self.restart_every or not self.t:
            d = np.negative(g)
        else:
            dg1 = float(np.dot(d, g))
            beta = _beta(self.rule, gg, float(np.dot(g, prev_g)), float(np.dot(prev_g, prev_g)),
                         dg1, float(np.dot(d, prev_g)))
            # -g.g + beta d.g is the new g.d: test descent before forming d.
            if math.isfinite(beta) and -gg + beta * dg1 <= -SIGMA * gg:
                d = d * beta
                d -= g
                self.restarted = False
            else:
                d = np.negative(g)
        self.since = 0 if self.restarted else since + 1
        self.d, self.g, self.gg, self.loss = d, g, gg, loss
        # scipy's first trial step min(1, 2.02 (f - old_f) / g.d) needs
        # a decrease since the last iterate; without one (first
        # iteration, or the last search failed) scipy's start-up guess
        # old_f = f + |g|/2 makes the first step about 1/|g| long.
        if prev_loss is not None and prev_loss > loss:
            self.old_f = prev_loss
        else:
            self.old_f = loss + math.sqrt(gg) / 2
        self.prev_g = g
        self.lines = []
        return float(np.dot(g, d))

    def not_descent(self):
        self.t = 0.0

    def search(self, gtd, calls, budget, last):
        # No descent test when the next iteration restarts anyway.
        extra = None if self.since + 1 >= self.restart_every else _descent_test(
            self.rule, self.g, self.d, gtd, self.tolerance_grad)
        x0 = self.flat.get(self.x0)
        line = ClosureLine(self.flat, calls, x0, self.d, 1.0, self.loss, self.g, gtd, budget,
                           self.max_ls)
        self.lines.append(line)
        return wolfe_search(line, old_f0=self.old_f, c1=self.c1, c2=self.c2,
                            extra_condition=extra)

    def restart(self, g):
        """A failed search along a conjugate direction is tried once more along -g."""
        if self.restarted:
            return None
        self.restarted = True
        self.d = np.negative(g)
        self.since = 0
        return -self.gg

    def best(self, loss, g):
        # Leave the lowest point the failed searches saw, if below.
        for line in self.lines:
            best = line.best_point()
            if best is not None and best[0] < loss:
                loss, x_best, g = best
                self.flat.set(x_best)
        return loss, g

    def step_max(self):
        return max(self.d.max(), -self.d.min()) * self.t

    def save(self, state, prev_loss):
        super().save(state, prev_loss)
        state["n_since_restart"] = self.since


def _descent_test(rule, g0, d, dg0, tolerance_grad):
    """Accept a trial step only if the next direction is a sufficient descent one."""
    gg0 = float(np.dot(g0, g0))

    def test(alpha, f, g1):
        if _absmax(g1) <= tolerance_grad:
            return True
        gg1 = float(np.dot(g1, g1))
        dg1 = float(np.dot(d, g1))
        beta = _beta(rule, gg1, float(np.dot(g1, g0)), gg0, dg1, dg0)
        return math.isfinite(beta) and -gg1 + beta * dg1 <= -SIGMA * gg1

    return test
