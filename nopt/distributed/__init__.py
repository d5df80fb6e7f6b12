"""Data-parallel training and sharded optimizer state over MPI (mpi4py).

Every rank runs the same script on its own shard of the data (``mpiexec -n 4
python train.py``, or ``srun``/``mpirun`` on a cluster) and keeps a full copy
of the model:

- :class:`DistributedOptimizer` wraps any nopt optimizer: before each step the
  gradients of all ranks are averaged (one allreduce per bucket of one
  contiguous buffer per dtype), so every rank takes the same step.
- :class:`ZeroRedundancyOptimizer` (torch's API) also splits the optimizer
  state: each rank keeps and updates the state of a 1/N shard of the
  parameters, and the updated parameters are gathered to every rank.
- :func:`broadcast_parameters`, :func:`broadcast_optimizer_state` and
  :func:`check_synced` start ranks in sync and verify that they stay so.

Install with ``pip install "nopt[mpi]"`` (mpi4py and the MPICH wheel), or
install mpi4py against the MPI library of your cluster.
"""
try:
    from mpi4py import MPI  # noqa: F401  (initialises MPI on first import)
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "nopt.distributed needs mpi4py and an MPI library: "
        "pip install 'nopt[mpi]'  (that is: pip install mpi4py mpich), "
        "or install mpi4py against your cluster's MPI"
    ) from exc

from .optimizer import DistributedOptimizer
from .sync import broadcast_optimizer_state, broadcast_parameters, check_synced
from .zero import ZeroRedundancyOptimizer

__all__ = [
    "DistributedOptimizer", "ZeroRedundancyOptimizer",
    "broadcast_parameters", "broadcast_optimizer_state", "check_synced",
]
