"""DistributedOptimizer composes with every optimizer, schedulers, clipping, ApplyIfFinite; ZeRO's API."""
import numpy as np
import pytest
import scipy.sparse as sp

from mpi_harness import RANK, SIZE, comm, mean_in_rank_order, rank_grad  # noqa: F401

import nopt
from nopt.distributed import (DistributedOptimizer, ZeroRedundancyOptimizer, broadcast_optimizer_state,
                              broadcast_parameters, check_synced)
from nopt.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

EVERY = {
    "SGD": (nopt.SGD, dict(lr=0.01, momentum=0.9)), "Adam": (nopt.Adam, dict(amsgrad=True)),
    "AdamW": (nopt.AdamW, {}), "Adamax": (nopt.Adamax, {}), "NAdam": (nopt.NAdam, {}),
    "RAdam": (nopt.RAdam, {}), "Adagrad": (nopt.Adagrad, {}), "Adadelta": (nopt.Adadelta, {}),
    "RMSprop": (nopt.RMSprop, {}), "Rprop": (nopt.Rprop, {}), "ASGD": (nopt.ASGD, {}),
}
SHAPES = [(5, 4), (6,)]


def params_and_reference():
    rng = np.random.default_rng(5)
    init = [rng.standard_normal(s) for s in SHAPES]
    return [nopt.Parameter(v.copy()) for v in init], [nopt.Parameter(v.copy()) for v in init]


def grads_at(step, rank):
    return [rank_grad(i, step, rank, s, np.float64) for i, s in enumerate(SHAPES)]


def mean_grads(step):
    return [mean_in_rank_order([grads_at(step, r)[i] for r in range(SIZE)]) for i in range(len(SHAPES))]


@pytest.mark.parametrize("name", list(EVERY))
@pytest.mark.parametrize("zero", [False, True], ids=["DistributedOptimizer", "ZeRO"])
def test_every_elementwise_optimizer(comm, name, zero):
    cls, kw = EVERY[name]
    params, ref = params_and_reference()
    if zero:
        opt = ZeroRedundancyOptimizer(params, cls, comm=comm, deterministic=True, **kw)
    else:
        opt = DistributedOptimizer(cls(params, **kw), comm, deterministic=True)
    ref_opt = cls(ref, **kw)
    for step in range(20):
        for p, g in zip(params, grads_at(step, RANK)):
            p.grad = g
        for q, g in zip(ref, mean_grads(step)):
            q.grad = g
        opt.step()
        ref_opt.step()
    for p, q in zip(params, ref):
        assert np.array(p).tobytes() == np.array(q).tobytes(), name
    check_synced(opt)


def test_sparse_adam(comm):
    p = nopt.Parameter(np.ones((8, 3)))
    q = nopt.Parameter(np.ones((8, 3)))
    opt = DistributedOptimizer(nopt.SparseAdam([p], lr=0.1), comm)
    ref = nopt.SparseAdam([q], lr=0.1)

    def rank_sparse(step, rank):
        rows = np.array([rank % 8, (rank + step) % 8, 5])
        return sp.coo_matrix((np.full(3, rank + 1.0), (rows, np.array([0, 1, 2]))), shape=(8, 3))

    for step in range(5):
        p.grad = rank_sparse(step, RANK).tocsr()
        q.grad = sum(rank_sparse(step, r).toarray() for r in range(SIZE)) / SIZE
        q.grad = sp.coo_matrix(q.grad)
        opt.step()
        ref.step()
    np.testing.assert_allclose(np.array(p), np.array(q), rtol=1e-12)
    check_synced(opt)


@pytest.mark.parametrize("zero", [False, True], ids=["DistributedOptimizer", "ZeRO"])
def test_schedulers_drive_the_wrapped_optimizer(comm, zero):
    params, ref = params_and_reference()
    if zero:
        opt = ZeroRedundancyOptimizer(params, nopt.SGD, comm=comm, deterministic=True, lr=0.1, momentum=0.9)
    else:
        opt = DistributedOptimizer(nopt.SGD(params, lr=0.1, momentum=0.9), comm, deterministic=True)
    ref_opt = nopt.SGD(ref, lr=0.1, momentum=0.9)

    def schedule(o):
        return SequentialLR(o, [LinearLR(o, start_factor=0.1, total_iters=3), CosineAnnealingLR(o, T_max=10)],
                            milestones=[3])

    sched, ref_sched = schedule(opt), schedule(ref_opt)
    for step in range(12):
        for p, g in zip(params, grads_at(step, RANK)):
            p.grad = g
        for q, g in zip(ref, mean_grads(step)):
            q.grad = g
        opt.step()
        ref_opt.step()
        sched.step()
        ref_sched.step()
        assert opt.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"]
    for p, q in zip(params, ref):
        assert np.array(p).tobytes() == np.array(q).tobytes()


