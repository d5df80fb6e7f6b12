"""The ``Optimizer`` base class: torch.optim's semantics over NumPy Parameters.

Subclasses hold one update rule each. An elementwise optimizer sets ``rule``
(a :class:`nopt._kernels._spec.Rule`), and the base class's ``step`` plans
and runs it: ``self._batches()`` checks every parameter and gradient of
every group *before* anything is changed, ``_plan`` creates and gathers the
state, counts the step and computes the scalars from the spec, and then one
kernel call runs per batch (a group's parameters of one dtype).
"""
import functools
import itertools
import math
import numbers
import threading
from collections import OrderedDict
from itertools import chain

import numpy as np

from ._kernels import _plan, rules as _rules
from ._kernels._plan import StateDict, StateMap
from ._parameter import Parameter
from ._torch_options import accept_torch_options

__all__ = [
    "Optimizer",
    "required",
    "RemovableHandle",
    "register_optimizer_step_pre_hook",
    "register_optimizer_step_post_hook",
]


class _RequiredParameter:
    """Singleton marking a hyperparameter every group must give."""

    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()


class RemovableHandle:
    """Handle returned by the ``register_*_hook`` methods; ``remove()`` drops the hook."""

    _next_id = 0

    def __init__(self, hooks_dict):
        self._hooks = hooks_dict
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self):
        self._hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _add_hook(hooks, hook, prepend=False):
    handle = RemovableHandle(hooks)
    hooks[handle.id] = hook
    if prepend:
        hooks.move_to_end(handle.id, last=False)
    return handle


_global_step_pre_hooks = OrderedDict()
_global_step_post_hooks = OrderedDict()


def register_optimizer_step_pre_hook(hook):
    """Register ``hook(optimizer, args, kwargs)`` to run before every optimizer's step."""
    return _add_hook(_global_step_pre_hooks, hook)


def register_optimizer_step_post_hook(hook):
    """Register ``hook(optimizer, args, kwargs)`` to run after every optimizer's step."""
    return _add_hook(_global_step_post_hooks, hook)


def _lock_of(optimizer):
    """The optimizer's own re-entrant lock (see README, Threads), made on first use.

    ``step``, ``state_dict`` and ``load_state_dict`` hold it, so concurrent
    calls on one optimizer run one after the other: two steps never share
    the work-table caches or count the same step twice, and a state dict is
    never taken halfway through a step. Kernels release the GIL, so
    different optimizers still step in parallel. (setdefault is atomic under
    the GIL: two first users get the same lock.)
    """
    lock = optimizer.__dict__.get("_nopt_lock")
    if lock is None:
        lock = optimizer.__dict__.setdefault("_nopt_lock", threading.RLock())
    return lock


def _with_step_hooks(step):
    """``step`` with the step hooks around it, and the optimizer's lock around the step alone.

    The hooks run outside the lock, as code before and after ``step()``
    does (torch has no lock: its hooks are plain calls before and after the
    step). Under the lock a hook that waits on another thread using this
    optimizer (``state_dict()`` from a checkpoint thread, or another step)
    would deadlock; outside it the step itself stays atomic, and the other
    thread's call runs before or after it.
    """
    @functools.wraps(step)
    def wrapper(self, *args, **kwargs):
        # Skip building chains when no hook is registered: this wrapper runs
        # on every step, and a small model's step is a few microseconds.
        # (A tuple snapshot: another thread may register a hook meanwhile.)
        if _global_step_pre_hooks or self._optimizer_step_pre_hooks:
            for hook in (*_global_step_pre_hooks.values(), *self._optimizer_step_pre_hooks.values()):
                result = hook(self, args, kwargs)
                if result is not None:
                    if isinstance(result, tuple) and len(result) == 2:
                        args, kwargs = result
                    else:
                        raise RuntimeError(
                            f"{hook} must return None or a tuple of (new_args, new_kwargs), "
                            f"but got {result}."
                        )
        # One step at a time per optimizer (see _lock_of).
        lock = self.__dict__.get("_nopt_lock")
        with lock if lock is not None else _lock_of(self):
            out = step(self, *args, **kwargs)
            self._opt_called = True
        if self._optimizer_step_post_hooks or _global_step_post_hooks:
            for hook in (*self._optimizer_step_post_hooks.values(), *_global_step_post_hooks.values()):
                hook(self, args, kwargs)
        return out

    wrapper._nopt_hooked = True
    return wrapper


