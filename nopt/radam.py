"""RAdam: Adam with a rectified adaptive learning rate."""
from ._kernels._spec import Rule
from .adam import _validate, moment_args
from .optimizer import Optimizer

__all__ = ["RAdam"]


def _rectification(beta2, step):
    """(rho_t, r_t or None): the approximated SMA length and, when rho_t > 5, the rectifier."""
    bias_correction2 = 1 - beta2 ** step
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2 ** step) / bias_correction2
    if not rho_t > 5.0:
        return rho_t, None
    rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
    return rho_t, rect


def _scalars(group, step):
    beta1, beta2 = group["betas"]
    lr = group["lr"]
    bias_correction1 = 1 - beta1 ** step
    _, rect = _rectification(beta2, step)
    if rect is None:
        coef = -(lr / bias_correction1)
    else:
        coef = -(lr * rect * (1 - beta2 ** step) ** 0.5 / bias_correction1)
    return moment_args(group) + (group["eps"], coef, 0.0 if rect is None else 1.0)


RULE = Rule(
    "radam",
    state=(("exp_avg", 0), ("exp_avg_sq", 0)),
    args=("sign", "decay", "wd", "w", "beta2", "one_minus_beta2", "eps", "coef", "rectify"),
    derived=(("w_minus_1", "w_t - 1"),),
    flags=(("coupled", "wd != 0"), ("small", "fabs_(w_t) < 0.5"), ("rectified", "rectify != 0")),
    pieces=("adam_moments",),
    body="""
if rectified:
    param[j] = p + coef * m / (fsqrt(v) + eps)
else:
    param[j] = p + coef * m
""",
    doc="""Apply one RAdam step to every array in the table (releases the GIL).

    ``sign`` is -1 to maximize; ``decay`` the decoupled factor ``1 - lr*wd``
    (1 when coupled); ``wd`` the coupled L2 term (0 when decoupled); ``w``
    the lerp weight ``1 - beta1``; ``coef`` the (negative) step
    coefficient, with the adaptive denominator only when ``rectify`` is 1.""",
    scalars=_scalars,
)


class RAdam(Optimizer):
    r"""RAdam, as ``torch.optim.RAdam`` (single-tensor path).

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) \ (+\,\lambda\theta_{t-1}
             \text{ if coupled}) \qquad
        \theta_{t-1} \leftarrow (1-\gamma\lambda)\,\theta_{t-1} \text{ if decoupled} \\
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t \qquad
        v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        \rho_\infty &= \frac{2}{1-\beta_2} - 1 \qquad
        \rho_t = \rho_\infty - \frac{2t\beta_2^t}{1-\beta_2^t} \\
        \theta_t &\leftarrow \theta_{t-1} - \frac{\gamma\,m_t}{1-\beta_1^t} \cdot
            \begin{cases}
            r_t\,\dfrac{\sqrt{1-\beta_2^t}}{\sqrt{v_t}+\epsilon} & \rho_t > 5 \\
            1 & \text{otherwise}
            \end{cases} \\
        r_t &= \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}
        \end{aligned}

    The sign of the gradient is ``-`` when ``maximize``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1e-3
        Learning rate :math:`\gamma`.
    betas : (float, float), default (0.9, 0.999)
        Decay rates :math:`\beta_1, \beta_2` of the moment estimates, in [0, 1).
    eps : float, default 1e-8
        Added to the denominator for numerical stability.
    weight_decay : float, default 0
        Weight decay :math:`\lambda`.
    decoupled_weight_decay : bool, default False
        Decay the parameters directly (as AdamW) instead of adding
        :math:`\lambda\theta` to the gradient.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter: ``step`` (a float), ``exp_avg`` and ``exp_avg_sq``;
    created on the parameter's first step. With the default
    :math:`\beta_2 = 0.999` the first 5 steps are not rectified (plain
    bias-corrected momentum SGD); the switch is exactly torch's ``rho_t > 5``.

    References
    ----------
    .. [1] Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020.
    """

    rule = RULE

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, maximize=False):
        betas = _validate(lr, betas, eps, weight_decay)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
        super().__init__(params, defaults)