def test_clip_grad_norm_sees_the_averaged_gradient(comm):
    params, ref = params_and_reference()
    opt = DistributedOptimizer(nopt.SGD(params, lr=0.1), comm, deterministic=True)
    ref_opt = nopt.SGD(ref, lr=0.1)
    for step in range(5):
        for p, g in zip(params, grads_at(step, RANK)):
            p.grad = g * 10
        for i, q in enumerate(ref):
            q.grad = mean_in_rank_order([grads_at(step, r)[i] * 10 for r in range(SIZE)])
        opt.synchronize()
        norm = nopt.utils.clip_grad_norm_(params, 1.0)
        ref_norm = nopt.utils.clip_grad_norm_(ref, 1.0)
        assert norm == ref_norm and comm.allgather(norm) == [norm] * SIZE
        opt.step()   # does not reduce again
        ref_opt.step()
    for p, q in zip(params, ref):
        assert np.array(p).tobytes() == np.array(q).tobytes()


def test_zero_state_memory_is_about_one_nth(comm):
    params = [nopt.Parameter(np.zeros(1000)) for _ in range(6 * SIZE)]
    zero = ZeroRedundancyOptimizer(params, nopt.Adam, comm=comm, lr=1e-3)
    plain = nopt.Adam([nopt.Parameter(np.zeros(1000)) for _ in params], lr=1e-3)
    for p, q in zip(params, plain.param_groups[0]["params"]):
        p.grad = np.ones(1000)
        q.grad = np.ones(1000)
    zero.step()
    plain.step()

    def state_bytes(state):
        return sum(v.nbytes for s in state.values() for v in s.values() if isinstance(v, np.ndarray))

    mine, full = state_bytes(zero.optim.state), state_bytes(plain.state)
    assert full == 2 * 6 * SIZE * 8000                       # exp_avg and exp_avg_sq
    assert mine == full // SIZE                              # equal sizes: exactly 1/N
    assert sum(comm.allgather(mine)) == full                 # nothing kept twice


def test_zero_contiguous_partition_on_a_parameter_buffer_needs_no_buffer(comm):
    sizes = [5, 30, 7, 12, 30, 1, 9]
    buf = nopt.ParameterBuffer(sizes, dtype=np.float32, init=1.0)
    zero = ZeroRedundancyOptimizer(buf, nopt.Adam, comm=comm, partition="contiguous", lr=0.1)
    owners = [zero._owner[id(p)] for p in buf]
    assert owners == sorted(owners) and set(owners) == set(range(min(SIZE, len(sizes))))
    buf.grad[...] = RANK + 1.0
    zero.step()
    check_synced(buf, comm)
    (plan,) = zero._plans.values()
    assert plan.in_place and np.shares_memory(plan.grads, buf.grad) and np.shares_memory(plan.values, buf.data)
    np.testing.assert_allclose(buf.data, 1 - 0.1, rtol=1e-6)   # Adam's first step: lr * sign


def test_zero_partition_is_torchs_sorted_greedy(comm):
    sizes = [5, 30, 7, 12, 30, 1, 9]
    params = [nopt.Parameter(np.zeros(n)) for n in sizes]
    zero = ZeroRedundancyOptimizer(params, nopt.SGD, comm=comm, lr=0.1)
    loads, owner = [0] * SIZE, {}
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        r = loads.index(min(loads))
        owner[i] = r
        loads[r] += sizes[i]
    assert [i for i in range(len(sizes)) if owner[i] == RANK] == \
        sorted(i for i, p in enumerate(params) if any(p is q for q in zero.optim.param_groups[0]["params"]))


def test_zero_consolidated_state_dict_loads_into_the_plain_optimizer(comm, tmp_path):
    params, ref = params_and_reference()
    zero = ZeroRedundancyOptimizer([{"params": params[:1]}, {"params": params[1:], "lr": 0.01}],
                                   nopt.Adam, comm=comm, deterministic=True, lr=0.1)
    for step in range(5):
        for p, g in zip(params, grads_at(step, RANK)):
            p.grad = g
        zero.step()
    with pytest.raises(RuntimeError, match="consolidate_state_dict"):
        zero.state_dict()
    zero.consolidate_state_dict(to=0)
    full = None
    if RANK == 0:
        full = zero.state_dict()
        # A plain, unsharded Adam loads it (through a pickle-free checkpoint too) ...
        nopt.save(full, tmp_path / "zero.nopt")
        plain_params = [nopt.Parameter(np.array(p)) for p in params]
        plain = nopt.Adam([{"params": plain_params[:1]}, {"params": plain_params[1:], "lr": 0.01}], lr=0.1)
        plain.load_state_dict(nopt.load(tmp_path / "zero.nopt"))
        assert plain.state[plain_params[0]]["step"] == 5
        assert sorted(full["state"]) == [0, 1]
    else:
        with pytest.raises(RuntimeError):
            zero.state_dict()
    full = comm.bcast(full, root=0)

    # ... and a ZeRO optimizer of another run re-shards it: continuing is bitwise the same.
    other_params = [nopt.Parameter(np.array(p)) for p in params]
    other = ZeroRedundancyOptimizer([{"params": other_params[:1]}, {"params": other_params[1:], "lr": 0.01}],
                                    nopt.Adam, comm=comm, deterministic=True, lr=0.1)
    other.load_state_dict(full)
    for step in range(5, 8):
        for p, q, g in zip(params, other_params, grads_at(step, RANK)):
            p.grad = g
            q.grad = g.copy()
        zero.step()
        other.step()
    for p, q in zip(params, other_params):
        assert np.array(p).tobytes() == np.array(q).tobytes()


