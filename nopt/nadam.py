"""NAdam: Adam with Nesterov momentum and a momentum-decay schedule."""
import struct

from ._kernels._spec import Rule
from .adam import _validate, moment_args
from .optimizer import Optimizer

__all__ = ["NAdam"]

_F32 = struct.Struct("f")


def _round_f32(x):
    """``x`` rounded to float32 (to nearest), as a Python float."""
    return _F32.unpack(_F32.pack(x))[0]


def _scalars(group, step, mu_product):
    beta1, beta2 = group["betas"]
    lr, psi = group["lr"], group["momentum_decay"]
    mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * psi)))
    mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * psi)))
    # float32 product of float32 operands, as torch's `mu_product *= mu`
    # (the double product of two floats is exact: one rounding, as float32's).
    mu_product = _round_f32(_round_f32(mu_product) * _round_f32(mu))
    mu_product_next = mu_product * mu_next
    c_grad = -lr * (1.0 - mu) / (1.0 - mu_product)
    c_avg = (-lr * mu_next) / (1.0 - mu_product_next)
    args = moment_args(group) + (1 / (1 - beta2 ** step), group["eps"], c_grad, c_avg)
    return args, (mu_product,)


RULE = Rule(
    "nadam",
    state=(("exp_avg", 0), ("exp_avg_sq", 0)),
    scalar_state=("mu_product",),
    start=lambda group: (1.0,),
    args=("sign", "decay", "wd", "w", "beta2", "one_minus_beta2", "inv_bc2", "eps", "c_grad",
          "c_avg"),
    derived=(("w_minus_1", "w_t - 1"),),
    flags=(("coupled", "wd != 0"), ("small", "fabs_(w_t) < 0.5")),
    pieces=("adam_moments",),
    body="""
cdef floating d = fsqrt(v * inv_bc2) + eps
p = p + c_grad * g / d
param[j] = p + c_avg * m / d
""",
    doc="""Apply one NAdam step to every array in the table (releases the GIL).

    ``sign`` is -1 to maximize; ``decay`` the decoupled factor ``1 - lr*wd``
    (1 when coupled); ``wd`` the coupled L2 term (0 when decoupled); ``w``
    the lerp weight ``1 - beta1``; ``inv_bc2`` is ``1/(1 - beta2**t)``;
    ``c_grad`` and ``c_avg`` the (negative) step coefficients of the
    gradient and of the first moment.""",
    scalars=_scalars,
)


class NAdam(Optimizer):
    r"""NAdam, as ``torch.optim.NAdam`` (single-tensor path).

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) \ (+\,\lambda\theta_{t-1}
             \text{ if coupled}) \qquad
        \theta_{t-1} \leftarrow (1-\gamma\lambda)\,\theta_{t-1} \text{ if decoupled} \\
        \mu_t &= \beta_1\big(1 - \tfrac12\,0.96^{t\psi}\big) \qquad
        \mu_{t+1} = \beta_1\big(1 - \tfrac12\,0.96^{(t+1)\psi}\big) \\
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t \qquad
        v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        d_t &= \sqrt{v_t/(1-\beta_2^t)} + \epsilon \\
        \theta_t &\leftarrow \theta_{t-1}
            - \frac{\gamma(1-\mu_t)}{1-\prod_{i=1}^{t}\mu_i}\,\frac{g_t}{d_t}
            - \frac{\gamma\mu_{t+1}}{1-\prod_{i=1}^{t+1}\mu_i}\,\frac{m_t}{d_t}
        \end{aligned}

    The sign of the gradient is ``-`` when ``maximize``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 2e-3
        Learning rate :math:`\gamma`.
    betas : (float, float), default (0.9, 0.999)
        Decay rates :math:`\beta_1, \beta_2` of the moment estimates, in [0, 1).
    eps : float, default 1e-8
        Added to the denominator for numerical stability.
    weight_decay : float, default 0
        Weight decay :math:`\lambda`.
    momentum_decay : float, default 4e-3
        Momentum decay :math:`\psi` of the schedule :math:`\mu_t`.
    decoupled_weight_decay : bool, default False
        Decay the parameters directly (NAdamW) instead of adding
        :math:`\lambda\theta` to the gradient.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter: ``step`` and ``mu_product`` (Python floats),
    ``exp_avg`` and ``exp_avg_sq``; created on the parameter's first step.
    torch keeps ``mu_product`` in a float32 tensor (its default scalar
    dtype), so each update of the product is rounded to float32 here too:
    that is what makes float64 results agree with torch's to rounding.

    References
    ----------
    .. [1] Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop.
    .. [2] Loshchilov and Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """

    rule = RULE

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, maximize=False):
        betas = _validate(lr, betas, eps, weight_decay, momentum_decay=momentum_decay)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
        super().__init__(params, defaults)
