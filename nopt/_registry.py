"""What the package itself knows about each update rule: the registry's core.

One :class:`Entry` per nopt optimizer that has an elementwise update: its
NumPy reference (:mod:`nopt._reference`) and how ``python -m nopt.bench``
and the asv suite benchmark it. The facts of the kernel itself are not
repeated here: an optimizer with a rule spec (``RULE = Rule(...)``, its
class's ``rule``, :mod:`nopt._kernels._spec`) gives the streams its step
moves from that spec; only optimizers with kernels of their own (Adafactor,
Adan, LAMB, LARS, the schedule-free pair's group-level plan) state them. The
test table (``tests/optim_db``) builds on these entries and adds what only
the tests need (option grids, invalid inputs, capability flags); the bench
and the benchmarks iterate :data:`RULES` and need nothing outside the
package.

Adding an optimizer: add its :class:`Entry` here (and its reference to
:mod:`nopt._reference`), then its record to ``tests/optim_db``.
"""
import dataclasses
import functools
from typing import Callable

from . import _reference

__all__ = ["Entry", "RULES"]


@dataclasses.dataclass(frozen=True)
class Entry:
    """One update rule, as the package knows it.

    Attributes
    ----------
    name : str
        The nopt (and torch.optim) attribute name.
    reference : callable
        ``reference(param, grad, state, group)``: the rule in plain NumPy,
        one array, in place (:mod:`nopt._reference`). With ``per_array``
        false, a class instead: ``reference(params, grads, **hyper)`` steps
        every array at once (``.step()``), for a rule with a global scalar.
    bench_kwargs : dict
        Constructor hyperparameters for the bench (nopt, NumPy and torch alike).
    reads, writes : int, optional
        Streams read and written back per element by the step's first (or
        only) pass over memory, for an optimizer without a rule spec; with
        one, leave them out: :attr:`n_read` and :attr:`n_write` come from
        the spec.
    passes : tuple of (int, int)
        The ``(n_read, n_write)`` of each further pass, for rules that must
        reduce before they can update (LAMB, LARS, Prodigy, Adafactor).
    torch_fused : bool
        torch has a fused CPU kernel for it (the bench's ``torch-fused`` peer).
    in_torch : bool
        ``torch.optim`` has it (the bench's torch peers); False for the rules
        beyond torch.optim (``python -m nopt.bench --beyond``).
    per_array : bool
        The update of an array depends on that array only (every rule but
        Prodigy, whose ``d`` sums over all of them).

    Notes
    -----
    **The roofline.** Each pass is counted by the memory it must move: a
    stream read counts once, a stream written in place counts twice (read
    and written back; a written stream is also read by write-allocate), and
    every pass the algorithm needs is counted, reductions included. A pass
    over memory is the minimum the rule allows at sizes beyond the caches:
    a per-parameter norm must be complete before the first element can be
    updated, so its streams are read once more. ``nopt.bench``'s roofline
    peer runs ``helpers.stream(n_read, n_write)`` for every pass over the
    same arrays; ``% roof`` is its time over the step's.
    """

    name: str
    reference: Callable
    bench_kwargs: dict
    reads: int = None
    writes: int = None
    torch_fused: bool = False
    in_torch: bool = True
    passes: tuple = ()
    per_array: bool = True

    @property
    def spec(self):
        """The optimizer's rule spec (:class:`nopt._kernels._spec.Rule`), or None."""
        import nopt

        return getattr(nopt, self.name).rule

    @property
    def n_read(self):
        """Streams read per element by one step (param, grad and the state arrays)."""
        return self._streams()[0]

    @property
    def n_write(self):
        """Streams written back per element by one step (param and the state arrays)."""
        return self._streams()[1]

    def _streams(self):
        if self.reads is not None:
            return self.reads, self.writes
        return _spec_streams(self.name, tuple(sorted(self.bench_kwargs.items())))

    @property
    def all_passes(self):
        """``(n_read, n_write)`` of every pass of a step, the first one first."""
        return ((self.n_read, self.n_write),) + tuple(self.passes)

    @property
    def streams(self):
        """Streams read plus streams written per element, over every pass of a step."""
        return sum(r + w for r, w in self.all_passes)

    @property
    def bytes_per_element(self):
        """Bytes one step moves per float32 element (float64: twice)."""
        return 4 * self.streams


