"""AdaBelief: Adam with the variance of the gradient around its mean (Zhuang et al. 2020)."""
from . import _beyond
from ._kernels._spec import Rule
from .optimizer import Optimizer

__all__ = ["AdaBelief"]


def _scalars(group, step):
    beta1, beta2 = group["betas"]
    lr, wd = group["lr"], group["weight_decay"]
    if wd != 0 and group["decoupled_weight_decay"]:
        decay, l2 = 1.0 - lr * wd, 0.0
    else:
        decay, l2 = 1.0, wd
    return (-1.0 if group["maximize"] else 1.0, decay, l2, beta1, 1 - beta1, beta2, 1 - beta2,
            group["eps"], 1 / (1 - beta2 ** step) ** 0.5, -(lr / (1 - beta1 ** step)))


# The authors' order of operations (adabelief-pytorch 0.2, without rectification).
RULE = Rule(
    "adabelief",
    state=(("exp_avg", 0), ("exp_avg_var", 0)),
    args=("sign", "decay", "wd", "beta1", "omb1", "beta2", "omb2", "eps", "inv_bc2_sqrt",
          "neg_step"),
    flags=(("coupled", "wd != 0"),),
    body="""
cdef floating g = sign * grad[j]
cdef floating p = param[j] * decay
cdef floating m, s, r
if coupled:
    g = g + wd * p
m = exp_avg[j] * beta1 + omb1 * g
r = g - m
s = exp_avg_var[j] * beta2 + omb2 * r * r + eps
exp_avg[j] = m
exp_avg_var[j] = s
param[j] = p + neg_step * m / (fsqrt(s) * inv_bc2_sqrt + eps)
""",
    doc="""Apply one AdaBelief step to every array in the table (releases the GIL).

    ``decay`` is the decoupled factor ``1 - lr*wd`` (1 when coupled), ``wd``
    the coupled L2 term (0 when decoupled), ``inv_bc2_sqrt`` is
    ``1/sqrt(1 - beta2**t)`` and ``neg_step`` is ``-lr/(1 - beta1**t)``.""",
    scalars=_scalars,
)


class AdaBelief(Optimizer):
    r"""AdaBelief, as the paper's Algorithm 2 and the authors' ``adabelief-pytorch``.

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) \ (+\,\lambda\theta_{t-1}
             \text{ if coupled}) \qquad
        \theta_{t-1} \leftarrow (1-\gamma\lambda)\,\theta_{t-1} \text{ if decoupled} \\
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        s_t &\leftarrow \beta_2 s_{t-1} + (1-\beta_2) (g_t - m_t)^2 + \epsilon \\
        \theta_t &\leftarrow \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,
            \frac{m_t}{\sqrt{s_t}/\sqrt{1-\beta_2^t} + \epsilon}
        \end{aligned}

    The sign of the gradient is ``-`` when ``maximize``. :math:`\epsilon`
    enters twice, as in the paper: inside :math:`s_t` (stored) and in the
    denominator.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1e-3
        Learning rate :math:`\gamma`.
    betas : (float, float), default (0.9, 0.999)
        Decay rates :math:`\beta_1, \beta_2`, in [0, 1).
    eps : float, default 1e-16
        :math:`\epsilon` (the authors' default).
    weight_decay : float, default 0
        Weight decay :math:`\lambda`.
    decoupled_weight_decay : bool, default True
        Decay the parameters directly (AdamW-style, the authors' default
        ``weight_decouple=True``) instead of adding :math:`\lambda\theta` to
        the gradient.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter: ``step`` (a float), ``exp_avg`` and ``exp_avg_var``
    (the authors' names). Matches ``optax.adabelief(eps=eps, eps_root=eps)``
    (optax's defaults put ``eps_root`` inside :math:`s_t` and ``eps``
    outside; the paper uses one :math:`\epsilon` for both) and
    pytorch-optimizer's ``AdaBelief``. The authors' rectification
    (``rectify``) and AMSGrad options are not offered.

    References
    ----------
    .. [1] Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief
       in Observed Gradients", NeurIPS 2020, arXiv:2010.07468, Algorithm 2.
    """

    rule = RULE

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0, *,
                 decoupled_weight_decay=True, maximize=False):
        _beyond.check_non_negative(lr=lr, eps=eps)
        betas = _beyond.check_betas(betas, 2)
        _beyond.check_non_negative(weight_decay=weight_decay)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
        super().__init__(params, defaults)
