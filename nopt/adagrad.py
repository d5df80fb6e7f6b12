"""Adagrad: per-element step sizes from the running sum of squared gradients."""
import sys

from ._kernels._spec import Rule
from .optimizer import Optimizer

__all__ = ["Adagrad"]



def _scalars(group, step):
    # torch's decayed step size for the ``step``-th step.
    clr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
    return -clr, group["eps"], group["weight_decay"]


# ``sum`` starts at the constructor's initial_accumulator_value (torch's
# ``defaults``), also for groups added later.
RULE = Rule(
    "adagrad",
    state=(("sum", "defaults.initial_accumulator_value"),),
    args=("neg_clr", "eps", "wd"),
    flags=(("decay", "wd != 0"), ("maximize", None)),
    body="""
cdef floating p = param[j]
cdef floating g = grad[j]
cdef floating s = sum[j]
if maximize:
    g = -g
if decay:
    g = g + wd * p
s = s + g * g
sum[j] = s
param[j] = p + (neg_clr * g) / (fsqrt(s) + eps)
""",
    doc="Apply one Adagrad step (step size ``-neg_clr``) to every array in the table (releases the GIL).",
    scalars=_scalars,
    switches=lambda group: (bool(group["maximize"]),),
)

class Adagrad(Optimizer):
    r"""Adagrad, as ``torch.optim.Adagrad`` (dense gradients only).

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        \tilde\gamma_t &\leftarrow \gamma / (1 + (t - 1)\,\eta) \\
        s_t &\leftarrow s_{t-1} + g_t^2, \qquad s_0 = \tau \\
        \theta_t &\leftarrow \theta_{t-1} - \tilde\gamma_t\, g_t / (\sqrt{s_t} + \epsilon)
        \end{aligned}

    where the sign is ``-`` when ``maximize``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1e-2
        Learning rate :math:`\gamma`.
    lr_decay : float, default 0
        Learning-rate decay :math:`\eta`.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda`.
    initial_accumulator_value : float, default 0
        Initial value :math:`\tau` of the sum of squares.
    eps : float, default 1e-10
        Added to the denominator for numerical stability.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    State per parameter: ``step`` and ``sum``. As in torch, the state of the
    parameters given to the constructor is created right away (so
    ``state_dict()`` lists it before the first step); parameters of groups
    added later with :meth:`add_param_group` get theirs at their first step.
    Also as in torch, ``sum`` always starts at the constructor's
    ``initial_accumulator_value``: a per-group value is kept in the group but
    not used.

    Only dense (ndarray) gradients are supported: torch's sparse-gradient path
    has no counterpart here, and a ``scipy.sparse`` gradient raises
    ``TypeError``. For sparse gradients see :class:`nopt.SparseAdam`.

    References
    ----------
    .. [1] Duchi, Hazan and Singer, "Adaptive Subgradient Methods for Online
       Learning and Stochastic Optimization", JMLR 12, 2011.
    """

    rule = RULE

    # foreach: torch's, at torch's position (checked and dropped by the base class).
    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0,
                 initial_accumulator_value=0, eps=1e-10, foreach=None, *, maximize=False):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, maximize=maximize)
        super().__init__(params, defaults)
        # Eager state, as torch's constructor: only for the groups given here.
        for group in self.param_groups:
            self._create_state(group["params"], group, [])

    def step(self, closure=None):
        """Perform one optimization step; return the closure's loss if given."""
        loss = None if closure is None else closure()
        try:
            self._plan_then_run()
        except TypeError:
            # (A scipy.sparse gradient fails the checks in _batches; looked
            # for only then, so a good step pays nothing for the clearer message.)
            self._check_dense()
            raise
        return loss

    def _check_dense(self):
        """Raise Adagrad's own TypeError if a gradient is a scipy.sparse matrix."""
        sparse = sys.modules.get("scipy.sparse")
        if sparse is None:
            return
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                g = getattr(p, "grad", None)
                if sparse.issparse(g):
                    raise TypeError(
                        f"the grad of param_groups[{gi}]['params'][{pi}] is a scipy.sparse "
                        f"{type(g).__name__}; Adagrad supports dense gradients only "
                        "(pass grad.toarray(), or use nopt.SparseAdam)"
                    ) from None
