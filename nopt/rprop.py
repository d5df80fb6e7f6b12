"""Rprop: sign-based updates with per-element adaptive step sizes."""
from ._kernels.rprop import rprop as _rprop_kernel
from .optimizer import Optimizer

__all__ = ["Rprop"]


class Rprop(Optimizer):
    r"""Rprop (resilient backpropagation), as ``torch.optim.Rprop``.

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) \\
        \eta_t &\leftarrow \begin{cases}
            \eta_{t-1} \cdot \eta_+ & g_t\,g_{t-1} > 0 \\
            \eta_{t-1} \cdot \eta_- & g_t\,g_{t-1} < 0 \\
            \eta_{t-1} & \text{otherwise} \end{cases}, \quad
            \eta_t \leftarrow \min(\max(\eta_t, \Gamma_{\min}), \Gamma_{\max}) \\
        g_t &\leftarrow 0 \quad \text{where } g_t\,g_{t-1} < 0 \\
        \theta_t &\leftarrow \theta_{t-1} - \eta_t \operatorname{sign}(g_t)
        \end{aligned}

    where the sign is ``-`` when ``maximize``, :math:`\eta_0 = \gamma` (the
    learning rate) and :math:`g_{t-1}` is the stored ``prev`` (0 at first).

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1e-2
        Initial step size :math:`\gamma` (used only when a parameter's state
        is created).
    etas : tuple of float, default (0.5, 1.2)
        Multiplicative decrease and increase factors
        :math:`(\eta_-, \eta_+)`, with :math:`0 < \eta_- < 1 < \eta_+`.
    step_sizes : tuple of float, default (1e-6, 50)
        Minimal and maximal step sizes :math:`(\Gamma_{\min}, \Gamma_{\max})`.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter (created at its first step): ``step``, ``prev`` and
    ``step_size``. After a sign change the element does not move and its
    ``prev`` is stored as 0, so the next step keeps its step size, as torch
    does. A NaN gradient element leaves its parameter and step size
    unchanged (torch.sign(NaN) is 0) and is stored in ``prev``.

    The kernel runs in IEEE mode (no flush-to-zero), as torch does: a
    subnormal gradient still gives a full step.

    References
    ----------
    .. [1] Riedmiller and Braun, "A Direct Adaptive Method for Faster
       Backpropagation Learning: The RPROP Algorithm", ICNN 1993.
    """

    _elementwise_state = ("prev", "step_size")
    _required_state = ("step", "prev", "step_size")

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *,
                 maximize=False):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"Invalid eta values: {etas[0]}, {etas[1]}")
        defaults = dict(lr=lr, etas=etas, step_sizes=step_sizes, maximize=maximize)
        super().__init__(params, defaults)

    def step(self, closure=None):
        """Perform one optimization step; return the closure's loss if given."""
        return self._plan_then_run(closure)

    def _plan(self, batch, calls, undo):
        """Count the batch's step and append its kernel call (nothing runs yet)."""
        cols, _, _ = self._count_step(batch, _KEYS, undo, cache=(batch.group_index, batch.is_double))
        # Fresh state needs no special case: prev = 0 keeps the step size.
        ptrs, chunks, n_threads = self._table([batch.params, batch.grads] + cols, batch.group_index)
        group = batch.group
        etaminus, etaplus = group["etas"]
        step_min, step_max = group["step_sizes"]
        calls.append((_rprop_kernel, (ptrs, chunks, batch.is_double, n_threads, etaminus, etaplus,
                                      step_min, step_max, group["maximize"])))

    def _init_state(self, batch, keys, undo):
        """State for the batch's parameters that have none: ``prev`` 0, ``step_size`` the lr."""
        new = [p for p in batch.params if not self.state.get(p)]
        for p, prev, size in zip(new, self._flat_zeros(new), self._flat_zeros(new)):
            size.fill(batch.group["lr"])
            self._fresh_state(p, undo).update(step=0.0, prev=prev, step_size=size)


_KEYS = ("prev", "step_size")

