"""Lion: the sign of an interpolated momentum (Chen et al. 2023)."""
from . import _beyond
from ._kernels._spec import Rule
from .optimizer import Optimizer

__all__ = ["Lion"]


def _scalars(group, step):
    beta1, beta2 = group["betas"]
    lr = group["lr"]
    return (-1.0 if group["maximize"] else 1.0, 1.0 - lr * group["weight_decay"], -lr,
            beta1, 1 - beta1, beta2, 1 - beta2)


# lion-pytorch's order of operations; sign(0) = 0, as torch.sgn.
RULE = Rule(
    "lion",
    state=(("exp_avg", 0),),
    step=False,
    args=("sign", "decay", "neg_lr", "beta1", "omb1", "beta2", "omb2"),
    body="""
cdef floating g = sign * grad[j]
cdef floating m = exp_avg[j]
cdef floating c = m * beta1 + omb1 * g
param[j] = param[j] * decay + neg_lr * <floating> ((c > 0) - (c < 0))
exp_avg[j] = m * beta2 + omb2 * g
""",
    doc="""Apply one Lion step to every array in the table (releases the GIL).

    ``sign`` is -1 to maximize, ``decay`` is ``1 - lr*weight_decay``,
    ``neg_lr`` is ``-lr``, ``omb1``/``omb2`` are ``1 - beta1``/``1 - beta2``.""",
    scalars=_scalars,
)


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

    rule = RULE

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, *, maximize=False):
        _beyond.check_non_negative(lr=lr)
        betas = _beyond.check_betas(betas, 2, upper_inclusive=True)
        _beyond.check_non_negative(weight_decay=weight_decay)
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)
