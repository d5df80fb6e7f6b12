"""Schedule-free SGD and AdamW (Defazio et al. 2024), as the ``schedulefree`` package.

The parameters hold ``y`` (where gradients are taken) in train mode and the
average ``x`` (what to evaluate) in eval mode; ``z`` is in the state.
``train()`` and ``eval()`` switch between them in place:
``y = lerp(x, z, 1 - beta1)`` and ``x = lerp(y, z, 1 - 1/beta1)``.
"""
from . import _beyond
from ._kernels import _plan as _plan_module
from ._kernels import rules as _rules
from ._kernels._spec import Rule
from ._kernels.helpers import set_items
from ._kernels.helpers import EMA, average
from .optimizer import Optimizer

__all__ = ["ScheduleFreeSGD", "ScheduleFreeAdamW"]

# The kernels: the package's order of operations, the parameter holding y.
# (The classes plan their own steps: z starts as a copy of the parameter, and
# the averaging weight comes from per-group counters.)
RULE_SGD = Rule(
    "schedule_free_sgd",
    state=(("z", 0),),
    step=False,
    args=("sign", "wd", "ckp1", "y_coef", "neg_lr"),
    flags=(("decay", "wd != 0"), ("small", "fabs_(ckp1_t) < 0.5")),
    pieces=("schedule_free_step",),
    body="""
cdef floating g = sign * grad[j]
cdef floating y = param[j]
cdef floating zj = z[j]
# piece schedule_free_step
""",
    doc="""One schedule-free SGD step over (y, grad, z) rows (releases the GIL).

    ``ckp1`` is the averaging weight, ``y_coef`` is
    ``lr*(momentum*(1 - ckp1) - 1)`` and ``neg_lr`` is ``-lr``; y moves to
    ``lerp(y, z, ckp1)`` in torch.lerp's two-sided form.""",
)

RULE_ADAMW = Rule(
    "schedule_free_adamw",
    state=(("z", 0), ("exp_avg_sq", 0)),
    step=False,
    args=("sign", "wd", "ckp1", "y_coef", "neg_lr", "beta2", "omb2", "bc2", "eps"),
    flags=(("decay", "wd != 0"), ("small", "fabs_(ckp1_t) < 0.5")),
    pieces=("schedule_free_step",),
    body="""
cdef floating g = sign * grad[j]
cdef floating y = param[j]
cdef floating zj = z[j]
cdef floating v = exp_avg_sq[j] * beta2 + omb2 * g * g
exp_avg_sq[j] = v
g = g / (fsqrt(v / bc2) + eps)
# piece schedule_free_step
""",
    doc="""One schedule-free AdamW step over (y, grad, z, exp_avg_sq) rows (releases the GIL).

    As schedule_free_sgd, on ``g / (sqrt(v/bc2) + eps)``, ``bc2`` being
    ``1 - beta2**(k+1)``.""",
)


_DOC_COMMON = r"""
    The averaging weight and the warmup are the package's:

    .. math::
        \gamma_t = \gamma \min(1, t/T_{warmup}), \qquad
        w_t = t^r \big(\max_{s\le t} \gamma_s\big)^{p}, \qquad
        c_{t} = w_t \Big/ \sum_{s \le t} w_s

    (:math:`p` is ``weight_lr_power``). The group keeps the package's keys:
    ``k`` (steps taken), ``train_mode``, ``weight_sum``, ``lr_max`` and
    ``scheduled_lr``; the state of a parameter holds ``z``.
"""


# The parameters both rules document alike (spliced in, as torch does).
_DOC_PARAMETERS = r"""weight_decay : float, default 0
        :math:`\lambda`, evaluated at :math:`y`.
    warmup_steps : int, default 0
        Linear warmup of the learning rate.
    r : float, default 0
        Polynomial weighting of the average.
    weight_lr_power : float, default 2
        Power of the learning rate in the averaging weight.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.
"""


