"""The optimizer table: one record per exported optimizer.

Each module in this package defines ``RECORDS``, a list of
:class:`OptimRecord`: one optimizer, its capability flags (as torch's
``OptimizerInfo``), its option sets and its invalid inputs. Every test that
runs "each optimizer" iterates these records and selects by flag (see
:func:`records`), so a new optimizer joins the torch parity, NumPy
reference, threads, resume, bad-input, flat, step-cache and failed-step
tests by adding its record.

What the package itself needs (the NumPy reference, the bench's options and
streams) lives in :mod:`nopt._registry`, so that ``python -m nopt.bench``
works without this directory; a record picks up its rule's reference from
there. tests/test_registry.py fails when an exported optimizer has no record.
"""
import dataclasses
import importlib
import itertools
import pkgutil
from typing import Callable


@dataclasses.dataclass
class OptimRecord:
    name: str                               # nopt attribute name, e.g. "SGD"
    option_sets: list                       # list of kwargs dicts for the constructor
    invalid: list = dataclasses.field(default_factory=list)  # (kwargs, exception type, regex)
    torch_name: str = None                  # torch.optim name; defaults to name
    torch_kwargs: dict = dataclasses.field(default_factory=lambda: {"foreach": False})
    # NumPy reference of one parameter's update (the second oracle):
    #   reference(param, grad, state, group) -> None, updating param and state in place.
    # ``state`` is the per-parameter dict (torch's keys); ``group`` the hyperparameters.
    # Defaults to the rule's in nopt._registry (nopt/_reference.py), shared with the bench.
    reference: Callable = None
    steps: int = 100
    # Keys of per-element state arrays (for bad-input "unchanged" checks and resume).
    # None: the rule spec's streams (``cls.rule.stream_keys``), for an optimizer
    # with a spec; give them only for one without (its kernel is its own).
    state_keys: tuple = None
    # A few small option sets for the behaviour tests (failed step, step cache,
    # flat buffers): the first is the plain one.
    quick_options: list = dataclasses.field(default_factory=list)
    extra: dict = dataclasses.field(default_factory=dict)

    # ---- capability flags: what the tests select on
    torch_oracle: bool = True               # torch.optim has it (parity tests)
    elementwise: bool = True                # the generic table tests apply (option grid over the harness)
    sparse_grad: bool = False               # gradients are scipy.sparse matrices
    needs_closure: bool = False             # step() requires a closure
    flat_mergeable: bool = False            # over a flat buffer, a step is one merged loop (test_flat)
    step_cached: bool = False               # an unchanged group skips re-reading its state (test_step_cache)
    counts_steps: bool = None               # keeps a "step" count (None: the spec's ``step``, else True)
    supports_maximize: bool = True          # takes maximize=
    supports_weight_decay: bool = True      # takes weight_decay=
    eager_state: bool = False               # creates per-parameter state in the constructor
    wraps_optimizer: bool = False           # takes an optimizer, not parameters (ApplyIfFinite)

    def __post_init__(self):
        spec = getattr(self.cls, "rule", None)
        if spec is not None and (self.state_keys is not None or self.counts_steps is not None):
            raise ValueError(f"record {self.name}: its state keys and step count come from its "
                             "rule spec (cls.rule); do not repeat them in the record")
        if self.state_keys is None:
            self.state_keys = spec.stream_keys if spec is not None else ()
        if self.counts_steps is None:
            self.counts_steps = spec.step if spec is not None else True
        if self.reference is None:
            from nopt._registry import RULES

            rule = RULES.get(self.name)
            # (A rule that is not per array, Prodigy, has a whole-optimizer reference.)
            self.reference = rule.reference if rule is not None and rule.per_array else None

    @property
    def cls(self):
        import nopt
        return getattr(nopt, self.name)

    def make(self, params, **options):
        """The optimizer over ``params``; a wrapper wraps a plain SGD over them."""
        if self.wraps_optimizer:
            import nopt
            return self.cls(nopt.SGD(params, lr=0.01), **options)
        return self.cls(params, **options)

    @property
    def torch_cls(self):
        import torch
        return getattr(torch.optim, self.torch_name or self.name)

    def ids(self):
        return [f"{self.name}-{i}-" + "-".join(f"{k}={v}" for k, v in o.items()) for i, o in enumerate(self.option_sets)]


def grid(**axes):
    """Every combination of the given option values, as a list of dicts."""
    keys = list(axes)
    return [dict(zip(keys, values)) for values in itertools.product(*axes.values())]


def _load():
    records = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        records.extend(getattr(module, "RECORDS", []))
    return records


RECORDS = _load()


def records(**flags):
    """The records whose capability flags have the given values, e.g.
    ``records(elementwise=True, step_cached=True)``."""
    for key in flags:
        if not any(f.name == key for f in dataclasses.fields(OptimRecord)):
            raise TypeError(f"OptimRecord has no flag {key!r}")
    return [r for r in RECORDS if all(getattr(r, k) == v for k, v in flags.items())]


def by_name(name):
    """The record of nopt's optimizer ``name``."""
    for record in RECORDS:
        if record.name == name:
            return record
    raise KeyError(f"no record for {name!r} in tests/optim_db")


def cases(sparse=None):
    """(record, options, id) over the option grids of the elementwise records."""
    out = []
    for record in records(elementwise=True):
        if sparse is not None and record.sparse_grad != sparse:
            continue
        for opt_id, options in zip(record.ids(), record.option_sets):
            out.append((record, options, opt_id))
    return out


def quick_cases(**flags):
    """(name, options) over the quick option sets of the records with these flags."""
    return [(r.name, dict(o)) for r in records(**flags) for o in r.quick_options]


def quick_ids(pairs):
    return [f"{name}-" + "-".join(f"{k}={v}" for k, v in options.items()) for name, options in pairs]
