"""optax's most used combinators as optimizer wrappers: MultiSteps and Lookahead.

Both wrap any nopt optimizer (or another wrapper, such as
:class:`nopt.ApplyIfFinite`), expose its ``param_groups`` and ``state``, and
save their own counters and buffers next to the wrapped optimizer's state
dict. Attach learning-rate schedulers to the innermost optimizer (schedulers
need a :class:`nopt.Optimizer`).
"""
import numbers

import numpy as np

from ._kernels import _plan
from ._kernels.helpers import accumulate, lookahead_sync
from .optimizer import Optimizer

__all__ = ["MultiSteps", "Lookahead"]


def _innermost(optimizer):
    """The :class:`Optimizer` inside any chain of wrappers (each with ``.optimizer``)."""
    inner = optimizer
    while not isinstance(inner, Optimizer):
        inner = getattr(inner, "optimizer", None)
        if inner is None:
            raise TypeError(
                f"expected a nopt optimizer or a wrapper of one, got {type(optimizer).__name__}")
    return inner


def _check_count(name, value, low):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


def _param_ids(optimizer):
    """Parameters in state-dict order (ids counted across groups), as ``Optimizer.state_dict``."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def _load_arrays(saved, params, where):
    """Check a ``{index: array}`` dict against ``params``; return ``{param: copy}``."""
    if not isinstance(saved, dict):
        raise TypeError(f"{where} must be a dict of arrays")
    out = {}
    for index, value in saved.items():
        if not isinstance(index, numbers.Integral) or not 0 <= index < len(params):
            raise ValueError(f"{where} refers to parameter id {index!r}, which no group lists")
        p = params[index]
        if not isinstance(value, np.ndarray) or value.shape != p.shape or value.dtype.kind != "f":
            raise ValueError(f"{where}[{index}] must be a float array of shape {p.shape}")
        out[p] = value
    return out


def _plans_its_step(optimizer):
    """Whether ``optimizer.step`` runs through ``Optimizer._plan_then_run`` (see ``_Wrapper``)."""
    return isinstance(optimizer, Optimizer) and (
        optimizer.rule is not None or type(optimizer)._plan is not Optimizer._plan)


class _Wrapper:
    """What every wrapper forwards to the optimizer it wraps.

    A wrapper's own changes (its counters, MultiSteps' mean gradient,
    Lookahead's synchronisation) are ``(function, args)`` calls of C
    functions, run by ``_plan.run`` like a step's kernels: when the wrapped
    optimizer plans its step (``Optimizer._plan_then_run``), in the very run
    phase of that step, so that a Ctrl-C applies the wrapped step and the
    wrapper's changes together or not at all. Around another wrapper, or an
    optimizer with a ``step`` of its own (LBFGS, CG, SparseAdam), they run
    just before and just after its step.
    """

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def zero_grad(self, set_to_none=True):
        self.optimizer.zero_grad(set_to_none)

    def _batches(self):
        return _innermost(self.optimizer)._batches()

    def _step_with(self, closure, before, after, applied=None):
        """Step the wrapped optimizer with ``before`` and ``after`` (lists of calls) around it.

        ``applied()`` (fallback path only) says whether the wrapped step was
        applied (a wrapped ApplyIfFinite may skip it); ``after`` runs only then.
        """
        inner = self.optimizer
        if _plans_its_step(inner):
            inner._run_around = (before, after)
            try:
                return inner.step(closure) if closure is not None else inner.step()
            finally:
                # (Taken by _plan_then_run; still there if the step failed earlier.)
                inner.__dict__.pop("_run_around", None)
        _plan.run(before)
        try:
            loss = inner.step(closure) if closure is not None else inner.step()
        except BaseException:
            if applied is None:
                _plan.run(after)  # (MultiSteps: a cycle whose step failed is dropped, as before)
            raise
        if applied is None or applied():
            _plan.run(after)
        return loss


class MultiSteps(_Wrapper):
    r"""Gradient accumulation: step the wrapped optimizer every ``every_k`` calls, with the mean gradient.

    As ``optax.MultiSteps``: calls ``1, ..., k-1`` of each cycle only add the
    gradients into a flat buffer per group and dtype (one kernel call each);
    call ``k`` hands the wrapped optimizer the mean

    .. math:: \bar g = \frac{1}{k}\sum_{i=1}^{k} g_i

    as the parameters' gradients for its step, then gives the callers'
    gradients back. A parameter that had no gradient in any call of the
    cycle has none in the step.

    Parameters
    ----------
    optimizer : nopt.Optimizer or wrapper
        The optimizer to step every ``every_k`` calls.
    every_k : int
        Calls per optimizer step (1: every call steps).

    Attributes
    ----------
    mini_step : int
        Calls accumulated in the current cycle (0 after a step).
    last_step_applied : bool or None
        Whether the last call stepped the wrapped optimizer.
    """

    def __init__(self, optimizer, every_k):
        _innermost(optimizer)
        _check_count("every_k", every_k, 1)
        self.optimizer = optimizer
        self.every_k = int(every_k)
        self.mini_step = 0
        self.last_step_applied = None
        self._accumulators = {}     # Parameter -> its view in a flat buffer (kept across cycles)
        self._seen = set()          # parameters with a gradient in this cycle

    def step(self, closure=None):
        """Accumulate this call's gradients; on every ``every_k``-th call, step with their mean.

        Returns the closure's loss (if any). All or nothing: the accumulation,
        the counters and (on the ``every_k``-th call) the wrapped step run as
        one run phase (see ``_Wrapper``).
        """
        loss = closure() if closure is not None else None
        batches = self._batches()           # checks every gradient before anything changes
        last = self.mini_step + 1 == self.every_k
        scale = 1.0 / self.every_k if last else 1.0
        for batch in batches:
            new = [p for p in batch.params if p not in self._accumulators]
            for p, buf in zip(new, Optimizer._flat_zeros(new)):
                self._accumulators[p] = buf
        seen = self._seen
        calls, keep_alive = [], []
        for batch in batches:
            # A buffer not yet written in this cycle is overwritten (acc = g*scale).
            for first in (False, True):
                keep = [k for k, p in enumerate(batch.params) if (p not in seen) == first]
                if keep:
                    accs = [self._accumulators[batch.params[k]] for k in keep]
                    grads = [batch.grads[k] for k in keep]
                    keep_alive.append((accs, grads))
                    ptrs, chunks, n_threads = _plan.make_table([accs, grads])
                    calls.append((accumulate, (ptrs, chunks, batch.is_double, n_threads, scale,
                                               first)))
        in_call = {p for batch in batches for p in batch.params}
        if not last:
            calls += [(seen.update, (in_call,)),
                      (setattr, (self, "mini_step", self.mini_step + 1)),
                      (setattr, (self, "last_step_applied", False))]
            _plan.run(calls)
            return loss
        # Parameters seen earlier in the cycle but without a gradient now: divide their sums.
        for dtype in ("float32", "float64"):
            rest = [p for p in seen if p not in in_call and p.dtype == dtype]
            if rest:
                accs = [self._accumulators[p] for p in rest]
                keep_alive.append(accs)
                ptrs, chunks, n_threads = _plan.make_table([accs, accs])
                calls.append((accumulate, (ptrs, chunks, dtype == "float64", n_threads, scale,
                                           True)))
        self._step_with_mean(calls, seen | in_call)
        return loss

    def _step_with_mean(self, calls, seen):
        # Params seen in the cycle get the mean; the others have no gradient in the step.
        params = _param_ids(self.optimizer)
        saved = [p.grad for p in params]
        after = [(setattr, (self, "_seen", set())), (setattr, (self, "mini_step", 0)),
                 (setattr, (self, "last_step_applied", True))]
        try:
            for p in params:
                p.grad = self._accumulators[p] if p in seen else None
            self._step_with(None, calls, after)
        finally:
            for p, g in zip(params, saved):
                p.grad = g

    def state_dict(self):
        """The wrapped optimizer's state dict, ``mini_step`` and the accumulators by parameter id."""
        params = _param_ids(self.optimizer)
        index = {id(p): i for i, p in enumerate(params)}
        return {
            "optimizer": self.optimizer.state_dict(),
            "every_k": self.every_k,
            "mini_step": self.mini_step,
            "accumulators": {index[id(p)]: acc for p, acc in self._accumulators.items()
                             if p in self._seen},
        }

    def load_state_dict(self, state_dict):
        """Load :meth:`state_dict`'s output; everything is checked before anything changes."""
        for key in ("optimizer", "every_k", "mini_step", "accumulators"):
            if key not in state_dict:
                raise ValueError(f"MultiSteps state dict has no '{key}' entry")
        _check_count("loaded every_k", state_dict["every_k"], 1)
        _check_count("loaded mini_step", state_dict["mini_step"], 0)
        if state_dict["mini_step"] >= state_dict["every_k"]:
            raise ValueError("loaded mini_step must be below every_k")
        params = _param_ids(self.optimizer)
        arrays = _load_arrays(state_dict["accumulators"], params, "loaded accumulators")
        self.optimizer.load_state_dict(state_dict["optimizer"])
        copies = {}
        groups = {}
        for p in params:
            if p in arrays:
                groups.setdefault(p.dtype.str, []).append(p)
        for members in groups.values():
            for p, buf in zip(members, Optimizer._flat_zeros(members)):
                buf[...] = arrays[p]
                copies[p] = buf
        self.every_k = int(state_dict["every_k"])
        self.mini_step = int(state_dict["mini_step"])
        self._accumulators = copies
        self._seen = set(copies)

    def __repr__(self):
        return f"MultiSteps({self.optimizer!r}, every_k={self.every_k})"