@functools.lru_cache(maxsize=None)
def _spec_streams(name, bench_items):
    """(read, written) streams of the spec's kernel under the bench's options.

    The kernel reads ``param``, ``grad`` and every state array the group's
    options switch on, and writes all but ``grad`` back.
    """
    import numpy as np

    import nopt

    cls = getattr(nopt, name)
    group = cls([nopt.Parameter(np.zeros(1))], **dict(bench_items)).param_groups[0]
    keys, _ = cls.rule.resolve(group)
    return 2 + len(keys), 1 + len(keys)


def _rules(*rules):
    return {r.name: r for r in rules}


# Benchmarked at torch's defaults, except SGD with momentum (plain SGD has no state).
RULES = _rules(
    Entry("SGD", _reference.sgd, dict(lr=1e-3, momentum=0.9), torch_fused=True),
    Entry("Adam", _reference.adam, dict(lr=1e-3), torch_fused=True),
    Entry("AdamW", _reference.adam, dict(lr=1e-3), torch_fused=True),
    Entry("Adamax", _reference.adamax, dict(lr=2e-3)),
    Entry("NAdam", _reference.nadam, dict(lr=2e-3)),
    Entry("RAdam", _reference.radam, dict(lr=1e-3)),
    Entry("Adagrad", _reference.adagrad, dict(lr=1e-2), torch_fused=True),
    Entry("Adadelta", _reference.adadelta, dict(lr=1.0)),
    Entry("RMSprop", _reference.rmsprop, dict(lr=1e-2)),
    Entry("Rprop", _reference.rprop, dict(lr=1e-2)),
    # ASGD writes ax without reading it while mu == 1; a written stream costs
    # a read too (write-allocate), so it counts as read and written.
    Entry("ASGD", _reference.asgd, dict(lr=1e-2)),
    # Adafactor needs RMS(update) before it updates: two passes over a vector,
    # p, g, v read and v written, then p, g, v read and p written (32 bytes).
    # Its factored 2-D case is benchmarked by benchmarks/bench_matrix.py.
    Entry("Adafactor", _reference.adafactor, dict(lr=1e-2), 3, 1, passes=((3, 1),)),
    # Beyond torch.optim (nopt/_kernels/beyond.pxi; no torch peers).
    Entry("Lion", _reference.lion, dict(lr=1e-4), in_torch=False),
    Entry("AdaBelief", _reference.adabelief, dict(lr=1e-3), in_torch=False),
    Entry("Adan", _reference.adan, dict(lr=1e-3), 6, 5, in_torch=False),
    Entry("ScheduleFreeSGD", _reference.schedule_free_sgd, dict(lr=1.0), 3, 2, in_torch=False),
    Entry("ScheduleFreeAdamW", _reference.schedule_free_adamw, dict(lr=2.5e-3), 4, 3, in_torch=False),
    # LAMB: moments and norms (p, g, m, v read; m, v written), then the
    # update (p, m, v read; p written): 40 bytes.
    Entry("LAMB", _reference.lamb, dict(lr=1e-3), 4, 2, passes=((3, 1),), in_torch=False),
    # LARS: the norms (p, g read), then the update (p, g, buf read; p, buf
    # written): 28 bytes.
    Entry("LARS", _reference.lars, dict(lr=1.0), 2, 0, passes=((3, 2),), in_torch=False),
    # Prodigy: the two global sums (p, g, p0, s read; s written), then, with
    # the new d, the moments and the update (p, g, m, v read; p, m, v
    # written): 48 bytes. Its reference steps every array (d is global).
    Entry("Prodigy", _reference.Prodigy, dict(lr=1.0), 4, 1, passes=((4, 3),), per_array=False,
          in_torch=False),
)
