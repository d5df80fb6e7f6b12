"""Specifics of Adagrad, Adadelta, RMSprop, Rprop and ASGD that the generic
table (tests/optim_db/misc_rules.py) does not reach."""
import numpy as np
import pytest

import nopt
from harness import TOL, assert_close, run_nopt, run_torch, snapshot, assert_same_snapshot
import optim_db.misc_rules
from optim_db import OptimRecord, grid

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    torch.set_num_threads(1)


def _pair(cls_name, arrays, **options):
    """The same parameters in nopt and torch, one group, with one optimizer each."""
    ours = [nopt.Parameter(a.copy()) for a in arrays]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    return (ours, getattr(nopt, cls_name)(ours, **options),
            theirs, getattr(torch.optim, cls_name)(theirs, foreach=False, **options))


def _step_both(ours, opt, theirs, topt, grads):
    for p, tp, g in zip(ours, theirs, grads):
        p.grad = None if g is None else g.copy()
        tp.grad = None if g is None else torch.from_numpy(g.copy())
    opt.step()
    topt.step()


def _tensor_value(v):
    return v.detach().numpy() if hasattr(v, "detach") else v


def _assert_state_equal(opt, topt, exact=True, rtol=0.0):
    ours, theirs = opt.state_dict()["state"], topt.state_dict()["state"]
    assert sorted(ours) == sorted(theirs)
    for i, tstate in theirs.items():
        assert set(ours[i]) == set(tstate), i
        for key, tv in tstate.items():
            tv, v = _tensor_value(tv), ours[i][key]
            if exact:
                np.testing.assert_array_equal(np.asarray(v), tv, err_msg=f"state[{i}][{key!r}]")
            else:
                assert_close(v, tv, rtol, f"state[{i}][{key!r}]")


# ---------------------------------------------------------------- Adagrad

def test_adagrad_state_is_eager_like_torch():
    arrays = [np.ones((2, 3)), np.zeros(4, np.float32)]
    ours, opt, theirs, topt = _pair("Adagrad", arrays, initial_accumulator_value=0.25)
    # Before any step (and without gradients) every parameter has its state.
    _assert_state_equal(opt, topt)
    for p in ours:
        state = opt.state[p]
        assert state["step"] == 0.0 and isinstance(state["step"], float)
        assert state["sum"].dtype == p.dtype and state["sum"].shape == p.shape
        np.testing.assert_array_equal(state["sum"], 0.25)


def test_adagrad_group_value_of_initial_accumulator_is_ignored_like_torch():
    # torch fills ``sum`` with the constructor's value, also for a group that
    # sets its own initial_accumulator_value.
    a, b = np.ones(3), np.ones(2)
    p, q = nopt.Parameter(a.copy()), nopt.Parameter(b.copy())
    tp, tq = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    groups = lambda x, y: [{"params": [x]}, {"params": [y], "initial_accumulator_value": 2.0}]  # noqa: E731
    opt = nopt.Adagrad(groups(p, q), initial_accumulator_value=0.5)
    topt = torch.optim.Adagrad(groups(tp, tq), initial_accumulator_value=0.5, foreach=False)
    _assert_state_equal(opt, topt)
    np.testing.assert_array_equal(opt.state[q]["sum"], 0.5)
    assert opt.param_groups[1]["initial_accumulator_value"] == 2.0


def test_adagrad_add_param_group_state_like_torch():
    """A group added later gets its state at its first step, as in torch."""
    a, b = np.ones(3), np.full(2, 2.0)
    ours, opt, theirs, topt = _pair("Adagrad", [a], initial_accumulator_value=0.1, lr_decay=0.1)
    q, tq = nopt.Parameter(b.copy()), torch.tensor(b.copy(), requires_grad=True)
    g = np.array([0.5, -1.0, 2.0])
    _step_both(ours, opt, theirs, topt, [g])
    opt.add_param_group({"params": [q], "initial_accumulator_value": 3.0})
    topt.add_param_group({"params": [tq], "initial_accumulator_value": 3.0})
    _assert_state_equal(opt, topt)           # no state for q yet, in both
    assert q not in opt.state
    for t in range(3):
        ours_all, theirs_all = ours + [q], theirs + [tq]
        _step_both(ours_all, opt, theirs_all, topt, [g * (t + 1), np.array([1.0, -0.5])])
    # The late group counts its own steps (lr_decay uses them).
    assert opt.state[q]["step"] == 3.0 and opt.state[ours[0]]["step"] == 4.0
    _assert_state_equal(opt, topt, exact=False, rtol=1e-12)
    for p, tp in zip(ours + [q], theirs + [tq]):
        assert_close(p, tp.detach().numpy(), 1e-12, "param")