def _is_number(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


class _Batch:
    """Parameters of one group and one dtype that have gradients."""

    __slots__ = ("group", "group_index", "params", "grads", "indices", "is_double")

    def __init__(self, group, group_index, params, grads, indices, is_double):
        self.group = group
        self.group_index = group_index
        self.params = params
        self.grads = grads
        self.indices = indices
        self.is_double = is_double


class Optimizer:
    """Base class for all optimizers, with ``torch.optim.Optimizer``'s semantics.

    Parameters
    ----------
    params : iterable
        An iterable of :class:`nopt.Parameter`, or of dicts defining parameter
        groups (a ``"params"`` entry plus per-group hyperparameters).
    defaults : dict
        Default hyperparameters, used by groups that do not set them.

    Notes
    -----
    Every subclass taking ``params`` also accepts torch's ``foreach``,
    ``fused``, ``capturable`` and ``differentiable`` keywords: ``None`` or
    ``False`` is ignored (nopt has one kernel path), ``True`` raises a
    ``ValueError`` that says why.

    Attributes
    ----------
    param_groups : list of dict
    state : StateMap
        Per-parameter state, keyed by the Parameter, with torch's key names:
        a dict that, like torch's ``defaultdict(dict)``, gives a new empty
        state dict for a parameter it does not hold yet. Its dicts note their
        own changes, so a step can skip re-reading state that did not change.
    """

    # State keys whose arrays have the parameter's shape (checked on load,
    # and kept in flat per-group buffers).
    _elementwise_state = ()
    # (reliability) The streams of the step being planned, after a flag
    # (see _plan_then_run); None outside a step.
    _step_tables = None
    # Keys every non-empty per-parameter state must hold, whatever the options
    # (checked on load, so a bad checkpoint fails there and not in a step).
    _required_state = ()
    # The elementwise update rule (nopt/_kernels/_spec.py) that ``step`` plans
    # and runs; None for optimizers with a ``step`` of their own.
    rule = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None:
            # torch's foreach=/fused=/...: None/False ignored, True refused.
            cls.__init__ = accept_torch_options(init)
        rule = cls.__dict__.get("rule")
        if rule is not None:
            cls._kernel = staticmethod(getattr(_rules, rule.name))
            cls._elementwise_state = rule.stream_keys
            cls._required_state = ((("step",) if rule.step else ()) + rule.scalar_state
                                   + tuple(key for key, _, when in rule.state if when is None))
        step = cls.__dict__.get("step")
        if step is not None and not getattr(step, "_nopt_hooked", False):
            cls.step = _with_step_hooks(step)

    def __init__(self, params, defaults):
        self.defaults = defaults
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._opt_called = False

        if isinstance(params, np.ndarray):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of "
                f"Parameters or dicts, but got {type(params).__name__}"
            )
        if isinstance(params, (set, frozenset)):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but "
                "the ordering of tensors in sets will change between runs. Please use a list instead."
            )
        self.state = StateMap()
        self.param_groups = []

        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for param_group in param_groups:
            self.add_param_group(param_group)

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group):
        """Add a param group to ``param_groups``, with torch's checks.

        Parameters
        ----------
        param_group : dict
            ``{"params": [...], **hyperparameters}``. Missing hyperparameters
            take the optimizer's defaults.
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        param_group = dict(param_group)
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' entry")
        params = param_group["params"]
        if isinstance(params, np.ndarray):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but "
                "the ordering of tensors in sets will change between runs. Please use a list instead."
            )
        else:
            params = list(params)

        names = [p[0] for p in params if isinstance(p, tuple)]
        params = [p[1] if isinstance(p, tuple) else p for p in params]
        if names:
            if len(names) != len(params):
                raise ValueError(
                    "all optimizer params should be with/without names. Some param names are missing"
                )
            param_group["param_names"] = names
        param_group["params"] = params

        for param in params:
            if not isinstance(param, Parameter):
                raise TypeError(
                    "optimizer can only optimize nopt.Parameter, but one of the params is "
                    + (f"numpy.ndarray (wrap it: nopt.Parameter(x))"
                       if isinstance(param, np.ndarray) else type(param).__name__)
                )

        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError(
                    f"parameter group didn't specify a value of required optimization parameter {name}"
                )
            param_group.setdefault(name, default)

        ids = [id(p) for p in params]
        if len(ids) != len(set(ids)):
            # torch only warns ("in future, this will cause an error"); nopt's
            # kernels update a group's arrays in parallel, so a repeat would race.
            raise ValueError(
                "optimizer contains a parameter group with duplicate parameters; "
                "list each parameter once"
            )

        existing = set()
        for group in self.param_groups:
            existing.update(id(p) for p in group["params"])
            if ("param_names" in param_group) != ("param_names" in group):
                current = "with names" if "param_names" in param_group else "without names"
                raise ValueError(
                    "all optimizer param groups should be with/without names. "
                    f"cannot add param group {current} to the optimizer"
                )
        if not existing.isdisjoint(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        _check_no_shared_memory(self.param_groups + [param_group])

        self.param_groups.append(param_group)

    def zero_grad(self, set_to_none=True):
        """Reset the gradients of all optimized Parameters.

        Parameters
        ----------
        set_to_none : bool, default True
            Set ``grad`` to ``None`` (default) instead of filling it with zeros.
        """
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    else:
                        p.grad.fill(0)

    # ------------------------------------------------------------------ step
    @_with_step_hooks
    def step(self, closure=None):
        """Perform a single optimization step; return the closure's loss if given.

        Plans and runs ``self.rule``, or the subclass's own ``_plan`` (see
        :meth:`_plan_then_run`): subclasses need no ``step`` of their own.
        """
        if self.rule is None and type(self)._plan is Optimizer._plan:
            raise NotImplementedError
        return self._plan_then_run(closure)

    def _batches(self):
        """Check every group, then return its stepping batches.

        Everything is checked before the caller changes anything, so a bad
        parameter or gradient leaves the optimizer and the parameters as they
        were; errors name ``param_groups[i]['params'][j]``. Parameters without
        a gradient are left out. A group with float32 and float64 parameters
        gives two batches (float32 first).

        Returns
        -------
        list of _Batch
            ``.group`` (the group dict), ``.group_index``, ``.params``,
            ``.grads``, ``.indices`` (positions in the group: a sequence,
            a ``range`` when every parameter has a gradient) and
            ``.is_double``, the kernel's dtype switch.
        """
        batches = []
        caches = self.__dict__.get("_gather_caches")
        if caches is None or len(caches) != len(self.param_groups):
            # One cache per group (see _plan.GatherCache): a step whose
            # parameters and gradient objects are those of the last step is
            # revalidated by identity instead of checked from scratch.
            caches = self._gather_caches = [_plan.GatherCache() for _ in self.param_groups]
        for gi, group in enumerate(self.param_groups):
            params = group["params"]
            if type(params) is not list:
                params = list(params)
            for batch_params, grads, indices, is_double in _plan.gather(params, gi, caches[gi]):
                batches.append(_Batch(group, gi, batch_params, grads, indices, is_double))
            if caches[gi].rebuilt and self._step_tables is not None:
                self._step_tables[0] = True  # (see _plan_then_run: run the aliasing check)
        return batches

    def _table(self, streams, tag=None):
        """``_plan.make_table(streams)``, reusing last step's table when the arrays are the same.

        Call this from ``step`` instead of ``_plan.make_table`` directly. The
        cache is per call site: ``tag`` (any hashable, e.g. the group index
        and a flag) plus the first parameter and the stream and array counts.
        A reused table skips re-reading every array's size and flags, which
        is most of a many-array step's set-up.
        """
        caches = self.__dict__.get("_table_caches")
        if caches is None or caches.get("state") is not self.state:
            # New or reloaded state: drop tables that hold the old arrays.
            caches = self._table_caches = {"state": self.state}
        first = streams[0][0] if streams and streams[0] else None
        key = (tag, id(first), len(streams), len(streams[0]) if streams else 0)
        cache = caches.get(key)
        if cache is None:
            if len(caches) > 256:
                caches = self._table_caches = {"state": self.state}
            cache = caches[key] = _plan.TableCache()
        table = _plan.make_table(streams, cache)
        # Inside _plan_then_run: keep the streams (alive until the kernels
        # finish, and for the aliasing check when a table was rebuilt).
        tables = self._step_tables
        if tables is not None:
            tables.append(streams)
            if cache.rebuilt:
                tables[0] = True
        return table

    def _state_column(self, params, key):
        """``[self.state[p].get(key) for p in params]`` (None where missing), and the missing count.

        Reads without adding entries to ``self.state``. One C loop, for the
        per-step gathering of state arrays.
        """
        return _plan.column(self.state, params, key)

    def _state_columns(self, params, keys):
        """:meth:`_state_column` for several keys: ``([column, ...], n_missing_any)``."""
        return _plan.columns(self.state, params, tuple(keys))

    def _state_step(self, params, keys, step_key="step", cache=None, old_out=None):
        """Gather state arrays and count a step, touching each state dict once.

        ``cache`` (any hashable naming the call site, e.g. the group index)
        keeps what was read for the next step (see ``_plan.StepCache``):
        while no state dict, state map or parameter list changed, the next
        step only writes the new counts. Only for keys holding arrays, which
        nothing but Python code replaces; the columns are then read-only.

        Returns
        -------
        columns : list of lists
            ``columns[i][k] = self.state[params[k]][keys[i]]`` (None if missing).
        missing : int
            Parameters missing any of ``keys`` or ``step_key``. When not 0,
            nothing was changed: initialise their state, then call again.
        steps : list of float or None
            The incremented counts, in order (None when ``missing``).
        common : float or None
            The shared count when all are equal (the usual case), else None.

        ``old_out`` (a list) gets the list of the count objects held before,
        when the step was counted (see ``_plan.columns_and_increment``).
        """
        step_cache = None
        if cache is not None:
            caches = self.__dict__.get("_step_caches")
            step_cache = caches.get(cache) if caches else None
            if step_cache is None:
                if caches is None or len(caches) > 256:
                    caches = self._step_caches = {}
                step_cache = caches[cache] = _plan.StepCache()
        return _plan.columns_and_increment(self.state, params, tuple(keys), step_key, step_cache, old_out)

    def _increment_state(self, params, key="step"):
        """Add 1 to the float ``self.state[p][key]`` of every parameter.

        Returns
        -------
        values : list of float
            The new values, in order (for :meth:`_split_by`).
        common : float or None
            The shared new value when all are equal, else None.
        """
        return _plan.increment(self.state, params, key)

    @staticmethod
    def _flat_zeros(params):
        """Zero arrays shaped like ``params``, as views into one buffer.

        Keeping a group's state contiguous lets the kernels merge its arrays
        into one loop when the parameters are flat too. The buffer starts on
        a 64-byte boundary, like :class:`nopt.ParameterBuffer`'s, at a page
        offset that differs from other buffers' (see ``_aligned_zeros``).
        """
        if not params:
            return []
        buffer = _aligned_zeros(sum(p.size for p in params), params[0].dtype)
        out, offset = [], 0
        for p in params:
            out.append(buffer[offset:offset + p.size].reshape(p.shape))
            offset += p.size
        return out

    @staticmethod
    def _split_by(params, values):
        """Group ``params`` by ``values`` (e.g. their step counts), keeping order.

        Returns
        -------
        list of (value, indices)
            One entry (all indices) in the usual case where all values agree.
        """
        first = values[0] if values else None
        if all(v == first for v in values):
            return [(first, list(range(len(params))))]
        parts = {}
        for k, v in enumerate(values):
            parts.setdefault(v, []).append(k)
        return list(parts.items())

    # ------------------------------------------------------------------ plan, then run
    # A step plans every batch first (counts the step, creates missing state,
    # computes the scalars, builds the work tables: everything that can
    # raise), noting each change to ``self.state`` in an undo list, and only
    # then makes the planned calls. A failed plan is undone, so a failed step
    # leaves the optimizer and the parameters exactly as they were.
    def _plan_then_run(self, closure=None):
        """Call ``closure``, plan every batch with ``self._plan``, then make the planned calls.

        The base class's ``step`` (a subclass needs none of its own); a
        subclass without a ``rule`` defines ``_plan(batch, calls, undo)``: it
        appends ``(function, args)`` pairs to ``calls`` (its kernel calls,
        and any work that must follow one), and changes ``self.state`` only through
        :meth:`_count_step` and :meth:`_fresh_state`, which note the changes
        in ``undo``. If planning raises, :meth:`_revert` undoes them, no call
        is made, and the error propagates.

        Returns
        -------
        The closure's loss, or None.
        """
        # (combinators) Work a wrapper asked to have run in this step's run
        # phase, before and after its kernels (see nopt/combinators.py).
        around = self.__dict__.pop("_run_around", None)
        loss = None
        if closure is not None:
            loss = closure()
        calls, undo = [], []
        # Numeric hyperparameters set by hand to non-numbers fail here, before any change.
        _plan.check_numbers(self.param_groups, self._number_keys)
        # (reliability) `batches` and `tables` hold every array the kernels
        # touch until they finish, whatever other threads do to the
        # parameters' grads or the state meanwhile.
        # tables[0]: some gather or table cache was rebuilt (an array changed).
        tables = self._step_tables = [False]
        try:
            batches = self._batches()
            for batch in batches:
                self._plan(batch, calls, undo)
            if tables[0]:
                # Some array changed since the last step: check that no two
                # overlap (a cached step pays nothing for this).
                self._check_aliasing(tables[1:])
        except BaseException:
            self._revert(undo)
            raise
        finally:
            self._step_tables = None
        # (reliability) All kernels and scalar-state stores, back to back from
        # C: a signal (Ctrl-C) is handled only once the whole step is applied.
        if around is not None:
            calls = around[0] + calls + around[1]
        _plan.run(calls)
        return loss

    def _check_aliasing(self, tables):
        """Raise ValueError if two arrays of this step overlap in memory (see ``_plan.find_alias``)."""
        groups = [g["params"] for g in self.param_groups]
        found = _plan.find_alias(groups, tables)
        if found is None:
            return
        # An error: name the arrays (a repeated parameter first, since its
        # state arrays are listed twice as well).
        where = {}
        for gi, params in enumerate(groups):
            for pi, p in enumerate(params):
                name = f"param_groups[{gi}]['params'][{pi}]"
                first = where.setdefault(id(p), name)
                if first is not name:
                    raise ValueError(
                        f"{name} is {first} again; list each parameter once (a parameter "
                        "was added a second time after the optimizer was made)")

        def describe(entry):
            x, role, owner, _ = entry
            if role == 0:
                return f"param_groups[{owner[0]}]['params'][{owner[1]}]"
            name = where.get(id(owner), "a parameter")
            if role == 1:
                return f"the grad of {name}"
            keys = [k for k, v in self.state.get(owner, {}).items() if v is x]
            return f"state {keys[0]!r} of {name}" if keys else f"a state array of {name}"

        (a, b) = found
        raise ValueError(
            f"{describe(b)} shares memory with {describe(a)}; every parameter, gradient and "
            "state array must have memory of its own")

    # ------------------------------------------------------------------ the rule's plan
    def _plan(self, batch, calls, undo):
        """Plan the batch's step from ``self.rule``: append its kernel calls (nothing runs yet).

        Creates missing state (:meth:`_init_state`), gathers the state arrays
        and counts the step (:meth:`_count_step`, with a step cache when the
        rule keeps no scalar state), computes the scalars with
        ``rule.scalars`` once per distinct (step, scalar state), and appends
        one kernel call per distinct set of scalars, each followed by the
        store of the next scalar state, if the rule keeps one.
        """
        rule = self.rule
        if rule is None:
            raise NotImplementedError(f"{type(self).__name__} has no rule and no _plan")
        group = batch.group
        keys, flags = rule.resolve(group)
        if rule.fresh_flag is not None:
            self._plan_fresh(batch, calls, undo, keys, flags)
            return
        gather = keys + rule.scalar_state
        params, grads = batch.params, batch.grads
        if rule.step:
            # Only arrays may be cached (see _plan.StepCache): no cache for
            # rules whose scalar state changes every step.
            tag = None if rule.scalar_state else (batch.group_index, batch.is_double)
            columns, steps, common = self._count_step(batch, gather, undo, cache=tag)
        else:
            columns, steps, common = self._gather_state(batch, gather, undo), None, None
        if not rule.scalar_state and (common is not None or not rule.step):
            # The usual case: one call for the batch.
            ptrs, chunks, n_threads = self._table([params, grads, *columns],
                                                  (batch.group_index, 0))
            calls.append((self._kernel, (ptrs, chunks, batch.is_double, n_threads,
                                         *rule.scalars(group, common), *flags)))
            return
        # With a scalar state, or several step counts: the usual case is still
        # one step count and one scalar state for the batch.
        values = [] if common is not None and rule.step else None
        for col in columns[len(keys):]:
            if values is None or col.count(col[0]) != len(col):
                values = None
                break
            values.append(float(col[0]))
        if values is not None:
            args, after = rule.scalars(group, common, *values)
            parts = [(args, tuple(after), params, grads, columns)]
        else:
            parts = self._parts(batch, columns[:len(keys)], columns[len(keys):], steps)
        for k, (args, after, part_params, part_grads, cols) in enumerate(parts):
            ptrs, chunks, n_threads = self._table(
                [part_params, part_grads, *cols[:len(keys)]], (batch.group_index, k))
            calls.append((self._kernel, (ptrs, chunks, batch.is_double, n_threads, *args, *flags)))
            if after is not None:
                calls.append((_plan.store, (self.state, part_params, rule.scalar_state,
                                            tuple(after))))

    def _parts(self, batch, arrays, scalars, steps):
        """Split a batch by (step, scalar state): ``(args, after, params, grads, arrays)`` each.

        Parameters whose scalars come out the same share one call (e.g.
        RMSprop's, whose scalars do not depend on the step).
        """
        rule = self.rule
        params, grads, group = batch.params, batch.grads, batch.group
        n = len(params)
        values = [((steps[k],) if steps is not None else ()) + tuple(float(c[k]) for c in scalars)
                  for k in range(n)]
        merged = {}
        for value, indices in self._split_by(params, values):
            out = rule.scalars(group, *value) if rule.step else rule.scalars(group, None, *value)
            args, after = (out[0], tuple(out[1])) if rule.scalar_state else (out, None)
            merged.setdefault((tuple(args), after), []).extend(indices)
        parts = []
        for (args, after), indices in merged.items():
            if len(indices) == n:
                parts.append((args, after, params, grads, arrays))
                continue
            indices.sort()
            parts.append((args, after, [params[k] for k in indices], [grads[k] for k in indices],
                          [[col[k] for k in indices] for col in arrays]))
        return parts

    def _gather_state(self, batch, keys, undo):
        """The state columns of ``keys`` for a rule without a step count, creating missing state."""
        columns, missing = self._state_columns(batch.params, keys)
        if missing:
            self._init_state(batch, keys, undo)
            columns, missing = self._state_columns(batch.params, keys)
            if missing:
                raise self._incomplete_state(batch, keys)
        return columns

    def _plan_fresh(self, batch, calls, undo, keys, flags):
        """Plan a rule with a ``"fresh"`` flag (SGD): new state arrays get their own call.

        The flag is True for the parameters whose arrays this step creates
        (SGD's momentum buffer then takes the gradient itself, as torch's
        clone), False for the others.
        """
        rule = self.rule
        group, params, grads = batch.group, batch.params, batch.grads
        args = rule.scalars(group, None)
        columns, missing = self._state_columns(params, keys) if keys else ([], 0)
        if not missing:
            # The usual case: every array exists, one call.
            ptrs, chunks, n_threads = self._table([params, grads, *columns],
                                                  (batch.group_index, False))
            calls.append((self._kernel,
                          (ptrs, chunks, batch.is_double, n_threads, *args, *flags[False])))
            return
        # Parameters with and without their arrays go in separate calls.
        parts = []
        for fresh in (False, True):
            keep = [k for k in range(len(params))
                    if any(col[k] is None for col in columns) == fresh]
            if not keep:
                continue
            part = [params[k] for k in keep]
            if fresh:
                self._new_arrays(part, keys, group, undo)
                state = self.state
                cols = [[state[p][key] for p in part] for key in keys]
            else:
                cols = [[col[k] for k in keep] for col in columns]
            parts.append((fresh, part, [grads[k] for k in keep], cols))
        for fresh, part, part_grads, cols in parts:
            ptrs, chunks, n_threads = self._table([part, part_grads, *cols],
                                                  (batch.group_index, fresh))
            calls.append((self._kernel,
                          (ptrs, chunks, batch.is_double, n_threads, *args, *flags[fresh])))

    def _init_state(self, batch, keys, undo):
        """Check the batch's state against the rule, then create what is missing.

        ``keys`` are the state arrays the step needs, then the rule's scalar
        state. A non-empty state that lacks any of them (or ``step``) raises
        ValueError naming the parameter, before anything changes, unless the
        rule starts missing arrays itself (``add_missing``). Empty states are
        filled as torch's lazy initialisation does: ``step`` 0, the scalar
        state's start values and the arrays (in flat per-batch buffers).
        """
        rule = self.rule
        state = self.state
        wanted = (("step",) if rule.step else ()) + rule.scalar_state + tuple(
            key for key in keys if key not in rule.scalar_state)
        arrays = [key for key in keys if key not in rule.scalar_state]
        new, lacking = [], []
        for k, p in enumerate(batch.params):
            s = state.get(p)
            if not s:
                new.append(p)
                continue
            missing = [key for key in wanted if s.get(key) is None]
            if not missing:
                continue
            if rule.add_missing:
                lacking.append(p)
                continue
            raise ValueError(
                f"the state of param_groups[{batch.group_index}]['params'][{batch.indices[k]}] "
                f"has no {', '.join(repr(m) for m in missing)} entry; expected the keys "
                f"{list(wanted)} for this group's options (was an option such as "
                "'amsgrad' switched on after the state was created?)"
            )
        group = batch.group
        self._create_state(new, group, undo, arrays)
        for key in arrays:
            without = [p for p in lacking if state[p].get(key) is None]
            self._new_arrays(without, (key,), group, undo)

    def _create_state(self, params, group, undo, keys=None):
        """New state for ``params`` (which have none): ``step`` 0, the scalar state, the arrays.

        ``keys``: the arrays to create (default: those of the group's
        options). Parameters of either dtype; noted in ``undo``.
        """
        rule = self.rule
        if not params:
            return
        if keys is None:
            switches = rule.switches(group) if rule.switches is not None else {}
            keys = rule.keys_for(switches)
        start = {}
        if rule.step:
            start["step"] = 0.0
        if rule.scalar_state:
            start.update(zip(rule.scalar_state, rule.start(group)))
        for p in params:
            self._fresh_state(p, undo).update(start)
        for dtype in sorted({p.dtype.str for p in params}):
            self._new_arrays([p for p in params if p.dtype.str == dtype], keys, group, undo)

    def _new_arrays(self, params, keys, group, undo):
        """Give every parameter in ``params`` (one dtype) a new array per key, filled with its init.

        The arrays of one key are views into one flat buffer (see
        :meth:`_flat_zeros`); the change is noted in ``undo``.
        """
        if not params:
            return
        inits = {key: init for key, init, _ in self.rule.state}
        for key in keys:
            value = self._init_value(inits[key], group)
            for p, array in zip(params, self._flat_zeros(params)):
                if value != 0:
                    array.fill(value)
                self._fresh_state(p, undo)[key] = array

    def _init_value(self, init, group):
        """A state array's start value: a number, ``group[name]`` or ``defaults[name]``."""
        if isinstance(init, str):
            if init.startswith("defaults."):
                return self.defaults[init[len("defaults."):]]
            return group[init]
        return init

    @functools.cached_property
    def _number_keys(self):
        """The hyperparameters whose default is a number (checked before every step)."""
        return tuple(
            k for k, v in self.defaults.items() if isinstance(v, numbers.Real) and not isinstance(v, bool))

    def _count_step(self, batch, keys, undo, cache=None):
        """:meth:`_state_step` for a batch, creating missing state first; noted in ``undo``.

        ``keys`` is a tuple. When some parameter's state lacks ``step`` or
        one of ``keys``, ``self._init_state(batch, keys, undo)`` (which the
        subclass defines) creates it, through :meth:`_fresh_state`, or
        raises; state still incomplete after that raises
        :meth:`_incomplete_state`'s KeyError. ``cache``: as for
        :meth:`_state_step` (arrays only).

        Returns
        -------
        columns, steps, common
            As :meth:`_state_step`, with nothing missing.
        """
        params = batch.params
        olds = []
        columns, missing, steps, common = self._state_step(params, keys, "step", cache, olds)
        if missing:
            self._init_state(batch, keys, undo)
            columns, missing, steps, common = self._state_step(params, keys, "step", cache, olds)
            if missing:
                raise self._incomplete_state(batch, keys)
        # The very count objects of before: a failed step puts them back.
        undo.append((params, olds[-1], "step"))
        return columns, steps, common

    def _fresh_state(self, param, undo):
        """``self.state[param]``, for planning to add entries to; ``undo`` notes what it held.

        If the step then fails, :meth:`_revert` restores it: a parameter that
        had no state has none again, and one that had a dict gets back
        exactly the entries it held (a shallow copy is kept).
        """
        state = self.state
        before = state.get(param)
        undo.append((param, None if before is None else dict(before)))
        if before is None:
            # (Also when ``state`` is a plain dict or a defaultdict set by hand.)
            before = state[param] = StateDict()
        return before

    def _revert(self, undo):
        """Undo, latest first, the changes a failed plan noted in ``undo``.

        An entry is ``(parameters, old counts, key)`` for a counted step
        (each count is set back to the very object it was, not to the new
        count minus one, which rounding or a type change would alter), or a
        ``(parameter, entries)`` pair from :meth:`_fresh_state`.
        Every write is a Python-level dict write, which the step caches note.
        """
        state = self.state
        for entry in reversed(undo):
            if len(entry) == 2:
                param, before = entry
                if before is None:
                    state.pop(param, None)
                else:
                    current = state[param]
                    current.clear()
                    current.update(before)
            else:
                params, olds, key = entry
                # Backwards, so a parameter listed twice gets its first old count.
                for k in range(len(olds) - 1, -1, -1):
                    state[params[k]][key] = olds[k]

    def _incomplete_state(self, batch, keys):
        """The KeyError for a state (edited by hand) that lacks ``step`` or one of ``keys``.

        torch raises a KeyError there too; this one names the parameter.
        """
        name = type(self).__name__
        for k, param in enumerate(batch.params):
            state = self.state.get(param, {})
            counted = ("step",) if self.rule is None or self.rule.step else ()
            for key in counted + tuple(keys):
                if state.get(key) is None:
                    return KeyError(f"{name}: the state of param_groups[{batch.group_index}]"
                                    f"['params'][{batch.indices[k]}] has no {key!r}")
        return KeyError(f"{name}: incomplete state")

    # ------------------------------------------------------------------ hooks
    def register_step_pre_hook(self, hook):
        """``hook(optimizer, args, kwargs) -> None or (args, kwargs)``, before each step."""
        return _add_hook(self._optimizer_step_pre_hooks, hook)

    def register_step_post_hook(self, hook):
        """``hook(optimizer, args, kwargs) -> None``, after each step."""
        return _add_hook(self._optimizer_step_post_hooks, hook)

    def register_state_dict_pre_hook(self, hook, prepend=False):
        """``hook(optimizer) -> None``, before ``state_dict`` builds its result."""
        return _add_hook(self._optimizer_state_dict_pre_hooks, hook, prepend)

    def register_state_dict_post_hook(self, hook, prepend=False):
        """``hook(optimizer, state_dict) -> state_dict or None``, after ``state_dict``."""
        return _add_hook(self._optimizer_state_dict_post_hooks, hook, prepend)

    def register_load_state_dict_pre_hook(self, hook, prepend=False):
        """``hook(optimizer, state_dict) -> state_dict or None``, before loading."""
        return _add_hook(self._optimizer_load_state_dict_pre_hooks, hook, prepend)

    def register_load_state_dict_post_hook(self, hook, prepend=False):
        """``hook(optimizer) -> None``, after loading."""
        return _add_hook(self._optimizer_load_state_dict_post_hooks, hook, prepend)

    # ------------------------------------------------------------------ state dict
    def state_dict(self):
        """Return the state as torch's layout.

        Returns
        -------
        dict
            ``{"state": {int: {...}}, "param_groups": [{..., "params": [int, ...]}]}``,
            with parameter ids counted across groups in order. State arrays
            are the optimizer's own (not copies), as in torch.
        """
        with _lock_of(self):  # never halfway through another thread's step
            return self._state_dict()

    def _state_dict(self):
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        mapping = {}
        start = 0
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for i, p in enumerate(group["params"], start):
                mapping.setdefault(id(p), i)
            packed["params"] = [mapping[id(p)] for p in group["params"]]
            start += len(packed["params"])
            groups.append(packed)
        state = {
            (mapping[id(k)] if isinstance(k, np.ndarray) else k): v for k, v in self.state.items()
        }
        state_dict = {"state": state, "param_groups": groups}
        for hook in self._optimizer_state_dict_post_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def load_state_dict(self, state_dict):
        """Load a state dict made by :meth:`state_dict` (or read by :func:`nopt.load`).

        Everything is checked before anything changes: the group count and
        sizes, parameter ids, hyperparameter types, and each state array's
        shape and dtype against its parameter. Floating state is cast to the
        parameter's dtype, as torch does.

        Raises
        ------
        TypeError, ValueError
            On any mismatch; the optimizer is then unchanged.
        """
        with _lock_of(self):  # never halfway through another thread's step
            self._load_state_dict(state_dict)

    def _load_state_dict(self, state_dict):
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        state_dict = dict(state_dict)
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        for key in ("state", "param_groups"):
            if key not in state_dict:
                raise ValueError(f"loaded state dict has no '{key}' entry")
        saved_groups = state_dict["param_groups"]
        saved_state = state_dict["state"]
        if not isinstance(saved_groups, (list, tuple)) or not all(isinstance(g, dict) for g in saved_groups):
            raise TypeError("loaded state dict's 'param_groups' must be a list of dicts")
        if not isinstance(saved_state, dict):
            raise TypeError("loaded state dict's 'state' must be a dict")
        groups = self.param_groups
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for g in saved_groups:
            if "params" not in g or not isinstance(g["params"], (list, tuple)):
                raise ValueError("a loaded parameter group has no 'params' list")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups)):
            raise ValueError(
                "loaded state dict contains a parameter group that doesn't match the size "
                "of optimizer's group"
            )
        saved_ids = list(chain.from_iterable(g["params"] for g in saved_groups))
        for i in saved_ids:
            if not isinstance(i, numbers.Integral) or isinstance(i, bool):
                raise TypeError(f"loaded parameter ids must be ints, got {i!r}")
        if len(set(saved_ids)) != len(saved_ids):
            raise ValueError("loaded state dict lists the same parameter id twice")
        id_map = dict(zip(saved_ids, chain.from_iterable(g["params"] for g in groups)))
        for k in saved_state:
            if k not in id_map:
                raise ValueError(f"loaded state refers to parameter id {k!r}, which no group lists")

        new_groups = []
        for gi, (group, saved) in enumerate(zip(groups, saved_groups)):
            new_group = {}
            for key, value in saved.items():
                if key == "params":
                    continue
                self._check_group_value(gi, key, value)
                new_group[key] = _copy_value(value)
            for key in self.defaults:
                if key not in new_group:
                    raise ValueError(f"loaded param_groups[{gi}] has no '{key}' entry")
            new_group["params"] = group["params"]
            if "param_names" in group and "param_names" not in new_group:
                new_group["param_names"] = group["param_names"]
            new_groups.append(new_group)

        new_state = StateMap()
        for k, value in saved_state.items():
            param = id_map[k]
            if not isinstance(value, dict):
                raise TypeError(f"loaded state for parameter id {k} must be a dict, got {type(value).__name__}")
            new_state[param] = StateDict(
                {key: self._load_state_value(k, param, key, v) for key, v in value.items()}
            )
            if value:
                lacking = [key for key in self._required_state if new_state[param].get(key) is None]
                if lacking:
                    raise ValueError(
                        f"loaded state[{k}] lacks {', '.join(map(repr, lacking))}: "
                        f"{type(self).__name__} state needs {', '.join(self._required_state)}"
                    )

        self._check_loaded(new_groups, new_state)
        self._flatten_state(new_groups, new_state)
        self.param_groups = new_groups
        self.state = new_state
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def _check_loaded(self, groups, state):
        """The last checks of a load, on the new groups and state, before anything changes.

        Raise TypeError/ValueError to refuse the state dict (the optimizer is
        then unchanged and no post-load hook runs); a subclass may normalise
        the groups in place. By default: :meth:`_check_option_state`.
        """
        self._check_option_state(groups, state)

    def _check_option_state(self, groups, state):
        """Raise ValueError if a loaded state lacks an array its group's options need.

        Derived from the rule's optional streams (``(key, init, when)`` in the
        spec): with the switch ``when`` on for a group (Adam's ``amsgrad``,
        RMSprop's momentum and ``centered``), every non-empty state of the
        group must hold ``key``.
        """
        rule = self.rule
        if rule is None or all(when is None for _, _, when in rule.state):
            return
        switch_of = {key: when for key, _, when in rule.state if when is not None}
        for gi, group in enumerate(groups):
            need = [key for key in rule.resolve(group)[0] if key in switch_of]
            for pi, p in enumerate(group["params"]):
                entry = state.get(p)
                if not entry:
                    continue
                lacking = [key for key in need if entry.get(key) is None]
                if lacking:
                    on = sorted({switch_of[key] for key in lacking})
                    raise ValueError(
                        f"loaded state for param_groups[{gi}]['params'][{pi}] lacks "
                        f"{', '.join(map(repr, lacking))}, which its group's options need "
                        f"({', '.join(map(repr, on))} on)")

    def _check_group_value(self, group_index, key, value):
        """Type-check a loaded hyperparameter against the default's type."""
        if key not in self.defaults:
            return
        default = self.defaults[key]
        where = f"loaded param_groups[{group_index}]['{key}']"
        if isinstance(default, bool):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{where} must be a bool, got {value!r}")
        elif _is_number(default) or default is required:
            if not _is_number(value):
                raise TypeError(f"{where} must be a number, got {value!r}")
        elif isinstance(default, tuple):
            if not isinstance(value, (tuple, list)) or len(value) != len(default):
                raise TypeError(f"{where} must be a {len(default)}-tuple, got {value!r}")
            for v, d in zip(value, default):
                if _is_number(d) and not _is_number(v):
                    raise TypeError(f"{where} must hold numbers, got {value!r}")
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise TypeError(f"{where} must be a str, got {value!r}")

    @functools.cached_property
    def _scalar_state(self):
        """State keys holding one number: ``step`` and the required non-array keys."""
        return ("step",) + tuple(
            k for k in self._required_state if k != "step" and k not in self._elementwise_state)

    def _load_state_value(self, param_id, param, key, value):
        """Check one loaded state entry and return the optimizer's own copy."""
        where = f"loaded state[{param_id}]['{key}']"
        if key in self._scalar_state:
            if value is None and key != "step":
                return None
            return _check_scalar(value, where, count=(key == "step"))
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "fiub":
                raise TypeError(f"{where} has dtype {value.dtype}; expected a numeric array")
            if key in self._elementwise_state:
                if value.shape != param.shape:
                    raise ValueError(
                        f"{where} has shape {value.shape}; expected {param.shape}, its parameter's shape"
                    )
                if value.dtype.kind != "f":
                    raise TypeError(f"{where} has dtype {value.dtype}; expected a float array")
            if value.dtype.kind == "f" and key != "step":
                return np.array(value, dtype=param.dtype, order="C", copy=True)
            return np.array(value, copy=True)
        if key in self._elementwise_state:
            if value is None:
                return None
            raise TypeError(f"{where} must be an array of shape {param.shape}, got {type(value).__name__}")
        return _check_plain(value, where, param.dtype)

    def _flatten_state(self, groups, state):
        """Move loaded elementwise state into one flat buffer per group and dtype."""
        for group in groups:
            for key in self._elementwise_state:
                for dtype in (np.float32, np.float64):
                    params = [
                        p for p in group["params"]
                        if p.dtype == dtype and isinstance(state.get(p, {}).get(key), np.ndarray)
                    ]
                    for p, flat in zip(params, self._flat_zeros(params)):
                        flat[...] = state[p][key]
                        state[p][key] = flat

    def __getstate__(self):
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups}

    def __setstate__(self, state):
        self.__dict__.update(state)
        for name in (
            "_optimizer_step_pre_hooks", "_optimizer_step_post_hooks",
            "_optimizer_state_dict_pre_hooks", "_optimizer_state_dict_post_hooks",
            "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks",
        ):
            self.__dict__.setdefault(name, OrderedDict())
        self.__dict__.setdefault("_opt_called", False)

    def __repr__(self):
        text = self.__class__.__name__ + " ("
        for i, group in enumerate(self.param_groups):
            text += "\n"
            text += f"Parameter Group {i}\n"
            for key in sorted(group.keys()):
                if key != "params":
                    text += f"    {key}: {group[key]}\n"
        text += ")"
        return text


