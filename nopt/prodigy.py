"""Prodigy: Adam with a learned step-size scale d (Mishchenko and Defazio 2023)."""
import math

from . import _beyond
from ._kernels import rules as _rules
from ._kernels._spec import Rule
from ._kernels.helpers import prodigy_run
from .optimizer import Optimizer

__all__ = ["Prodigy"]

# The elementwise second pass, once the new d is known (the first pass, with
# its two global sums, is nopt._kernels.helpers.prodigy_sums): the moments,
# whose weights use the old d, then the parameters. The moments wait for this
# pass, so that the first reads only what the sums need (p, g, p0, s).
RULE_UPDATE = Rule(
    "prodigy_update",
    state=(("exp_avg_sq", 0), ("exp_avg", 0, "has_exp_avg")),
    step=False,
    args=("wd", "neg_wd", "neg_step", "d_eps", "beta1", "a_m", "beta2", "a_v"),
    flags=(("has_exp_avg", None), ("moments", None), ("coupled", "wd != 0"),
           ("decoupled", "neg_wd != 0")),
    valid="not (coupled and decoupled)",
    body="""
cdef floating p = param[j]
cdef floating g = grad[j]
cdef floating v = exp_avg_sq[j]
cdef floating u
if coupled:
    g = g + wd * p
if moments:
    v = v * beta2 + a_v * g * g
    exp_avg_sq[j] = v
if has_exp_avg:
    u = exp_avg[j]
    if moments:
        u = u * beta1 + a_m * g
        exp_avg[j] = u
else:
    u = g
if decoupled:
    p = p + neg_wd * p
param[j] = p + neg_step * u / (fsqrt(v) + d_eps)
""",
    doc="""Prodigy's second pass over (param, grad, exp_avg_sq[, exp_avg]) rows (releases the GIL).

    With ``moments``, first ``exp_avg = beta1*exp_avg + a_m*g`` and
    ``exp_avg_sq = beta2*exp_avg_sq + a_v*g*g`` (``a_m = d*(1-beta1)``,
    ``a_v = d*d*(1-beta2)``, old d); then the update: ``wd`` is the coupled
    L2 term (0 when decoupled), ``neg_wd`` the decoupled ``-wd*dlr`` (0 when
    coupled), ``neg_step`` is ``-dlr`` (``-dlr*d`` without exp_avg) and
    ``d_eps`` is ``d*eps`` (new d).""",
)


