"""Thread control for the kernels.

nopt's kernels use OpenMP's thread count, so ``OMP_NUM_THREADS`` and
threadpoolctl's ``threadpool_limits(..., user_api="openmp")`` apply to them,
and ``set_num_threads`` is seen by other OpenMP code of the calling thread
too. Like OpenMP's own setting it is per calling thread: a step run from
another Python thread uses that thread's count (``OMP_NUM_THREADS`` or the
core count unless set there).

A step uses one thread, and opens no OpenMP team at all, when it has fewer
than ``SERIAL_BELOW`` (65536) elements, and when it is called from inside an
active OpenMP parallel region: kernels never nest teams. Otherwise it uses
at most one thread per 32768-element task. Results are bitwise identical
for every thread count (the updates are elementwise).
"""
import contextlib

from ._kernels import _plan

__all__ = ["get_num_threads", "set_num_threads", "num_threads"]


def get_num_threads():
    """Number of threads a large step uses (OpenMP's max threads; 1 without OpenMP)."""
    return int(_plan.get_max_threads())


def set_num_threads(n):
    """Set the number of threads the kernels use from the calling thread.

    Parameters
    ----------
    n : int
        At least 1. Without OpenMP the kernels stay serial whatever ``n`` is.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of threads must be a positive int, got {n!r}")
    _plan.set_max_threads(n)


@contextlib.contextmanager
def num_threads(n):
    """Context manager: use ``n`` threads inside the block, then restore.

    Examples
    --------
    >>> with nopt.num_threads(1):
    ...     optimizer.step()
    """
    previous = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        _plan.set_max_threads(previous)
