"""SparseAdam: Adam on the entries of scipy.sparse gradients only."""
import math

import numpy as np

from ._kernels.helpers import sparse_adam as _sparse_adam_kernel
from ._parameter import Parameter
from .optimizer import Optimizer

__all__ = ["SparseAdam"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _issparse(x):
    try:
        import scipy.sparse as sp
    except ImportError:  # no scipy: no sparse gradient either
        return False
    return sp.issparse(x)


def _where(gi, pi):
    return f"param_groups[{gi}]['params'][{pi}]"


class _Prepared:
    """One parameter's checked and coalesced gradient, ready for the kernel."""

    __slots__ = ("param", "lin", "seg", "vals")

    def __init__(self, param, lin, seg, vals):
        self.param = param
        self.lin = lin      # unique flat indices, ascending (int64)
        self.seg = seg      # entry u sums vals[seg[u]:seg[u+1]]; len(lin) + 1 (int64)
        self.vals = vals    # stored values in summation order, param dtype


def _check_param(p, where):
    if not isinstance(p, np.ndarray):
        raise TypeError(f"{where} must be a nopt.Parameter, got {type(p).__name__}")
    if p.dtype not in _FLOATS:
        raise TypeError(f"{where} has dtype {p.dtype}; expected float32 or float64")
    if not (p.flags.c_contiguous and p.flags.aligned):
        raise ValueError(f"{where} (shape {p.shape}) is not an aligned C-contiguous array")
    if not p.flags.writeable:
        raise ValueError(f"{where} (shape {p.shape}) is read-only; expected a writeable array")


def _check_state(p, state, where):
    """A non-empty state must hold torch's keys, with arrays the kernel can write."""
    if len(state) == 0:
        return
    for key in ("step", "exp_avg", "exp_avg_sq"):
        if key not in state:
            raise KeyError(f"the state of {where} has no {key!r} entry")
    for key in ("exp_avg", "exp_avg_sq"):
        a = state[key]
        if not isinstance(a, np.ndarray) or a.shape != p.shape or a.dtype != p.dtype \
                or not (a.flags.c_contiguous and a.flags.aligned and a.flags.writeable):
            raise ValueError(
                f"the state {key!r} of {where} must be a writeable C-contiguous {p.dtype} "
                f"array of shape {p.shape}, got "
                + (f"{a.dtype} array of shape {a.shape}" if isinstance(a, np.ndarray)
                   else type(a).__name__))


def _coordinates(g, where):
    """Return (coords, data) of a scipy.sparse gradient, without converting COO/CSR."""
    fmt = g.format
    if fmt == "csr" and g.ndim == 2:
        indptr, indices, data = np.asarray(g.indptr), np.asarray(g.indices), np.asarray(g.data)
        n_rows = g.shape[0]
        if indptr.shape != (n_rows + 1,) or indices.ndim != 1 or data.shape != indices.shape:
            raise ValueError(f"the grad of {where} is a malformed CSR matrix (indptr, indices, data)")
        if indptr[0] != 0 or indptr[-1] != indices.shape[0] or np.any(np.diff(indptr) < 0):
            raise ValueError(f"the grad of {where} is a malformed CSR matrix (bad indptr)")
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(indptr))
        return (rows, indices), data
    if fmt != "coo":
        g = g.tocoo()
    coords = tuple(np.asarray(c) for c in g.coords)
    data = np.asarray(g.data)
    if len(coords) != len(g.shape) or any(c.ndim != 1 or c.shape != data.shape for c in coords) \
            or data.ndim != 1:
        raise ValueError(f"the grad of {where} is a malformed COO matrix (coords and data differ)")
    return coords, data


