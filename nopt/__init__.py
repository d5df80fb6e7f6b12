"""nopt: torch.optim's API over NumPy arrays, with typed Cython/OpenMP kernels."""
__version__ = "0.1.0"

from ._config import get_config, show_config
from ._parameter import Parameter
from ._threads import get_num_threads, num_threads, set_num_threads
from .optimizer import (
    Optimizer,
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
    required,
)
from .serialization import CheckpointError, load, save
from .sgd import SGD

# Names whose modules are added issue by issue; resolved on first access.
_LAZY = {
    "Adam": "adam", "AdamW": "adam", "Adamax": "adamax", "NAdam": "nadam", "RAdam": "radam",
    "SparseAdam": "sparse_adam", "Adagrad": "adagrad", "Adadelta": "adadelta",
    "RMSprop": "rmsprop", "Rprop": "rprop", "ASGD": "asgd",
    "LBFGS": "lbfgs", "CG": "cg", "minimize": "_minimize", "scipy_method": "_minimize",
    "ParameterBuffer": "flat", "flat_parameters": "flat",
    "ApplyIfFinite": "finite", "grads_are_finite": "finite",
}
_SUBMODULES = ("lr_scheduler", "swa_utils", "utils", "bench", "demo")


def __getattr__(name):
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'nopt' has no attribute {name!r}")
    globals()[name] = value
    return value


__all__ = [
    "__version__",
    "Parameter",
    "Optimizer",
    "required",
    "register_optimizer_step_pre_hook",
    "register_optimizer_step_post_hook",
    "SGD",
    "save",
    "load",
    "CheckpointError",
    "get_num_threads",
    "set_num_threads",
    "num_threads",
    "show_config",
    "get_config",
]
