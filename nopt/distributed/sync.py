"""Start ranks in sync and check that they stay so."""
import hashlib
from collections.abc import Mapping

import numpy as np
from mpi4py import MPI

from ._reduce import mpi_type

__all__ = ["broadcast_parameters", "broadcast_optimizer_state", "check_synced"]


def _named_arrays(params):
    """``[(name, array)]`` from an optimizer, a mapping of arrays, or a sequence of arrays."""
    if hasattr(params, "param_groups"):
        return [(f"param_groups[{gi}]['params'][{pi}]", p)
                for gi, g in enumerate(params.param_groups) for pi, p in enumerate(g["params"])]
    if isinstance(params, Mapping):
        return [(str(k), v) for k, v in params.items()]
    if isinstance(params, np.ndarray):
        return [("params[0]", params)]
    return [(f"params[{i}]", p) for i, p in enumerate(params)]


def _comm(comm):
    return MPI.COMM_WORLD if comm is None else comm


def broadcast_parameters(params, root=0, comm=None):
    """Copy rank ``root``'s parameter values to every rank, in place (collective).

    Parameters
    ----------
    params : sequence or mapping of float arrays, a ParameterBuffer, or an optimizer
        The same arrays (shapes, dtypes, order) on every rank.
    root : int, default 0
    comm : mpi4py.MPI.Comm, optional

    Notes
    -----
    A :class:`nopt.ParameterBuffer` is sent as one buffer per dtype.
    """
    comm = _comm(comm)
    buffers = getattr(params, "buffers", None)
    if buffers is not None and not callable(buffers):
        arrays = [data for data, _ in buffers.values()]
    else:
        arrays = [a for _, a in _named_arrays(params)]
    for a in arrays:
        if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64) or not a.flags.c_contiguous:
            raise TypeError("broadcast_parameters needs C-contiguous float32/float64 arrays")
    for a in arrays:
        if a.size:
            comm.Bcast([a.reshape(-1), mpi_type(a.dtype)], root=root)


def _skeleton(value, arrays):
    """``value`` with every ndarray replaced by a placeholder; the arrays appended to ``arrays``."""
    if isinstance(value, np.ndarray):
        arrays.append(value)
        return ("__ndarray__", value.shape, value.dtype.str)
    if isinstance(value, dict):
        return {k: _skeleton(v, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_skeleton(v, arrays) for v in value)
    return value


def _fill(value, arrays):
    if isinstance(value, tuple) and len(value) == 3 and value[0] == "__ndarray__":
        return arrays.pop(0)
    if isinstance(value, dict):
        return {k: _fill(v, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_fill(v, arrays) for v in value)
    return value


def broadcast_optimizer_state(optimizer, root=0, comm=None):
    """Give every rank rank ``root``'s optimizer state and hyperparameters (collective).

    The state dict's structure travels pickled (small); its arrays travel as
    raw buffers with ``Bcast``. Every other rank then loads it with
    ``optimizer.load_state_dict``, so it is checked as any checkpoint is.
    Use it after loading a checkpoint on one rank only, or before the first
    step of optimizers that create state eagerly (e.g. Adagrad).
    """
    comm = _comm(comm)
    inner = getattr(optimizer, "optimizer", optimizer)
    rank = comm.Get_rank()
    arrays = []
    skeleton = _skeleton(inner.state_dict(), arrays) if rank == root else None
    skeleton = comm.bcast(skeleton, root=root)
    if rank != root:
        shapes = []
        _skeleton_shapes(skeleton, shapes)
        arrays = [np.empty(shape, dtype=np.dtype(dt)) for shape, dt in shapes]
    for a in arrays:
        a = np.ascontiguousarray(a)
        if a.size:
            if a.dtype.kind == "f" and a.dtype.itemsize in (4, 8):
                comm.Bcast([a.reshape(-1), mpi_type(a.dtype)], root=root)
            else:
                comm.Bcast(a.reshape(-1).view(np.uint8), root=root)
    if rank != root:
        inner.load_state_dict(_fill(skeleton, list(arrays)))


def _skeleton_shapes(value, out):
    if isinstance(value, tuple) and len(value) == 3 and value[0] == "__ndarray__":
        out.append((value[1], value[2]))
    elif isinstance(value, dict):
        for v in value.values():
            _skeleton_shapes(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _skeleton_shapes(v, out)


def check_synced(params, comm=None, state=True):
    """Raise unless every rank holds bitwise the same parameters (collective).

    Parameters
    ----------
    params : optimizer, sequence or mapping of arrays
        An optimizer's parameters (and, with ``state=True``, its per-parameter
        state arrays, except for a ZeroRedundancyOptimizer, whose state is
        sharded by design).
    comm : mpi4py.MPI.Comm, optional
    state : bool, default True

    Returns
    -------
    True

    Raises
    ------
    RuntimeError
        On every rank, naming the first array that differs and the ranks
        whose copies differ from rank 0's.

    Notes
    -----
    Each rank hashes its arrays (BLAKE2b) and the digests are gathered: the
    check moves a few bytes per array, not the arrays.
    """
    comm = _comm(comm)
    named = _named_arrays(params)
    if state and hasattr(params, "param_groups") and not getattr(params, "_sharded_state", False):
        opt_state = params.state
        for name, p in list(named):
            for key, value in sorted(opt_state.get(p, {}).items()) if p in opt_state else ():
                if isinstance(value, np.ndarray):
                    named.append((f"state[{name}][{key!r}]", value))
    digests = []
    for _, a in named:
        a = np.ascontiguousarray(a)
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(a.reshape(-1).view(np.uint8).data)
        digests.append(h.digest())
    everyone = comm.allgather(digests)
    counts = {len(d) for d in everyone}
    if len(counts) != 1:
        raise RuntimeError(f"ranks hold different numbers of arrays: {[len(d) for d in everyone]}")
    for i, (name, _) in enumerate(named):
        differ = [r for r in range(1, len(everyone)) if everyone[r][i] != everyone[0][i]]
        if differ:
            raise RuntimeError(f"{name} differs between ranks: rank(s) {differ} hold other values "
                               "than rank 0")
    return True
