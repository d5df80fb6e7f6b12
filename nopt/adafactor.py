"""Adafactor: a factored second moment, relative step sizes and update clipping."""
import numpy as np

from ._kernels import _plan
from ._kernels.helpers import adafactor as _adafactor_kernel
from ._kernels.helpers import make_table as _make_table
from .optimizer import Optimizer

__all__ = ["Adafactor"]


class Adafactor(Optimizer):
    r"""Adafactor, as ``torch.optim.Adafactor``.

    .. math::
        \begin{aligned}
        G_t &\leftarrow \pm\nabla f(\theta_{t-1}), \qquad
            \hat\beta_{2,t} \leftarrow 1 - t^{\tau}, \qquad
            \rho_t \leftarrow \min(\gamma, 1/\sqrt{t}) \\
        \alpha_t &\leftarrow \max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))\,\rho_t, \qquad
            \theta_t \leftarrow (1 - \gamma\lambda)\,\theta_{t-1} \\
        \text{if } \dim G_t \ge 2:&\quad
            R_t \leftarrow \hat\beta_{2,t} R_{t-1} + (1 - \hat\beta_{2,t})\,\mathrm{mean}_{\text{cols}}(G_t^2),
            \quad C_t \leftarrow \hat\beta_{2,t} C_{t-1} + (1 - \hat\beta_{2,t})\,\mathrm{mean}_{\text{rows}}(G_t^2) \\
        &\quad \hat V_t \leftarrow \frac{R_t C_t}{\max(\mathrm{mean}(R_t), \epsilon_1)} \\
        \text{else}:&\quad \hat V_t \leftarrow \hat\beta_{2,t}\hat V_{t-1} + (1 - \hat\beta_{2,t})\,G_t^2 \\
        U_t &\leftarrow \frac{G_t}{\max(\sqrt{\hat V_t}, \epsilon_1)}, \qquad
            \theta_t \leftarrow \theta_t - \frac{\alpha_t}{\max(1, \mathrm{RMS}(U_t)/d)}\,U_t
        \end{aligned}

    where :math:`\tau` is ``beta2_decay``, the sign is ``-`` when
    ``maximize``, and for a parameter of two or more dimensions the row and
    column statistics are taken over its last two dimensions (one pair per
    leading index). As in torch, the moving averages are ``lerp``\ s, the
    means of squares are squared norms divided by the count, and
    :math:`\epsilon_1` defaults to the machine epsilon of the first
    parameter with a gradient in the group.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1e-2
        Upper bound :math:`\gamma` of the relative step size, and the scale of
        the weight decay.
    beta2_decay : float, default -0.8
        :math:`\tau \le 0`: the second moment's averaging weight is
        :math:`t^{\tau}`.
    eps : (float or None, float), default (None, 1e-3)
        :math:`\epsilon_1` (floor of the root second moment; None means the
        dtype's machine epsilon) and :math:`\epsilon_2` (floor of the
        parameter RMS in the step size).
    d : float, default 1.0
        Clipping threshold :math:`d \ge 1` on the update's RMS.
    weight_decay : float, default 0.0
        Decoupled weight decay :math:`\lambda`, applied as
        :math:`\theta \leftarrow (1 - \gamma\lambda)\theta`.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter (created at its first step): ``step``, and
    ``row_var`` (shape ``(..., m, 1)``) and ``col_var`` (shape
    ``(..., 1, n)``) for a parameter of shape ``(..., m, n)``, or
    ``variance`` (the parameter's shape) for a vector or a scalar: torch's
    keys and shapes.

    Each array takes three passes (reductions, update norm, update), in one
    kernel call per group and dtype; the sums are taken over fixed tiles in a
    fixed order, so any thread count gives the same bits. torch sums in
    another order, so the results agree with torch's to rounding (see the
    tests), not bit for bit. A parameter with no elements is left as it is
    (torch divides by its size and fails).

    References
    ----------
    .. [1] Shazeer and Stern, "Adafactor: Adaptive Learning Rates with
       Sublinear Memory Cost", ICML 2018, arXiv:1804.04235.
    """

    _elementwise_state = ("variance",)
    _required_state = ("step",)

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0,
                 weight_decay=0.0, *, maximize=False):
        if not 0.0 <= lr:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not 0.0 >= beta2_decay:
            raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
        if not isinstance(eps, (tuple, list)) or len(eps) != 2:
            raise ValueError(f"eps should be a pair (epsilon1 or None, epsilon2) but is: {eps!r}")
        if eps[0] is not None and not 0.0 <= eps[0]:
            raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
        if not 0.0 <= eps[1]:
            raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
        if not 1.0 <= d:
            raise ValueError(f"Clipping threshold d should be >= 1 but is: {d}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"weight_decay should be >= 0 but is: {weight_decay}")
        defaults = dict(lr=lr, beta2_decay=beta2_decay, eps=tuple(eps), d=d,
                        weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _plan(self, batch, calls, undo):
        """Create missing state, count the step and append the batch's kernel call."""
        group = batch.group
        params, grads = batch.params, batch.grads
        eps1, eps2 = group["eps"]
        if eps1 is None:
            # torch sets eps1 from the first parameter it steps in the group
            # and keeps it for the rest of the group.
            first = next(p for p in group["params"] if p.grad is not None)
            eps1 = float(np.finfo(first.dtype).eps)
        for name, value in (("eps[1]", eps2), ("eps[0]", eps1)):
            if not isinstance(value, (int, float, np.floating)) or isinstance(value, bool):
                raise TypeError(f"param_groups[{batch.group_index}]['{name}'] must be a number, "
                                f"got {value!r}")
        state = self.state
        new = [p for p in params if not state.get(p)]
        for p in new:
            entry = self._fresh_state(p, undo)
            entry["step"] = 0.0
            if p.ndim >= 2:
                entry["row_var"] = np.zeros(p.shape[:-1] + (1,), p.dtype)
                entry["col_var"] = np.zeros(p.shape[:-2] + (1,) + p.shape[-1:], p.dtype)
            else:
                entry["variance"] = np.zeros(p.shape, p.dtype)
        firsts, seconds = [], []
        for k, p in enumerate(params):
            entry = state[p]
            step = entry.get("step")
            if not isinstance(step, (int, float)) or isinstance(step, bool):
                raise ValueError(f"Adafactor: the state of {self._where(batch, k)} has no 'step' "
                                 "(a number)")
            if p.ndim >= 2:
                firsts.append(_checked(entry, "row_var", p.shape[:-1] + (1,), p, self, batch, k))
                seconds.append(_checked(entry, "col_var", p.shape[:-2] + (1,) + p.shape[-1:], p,
                                        self, batch, k))
            else:
                firsts.append(_checked(entry, "variance", p.shape, p, self, batch, k))
                seconds.append(None)
        ptrs, dims, work = _make_table(params, grads, firsts, seconds)
        tables = self._step_tables
        if tables is not None:
            # Keep the arrays alive until the kernel ran, and have the base
            # class check that none overlaps another (no table cache here).
            tables.append([params, grads, firsts, seconds])
            tables[0] = True
        olds = [state[p]["step"] for p in params]
        steps, _ = self._increment_state(params)
        undo.append((params, olds, "step"))
        beta2_decay, lr = group["beta2_decay"], group["lr"]
        weights = np.array([t ** beta2_decay for t in steps], dtype=np.float64)
        rhos = np.array([min(lr, 1 / (t ** 0.5)) for t in steps], dtype=np.float64)
        total = sum(p.size for p in params)
        n_threads = _plan.get_max_threads() if total >= 65536 and not _plan.in_parallel() else 1
        calls.append((_adafactor_kernel, (
            ptrs, dims, weights, rhos, work, batch.is_double, n_threads,
            float(lr), float(group["weight_decay"]), float(eps1), float(eps2),
            float(group["d"]), bool(group["maximize"]))))

    def _flatten_state(self, groups, state):
        """Refuse loaded state lacking the arrays its parameter's rank needs (before any change)."""
        for group in groups:
            for p in group["params"]:
                entry = state.get(p)
                if not entry:
                    continue
                keys = ("row_var", "col_var") if p.ndim >= 2 else ("variance",)
                for key in keys:
                    if not isinstance(entry.get(key), np.ndarray):
                        raise ValueError(f"loaded Adafactor state of a parameter of shape {p.shape} "
                                         f"lacks the {key!r} array")
        super()._flatten_state(groups, state)

    @staticmethod
    def _where(batch, k):
        return f"param_groups[{batch.group_index}]['params'][{batch.indices[k]}]"

    def _load_state_value(self, param_id, param, key, value):
        """Check a loaded ``row_var``/``col_var`` against its parameter's shape too."""
        loaded = super()._load_state_value(param_id, param, key, value)
        expected = None
        if key == "row_var" and param.ndim >= 2:
            expected = param.shape[:-1] + (1,)
        elif key == "col_var" and param.ndim >= 2:
            expected = param.shape[:-2] + (1,) + param.shape[-1:]
        if expected is not None and (not isinstance(loaded, np.ndarray) or loaded.shape != expected):
            shape = getattr(loaded, "shape", type(loaded).__name__)
            raise ValueError(f"loaded state[{param_id}]['{key}'] has shape {shape}; expected {expected}")
        return loaded


def _checked(entry, key, shape, param, optimizer, batch, k):
    """The state array ``entry[key]``, after checking it can be written as the kernel will."""
    where = optimizer._where(batch, k)
    value = entry.get(key)
    if type(value) is not np.ndarray:
        if not isinstance(value, np.ndarray):
            raise ValueError(f"Adafactor: the state of {where} has no {key!r} (an array)")
        value = value.view(np.ndarray)
    if value.shape != shape or value.dtype != param.dtype:
        raise ValueError(f"Adafactor: state array {key!r} of {where} has shape {value.shape} "
                         f"and dtype {value.dtype}; expected {shape} and {param.dtype}")
    if not (value.flags.c_contiguous and value.flags.writeable):
        raise ValueError(f"Adafactor: state array {key!r} of {where} must be C-contiguous "
                         "and writeable")
    if value.size and np.may_share_memory(value, param.view(np.ndarray)):
        raise ValueError(f"Adafactor: state array {key!r} of {where} shares memory with "
                         "the parameter")
    return value
