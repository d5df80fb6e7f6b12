"""Settings for the whole test session.

pyproject.toml runs the suite on pytest-xdist workers (``-n auto``: one per
core). ``-n 0`` runs it in this process instead. Nothing below changes what a
test computes or asserts, only how threads that have nothing to do wait:

* Idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY``, read
  when nopt's or torch's OpenMP runtime loads, so it is set here, first). A
  spinning thread takes a core from the other worker or from another process
  on a busy machine: the 1-vs-2-vs-3-thread tests ran up to 30x slower.
* With several workers, each worker's BLAS gets its share of the cores
  (OpenBLAS's idle threads spin too). nopt's kernels keep their own thread
  count: the thread tests set theirs explicitly.
* Under an MPI launcher (tests/distributed, one pytest per rank) the suite
  runs in the rank's process: an xdist worker is not the process mpiexec
  started, so MPI could not initialise there.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# Set by MPICH's hydra (PMI_*), Open MPI (OMPI_*) and PMIx launchers (srun, prterun).
MPI_LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    if any(v in os.environ for v in MPI_LAUNCHER_VARIABLES) and config.getoption("numprocesses", None):
        config.option.numprocesses = 0


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per usable core (the affinity mask, which
    containers and CI runners narrow), at most 8: every worker imports the
    oracles (torch, jax) again, and the suite's longest tests bound the gain.
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still decides when set."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    return min(_usable_cpus(), 8)


def pytest_configure(config):
    workers = config.getoption("numprocesses", None) or 0
    if workers > 1 and not os.environ.get("PYTEST_XDIST_WORKER"):
        # Set before the workers start, so that they inherit it.
        share = str(max(1, _usable_cpus() // workers))
        for name in BLAS_THREAD_VARIABLES:
            os.environ.setdefault(name, share)
