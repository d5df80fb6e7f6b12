"""The optimizer table that drives the generic tests.

Each module in this package defines ``RECORDS``, a list of
:class:`OptimRecord`: one optimizer, its option sets, its invalid inputs and
its NumPy reference. Adding an optimizer to the generic tests (torch parity,
NumPy reference, threads, resume, bad input) is one new module here.
"""
import dataclasses
import importlib
import itertools
import pkgutil
from typing import Any, Callable


@dataclasses.dataclass
class OptimRecord:
    name: str                               # nopt attribute name, e.g. "SGD"
    option_sets: list                       # list of kwargs dicts for the constructor
    invalid: list = dataclasses.field(default_factory=list)  # (kwargs, exception type, regex)
    torch_name: str = None                  # torch.optim name; defaults to name
    torch_kwargs: dict = dataclasses.field(default_factory=lambda: {"foreach": False})
    # NumPy reference of one parameter's update:
    #   reference(param, grad, state, group) -> None, updating param and state in place.
    # ``state`` is the per-parameter dict (torch's keys); ``group`` the hyperparameters.
    reference: Callable = None
    sparse_grad: bool = False               # gradients are scipy.sparse matrices
    steps: int = 100
    # Keys of per-element state arrays (for bad-input "unchanged" checks and resume).
    state_keys: tuple = ()
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def cls(self):
        import nopt
        return getattr(nopt, self.name)

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


def cases(sparse=None):
    """(record, options) pairs over the whole table, with readable ids."""
    out = []
    for record in RECORDS:
        if sparse is not None and record.sparse_grad != sparse:
            continue
        for opt_id, options in zip(record.ids(), record.option_sets):
            out.append((record, options, opt_id))
    return out
