"""A bad gradient on one rank: every rank raises the same error or every rank skips; nothing moves.

A deadlock would trip the watchdog in conftest.py (the rank dumps its stack
and exits, and mpiexec ends the others), so these tests fail rather than hang.
A rank that *dies* is MPI's to handle (the launcher aborts the job): not
tested here, see the README.
"""
import numpy as np
import pytest

from mpi_harness import RANK, SIZE, comm  # noqa: F401

import nopt
from nopt.distributed import DistributedOptimizer, ZeroRedundancyOptimizer, check_synced

BAD = SIZE - 1   # the rank that misbehaves

pytestmark = pytest.mark.skipif(SIZE < 2, reason="needs 2 ranks")


def make(zero, comm, wrap=None):
    params = [nopt.Parameter(np.ones((3, 4))), nopt.Parameter(np.ones(5))]
    if zero:
        return params, ZeroRedundancyOptimizer(params, nopt.Adam, comm=comm, lr=0.1)
    inner = nopt.Adam(params, lr=0.1)
    return params, DistributedOptimizer(wrap(inner) if wrap else inner, comm)


def snapshot(params, opt):
    return [np.array(p) for p in params], {id(p): {k: np.array(v) for k, v in s.items()}
                                           for p, s in opt.state.items()}


def same(a, b):
    (pa, sa), (pb, sb) = a, b
    return all(x.tobytes() == y.tobytes() for x, y in zip(pa, pb)) and sa.keys() == sb.keys() and all(
        sa[k].keys() == sb[k].keys() and all(sa[k][j].tobytes() == sb[k][j].tobytes() for j in sa[k])
        for k in sa)


def one_good_step(params, opt):
    for p in params:
        p.grad = np.full(p.shape, 0.5)
    opt.step()


@pytest.mark.parametrize("zero", [False, True], ids=["DistributedOptimizer", "ZeRO"])
@pytest.mark.parametrize("bad", ["shape", "layout", "missing"])
def test_bad_gradient_on_one_rank_raises_on_every_rank(comm, zero, bad):
    params, opt = make(zero, comm)
    one_good_step(params, opt)
    before = snapshot(params, opt)
    for p in params:
        p.grad = np.full(p.shape, 1.0)
    if RANK == BAD:
        # Parameter.grad's setter already refuses another shape or dtype; what
        # gets through to a step is an array reshaped in place, or a layout.
        if bad == "shape":
            params[0].grad.shape = (4, 3)
        elif bad == "layout":
            params[0].grad = np.asfortranarray(params[0].grad)
        else:
            params[1].grad = None
    expected = {
        "shape": (ValueError, rf"rank {BAD}: param_groups\[0\]\['params'\]\[0\]\.grad has shape \(4, 3\); "
                              r"expected \(3, 4\) \(no rank stepped\)"),
        "layout": (ValueError, rf"rank {BAD}: param_groups\[0\]\['params'\]\[0\]\.grad must be C-contiguous"),
        "missing": (ValueError, r"param_groups\[0\]\['params'\]\[1\] has a gradient on rank\(s\) "
                                rf"\[{', '.join(str(r) for r in range(SIZE) if r != BAD)}\] but not on "
                                rf"rank\(s\) \[{BAD}\]"),
    }[bad]
    with pytest.raises(expected[0], match=expected[1]) as info:
        opt.step()
    # The same message everywhere, and nothing applied anywhere.
    assert comm.allgather(str(info.value)) == [str(info.value)] * SIZE
    assert same(snapshot(params, opt), before)
    # ... and the ranks are still in step: the next good step works.
    one_good_step(params, opt)
    check_synced(opt)


def test_nan_on_one_rank_under_apply_if_finite_skips_everywhere(comm):
    params, opt = make(False, comm, wrap=nopt.ApplyIfFinite)
    one_good_step(params, opt)
    before = snapshot(params, opt.optimizer.optimizer)
    for p in params:
        p.grad = np.full(p.shape, 1.0)
    if RANK == BAD:
        params[0].grad[1, 2] = np.nan
    opt.step()
    assert comm.allgather(opt.optimizer.last_step_applied) == [False] * SIZE
    assert comm.allgather(opt.optimizer.skipped_steps) == [1] * SIZE
    assert same(snapshot(params, opt.optimizer.optimizer), before)
    one_good_step(params, opt)
    assert opt.optimizer.last_step_applied
    check_synced(opt)


def test_inf_on_one_rank_under_apply_if_finite_skips_everywhere_with_a_closure(comm):
    params, opt = make(False, comm, wrap=nopt.ApplyIfFinite)
    before = snapshot(params, opt.optimizer.optimizer)

    def closure():
        for p in params:
            p.grad = np.full(p.shape, -np.inf if RANK == BAD else 1.0)
        return 1.0

    assert opt.step(closure) == 1.0
    assert comm.allgather(opt.optimizer.last_step_applied) == [False] * SIZE
    assert same(snapshot(params, opt.optimizer.optimizer), before)


def test_apply_if_finite_outside_is_refused_clearly(comm):
    params = [nopt.Parameter(np.ones(3))]
    opt = nopt.ApplyIfFinite(DistributedOptimizer(nopt.SGD(params, lr=0.1), comm))
    params[0].grad = np.ones(3)
    with pytest.raises(TypeError, match=r"DistributedOptimizer\(nopt.ApplyIfFinite\(opt\)\)"):
        opt.step()


@pytest.mark.parametrize("zero", [False, True], ids=["DistributedOptimizer", "ZeRO"])
def test_mismatched_shapes_are_detected_at_wrap_time(comm, zero):
    shape = (4, 3) if RANK == BAD else (3, 4)
    params = [nopt.Parameter(np.ones(2)), nopt.Parameter(np.ones(shape))]
    match = (rf"param_groups\[0\]\['params'\]\[1\] has shape \(4, 3\) and dtype float64 on rank {BAD} "
             r"but shape \(3, 4\) and dtype float64 on rank 0")
    with pytest.raises(ValueError, match=match):
        if zero:
            ZeroRedundancyOptimizer(params, nopt.SGD, comm=comm, lr=0.1)
        else:
            DistributedOptimizer(nopt.SGD(params, lr=0.1), comm)


def test_different_parameter_counts_are_detected_at_wrap_time(comm):
    params = [nopt.Parameter(np.ones(2)) for _ in range(3 if RANK == BAD else 2)]
    with pytest.raises(ValueError, match=rf"param_groups\[0\] has 3 parameters on rank {BAD} but 2 on rank 0"):
        DistributedOptimizer(nopt.SGD(params, lr=0.1), comm)


def test_closure_returning_none_on_one_rank_raises_everywhere(comm):
    x = nopt.Parameter(np.zeros(2))
    opt = DistributedOptimizer(nopt.SGD([x], lr=0.1), comm)

    def closure():
        x.grad = np.ones(2)
        return None if RANK == BAD else 1.0

    with pytest.raises(ValueError, match="closure returned None on some ranks only"):
        opt.step(closure)
    assert np.all(np.array(x) == 0)
