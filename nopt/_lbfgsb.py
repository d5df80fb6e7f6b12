"""L-BFGS-B: the limited-memory BFGS iteration of :class:`nopt.LBFGS` (line search mode) and
``nopt.minimize(method="L-BFGS")``, with or without box bounds.

Design
------
One iteration is Byrd, Lu, Nocedal and Zhu's (scipy's ``L-BFGS-B`` v3.0):

1. the generalized Cauchy point :math:`x^c`, the first local minimiser of the
   quadratic model along the projected steepest-descent path
   :math:`P(x - t g)` (:func:`cauchy_point`);
2. subspace minimisation of the model over the variables still free at
   :math:`x^c`, projected back into the box (:func:`subspace_min`);
3. MINPACK's DCSRCH line search along :math:`d = \\bar x - x` with
   ``ftol=1e-3, gtol=0.9, xtol=0.1`` and the largest feasible step as its
   upper limit (:func:`line_search`).

Without bounds the Cauchy step is skipped once there is memory, and the
direction is exactly :math:`-H g`, the two-loop recursion's.

The model is the compact form :math:`B = \\theta I - W M W^\\top`, with
:math:`W = [Y,\\ \\theta S]` and
:math:`M^{-1} = \\begin{bmatrix} -D & L^\\top \\\\ L & \\theta S^\\top S \\end{bmatrix}`.
:class:`History` keeps :math:`S` and :math:`Y` as rows of one buffer and
their Gram matrices up to date, so one iteration costs :math:`O(mn)`; the
memory update and the unconstrained direction are one Cython call each
(``nopt/_kernels/lbfgsb.pxi``), so a small problem pays about scipy's
per-call overhead.

Everything the iteration touches goes through a *space* (``_linesearch``):
``evaluate(x) -> (f, g)`` and ``put(x)``. The closure optimizer's space writes
``x`` into the Parameters and calls the closure; ``nopt.minimize``'s calls
``fun`` on a plain array. Both run this same code.

References
----------
.. [1] Byrd, Lu, Nocedal and Zhu, "A limited memory algorithm for bound
   constrained optimization", SIAM J. Sci. Comput. 16 (1995).
.. [2] Morales and Nocedal, "Remark on Algorithm 778", ACM TOMS 38 (2011)
   (the projected subspace step of L-BFGS-B 3.0).
.. [3] Byrd, Nocedal and Schnabel, "Representations of quasi-Newton
   matrices and their use in limited memory methods", Math. Prog. 63 (1994).
"""
import math

import numpy as np

from ._kernels import helpers as _kernels
from ._linesearch import stop_reason

_scipy = {}


def _from_scipy():
    """(LAPACK's dgesv, MINPACK's DCSRCH), imported at first use, not with nopt.

    DCSRCH is MINPACK's line search as scipy (>= 1.11, pyproject's floor)
    ports it; scipy's own BFGS and CG drive the same class. Only its
    reverse-communication step is used. scipy.optimize is most of ``import
    nopt``'s time, and a training loop never needs it.
    """
    if not _scipy:
        from scipy.linalg.lapack import dgesv
        from scipy.optimize._dcsrch import DCSRCH
        _scipy["gesv"], _scipy["DCSRCH"] = dgesv, DCSRCH
    return _scipy["gesv"], _scipy["DCSRCH"]

__all__ = ["Box", "History", "lbfgsb_run", "check_bounds_pairs", "check_param_bounds"]

# L-BFGS-B's line search constants (lnsrlb).
LS_FTOL, LS_GTOL, LS_XTOL = 1e-3, 0.9, 0.1
BIG_STEP = 1e10
EPS64 = float(np.finfo(np.float64).eps)


