"""nopt: torch.optim's API over NumPy arrays, with typed Cython/OpenMP kernels."""
__version__ = "0.1.0"

from . import lr_scheduler, swa_utils, utils
from ._config import get_config, show_config
from ._parameter import Parameter
from ._threads import get_num_threads, num_threads, set_num_threads
from .adabelief import AdaBelief
from .adadelta import Adadelta
from .adafactor import Adafactor
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adamax import Adamax
from .adan import Adan
from .asgd import ASGD
from .combinators import Lookahead, MultiSteps
from .finite import ApplyIfFinite, grads_are_finite
from .flat import ParameterBuffer, flat_parameters
from .lamb import LAMB
from .lars import LARS
from .lion import Lion
from .muon import Muon
from .nadam import NAdam
from .optimizer import (
    Optimizer,
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
    required,
)
from .prodigy import Prodigy
from .radam import RAdam
from .rmsprop import RMSprop
from .rprop import Rprop
from .schedule_free import ScheduleFreeAdamW, ScheduleFreeSGD
from .serialization import CheckpointError, load, save
from .sgd import SGD
from .sparse_adam import SparseAdam

# These need scipy.optimize (a third of a second to import): loaded on first use.
_LAZY = {
    "LBFGS": "lbfgs", "CG": "cg", "minimize": "_minimize", "scipy_method": "_minimize",
}
_LAZY_MODULES = ("bench", "demo", "models", "optim")


def __getattr__(name):
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif name in _LAZY_MODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'nopt' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_LAZY_MODULES))


__all__ = [
    "__version__",
    # core
    "Parameter", "Optimizer", "required",
    "register_optimizer_step_pre_hook", "register_optimizer_step_post_hook",
    # update rules
    "SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "SparseAdam",
    "Adagrad", "Adadelta", "RMSprop", "Rprop", "ASGD", "Adafactor", "Muon",
    # update rules beyond torch.optim
    "Lion", "LAMB", "LARS", "Adan", "AdaBelief", "ScheduleFreeSGD", "ScheduleFreeAdamW", "Prodigy",
    "MultiSteps", "Lookahead",
    # closures and scipy-style minimisation
    "LBFGS", "CG", "minimize", "scipy_method",
    # schedules, averaging, gradient utilities
    "lr_scheduler", "swa_utils", "utils", "ApplyIfFinite", "grads_are_finite",
    # torch.optim's namespace (from nopt import optim)
    "optim",
    # storage, checkpoints, threads, config
    "ParameterBuffer", "flat_parameters", "save", "load", "CheckpointError",
    "get_num_threads", "set_num_threads", "num_threads", "show_config", "get_config",
]