class _ScheduleFree(Optimizer):
    """The shared step, ``train()`` and ``eval()`` of the schedule-free rules."""

    _fresh = {}
    _copied = ("z",)
    _init_state = _beyond.init_state
    _adam = False

    def train(self):
        """Switch the parameters to ``y`` (where gradients are taken); a no-op in train mode."""
        self._switch(True)

    def eval(self):
        """Switch the parameters to the average ``x`` (to evaluate); a no-op in eval mode."""
        self._switch(False)

    def _switch(self, train):
        # One averaging-kernel call per group and dtype: p = lerp(p, z, w), as
        # the package; planned first, then run with the groups' flags from C
        # (_plan.run), so a Ctrl-C switches every group or none.
        calls, arrays = [], []
        for group in self.param_groups:
            if bool(group["train_mode"]) == train:
                continue
            beta1 = group["betas"][0] if self._adam else group["momentum"]
            weight = (1 - beta1) if train else (1 - 1 / beta1)
            for dtype in ("float32", "float64"):
                params = [p for p in group["params"]
                          if p.dtype == dtype and self.state.get(p, {}).get("z") is not None]
                if params:
                    zs = [self.state[p]["z"] for p in params]
                    arrays.append((params, zs))  # (alive until the kernels ran)
                    ptrs, chunks, n_threads = _plan_module.make_table([params, zs])
                    calls.append((average, (ptrs, chunks, dtype == "float64", n_threads, EMA,
                                            weight)))
            calls.append((set_items, (group, ("train_mode",), (train,))))
        _plan_module.run(calls)

    def step(self, closure=None):
        """Perform one optimization step; return the closure's loss if given.

        Raises RuntimeError in eval mode (call ``train()`` first), as the package.
        """
        for i, group in enumerate(self.param_groups):
            if not group["train_mode"]:
                raise RuntimeError(
                    f"{type(self).__name__} is in eval mode (param_groups[{i}]['train_mode'] is "
                    "False): call optimizer.train() before optimizer.step()")
        self._group_plans = {}
        return self._plan_then_run(closure)

    def _group_scalars(self, batch, calls):
        """The group's scalars for this step; the group's counters change only when the step runs."""
        gi = batch.group_index
        planned = self._group_plans.get(gi)
        if planned is not None:
            return planned
        group = batch.group
        k = group["k"]
        warmup = group["warmup_steps"]
        lr = group["lr"] * ((k + 1) / warmup if k < warmup else 1.0)
        lr_max = max(lr, group["lr_max"])
        weight = ((k + 1) ** group["r"]) * (lr_max ** group["weight_lr_power"])
        weight_sum = group["weight_sum"] + weight
        ckp1 = weight / weight_sum if weight_sum != 0 else 0.0
        calls.append((set_items, (group, ("k", "scheduled_lr", "lr_max", "weight_sum"),
                                  (k + 1, lr, lr_max, weight_sum))))
        planned = self._group_plans[gi] = (k, lr, ckp1)
        return planned

    def _plan(self, batch, calls, undo):
        group = batch.group
        keys = ("z", "exp_avg_sq") if self._adam else ("z",)
        columns = _beyond.state_arrays(self, batch, keys, undo)
        # The group update goes after this batch's kernel: planned now, run after it.
        marker = len(calls)
        k, lr, ckp1 = self._group_scalars(batch, calls)
        group_update = calls[marker:]
        del calls[marker:]
        beta1 = group["betas"][0] if self._adam else group["momentum"]
        args = (-1.0 if group["maximize"] else 1.0, group["weight_decay"], ckp1,
                lr * (beta1 * (1 - ckp1) - 1), -lr)
        if self._adam:
            beta2 = group["betas"][1]
            args += (beta2, 1 - beta2, 1 - beta2 ** (k + 1), group["eps"])
        ptrs, chunks, n_threads = self._table([batch.params, batch.grads, *columns],
                                              batch.group_index)
        kernel = _rules.schedule_free_adamw if self._adam else _rules.schedule_free_sgd
        calls.append((kernel, (ptrs, chunks, batch.is_double, n_threads) + args))
        calls.extend(group_update)


def _check_common(lr, weight_decay, warmup_steps, r, weight_lr_power):
    _beyond.check_non_negative(lr=lr, weight_decay=weight_decay)
    if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or warmup_steps < 0:
        raise ValueError(f"Invalid warmup_steps value: {warmup_steps!r}; expected an int >= 0")
    _beyond.check_non_negative(r=r, weight_lr_power=weight_lr_power)


def _counters():
    return dict(k=0, train_mode=True, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0)


