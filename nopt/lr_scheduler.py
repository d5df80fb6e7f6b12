r"""Learning-rate schedulers with ``torch.optim.lr_scheduler``'s API and numbers.

Every scheduler here takes torch's arguments, raises torch's exception types,
and gives torch's learning rates (tested step by step against torch 2.13).

How each schedule is computed
-----------------------------
Each schedule has ONE formula. torch keeps two for most of them (a recursive
``get_lr`` used by ``step()`` and a ``_get_closed_form_lr`` used by
``step(epoch)``), which disagree in corner cases; nopt has one:

- Schedules that set absolute values (:class:`LambdaLR`, :class:`CyclicLR`,
  :class:`OneCycleLR`, :class:`CosineAnnealingWarmRestarts`) are closed-form
  functions of the step count, as in torch.
- The *chainable* schedules (:class:`StepLR`, :class:`MultiStepLR`,
  :class:`ConstantLR`, :class:`LinearLR`, :class:`ExponentialLR`,
  :class:`PolynomialLR`) act on whatever lr the group has, so that two of
  them on one optimizer (by hand or in :class:`ChainedScheduler`) multiply
  their effects instead of overwriting each other. An absolute closed form
  cannot do that, and the ratio of closed forms :math:`F(t)/F(t-1)` matches
  torch's per-step factor only to about an ulp, which composed schedules can
  magnify past 1e-12 (see :class:`_ChainableScheduler`). So each is defined
  by one per-step multiplier :math:`r(t)` (a closed-form function of
  :math:`t`, torch's recursive factor): ``step()`` applies it to the current
  lr, and ``step(epoch)`` / :class:`SequentialLR` milestones set the lr the
  schedule reaches alone, ``base_lr * r(0) * ... * r(t)``.
- :class:`CosineAnnealingLR` has one function :math:`C(t)`: ``step()``
  scales :math:`lr - \eta_{min}` by :math:`C(t)/C(t-1)` (torch's chainable
  form, bitwise), ``step(epoch)`` sets :math:`\eta_{min} + (\eta_0 - \eta_{min})C(t)`.
- :class:`MultiplicativeLR` (and :class:`nopt.swa_utils.SWALR`) exist only
  relative to the current lr; they have no closed form.

``step()`` gives torch 2.13's values bit for bit in the tests' runs (chains
included); ``step(epoch)`` agrees with torch's closed forms to rtol 1e-12.

The optimizer-step check: ``Optimizer.step`` sets ``optimizer._opt_called``
after every step, so a scheduler warns, as torch does, when its first
``step()`` comes before any ``optimizer.step()``.
"""
import copy
import math
import types
import warnings
from bisect import bisect_right
from collections import Counter

from .optimizer import Optimizer

__all__ = [
    "LRScheduler",
    "LambdaLR",
    "MultiplicativeLR",
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "PolynomialLR",
    "CosineAnnealingLR",
    "SequentialLR",
    "ChainedScheduler",
    "ReduceLROnPlateau",
    "CyclicLR",
    "OneCycleLR",
    "CosineAnnealingWarmRestarts",
]

EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being "
    "deprecated where possible. Please use `scheduler.step()` to step the "
    "scheduler. During the deprecation, if epoch is different from None, the "
    "closed form is used instead of the new chainable form, where available."
)

_STEP_ORDER_WARNING = (
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. "
    "You should call them in the opposite order: `optimizer.step()` before "
    "`lr_scheduler.step()`. Failure to do this will result in skipping the first "
    "value of the learning rate schedule."
)


def _format_param(name, optimizer, param):
    """One value per param group: a list/tuple of that length, or a scalar repeated."""
    if isinstance(param, (list, tuple)):
        if len(param) != len(optimizer.param_groups):
            raise ValueError(
                f"{name} must have the same length as optimizer.param_groups. "
                f"{name} has {len(param)} values, param_groups has {len(optimizer.param_groups)}."
            )
        return list(param)
    return [param] * len(optimizer.param_groups)


def _group_values(optimizer, key):
    return [group[key] for group in optimizer.param_groups]


def _warn_get_lr_called_within_step(scheduler):
    if not scheduler._get_lr_called_within_step:
        warnings.warn(
            "To get the last learning rate computed by the scheduler, please use `get_last_lr()`.",
            UserWarning,
            stacklevel=3,
        )


class _enable_get_lr_call:
    def __init__(self, scheduler):
        self.scheduler = scheduler

    def __enter__(self):
        self.scheduler._get_lr_called_within_step = True
        return self

    def __exit__(self, *exc):
        self.scheduler._get_lr_called_within_step = False


class _initial_mode:
    def __init__(self, scheduler):
        self.scheduler = scheduler

    def __enter__(self):
        self.scheduler._is_initial = True

    def __exit__(self, *exc):
        self.scheduler._is_initial = False


def _set_momentum(group, momentum, use_beta1):
    if use_beta1:
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum


