"""Adamax: Adam with an infinity-norm second moment."""
from ._kernels._spec import Rule
from .adam import _validate
from .optimizer import Optimizer

__all__ = ["Adamax"]


def _scalars(group, step):
    beta1, beta2 = group["betas"]
    sign = -1.0 if group["maximize"] else 1.0
    return (sign, group["weight_decay"], 1 - beta1, beta2, group["eps"],
            -(group["lr"] / (1 - beta1 ** step)))


RULE = Rule(
    "adamax",
    state=(("exp_avg", 0), ("exp_inf", 0)),
    args=("sign", "wd", "w", "beta2", "eps", "neg_clr"),
    derived=(("w_minus_1", "w_t - 1"),),
    flags=(("coupled", "wd != 0"), ("small", "fabs_(w_t) < 0.5")),
    body="""
cdef floating g = sign * grad[j]
cdef floating p = param[j]
cdef floating m = exp_avg[j]
cdef floating u = exp_inf[j]
if coupled:
    g = g + wd * p
if small:
    m = m + w * (g - m)
else:
    m = g + w_minus_1 * (g - m)
u = max_nan(u * beta2, fabs_(g) + eps)
exp_avg[j] = m
exp_inf[j] = u
param[j] = p + neg_clr * m / u
""",
    doc="""Apply one Adamax step to every array in the table (releases the GIL).

    ``sign`` is -1 to maximize; ``w`` the lerp weight ``1 - beta1``;
    ``neg_clr`` is ``-lr/(1 - beta1**t)``.""",
    scalars=_scalars,
)


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

    rule = RULE

    # foreach: torch's, at torch's position (checked and dropped by the base class).
    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 foreach=None, *, maximize=False):
        betas = _validate(lr, betas, eps, weight_decay)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)