_ALIGN = 64
# Start offsets (mod 4096 bytes) for successive flat buffers. Large NumPy
# arrays all start at the same offset within a page (16 bytes with glibc),
# and a loop that streams several arrays whose elements share their low 12
# address bits suffers "4K aliasing" (loads wait on unrelated stores): about
# 25% of a memory-bound step here. Staggering the buffers nopt allocates
# (optimizer state, ParameterBuffer data and grads) avoids it among them and
# against ordinary arrays.
_STAGGER = (1024, 2048, 3072, 512, 1536, 2560, 3584)
_stagger_next = itertools.count()


def _aligned_zeros(n, dtype):
    """A zeroed 1-D array of ``n`` elements, 64-byte aligned, at a staggered page offset."""
    dtype = np.dtype(dtype)
    nbytes = n * dtype.itemsize
    if nbytes < 4096:
        raw = np.zeros(nbytes + _ALIGN, dtype=np.uint8)
        start = (-raw.ctypes.data) % _ALIGN
    else:
        raw = np.zeros(nbytes + 4096, dtype=np.uint8)
        offset = _STAGGER[next(_stagger_next) % len(_STAGGER)]
        start = (offset - raw.ctypes.data) % 4096
    return raw[start:start + nbytes].view(dtype)


def _check_no_shared_memory(groups):
    """Raise if two distinct parameters overlap in memory (one update would clobber the other)."""
    spans = []
    for gi, group in enumerate(groups):
        for pi, p in enumerate(group["params"]):
            if p.nbytes:
                start = p.__array_interface__["data"][0]
                spans.append((start, start + p.nbytes, gi, pi))
    spans.sort()
    for (s0, e0, g0, p0), (s1, e1, g1, p1) in zip(spans, spans[1:]):
        if s1 < e0:
            raise ValueError(
                f"param_groups[{g0}]['params'][{p0}] and param_groups[{g1}]['params'][{p1}] "
                "share memory; each parameter must have memory of its own"
            )


