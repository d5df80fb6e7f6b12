"""Adadelta: step sizes from running averages of squared gradients and updates."""
from ._kernels.adadelta import adadelta as _adadelta_kernel
from .optimizer import Optimizer

__all__ = ["Adadelta"]


class Adadelta(Optimizer):
    r"""Adadelta, as ``torch.optim.Adadelta``.

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        v_t &\leftarrow \rho\,v_{t-1} + (1 - \rho)\,g_t^2 \\
        \Delta x_t &\leftarrow \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t \\
        u_t &\leftarrow \rho\,u_{t-1} + (1 - \rho)\,\Delta x_t^2 \\
        \theta_t &\leftarrow \theta_{t-1} - \gamma\,\Delta x_t
        \end{aligned}

    where the sign is ``-`` when ``maximize``, :math:`v` is ``square_avg`` and
    :math:`u` is ``acc_delta`` (both start at 0).

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1.0
        Coefficient :math:`\gamma` that scales the update.
    rho : float, default 0.9
        Decay :math:`\rho` of the running averages, in [0, 1].
    eps : float, default 1e-6
        Added inside the square roots for numerical stability.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda`.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter (created at its first step): ``step``,
    ``square_avg`` and ``acc_delta``.

    References
    ----------
    .. [1] Zeiler, "ADADELTA: An Adaptive Learning Rate Method",
       arXiv:1212.5701, 2012.
    """

    _elementwise_state = ("square_avg", "acc_delta")
    _required_state = ("step", "square_avg", "acc_delta")

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, *, maximize=False):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def step(self, closure=None):
        """Perform one optimization step; return the closure's loss if given."""
        return self._plan_then_run(closure)

    def _plan(self, batch, calls, undo):
        """Count the batch's step and append its kernel call (nothing runs yet)."""
        cols, _, _ = self._count_step(batch, _KEYS, undo, cache=(batch.group_index, batch.is_double))
        # The update does not use the step count: one call for the batch.
        ptrs, chunks, n_threads = self._table([batch.params, batch.grads] + cols, batch.group_index)
        group = batch.group
        calls.append((_adadelta_kernel, (ptrs, chunks, batch.is_double, n_threads, group["lr"],
                                         group["rho"], group["eps"], group["weight_decay"],
                                         group["maximize"])))

    def _init_state(self, batch, keys, undo):
        """Zero state for the batch's parameters that have none."""
        new = [p for p in batch.params if not self.state.get(p)]
        for p, avg, acc in zip(new, self._flat_zeros(new), self._flat_zeros(new)):
            self._fresh_state(p, undo).update(step=0.0, square_avg=avg, acc_delta=acc)


_KEYS = ("square_avg", "acc_delta")

