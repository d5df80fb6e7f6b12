"""RMSprop: gradients scaled by a running root mean square."""
from ._kernels._spec import Rule
from .optimizer import Optimizer

__all__ = ["RMSprop"]


def _scalars(group, step):
    return (-group["lr"], group["alpha"], 1.0 - group["alpha"], group["eps"], group["momentum"],
            group["weight_decay"])


def _switches(group):
    # (maximize, use_momentum, centered): the flags' order in RULE.
    return bool(group["maximize"]), group["momentum"] > 0, bool(group["centered"])


# Torch's single-tensor order of operations, and its fused multiply-adds
# (torch's CPU kernels use FMA for add(alpha=), addcmul and lerp; fma_ rounds
# once in float32, see _compat.h):
#   g          = fma(weight_decay, param, g)
#   square_avg = fma((1 - alpha) * g, g, square_avg * alpha)
#   grad_avg   = lerp(grad_avg, g, 1 - alpha)   (centered; torch's two-sided lerp:
#                fma(w, g - m, m) for |w| < 0.5, else fma(-(1 - w), g - m, g))
#   avg        = sqrt(fma(-grad_avg, grad_avg, square_avg)) + eps   (or sqrt(square_avg) + eps)
#   buf        = buf * momentum + g / avg;  param = fma(-lr, buf, param)   (momentum > 0)
#   param      = param + (-lr * g) / avg                                   (otherwise)
# The centered variance is a difference of nearly equal terms, so one extra
# rounding there changes float32 results visibly after a few dozen steps.
# torch converts the lerp weight w = 1 - alpha to the array's type first.
# The update does not use the step count (kept as torch keeps it).
RULE = Rule(
    "rmsprop",
    state=(("square_avg", 0), ("momentum_buffer", 0, "use_momentum"), ("grad_avg", 0, "centered")),
    args=("neg_lr", "alpha", "one_minus_alpha", "eps", "momentum", "wd"),
    derived=(("from_start", "fabs_(one_minus_alpha_t) < 0.5", "bint"),
             ("lerp_coef", "one_minus_alpha_t if from_start_t else -(1 - one_minus_alpha_t)")),
    flags=(("decay", "wd != 0"), ("maximize", None), ("use_momentum", None), ("centered", None)),
    isa="fma",
    add_missing=True,
    body="""
cdef floating p = param[j]
cdef floating g = grad[j]
cdef floating v = square_avg[j]
cdef floating m, b, base, avg
if maximize:
    g = -g
if decay:
    g = fma_(wd, p, g)
v = fma_(one_minus_alpha * g, g, v * alpha)
square_avg[j] = v
if centered:
    m = grad_avg[j]
    base = m if from_start else g
    m = fma_(lerp_coef, g - m, base)
    grad_avg[j] = m
    avg = fsqrt(fma_(-m, m, v)) + eps
else:
    avg = fsqrt(v) + eps
if use_momentum:
    b = momentum_buffer[j]
    b = b * momentum + g / avg
    momentum_buffer[j] = b
    param[j] = fma_(neg_lr, b, p)
else:
    param[j] = p + (neg_lr * g) / avg
""",
    scalars=_scalars,
    switches=_switches,
)


class RMSprop(Optimizer):
    r"""RMSprop, as ``torch.optim.RMSprop``.

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        v_t &\leftarrow \alpha\,v_{t-1} + (1 - \alpha)\,g_t^2 \\
        \bar g_t &\leftarrow \alpha\,\bar g_{t-1} + (1 - \alpha)\,g_t
            \quad\text{(centered)} \\
        d_t &\leftarrow \sqrt{v_t - \bar g_t^2} + \epsilon \ \text{(centered)}
            \quad\text{or}\quad d_t \leftarrow \sqrt{v_t} + \epsilon \\
        b_t &\leftarrow \mu\,b_{t-1} + g_t / d_t, \quad
            \theta_t \leftarrow \theta_{t-1} - \gamma\,b_t \quad (\mu > 0) \\
        \theta_t &\leftarrow \theta_{t-1} - \gamma\,g_t / d_t \quad (\mu = 0)
        \end{aligned}

    where the sign is ``-`` when ``maximize``; :math:`v`, :math:`\bar g` and
    :math:`b` start at 0.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1e-2
        Learning rate :math:`\gamma`.
    alpha : float, default 0.99
        Smoothing constant :math:`\alpha`.
    eps : float, default 1e-8
        Added to the denominator for numerical stability.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda`.
    momentum : float, default 0
        Momentum factor :math:`\mu`.
    centered : bool, default False
        Normalise by an estimate of the gradient's variance instead of its
        second moment.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter (created at its first step): ``step``,
    ``square_avg``, ``momentum_buffer`` (when momentum > 0) and ``grad_avg``
    (when centered), as torch creates them. Where torch would fail with a
    ``KeyError`` (momentum or centered switched on after the first step),
    the missing buffer starts at zero instead.

    References
    ----------
    .. [1] Hinton, "Neural Networks for Machine Learning", lecture 6e, 2012.
    .. [2] Graves, "Generating Sequences With Recurrent Neural Networks",
       arXiv:1308.0850, 2013 (the centered variant).
    """

    rule = RULE

    # torch's signature, positions included: capturable, foreach and differentiable
    # are checked and dropped by the base class (nopt._torch_options).
    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)