def _prepare(p, g, where):
    """Check one sparse gradient against its parameter and coalesce it."""
    if isinstance(g, np.ndarray):
        raise RuntimeError(
            "SparseAdam does not support dense gradients, please consider Adam instead "
            f"(the grad of {where} is a dense numpy.ndarray; expected a scipy.sparse "
            "COO or CSR matrix/array)"
        )
    if not _issparse(g):
        raise TypeError(
            f"the grad of {where} must be a scipy.sparse matrix or array of shape {p.shape}, "
            f"got {type(g).__name__}"
        )
    if tuple(g.shape) != p.shape:
        raise ValueError(f"the grad of {where} has shape {tuple(g.shape)}; expected {p.shape}, "
                         "the parameter's shape")
    if g.dtype.kind not in "biuf" or not np.can_cast(g.dtype, p.dtype, "same_kind"):
        raise TypeError(f"the grad of {where} has dtype {g.dtype}; expected a real dtype "
                        f"castable to {p.dtype}, the parameter's dtype")
    coords, data = _coordinates(g, where)
    for axis, (c, n) in enumerate(zip(coords, p.shape)):
        if c.dtype.kind not in "iu":
            raise TypeError(f"the grad of {where} has {c.dtype} indices; expected integers")
        if c.size and (c.min() < 0 or c.max() >= n):
            raise ValueError(f"the grad of {where} has an index out of range [0, {n}) "
                             f"along axis {axis}")
    nnz = data.shape[0]
    vals = np.ascontiguousarray(data, dtype=p.dtype)
    if nnz == 0:
        return _Prepared(p, np.empty(0, np.int64), np.zeros(1, np.int64), vals)
    lin = np.ravel_multi_index(tuple(c.astype(np.intp, copy=False) for c in coords), p.shape)
    lin = lin.astype(np.int64, copy=False)
    if nnz == 1 or np.all(lin[1:] > lin[:-1]):
        # already canonical (sorted, no duplicates): nothing to sum
        return _Prepared(p, lin, np.arange(nnz + 1, dtype=np.int64), vals)
    # A stable sort keeps duplicates in input order, so their sum is reproducible.
    order = np.argsort(lin, kind="stable")
    lin = lin[order]
    first = np.empty(nnz, dtype=bool)
    first[0] = True
    np.not_equal(lin[1:], lin[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    seg = np.empty(starts.size + 1, dtype=np.int64)
    seg[:-1] = starts
    seg[-1] = nnz
    return _Prepared(p, lin[starts], seg, np.ascontiguousarray(vals[order]))


class SparseAdam(Optimizer):
    r"""Adam for sparse gradients, as ``torch.optim.SparseAdam``.

    Only the entries a gradient stores are touched: their moments and
    parameter values are updated with Adam's rule, every other element (and
    its moments) is left exactly as it was. Gradients are ``scipy.sparse``
    matrices or arrays (COO or CSR natively; other formats are converted with
    ``tocoo()``) of the parameter's shape. Duplicate entries are summed, as
    torch coalesces; every stored entry counts, even an explicit zero.

    For each stored entry :math:`i` of the (coalesced) gradient :math:`g`:

    .. math::
        \begin{aligned}
        g_i &\leftarrow \pm g_i \\
        m_i &\leftarrow m_i + (1-\beta_1)(g_i - m_i) \\
        v_i &\leftarrow v_i + (1-\beta_2)(g_i^2 - v_i) \\
        \theta_i &\leftarrow \theta_i - \gamma\,\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,
            \frac{m_i}{\sqrt{v_i} + \epsilon}
        \end{aligned}

    where the sign is ``-`` when ``maximize`` and :math:`t` is the
    parameter's step count (which also advances for an empty gradient).

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1e-3
        Learning rate :math:`\gamma` (> 0).
    betas : tuple of float, default (0.9, 0.999)
        :math:`(\beta_1, \beta_2)`, each in [0, 1).
    eps : float, default 1e-8
        Term added to the denominator (> 0).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Raises
    ------
    RuntimeError
        From ``step`` when a gradient is a dense ndarray (use
        :class:`nopt.Adam`).

    Notes
    -----
    State per parameter, as torch: ``step`` (a Python int), ``exp_avg`` and
    ``exp_avg_sq`` (dense arrays of the parameter's shape). A step checks
    every gradient of every group before it changes anything.

    References
    ----------
    .. [1] Kingma and Ba, "Adam: A Method for Stochastic Optimization",
       ICLR 2015. https://arxiv.org/abs/1412.6980
    """

    _elementwise_state = ("exp_avg", "exp_avg_sq")
    _required_state = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False):
        if not 0.0 < lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 < eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        defaults = dict(lr=lr, betas=betas, eps=eps, maximize=maximize)
        super().__init__(params, defaults)

    def zero_grad(self, set_to_none=True):
        """Reset the gradients; with ``set_to_none=False`` a sparse gradient
        becomes an empty one of its format (as torch's ``zero_()`` on a sparse
        tensor), a dense one is filled with zeros."""
        if set_to_none:
            return super().zero_grad(set_to_none=True)
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if _issparse(g):
                    empty = type(g)(g.shape, dtype=g.dtype)
                    try:
                        p.grad = empty
                    except TypeError:  # Parameter's setter takes ndarrays only (for now)
                        p._grad = empty
                else:
                    g.fill(0)

    def _load_state_value(self, param_id, param, key, value):
        value = super()._load_state_value(param_id, param, key, value)
        if key == "step" and isinstance(value, float) and value.is_integer():
            return int(value)  # torch's SparseAdam counts steps in a Python int
        return value

    def _prepare_all(self):
        """Check and coalesce every gradient of every group; change nothing."""
        prepared = []
        for gi, group in enumerate(self.param_groups):
            items = []
            for pi, p in enumerate(group["params"]):
                g = p.grad if isinstance(p, Parameter) else getattr(p, "grad", None)
                if g is None:
                    continue
                where = _where(gi, pi)
                _check_param(p, where)
                _check_state(p, self.state.get(p, {}), where)
                items.append(_prepare(p, g, where))
            prepared.append((group, items))
        return prepared

    def step(self, closure=None):
        """Perform one optimization step; return the closure's loss if given."""
        loss = None
        if closure is not None:
            loss = closure()
        for group, items in self._prepare_all():
            if not items:
                continue
            beta1, beta2 = group["betas"]
            # State first, then the step counts, in group order as torch. A
            # parameter listed twice is stepped twice, one call per repeat.
            fresh = [it.param for it in items if not self.state.get(it.param)]
            fresh = list({id(p): p for p in fresh}.values())
            for dtype in _FLOATS:
                same = [p for p in fresh if p.dtype == dtype]
                for p, m, v in zip(same, self._flat_zeros(same), self._flat_zeros(same)):
                    # (_fresh_state also works when ``state`` is a plain dict set by hand.)
                    self._fresh_state(p, []).update(step=0, exp_avg=m, exp_avg_sq=v)
            rounds, seen = [], {}
            for it in items:
                state = self.state[it.param]
                state["step"] += 1
                r = seen.get(id(it.param), 0)
                seen[id(it.param)] = r + 1
                if r == len(rounds):
                    rounds.append([])
                rounds[r].append((it, state["step"]))
            for entries in rounds:
                for dtype in _FLOATS:
                    batch = [(it, t) for it, t in entries if it.param.dtype == dtype and it.lin.size]
                    if batch:
                        self._run(batch, dtype == np.float64, group["lr"], beta1, beta2,
                                  group["eps"], group["maximize"])
        return loss

    def _run(self, batch, is_double, lr, beta1, beta2, eps, maximize):
        n = len(batch)
        ptrs = np.empty((n, 3), dtype=np.intp)
        neg_step = np.empty(n, dtype=np.float64)
        uoff = np.zeros(n + 1, dtype=np.int64)
        for k, (it, t) in enumerate(batch):
            state = self.state[it.param]
            ptrs[k] = (it.param.ctypes.data, state["exp_avg"].ctypes.data,
                       state["exp_avg_sq"].ctypes.data)
            bias_correction1 = 1 - beta1 ** t
            bias_correction2 = 1 - beta2 ** t
            neg_step[k] = -(lr * math.sqrt(bias_correction2) / bias_correction1)
            uoff[k + 1] = uoff[k] + it.lin.size
        lin = np.concatenate([it.lin for it, _ in batch])
        vals = np.concatenate([it.vals for it, _ in batch])
        voff = np.cumsum([0] + [it.vals.size for it, _ in batch])
        seg = np.concatenate([it.seg[:-1] + o for (it, _), o in zip(batch, voff)] + [voff[-1:]])
        _sparse_adam_kernel(ptrs, uoff, lin, seg.astype(np.int64, copy=False), vals, neg_step,
                            is_double, beta1, beta2, eps, maximize)
