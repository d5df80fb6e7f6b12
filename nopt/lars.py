"""LARS: SGD with momentum and a layer-wise trust ratio (You et al. 2017)."""
from . import _beyond
from ._kernels.helpers import lars as _lars_kernel
from .optimizer import Optimizer

__all__ = ["LARS"]

_KEYS = ("momentum_buffer",)


class LARS(Optimizer):
    r"""LARS, as the paper's Algorithm 1.

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) \\
        \gamma_t &\leftarrow \gamma\,\eta\,
            \frac{\|\theta_{t-1}\|}{\|g_t\| + \lambda\|\theta_{t-1}\| + \epsilon} \\
        b_t &\leftarrow \mu\, b_{t-1} + \gamma_t\,(g_t + \lambda\theta_{t-1}) \\
        \theta_t &\leftarrow \theta_{t-1} - b_t
            \quad(\text{Nesterov: } \theta_{t-1} - \gamma_t(g_t + \lambda\theta_{t-1}) - \mu b_t)
        \end{aligned}

    with the norms taken over each parameter array, and :math:`\gamma_t =
    \gamma` when either norm is 0. The momentum buffer holds the scaled
    step, as in the paper (and optax's ``trace``).

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1.0
        Global learning rate :math:`\gamma`.
    momentum : float, default 0.9
        :math:`\mu`, in [0, 1).
    weight_decay : float, default 0
        :math:`\lambda`.
    trust_coefficient : float, default 1e-3
        :math:`\eta`, the paper's trust coefficient.
    eps : float, default 0
        Added to the trust ratio's denominator.
    nesterov : bool, default False
        Nesterov momentum.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter: ``momentum_buffer``; no step count. Matches
    ``optax.lars`` with ``weight_decay=0``. With weight decay, optax divides
    by :math:`\|g_t + \lambda\theta\|` where the paper (and nopt) divide by
    :math:`\|g_t\| + \lambda\|\theta\|`; the tests compare with a NumPy
    transcription of the paper there. Norms are reduced per fixed chunk
    and summed in chunk order: the same bits for any thread count. A step
    is two passes over memory (the norms, then the update), in one kernel
    call; float32 squares are summed in float over blocks of 4096 elements
    and the blocks in double (a block out of float's safe range is summed
    again in double).

    References
    ----------
    .. [1] You, Gitman and Ginsburg, "Large Batch Training of Convolutional
       Networks", 2017, arXiv:1708.03888, Algorithm 1.
    """

    _elementwise_state = _KEYS
    _required_state = _KEYS
    _fresh = {}
    _copied = ()
    _init_state = _beyond.init_state

    def __init__(self, params, lr=1.0, momentum=0.9, weight_decay=0, trust_coefficient=1e-3,
                 eps=0.0, *, nesterov=False, maximize=False):
        _beyond.check_non_negative(lr=lr)
        _beyond.check_real("momentum", momentum)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        _beyond.check_non_negative(weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                                   eps=eps)
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, eps=eps, nesterov=nesterov,
                        maximize=maximize)
        super().__init__(params, defaults)

    def _plan(self, batch, calls, undo):
        group = batch.group
        (buffers,) = _beyond.state_arrays(self, batch, _KEYS, undo)
        sign = -1.0 if group["maximize"] else 1.0
        ptrs, chunks, rows, partials, scale, n_threads = _beyond.segmented_table(
            self, [batch.params, batch.grads, buffers], (batch.group_index, batch.is_double))
        calls.append((_lars_kernel, (ptrs, chunks, rows, partials, scale, batch.is_double,
                                     n_threads, sign,
                                     group["lr"], group["momentum"], group["weight_decay"],
                                     group["trust_coefficient"], group["eps"], group["nesterov"])))