# ---------------------------------------------------------------- bounds
class Box:
    """Flat lower/upper bounds (``-inf``/``inf`` where unbounded)."""

    def __init__(self, lower, upper):
        self.lower = lower
        self.upper = upper
        self.has_lower = np.isfinite(lower)
        self.has_upper = np.isfinite(upper)
        self.any = bool(self.has_lower.any() or self.has_upper.any())
        self.boxed = bool((self.has_lower & self.has_upper).all())
        self.fixed = lower == upper

    def clip(self, x, out=None):
        return np.clip(x, self.lower, self.upper, out=out)

    def projected_gradient_max(self, x, g):
        """max_i |P(x - g) - x|_i, L-BFGS-B's projgr."""
        pg = np.where(g < 0, np.maximum(x - self.upper, g), np.minimum(x - self.lower, g))
        return float(np.abs(pg).max(initial=0.0))

    def max_step(self, x, d):
        """Largest t <= BIG_STEP with lower <= x + t d <= upper (lnsrlb's stpmx)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            down = (d < 0) & self.has_lower
            up = (d > 0) & self.has_upper
            t = BIG_STEP
            if down.any():
                room = self.lower[down] - x[down]
                if (room >= 0).any():
                    return 0.0
                t = min(t, float((room / d[down]).min()))
            if up.any():
                room = self.upper[up] - x[up]
                if (room <= 0).any():
                    return 0.0
                t = min(t, float((room / d[up]).min()))
        return t


def _finish_box(lower, upper, where):
    if np.isnan(lower).any() or np.isnan(upper).any():
        raise ValueError(f"{where}: bounds contain NaN (use None or +-inf for 'unbounded')")
    bad = np.flatnonzero(lower > upper)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{where}: lower bound {lower[i]} > upper bound {upper[i]} at index {i}")
    return Box(lower, upper)


def check_bounds_pairs(bounds, n):
    """``minimize``'s ``bounds``: a ``scipy.optimize.Bounds`` or ``n`` ``(low, high)`` pairs.

    Returns a :class:`Box`, or None when every variable is unbounded.

    Raises
    ------
    ValueError
        Wrong length, NaN, or a lower bound above its upper bound.
    """
    if bounds is None:
        return None
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):  # scipy.optimize.Bounds
        lower = np.broadcast_to(np.asarray(bounds.lb, dtype=np.float64), (n,)).copy() \
            if np.ndim(bounds.lb) == 0 or np.size(bounds.lb) == n else None
        upper = np.broadcast_to(np.asarray(bounds.ub, dtype=np.float64), (n,)).copy() \
            if np.ndim(bounds.ub) == 0 or np.size(bounds.ub) == n else None
        if lower is None or upper is None:
            raise ValueError(f"bounds: Bounds.lb and Bounds.ub must be scalars or have length {n} "
                             f"(the length of x0), got {np.size(bounds.lb)} and {np.size(bounds.ub)}")
    else:
        try:
            pairs = list(bounds)
        except TypeError as exc:
            raise ValueError("bounds must be a scipy.optimize.Bounds or a sequence of "
                             "(low, high) pairs") from exc
        if len(pairs) != n:
            raise ValueError(f"bounds has {len(pairs)} (low, high) pairs; expected {n} "
                             "(the length of x0)")
        lower = np.empty(n)
        upper = np.empty(n)
        for i, pair in enumerate(pairs):
            try:
                low, high = pair
            except (TypeError, ValueError) as exc:
                raise ValueError(f"bounds[{i}] must be a (low, high) pair, got {pair!r}") from exc
            try:
                lower[i] = -np.inf if low is None else float(low)
                upper[i] = np.inf if high is None else float(high)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"bounds[{i}] must hold numbers or None, got {pair!r}") from exc
    box = _finish_box(lower, upper, "bounds")
    return box if box.any else None


def check_param_bounds(bounds, params):
    """``LBFGS(bounds=...)``: None, or one ``(low, high)`` pair per parameter.

    ``low``/``high`` are None, scalars or arrays broadcastable to the
    parameter's shape. Returns the flat lower and upper arrays (float64), or
    None.
    """
    if bounds is None:
        return None
    try:
        pairs = list(bounds)
    except TypeError as exc:
        raise ValueError("bounds must be None or a list with one (low, high) pair per "
                         "parameter") from exc
    if len(pairs) != len(params):
        raise ValueError(f"bounds has {len(pairs)} entries; expected one (low, high) pair per "
                         f"parameter ({len(params)})")
    lowers, uppers = [], []
    for i, (pair, p) in enumerate(zip(pairs, params)):
        where = f"bounds[{i}]"
        if pair is None:
            pair = (None, None)
        try:
            low, high = pair
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where} must be a (low, high) pair or None") from exc
        sides = []
        for side, value, fill in (("low", low, -np.inf), ("high", high, np.inf)):
            try:
                a = np.full(p.shape, fill) if value is None else \
                    np.broadcast_to(np.asarray(value, dtype=np.float64), p.shape)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where} {side} must be None, a number or an array "
                                 f"broadcastable to the parameter's shape {p.shape}") from exc
            sides.append(np.array(a, dtype=np.float64).reshape(-1))
        lowers.append(sides[0])
        uppers.append(sides[1])
    lower = np.concatenate(lowers) if lowers else np.empty(0)
    upper = np.concatenate(uppers) if uppers else np.empty(0)
    if np.isnan(lower).any() or np.isnan(upper).any():
        raise ValueError("bounds contain NaN (use None or +-inf for 'unbounded')")
    bad = np.flatnonzero(lower > upper)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"bounds: lower bound {lower[i]} > upper bound {upper[i]} at flat index {i}")
    return lower, upper


# ---------------------------------------------------------------- memory
class History:
    """The last ``m`` pairs ``s_i, y_i`` and their Gram matrices.

    Rows live in a buffer of ``2m`` rows and are never overwritten: when it
    fills, the live rows move to a new buffer. So the arrays handed out as
    ``old_stps``/``old_dirs`` (views of rows) stay valid. The Gram matrices
    :math:`S S^\top`, :math:`S Y^\top` (:math:`s_i^\top y_j`),
    :math:`Y Y^\top` and :math:`R` (the upper triangle of :math:`S Y^\top`)
    live in ``2m x 2m`` buffers indexed like the rows, so dropping the
    oldest pair moves nothing.
    """

    def __init__(self, m, n, dtype):
        self.m = m
        self.n = n
        self.dtype = dtype
        self.clear()

    def clear(self):
        self._S = self._Y = None
        self._G = None  # SS, SY, YY, R buffers
        self.start = 0
        self.k = 0
        self.theta = 1.0
        self.old_stps, self.old_dirs, self.ro = [], [], []

    def _window(self, i):
        a, b = self.start, self.start + self.k
        return self._G[i, a:b, a:b]

    S = property(lambda self: self._S[self.start:self.start + self.k])
    Y = property(lambda self: self._Y[self.start:self.start + self.k])
    SS = property(lambda self: self._window(0))
    SY = property(lambda self: self._window(1))
    YY = property(lambda self: self._window(2))
    R = property(lambda self: self._window(3))

    def _grow(self):
        """A fresh buffer with the live rows (and Gram windows) at its top."""
        rows = 2 * self.m
        k = self.k
        S = np.empty((rows, self.n), dtype=self.dtype)
        Y = np.empty((rows, self.n), dtype=self.dtype)
        G = np.zeros((4, rows, rows))
        if k:
            S[:k] = self.S
            Y[:k] = self.Y
            a = self.start
            G[:, :k, :k] = self._G[:, a:a + k, a:a + k]
        self._S, self._Y, self._G, self.start = S, Y, G, 0
        self.old_stps = list(S[:k])
        self.old_dirs = list(Y[:k])

    def slot(self):
        """The buffer row the next pair goes to (made free first if needed)."""
        if self._S is None or self.start + self.k == self._S.shape[0]:
            self._grow()
        return self.start + self.k

    def pair(self, x1, x0, g1, g0):
        """Write ``s = x1 - x0``, ``y = g1 - g0`` into :meth:`slot`; return ``(row, s.y, y.y)``.

        The pair joins the memory only by :meth:`accept`.
        """
        row = self.slot()
        ys, yy = _kernels.pair(self._S, self._Y, row, x1, x0, g1, g0)
        return row, ys, yy

    def accept(self, ys, yy):
        """Keep the pair last written by :meth:`pair`; drop the oldest when full."""
        if self.k == self.m:
            self.start += 1
            self.k -= 1
            del self.old_stps[0], self.old_dirs[0], self.ro[0]
        row = self.start + self.k
        _kernels.gram_update(self._S, self._Y, self._G, self.start, row)
        self.k += 1
        self.old_stps.append(self._S[row])
        self.old_dirs.append(self._Y[row])
        self.ro.append(1.0 / ys)
        self.theta = yy / ys

    def load(self, old_stps, old_dirs):
        """Rebuild from state lists (oldest first), as saved or loaded from torch.

        Every step starts here (with the same kernel as :meth:`accept`), so
        that a resumed run (state_dict, then load_state_dict) is bitwise the
        run that went on.
        """
        self.clear()
        k = len(old_stps)
        if not k:
            return
        self.m = max(self.m, k)
        self._grow()
        self._S[:k] = np.asarray(old_stps, dtype=self.dtype)
        self._Y[:k] = np.asarray(old_dirs, dtype=self.dtype)
        for row in range(k):
            _kernels.gram_update(self._S, self._Y, self._G, 0, row)
        self.k = k
        self.old_stps, self.old_dirs = list(self._S[:k]), list(self._Y[:k])
        self.ro = [1.0 / float(v) for v in np.diagonal(self.SY)]
        self.theta = float(self.YY[-1, -1] / self.SY[-1, -1])

    # ---- compact form
    def middle(self):
        """M^{-1} = [[-D, L^T], [L, theta S^T S]] (2k x 2k)."""
        k = self.k
        SY = self.SY
        R = self.R
        mid = np.empty((2 * k, 2 * k))
        mid[:k, :k] = 0.0
        np.fill_diagonal(mid[:k, :k], -np.diagonal(SY))
        mid[k:, :k] = SY
        mid[k:, :k] -= R
        mid[:k, k:] = mid[k:, :k].T
        np.multiply(self.SS, self.theta, out=mid[k:, k:])
        return mid

    def newton_matrix(self):
        """M^{-1} - W^T W / theta with every variable free:
        [[-D - Y^T Y / theta, -R^T], [-R, 0]]."""
        k = self.k
        mat = np.empty((2 * k, 2 * k))
        top = mat[:k, :k]
        np.multiply(self.YY, -1.0 / self.theta, out=top)
        top.flat[::k + 1] -= np.diagonal(self.SY)
        np.negative(self.R, out=mat[k:, :k])
        mat[:k, k:] = mat[k:, :k].T
        mat[k:, k:] = 0.0
        return mat

    def WtW(self):
        t = self.theta
        k = self.k
        out = np.empty((2 * k, 2 * k))
        out[:k, :k] = self.YY
        out[:k, k:] = t * self.SY.T
        out[k:, :k] = t * self.SY
        out[k:, k:] = (t * t) * self.SS
        return out

    def Wt(self, v):
        """W^T v = [Y v; theta S v]."""
        out = np.empty(2 * self.k)
        np.matmul(self.Y, v, out=out[:self.k])
        np.matmul(self.S, v, out=out[self.k:])
        out[self.k:] *= self.theta
        return out

    def W(self, u):
        """W u = Y^T u_1 + theta S^T u_2."""
        k = self.k
        out = u[:k] @ self.Y
        out += (self.theta * u[k:]) @ self.S
        return out

    def W_rows(self, idx):
        """The rows of W for the variables ``idx`` (len(idx) x 2k)."""
        return np.concatenate((self.Y[:, idx].T, self.theta * self.S[:, idx].T), axis=1)


def _solve(a, b):
    """Solve the small dense system ``a x = b`` (LAPACK's gesv, less wrapping than NumPy's)."""
    lu, piv, x, info = _from_scipy()[0](a, b, overwrite_a=0, overwrite_b=0)
    if info != 0:
        raise np.linalg.LinAlgError("singular L-BFGS-B system")
    return x


# ---------------------------------------------------------------- direction
def cauchy_point(x, g, box, hist, Minv):
    """The generalized Cauchy point along P(x - t g).

    Returns ``(xcp, c, free)``: the point, ``c = W^T (xcp - x)`` and a boolean
    mask of the variables that are free at ``xcp`` (not at a bound where the
    path stopped them).
    """
    theta = hist.theta
    k = hist.k
    lower, upper = box.lower, box.upper
    with np.errstate(invalid="ignore"):
        at_lower = box.has_lower & (x - lower <= 0) & (g >= 0)
        at_upper = box.has_upper & (upper - x <= 0) & (g <= 0)
    held = at_lower | at_upper | box.fixed
    d = np.where(held, 0.0, -g)
    xcp = x.copy()
    # breakpoints: the t at which each moving variable reaches its bound
    with np.errstate(divide="ignore", invalid="ignore"):
        tb = np.where((d < 0) & box.has_lower, (lower - x) / d,
                      np.where((d > 0) & box.has_upper, (upper - x) / d, np.inf))
    free = ~held
    dd = float(d @ d)
    if dd == 0.0:
        return xcp, np.zeros(2 * k), free
    p = hist.Wt(d) if k else np.empty(0)
    c = np.zeros(2 * k)

    M = _solve(Minv, np.eye(2 * k)) if k else None

    def Mv(v):
        return M @ v if k else v

    Mp = Mv(p)
    f1 = -dd
    f2 = theta * dd - float(p @ Mp)
    f2_org = f2
    t_old = 0.0
    order = np.flatnonzero(np.isfinite(tb))
    order = order[np.argsort(tb[order], kind="stable")]
    dt_min = -f1 / f2
    f2_floor = EPS64 * f2_org
    rows = hist.W_rows(order) if k else None  # W's rows for the breakpoints, in order
    for i, b in enumerate(order.tolist()):
        t_b = float(tb[b])
        dt = t_b - t_old
        if dt_min < dt:
            break
        # variable b reaches its bound and stops
        d_b = float(d[b])
        xcp[b] = upper[b] if d_b > 0 else lower[b]
        free[b] = False
        d[b] = 0.0
        dd -= d_b * d_b
        if k:
            c += dt * p
            p = p - d_b * rows[i]
            Mp = Mv(p)
        t_old = t_b
        if dd <= 0.0 or not free.any():
            dt_min = 0.0
            break
        # f' and f'' of the model on the next segment (z = xcp - x, W^T z = c):
        # f' = g.d + theta z.d - c.M p = -dd + theta t dd - c.M p
        f1 = -dd + theta * t_old * dd - (float(c @ Mp) if k else 0.0)
        f2 = max(theta * dd - (float(p @ Mp) if k else 0.0), f2_floor)
        dt_min = -f1 / f2
    dt_min = max(dt_min, 0.0)
    t = t_old + dt_min
    moving = d != 0
    xcp[moving] = x[moving] + t * d[moving]
    if k:
        c += dt_min * p
    return xcp, c, free


def subspace_min(x, g, xcp, c, free, box, hist, Minv):
    """Minimise the model over the free variables from ``xcp``; return ``xbar``.

    The Newton step of the reduced model, :math:`\\Delta = B_{FF}^{-1} r`
    with :math:`r = -Z^\\top(g + B(x^c - x))`, is formed by
    Sherman-Morrison-Woodbury,
    :math:`B_{FF}^{-1} = \\theta^{-1} I + \\theta^{-2} W_F (M^{-1} -
    \\theta^{-1} W_F^\\top W_F)^{-1} W_F^\\top`. As L-BFGS-B 3.0, the point
    :math:`x^c + \\Delta` is projected into the box, and if that is not a
    descent direction from ``x``, the step is cut back to the box instead.
    """
    theta = hist.theta
    nfree = int(free.sum()) if box is not None else x.size
    if nfree == 0 or hist.k == 0:
        return xcp
    all_free = nfree == x.size
    if box is None:
        r = -g  # xcp = x, c = 0
    else:
        r = -(g + theta * (xcp - x) - hist.W(_solve(Minv, c)))
        if not all_free:
            r[~free] = 0.0
    if all_free:
        mat = hist.newton_matrix()
    else:
        fixed = np.flatnonzero(~free)
        if fixed.size <= nfree:
            Wf = hist.W_rows(fixed)
            WtW = hist.WtW() - Wf.T @ Wf
        else:
            Wz = hist.W_rows(np.flatnonzero(free))
            WtW = Wz.T @ Wz
        mat = Minv - WtW / theta
    v = _solve(mat, hist.Wt(r))
    du = r / theta + hist.W(v) / (theta * theta)
    if not all_free:
        du[~free] = 0.0
    if box is None:
        return x + du
    xbar = box.clip(xcp + du)
    if float((xbar - x) @ g) <= 0.0:
        return xbar
    # not a descent direction: stay on the segment xcp + a du inside the box
    alpha = 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        down = (du < 0) & box.has_lower
        up = (du > 0) & box.has_upper
        if down.any():
            alpha = min(alpha, float(((box.lower[down] - xcp[down]) / du[down]).min()))
        if up.any():
            alpha = min(alpha, float(((box.upper[up] - xcp[up]) / du[up]).min()))
    alpha = max(alpha, 0.0)
    return box.clip(xcp + alpha * du)


def direction(x, g, box, hist):
    """``d = xbar - x`` for one L-BFGS-B iteration."""
    if box is None:
        if hist.k == 0:
            return -g
        # subspace_min with every variable free and xcp = x: d = -B^{-1} g
        d = np.empty_like(g)
        _kernels.newton_step(hist._S, hist._Y, hist._G, hist.start, hist.k, hist.theta,
                             np.negative(g), d, np.empty(4 * hist.k))
        return d
    Minv = hist.middle() if hist.k else None
    xcp, c, free = cauchy_point(x, g, box, hist, Minv)
    if hist.k:
        xbar = subspace_min(x, g, xcp, c, free, box, hist, Minv)
    else:
        xbar = xcp
    return (xbar - x).astype(x.dtype, copy=False)


# ---------------------------------------------------------------- line search
class _Search:
    """Outcome of :func:`line_search` (``ok``: a step was taken)."""

    __slots__ = ("ok", "reason", "t", "x", "f", "g", "n_evals", "gd0")

    def __init__(self, ok, reason, t=0.0, x=None, f=None, g=None, n_evals=0, gd0=0.0):
        self.ok, self.reason, self.t, self.x, self.f, self.g = ok, reason, t, x, f, g
        self.n_evals = n_evals
        self.gd0 = gd0  # g.d at the start


def line_search(evaluate, x, f, g, d, t, t_max, max_ls, max_evals, box, best):
    """L-BFGS-B's search (lnsrlb): MINPACK's DCSRCH along ``d`` from ``x``, ``0 < t <= t_max``.

    ``evaluate(x) -> (f, g)``. At most ``min(max_ls, max_evals)`` calls.
    A non-finite value abandons DCSRCH for halving from that step until the
    loss is finite and decreases sufficiently. ``best`` (a list ``[f, x,
    g]``) is updated with every lower point evaluated.
    """
    gd = float(g @ d)
    if not gd < 0.0:
        return _Search(False, "line_search")
    dcsrch = _from_scipy()[1](None, None, LS_FTOL, LS_GTOL, LS_XTOL, 0.0, t_max)
    t, _, _, task = dcsrch._iterate(t, f, gd, b"START")
    n = 0
    limit = min(max_ls, max_evals)
    while task[:2] == b"FG":
        if n >= limit:
            return _Search(False, "line_search" if n >= max_ls else "max_eval", n_evals=n)
        t = float(t)  # a NumPy float64 would promote float32 x
        xt = x + t * d
        if box is not None:
            box.clip(xt, out=xt)
        n += 1
        ft, gt = evaluate(xt)
        gtd = float(gt @ d)
        if not (math.isfinite(ft) and math.isfinite(gtd)):
            return _backtrack(evaluate, x, f, gd, d, t, n, limit, max_ls, box, best)
        if ft < best[0]:
            best[:] = ft, xt, gt
        t, _, _, task = dcsrch._iterate(t, ft, gtd, task)
    if task[:4] in (b"CONV", b"WARN") and ft <= f:
        return _Search(True, None, t, xt, ft, gt, n, gd)
    return _Search(False, "line_search", n_evals=n)


def _backtrack(evaluate, x, f, gd, d, t, n, limit, max_ls, box, best):
    while n < limit:
        t *= 0.5
        xt = x + t * d
        if box is not None:
            box.clip(xt, out=xt)
        n += 1
        ft, gt = evaluate(xt)
        if not (math.isfinite(ft) and np.isfinite(gt).all()):
            continue
        if ft < best[0]:
            best[:] = ft, xt, gt
        if ft <= f + LS_FTOL * t * gd:
            return _Search(True, "backtrack", t, xt, ft, gt, n, gd)
    return _Search(False, "nonfinite" if limit == max_ls else "max_eval", n_evals=n)


# ---------------------------------------------------------------- the iteration
def lbfgsb_run(space, x, f, g, state, hist, box, options, on_iter=None):
    """Run L-BFGS-B iterations from ``x`` (feasible) with loss ``f`` and gradient ``g``.

    Parameters
    ----------
    space
        ``space.evaluate(x) -> (f, g)`` (leaves the parameters at ``x``) and
        ``space.put(x)``; every call of ``evaluate`` counts one closure call.
    state : dict
        The optimizer's state: ``n_iter`` and ``func_evals`` are advanced;
        ``d``, ``t``, ``prev_flat_grad``, ``prev_loss``, ``H_diag`` and the
        history lists are written on exit (normal or not).
    hist : History
    box : Box or None
    options : dict
        ``max_iter``, ``max_eval``, ``max_ls``, ``tolerance_grad``,
        ``tolerance_change``, ``lr`` (the first trial step's factor).
    on_iter : callable, optional
        ``on_iter(f, f_prev) -> reason or None`` after each iteration.

    Returns
    -------
    reason, n_iter, n_evals, f, g
        With the parameters at the best point evaluated (never above the
        starting loss).
    """
    max_iter = options["max_iter"]
    max_eval = options["max_eval"]
    max_ls = options["max_ls"]
    tolerance_grad = options["tolerance_grad"]
    tolerance_change = options["tolerance_change"]
    lr = options["lr"]
    eps = float(np.finfo(x.dtype).eps)
    counter = [1]  # the caller's first evaluation

    def evaluate(xt):
        counter[0] += 1
        state["func_evals"] += 1
        return space.evaluate(xt)

    def gmax(x, g):
        return box.projected_gradient_max(x, g) if box is not None else \
            float(np.abs(g).max(initial=0.0))

    best = [f, x, g]
    prev_f = state.get("prev_loss")
    d = state.get("d")
    t = state.get("t")
    n_iter = 0
    reason = "max_iter"
    try:
        if gmax(x, g) <= tolerance_grad:
            return "gtol", 0, 1, f, g
        while True:
            d = direction(x, g, box, hist)
            if box is not None:
                t_max = 1.0 if state["n_iter"] == 0 else box.max_step(x, d)
            else:
                t_max = BIG_STEP
            if state["n_iter"] == 0 and not (box is not None and box.boxed):
                t0 = min(1.0 / math.sqrt(float(d @ d)), t_max)
            else:
                t0 = 1.0
            t0 = min(t0 * lr, t_max)
            res = line_search(evaluate, x, f, g, d, t0, t_max, max_ls,
                              max_eval - counter[0], box, best) if t_max > 0 else _Search(
                                  False, "line_search")
            if not res.ok:
                t = 0.0
                space.put(x)
                if res.reason == "max_eval" or counter[0] >= max_eval:
                    reason = "max_eval"
                    break
                if hist.k:
                    # As L-BFGS-B: drop the memory, retry from the Cauchy step.
                    hist.clear()
                    continue
                reason = res.reason
                break
            n_iter += 1
            state["n_iter"] += 1
            t = res.t
            row, ys, yy = hist.pair(res.x, x, res.g, g)
            s = hist._S[row]
            # -g.s = -t g.d, known from the search
            if ys > eps * -t * res.gd0:
                hist.accept(ys, yy)
            prev_f = f
            x, f, g = res.x, res.f, res.g
            reason = stop_reason(on_iter, f, prev_f, n_iter, max_iter, counter[0], max_eval,
                                 gmax(x, g), tolerance_grad,
                                 float(np.abs(s).max()) if tolerance_change > 0 else math.inf,
                                 tolerance_change)
            if reason:
                break
        if best[0] < f:
            # A lower point was seen than where the search stopped.
            f, x, g = best
            space.put(x)
        return reason, n_iter, counter[0], f, g
    except BaseException:
        space.put(x)
        raise
    finally:
        state["d"] = d
        state["t"] = t
        state["old_stps"] = hist.old_stps
        state["old_dirs"] = hist.old_dirs
        state["ro"] = hist.ro
        state["H_diag"] = 1.0 / hist.theta
        state["prev_flat_grad"] = g
        state["prev_loss"] = prev_f