def test_adagrad_mixed_step_counts_in_one_group():
    """Parameters of one group at different step counts (split by _split_by)."""
    arrays = [np.linspace(-1, 1, 5), np.linspace(2, 3, 4)]
    ours, opt, theirs, topt = _pair("Adagrad", arrays, lr=0.1, lr_decay=0.5)
    _step_both(ours, opt, theirs, topt, [np.ones(5), None])
    _step_both(ours, opt, theirs, topt, [np.ones(5), None])
    for t in range(4):
        _step_both(ours, opt, theirs, topt, [np.full(5, 0.3 * t - 0.5), np.full(4, 1.0 - t)])
    assert opt.state[ours[0]]["step"] == 6.0 and opt.state[ours[1]]["step"] == 4.0
    _assert_state_equal(opt, topt, exact=False, rtol=1e-12)
    for p, tp in zip(ours, theirs):
        assert_close(p, tp.detach().numpy(), 1e-12, "param")


def test_adagrad_rejects_sparse_gradient_clearly():
    sparse = pytest.importorskip("scipy.sparse")
    p = nopt.Parameter(np.ones((3, 4)))
    q = nopt.Parameter(np.ones(2))
    opt = nopt.Adagrad([p, q])
    q.grad = np.ones(2)
    p._grad = sparse.csr_matrix(np.eye(3, 4))   # the setter refuses it; bypass it
    before = snapshot([p, q], opt)
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[0\].*dense gradients only"):
        opt.step()
    assert_same_snapshot(before, snapshot([p, q], opt))


# ---------------------------------------------------------------- Rprop

def test_rprop_sign_changes_by_hand():
    """One element per case, with etas (0.5, 1.2), lr 0.1, step sizes in [0.01, 0.15]."""
    p = nopt.Parameter(np.zeros(5))
    opt = nopt.Rprop([p], lr=0.1, etas=(0.5, 1.2), step_sizes=(0.01, 0.15))
    # columns: same sign | flip | zero grad | flip then same | grows to the max
    grads = [
        [1.0, 1.0, 1.0, 1.0, -1.0],
        [2.0, -1.0, 0.0, -3.0, -1.0],
        [3.0, -1.0, 1.0, -1.0, -1.0],
        [1.0, 1.0, 0.0, -1.0, -1.0],
    ]
    sizes, params, prevs = [], [], []
    for g in grads:
        p.grad = np.array(g)
        opt.step()
        sizes.append(opt.state[p]["step_size"].copy())
        params.append(np.array(p))
        prevs.append(opt.state[p]["prev"].copy())
    # Step 1: prev = 0, so sizes stay at lr and every non-zero grad moves by lr.
    np.testing.assert_allclose(sizes[0], [0.1] * 5)
    np.testing.assert_allclose(params[0], [-0.1, -0.1, -0.1, -0.1, 0.1])
    # Step 2: same sign grows (x1.2); a flip shrinks (x0.5), does not move and
    # stores prev = 0; a zero grad keeps the size and does not move.
    np.testing.assert_allclose(sizes[1], [0.12, 0.05, 0.1, 0.05, 0.12])
    np.testing.assert_allclose(params[1], [-0.22, -0.1, -0.1, -0.1, 0.22])
    np.testing.assert_array_equal(prevs[1], [2.0, 0.0, 0.0, 0.0, -1.0])
    # Step 3: after the flip prev is 0, so the size stays and the element moves;
    # the zero-grad element had prev 0 too; the last one hits step_max 0.15.
    np.testing.assert_allclose(sizes[2], [0.144, 0.05, 0.1, 0.05, 0.144])
    np.testing.assert_allclose(params[2], [-0.364, -0.05, -0.2, -0.05, 0.364])
    np.testing.assert_allclose(sizes[3], [0.15, 0.025, 0.1, 0.06, 0.15])
    np.testing.assert_allclose(params[3], [-0.514, -0.05, -0.2, 0.01, 0.514])


