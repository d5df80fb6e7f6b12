"""Rprop: sign-based updates with per-element adaptive step sizes."""
from ._kernels._spec import Rule
from .optimizer import Optimizer

__all__ = ["Rprop"]


def _scalars(group, step):
    etaminus, etaplus = group["etas"]
    step_min, step_max = group["step_sizes"]
    return etaminus, etaplus, step_min, step_max


# Per element, following torch's single-tensor rule op by op:
#   s = g * prev                      (the product, as torch: its sign decides)
#   f = etaplus if s > 0, etaminus if s < 0, else 1  (NaN -> 1: torch.sign(NaN) = 0)
#   step_size = clamp(step_size * f, step_min, step_max)   (NaN propagates)
#   g = 0 where f == etaminus        (after a sign change: no move, prev = 0)
#   param += -sign(g) * step_size;  prev = g
# etaplus / etaminus are compared in the array's type, as torch compares its
# float32 "sign" tensor with etaminus. Comparisons are evaluated
# unconditionally and the branches only pick values, so gcc turns them into
# blends and vectorises the loop (a nested select for sign(g) defeats it,
# hence the arithmetic form). IEEE mode (ftz=False), as torch by default:
# Rprop uses only signs, so a subnormal gradient is a full-size step.
# A fresh state needs no special case: prev = 0 keeps the step size.
RULE = Rule(
    "rprop",
    state=(("prev", 0), ("step_size", "lr")),
    args=("etaminus", "etaplus", "step_min", "step_max"),
    flags=(("maximize", None),),
    ftz=False,
    body="""
cdef floating p = param[j]
cdef floating g = grad[j]
cdef floating q = prev[j]
cdef floating x = step_size[j]
cdef floating zero = 0, one = 1
cdef floating s, f, y, d
cdef bint pos, neg, above, below, nan
if maximize:
    g = -g
s = g * q
pos = s > zero
neg = s < zero
f = etaplus if pos else (etaminus if neg else one)
x = x * f
nan = x != x
above = x > step_min
y = x if above else step_min
below = y < step_max
y = y if below else step_max
y = x if nan else y
step_size[j] = y
g = zero if f == etaminus else g
d = <floating> (g > zero) - <floating> (g < zero)
param[j] = p + (-d) * y
prev[j] = g
""",
    scalars=_scalars,
    switches=lambda group: (bool(group["maximize"]),),
)


class Rprop(Optimizer):
    r"""Rprop (resilient backpropagation), as ``torch.optim.Rprop``.

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) \\
        \eta_t &\leftarrow \begin{cases}
            \eta_{t-1} \cdot \eta_+ & g_t\,g_{t-1} > 0 \\
            \eta_{t-1} \cdot \eta_- & g_t\,g_{t-1} < 0 \\
            \eta_{t-1} & \text{otherwise} \end{cases}, \quad
            \eta_t \leftarrow \min(\max(\eta_t, \Gamma_{\min}), \Gamma_{\max}) \\
        g_t &\leftarrow 0 \quad \text{where } g_t\,g_{t-1} < 0 \\
        \theta_t &\leftarrow \theta_{t-1} - \eta_t \operatorname{sign}(g_t)
        \end{aligned}

    where the sign is ``-`` when ``maximize``, :math:`\eta_0 = \gamma` (the
    learning rate) and :math:`g_{t-1}` is the stored ``prev`` (0 at first).

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1e-2
        Initial step size :math:`\gamma` (used only when a parameter's state
        is created).
    etas : tuple of float, default (0.5, 1.2)
        Multiplicative decrease and increase factors
        :math:`(\eta_-, \eta_+)`, with :math:`0 < \eta_- < 1 < \eta_+`.
    step_sizes : tuple of float, default (1e-6, 50)
        Minimal and maximal step sizes :math:`(\Gamma_{\min}, \Gamma_{\max})`.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter (created at its first step): ``step``, ``prev`` and
    ``step_size``. After a sign change the element does not move and its
    ``prev`` is stored as 0, so the next step keeps its step size, as torch
    does. A NaN gradient element leaves its parameter and step size
    unchanged (torch.sign(NaN) is 0) and is stored in ``prev``.

    The kernel runs in IEEE mode (no flush-to-zero), as torch does: a
    subnormal gradient still gives a full step.

    References
    ----------
    .. [1] Riedmiller and Braun, "A Direct Adaptive Method for Faster
       Backpropagation Learning: The RPROP Algorithm", ICNN 1993.
    """

    rule = RULE

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *,
                 maximize=False):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"Invalid eta values: {etas[0]}, {etas[1]}")
        defaults = dict(lr=lr, etas=etas, step_sizes=step_sizes, maximize=maximize)
        super().__init__(params, defaults)
