"""Stochastic gradient descent, with momentum and Nesterov momentum."""
from ._kernels._spec import Rule
from .optimizer import Optimizer, required

__all__ = ["SGD"]


def _scalars(group, step):
    return group["lr"], group["momentum"], 1.0 - group["dampening"], group["weight_decay"]


def _switches(group):
    use_momentum = group["momentum"] != 0
    # (maximize, use_momentum, nesterov): the flags' order in RULE.
    return bool(group["maximize"]), use_momentum, use_momentum and bool(group["nesterov"])


# No step count. A new momentum buffer takes the gradient itself (torch
# clones it): the parameters whose buffer this step creates run with
# ``first`` on.
RULE = Rule(
    "sgd",
    step=False,
    state=(("momentum_buffer", 0, "use_momentum"),),
    args=("lr", "momentum", "keep", "wd"),
    flags=(("decay", "wd != 0"), ("maximize", None), ("use_momentum", None), ("nesterov", None),
           ("first", "fresh")),
    valid="use_momentum or not (nesterov or first)",
    body="""
cdef floating p = param[j]
cdef floating g = grad[j]
cdef floating b
if maximize:
    g = -g
if decay:
    g = g + wd * p
if use_momentum:
    if first:
        b = g
    else:
        b = momentum_buffer[j] * momentum + keep * g
    momentum_buffer[j] = b
    if nesterov:
        g = g + momentum * b
    else:
        g = b
param[j] = p - lr * g
""",
    doc="""Apply one SGD step to every array in the table (releases the GIL).

    ``keep`` is ``1 - dampening``; ``first`` (a new momentum buffer) stores
    the gradient itself in the buffer.""",
    scalars=_scalars,
    switches=_switches,
)


class SGD(Optimizer):
    r"""Stochastic gradient descent (optionally with momentum), as ``torch.optim.SGD``.

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        b_t &\leftarrow \begin{cases} g_t & t = 1 \\ \mu\,b_{t-1} + (1-\tau)\,g_t & t > 1 \end{cases} \\
        g_t &\leftarrow g_t + \mu\,b_t \ \text{(Nesterov)} \quad\text{or}\quad g_t \leftarrow b_t \\
        \theta_t &\leftarrow \theta_{t-1} - \gamma\,g_t
        \end{aligned}

    where the sign is ``-`` when ``maximize``, and the momentum lines apply
    only when :math:`\mu \neq 0`.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1e-3
        Learning rate :math:`\gamma`.
    momentum : float, default 0
        Momentum factor :math:`\mu`.
    dampening : float, default 0
        Dampening :math:`\tau` for momentum.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda`.
    nesterov : bool, default False
        Use Nesterov momentum (needs momentum > 0 and zero dampening).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter: ``momentum_buffer`` (only when momentum is not 0).

    References
    ----------
    .. [1] Sutskever et al., "On the importance of initialization and momentum
       in deep learning", ICML 2013.
    """

    rule = RULE

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False):
        if lr is not required and lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)