def test_rprop_step_size_floor_and_maximize_match_torch_bitwise():
    rng = np.random.default_rng(7)
    for dtype in (np.float32, np.float64):
        arrays = [rng.standard_normal(33).astype(dtype)]
        for maximize in (False, True):
            ours, opt, theirs, topt = _pair("Rprop", arrays, lr=0.02, etas=(0.3, 1.5),
                                            step_sizes=(1e-3, 0.05), maximize=maximize)
            for t in range(60):
                # Alternating signs drive sizes to the floor; zeros and flips mixed in.
                g = rng.standard_normal(33).astype(dtype) * (-1) ** t
                g[t % 33] = 0
                _step_both(ours, opt, theirs, topt, [g])
            np.testing.assert_array_equal(ours[0], theirs[0].detach().numpy())
            _assert_state_equal(opt, topt)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_rprop_table_run_is_bitwise_torch(dtype):
    """Rprop only multiplies, compares, clamps and adds: no rounding differs from torch."""
    record = optim_db.by_name("Rprop")
    for options in record.option_sets:
        params, opt = run_nopt(record, options, dtype, 100)
        tparams, topt = run_torch(record, options, dtype, 100)
        for p, tp in zip(params, tparams):
            np.testing.assert_array_equal(p, tp.detach().numpy())
        _assert_state_equal(opt, topt)


def test_rprop_subnormal_and_nan_gradients_like_torch():
    tiny = np.float32(1e-40)     # subnormal in float32
    arrays = [np.array([1.0, 1.0, 1.0, 1.0], np.float32)]
    ours, opt, theirs, topt = _pair("Rprop", arrays, lr=0.1)
    grads = [
        np.array([tiny, np.nan, 1.0, -tiny], np.float32),
        np.array([tiny, 1.0, np.nan, tiny], np.float32),
        np.array([-tiny, 1.0, 1.0, tiny], np.float32),
    ]
    for g in grads:
        _step_both(ours, opt, theirs, topt, [g])
        np.testing.assert_array_equal(ours[0], theirs[0].detach().numpy())
        _assert_state_equal(opt, topt)
    # A subnormal gradient is a full step (no flush-to-zero), as in torch.
    assert ours[0][0] != 1.0


# ---------------------------------------------------------------- ASGD

def test_asgd_eta_mu_and_average_like_torch():
    rng = np.random.default_rng(3)
    lr, lambd, alpha, t0 = 0.05, 0.01, 0.75, 4.0
    for dtype in (np.float32, np.float64):
        arrays = [rng.standard_normal(6).astype(dtype)]
        ours, opt, theirs, topt = _pair("ASGD", arrays, lr=lr, lambd=lambd, alpha=alpha, t0=t0)
        for t in range(1, 12):
            _step_both(ours, opt, theirs, topt, [rng.standard_normal(6).astype(dtype)])
            state, tstate = opt.state[ours[0]], topt.state[theirs[0]]
            # eta and mu: floats holding exactly torch's float32 values.
            assert isinstance(state["eta"], float) and isinstance(state["mu"], float)
            assert state["eta"] == tstate["eta"].item()
            assert state["mu"] == tstate["mu"].item()
            assert state["eta"] == float(np.float32(lr / (1 + lambd * lr * t) ** alpha))
            assert state["mu"] == float(np.float32(1 / max(1, t - t0)))
            # Step t uses mu from step t - 1, 1 / max(1, t - 1 - t0): ax copies
            # the new parameter while that is 1, and averages after.
            if t - 1 - t0 <= 1:
                np.testing.assert_array_equal(state["ax"], ours[0])
            else:
                assert not np.array_equal(state["ax"], ours[0])
            assert_close(state["ax"], tstate["ax"].numpy(), TOL[dtype], "ax")
            assert_close(ours[0], theirs[0].detach().numpy(), TOL[dtype], "param")


