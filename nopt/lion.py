"""Lion: the sign of an interpolated momentum (Chen et al. 2023)."""
from . import _beyond
from ._kernels.beyond import lion as _lion_kernel
from .optimizer import Optimizer

__all__ = ["Lion"]

_KEYS = ("exp_avg",)


class Lion(Optimizer):
    r"""Lion (EvoLved Sign Momentum), as the authors' ``lion-pytorch``.

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) \\
        c_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        \theta_t &\leftarrow (1-\gamma\lambda)\,\theta_{t-1} - \gamma\,\mathrm{sign}(c_t) \\
        m_t &\leftarrow \beta_2 m_{t-1} + (1-\beta_2) g_t
        \end{aligned}

    The sign of the gradient is ``-`` when ``maximize``; :math:`\mathrm{sign}(0) = 0`.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1e-4
        Learning rate :math:`\gamma` (typically 3-10x smaller than AdamW's).
    betas : (float, float), default (0.9, 0.99)
        :math:`\beta_1` (interpolation for the update) and :math:`\beta_2`
        (decay of the momentum), in [0, 1].
    weight_decay : float, default 0
        Decoupled weight decay :math:`\lambda` (multiplied by the learning
        rate, as lion-pytorch and optax do).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter: ``exp_avg`` (the momentum :math:`m`), created on the
    parameter's first step. There is no step count. Matches lion-pytorch
    and ``optax.lion`` (tests, 100 steps, float64 and float32).

    References
    ----------
    .. [1] Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023,
       arXiv:2302.06675, Program 1.
    """

    _elementwise_state = _KEYS
    _required_state = _KEYS
    _fresh = {}
    _copied = ()
    _init_state = _beyond.init_state

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *, maximize=False):
        _beyond.check_non_negative(lr=lr)
        betas = _beyond.check_betas(betas, 2, upper_inclusive=True)
        _beyond.check_non_negative(weight_decay=weight_decay)
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def step(self, closure=None):
        """Perform one optimization step; return the closure's loss if given."""
        return self._plan_then_run(closure)

    def _plan(self, batch, calls, undo):
        group = batch.group
        (exp_avgs,) = _beyond.state_arrays(self, batch, _KEYS, undo)
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        sign = -1.0 if group["maximize"] else 1.0
        ptrs, chunks, n_threads = self._table([batch.params, batch.grads, exp_avgs],
                                              batch.group_index)
        calls.append((_lion_kernel, (ptrs, chunks, batch.is_double, n_threads, sign,
                                     1.0 - lr * group["weight_decay"], -lr, beta1, beta2)))
