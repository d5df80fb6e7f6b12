"""Adagrad: per-element step sizes from the running sum of squared gradients."""
import sys

import numpy as np

from ._kernels.adagrad import adagrad as _adagrad_kernel
from .optimizer import Optimizer

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    r"""Adagrad, as ``torch.optim.Adagrad`` (dense gradients only).

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        \tilde\gamma_t &\leftarrow \gamma / (1 + (t - 1)\,\eta) \\
        s_t &\leftarrow s_{t-1} + g_t^2, \qquad s_0 = \tau \\
        \theta_t &\leftarrow \theta_{t-1} - \tilde\gamma_t\, g_t / (\sqrt{s_t} + \epsilon)
        \end{aligned}

    where the sign is ``-`` when ``maximize``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1e-2
        Learning rate :math:`\gamma`.
    lr_decay : float, default 0
        Learning-rate decay :math:`\eta`.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda`.
    initial_accumulator_value : float, default 0
        Initial value :math:`\tau` of the sum of squares.
    eps : float, default 1e-10
        Added to the denominator for numerical stability.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter: ``step`` and ``sum``. As in torch, the state of the
    parameters given to the constructor is created right away (so
    ``state_dict()`` lists it before the first step); parameters of groups
    added later with :meth:`add_param_group` get theirs at their first step.
    Also as in torch, ``sum`` always starts at the constructor's
    ``initial_accumulator_value``: a per-group value is kept in the group but
    not used.

    Only dense (ndarray) gradients are supported: torch's sparse-gradient path
    has no counterpart here, and a ``scipy.sparse`` gradient raises
    ``TypeError``. For sparse gradients see :class:`nopt.SparseAdam`.

    References
    ----------
    .. [1] Duchi, Hazan and Singer, "Adaptive Subgradient Methods for Online
       Learning and Stochastic Optimization", JMLR 12, 2011.
    """

    _elementwise_state = ("sum",)
    _required_state = ("step", "sum")

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0,
                 initial_accumulator_value=0, eps=1e-10, *, maximize=False):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, maximize=maximize)
        super().__init__(params, defaults)
        # Eager state, as torch's constructor: only for the groups given here.
        for group in self.param_groups:
            self._init_state(group["params"])

    def _init_state(self, params):
        value = self.defaults["initial_accumulator_value"]
        for dtype in (np.float32, np.float64):
            same = [p for p in params if p.dtype == dtype]
            for p, acc in zip(same, self._flat_zeros(same)):
                acc.fill(value)
                state = self.state[p]
                state["step"] = 0.0
                state["sum"] = acc

    def _checked_batches(self):
        try:
            return self._batches()
        except TypeError:
            sparse = sys.modules.get("scipy.sparse")
            if sparse is not None:
                for gi, group in enumerate(self.param_groups):
                    for pi, p in enumerate(group["params"]):
                        g = getattr(p, "grad", None)
                        if sparse.issparse(g):
                            raise TypeError(
                                f"the grad of param_groups[{gi}]['params'][{pi}] is a scipy.sparse "
                                f"{type(g).__name__}; Adagrad supports dense gradients only "
                                "(pass grad.toarray(), or use nopt.SparseAdam)"
                            ) from None
            raise

    def step(self, closure=None):
        """Perform one optimization step; return the closure's loss if given."""
        loss = None
        if closure is not None:
            loss = closure()
        # Plan every call first (state, step counts, step sizes, work tables),
        # then run the kernels: an error while planning changes nothing.
        calls, counted = [], []
        try:
            for batch in self._checked_batches():
                group, params = batch.group, batch.params
                (sums,), missing, steps, common = self._state_step(params, _KEYS)
                if missing:
                    self._init_state([p for p in params if not self.state.get(p)])
                    (sums,), missing, steps, common = self._state_step(params, _KEYS)
                    if missing:
                        raise _missing_state(self, batch)
                counted.append((params, steps))
                flags = (group["eps"], group["weight_decay"], group["maximize"])
                if common is not None:
                    # The usual case: every parameter at the same count, one call.
                    table = self._table([params, batch.grads, sums], batch.group_index)
                    calls.append((table, batch.is_double, _clr(group, common)) + flags)
                    continue
                # The step size depends on the step count: one call per count.
                for step, keep in self._split_by(params, steps):
                    table = self._table([[params[k] for k in keep], [batch.grads[k] for k in keep],
                                         [sums[k] for k in keep]], (batch.group_index, keep[0]))
                    calls.append((table, batch.is_double, _clr(group, step)) + flags)
        except BaseException:
            for params, steps in counted:
                for p, step in zip(params, steps):
                    self.state[p]["step"] = step - 1.0
            raise
        for (ptrs, chunks, n_threads), is_double, clr, eps, weight_decay, maximize in calls:
            _adagrad_kernel(ptrs, chunks, is_double, n_threads, clr, eps, weight_decay, maximize)
        return loss


_KEYS = ("sum",)


def _clr(group, step):
    """torch's decayed step size for the ``step``-th step."""
    return group["lr"] / (1 + (step - 1) * group["lr_decay"])


def _missing_state(opt, batch):
    """The KeyError for a state dict edited by hand (torch raises one too)."""
    for k, p in enumerate(batch.params):
        state = opt.state.get(p, {})
        for key in ("step",) + _KEYS:
            if state.get(key) is None:
                return KeyError(f"Adagrad: the state of param_groups[{batch.group_index}]"
                                f"['params'][{batch.indices[k]}] has no {key!r}")
    return KeyError("Adagrad: incomplete state")
