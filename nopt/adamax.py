"""Adamax: Adam with an infinity-norm second moment."""
from ._kernels.adamax import adamax as _adamax_kernel
from .adam import _batch_states, _part_streams, _run, _validate, _zero_state
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

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, *,
                 maximize=False):
        betas = _validate(lr, betas, eps, weight_decay)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _new_state(self, group, params):
        return _zero_state(self, params, _KEYS, step=0.0)

    def step(self, closure=None):
        """Perform one optimization step; return the closure's loss if given."""
        loss = None
        if closure is not None:
            loss = closure()
        batches = self._batches()
        all_states = _batch_states(self, batches, ("step",) + _KEYS, self._new_state)
        planned = []
        for batch, states in zip(batches, all_states):
            group = batch.group
            beta1, beta2 = group["betas"]
            sign = -1.0 if group["maximize"] else 1.0
            steps = [float(s["step"]) for s in states]
            for old_step, part in self._split_by(batch.params, steps):
                step = old_step + 1
                clr = group["lr"] / (1 - beta1 ** step)
                args = (sign, group["weight_decay"], 1 - beta1, beta2, group["eps"], -clr)
                streams, part_states = _part_streams(batch, states, part, _KEYS)
                planned.append((streams, batch.is_double, args, part_states, {"step": step}))
        _run(_adamax_kernel, planned)
        return loss
