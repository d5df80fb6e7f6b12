"""Stochastic gradient descent, with momentum and Nesterov momentum."""
from ._kernels.sgd import sgd as _sgd_kernel
from .optimizer import Optimizer, required

__all__ = ["SGD"]


class SGD(Optimizer):
    r"""Stochastic gradient descent (optionally with momentum), as ``torch.optim.SGD``.

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        b_t &\leftarrow \begin{cases} g_t & t = 1 \\ \mu\,b_{t-1} + (1-\tau)\,g_t & t > 1 \end{cases} \\
        g_t &\leftarrow g_t + \mu\,b_t \ \text{(Nesterov)} \quad\text{or}\quad g_t \leftarrow b_t \\
        \theta_t &\leftarrow \theta_{t-1} - \gamma\,g_t
        \end{aligned}

    where the sign is ``-`` when ``maximize``, and the momentum lines apply
    only when :math:`\mu \neq 0`.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1e-3
        Learning rate :math:`\gamma`.
    momentum : float, default 0
        Momentum factor :math:`\mu`.
    dampening : float, default 0
        Dampening :math:`\tau` for momentum.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda`.
    nesterov : bool, default False
        Use Nesterov momentum (needs momentum > 0 and zero dampening).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter: ``momentum_buffer`` (only when momentum is not 0).

    References
    ----------
    .. [1] Sutskever et al., "On the importance of initialization and momentum
       in deep learning", ICML 2013.
    """

    _elementwise_state = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False):
        if lr is not required and lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def step(self, closure=None):
        """Perform one optimization step; return the closure's loss if given."""
        return self._plan_then_run(closure)

    def _plan(self, batch, calls, undo):
        """Append the batch's kernel calls; new momentum buffers are noted in ``undo``."""
        if batch.group["momentum"] == 0:
            calls.append(self._call(batch, [batch.params, batch.grads], first=False))
            return
        bufs, missing = self._state_column(batch.params, "momentum_buffer")
        if not missing:
            calls.append(self._call(batch, [batch.params, batch.grads, bufs], first=False))
            return
        # Fresh buffers take the gradient itself (torch clones it), so
        # parameters with and without a buffer go in separate calls.
        for first in (False, True):
            keep = [k for k, b in enumerate(bufs) if (b is None) == first]
            if not keep:
                continue
            params = [batch.params[k] for k in keep]
            if first:
                for p, buf in zip(params, self._flat_zeros(params)):
                    self._fresh_state(p, undo)["momentum_buffer"] = buf
            part = [self.state[p]["momentum_buffer"] for p in params]
            calls.append(self._call(batch, [params, [batch.grads[k] for k in keep], part], first))

    def _call(self, batch, streams, first):
        group = batch.group
        ptrs, chunks, n_threads = self._table(streams, tag=(batch.group_index, first))
        return _sgd_kernel, (ptrs, chunks, batch.is_double, n_threads, group["lr"],
                             group["momentum"], group["dampening"], group["weight_decay"],
                             group["nesterov"], group["maximize"], first)