def test_asgd_parameters_at_different_steps_in_one_group():
    arrays = [np.linspace(-1, 1, 4), np.linspace(0, 2, 3)]
    ours, opt, theirs, topt = _pair("ASGD", arrays, lr=0.1, lambd=0.05, t0=2.0)
    for t in range(8):
        late = None if t < 3 else np.full(3, 0.5 - 0.2 * t)
        _step_both(ours, opt, theirs, topt, [np.full(4, 1.0 - 0.3 * t), late])
    assert opt.state[ours[0]]["step"] == 8.0 and opt.state[ours[1]]["step"] == 5.0
    for p, tp in zip(ours, theirs):
        assert_close(p, tp.detach().numpy(), 1e-12, "param")
    _assert_state_equal(opt, topt, exact=False, rtol=1e-12)


def test_asgd_bad_schedule_changes_nothing():
    """A negative 1 + lambd*lr*step makes eta complex: a clear error before any change."""
    p = nopt.Parameter(np.ones(3))
    opt = nopt.ASGD([p], lr=1.0, lambd=-2.0)
    p.grad = np.ones(3)
    before = snapshot([p], opt)
    with pytest.raises(ValueError, match="lambd"):
        opt.step()
    assert np.array_equal(p, before[0][0])


# ---------------------------------------------------------------- RMSprop

def _rmsprop_record():
    return optim_db.by_name("RMSprop")


_SMALL_ALPHA = grid(lr=[0.01], alpha=[0.5, 0.3], eps=[1e-8], weight_decay=[0.0, 0.1],
                    momentum=[0.0, 0.9], centered=[False, True], maximize=[False, True])


@pytest.mark.parametrize("options", _SMALL_ALPHA,
                         ids=["-".join(f"{k}={v}" for k, v in o.items()) for o in _SMALL_ALPHA])
def test_rmsprop_small_alpha_float64_parity(options):
    """alpha <= 0.5: torch.lerp's other branch, checked at float64 (see misc_rules.py)."""
    record = _rmsprop_record()
    params, opt = run_nopt(record, options, np.float64, 100)
    tparams, topt = run_torch(record, options, np.float64, 100)
    for i, (p, tp) in enumerate(zip(params, tparams)):
        assert_close(p, tp.detach().numpy(), TOL[np.float64], f"param {i}")
    _assert_state_equal(opt, topt, exact=False, rtol=TOL[np.float64])


@pytest.mark.parametrize("alpha", [0.99, 0.5, 0.3, 0.05])
@pytest.mark.parametrize("maximize", [False, True])
def test_rmsprop_centered_float32_state_is_bitwise_torch(alpha, maximize):
    """With gradients that do not depend on the parameters, square_avg and grad_avg
    see only torch's fused arithmetic (FMA, two-sided lerp): bitwise equal over 50 steps.
    (The parameters differ by torch's float32 sqrt, which is not correctly rounded.)"""
    rng = np.random.default_rng(11)
    arrays = [rng.standard_normal(257).astype(np.float32)]
    ours, opt, theirs, topt = _pair("RMSprop", arrays, alpha=alpha, centered=True,
                                    momentum=0.5, maximize=maximize)
    for t in range(50):
        g = (rng.standard_normal(257) * 0.1 + 2.0).astype(np.float32)
        _step_both(ours, opt, theirs, topt, [g])
        s, ts = opt.state[ours[0]], topt.state[theirs[0]]
        np.testing.assert_array_equal(s["square_avg"], ts["square_avg"].numpy())
        np.testing.assert_array_equal(s["grad_avg"], ts["grad_avg"].numpy())
    assert_close(ours[0], theirs[0].detach().numpy(), 1e-5, "param")


def test_rmsprop_centered_state_keys_like_torch():
    for momentum in (0.0, 0.9):
        for centered in (False, True):
            ours, opt, theirs, topt = _pair("RMSprop", [np.ones(3)], momentum=momentum,
                                            centered=centered)
            _step_both(ours, opt, theirs, topt, [np.array([1.0, -2.0, 0.5])])
            assert set(opt.state[ours[0]]) == set(topt.state[theirs[0]])
            _assert_state_equal(opt, topt, exact=False, rtol=1e-12)


