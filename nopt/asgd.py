"""ASGD: stochastic gradient descent with iterate averaging."""
from ._kernels.asgd import asgd as _asgd_kernel
# Round to float32 (as a Python float), as torch stores ``eta`` and ``mu`` in
# float32 0-d tensors: float(numpy.float32(x)), in C.
from ._kernels.asgd import float32 as _float32
from ._kernels.asgd import set_state as _set_state
from .optimizer import Optimizer

__all__ = ["ASGD"]


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
    _required_state = ("step", "eta", "mu", "ax")

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
        return self._plan_then_run(closure)

    def _plan(self, batch, calls, undo):
        """Count the batch's step and append its calls (nothing runs yet).

        Each kernel call is followed by a call storing its parameters' next
        ``eta`` and ``mu``: planning computes them (an eta that is not real
        raises there) but leaves the state as it was.
        """
        group, params = batch.group, batch.params
        (axs, etas, mus), steps, common = self._count_step(batch, _KEYS, undo)
        lambd, wd, maximize = group["lambd"], group["weight_decay"], group["maximize"]
        n = len(params)
        eta, mu = etas[0], mus[0]
        if common is not None and etas.count(eta) == n and mus.count(mu) == n:
            # The usual case: one step count, eta and mu, one call.
            parts = ((common, eta, mu, params, batch.grads, axs, batch.group_index),)
        else:
            # eta and mu are per parameter: one call per distinct (step, eta, mu).
            grads = batch.grads
            parts = [(*key, [params[k] for k in keep], [grads[k] for k in keep],
                      [axs[k] for k in keep], (batch.group_index, keep[0]))
                     for key, keep in self._split_by(params, list(zip(steps, etas, mus)))]
        for step, eta, mu, part, grads, ax, tag in parts:
            next_eta, next_mu = self._next(group, step)
            ptrs, chunks, n_threads = self._table([part, grads, ax], tag)
            calls.append((_asgd_kernel, (ptrs, chunks, batch.is_double, n_threads, 1 - lambd * eta,
                                         eta, mu, wd, maximize)))
            calls.append((_set_state, (self.state, part, next_eta, next_mu)))

    def _init_state(self, batch, keys, undo):
        """State for the batch's parameters that have none: ``eta`` the lr, ``mu`` 1, ``ax`` 0."""
        new = [p for p in batch.params if not self.state.get(p)]
        for p, ax in zip(new, self._flat_zeros(new)):
            self._fresh_state(p, undo).update(step=0.0, eta=_float32(batch.group["lr"]), mu=1.0,
                                              ax=ax)

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


_KEYS = ("ax", "eta", "mu")

