"""torch's kernel-choice keywords (``foreach``, ``fused``, ``capturable``, ``differentiable``).

Scripts copied from torch pass them; nopt has one kernel path, so ``None`` and
``False`` are accepted and ignored, and ``True`` is refused with the reason.
:class:`nopt.Optimizer` applies :func:`accept_torch_options` to each
subclass's ``__init__`` once, when the class is defined: a step pays nothing.
"""
import functools
import inspect

import numpy as np

__all__ = ["TORCH_OPTIONS", "accept_torch_options"]

# torch's defaults, and why nopt cannot honour True.
TORCH_OPTIONS = {
    "foreach": (None, "every step is already one typed kernel call per parameter group"),
    "fused": (None, "every step is already one typed kernel call per parameter group"),
    "capturable": (False, "its arrays are NumPy arrays on the CPU (no CUDA graphs to capture)"),
    "differentiable": (False, "a step is not differentiable (there is no autograd graph)"),
}


def _check(cls_name, name, value):
    if value is None or (isinstance(value, (bool, np.bool_)) and not value):
        return
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(
            f"{cls_name}({name}=True) is not supported: nopt has one kernel path, and "
            f"{TORCH_OPTIONS[name][1]}; drop {name}= or pass {name}=None/False"
        )
    raise TypeError(f"{cls_name}: {name} must be None or a bool, got {value!r}")


def accept_torch_options(init):
    """Return ``init`` wrapped to take (and check, then drop) torch's kernel options.

    Left as it is when it does not take ``params`` first (a wrapper around
    another optimizer) or takes ``**kwargs`` (it forwards them to a wrapped
    parent, which checks them). An option ``init`` names itself sits where
    torch's signature has it (ASGD's positional ``foreach``, before
    ``maximize``), so a torch call binds the same; it is checked here too,
    and ``init`` ignores it.
    """
    try:
        signature = inspect.signature(init)
    except (TypeError, ValueError):
        return init
    parameters = list(signature.parameters.values())
    names = [p.name for p in parameters]
    if (len(names) < 2 or names[1] != "params"
            or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)):
        return init
    own = tuple(n for n in names if n in TORCH_OPTIONS)
    extra = tuple(n for n in TORCH_OPTIONS if n not in own)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        cls_name = type(self).__name__
        for name in extra:
            _check(cls_name, name, kwargs.pop(name, TORCH_OPTIONS[name][0]))
        if own:
            try:
                given = signature.bind(self, *args, **kwargs).arguments
            except TypeError:
                given = {}  # init raises Python's own error for the call
            for name in own:
                if name in given:
                    _check(cls_name, name, given[name])
        init(self, *args, **kwargs)

    # functools.wraps sets __wrapped__: inspect.signature(cls) shows the
    # optimizer's own arguments, unchanged (torch's options are compatibility
    # only, documented on Optimizer, and shown only where torch takes them by
    # position), so help() and signature checks see them.
    return __init__
