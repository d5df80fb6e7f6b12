"""The frame LBFGS and CG share: one group, a closure, flat state on the first parameter."""
import math

import numpy as np

from ._linesearch import FlatParams, NonFiniteError, loss_value, stop_reason  # noqa: F401
from .optimizer import Optimizer

# Closure calls one line search may make (torch's strong-Wolfe max_ls).
# An attribute, not a hyperparameter, so param_groups keep torch's keys.
MAX_LS = 25


def absmax(a):
    """max |a_i| without a temporary (nan if any a_i is nan); 0 for an empty array."""
    if a.size == 0:
        return 0.0
    hi, lo = a.max(), a.min()
    if hi != hi or lo != lo:
        return float("nan")
    return max(hi, -lo)


class ClosureOptimizer(Optimizer):
    """Base of :class:`nopt.LBFGS` and :class:`nopt.CG`.

    Both take a single parameter group, see it as one flat vector
    (:class:`FlatParams`), keep their global state on the first parameter
    (as torch's LBFGS does) and need a closure. Subclasses set
    ``_state_lists`` (history lists checked on load) and define
    ``_step(closure, on_iter=None)``, starting it with :meth:`_begin`.
    """

    _state_lists = ()

    def __init__(self, params, defaults):
        super().__init__(params, defaults)
        self._flat = None
        self._x0 = None
        self.last_step = None
        self.max_ls = MAX_LS

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("max_ls", MAX_LS)

    @property
    def _group_error(self):
        return f"{type(self).__name__} doesn't support per-parameter options (parameter groups)"

    def add_param_group(self, param_group):
        if self.param_groups:
            raise ValueError(self._group_error)
        super().add_param_group(param_group)

    def _flat_params(self):
        params = self.param_groups[0]["params"]
        flat = getattr(self, "_flat", None)
        if flat is None or not flat.matches(params):
            flat = self._flat = FlatParams(params)
            self._x0 = None
        return flat

    def _x0_buffer(self, flat):
        """A reused buffer for a copy of the flat parameters."""
        x0 = getattr(self, "_x0", None)
        if x0 is None or x0.dtype != flat.dtype or x0.size != flat.numel:
            self._x0 = np.empty(flat.numel, dtype=flat.dtype)
        return self._x0

    def load_state_dict(self, state_dict):
        """Load a state dict, checking the flat state arrays against the parameters."""
        before = (self.param_groups, self.state)
        super().load_state_dict(state_dict)
        try:
            if len(self.param_groups) != 1:
                raise ValueError(self._group_error)
            flat = FlatParams(self.param_groups[0]["params"])
            state = self.state.get(flat.params[0])
            if state:
                check_state(state, flat, lists=self._state_lists)
        except (TypeError, ValueError):
            self.param_groups, self.state = before
            raise

    def step(self, closure):
        """Run up to ``max_iter`` iterations; return the closure's first loss.

        Parameters
        ----------
        closure : callable
            Sets ``.grad`` on the parameters and returns the loss.
        """
        return self._step(closure)

    def _begin(self, closure):
        """Check the call; return ``(group, flat, state)``.

        ``flat`` is the group's FlatParams and ``state`` the global state
        (on the first parameter). Read the hyperparameters next, then call
        :meth:`_first_evaluation` (torch reads them before the closure).

        Raises
        ------
        TypeError
            Without a callable closure.
        ValueError
            With more than one parameter group.
        """
        if closure is None or not callable(closure):
            raise TypeError(
                f"{type(self).__name__}.step needs a closure: a callable that sets .grad on "
                "the parameters and returns the loss"
            )
        if len(self.param_groups) != 1:
            raise ValueError(self._group_error)
        flat = self._flat_params()
        state = self.state[flat.params[0]]
        coerce_state(state, flat)
        return self.param_groups[0], flat, state

    def _first_evaluation(self, closure, flat, state):
        """Evaluate the closure at the current parameters, and count it.

        Returns
        -------
        orig_loss, loss, grad, gmax
            The closure's loss as returned and as a float, the flat gradient
            and its max norm.

        Raises
        ------
        NonFiniteError
            When the loss or gradient is not finite (nothing changed).
        """
        orig_loss = closure()
        loss = loss_value(orig_loss)
        grad = flat.gather_grad()
        gmax = absmax(grad)
        if not (math.isfinite(loss) and math.isfinite(gmax)):
            what = "loss" if not math.isfinite(loss) else "gradient"
            raise NonFiniteError(
                f"{type(self).__name__}: the closure returned a non-finite {what} "
                f"(loss={loss}) at the current parameters; nothing was changed"
            )
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        state["func_evals"] += 1
        return orig_loss, loss, grad, gmax


def coerce_state(state, flat):
    """Bring loaded flat arrays to the flat vector's dtype (load casts to the first param's)."""
    for key in ("d", "prev_flat_grad"):
        v = state.get(key)
        if isinstance(v, np.ndarray) and v.dtype != flat.dtype:
            state[key] = v.astype(flat.dtype)
    for key in ("old_dirs", "old_stps"):
        v = state.get(key)
        if v and any(a.dtype != flat.dtype for a in v):
            state[key] = [a.astype(flat.dtype) for a in v]


def check_state(state, flat, arrays=("d", "prev_flat_grad"), lists=()):
    """Check loaded LBFGS/CG state against the flattened parameters."""
    shape = (flat.numel,)

    def check_array(where, v):
        if not isinstance(v, np.ndarray):
            raise TypeError(f"loaded state {where} must be an array, got {type(v).__name__}")
        if v.shape != shape:
            raise ValueError(
                f"loaded state {where} has shape {v.shape}; expected {shape} "
                "(all parameters flattened)"
            )

    for key in arrays:
        v = state.get(key)
        if v is not None:
            check_array(f"['{key}']", v)
    lengths = set()
    for key in lists:
        v = state.get(key)
        if v is None:
            continue
        if not isinstance(v, list):
            raise TypeError(f"loaded state ['{key}'] must be a list, got {type(v).__name__}")
        for i, a in enumerate(v):
            check_array(f"['{key}'][{i}]", a)
        lengths.add(len(v))
    if "ro" in state and state["ro"] is not None and lists == ("old_dirs", "old_stps"):
        if not isinstance(state["ro"], list):
            raise TypeError("loaded state ['ro'] must be a list")
        lengths.add(len(state["ro"]))
    if len(lengths) > 1:
        raise ValueError("loaded state ['old_dirs'], ['old_stps'] and ['ro'] have different lengths")
    for key in ("func_evals", "n_iter"):
        v = state.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
            raise ValueError(f"loaded state ['{key}'] must be an int >= 0, got {v!r}")