class Lookahead(_Wrapper):
    r"""Lookahead: the wrapped ("fast") optimizer steps; every ``k`` steps, slow weights follow.

    .. math::
        \phi \leftarrow \phi + \alpha(\theta - \phi), \qquad \theta \leftarrow \phi

    every ``k`` steps of the fast optimizer, in one kernel call per group and
    dtype. The slow weights :math:`\phi` start as the parameters before the
    first step, as in the paper (and optax, which starts them from the
    initial parameters).

    Parameters
    ----------
    optimizer : nopt.Optimizer or wrapper
        The fast optimizer.
    k : int, default 5
        Fast steps per synchronisation.
    alpha : float, default 0.5
        Slow step size, in [0, 1].

    Attributes
    ----------
    fast_steps : int
        Fast steps since the last synchronisation.

    Notes
    -----
    Steps of a wrapped :class:`nopt.ApplyIfFinite` that were skipped do not
    count. optax's ``lookahead`` keeps both weight sets in the caller's
    parameters; here the parameters hold the fast weights, and
    ``slow_weights()`` the slow ones.

    References
    ----------
    .. [1] Zhang, Lucas, Hinton and Ba, "Lookahead Optimizer: k steps forward,
       1 step back", NeurIPS 2019, arXiv:1907.08610, Algorithm 1.
    """

    def __init__(self, optimizer, k=5, alpha=0.5):
        _innermost(optimizer)
        _check_count("k", k, 1)
        if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool):
            raise TypeError(f"alpha must be a real number, got {alpha!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"Invalid alpha value: {alpha}; expected 0 <= alpha <= 1")
        self.optimizer = optimizer
        self.k = int(k)
        self.alpha = float(alpha)
        self.fast_steps = 0
        self._slow = {}     # Parameter -> slow weights (views into one flat buffer per dtype)

    def slow_weights(self):
        """``{parameter: slow weights}`` (the optimizer's own arrays)."""
        return dict(self._slow)

    def step(self, closure=None):
        """Step the fast optimizer; every ``k``-th applied step, synchronise the slow weights."""
        params = _param_ids(self.optimizer)
        missing = [p for p in params if p not in self._slow]
        if missing:
            by_dtype = {}
            for p in missing:
                by_dtype.setdefault(p.dtype.str, []).append(p)
            for members in by_dtype.values():
                for p, buf in zip(members, Optimizer._flat_zeros(members)):
                    buf[...] = p
                    self._slow[p] = buf
        # The counter and, every k-th step, the synchronisation: run with the
        # fast step, all or nothing (see _Wrapper).
        fast_steps = self.fast_steps + 1
        if fast_steps == self.k:
            after = self._synchronise_calls(params) + [(setattr, (self, "fast_steps", 0))]
        else:
            after = [(setattr, (self, "fast_steps", fast_steps))]
        return self._step_with(
            closure, [], after,
            applied=lambda: getattr(self.optimizer, "last_step_applied", True) is not False)

    def _synchronise_calls(self, params):
        calls = []
        for dtype in ("float32", "float64"):
            fast = [p for p in params if p.dtype == dtype]
            if fast:
                ptrs, chunks, n_threads = _plan.make_table([fast, [self._slow[p] for p in fast]])
                calls.append((lookahead_sync, (ptrs, chunks, dtype == "float64", n_threads,
                                               self.alpha)))
        return calls

    def state_dict(self):
        params = _param_ids(self.optimizer)
        index = {id(p): i for i, p in enumerate(params)}
        return {
            "optimizer": self.optimizer.state_dict(),
            "k": self.k,
            "alpha": self.alpha,
            "fast_steps": self.fast_steps,
            "slow": {index[id(p)]: s for p, s in self._slow.items()},
        }

    def load_state_dict(self, state_dict):
        """Load :meth:`state_dict`'s output; everything is checked before anything changes."""
        for key in ("optimizer", "k", "alpha", "fast_steps", "slow"):
            if key not in state_dict:
                raise ValueError(f"Lookahead state dict has no '{key}' entry")
        _check_count("loaded k", state_dict["k"], 1)
        _check_count("loaded fast_steps", state_dict["fast_steps"], 0)
        alpha = state_dict["alpha"]
        if not isinstance(alpha, numbers.Real) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"loaded alpha must be a number in [0, 1], got {alpha!r}")
        params = _param_ids(self.optimizer)
        arrays = _load_arrays(state_dict["slow"], params, "loaded slow weights")
        self.optimizer.load_state_dict(state_dict["optimizer"])
        slow = {}
        by_dtype = {}
        for p in params:
            if p in arrays:
                by_dtype.setdefault(p.dtype.str, []).append(p)
        for members in by_dtype.values():
            for p, buf in zip(members, Optimizer._flat_zeros(members)):
                buf[...] = arrays[p]
                slow[p] = buf
        self.k = int(state_dict["k"])
        self.alpha = float(alpha)
        self.fast_steps = int(state_dict["fast_steps"])
        self._slow = slow

    def __repr__(self):
        return f"Lookahead({self.optimizer!r}, k={self.k}, alpha={self.alpha})"
