"""``torch.optim``'s namespace over nopt: port a script by changing one import.

``from nopt import optim`` (instead of ``from torch import optim``) gives the
same classes as ``nopt.X``, with torch's names and signatures, plus
``optim.lr_scheduler`` and ``optim.swa_utils`` (nopt's own optimizers that
torch lacks, such as ``CG``, are reachable here too)::

    from nopt import optim

    opt = optim.AdamW(params, lr=1e-3)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)

``import nopt.optim.lr_scheduler`` and ``from nopt.optim.lr_scheduler import
StepLR`` work too: they are the modules ``nopt.lr_scheduler`` and
``nopt.swa_utils`` themselves. Parameters are :class:`nopt.Parameter`
arrays, and gradients are set by the user (or by a library such as
``autograd``), not by ``loss.backward()``.
"""
import sys

from .. import lr_scheduler, swa_utils
from ..adadelta import Adadelta
from ..adafactor import Adafactor
from ..adagrad import Adagrad
from ..adam import Adam, AdamW
from ..adamax import Adamax
from ..asgd import ASGD
from ..muon import Muon
from ..nadam import NAdam
from ..optimizer import Optimizer
from ..radam import RAdam
from ..rmsprop import RMSprop
from ..rprop import Rprop
from ..sgd import SGD
from ..sparse_adam import SparseAdam

# The submodules are nopt's own modules, importable under this package too.
sys.modules[__name__ + ".lr_scheduler"] = lr_scheduler
sys.modules[__name__ + ".swa_utils"] = swa_utils

# LBFGS imports scipy.optimize (a third of a second): loaded on first use, as in nopt.
_LAZY = ("LBFGS",)


def __getattr__(name):
    if name in _LAZY:
        from .. import lbfgs

        value = getattr(lbfgs, name)
        globals()[name] = value
        return value
    # nopt's optimizers that torch.optim lacks (CG, ...) are here too, under the same names.
    import nopt

    if name in nopt.__all__:
        value = getattr(nopt, name)
        if isinstance(value, type) and issubclass(value, Optimizer):
            globals()[name] = value
            return value
    raise AttributeError(f"module 'nopt.optim' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Adafactor", "Adadelta", "Adagrad", "Adam", "Adamax", "AdamW", "ASGD", "LBFGS",
    "lr_scheduler", "Muon", "NAdam", "Optimizer", "RAdam", "RMSprop", "Rprop", "SGD",
    "SparseAdam", "swa_utils",
]