# Counts above this are not whole floats any more (and a step adds 1 to a float).
_MAX_COUNT = 2 ** 53


def _check_scalar(value, where, count=False):
    """The one check of a loaded scalar state value; return it as a Python float.

    Whatever the container (a Python number, a NumPy scalar or a 0-d
    array), the value must be a real number, not a bool, and finite; a
    count (``count=True``) must also be whole, >= 0 and at most 2**53.
    Raises TypeError or ValueError (never OverflowError).
    """
    x = value
    if isinstance(x, np.ndarray):
        if x.ndim != 0:
            raise TypeError(f"{where} must be a number, got an array of shape {x.shape}")
        x = x[()]
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (numbers.Integral, numbers.Real)):
        raise TypeError(f"{where} must be a real number, got {value!r}")
    if isinstance(x, numbers.Integral):
        x = int(x)
        if count and not 0 <= x <= _MAX_COUNT:
            raise ValueError(f"{where} must be a whole count in [0, 2**53], got {_short(x)}")
        if abs(x) > _MAX_COUNT:
            raise ValueError(f"{where} is too large: {_short(x)}")
        return float(x)
    try:
        x = float(x)
    except (OverflowError, ValueError, TypeError):
        raise ValueError(f"{where} must be a finite real number, got {_short(value)}") from None
    if not math.isfinite(x):
        raise ValueError(f"{where} must be finite, got {x!r}")
    if count and not (0 <= x <= _MAX_COUNT and x == int(x)):
        raise ValueError(f"{where} must be a whole count in [0, 2**53], got {x!r}")
    return x


def _short(x):
    text = repr(x) if not isinstance(x, int) or abs(x) < 10 ** 30 else f"an int of {x.bit_length()} bits"
    return text if len(text) < 80 else text[:77] + "..."


def _check_plain(value, where, dtype):
    """Copy a non-array state value: numbers, None, and containers of those.

    Float arrays inside are cast to ``dtype``, the parameter's, as torch does.
    """
    if value is None or isinstance(value, (bool, numbers.Number)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "fiub":
            raise TypeError(f"{where} has dtype {value.dtype}; expected a numeric array")
        if value.dtype.kind == "f":
            return np.array(value, dtype=dtype, order="C", copy=True)
        return value.copy()
    if isinstance(value, (list, tuple)):
        return type(value)(_check_plain(v, where, dtype) for v in value)
    if isinstance(value, dict):
        return {k: _check_plain(v, where, dtype) for k, v in value.items()}
    raise TypeError(f"{where} must be a number, array or None, got {type(value).__name__}")


def _copy_value(value):
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, list):
        return [_copy_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_copy_value(v) for v in value)
    if isinstance(value, dict):
        return {k: _copy_value(v) for k, v in value.items()}
    return value
