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

    # The state's keys and kinds (see check_state), and those required once n_iter > 0.
    _state_spec = {}
    _state_required = ()

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

    @staticmethod
    def _check_options(group):
        """Validate a group's hyperparameters as the constructor does; return them normalised."""
        raise NotImplementedError

    def load_state_dict(self, state_dict):
        """Load a state dict, checking options and history exactly as the constructor would.

        The group's hyperparameters go through the constructor's checks and
        the state through :func:`check_state`; on any error nothing changes.
        """
        before = (self.param_groups, self.state)
        super().load_state_dict(state_dict)
        try:
            if len(self.param_groups) != 1:
                raise ValueError(self._group_error)
            group = self.param_groups[0]
            checked = self._check_options({k: v for k, v in group.items() if k != "params"})
            flat = FlatParams(group["params"])
            state = self.state.get(flat.params[0])
            if state:
                check_state(state, flat, self._state_spec, self._state_required)
            group.update(checked)
        except (TypeError, ValueError, KeyError) as exc:
            self.param_groups, self.state = before
            if isinstance(exc, KeyError):
                raise ValueError(f"loaded param_groups[0] has no {exc} option") from None
            raise

    def step(self, closure=None):
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
        # State edited by hand since the last step: fail before anything moves.
        check_state(state, flat, self._state_spec, self._state_required)
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


def _is_real(v):
    return (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            and math.isfinite(float(v)))


def check_state(state, flat, spec, required):
    """Check LBFGS/CG state (loaded, or edited by hand) against the flat parameters.

    ``spec`` maps each key to its kind: ``"array"`` (flat, the parameters'
    total size), ``"arrays"`` (a list of those), ``"floats"`` (a list of
    finite numbers), ``"floats_or_none"``, ``"number"`` (finite, or None),
    ``"count"`` (an int >= 0). Once ``n_iter > 0`` every key of ``required``
    must be there. The history lists must have equal lengths.

    Raises
    ------
    TypeError, ValueError
        Naming the entry, e.g. ``state['ro'][2]``.
    """
    shape = (flat.numel,)

    def check_array(where, v):
        if not isinstance(v, np.ndarray):
            raise TypeError(f"{where} must be an array, got {type(v).__name__}")
        if v.shape != shape:
            raise ValueError(f"{where} has shape {v.shape}; expected {shape} "
                             "(all parameters flattened)")
        if v.dtype.kind != "f":
            raise TypeError(f"{where} must be a float array, got dtype {v.dtype}")

    for key in ("func_evals", "n_iter"):
        v = state.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
            raise ValueError(f"state['{key}'] must be an int >= 0, got {v!r}")
    if state.get("n_iter", 0) > 0:
        missing = [k for k in required if state.get(k) is None]
        if missing:
            raise ValueError(f"state has n_iter={state['n_iter']} but no {', '.join(missing)} "
                             "(a state saved after iterations holds them all)")
    lengths = {}
    for key, kind in spec.items():
        v = state.get(key)
        where = f"state['{key}']"
        if v is None:
            continue
        if kind == "array":
            check_array(where, v)
        elif kind == "number":
            if not _is_real(v):
                raise ValueError(f"{where} must be a finite number, got {v!r}")
        elif kind == "count":
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{where} must be an int >= 0, got {v!r}")
        else:
            if not isinstance(v, list):
                raise TypeError(f"{where} must be a list, got {type(v).__name__}")
            for i, a in enumerate(v):
                if kind == "arrays":
                    check_array(f"{where}[{i}]", a)
                elif not (_is_real(a) or (kind == "floats_or_none" and a is None)):
                    raise ValueError(f"{where}[{i}] must be a finite number"
                                     + (" or None" if kind == "floats_or_none" else "")
                                     + f", got {type(a).__name__}")
            if kind != "floats_or_none":
                lengths[key] = len(v)
    if len(set(lengths.values())) > 1:
        names = ", ".join(f"['{k}']" for k in lengths)
        raise ValueError(f"state {names} have different lengths "
                         f"({', '.join(str(n) for n in lengths.values())})")
    if "al" in spec and isinstance(state.get("al"), list) and lengths:
        if len(state["al"]) < max(lengths.values()):
            raise ValueError(f"state['al'] has {len(state['al'])} entries; the history holds "
                             f"{max(lengths.values())} pairs")