def test_rmsprop_switching_on_momentum_and_centered_later_starts_at_zero():
    """torch raises KeyError here; nopt starts the missing buffers at zero."""
    p = nopt.Parameter(np.array([1.0, 2.0]))
    opt = nopt.RMSprop([p], lr=0.1)
    p.grad = np.array([0.5, -0.5])
    opt.step()
    assert set(opt.state[p]) == {"step", "square_avg"}
    opt.param_groups[0]["momentum"] = 0.9
    opt.param_groups[0]["centered"] = True
    before = np.array(p)
    sq = opt.state[p]["square_avg"].copy()
    opt.step()
    state = opt.state[p]
    g = np.array([0.5, -0.5])
    square_avg = sq * 0.99 + 0.01 * g * g
    grad_avg = 0.01 * g
    avg = np.sqrt(square_avg - grad_avg * grad_avg) + 1e-8
    np.testing.assert_allclose(state["grad_avg"], grad_avg, rtol=1e-15)
    np.testing.assert_allclose(state["momentum_buffer"], g / avg, rtol=1e-14)
    np.testing.assert_allclose(p, before - 0.1 * g / avg, rtol=1e-14)


# ---------------------------------------------------------------- Adadelta

def test_adadelta_lazy_state_and_rho_bounds_like_torch():
    ours, opt, theirs, topt = _pair("Adadelta", [np.ones(4)], rho=1.0)
    assert not opt.state
    _step_both(ours, opt, theirs, topt, [np.array([1.0, -1.0, 0.0, 2.0])])
    _assert_state_equal(opt, topt, exact=False, rtol=1e-15)
    ours, opt, theirs, topt = _pair("Adadelta", [np.ones(4)], rho=0.0)
    _step_both(ours, opt, theirs, topt, [np.array([1.0, -1.0, 0.0, 2.0])])
    _assert_state_equal(opt, topt, exact=False, rtol=1e-15)


# ---------------------------------------------------------------- all five

# Every record of tests/optim_db/misc_rules.py; these options reach each rule's extra state.
_MIXED_OPTIONS = {"RMSprop": {"centered": True, "momentum": 0.9}, "ASGD": {"t0": 1.0}}
_ALL = [(r.name, _MIXED_OPTIONS.get(r.name, {})) for r in optim_db.misc_rules.RECORDS]


@pytest.mark.parametrize("name,options", _ALL, ids=[n for n, _ in _ALL])
def test_signature_and_defaults_match_torch(name, options):
    import inspect

    ours = inspect.signature(getattr(nopt, name).__init__).parameters
    theirs = inspect.signature(getattr(torch.optim, name).__init__).parameters
    dropped = {"foreach", "fused", "capturable", "differentiable"}
    expected = {k: v.default for k, v in theirs.items() if k not in dropped}
    assert {k: v.default for k, v in ours.items() if k not in dropped} == expected
    # torch's kind: ASGD and RMSprop take maximize by position (tests/test_registry.py).
    assert ours["maximize"].kind is theirs["maximize"].kind
    assert list(ours)[:2] == ["self", "params"]


@pytest.mark.parametrize("name,options", _ALL, ids=[n for n, _ in _ALL])
def test_mixed_dtypes_and_missing_grads(name, options):
    """float32 and float64 params in one group, some without grads: torch's numbers."""
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal(5), rng.standard_normal(4).astype(np.float32),
              rng.standard_normal(3)]
    ours, opt, theirs, topt = _pair(name, arrays, **options)
    for t in range(10):
        grads = [rng.standard_normal(a.shape).astype(a.dtype) for a in arrays]
        if t % 3 == 0:
            grads[2] = None
        _step_both(ours, opt, theirs, topt, grads)
    for p, tp in zip(ours, theirs):
        assert_close(p, tp.detach().numpy(), TOL[p.dtype.type], "param")
    _assert_state_equal(opt, topt, exact=False, rtol=1e-5)


@pytest.mark.parametrize("name,options", _ALL, ids=[n for n, _ in _ALL])
def test_closure_and_empty_steps(name, options):
    p = nopt.Parameter(np.ones(3))
    opt = getattr(nopt, name)([p], **options)
    assert opt.step(lambda: 3.5) == 3.5          # no grads: nothing moves
    np.testing.assert_array_equal(p, 1.0)
    p.grad = np.zeros(3)
    opt.step()
    assert opt.state[p]["step"] == 1.0
