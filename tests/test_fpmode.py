"""Kernels flush subnormals to zero inside their work, and leave the caller's FP mode as it was."""
import numpy as np
import pytest

import nopt
from nopt._kernels import _plan

needs_ftz = pytest.mark.skipif(not _plan.HAVE_FTZ, reason="no flush-to-zero control on this CPU")
# x86 MXCSR: FTZ (bit 15) and DAZ (bit 6).
FTZ_DAZ = 0x8040
TINY32 = np.float32(1e-38)  # normal; times 0.01 it is subnormal


def _is_x86():
    import platform

    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def control():
    """The calling thread's FP control bits (MXCSR less its sticky status flags, bits 0-5,
    which NumPy's own ufuncs clear and set; on arm64 FPCR has no status flags)."""
    mode = _plan.fp_mode()
    return mode & ~0x3F if _is_x86() else mode


def _step(n, momentum=0.9):
    rng = np.random.default_rng(0)
    p = nopt.Parameter(rng.standard_normal(n).astype(np.float32))
    p.grad = rng.standard_normal(n).astype(np.float32)
    opt = nopt.SGD([p], lr=0.01, momentum=momentum)
    opt.step()
    opt.step()


def _numpy_makes_subnormals():
    return TINY32 * np.float32(0.01) != 0


@pytest.mark.parametrize("n", [100, 4 * _plan.SERIAL_BELOW], ids=["serial", "parallel"])
def test_caller_fp_mode_unchanged(n):
    before = control()
    assert _numpy_makes_subnormals()
    with nopt.num_threads(2):
        _step(n)
    assert control() == before
    assert _numpy_makes_subnormals()


@needs_ftz
@pytest.mark.parametrize("n", [100, 4 * _plan.SERIAL_BELOW], ids=["serial", "parallel"])
def test_caller_flush_mode_is_restored_not_cleared(n):
    """A caller that runs with FTZ/DAZ on keeps it on (restore, not reset)."""
    before = _plan.fp_mode()
    if not _is_x86():
        pytest.skip("checks the x86 MXCSR bits")
    try:
        _plan.set_fp_mode(before | FTZ_DAZ)
        assert not _numpy_makes_subnormals()
        with nopt.num_threads(2):
            _step(n)
        assert control() == (before | FTZ_DAZ) & ~0x3F
    finally:
        _plan.set_fp_mode(before)
    assert control() == before & ~0x3F


@pytest.mark.skipif(not _plan.HAVE_OPENMP, reason="built without OpenMP")
def test_worker_threads_fp_mode_restored():
    """The team's other threads also get their own mode back after a parallel step."""
    with nopt.num_threads(2):
        before = _plan.call_in_parallel(control, 2)
        _step(4 * _plan.SERIAL_BELOW)
        after = _plan.call_in_parallel(control, 2)
    assert before == after


@needs_ftz
@pytest.mark.parametrize("n", [100, 4 * _plan.SERIAL_BELOW], ids=["serial", "parallel"])
def test_subnormal_state_is_flushed_in_the_kernel(n):
    """Momentum decaying below the normal range becomes 0 instead of a slow subnormal."""
    p = nopt.Parameter(np.ones(n, np.float32))
    opt = nopt.SGD([p], lr=0.01, momentum=0.5)
    p.grad = np.full(n, TINY32, np.float32)
    opt.step()  # buffer = 1e-38 (normal)
    p.grad = np.zeros(n, np.float32)
    with nopt.num_threads(2):
        opt.step()  # buffer = 0.5e-38: subnormal, so flushed
    buf = opt.state[p]["momentum_buffer"]
    assert np.all(buf == 0)
    assert _numpy_makes_subnormals()
