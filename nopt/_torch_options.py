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
    another optimizer), names one of the options itself, or takes
    ``**kwargs`` (it forwards them to a wrapped parent, which checks them).
    """
    try:
        signature = inspect.signature(init)
    except (TypeError, ValueError):
        return init
    parameters = list(signature.parameters.values())
    names = [p.name for p in parameters]
    if (len(names) < 2 or names[1] != "params" or any(n in TORCH_OPTIONS for n in names)
            or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)):
        return init

    @functools.wraps(init)
    def __init__(self, *args, foreach=None, fused=None, capturable=False, differentiable=False,
                 **kwargs):
        cls_name = type(self).__name__
        _check(cls_name, "foreach", foreach)
        _check(cls_name, "fused", fused)
        _check(cls_name, "capturable", capturable)
        _check(cls_name, "differentiable", differentiable)
        init(self, *args, **kwargs)

    # functools.wraps sets __wrapped__: inspect.signature(cls) shows the
    # optimizer's own arguments, unchanged (torch's options are compatibility
    # only, documented on Optimizer), so help() and signature checks see them.
    return __init__
