"""ASGD: stochastic gradient descent with iterate averaging."""
# Round to float32 (as a Python float), as torch stores ``eta`` and ``mu`` in
# float32 0-d tensors: float(numpy.float32(x)), in C.
from ._kernels._plan import float32 as _float32
from ._kernels._spec import Rule
from .optimizer import Optimizer

__all__ = ["ASGD"]


def _next(group, step):
    """eta and mu after ``step`` steps: torch's Python-float formulas, stored in float32."""
    lr, lambd = group["lr"], group["lambd"]
    eta = lr / ((1 + lambd * lr * step) ** group["alpha"])
    if isinstance(eta, complex):
        raise ValueError(
            f"ASGD: 1 + lambd * lr * step = {1 + lambd * lr * step} is negative, so "
            f"eta = lr / (1 + lambd * lr * step) ** alpha is not real (lambd={lambd}, lr={lr})"
        )
    return _float32(eta), _float32(1 / max(1, step - group["t0"]))


def _scalars(group, step, eta, mu):
    # The step uses this step's eta and mu; the next ones are stored after it.
    args = (1 - group["lambd"] * eta, -eta, mu, group["weight_decay"])
    return args, _next(group, step)


# Order as torch's single-tensor rule:
#   param = param * decay;  param += -eta * g     (decay = 1 - lambd * eta)
#   ax += (param - ax) * mu      if mu != 1 (with the *updated* param)
#   ax  = param                  if mu == 1
RULE = Rule(
    "asgd",
    state=(("ax", 0),),
    scalar_state=("eta", "mu"),
    start=lambda group: (_float32(group["lr"]), 1.0),
    args=("decay", "neg_eta", "mu", "wd"),
    flags=(("use_decay", "wd != 0"), ("average", "mu != 1"), ("maximize", None)),
    body="""
cdef floating p = param[j]
cdef floating g = grad[j]
cdef floating x
if maximize:
    g = -g
if use_decay:
    g = g + wd * p
p = p * decay
p = p + neg_eta * g
param[j] = p
if average:
    x = ax[j]
    ax[j] = x + (p - x) * mu
else:
    ax[j] = p
""",
    scalars=_scalars,
    switches=lambda group: (bool(group["maximize"]),),
)


class ASGD(Optimizer):
    r"""Averaged stochastic gradient descent, as ``torch.optim.ASGD``.

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda_w\,\theta_{t-1} \\
        \theta_t &\leftarrow (1 - \lambda\,\eta_{t-1})\,\theta_{t-1} - \eta_{t-1}\, g_t \\
        a_t &\leftarrow \begin{cases} a_{t-1} + \mu_{t-1} (\theta_t - a_{t-1}) & \mu_{t-1} \neq 1 \\
            \theta_t & \mu_{t-1} = 1 \end{cases} \\
        \eta_t &\leftarrow \gamma / (1 + \lambda\,\gamma\, t)^{\alpha}, \qquad
        \mu_t \leftarrow 1 / \max(1, t - t_0)
        \end{aligned}

    where the sign is ``-`` when ``maximize``, :math:`\eta_0 = \gamma`,
    :math:`\mu_0 = 1`, and :math:`a` (``ax``) is the averaged parameter.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1e-2
        Learning rate :math:`\gamma`.
    lambd : float, default 1e-4
        Decay term :math:`\lambda`.
    alpha : float, default 0.75
        Power :math:`\alpha` for the eta update.
    t0 : float, default 1e6
        Step :math:`t_0` at which averaging starts.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda_w`.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter (created at its first step): ``step``, ``eta``,
    ``mu`` (Python floats) and ``ax`` (the average, an array). torch keeps
    ``eta`` and ``mu`` in float32 0-d tensors; here they are floats rounded
    to float32 the same way, so both libraries use the same values.

    References
    ----------
    .. [1] Polyak and Juditsky, "Acceleration of Stochastic Approximation by
       Averaging", SIAM J. Control Optim. 30(4), 1992.
    """

    rule = RULE

    # torch's signature, positions included (ASGD(params, ..., weight_decay, None, True)
    # maximizes); foreach, differentiable and capturable are checked and dropped by the
    # base class (nopt._torch_options).
    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0,
                 foreach=None, maximize=False, differentiable=False, capturable=False):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
                        maximize=maximize)
        super().__init__(params, defaults)
