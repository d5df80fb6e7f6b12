"""DistributedOptimizer: average gradients across MPI ranks before every step."""
import time
from collections import OrderedDict

import numpy as np
from mpi4py import MPI

from ..optimizer import Optimizer
from ._reduce import GradReducer, average_sparse, check_step

__all__ = ["DistributedOptimizer"]


def _default_comm(comm):
    return MPI.COMM_WORLD if comm is None else comm


def param_names(param_groups):
    """``param_groups[i]['params'][j]`` names and the Parameters, in step order."""
    names, params = [], []
    for gi, group in enumerate(param_groups):
        for pi, p in enumerate(group["params"]):
            names.append(f"param_groups[{gi}]['params'][{pi}]")
            params.append(p)
    return names, params


def check_same_layout(comm, param_groups, what):
    """Raise on every rank unless every rank has the same groups, shapes and dtypes.

    One pickled ``allgather`` of the layout (shapes and dtypes only).
    """
    layout = [[(tuple(p.shape), np.dtype(p.dtype).str) for p in g["params"]] for g in param_groups]
    layouts = comm.allgather(layout)
    reference = layouts[0]
    for rank, other in enumerate(layouts[1:], start=1):
        if len(other) != len(reference):
            raise ValueError(f"{what}: rank {rank} has {len(other)} parameter groups, rank 0 has "
                             f"{len(reference)}; every rank must wrap the same model")
        for gi, (mine, theirs) in enumerate(zip(reference, other)):
            if len(mine) != len(theirs):
                raise ValueError(f"{what}: param_groups[{gi}] has {len(theirs)} parameters on rank "
                                 f"{rank} but {len(mine)} on rank 0; every rank must wrap the same model")
            for pi, ((s0, d0), (s, d)) in enumerate(zip(mine, theirs)):
                if s != s0 or d != d0:
                    raise ValueError(
                        f"{what}: param_groups[{gi}]['params'][{pi}] has shape {s} and dtype "
                        f"{np.dtype(d).name} on rank {rank} but shape {s0} and dtype "
                        f"{np.dtype(d0).name} on rank 0; every rank must wrap the same model")


def _init_hooks(self):
    # What Optimizer.__init__ sets up for step/state-dict hooks (the wrapper
    # shares its inner optimizer's groups and state instead of owning any).
    self._optimizer_step_pre_hooks = OrderedDict()
    self._optimizer_step_post_hooks = OrderedDict()
    self._optimizer_state_dict_pre_hooks = OrderedDict()
    self._optimizer_state_dict_post_hooks = OrderedDict()
    self._optimizer_load_state_dict_pre_hooks = OrderedDict()
    self._optimizer_load_state_dict_post_hooks = OrderedDict()
    self._opt_called = False