class Prodigy(Optimizer):
    r"""Prodigy, as the authors' ``prodigyopt.Prodigy``.

    With :math:`d_t` the distance estimate (one for the whole optimizer),
    :math:`\eta_t = d_t\,\gamma\,\rho_t` (:math:`\rho_t =
    \sqrt{1-\beta_2^{t}}/(1-\beta_1^{t})` with ``use_bias_correction``, else 1):

    .. math::
        \begin{aligned}
        m_t &\leftarrow \beta_1 m_{t-1} + d_t(1-\beta_1) g_t \qquad
        v_t \leftarrow \beta_2 v_{t-1} + d_t^2(1-\beta_2) g_t^2 \\
        r_t &\leftarrow \beta_3 r_{t-1} + \tfrac{d_t}{d_0}\eta_t
              \langle g_t, \theta_0 - \theta_{t-1}\rangle \qquad
        s_t \leftarrow \beta_3 s_{t-1} + \tfrac{d_t}{d_0}\eta_t\, g_t \\
        \hat d &\leftarrow c\, r_t / \|s_t\|_1 \qquad
        d_{t+1} \leftarrow \min\big(\max(d_t, \hat d)\text{-history},\ d_t \cdot \text{growth}\big) \\
        \theta_t &\leftarrow \theta_{t-1} - \eta_t\, m_t / (\sqrt{v_t} + d_{t+1}\epsilon)
        \end{aligned}

    (:math:`\beta_3 = \sqrt{\beta_2}` by default; the sums run over every
    parameter of every group; ``safeguard_warmup`` uses :math:`d_t` instead of
    :math:`\eta_t` in :math:`s_t`). Weight decay is decoupled
    (:math:`\theta \leftarrow \theta - \lambda\eta_t\theta`) or, with
    ``decouple=False``, added to the gradient.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts.
    lr : float, default 1.0
        :math:`\gamma`; leave at 1 (groups may only differ by having lr 0).
    betas : (float, float), default (0.9, 0.999)
    beta3 : float or None, default None
        :math:`\sqrt{\beta_2}` when None.
    eps : float, default 1e-8
    weight_decay : float, default 0
    decouple : bool, default True
    use_bias_correction : bool, default False
    safeguard_warmup : bool, default False
    d0 : float, default 1e-6
        Initial estimate :math:`d_0`.
    d_coef : float, default 1.0
        :math:`c`.
    growth_rate : float, default inf
        Bound on the growth of :math:`d` per step.

    Notes
    -----
    State per parameter: ``step``, ``s``, ``p0`` (the starting point, a full
    copy: the package keeps a scalar 0 for an all-zero parameter, the same
    numbers), ``exp_avg`` (when :math:`\beta_1 > 0`) and ``exp_avg_sq``; the
    groups hold ``d``, ``d0``, ``d_max``, ``d_numerator``, ``d_coef``, ``k``,
    and after a step ``d_denom`` and ``d_hat``, as the package.
    The package's ``slice_p`` and ``fsdp_in_use`` are not offered. The
    global sums are reduced in double per fixed chunk, in chunk order (the
    same bits for any thread count); the package sums float32 dot products
    in float32, hence the float32 tolerance of the tests. A step is two
    passes over every group: the two sums, then, once the new :math:`d` is
    known, the moments (weighted by the old :math:`d`) and the update; both run from one compiled call
    (``beyond.prodigy_run``), so a step is applied whole or not at all, as
    every optimizer's (Ctrl-C included), and arrays sharing memory are
    refused before anything changes.

    References
    ----------
    .. [1] Mishchenko and Defazio, "Prodigy: An Expeditiously Adaptive
       Parameter-Free Learner", ICML 2024, arXiv:2306.06101, Algorithm 4.
    """

    _elementwise_state = ("s", "p0", "exp_avg", "exp_avg_sq")
    _required_state = ("step", "s", "p0", "exp_avg_sq")
    _fresh = {"step": 0.0}
    _copied = ("p0",)
    _init_state = _beyond.init_state

    def __init__(self, params, lr=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, weight_decay=0,
                 decouple=True, use_bias_correction=False, safeguard_warmup=False, d0=1e-6,
                 d_coef=1.0, growth_rate=float("inf")):
        _beyond.check_real("d0", d0)
        if not 0.0 < d0:
            raise ValueError(f"Invalid d0 value: {d0}")
        _beyond.check_real("lr", lr)
        if not 0.0 < lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        _beyond.check_real("eps", eps)
        if not 0.0 < eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        betas = _beyond.check_betas(betas, 2)
        if beta3 is not None:
            _beyond.check_real("beta3", beta3)
            if not 0.0 <= beta3 < 1.0:
                raise ValueError(f"Invalid beta3 value: {beta3}")
        _beyond.check_non_negative(weight_decay=weight_decay, d_coef=d_coef)
        _beyond.check_real("growth_rate", growth_rate)
        if not growth_rate >= 1.0:
            raise ValueError(f"Invalid growth_rate value: {growth_rate}; expected >= 1")
        defaults = dict(lr=lr, betas=betas, beta3=beta3, eps=eps, weight_decay=weight_decay,
                        d=d0, d0=d0, d_max=d0, d_numerator=0.0, d_coef=d_coef, k=0,
                        growth_rate=growth_rate, use_bias_correction=use_bias_correction,
                        decouple=decouple, safeguard_warmup=safeguard_warmup)
        super().__init__(params, defaults)

    def _plan(self, batch, calls, undo):
        # d is global: its first pass must have run over every batch before
        # any batch can be updated. So the step is one planned call,
        # beyond.prodigy_run, which runs both passes of every batch from C (in
        # the base class's all-or-nothing run phase); the first batch planned
        # (``calls`` still empty) adds it, and each batch adds its part.
        if not calls:
            calls.append((prodigy_run, (self.state, self.param_groups, self._step_scalars(), [],
                                        _rules.prodigy_update)))
        _, (_, _, scalars, parts, _) = calls[0]
        d, dlr, beta3 = scalars[0], scalars[1], scalars[2]
        has_exp_avg = scalars[9]
        beta1, beta2 = self.param_groups[0]["betas"]
        group = batch.group
        keys = ("s", "p0", "exp_avg_sq", "exp_avg") if has_exp_avg else ("s", "p0", "exp_avg_sq")
        tag = (batch.group_index, batch.is_double)
        columns, _, _ = self._count_step(batch, keys, undo, cache=tag)
        old_steps = undo[-1][1]  # (the counts before this step: _count_step's undo entry)
        s, p0, exp_avg_sq = columns[:3]
        extra = columns[3:]
        params, grads = batch.params, batch.grads
        wd = group["weight_decay"]
        coupled = wd if (wd != 0 and not group["decouple"]) else 0.0
        neg_wd = -wd * dlr if (wd != 0 and group["decouple"]) else 0.0
        sums, coef = None, 0.0
        if group["lr"] > 0.0:
            d0 = group["d0"]
            coef = (d / d0) * dlr
            a_s = (d / d0) * (d if group["safeguard_warmup"] else dlr)
            ptrs, chunks, n_threads = self._table([params, grads, p0, s], tag + ("sums",))
            sums = (ptrs, chunks, _beyond.work_space(self, chunks, tag), batch.is_double,
                    n_threads, coupled, beta3, a_s)
        # (The two tables share only the parameters and gradients, which the
        # aliasing check may see twice: it checks every array of the step.)
        ptrs, chunks, n_threads = self._table([params, grads, exp_avg_sq, *extra],
                                              tag + ("update",))
        parts.append((sums, coef, params, old_steps, ptrs, chunks, batch.is_double, n_threads,
                      coupled, neg_wd, group["eps"], sums is not None))

    def _step_scalars(self):
        """The step's global scalars (see ``beyond.prodigy_run``), from the groups as they are."""
        lr = max(group["lr"] for group in self.param_groups)
        for i, group in enumerate(self.param_groups):
            if group["lr"] not in (lr, 0.0):
                raise ValueError(
                    f"param_groups[{i}]['lr'] is {group['lr']}: Prodigy's groups may only "
                    f"differ from the largest lr ({lr}) by setting lr to 0")
        first = self.param_groups[0]
        beta1, beta2 = first["betas"]
        beta3 = first["beta3"] if first["beta3"] is not None else math.sqrt(beta2)
        k, d = first["k"], first["d"]
        bias = ((1 - beta2 ** (k + 1)) ** 0.5) / (1 - beta1 ** (k + 1)) \
            if first["use_bias_correction"] else 1.0
        dlr = d * lr * bias
        return (float(d), float(dlr), float(beta3), float(first["d_numerator"]),
                float(first["d_max"]), float(first["d_coef"]), float(first["growth_rate"]),
                float(self.param_groups[-1]["d0"]), float(lr), beta1 > 0,
                float(beta1), float(beta2), d * (1 - beta1), d * d * (1 - beta2))