def test_broadcast_parameters_and_optimizer_state(comm):
    rng = np.random.default_rng(RANK)           # every rank starts elsewhere
    params = [nopt.Parameter(rng.standard_normal(s)) for s in SHAPES]
    buf = nopt.ParameterBuffer(SHAPES, init=[rng.standard_normal(s) for s in SHAPES])
    if SIZE > 1:
        with pytest.raises(RuntimeError, match=r"params\[0\] differs between ranks"):
            check_synced(params, comm)
    broadcast_parameters(params, root=0, comm=comm)
    broadcast_parameters(buf, root=0, comm=comm)
    assert check_synced(params, comm) and check_synced(buf, comm)

    opt = nopt.Adam(params, lr=0.1)
    if RANK == 0:  # only rank 0 has state (e.g. it alone loaded a checkpoint)
        for p in params:
            p.grad = np.ones(p.shape)
        opt.step()
    broadcast_optimizer_state(opt, root=0, comm=comm)
    broadcast_parameters(params, root=0, comm=comm)
    assert check_synced(opt, comm)
    assert all(opt.state[p]["step"] == 1 for p in params)


def test_check_synced_names_the_optimizer_state_that_differs(comm):
    if SIZE == 1:
        pytest.skip("needs 2 ranks")
    params, _ = params_and_reference()
    opt = nopt.Adam(params)
    for p in params:
        p.grad = np.ones(p.shape)
    opt.step()
    if RANK == SIZE - 1:
        opt.state[params[1]]["exp_avg"][0] += 1e-3
    with pytest.raises(RuntimeError, match=rf"state\[param_groups\[0\]\['params'\]\[1\]\]\['exp_avg'\] differs "
                                           rf"between ranks: rank\(s\) \[{SIZE - 1}\]"):
        check_synced(opt, comm)


@pytest.mark.parametrize("zero", [False, True], ids=["DistributedOptimizer", "ZeRO"])
def test_add_param_group_is_collective_and_steps_the_new_group(comm, zero):
    params, ref = params_and_reference()
    if zero:
        opt = ZeroRedundancyOptimizer(params[:1], nopt.Adam, comm=comm, deterministic=True, lr=0.1)
    else:
        opt = DistributedOptimizer(nopt.Adam(params[:1], lr=0.1), comm, deterministic=True)
    ref_opt = nopt.Adam(ref[:1], lr=0.1)
    opt.add_param_group({"params": params[1:], "lr": 0.01})
    ref_opt.add_param_group({"params": ref[1:], "lr": 0.01})
    assert opt.param_groups[1]["lr"] == 0.01 and opt.param_groups[1]["betas"] == (0.9, 0.999)
    for step in range(5):
        for p, g in zip(params, grads_at(step, RANK)):
            p.grad = g
        for q, g in zip(ref, mean_grads(step)):
            q.grad = g
        opt.step()
        ref_opt.step()
    for p, q in zip(params, ref):
        assert np.array(p).tobytes() == np.array(q).tobytes()


def test_broadcast_optimizer_state_carries_lbfgs_history(comm):
    x = nopt.Parameter(np.zeros(4))
    opt = nopt.LBFGS([x], max_iter=5, history_size=3)
    if RANK == 0:
        target = np.arange(4.0)

        def closure():
            x.grad = np.asarray(x) - target
            return 0.5 * float(np.sum(np.square(np.asarray(x) - target)))

        opt.step(closure)
    broadcast_parameters([x], root=0, comm=comm)
    broadcast_optimizer_state(opt, root=0, comm=comm)
    state = opt.state[x]
    assert len(state["old_dirs"]) > 0
    digest = [np.concatenate(state["old_dirs"]).tobytes(), state["n_iter"]]
    assert comm.allgather(digest) == [digest] * SIZE


def test_zero_refuses_what_it_cannot_shard(comm):
    params = [nopt.Parameter(np.ones(3))]
    for cls, match in ((nopt.LBFGS, "LBFGS keeps its state over all parameters"),
                       (nopt.CG, "CG keeps its state"), (nopt.SparseAdam, "SparseAdam's sparse gradients")):
        with pytest.raises(TypeError, match=match):
            ZeroRedundancyOptimizer(params, cls, comm=comm)
    with pytest.raises(ValueError, match="partition must be"):
        ZeroRedundancyOptimizer(params, nopt.SGD, comm=comm, partition="random", lr=0.1)