class DistributedOptimizer(Optimizer):
    r"""Wrap an optimizer so that each step uses the gradients averaged over all ranks.

    Every rank runs the same training script on its own shard of the data and
    holds a full copy of the parameters. Before the wrapped optimizer's step,
    the gradients are summed across ranks and divided by the number of ranks
    :math:`N`:

    .. math::
        g \leftarrow \frac{1}{N} \sum_{r=0}^{N-1} g_r

    so ranks that start with the same parameters (see
    :func:`broadcast_parameters`) take the same step and stay in sync, as with
    torch's DistributedDataParallel or Horovod.

    Parameters
    ----------
    optimizer : nopt optimizer
        Any nopt optimizer, or an :class:`nopt.ApplyIfFinite` around one.
    comm : mpi4py.MPI.Comm, optional
        Default ``MPI.COMM_WORLD``.
    bucket_cap_mb : float, default 25
        Size of a reduction bucket (MiB). Buckets are reduced with
        ``Iallreduce`` as soon as they are packed, overlapping packing and
        unpacking with communication.
    deterministic : bool, default False
        Sum in rank order, ``((g_0 + g_1) + g_2) + ...``, so results are
        bitwise reproducible and equal to a single process averaging the
        same gradients (MPI promises no order). Costs a scratch buffer the
        size of a bucket and gives up the overlap.

    Notes
    -----
    * Gradients are averaged in place: a :class:`nopt.ParameterBuffer`'s
      gradient buffer is reduced with no copy; other gradients are packed
      into one reusable buffer per dtype and copied back into ``p.grad``.
    * Every step starts with one small collective check: if any rank has a
      gradient of the wrong shape or dtype, or gradients for different
      parameters, *every* rank raises the same error and no rank steps.
    * Wrap-time check: every rank must wrap the same parameter groups,
      shapes and dtypes (one ``allgather``), else every rank raises.
    * ``step(closure)`` averages the closure's loss and gradient on every
      evaluation, so LBFGS and CG take the same line-search decisions on
      every rank.
    * To clip the averaged gradient: ``opt.synchronize()``, then
      ``nopt.utils.clip_grad_norm_(...)``, then ``opt.step()`` (which then
      does not reduce again).
    * Non-finite gradients: wrap the *inner* optimizer,
      ``DistributedOptimizer(nopt.ApplyIfFinite(opt))``. A NaN or inf on any
      rank makes the average non-finite on every rank, so every rank skips.
    * A rank that dies or hangs is MPI's to handle: the others block in the
      next collective until the MPI runtime aborts the job (``mpiexec``
      does when a rank exits with an error).

    Examples
    --------
    >>> from nopt.distributed import DistributedOptimizer, broadcast_parameters
    >>> params = model.parameters()
    >>> broadcast_parameters(params, root=0)
    >>> opt = DistributedOptimizer(nopt.Adam(params, lr=1e-3))
    >>> for X, y in my_shard_of_the_data:
    ...     model.loss_and_grad(X, y)
    ...     opt.step()
    """

    def __init__(self, optimizer, comm=None, *, bucket_cap_mb=25, deterministic=False):
        if isinstance(optimizer, DistributedOptimizer):
            raise TypeError("optimizer is already a DistributedOptimizer")
        if not hasattr(optimizer, "param_groups") or not hasattr(optimizer, "step"):
            raise TypeError(f"optimizer must be a nopt optimizer, got {type(optimizer).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be > 0, got {bucket_cap_mb}")
        _init_hooks(self)
        self.optimizer = optimizer
        self.comm = _default_comm(comm)
        self.deterministic = bool(deterministic)
        self._reducer = GradReducer(self.comm, int(bucket_cap_mb * (1 << 20)), self.deterministic)
        self._synchronized = False
        self.comm_seconds = 0.0
        check_same_layout(self.comm, self.param_groups, "DistributedOptimizer")

    # The wrapper owns nothing: groups, defaults and state are the inner optimizer's.
    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    @property
    def defaults(self):
        return getattr(self.optimizer, "defaults", {})

    def add_param_group(self, param_group):
        """Add a group to the inner optimizer (collective: every rank must add the same group)."""
        self.optimizer.add_param_group(param_group)
        check_same_layout(self.comm, self.param_groups, "DistributedOptimizer.add_param_group")

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict):
        self.optimizer.load_state_dict(state_dict)

    def _batches(self):
        raise TypeError(
            "a DistributedOptimizer's gradients are per rank until its step averages them; wrap "
            "the inner optimizer instead: DistributedOptimizer(nopt.ApplyIfFinite(opt))")

    # ------------------------------------------------------------------ step
    def synchronize(self):
        """Average the gradients now (collective); the next :meth:`step` will not reduce again.

        Use it to look at or clip the averaged gradient before stepping.
        """
        self._average()
        self._synchronized = True

    def _average(self):
        t0 = time.perf_counter()
        names, params = param_names(self.param_groups)
        check_step(self.comm, params, names)
        dense = [p.grad for p in params if isinstance(p.grad, np.ndarray)]
        sparse = [p for p in params if p.grad is not None and not isinstance(p.grad, np.ndarray)]
        self._reducer.average(dense)
        if sparse:
            average_sparse(self.comm, sparse)
        self.comm_seconds += time.perf_counter() - t0

    def _average_loss(self, loss):
        t0 = time.perf_counter()
        values = self.comm.allgather(None if loss is None else float(loss))
        self.comm_seconds += time.perf_counter() - t0
        if any(v is None for v in values):
            if all(v is None for v in values):
                return None
            raise ValueError("the closure returned None on some ranks only (no rank stepped)")
        total = values[0]
        for v in values[1:]:       # rank order
            total += v
        return total / len(values)

    def step(self, closure=None):
        """Average the gradients across ranks (unless :meth:`synchronize` did), then step.

        With a closure, every evaluation of it is followed by averaging its
        gradient and its loss across ranks; the closure is called the same
        number of times on every rank.
        """
        if closure is None:
            if not self._synchronized:
                self._average()
            self._synchronized = False
            return self.optimizer.step()
        self._synchronized = False

        def averaged_closure():
            loss = closure()
            self._average()
            return self._average_loss(loss)

        return self.optimizer.step(averaged_closure)

    def __repr__(self):
        return (f"DistributedOptimizer({self.optimizer!r}, ranks={self.comm.Get_size()}, "
                f"deterministic={self.deterministic})")
