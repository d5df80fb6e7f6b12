"""RMSprop: gradients scaled by a running root mean square."""
from ._kernels.rmsprop import rmsprop as _rmsprop_kernel
from .optimizer import Optimizer

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    r"""RMSprop, as ``torch.optim.RMSprop``.

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        v_t &\leftarrow \alpha\,v_{t-1} + (1 - \alpha)\,g_t^2 \\
        \bar g_t &\leftarrow \alpha\,\bar g_{t-1} + (1 - \alpha)\,g_t
            \quad\text{(centered)} \\
        d_t &\leftarrow \sqrt{v_t - \bar g_t^2} + \epsilon \ \text{(centered)}
            \quad\text{or}\quad d_t \leftarrow \sqrt{v_t} + \epsilon \\
        b_t &\leftarrow \mu\,b_{t-1} + g_t / d_t, \quad
            \theta_t \leftarrow \theta_{t-1} - \gamma\,b_t \quad (\mu > 0) \\
        \theta_t &\leftarrow \theta_{t-1} - \gamma\,g_t / d_t \quad (\mu = 0)
        \end{aligned}

    where the sign is ``-`` when ``maximize``; :math:`v`, :math:`\bar g` and
    :math:`b` start at 0.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1e-2
        Learning rate :math:`\gamma`.
    alpha : float, default 0.99
        Smoothing constant :math:`\alpha`.
    eps : float, default 1e-8
        Added to the denominator for numerical stability.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda`.
    momentum : float, default 0
        Momentum factor :math:`\mu`.
    centered : bool, default False
        Normalise by an estimate of the gradient's variance instead of its
        second moment.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter (created at its first step): ``step``,
    ``square_avg``, ``momentum_buffer`` (when momentum > 0) and ``grad_avg``
    (when centered), as torch creates them. Where torch would fail with a
    ``KeyError`` (momentum or centered switched on after the first step),
    the missing buffer starts at zero instead.

    References
    ----------
    .. [1] Hinton, "Neural Networks for Machine Learning", lecture 6e, 2012.
    .. [2] Graves, "Generating Sequences With Recurrent Neural Networks",
       arXiv:1308.0850, 2013 (the centered variant).
    """

    _elementwise_state = ("square_avg", "momentum_buffer", "grad_avg")
    _required_state = ("step", "square_avg")
    _option_state = (("momentum", "momentum_buffer"), ("centered", "grad_avg"))  # checked at load

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, *, maximize=False):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def step(self, closure=None):
        """Perform one optimization step; return the closure's loss if given."""
        return self._plan_then_run(closure)

    def _plan(self, batch, calls, undo):
        """Count the batch's step and append its kernel call (nothing runs yet)."""
        group = batch.group
        use_momentum = group["momentum"] > 0
        centered = bool(group["centered"])
        keys = _KEYS[(use_momentum, centered)]
        cols, _, _ = self._count_step(batch, keys, undo, cache=(batch.group_index, batch.is_double))
        # The update does not use the step count: one call for the batch.
        ptrs, chunks, n_threads = self._table([batch.params, batch.grads] + cols,
                                              (batch.group_index, use_momentum, centered))
        buf_stream = 3 if use_momentum else 0
        avg_stream = len(keys) + 1 if centered else 0
        calls.append((_rmsprop_kernel, (ptrs, chunks, batch.is_double, n_threads, buf_stream,
                                        avg_stream, group["lr"], group["alpha"], group["eps"],
                                        group["weight_decay"], group["momentum"], centered,
                                        group["maximize"])))

    def _init_state(self, batch, keys, undo):
        """Fresh state for new parameters, and zero buffers for keys a state lacks."""
        params = batch.params
        for p in params:
            s = self.state.get(p)
            if not s or any(s.get(key) is None for key in keys):
                s = self._fresh_state(p, undo)
                if not s:
                    s["step"] = 0.0
        for key in keys:
            missing = [p for p in params if self.state[p].get(key) is None]
            for p, buf in zip(missing, self._flat_zeros(missing)):
                self.state[p][key] = buf


# State streams after (param, grad), by (momentum > 0, centered).
_KEYS = {
    (False, False): ("square_avg",),
    (True, False): ("square_avg", "momentum_buffer"),
    (False, True): ("square_avg", "grad_avg"),
    (True, True): ("square_avg", "momentum_buffer", "grad_avg"),
}

