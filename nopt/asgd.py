"""ASGD: stochastic gradient descent with iterate averaging."""
import numpy as np

from ._kernels import _plan
from ._kernels.asgd import asgd as _asgd_kernel
from .optimizer import Optimizer

__all__ = ["ASGD"]


def _float32(x):
    """Round to float32, as torch stores ``eta`` and ``mu`` in float32 0-d tensors."""
    return float(np.float32(x))


class ASGD(Optimizer):
    r"""Averaged stochastic gradient descent, as ``torch.optim.ASGD``.

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda_w\,\theta_{t-1} \\
        \theta_t &\leftarrow (1 - \lambda\,\eta_{t-1})\,\theta_{t-1} - \eta_{t-1}\, g_t \\
        a_t &\leftarrow \begin{cases} a_{t-1} + \mu_{t-1} (\theta_t - a_{t-1}) & \mu_{t-1} \neq 1 \\
            \theta_t & \mu_{t-1} = 1 \end{cases} \\
        \eta_t &\leftarrow \gamma / (1 + \lambda\,\gamma\, t)^{\alpha}, \qquad
        \mu_t \leftarrow 1 / \max(1, t - t_0)
        \end{aligned}

    where the sign is ``-`` when ``maximize``, :math:`\eta_0 = \gamma`,
    :math:`\mu_0 = 1`, and :math:`a` (``ax``) is the averaged parameter.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1e-2
        Learning rate :math:`\gamma`.
    lambd : float, default 1e-4
        Decay term :math:`\lambda`.
    alpha : float, default 0.75
        Power :math:`\alpha` for the eta update.
    t0 : float, default 1e6
        Step :math:`t_0` at which averaging starts.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda_w`.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter (created at its first step): ``step``, ``eta``,
    ``mu`` (Python floats) and ``ax`` (the average, an array). torch keeps
    ``eta`` and ``mu`` in float32 0-d tensors; here they are floats rounded
    to float32 the same way, so both libraries use the same values.

    References
    ----------
    .. [1] Polyak and Juditsky, "Acceleration of Stochastic Approximation by
       Averaging", SIAM J. Control Optim. 30(4), 1992.
    """

    _elementwise_state = ("ax",)

    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0, *,
                 maximize=False):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
                        maximize=maximize)
        super().__init__(params, defaults)

    def step(self, closure=None):
        """Perform one optimization step; return the closure's loss if given."""
        loss = None
        if closure is not None:
            loss = closure()
        # Plan every call first (the next eta and mu included), so an error
        # in those formulas changes no parameter.
        calls = []
        for batch in self._batches():
            group = batch.group
            new = [p for p in batch.params if not self.state.get(p)]
            for p, ax in zip(new, self._flat_zeros(new)):
                self.state[p].update(step=0.0, eta=_float32(group["lr"]), mu=1.0, ax=ax)
            states = [self.state[p] for p in batch.params]
            keys = [(float(s["step"]), float(s["eta"]), float(s["mu"])) for s in states]
            # eta and mu are per parameter: one call per distinct (step, eta, mu).
            for (step, eta, mu), keep in self._split_by(batch.params, keys):
                calls.append((batch, [states[k] for k in keep], keep, eta, mu, step + 1,
                              self._next(group, step + 1)))
        for batch, states, keep, eta, mu, step, (next_eta, next_mu) in calls:
            self._run(batch, keep, states, eta, mu)
            for s in states:
                s.update(step=step, eta=next_eta, mu=next_mu)
        return loss

    @staticmethod
    def _next(group, step):
        """eta and mu after ``step`` steps: torch's Python-float formulas, stored in float32."""
        lr, lambd = group["lr"], group["lambd"]
        eta = lr / ((1 + lambd * lr * step) ** group["alpha"])
        if isinstance(eta, complex):
            raise ValueError(
                f"ASGD: 1 + lambd * lr * step = {1 + lambd * lr * step} is negative, so "
                f"eta = lr / (1 + lambd * lr * step) ** alpha is not real (lambd={lambd}, lr={lr})"
            )
        return _float32(eta), _float32(1 / max(1, step - group["t0"]))

    @staticmethod
    def _run(batch, keep, states, eta, mu):
        group = batch.group
        ptrs, chunks, n_threads = _plan.make_table([
            [batch.params[k] for k in keep],
            [batch.grads[k] for k in keep],
            [s["ax"] for s in states],
        ])
        _asgd_kernel(ptrs, chunks, batch.is_double, n_threads, 1 - group["lambd"] * eta, eta,
                     mu, group["weight_decay"], group["maximize"])
