"""Adam and AdamW, with AMSGrad, maximize and coupled or decoupled weight decay.

This module also holds the helpers the other Adam-family optimizers
(Adamax, NAdam, RAdam) share: hyperparameter validation and the checked,
lazy creation of per-parameter state.

Each optimizer here is its constructor (torch's signature and messages),
its docstring and its rule spec (``RULE``, see ``nopt/_kernels/_spec.py``);
``Optimizer`` plans and runs every step from the spec.
"""
import numbers

from ._kernels._spec import Rule
from .optimizer import Optimizer

__all__ = ["Adam", "AdamW"]


# ---------------------------------------------------------------- shared helpers
def _check_real(name, value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {value!r}")


def _validate(lr, betas, eps, weight_decay, **extra):
    """torch's hyperparameter checks, in torch's order and with its messages.

    Returns ``betas`` as a tuple of two numbers. ``extra`` holds further
    non-negative hyperparameters (e.g. ``momentum_decay``), checked last.
    NaN fails every check, as in torch (``not 0.0 <= nan``).
    """
    _check_real("lr", lr)
    _check_real("eps", eps)
    _check_real("weight_decay", weight_decay)
    expected = f"betas must be a pair of real numbers (beta1, beta2), got {betas!r}"
    try:
        betas = tuple(betas)
    except TypeError:
        raise TypeError(expected) from None
    if len(betas) != 2:
        raise ValueError(expected)
    for i, beta in enumerate(betas):
        _check_real(f"betas[{i}]", beta)
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")
    if not 0.0 <= eps:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if not 0.0 <= betas[0] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
    if not 0.0 <= betas[1] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
    if not 0.0 <= weight_decay:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
    for name, value in extra.items():
        _check_real(name, value)
        if not 0.0 <= value:
            raise ValueError(f"Invalid {name} value: {value}")
    return betas


def _decay_terms(group):
    """(decoupled factor, coupled L2 coefficient) for a group, as torch applies them.

    Decoupled decay multiplies the parameter by ``1 - lr * weight_decay``;
    coupled decay adds ``weight_decay * param`` to the gradient. With zero
    weight decay neither applies (factor 1, coefficient 0).
    """
    wd = group["weight_decay"]
    if wd == 0:
        return 1.0, 0.0
    if group.get("decoupled_weight_decay", False):
        return 1.0 - group["lr"] * wd, 0.0
    return 1.0, wd


def moment_args(group):
    """The args of the spec piece ``adam_moments`` (nopt/_kernels/_spec.py), in its order.

    ``(sign, decay, wd, w, beta2, one_minus_beta2)``: -1 to maximize, the
    decoupled factor and the coupled L2 term (:func:`_decay_terms`), the lerp
    weight ``1 - beta1``, ``beta2`` and ``1 - beta2``.
    """
    beta1, beta2 = group["betas"]
    decay, l2 = _decay_terms(group)
    return (-1.0 if group["maximize"] else 1.0, decay, l2, 1 - beta1, beta2, 1 - beta2)


# ---------------------------------------------------------------- Adam
def _adam_scalars(group, step):
    beta1, beta2 = group["betas"]
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    return moment_args(group) + (1 / bias_correction2 ** 0.5, group["eps"],
                                 -(group["lr"] / bias_correction1))


# Order of operations: torch's single-tensor Adam. ``lerp`` is torch's
# two-sided formula (picked by the weight in the array's type, once a call).
# The sign (maximize) and the decoupled factor stay multiplications by +-1
# and by 1: exact, and free next to the divide.
RULE = Rule(
    "adam",
    state=(("exp_avg", 0), ("exp_avg_sq", 0), ("max_exp_avg_sq", 0, "amsgrad")),
    args=("sign", "decay", "wd", "w", "beta2", "one_minus_beta2", "inv_bc2_sqrt", "eps",
          "neg_step"),
    derived=(("w_minus_1", "w_t - 1"),),
    flags=(("coupled", "wd != 0"), ("small", "fabs_(w_t) < 0.5"), ("amsgrad", None)),
    pieces=("adam_moments",),
    body="""
cdef floating vmax, d
if amsgrad:
    vmax = max_nan(max_exp_avg_sq[j], v)
    max_exp_avg_sq[j] = vmax
    v = vmax
d = fsqrt(v) * inv_bc2_sqrt + eps
param[j] = p + neg_step * m / d
""",
    doc="""Apply one Adam step to every array in the table (releases the GIL).

    ``sign`` is -1 to maximize; ``decay`` the decoupled factor ``1 - lr*wd``
    (1 when coupled); ``wd`` the coupled L2 term (0 when decoupled); ``w``
    the lerp weight ``1 - beta1``; ``inv_bc2_sqrt`` is
    ``1/sqrt(1 - beta2**t)`` and ``neg_step`` is ``-lr/(1 - beta1**t)``.""",
    scalars=_adam_scalars,
    switches=lambda group: (bool(group["amsgrad"]),),
)


class Adam(Optimizer):
    r"""Adam, as ``torch.optim.Adam`` (single-tensor path).

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) \ (+\,\lambda\theta_{t-1}
             \text{ if coupled}) \qquad
        \theta_{t-1} \leftarrow (1-\gamma\lambda)\,\theta_{t-1} \text{ if decoupled} \\
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t \qquad
        v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        \hat v_t &\leftarrow \max(\hat v_{t-1}, v_t) \text{ (AMSGrad) else } v_t \\
        \theta_t &\leftarrow \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,
            \frac{m_t}{\sqrt{\hat v_t}/\sqrt{1-\beta_2^t} + \epsilon}
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
    amsgrad : bool, default False
        Use the running maximum of :math:`v_t` (AMSGrad).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.
    decoupled_weight_decay : bool, default False
        Decay the parameters directly (AdamW) instead of adding
        :math:`\lambda\theta` to the gradient.

    Notes
    -----
    State per parameter: ``step`` (a float), ``exp_avg``, ``exp_avg_sq`` and,
    with AMSGrad, ``max_exp_avg_sq``; created on the parameter's first step.
    The exponential averages use torch's ``lerp`` formula, so results agree
    with torch to rounding in float32 and float64.

    References
    ----------
    .. [1] Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    .. [2] Reddi et al., "On the Convergence of Adam and Beyond", ICLR 2018.
    .. [3] Loshchilov and Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """

    rule = RULE

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=False):
        betas = _validate(lr, betas, eps, weight_decay)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    Exactly :class:`Adam` with ``decoupled_weight_decay=True`` (as torch
    defines it), and a default ``weight_decay`` of 1e-2:

    .. math::
        \theta_{t-1} \leftarrow \theta_{t-1} - \gamma\lambda\,\theta_{t-1}

    before the Adam update, so the decay never enters the moment estimates.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1e-3
        Learning rate :math:`\gamma`.
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the moment estimates, in [0, 1).
    eps : float, default 1e-8
        Added to the denominator for numerical stability.
    weight_decay : float, default 1e-2
        Decoupled weight decay :math:`\lambda`.
    amsgrad : bool, default False
        Use the running maximum of the second moment (AMSGrad).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    Like torch, loading a state dict always sets ``decoupled_weight_decay``
    back to True in every group.

    References
    ----------
    .. [1] Loshchilov and Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)

    def load_state_dict(self, state_dict):
        """Load a state dict as :meth:`Optimizer.load_state_dict`, keeping decoupled decay on.

        torch's ``AdamW.__setstate__`` sets ``decoupled_weight_decay = True``
        in every loaded group (before the post-load hooks run); so does this.
        """
        groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        if isinstance(groups, (list, tuple)) and all(isinstance(g, dict) for g in groups):
            state_dict = dict(state_dict)
            state_dict["param_groups"] = [{**g, "decoupled_weight_decay": True} for g in groups]
        super().load_state_dict(state_dict)
