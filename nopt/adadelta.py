"""Adadelta: step sizes from running averages of squared gradients and updates."""
from ._kernels._spec import Rule
from .optimizer import Optimizer

__all__ = ["Adadelta"]


def _scalars(group, step):
    return -group["lr"], group["rho"], 1.0 - group["rho"], group["eps"], group["weight_decay"]


# The update does not use the step count (kept as torch keeps it).
RULE = Rule(
    "adadelta",
    state=(("square_avg", 0), ("acc_delta", 0)),
    args=("neg_lr", "rho", "one_minus_rho", "eps", "wd"),
    flags=(("decay", "wd != 0"), ("maximize", None)),
    body="""
cdef floating p = param[j]
cdef floating g = grad[j]
cdef floating v = square_avg[j]
cdef floating u = acc_delta[j]
cdef floating d
if maximize:
    g = -g
if decay:
    g = g + wd * p
v = v * rho + (one_minus_rho * g) * g
square_avg[j] = v
d = fsqrt(u + eps) / fsqrt(v + eps) * g
acc_delta[j] = u * rho + (one_minus_rho * d) * d
param[j] = p + neg_lr * d
""",
    scalars=_scalars,
    switches=lambda group: (bool(group["maximize"]),),
)


class Adadelta(Optimizer):
    r"""Adadelta, as ``torch.optim.Adadelta``.

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        v_t &\leftarrow \rho\,v_{t-1} + (1 - \rho)\,g_t^2 \\
        \Delta x_t &\leftarrow \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t \\
        u_t &\leftarrow \rho\,u_{t-1} + (1 - \rho)\,\Delta x_t^2 \\
        \theta_t &\leftarrow \theta_{t-1} - \gamma\,\Delta x_t
        \end{aligned}

    where the sign is ``-`` when ``maximize``, :math:`v` is ``square_avg`` and
    :math:`u` is ``acc_delta`` (both start at 0).

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1.0
        Coefficient :math:`\gamma` that scales the update.
    rho : float, default 0.9
        Decay :math:`\rho` of the running averages, in [0, 1].
    eps : float, default 1e-6
        Added inside the square roots for numerical stability.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda`.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter (created at its first step): ``step``,
    ``square_avg`` and ``acc_delta``.

    References
    ----------
    .. [1] Zeiler, "ADADELTA: An Adaptive Learning Rate Method",
       arXiv:1212.5701, 2012.
    """

    rule = RULE

    # foreach: torch's, at torch's position (checked and dropped by the base class).
    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, foreach=None, *,
                 maximize=False):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)