class ScheduleFreeSGD(_ScheduleFree):
    __doc__ = r"""Schedule-free SGD, as ``schedulefree.SGDScheduleFree``.

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(y_{t-1}) + \lambda y_{t-1} \\
        y_t &\leftarrow \mathrm{lerp}(y_{t-1}, z_{t-1}, c_t)
              + \gamma_t\big(\beta(1-c_t) - 1\big)\, g_t \\
        z_t &\leftarrow z_{t-1} - \gamma_t g_t
        \end{aligned}

    which keeps :math:`y_t = (1-\beta) z_t + \beta x_t` with
    :math:`x_t = (1-c_t) x_{t-1} + c_t z_t`, the average evaluated in eval mode.
    """ + _DOC_COMMON + r"""
    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1.0
        Learning rate :math:`\gamma`.
    momentum : float, default 0.9
        :math:`\beta`, the interpolation between ``z`` and ``x``, in (0, 1).
    """ + _DOC_PARAMETERS + r"""
    Notes
    -----
    Starts in train mode: the package starts in eval mode and requires
    ``train()`` before the first step, which is a no-op there (no ``z``
    exists yet), so the trajectories are the same. ``step`` in eval mode
    raises RuntimeError. Call ``eval()`` before evaluating or saving the
    model's weights, and ``train()`` before training again.

    References
    ----------
    .. [1] Defazio et al., "The Road Less Scheduled", NeurIPS 2024, arXiv:2405.15682.
    """

    _elementwise_state = ("z",)
    _required_state = ("z",)

    def __init__(self, params, lr=1.0, momentum=0.9, weight_decay=0, warmup_steps=0, r=0.0,
                 weight_lr_power=2.0, *, maximize=False):
        _check_common(lr, weight_decay, warmup_steps, r, weight_lr_power)
        _beyond.check_real("momentum", momentum)
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"Momentum must be between 0 and 1 exclusive: {momentum}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power,
                        maximize=maximize, **_counters())
        super().__init__(params, defaults)


class ScheduleFreeAdamW(_ScheduleFree):
    __doc__ = r"""Schedule-free AdamW, as ``schedulefree.AdamWScheduleFree``.

    .. math::
        \begin{aligned}
        g_t &\leftarrow \pm\nabla f(y_{t-1}) \qquad
        v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        \hat g_t &\leftarrow g_t \big/ \big(\sqrt{v_t/(1-\beta_2^t)} + \epsilon\big)
                  + \lambda y_{t-1} \\
        y_t &\leftarrow \mathrm{lerp}(y_{t-1}, z_{t-1}, c_t)
              + \gamma_t\big(\beta_1(1-c_t) - 1\big)\, \hat g_t \\
        z_t &\leftarrow z_{t-1} - \gamma_t \hat g_t
        \end{aligned}
    """ + _DOC_COMMON + r"""
    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 0.0025
        Learning rate :math:`\gamma`.
    betas : (float, float), default (0.9, 0.999)
        :math:`\beta_1` (interpolation, in (0, 1)) and :math:`\beta_2`
        (decay of the second moment, in [0, 1)).
    eps : float, default 1e-8
        Added to the denominator.
    """ + _DOC_PARAMETERS + r"""
    Notes
    -----
    State per parameter: ``z`` and ``exp_avg_sq``. Starts in train mode (see
    :class:`ScheduleFreeSGD`). Matches ``schedulefree.AdamWScheduleFree``
    and ``optax.contrib.schedule_free_adamw`` (tests, 100 steps, with
    ``train()``/``eval()`` switches).

    References
    ----------
    .. [1] Defazio et al., "The Road Less Scheduled", NeurIPS 2024, arXiv:2405.15682.
    """

    _elementwise_state = ("z", "exp_avg_sq")
    _required_state = ("z", "exp_avg_sq")
    _adam = True

    def __init__(self, params, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 warmup_steps=0, r=0.0, weight_lr_power=2.0, *, maximize=False):
        _check_common(lr, weight_decay, warmup_steps, r, weight_lr_power)
        _beyond.check_non_negative(eps=eps)
        betas = _beyond.check_betas(betas, 2)
        if betas[0] == 0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]} (must be in (0, 1))")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power,
                        maximize=maximize, **_counters())
        super().__init__(params, defaults)
