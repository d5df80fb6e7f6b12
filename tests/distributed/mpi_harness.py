"""Shared by the tests that run under mpiexec: the communicator and reference gradients.

Importing this module in the plain suite skips the importing test module
(see conftest.py), so nothing here initialises MPI outside a launcher.
"""
import os

import numpy as np
import pytest

LAUNCHED = any(v in os.environ for v in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"))

pytest.importorskip("mpi4py")
if not LAUNCHED:
    pytest.skip("needs ranks: mpiexec -n 2 python -m pytest -p no:cacheprovider tests/distributed",
                allow_module_level=True)

from mpi4py import MPI  # noqa: E402

WORLD = MPI.COMM_WORLD
SIZE = WORLD.Get_size()
RANK = WORLD.Get_rank()


@pytest.fixture
def comm():
    """A private duplicate of COMM_WORLD per test: no test sees another's messages."""
    c = WORLD.Dup()
    yield c
    c.Free()


def rank_grad(seed, step, rank, shape, dtype):
    """Rank ``rank``'s (noise) gradient contribution at ``step``: known to every rank."""
    rng = np.random.default_rng([seed, step, rank])
    return rng.standard_normal(shape).astype(dtype)


def mean_in_rank_order(values):
    """((v_0 + v_1) + v_2) / N, the order ``deterministic=True`` promises."""
    total = np.array(values[0], copy=True)
    for v in values[1:]:
        total = total + v
    return total / len(values)
