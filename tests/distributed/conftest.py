"""How tests/distributed is collected.

* ``test_dist_launch.py`` runs in the plain suite (no MPI in the pytest
  process): ``import nopt`` without mpi4py, the ImportError of
  ``nopt.distributed``, and a short ``mpiexec -n 2`` run of the example.
* Every other module here needs ranks: run them with
  ``mpiexec -n 2 python -m pytest -p no:cacheprovider tests/distributed``
  (and ``-n 3``). In the plain suite they are skipped, never failed: when
  mpi4py is absent, and when pytest was not started by an MPI launcher
  (importing mpi4py would then initialise MPI inside the plain test process).
* Each test runs under a watchdog: a rank stuck in a collective dumps its
  stack and exits, and the launcher then ends the other ranks, so a
  deadlock fails the run instead of hanging CI.
"""
import faulthandler
import os
import sys

import pytest

# Set by MPICH's hydra (PMI_*), Open MPI (OMPI_*) and PMIx launchers (srun, prterun).
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")
LAUNCHED = any(v in os.environ for v in LAUNCHER_VARIABLES)
TEST_TIMEOUT = float(os.environ.get("NOPT_MPI_TEST_TIMEOUT", "60"))


@pytest.fixture(autouse=True)
def _watchdog():
    if LAUNCHED:
        faulthandler.dump_traceback_later(TEST_TIMEOUT, exit=True, file=sys.stderr)
        yield
        faulthandler.cancel_dump_traceback_later()
    else:
        yield
