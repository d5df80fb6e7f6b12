"""ZeroRedundancyOptimizer: each rank keeps and updates the optimizer state of one shard."""
import time

import numpy as np
from mpi4py import MPI

from ..optimizer import Optimizer
from ._reduce import check_step, contiguous_run, mpi_type, ordered_reduce_scatter
from .optimizer import check_same_layout, param_names

__all__ = ["ZeroRedundancyOptimizer"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class _Plan:
    """One dtype's present parameters, laid out by owner rank: rank r's shard is one slice.

    When the parameters and their gradients already lie end to end in that
    order (a ParameterBuffer with ``partition="contiguous"``), the slices are
    views of the flat buffers themselves: nothing is packed or unpacked, and
    the shards (of unequal sizes) travel with ``Reduce_scatter`` and one
    ``Bcast`` per shard. Otherwise they are packed into one buffer per dtype in
    equal, zero-padded blocks (gradients out, then parameters back through
    it), which travel with ``Reduce_scatter_block`` and ``Allgather``: MPICH's
    ``Allgatherv`` was 3-10x slower than its ``Allgather`` here.
    """

    def __init__(self, params, owners, size, rank):
        by_rank = [[p for p, o in zip(params, owners) if o == r] for r in range(size)]
        self.params = [p for ps in by_rank for p in ps]
        self.grad_objects = [p.grad for p in self.params]
        dtype = params[0].dtype
        counts = [int(sum(p.size for p in ps)) for ps in by_rank]
        grads = contiguous_run(self.grad_objects)
        values = contiguous_run(self.params)
        self.in_place = grads is not None and values is not None
        if self.in_place:
            self.counts = counts
            self.displs = [int(x) for x in np.cumsum([0] + counts[:-1])]
            self.grads, self.values = grads, values
        else:
            block = max(counts)
            self.counts = [block] * size
            self.displs = [block * r for r in range(size)]
            self.grads = self.values = np.zeros(block * size, dtype=dtype)
        # (param, start, stop, owned by this rank) in the buffer's layout.
        self.ranges = []
        for r, ps in enumerate(by_rank):
            at = self.displs[r]
            for p in ps:
                self.ranges.append((p, at, at + p.size, r == rank))
                at += p.size
        self.scratch = None

    def current(self):
        """False when a gradient object was replaced since the plan was made."""
        return all(p.grad is g for p, g in zip(self.params, self.grad_objects))


class ZeroRedundancyOptimizer(Optimizer):
    r"""Shard the optimizer state across ranks (ZeRO stage 1), with torch's API.

    ``torch.distributed.optim.ZeroRedundancyOptimizer`` over MPI. The
    parameters are partitioned across the :math:`N` ranks with torch's
    sorted-greedy rule (within each group, largest first, each to the rank
    with the fewest elements so far). Each step:

    1. the gradients are averaged across ranks with a reduce-scatter, so each
       rank receives the average only for the parameters it owns;
    2. each rank steps its own shard with a local ``optimizer_class``, which
       holds the state of that shard only (about 1/N of the whole);
    3. the updated parameters are gathered to every rank (an allgather).

    Every rank ends the step with the same parameters as a
    :class:`DistributedOptimizer` around the unsharded optimizer (bitwise,
    with ``deterministic=True`` on both).

    Parameters
    ----------
    params : iterable
        Parameters or param-group dicts, the same on every rank.
    optimizer_class : type
        An elementwise nopt optimizer class (``nopt.Adam``, ``nopt.SGD``...).
        LBFGS and CG keep state over all parameters together and cannot be
        sharded: use :class:`DistributedOptimizer` for them.
    comm : mpi4py.MPI.Comm, optional
        Default ``MPI.COMM_WORLD`` (torch's ``process_group``).
    parameters_as_bucket_view : bool, default False
        Accepted for torch compatibility, and ignored: shards always travel
        as one contiguous buffer per dtype (see ``partition``).
    overlap_with_ddp : bool, default False
        Not supported (there is no DDP here); must be False.
    deterministic : bool, default False
        Sum gradients in rank order (as :class:`DistributedOptimizer`).
    partition : {"greedy", "contiguous"}, default "greedy"
        ``"greedy"``: torch's sorted-greedy partition of whole parameters.
        ``"contiguous"``: rank r owns the r-th of N nearly equal contiguous
        runs of whole parameters, in order (across groups). For a model in
        one :class:`nopt.ParameterBuffer`, each shard is then a slice of the
        flat buffers: gradients are reduce-scattered and parameters gathered
        in place, with no packing copy and no communication buffer.
    **defaults
        Hyperparameters for ``optimizer_class``.

    Attributes
    ----------
    optim : Optimizer
        This rank's local optimizer over its shard.
    param_groups : list of dict
        The global groups (all parameters); hyperparameters set here (e.g. by
        a scheduler) are copied to the local optimizer before each step.

    Notes
    -----
    After a step, ``p.grad`` holds the averaged gradient on the rank that
    owns ``p`` and this rank's own gradient elsewhere. The collective checks
    of :class:`DistributedOptimizer` apply: a bad gradient on one rank makes
    every rank raise, before anything moves.
    """

    _sharded_state = True

    def __init__(self, params, optimizer_class, comm=None, parameters_as_bucket_view=False,
                 overlap_with_ddp=False, *, deterministic=False, partition="greedy", **defaults):
        from .._closure_optimizer import ClosureOptimizer

        if overlap_with_ddp:
            raise NotImplementedError("overlap_with_ddp is torch-DDP specific; nopt has no DDP hook")
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
            raise TypeError(f"optimizer_class must be a nopt Optimizer class, got {optimizer_class!r}")
        if issubclass(optimizer_class, ClosureOptimizer):
            raise TypeError(f"{optimizer_class.__name__} keeps its state over all parameters together and "
                            "cannot be sharded; use DistributedOptimizer")
        from ..sparse_adam import SparseAdam

        if issubclass(optimizer_class, SparseAdam):
            raise TypeError("SparseAdam's sparse gradients cannot be reduce-scattered; use DistributedOptimizer")
        if partition not in ("greedy", "contiguous"):
            raise ValueError(f"partition must be 'greedy' or 'contiguous', got {partition!r}")
        self.partition = partition
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.world_size = self.comm.Get_size()
        self.rank = self.comm.Get_rank()
        self.optimizer_class = optimizer_class
        self.parameters_as_bucket_view = parameters_as_bucket_view
        self.deterministic = bool(deterministic)
        self._initializing = True
        super().__init__(params, defaults)
        check_same_layout(self.comm, self.param_groups, "ZeroRedundancyOptimizer")
        self._partition()
        self.optim = optimizer_class(self._local_groups(), **defaults)
        # The local optimizer filled in every default: the global groups (which
        # schedulers see) and defaults get them too, as torch's ZeRO does.
        self.defaults = dict(self.optim.defaults)
        self._sync_groups(self.optim.param_groups, self.param_groups)
        self.state = self.optim.state
        self._initializing = False
        self._consolidated = None
        self._plans = {}
        self.comm_seconds = 0.0

    # ------------------------------------------------------------ partition
    def _partition(self):
        """``self._owner[id(p)]`` and per-rank groups (``self._per_rank[group][rank]``)."""
        if self.partition == "contiguous":
            return self._partition_contiguous()
        # torch's sorted-greedy rule: within each group, largest first, each to
        # the rank with the fewest elements so far (counted across groups).
        sizes = [0] * self.world_size
        self._per_rank = []
        self._owner = {}
        for group in self.param_groups:
            ranks = [[] for _ in range(self.world_size)]
            for p in sorted(group["params"], key=lambda q: q.size, reverse=True):
                rank = sizes.index(min(sizes))
                ranks[rank].append(p)
                sizes[rank] += p.size
                self._owner[id(p)] = rank
            self._per_rank.append(ranks)

    def _partition_contiguous(self):
        params = [p for g in self.param_groups for p in g["params"]]
        total = sum(p.size for p in params) or 1
        self._owner, done = {}, 0
        for p in params:   # the rank whose equal share holds the parameter's midpoint
            self._owner[id(p)] = min(self.world_size - 1, int((done + p.size / 2) * self.world_size / total))
            done += p.size
        self._per_rank = [[[p for p in g["params"] if self._owner[id(p)] == r] for r in range(self.world_size)]
                          for g in self.param_groups]

    def _local_groups(self, start=0):
        groups = []
        for group, ranks in zip(self.param_groups[start:], self._per_rank[start:]):
            local = {k: v for k, v in group.items() if k != "params"}
            local["params"] = ranks[self.rank]
            groups.append(local)
        return groups

    def add_param_group(self, param_group):
        """Add a group (collective: every rank must add the same group)."""
        super().add_param_group(param_group)
        if self._initializing:
            return
        check_same_layout(self.comm, self.param_groups, "ZeroRedundancyOptimizer.add_param_group")
        # Greedy: earlier groups keep their owners (greedy by group, in order).
        # Contiguous: the split moves, so only a group added before any state exists.
        if self.partition == "contiguous" and len(self.optim.state):
            raise ValueError("partition='contiguous' cannot add a param group after the first step")
        self._partition()
        if self.partition == "contiguous":
            self.optim = self.optimizer_class(self._local_groups(), **self.defaults)
            self.state = self.optim.state
            self._plans = {}
            return
        self.optim.add_param_group(self._local_groups(len(self.param_groups) - 1)[0])
        self._sync_groups(self.optim.param_groups[-1:], self.param_groups[-1:])
        self._plans = {}

    def _sync_groups(self, source, target):
        for src, dst in zip(source, target):
            for key, value in src.items():
                if key != "params":
                    dst[key] = value

    # ------------------------------------------------------------------ step
    def step(self, closure=None):
        """Average the gradients (reduce-scatter), step the local shard, gather the parameters."""
        loss = closure() if closure is not None else None
        t0 = time.perf_counter()
        names, params = param_names(self.param_groups)
        check_step(self.comm, params, names)
        present = [p for p in params if p.grad is not None and p.size]
        plans = []
        for dtype in _FLOAT_DTYPES:
            of_dtype = [p for p in present if p.dtype == dtype]
            if of_dtype:
                key = (dtype, tuple(id(p) for p in of_dtype))
                plan = self._plans.get(key)
                if plan is None or (plan.in_place and not plan.current()):
                    plan = self._plans[key] = _Plan(of_dtype, [self._owner[id(p)] for p in of_dtype],
                                                    self.world_size, self.rank)
                plans.append(plan)
        for plan in plans:
            self._reduce_scatter(plan)
        self.comm_seconds += time.perf_counter() - t0

        self._sync_groups(self.param_groups, self.optim.param_groups)
        self.optim.step()
        self._sync_groups(self.optim.param_groups, self.param_groups)

        t0 = time.perf_counter()
        for plan in plans:
            self._gather(plan)
        self.comm_seconds += time.perf_counter() - t0
        return loss

    def _reduce_scatter(self, plan):
        rank, size = self.rank, self.world_size
        if size == 1:   # this rank owns everything: the gradients are already the average
            return
        if not plan.in_place:
            for p, lo, hi, _ in plan.ranges:
                np.copyto(plan.grads[lo:hi], p.grad.reshape(-1))
        n, start = plan.counts[rank], plan.displs[rank]
        mine = plan.grads[start:start + n]
        t = mpi_type(plan.grads.dtype)
        if self.deterministic:
            if plan.scratch is None:
                plan.scratch = np.empty(size * n, dtype=plan.grads.dtype)
            ordered_reduce_scatter(self.comm, plan.grads, plan.counts, plan.displs, mine, plan.scratch)
        else:
            if plan.scratch is None:
                plan.scratch = np.empty(n, dtype=plan.grads.dtype)
            out = plan.scratch[:n]
            if plan.in_place:
                self.comm.Reduce_scatter([plan.grads, t], [out, t], recvcounts=plan.counts, op=MPI.SUM)
            else:
                self.comm.Reduce_scatter_block([plan.grads, t], [out, t], op=MPI.SUM)
            np.divide(out, size, out=mine)
        if not plan.in_place:
            for p, lo, hi, owned in plan.ranges:
                if owned:
                    np.copyto(p.grad.reshape(-1), plan.grads[lo:hi])

    def _gather(self, plan):
        if self.world_size == 1:
            return
        t = mpi_type(plan.values.dtype)
        if plan.in_place:
            # Shards of unequal sizes: one in-place Bcast per shard moved the same
            # bytes 4-5x faster than MPICH's Allgatherv here (its latency, N
            # broadcasts of log N steps, matters only for small models).
            for r, (n, start) in enumerate(zip(plan.counts, plan.displs)):
                if n:
                    self.comm.Bcast([plan.values[start:start + n], t], root=r)
            return
        for p, lo, hi, owned in plan.ranges:
            if owned:
                np.copyto(plan.values[lo:hi], p.reshape(-1))
        self.comm.Allgather(MPI.IN_PLACE, [plan.values, t])
        for p, lo, hi, owned in plan.ranges:
            if not owned:
                np.copyto(p.reshape(-1), plan.values[lo:hi])

    # ------------------------------------------------------------ state dicts
    def _global_ids(self):
        """Local optimizer's state-dict ids -> the unsharded optimizer's ids."""
        index = {}
        for group in self.param_groups:
            for p in group["params"]:
                index[id(p)] = len(index)
        return [index[id(p)] for g in self.optim.param_groups for p in g["params"]], index

    def consolidate_state_dict(self, to=0):
        """Gather the whole state on rank ``to`` (collective: call it on every rank).

        Afterwards :meth:`state_dict` on rank ``to`` returns a state dict that
        the plain, unsharded ``optimizer_class`` loads.
        """
        local_ids, index = self._global_ids()
        local = self.optim.state_dict()
        mine = {local_ids[i]: s for i, s in local["state"].items()}
        parts = self.comm.gather(mine, root=to)
        if self.rank != to:
            self._consolidated = None
            return
        state = {}
        for part in parts:
            state.update(part)
        groups = []
        for group in self.param_groups:
            g = {k: v for k, v in group.items() if k != "params"}
            g["params"] = [index[id(p)] for p in group["params"]]
            groups.append(g)
        self._consolidated = {"state": dict(sorted(state.items())), "param_groups": groups}

    def state_dict(self):
        """The consolidated, unsharded state dict (rank ``to`` after :meth:`consolidate_state_dict`)."""
        if self._consolidated is None:
            raise RuntimeError(
                "Optimizer state has not been consolidated on this rank. Please call "
                "`consolidate_state_dict(to=...)` on all ranks beforehand, and call "
                "`state_dict()` on the rank given as `to`")
        return self._consolidated

    def load_state_dict(self, state_dict):
        """Load an unsharded state dict (the same on every rank) and keep this rank's shard."""
        groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        if not isinstance(groups, list) or "state" not in state_dict:
            raise ValueError("expected a state dict with 'state' and 'param_groups'")
        if len(groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        _, index = self._global_ids()
        local_groups, local_state, next_id = [], {}, 0
        for group, saved in zip(self.optim.param_groups, groups):
            ids = []
            for p in group["params"]:
                gid = index[id(p)]
                if gid in state_dict["state"]:
                    local_state[next_id] = state_dict["state"][gid]
                ids.append(next_id)
                next_id += 1
            local = {k: v for k, v in saved.items() if k != "params"}
            local["params"] = ids
            local_groups.append(local)
        for group, saved in zip(self.param_groups, groups):
            if len(group["params"]) != len(saved["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match "
                                 "the size of optimizer's group")
        self.optim.load_state_dict({"state": local_state, "param_groups": local_groups})
        self._sync_groups(self.optim.param_groups, self.param_groups)
        self._consolidated = None

    def __repr__(self):
        return (f"ZeroRedundancyOptimizer({self.optimizer_class.__name__}, rank {self.rank} of "
                f"{self.world_size}, {sum(len(g['params']) for g in self.optim.param_groups)} local "
                "parameters)")