class LRScheduler:
    r"""Base class of the learning-rate schedulers, as ``torch.optim.lr_scheduler.LRScheduler``.

    Subclasses implement :meth:`get_lr`. Constructing a scheduler records
    each group's ``initial_lr`` (kept if already there) as ``base_lrs`` and
    takes the first step (epoch 0), which sets the groups' lrs.

    Parameters
    ----------
    optimizer : nopt.Optimizer
        The optimizer whose ``param_groups[i]["lr"]`` the scheduler sets.
    last_epoch : int, default -1
        Index of the last epoch seen. ``-1`` starts the schedule; another
        value resumes it and needs ``initial_lr`` in every param group
        (e.g. from a loaded optimizer state), else KeyError.

    Notes
    -----
    When restoring a checkpoint, construct the scheduler *before* calling the
    optimizer's ``load_state_dict`` (construction sets the groups' lrs), then
    load the scheduler's state.
    """

    _get_lr_called_within_step = False
    _is_initial = False

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when resuming "
                        "scheduler with last_epoch >= 0.\nThis typically happens when:\n"
                        "1. You're trying to resume training from a checkpoint but haven't "
                        "properly loaded the optimizer state\n"
                        "2. You're using last_epoch >= 0 for a fresh training run (not recommended)"
                    )
        self.base_lrs = _group_values(optimizer, "initial_lr")
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self):
        """Reset the step count and take the construction-time step."""
        self._step_count = 0
        with _initial_mode(self):
            self.step()

    def state_dict(self):
        """The scheduler's state: every attribute except the optimizer.

        Returns
        -------
        dict
            Plain data (numbers, str, None, lists, dicts), savable with
            :func:`nopt.save`.
        """
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict):
        """Load a state made by :meth:`state_dict` (or read back by :func:`nopt.load`)."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        self.__dict__.update(copy.deepcopy(state_dict))

    def get_last_lr(self):
        """The learning rates the last step set, one per param group."""
        return self._last_lr

    def get_lr(self):
        """The learning rates for epoch ``last_epoch`` (use :meth:`get_last_lr` to read them)."""
        raise NotImplementedError

    def step(self, epoch=None):
        """Advance the schedule one epoch and set the groups' lrs.

        Parameters
        ----------
        epoch : int, optional
            Deprecated (as in torch): jump to ``epoch``, using the closed form
            where the scheduler has one. Warns.

        Notes
        -----
        Call after ``optimizer.step()``; the first call warns if no optimizer
        step has run yet.
        """
        if self._step_count == 1 and not getattr(self.optimizer, "_opt_called", False):
            warnings.warn(_STEP_ORDER_WARNING, UserWarning, stacklevel=2)
        self._step_count += 1
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch=None):
        with _enable_get_lr_call(self):
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                self.last_epoch = epoch
                if hasattr(self, "_get_closed_form_lr"):
                    values = self._get_closed_form_lr()
                else:
                    values = self.get_lr()
        groups = self.optimizer.param_groups
        if len(values) != len(groups):
            raise ValueError(
                f"{type(self).__name__} computed {len(values)} learning rates for "
                f"{len(groups)} param groups"
            )
        for group, lr in zip(groups, values):
            group["lr"] = lr
        self._last_lr = _group_values(self.optimizer, "lr")


# Kept for code written against torch's old name.
class _LRScheduler(LRScheduler):
    pass


def _lambda_list(optimizer, lr_lambda):
    if not isinstance(lr_lambda, (list, tuple)):
        return [lr_lambda] * len(optimizer.param_groups)
    if len(lr_lambda) != len(optimizer.param_groups):
        raise ValueError(f"Expected {len(optimizer.param_groups)} lr_lambdas, but got {len(lr_lambda)}")
    return list(lr_lambda)


class _LambdaStateMixin:
    """state_dict without the lambdas: a callable object's ``__dict__`` is kept, functions are not."""

    def state_dict(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = [
            None if isinstance(fn, types.FunctionType) else fn.__dict__.copy()
            for fn in self.lr_lambdas
        ]
        return state

    def load_state_dict(self, state_dict):
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        state = copy.deepcopy({k: v for k, v in state_dict.items() if k != "lr_lambdas"})
        lambdas = state_dict.get("lr_lambdas", [None] * len(self.lr_lambdas))
        self.__dict__.update(state)
        for fn, saved in zip(self.lr_lambdas, lambdas):
            if saved is not None:
                fn.__dict__.update(copy.deepcopy(saved))


class LambdaLR(_LambdaStateMixin, LRScheduler):
    r"""Set each group's lr to its initial lr times a function of the epoch.

    .. math:: \eta_t = \eta_0 \cdot \lambda(t)

    Parameters
    ----------
    optimizer : nopt.Optimizer
    lr_lambda : callable or list of callables
        ``lr_lambda(epoch) -> factor``, or one such function per param group.
    last_epoch : int, default -1

    Notes
    -----
    ``state_dict`` keeps a callable object's ``__dict__`` but not plain
    functions or lambdas, as torch does.
    """

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.optimizer = optimizer
        self.lr_lambdas = _lambda_list(optimizer, lr_lambda)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        return [base_lr * fn(self.last_epoch) for fn, base_lr in zip(self.lr_lambdas, self.base_lrs)]


class MultiplicativeLR(_LambdaStateMixin, LRScheduler):
    r"""Multiply each group's current lr by a function of the epoch, every epoch.

    .. math:: \eta_t = \eta_{t-1} \cdot \lambda(t)

    Parameters
    ----------
    optimizer : nopt.Optimizer
    lr_lambda : callable or list of callables
        ``lr_lambda(epoch) -> factor``, or one per param group.
    last_epoch : int, default -1

    Notes
    -----
    Defined only relative to the current lr (no closed form), so it acts on
    whatever lr the group has, including other schedulers' changes.
    """

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.optimizer = optimizer
        self.lr_lambdas = _lambda_list(optimizer, lr_lambda)
        for fn in self.lr_lambdas:
            if not callable(fn):
                raise TypeError(f"lr_lambda should be a function, but got {type(fn).__name__}")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        return [
            group["lr"] * fn(self.last_epoch)
            for fn, group in zip(self.lr_lambdas, self.optimizer.param_groups)
        ]


class _ChainableScheduler(LRScheduler):
    r"""A chainable schedule given by its per-step multiplier :math:`r(t)`.

    ``step()`` multiplies each group's *current* lr by :math:`r(t)`, torch's
    recursive form, so schedulers on one optimizer compose as in torch.
    ``step(epoch)`` (and :class:`SequentialLR` at a milestone) set the lr
    the schedule reaches alone from the base lr,
    :math:`\eta_0\, r(0)\, r(1) \cdots r(t)`, multiplied in that order: the
    same numbers ``step()`` applies, so the two cannot drift. (torch's
    ``_get_closed_form_lr`` is a separate formula; it agrees with this to a
    few roundings, except in corners such as ``ConstantLR(total_iters=0)``
    where torch's two forms disagree with each other and nopt follows
    ``step()``.)

    Why not a closed form :math:`F(t)` and :math:`r = F(t)/F(t-1)`: that
    ratio matches torch's only to an ulp or so, and composed schedules can
    magnify an ulp (a CosineAnnealingLR with ``eta_min`` chained with a
    PolynomialLR decaying to 0 differed from torch by 3.5e-11); and
    :math:`F` itself underflows or overflows in long exponential runs.
    """

    def _multiplier(self, t, initial):
        """The factor step ``t`` applies to the current lr (``initial``: the construction step)."""
        raise NotImplementedError

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        factor = self._multiplier(self.last_epoch, self._is_initial)
        return [group["lr"] * factor for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        t = self.last_epoch
        factors = [self._multiplier(k, k == 0) for k in range(0, t + 1)]
        lrs = []
        for base_lr in self.base_lrs:
            for factor in factors:
                base_lr = base_lr * factor
            lrs.append(base_lr)
        return lrs


class StepLR(_ChainableScheduler):
    r"""Decay each group's lr by ``gamma`` every ``step_size`` epochs.

    .. math::
        r(t) = \begin{cases} \gamma & t > 0,\ s \mid t \\ 1 & \text{otherwise} \end{cases}
        \qquad\Longrightarrow\qquad \eta_t = \eta_0\, \gamma^{\lfloor t / s \rfloor}

    Parameters
    ----------
    optimizer : nopt.Optimizer
    step_size : int
        Period :math:`s` of the decay.
    gamma : float, default 0.1
        Multiplicative factor of the decay.
    last_epoch : int, default -1
    """

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def _multiplier(self, t, initial):
        if t == 0 or t % self.step_size != 0:
            return 1.0
        return self.gamma


class MultiStepLR(_ChainableScheduler):
    r"""Decay each group's lr by ``gamma`` at each milestone.

    .. math::
        r(t) = \gamma^{\#\{m \in \text{milestones} : m = t\}}
        \qquad\Longrightarrow\qquad
        \eta_t = \eta_0\, \gamma^{\#\{m : 0 \le m \le t\}}

    Parameters
    ----------
    optimizer : nopt.Optimizer
    milestones : iterable of int
        Epochs at which to decay; a repeated milestone decays once per copy.
        Negative milestones never apply (as in torch's ``step()``; torch's
        ``step(epoch)`` would count them).
    gamma : float, default 0.1
    last_epoch : int, default -1
    """

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def _multiplier(self, t, initial):
        if t not in self.milestones:
            return 1.0
        return self.gamma ** self.milestones[t]

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        # nopt.load gives back a plain dict (with the same int keys).
        self.milestones = Counter(self.milestones)


class ConstantLR(_ChainableScheduler):
    r"""Scale each group's lr by ``factor`` until epoch ``total_iters``.

    .. math::
        r(0) = f, \quad r(T) = 1/f, \quad r(t) = 1 \text{ otherwise}
        \qquad\Longrightarrow\qquad
        \eta_t = \eta_0 \cdot \begin{cases} f & t < T \\ 1 & t \ge T \end{cases}

    Parameters
    ----------
    optimizer : nopt.Optimizer
    factor : float, default 1/3
        The factor :math:`f`, in [0, 1] (0 raises ZeroDivisionError at
        :math:`T`, as in torch).
    total_iters : int, default 5
        Epoch :math:`T` at which the lr goes back to its base value. With
        ``total_iters <= 0`` the factor stays applied, as torch's ``step()``
        does.
    last_epoch : int, default -1
    """

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        if factor > 1.0 or factor < 0:
            raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def _multiplier(self, t, initial):
        if t == 0:
            return self.factor
        if t != self.total_iters:
            return 1.0
        return 1.0 / self.factor


class LinearLR(_ChainableScheduler):
    r"""Scale each group's lr by a factor moving linearly from ``start_factor`` to ``end_factor``.

    .. math::
        r(0) = s, \quad
        r(t) = 1 + \frac{e - s}{T s + (t - 1)(e - s)} \ (1 \le t \le T), \quad
        r(t) = 1 \ (t > T)
        \qquad\Longrightarrow\qquad
        \eta_t = \eta_0 \left(s + (e - s)\frac{\min(T, t)}{T}\right)

    Parameters
    ----------
    optimizer : nopt.Optimizer
    start_factor : float, default 1/3
        :math:`s`, in (0, 1].
    end_factor : float, default 1.0
        :math:`e`, in [0, 1].
    total_iters : int, default 5
        :math:`T`, the epochs over which the factor moves (``<= 0``: stays at
        :math:`s`, as torch's ``step()``).
    last_epoch : int, default -1
    """

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError(
                "Starting multiplicative factor expected to be greater than 0 and less or equal to 1."
            )
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def _multiplier(self, t, initial):
        if t == 0:
            return self.start_factor
        if initial or t > self.total_iters:
            return 1.0
        step = self.end_factor - self.start_factor
        return 1.0 + step / (self.total_iters * self.start_factor + (t - 1) * step)


class ExponentialLR(_ChainableScheduler):
    r"""Decay each group's lr by ``gamma`` every epoch.

    .. math:: r(t) = \gamma \ (t \ge 1) \qquad\Longrightarrow\qquad \eta_t = \eta_0\, \gamma^t

    Parameters
    ----------
    optimizer : nopt.Optimizer
    gamma : float
    last_epoch : int, default -1
    """

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def _multiplier(self, t, initial):
        return 1.0 if initial else self.gamma


class PolynomialLR(_ChainableScheduler):
    r"""Decay each group's lr polynomially to 0 over ``total_iters`` epochs.

    .. math::
        r(t) = \left(\frac{1 - t/T}{1 - (t - 1)/T}\right)^{p} \ (1 \le t \le T)
        \qquad\Longrightarrow\qquad
        \eta_t = \eta_0 \left(1 - \frac{\min(T, t)}{T}\right)^{p}

    Parameters
    ----------
    optimizer : nopt.Optimizer
    total_iters : int, default 5
        :math:`T` (``<= 0``: no decay, as torch's ``step()``).
    power : float, default 1.0
        :math:`p`.
    last_epoch : int, default -1
    """

    def __init__(self, optimizer, total_iters=5, power=1.0, last_epoch=-1):
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch)

    def _multiplier(self, t, initial):
        if initial or t > self.total_iters:
            return 1.0
        return ((1.0 - t / self.total_iters) / (1.0 - (t - 1) / self.total_iters)) ** self.power


class CosineAnnealingLR(LRScheduler):
    r"""Anneal each group's lr along a cosine from its base value to ``eta_min``.

    .. math::
        \eta_t = \eta_{min} + (\eta_0 - \eta_{min})\, C(t), \qquad
        C(t) = \frac{1 + \cos(\pi t / T_{max})}{2}

    The cosine continues past :math:`T_{max}` (the lr rises again), as in
    torch. [1]_

    Parameters
    ----------
    optimizer : nopt.Optimizer
    T_max : int
        Half period, in epochs.
    eta_min : float, default 0.0
        Minimum lr.
    last_epoch : int, default -1

    Notes
    -----
    ``step()`` is chainable like torch's: it scales the group's current
    :math:`\eta - \eta_{min}` by :math:`C(t)/C(t-1)`; right after a trough,
    where :math:`C(t-1) = 0`, it adds :math:`(\eta_0 - \eta_{min})(1 - \cos(\pi/T))/2`
    (which is :math:`C(t)` there) in torch's form, so the next half period
    starts from torch's value (evaluating :math:`C` there, through a cosine
    near :math:`-1`, can differ by over 1e-12 relative, e.g. at
    :math:`T_{max} = 243`). ``step(epoch)`` and :class:`SequentialLR` use
    :math:`C` directly.

    References
    ----------
    .. [1] Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm
       Restarts", ICLR 2017.
    """

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def _cosine(self, t):
        return (1 + math.cos(math.pi * t / self.T_max)) / 2

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        groups = self.optimizer.param_groups
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        t = self.last_epoch
        if (t - 1 - self.T_max) % (2 * self.T_max) == 0:
            return [
                group["lr"] + (base_lr - self.eta_min) * (1 - math.cos(math.pi / self.T_max)) / 2
                for base_lr, group in zip(self.base_lrs, groups)
            ]
        ratio = self._cosine(t) / self._cosine(t - 1)
        return [ratio * (group["lr"] - self.eta_min) + self.eta_min for group in groups]

    def _get_closed_form_lr(self):
        c = self._cosine(self.last_epoch)
        return [self.eta_min + (base_lr - self.eta_min) * c for base_lr in self.base_lrs]


def _check_schedulers(owner, optimizer, schedulers):
    name = type(owner).__name__
    for i, scheduler in enumerate(schedulers):
        if not hasattr(scheduler, "optimizer"):
            raise TypeError(f"{name} at index {i} should have `optimizer` as its attribute.")
        if isinstance(scheduler, ReduceLROnPlateau):
            raise ValueError(
                f"{name} does not support `ReduceLROnPlateau` scheduler as it requires additional "
                "kwargs to be specified when calling `step`, but got one at index "
                f"{i} in the given schedulers sequence."
            )
        if optimizer != scheduler.optimizer:
            raise ValueError(
                f"{name} expects all schedulers to belong to the same optimizer, but got scheduler "
                f"{type(scheduler).__name__} at index {i} has {scheduler.optimizer}, which is "
                f"different from {type(optimizer).__name__}."
            )


class _CompositeStateMixin:
    def state_dict(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        children = state_dict["_schedulers"]
        if len(children) != len(self._schedulers):
            raise ValueError(
                f"state_dict holds {len(children)} schedulers; this {type(self).__name__} "
                f"has {len(self._schedulers)}"
            )
        self.__dict__.update(copy.deepcopy({k: v for k, v in state_dict.items() if k != "_schedulers"}))
        for scheduler, child in zip(self._schedulers, children):
            scheduler.load_state_dict(child)


class SequentialLR(_CompositeStateMixin, LRScheduler):
    r"""Run schedulers one after another, switching at the milestones.

    At milestone :math:`m_i` scheduler :math:`i+1` restarts from its epoch 0
    (its closed form at 0, from the base lrs).

    Parameters
    ----------
    optimizer : nopt.Optimizer
    schedulers : list of LRScheduler
        Built on ``optimizer``; not :class:`ReduceLROnPlateau`.
    milestones : list of int
        ``len(schedulers) - 1`` epochs at which to switch.
    last_epoch : int, default -1
    """

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        if len(schedulers) < 1:
            raise ValueError(
                f"{type(self).__name__} expects at least one scheduler, but got no scheduler."
            )
        _check_schedulers(self, optimizer, schedulers)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "Sequential Schedulers expects number of schedulers provided to be one more than the "
                f"number of milestone points, but got number of schedulers {len(schedulers)} and the "
                f"number of milestones to be equal to {len(milestones)}"
            )
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        # Undo the construction steps the schedulers took, then take the first one's again.
        self.recursive_undo()
        idx = bisect_right(self._milestones, 0)
        self._schedulers[idx]._initial_step()
        self._last_lr = schedulers[idx].get_last_lr()

    def recursive_undo(self, sched=None):
        """Step back the ``last_epoch`` of every (nested) scheduler by one."""
        scheds = self if sched is None else sched
        if hasattr(scheds, "_schedulers"):
            for s in scheds._schedulers:
                self.recursive_undo(s)
        elif hasattr(scheds, "last_epoch"):
            scheds.last_epoch -= 1

    def step(self):
        """Step the scheduler in charge of the next epoch (restarting it at a milestone)."""
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()


class ChainedScheduler(_CompositeStateMixin, LRScheduler):
    r"""Step several schedulers of one optimizer together, in order.

    Chainable schedulers multiply their effects (e.g. a warm-up
    :class:`LinearLR` chained with an :class:`ExponentialLR` decay).

    Parameters
    ----------
    schedulers : sequence of LRScheduler
        Not :class:`ReduceLROnPlateau`; all on one optimizer.
    optimizer : nopt.Optimizer, optional
        Defaults to the first scheduler's optimizer.
    """

    def __init__(self, schedulers, optimizer=None):
        if len(schedulers) < 1:
            raise ValueError(
                f"{type(self).__name__} expects at least one scheduler to be chained, but got no scheduler."
            )
        optimizer = optimizer or schedulers[0].optimizer
        _check_schedulers(self, optimizer, schedulers)
        self._schedulers = schedulers
        self.optimizer = optimizer
        self._last_lr = _group_values(self._schedulers[-1].optimizer, "lr")

    def step(self):
        """Step every scheduler, in order."""
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = _group_values(self._schedulers[-1].optimizer, "lr")


class ReduceLROnPlateau(LRScheduler):
    r"""Reduce each group's lr by ``factor`` when a metric stops improving.

    After more than ``patience`` epochs without improvement on the best value
    seen, each lr becomes :math:`\max(\eta \cdot \text{factor}, \eta_{min})`
    (skipped when the change is at most ``eps``), then ``cooldown`` epochs
    pass without counting bad epochs.

    Improvement of :math:`a` over the best :math:`b`, with threshold
    :math:`\tau`: ``min``/``rel``: :math:`a < b(1-\tau)`; ``min``/``abs``:
    :math:`a < b - \tau`; ``max``/``rel``: :math:`a > b(1+\tau)`;
    ``max``/``abs``: :math:`a > b + \tau`.

    Parameters
    ----------
    optimizer : nopt.Optimizer
    mode : {'min', 'max'}, default 'min'
    factor : float, default 0.1
        Must be < 1.
    patience : int, default 10
    threshold : float, default 1e-4
    threshold_mode : {'rel', 'abs'}, default 'rel'
    cooldown : int, default 0
    min_lr : float or list of float, default 0
        Lower bound on the lr, for all groups or per group.
    eps : float, default 1e-8
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8):
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        self.factor = factor
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(optimizer.param_groups):
                raise ValueError(f"expected {len(optimizer.param_groups)} min_lrs, got {len(min_lr)}")
            self.default_min_lr = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(optimizer.param_groups)
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = _group_values(optimizer, "lr")
        self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
        self._reset()

    def _reset(self):
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(self, metrics, epoch=None):
        """Record the metric of an epoch and reduce the lrs if it has plateaued.

        Parameters
        ----------
        metrics : float
            The monitored value (anything ``float()`` accepts).
        epoch : int, optional
            Deprecated, as in torch; warns.
        """
        current = float(metrics)
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self.last_epoch = epoch
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr(epoch)
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = _group_values(self.optimizer, "lr")

    def _reduce_lr(self, epoch):
        if len(self.optimizer.param_groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(
                    f"The number of param groups in the `optimizer` ({len(self.optimizer.param_groups)}) "
                    f"differs from when `ReduceLROnPlateau` was initialized ({len(self.min_lrs)}), usually "
                    "due to a new param group being added to the optimizer. Please modify the `min_lrs` "
                    "field to match the length of the `optimizer` param groups."
                )
            self.min_lrs = [self.default_min_lr] * len(self.optimizer.param_groups)
        for i, group in enumerate(self.optimizer.param_groups):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, self.min_lrs[i])
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    @property
    def in_cooldown(self):
        """Whether the scheduler is in its cooldown period."""
        return self.cooldown_counter > 0

    def _is_better(self, a, best):
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min" and self.threshold_mode == "abs":
            return a < best - self.threshold
        if self.mode == "max" and self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def _init_is_better(self, mode, threshold, threshold_mode):
        if mode not in {"min", "max"}:
            raise ValueError("mode " + mode + " is unknown!")
        if threshold_mode not in {"rel", "abs"}:
            raise ValueError("threshold mode " + threshold_mode + " is unknown!")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._init_is_better(mode=self.mode, threshold=self.threshold, threshold_mode=self.threshold_mode)


class CyclicLR(LRScheduler):
    r"""Cycle each group's lr between ``base_lr`` and ``max_lr`` (cyclical learning rates). [1]_

    With :math:`S` = ``step_size_up + step_size_down``, :math:`r` =
    ``step_size_up / S``, cycle :math:`c = \lfloor 1 + t/S \rfloor` and
    :math:`x = 1 + t/S - c`:

    .. math::
        h &= x / r \ \text{if}\ x \le r \ \text{else}\ (x - 1)/(r - 1) \\
        \eta_t &= \eta_{base} + (\eta_{max} - \eta_{base})\, h\, \sigma \\
        m_t &= m_{max} - (m_{max} - m_{base})\, h\, \sigma

    where :math:`\sigma` = ``scale_fn(c)`` (``scale_mode='cycle'``) or
    ``scale_fn(t)`` (``'iterations'``): 1 (``triangular``),
    :math:`2^{1-c}` (``triangular2``), :math:`\gamma^t` (``exp_range``).

    Parameters
    ----------
    optimizer : nopt.Optimizer
    base_lr, max_lr : float or list of float
        Cycle bounds, for all groups or per group. ``base_lr`` is set as the
        groups' lr at construction.
    step_size_up : int, default 2000
    step_size_down : int, optional
        Defaults to ``step_size_up``.
    mode : {'triangular', 'triangular2', 'exp_range'}, default 'triangular'
        Ignored when ``scale_fn`` is given.
    gamma : float, default 1.0
        Base of ``exp_range``.
    scale_fn : callable, optional
        Custom ``scale_fn(x) -> float``, used with ``scale_mode``.
    scale_mode : {'cycle', 'iterations'}, default 'cycle'
    cycle_momentum : bool, default True
        Cycle ``momentum`` (or ``betas[0]``) inversely to the lr between
        ``base_momentum`` and ``max_momentum``. The optimizer must have a
        ``momentum`` or ``betas`` hyperparameter.
    base_momentum, max_momentum : float or list of float, default 0.8, 0.9
    last_epoch : int, default -1
        Counts batches: step once per batch.

    References
    ----------
    .. [1] Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017.
    """

    def __init__(self, optimizer, base_lr, max_lr, step_size_up=2000, step_size_down=None,
                 mode="triangular", gamma=1.0, scale_fn=None, scale_mode="cycle",
                 cycle_momentum=True, base_momentum=0.8, max_momentum=0.9, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        base_lrs = _format_param("base_lr", optimizer, base_lr)
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups):
                group["lr"] = lr
        self.max_lrs = _format_param("max_lr", optimizer, max_lr)
        step_size_up = float(step_size_up)
        step_size_down = float(step_size_down) if step_size_down is not None else step_size_up
        self.total_size = step_size_up + step_size_down
        self.step_ratio = step_size_up / self.total_size
        if mode not in ["triangular", "triangular2", "exp_range"] and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_fn()
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError(
                    "optimizer must support momentum or beta1 with `cycle_momentum` option enabled"
                )
            self.use_beta1 = "betas" in optimizer.defaults
            self.base_momentums = _format_param("base_momentum", optimizer, base_momentum)
            self.max_momentums = _format_param("max_momentum", optimizer, max_momentum)
            if last_epoch == -1:
                for m_max, m_base, group in zip(self.max_momentums, self.base_momentums,
                                                optimizer.param_groups):
                    _set_momentum(group, m_max, self.use_beta1)
                    group["max_momentum"] = m_max
                    group["base_momentum"] = m_base
        super().__init__(optimizer, last_epoch)
        # As torch: the construction step used the groups' initial_lr; from
        # now on the cycle runs from base_lr.
        self.base_lrs = base_lrs

    def _init_scale_fn(self):
        if self._scale_fn_custom is not None:
            return
        if self.mode in ("triangular", "triangular2"):
            self.scale_mode = "cycle"
        elif self.mode == "exp_range":
            self.scale_mode = "iterations"

    def scale_fn(self, x):
        """The amplitude scale at ``x`` (a cycle number or an iteration, per ``scale_mode``)."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return self.gamma ** x

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        t = self.last_epoch
        cycle = math.floor(1 + t / self.total_size)
        x = 1.0 + t / self.total_size - cycle
        if x <= self.step_ratio:
            scale_factor = x / self.step_ratio
        else:
            scale_factor = (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle) if self.scale_mode == "cycle" else self.scale_fn(t)
        lrs = [
            base_lr + (max_lr - base_lr) * scale_factor * scale
            for base_lr, max_lr in zip(self.base_lrs, self.max_lrs)
        ]
        if self.cycle_momentum:
            for group, m_base, m_max in zip(self.optimizer.param_groups, self.base_momentums,
                                            self.max_momentums):
                momentum = m_max - (m_max - m_base) * scale_factor * scale
                _set_momentum(group, momentum, self.use_beta1)
        return lrs

    def state_dict(self):
        """State as in torch: a custom ``scale_fn`` is kept only as a callable object's ``__dict__``."""
        state = super().state_dict()
        fn = state.pop("_scale_fn_custom")
        state["_scale_fn_custom"] = None
        if fn is not None and not isinstance(fn, types.FunctionType):
            state["_scale_fn_custom"] = fn.__dict__.copy()
        return state

    def load_state_dict(self, state_dict):
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        state = dict(state_dict)
        fn_state = state.pop("_scale_fn_custom", None)
        custom = self._scale_fn_custom
        super().load_state_dict(state)
        self._scale_fn_custom = custom
        if fn_state is not None:
            custom.__dict__.update(copy.deepcopy(fn_state))
        self._init_scale_fn()


class CosineAnnealingWarmRestarts(LRScheduler):
    r"""Cosine annealing with warm restarts (SGDR). [1]_

    .. math::
        \eta_t = \eta_{min} + (\eta_0 - \eta_{min})\,
        \frac{1 + \cos(\pi\, T_{cur} / T_i)}{2}

    where :math:`T_{cur}` counts epochs (possibly fractional) since the last
    restart and :math:`T_i` is the current period: :math:`T_0`, then
    multiplied by :math:`T_{mult}` at each restart.

    Parameters
    ----------
    optimizer : nopt.Optimizer
    T_0 : int
        First period, > 0.
    T_mult : int, default 1
        Period growth factor, >= 1.
    eta_min : float, default 0.0
    last_epoch : int, default -1

    Notes
    -----
    ``step(epoch)`` accepts fractional epochs (e.g. ``epoch + i / iters``
    within an epoch) and does not warn, as in torch.

    References
    ----------
    .. [1] Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm
       Restarts", ICLR 2017.
    """

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0.0, last_epoch=-1):
        if T_0 <= 0 or not isinstance(T_0, int):
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if T_mult < 1 or not isinstance(T_mult, int):
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if not isinstance(eta_min, (float, int)):
            raise ValueError(
                f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}"
            )
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        c = (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
        return [self.eta_min + (base_lr - self.eta_min) * c for base_lr in self.base_lrs]

    def step(self, epoch=None):
        """Advance one epoch, or go to ``epoch`` (may be fractional, >= 0).

        Parameters
        ----------
        epoch : float, optional
            The (fractional) epoch to move to; ``None`` moves one epoch on.
        """
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            if epoch < 0:
                raise ValueError(f"Expected non-negative epoch, but got {epoch}")
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    n = int(math.log(epoch / self.T_0 * (self.T_mult - 1) + 1, self.T_mult))
                    self.T_cur = epoch - self.T_0 * (self.T_mult ** n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult ** n
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        with _enable_get_lr_call(self):
            values = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = _group_values(self.optimizer, "lr")


class OneCycleLR(LRScheduler):
    r"""The 1cycle policy: warm up to ``max_lr``, then anneal far below the start. [1]_

    Phases (``three_phase=False``): from ``initial_lr = max_lr / div_factor``
    up to ``max_lr`` over ``pct_start * total_steps - 1`` steps, then down
    to ``min_lr = initial_lr / final_div_factor`` at ``total_steps - 1``.
    With ``three_phase=True``: up, back down to ``initial_lr`` symmetrically,
    then down to ``min_lr``. Within a phase from :math:`a` to :math:`b` at
    fraction :math:`p`:

    .. math::
        \text{cos}: \ b + \frac{a - b}{2}\,(1 + \cos \pi p) \qquad
        \text{linear}: \ (b - a)\,p + a

    Momentum (``momentum`` or ``betas[0]``) moves inversely, between
    ``max_momentum`` and ``base_momentum``.

    Parameters
    ----------
    optimizer : nopt.Optimizer
    max_lr : float or list of float
    total_steps : int, optional
        Number of steps; else ``epochs * steps_per_epoch``.
    epochs, steps_per_epoch : int, optional
    pct_start : float, default 0.3
        Fraction of the steps spent increasing the lr (a float in [0, 1]).
    anneal_strategy : {'cos', 'linear'}, default 'cos'
    cycle_momentum : bool, default True
    base_momentum, max_momentum : float or list of float, default 0.85, 0.95
    div_factor : float, default 25.0
    final_div_factor : float, default 1e4
    three_phase : bool, default False
    last_epoch : int, default -1
        Counts batches: step once per batch. Stepping past ``total_steps``
        raises ValueError.

    References
    ----------
    .. [1] Smith & Topin, "Super-Convergence: Very Fast Training of Neural
       Networks Using Large Learning Rates", 2017.
    """

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85,
                 max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=False,
                 last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        if total_steps is not None:
            if total_steps <= 0 or not isinstance(total_steps, int):
                raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            if not isinstance(epochs, int) or epochs <= 0:
                raise ValueError(f"Expected positive integer epochs, but got {epochs}")
            if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
                raise ValueError(
                    f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}"
                )
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")

        up_end = float(pct_start * self.total_steps) - 1
        if three_phase:
            self._schedule_phases = [
                _phase(up_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                _phase(float(2 * pct_start * self.total_steps) - 2, "max_lr", "initial_lr",
                       "base_momentum", "max_momentum"),
                _phase(self.total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"),
            ]
        else:
            self._schedule_phases = [
                _phase(up_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                _phase(self.total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"),
            ]

        if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError(
                f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}"
            )
        self._anneal_func_type = anneal_strategy

        max_lrs = _format_param("max_lr", optimizer, max_lr)
        if last_epoch == -1:
            for group, group_max in zip(optimizer.param_groups, max_lrs):
                group["initial_lr"] = group_max / div_factor
                group["max_lr"] = group_max
                group["min_lr"] = group["initial_lr"] / final_div_factor

        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError(
                    "optimizer must support momentum or beta1 with `cycle_momentum` option enabled"
                )
            self.use_beta1 = "betas" in optimizer.defaults
            max_momentums = _format_param("max_momentum", optimizer, max_momentum)
            base_momentums = _format_param("base_momentum", optimizer, base_momentum)
            if last_epoch == -1:
                for m_max, m_base, group in zip(max_momentums, base_momentums, optimizer.param_groups):
                    _set_momentum(group, m_max, self.use_beta1)
                    group["max_momentum"] = m_max
                    group["base_momentum"] = m_base
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise ValueError(
                f"Tried to step {step_num} times. The specified number of total steps is {self.total_steps}"
            )
        last = len(self._schedule_phases) - 1
        lrs = []
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step_num <= end_step or i == last:
                    pct = (step_num - start_step) / (end_step - start_step)
                    lr = self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct)
                    if self.cycle_momentum:
                        momentum = self._anneal(group[phase["start_momentum"]],
                                                group[phase["end_momentum"]], pct)
                    break
                start_step = phase["end_step"]
            lrs.append(lr)
            if self.cycle_momentum:
                _set_momentum(group, momentum, self.use_beta1)
        return lrs


def _phase(end_step, start_lr, end_lr, start_momentum, end_momentum):
    return {"end_step": end_step, "start_lr": start_lr, "end_lr": end_lr,
            "start_momentum": start_momentum, "end_momentum": end_momentum}
