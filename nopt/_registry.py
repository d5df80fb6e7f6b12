"""What the package itself knows about each update rule: the registry's core.

One :class:`Rule` per nopt optimizer that has an elementwise update: its
NumPy reference (:mod:`nopt._reference`), how ``python -m nopt.bench`` and
the asv suite benchmark it, and the memory streams its step moves. The
test table (``tests/optim_db``) builds on these records and adds what only
the tests need (option grids, invalid inputs, capability flags); the bench
and the benchmarks iterate :data:`RULES` and need nothing outside the
package.

Adding an optimizer: add its :class:`Rule` here (and its reference to
:mod:`nopt._reference`), then its record to ``tests/optim_db``.
"""
import dataclasses
from typing import Callable

from . import _reference

__all__ = ["Rule", "RULES"]


@dataclasses.dataclass(frozen=True)
class Rule:
    """One update rule, as the package knows it.

    Attributes
    ----------
    name : str
        The nopt (and torch.optim) attribute name.
    reference : callable
        ``reference(param, grad, state, group)``: the rule in plain NumPy,
        one array, in place (:mod:`nopt._reference`).
    bench_kwargs : dict
        Constructor hyperparameters for the bench (nopt, NumPy and torch alike).
    n_read, n_write : int
        Streams read and written back per element by one step, as benchmarked
        (for GB/s and the roofline kernel).
    passes : tuple of (int, int)
        Further ``(n_read, n_write)`` passes of a step over the same streams,
        for rules that reduce each parameter first and then update it (LAMB);
        the roofline kernel runs them too.
    torch_fused : bool
        torch has a fused CPU kernel for it (the bench's ``torch-fused`` peer).
    """

    name: str
    reference: Callable
    bench_kwargs: dict
    n_read: int
    n_write: int
    torch_fused: bool = False
    passes: tuple = ()

    @property
    def streams(self):
        """Streams read plus streams written per element, over every pass of a step."""
        return self.n_read + self.n_write + sum(r + w for r, w in self.passes)

    @property
    def bytes_per_element(self):
        """Bytes one step moves per float32 element (float64: twice)."""
        return 4 * self.streams


def _rules(*rules):
    return {r.name: r for r in rules}


# Benchmarked at torch's defaults, except SGD with momentum (plain SGD has no state).
RULES = _rules(
    Rule("SGD", _reference.sgd, dict(lr=1e-3, momentum=0.9), 3, 2, torch_fused=True),
    Rule("Adam", _reference.adam, dict(lr=1e-3), 4, 3, torch_fused=True),
    Rule("AdamW", _reference.adam, dict(lr=1e-3), 4, 3, torch_fused=True),
    Rule("Adamax", _reference.adamax, dict(lr=2e-3), 4, 3),
    Rule("NAdam", _reference.nadam, dict(lr=2e-3), 4, 3),
    Rule("RAdam", _reference.radam, dict(lr=1e-3), 4, 3),
    Rule("Adagrad", _reference.adagrad, dict(lr=1e-2), 3, 2, torch_fused=True),
    Rule("Adadelta", _reference.adadelta, dict(lr=1.0), 4, 3),
    Rule("RMSprop", _reference.rmsprop, dict(lr=1e-2), 3, 2),
    Rule("Rprop", _reference.rprop, dict(lr=1e-2), 4, 3),
    # ASGD writes ax without reading it while mu == 1; a written stream costs
    # a read too (write-allocate), so it counts as read and written.
    Rule("ASGD", _reference.asgd, dict(lr=1e-2), 3, 2),
    # Adafactor needs RMS(update) before it updates: two passes over a vector
    # (p, g, v read and v written; p, g, v read and p written: 6 reads and 2
    # writes), the same 32 bytes as 5 read and 3 written streams. Its factored
    # 2-D case is benchmarked by benchmarks/bench_matrix.py.
    Rule("Adafactor", _reference.adafactor, dict(lr=1e-2), 5, 3),
    # Beyond torch.optim (nopt/_kernels/beyond.pxi; no torch peers).
    Rule("Lion", _reference.lion, dict(lr=1e-4), 3, 2),
    Rule("AdaBelief", _reference.adabelief, dict(lr=1e-3), 4, 3),
    Rule("Adan", _reference.adan, dict(lr=1e-3), 6, 5),
    Rule("ScheduleFreeSGD", _reference.schedule_free_sgd, dict(lr=1.0), 3, 2),
    Rule("ScheduleFreeAdamW", _reference.schedule_free_adamw, dict(lr=2.5e-3), 4, 3),
    # LAMB: moments and norms (p, g, m, v; m, v), then the update (p, m, v; p).
    Rule("LAMB", _reference.lamb, dict(lr=1e-3), 4, 2, passes=((3, 1),)),
    # LARS: its norm pass reads p and g again; the roofline counts the update pass
    # only, so its % of the roofline understates.
    Rule("LARS", _reference.lars, dict(lr=1.0), 3, 2),
)
