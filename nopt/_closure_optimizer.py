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


# ---------------------------------------------------------------- the shared iteration
class CountedClosure:
    """The closure, counting every call in ``state["func_evals"]`` and in ``n``.

    ``n`` starts at 1, the step's first evaluation (made before the loop).
    A call is counted before it runs, so one that raises counts too.
    """

    __slots__ = ("closure", "state", "n")

    def __init__(self, closure, state):
        self.closure = closure
        self.state = state
        self.n = 1

    def __call__(self):
        self.n += 1
        self.state["func_evals"] += 1
        return self.closure()


class Method:
    """What differs between the closure methods: the direction and how far to go along it.

    :func:`iterate` runs the loop and the stopping tests; a method keeps
    the direction ``d``, the step ``t`` and the previous gradient (and any
    memory of its own), and defines:

    - ``direction(g, loss, prev_loss) -> g.d``: the new ``d`` at the point
      with gradient ``g`` (``prev_loss``: the loss one iterate back);
    - ``search(gtd, calls, budget, last) -> SearchResult``: move along
      ``d`` (``last``: the step's final iteration), with at most
      ``budget`` calls of ``calls``; ``grad`` None when it evaluated
      nothing after moving;
    - ``restart(g) -> g.d or None``: after a failed search, a new
      direction to try once (None: none left);
    - ``best(loss, g) -> (loss, g)``: after a failed search, the lowest point
      it saw, the parameters moved there (if below ``loss``);
    - ``step_max()``: ``max_i |t d_i|``, for ``tolerance_change``;
    - ``save(state, prev_loss)``: its state keys, written when the step
      ends, however it ends.
    """

    def __init__(self, flat, state):
        self.flat = flat
        self.d = state.get("d")
        self.t = state.get("t")
        self.prev_g = state.get("prev_flat_grad")

    def restart(self, g):
        return None

    def not_descent(self):
        """The direction is not a descent direction: the step stops here."""

    def best(self, loss, g):
        return loss, g

    def save(self, state, prev_loss):
        state["d"] = self.d
        state["t"] = self.t
        state["prev_flat_grad"] = self.prev_g
        state["prev_loss"] = prev_loss


def iterate(method, closure, state, group, loss, g, on_iter=None):
    """The iterations of one step of a closure method, from the loss ``loss`` and gradient ``g``.

    Per iteration: the method's direction; stop if it is not a descent
    direction (``g.d > -tolerance_change``); the method's search along it,
    and once more along its restart direction if that fails (unless the
    evaluation budget is spent); on a second failure, stop at the lowest
    point seen; then the stopping tests (:func:`stop_reason`: ``on_iter``,
    ``tolerance_grad``, ``max_iter``, ``max_eval``, ``tolerance_change``).
    ``state["n_iter"]`` and ``state["func_evals"]`` advance as it goes,
    and the method's state is saved on the way out, however the loop ends.

    Returns
    -------
    reason, n_iter, n_evals, loss, g
        Why it stopped (a key of ``REASONS``), iterations and closure calls
        made in this step, and the loss and flat gradient where it stopped.
    """
    max_iter = group["max_iter"]
    max_eval = group["max_eval"]
    tolerance_grad = group["tolerance_grad"]
    tolerance_change = group["tolerance_change"]
    if absmax(g) <= tolerance_grad:
        return "gtol", 0, 1, loss, g
    calls = CountedClosure(closure, state)
    prev_loss = state.get("prev_loss")
    n_iter = 0
    reason = "max_iter"
    try:
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            gtd = method.direction(g, loss, prev_loss)
            prev_loss = loss
            if gtd > -tolerance_change:
                method.not_descent()
                reason = "not_descent"
                break
            try:
                res = method.search(gtd, calls, max_eval - calls.n, n_iter == max_iter)
                if not res.ok and res.reason != "max_eval":
                    gtd = method.restart(g)
                    if gtd is not None:
                        res = method.search(gtd, calls, max_eval - calls.n, n_iter == max_iter)
            except BaseException:
                method.t = 0.0
                raise
            if not res.ok:
                method.t = 0.0
                reason = res.reason
                loss, g = method.best(loss, g)
                break
            method.t = res.t
            gmax = math.inf
            if res.grad is not None:
                loss, g = res.loss, res.grad
                gmax = absmax(g)
            reason = stop_reason(on_iter, loss, prev_loss, n_iter, max_iter, calls.n, max_eval,
                                 gmax, tolerance_grad, method.step_max(), tolerance_change)
            if reason:
                break
    finally:
        method.save(state, prev_loss)
    return reason or "max_iter", n_iter, calls.n, loss, g


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

    def _check_loaded(self, groups, state):
        """Check a loaded state dict exactly as the constructor would (see Optimizer.load_state_dict).

        The group's hyperparameters go through the constructor's checks (and
        are normalised in place) and the state through :func:`check_state`,
        before anything changes: on any error the optimizer is unchanged and
        no post-load hook runs.
        """
        if len(groups) != 1:
            raise ValueError(self._group_error)
        group = groups[0]
        try:
            checked = self._check_options({k: v for k, v in group.items() if k != "params"})
        except KeyError as exc:
            raise ValueError(f"loaded param_groups[0] has no {exc} option") from None
        flat = FlatParams(group["params"])
        entry = state.get(flat.params[0])
        if entry:
            check_state(entry, flat, self._state_spec, self._state_required)
        group.update(checked)

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
