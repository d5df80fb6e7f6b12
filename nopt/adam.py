"""Adam and AdamW, with AMSGrad, maximize and coupled or decoupled weight decay.

This module also holds the helpers the other Adam-family optimizers
(Adamax, NAdam, RAdam) share: hyperparameter validation and the checked,
lazy creation of per-parameter state.
"""
import numbers

from ._kernels import _plan
from ._kernels.adam import adam as _adam_kernel
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


def _batch_states(optimizer, batches, keys, make):
    """The state dicts of each batch's parameters: checked, then lazily created.

    Every existing (non-empty) state of every batch is checked for ``keys``
    first, so a state that cannot be stepped raises before anything changes.
    Then each empty state is filled from ``make(group, params)``, a list of new
    state dicts, as torch's lazy initialisation does on a parameter's first
    step. ``keys`` may depend on the group: ``keys(group)`` when callable.

    Returns
    -------
    list of list of dict
        Per batch, the (live) state dict of each of its parameters.
    """
    get = optimizer.state.get
    found = []
    for batch in batches:
        wanted = keys(batch.group) if callable(keys) else keys
        wanted_set = frozenset(wanted)
        states = [get(p) for p in batch.params]
        bad = [k for k, s in enumerate(states) if s and not s.keys() >= wanted_set]
        if bad:
            k = bad[0]
            missing = [key for key in wanted if key not in states[k]]
            raise ValueError(
                f"the state of param_groups[{batch.group_index}]['params'][{batch.indices[k]}] "
                f"has no {', '.join(repr(m) for m in missing)} entry; expected the keys "
                f"{list(wanted)} for this group's options (was an option such as "
                "'amsgrad' switched on after the state was created?)"
            )
        found.append(states)
    for batch, states in zip(batches, found):
        fresh = [k for k, s in enumerate(states) if not s]
        if fresh:
            params = [batch.params[k] for k in fresh]
            for k, p, new in zip(fresh, params, make(batch.group, params)):
                state = optimizer.state[p]
                state.update(new)
                states[k] = state
    return found


def _zero_state(optimizer, params, keys, **scalars):
    """New states for ``params``: ``scalars`` plus a flat zero array per key."""
    arrays = [optimizer._flat_zeros(params) for _ in keys]
    return [
        {**scalars, **{key: arrays[i][k] for i, key in enumerate(keys)}}
        for k in range(len(params))
    ]


def _run(kernel, planned):
    """Run planned kernel calls, then advance their states' step counts.

    ``planned`` holds ``(streams, is_double, args, states, updates)``. All
    scalars are computed (and any error raised) while planning, before this
    runs, so a step is applied to every batch or to none.
    """
    tables = [(_plan.make_table(streams), is_double, args, states, updates)
              for streams, is_double, args, states, updates in planned]
    for (ptrs, chunks, n_threads), is_double, args, states, updates in tables:
        kernel(ptrs, chunks, is_double, n_threads, *args)
        for s in states:
            s.update(updates)


def _part_streams(batch, states, part, keys):
    """The kernel streams of the parameters ``part`` of a batch, and their states."""
    part_states = [states[k] for k in part]
    streams = [[batch.params[k] for k in part], [batch.grads[k] for k in part]]
    streams += [[s[key] for s in part_states] for key in keys]
    return streams, part_states


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


# ---------------------------------------------------------------- Adam
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

    _elementwise_state = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=False):
        betas = _validate(lr, betas, eps, weight_decay)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    @staticmethod
    def _keys(group):
        if group["amsgrad"]:
            return ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
        return ("step", "exp_avg", "exp_avg_sq")

    def _new_state(self, group, params):
        return _zero_state(self, params, self._keys(group)[1:], step=0.0)

    def step(self, closure=None):
        """Perform one optimization step; return the closure's loss if given."""
        loss = None
        if closure is not None:
            loss = closure()
        batches = self._batches()
        all_states = _batch_states(self, batches, self._keys, self._new_state)
        planned = []
        for batch, states in zip(batches, all_states):
            group = batch.group
            keys = self._keys(group)[1:]
            beta1, beta2 = group["betas"]
            lr = group["lr"]
            decay, l2 = _decay_terms(group)
            sign = -1.0 if group["maximize"] else 1.0
            steps = [float(s["step"]) for s in states]
            for old_step, part in self._split_by(batch.params, steps):
                step = old_step + 1
                bias_correction1 = 1 - beta1 ** step
                bias_correction2 = 1 - beta2 ** step
                args = (sign, decay, l2, 1 - beta1, beta2, 1 / bias_correction2 ** 0.5,
                        group["eps"], -(lr / bias_correction1), group["amsgrad"])
                streams, part_states = _part_streams(batch, states, part, keys)
                planned.append((streams, batch.is_double, args, part_states, {"step": step}))
        _run(_adam_kernel, planned)
        return loss


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
