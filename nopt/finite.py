"""Skip optimizer steps whose gradients are not finite.

nopt's default policy is torch's: a step applies whatever gradients it is
given, so inf and NaN propagate into the parameters and state. Wrap an
optimizer in :class:`ApplyIfFinite` to skip such steps instead and count
them, as ``optax.apply_if_finite`` does.
"""
import numpy as np

from ._closure_optimizer import ClosureOptimizer
from ._kernels import _plan
from ._kernels.helpers import all_finite

__all__ = ["ApplyIfFinite", "grads_are_finite"]


def grads_are_finite(optimizer):
    """True when every gradient of every group of ``optimizer`` is finite.

    Gradients are checked as a step checks them first (dtype, shape,
    contiguity), then scanned in one kernel call per group and dtype.
    """
    for batch in optimizer._batches():
        ptrs, chunks, n_threads = _plan.make_table([batch.grads])
        if not all_finite(ptrs, chunks, batch.is_double, n_threads):
            return False
    return True


class ApplyIfFinite:
    """Wrap an optimizer so that steps with any inf/NaN gradient are skipped.

    Parameters
    ----------
    optimizer : nopt.Optimizer
        The wrapped optimizer; schedulers should be given this one.
    max_consecutive_skips : int or None, default None
        If set, raise ``FloatingPointError`` when more than this many steps
        in a row were skipped (training has diverged).

    Attributes
    ----------
    skipped_steps : int
        Steps skipped so far.
    consecutive_skips : int
        Steps skipped since the last applied one.
    last_step_applied : bool

    Examples
    --------
    >>> opt = nopt.ApplyIfFinite(nopt.Adam(params, lr=1e-3))
    >>> opt.step()             # a no-op if any gradient is inf or NaN
    >>> opt.skipped_steps
    """

    def __init__(self, optimizer, max_consecutive_skips=None):
        if max_consecutive_skips is not None and max_consecutive_skips < 0:
            raise ValueError(f"max_consecutive_skips must be >= 0 or None, got {max_consecutive_skips}")
        self.optimizer = optimizer
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self.last_step_applied = None

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def zero_grad(self, set_to_none=True):
        self.optimizer.zero_grad(set_to_none)

    def step(self, closure=None):
        """Evaluate ``closure`` (if any), then step only if all gradients are finite."""
        loss = closure() if closure is not None else None
        if grads_are_finite(self.optimizer):
            if closure is not None and isinstance(self.optimizer, ClosureOptimizer):
                # LBFGS and CG need the closure (they evaluate it again
                # themselves); their loss is the one from before the step too.
                self.optimizer.step(closure)
            else:
                self.optimizer.step()
            self.consecutive_skips = 0
            self.last_step_applied = True
        else:
            self.skipped_steps += 1
            self.consecutive_skips += 1
            self.last_step_applied = False
            if self.max_consecutive_skips is not None and self.consecutive_skips > self.max_consecutive_skips:
                raise FloatingPointError(
                    f"{self.consecutive_skips} consecutive steps had non-finite gradients"
                )
        return loss

    def state_dict(self):
        return {
            "optimizer": self.optimizer.state_dict(),
            "skipped_steps": self.skipped_steps,
            "consecutive_skips": self.consecutive_skips,
        }

    def load_state_dict(self, state_dict):
        for key in ("optimizer", "skipped_steps", "consecutive_skips"):
            if key not in state_dict:
                raise ValueError(f"ApplyIfFinite state dict has no '{key}' entry")
        counts = [state_dict["skipped_steps"], state_dict["consecutive_skips"]]
        if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise TypeError("ApplyIfFinite skip counts must be non-negative ints")
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.skipped_steps, self.consecutive_skips = (int(c) for c in counts)

    def __repr__(self):
        return f"ApplyIfFinite({self.optimizer!r}, skipped_steps={self.skipped_steps})"
