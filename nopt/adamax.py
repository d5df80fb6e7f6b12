"""Adamax: Adam with an infinity-norm second moment."""
from ._kernels.adamax import adamax as _adamax_kernel
from .adam import _init_state, _split, _validate
from .optimizer import Optimizer

__all__ = ["Adamax"]

_KEYS = ("exp_avg", "exp_inf")


class Adamax(Optimizer):
    r"""Adamax, as ``torch.optim.Adamax`` (single-tensor path).

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        u_t &\leftarrow \max(\beta_2 u_{t-1},\ |g_t| + \epsilon) \\
        \theta_t &\leftarrow \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,\frac{m_t}{u_t}
        \end{aligned}

    The sign of the gradient is ``-`` when ``maximize``; the maximum
    propagates NaN, as ``torch.maximum``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 2e-3
        Learning rate :math:`\gamma`.
    betas : (float, float), default (0.9, 0.999)
        Decay rates :math:`\beta_1, \beta_2` of the first moment and of the
        infinity norm, in [0, 1).
    eps : float, default 1e-8
        Added to :math:`|g_t|` for numerical stability.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda` (added to the gradient).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter: ``step`` (a float), ``exp_avg`` and ``exp_inf``;
    created on the parameter's first step. torch's positional ``foreach``
    argument (after ``weight_decay``) does not exist here.

    References
    ----------
    .. [1] Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, section 7.
    """

    _elementwise_state = _KEYS
    _required_state = ("step", "exp_avg", "exp_inf")
    _fresh = {"step": 0.0}
    _init_state = _init_state

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, *,
                 maximize=False):
        betas = _validate(lr, betas, eps, weight_decay)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def step(self, closure=None):
        """Perform one optimization step; return the closure's loss if given."""
        return self._plan_then_run(closure)

    def _plan(self, batch, calls, undo):
        """Count the batch's step and append its kernel calls (nothing runs yet)."""
        group = batch.group
        tag = (batch.group_index, batch.is_double)
        columns, steps, common = self._count_step(batch, _KEYS, undo, cache=tag)
        if common is not None:
            parts = ((common, batch.params, batch.grads, columns),)
        else:
            parts = _split(batch, columns, steps)
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        wd = group["weight_decay"]
        eps = group["eps"]
        sign = -1.0 if group["maximize"] else 1.0
        for k, (step, params, grads, part) in enumerate(parts):
            neg_clr = -(lr / (1 - beta1 ** step))
            ptrs, chunks, n_threads = self._table([params, grads, *part], (batch.group_index, k))
            calls.append((_adamax_kernel, (ptrs, chunks, batch.is_double, n_threads, sign, wd,
                                           1 - beta1, beta2, eps, neg_clr)))
