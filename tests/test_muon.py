"""Muon: Newton-Schulz and full steps against torch (its iteration run in the
parameter's dtype), the NumPy reference, convergence against torch's own
bfloat16 Muon on a real task, 2-D only, validation, resume and bad input."""
import contextlib

import numpy as np
import pytest

import nopt
from harness import TOL, GradientSource, assert_close, assert_same_snapshot, initial_arrays, snapshot
from nopt.muon import newton_schulz
from optim_db.muon import MUON, newton_schulz_reference

SHAPES = MUON.extra["shapes"]
DTYPES = [np.float64, np.float32]
OPTIONS = MUON.option_sets


@contextlib.contextmanager
def torch_newton_schulz_in_input_dtype(torch):
    """torch's Muon casts to bfloat16 before Newton-Schulz; make that cast a copy.

    Everything else in torch's helper and step runs unchanged, in the
    parameter's dtype: the oracle for nopt's float32/float64 iteration.
    """
    from unittest import mock

    with mock.patch.object(torch.Tensor, "bfloat16", lambda self: self.clone()):
        yield


def _groups(items, options):
    return [{"params": items[:2]}, {"params": items[2:], "lr": options["lr"] * 0.5}]


def _run_nopt(options, dtype, steps, start=0, params=None, opt=None):
    if params is None:
        params = [nopt.Parameter(a) for a in initial_arrays(dtype, 0, SHAPES)]
        opt = nopt.Muon(_groups(params, options), **options)
    source = GradientSource(dtype, shapes=SHAPES)
    for t in range(start, start + steps):
        for p, g in zip(params, source(t, params)):
            p.grad = g
        opt.step()
    return params, opt


def _run_torch(torch, options, dtype, steps):
    tparams = [torch.tensor(a, requires_grad=True) for a in initial_arrays(dtype, 0, SHAPES)]
    opt = torch.optim.Muon(_groups(tparams, options), **options)
    source = GradientSource(dtype, shapes=SHAPES)
    for t in range(steps):
        for p, g in zip(tparams, source(t, [p.detach().numpy() for p in tparams])):
            p.grad = torch.from_numpy(g)
        opt.step()
    return tparams, opt


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(30, 50), (50, 30), (64, 64), (1, 7), (7, 1), (200, 40)])
def test_newton_schulz_matches_torchs_helper_in_the_same_dtype(shape, dtype):
    torch = pytest.importorskip("torch")
    from torch.optim._muon import _zeropower_via_newtonschulz

    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    for coefficients, steps, eps in [((3.4445, -4.775, 2.0315), 5, 1e-7), ((2.0, -1.5, 0.5), 9, 1e-3)]:
        matrix = rng.standard_normal(shape).astype(dtype)
        with torch_newton_schulz_in_input_dtype(torch):
            expected = _zeropower_via_newtonschulz(torch.from_numpy(matrix.copy()), coefficients,
                                                   steps, eps).numpy()
        assert expected.dtype == dtype
        actual = newton_schulz(matrix, coefficients, steps, eps)
        assert actual.dtype == dtype and actual.shape == shape
        assert_close(actual, expected, TOL[dtype], "orthogonalised")
        assert_close(actual, newton_schulz_reference(matrix, coefficients, steps, eps), TOL[dtype],
                     "reference")


def test_newton_schulz_is_within_bfloat16_precision_of_torchs_default():
    torch = pytest.importorskip("torch")
    from torch.optim._muon import _zeropower_via_newtonschulz

    matrix = np.random.default_rng(2).standard_normal((96, 64)).astype(np.float32)
    ours = newton_schulz(matrix)
    theirs = _zeropower_via_newtonschulz(torch.from_numpy(matrix), (3.4445, -4.775, 2.0315), 5,
                                         1e-7).float().numpy()
    relative = np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)
    assert 1e-4 < relative < 5e-2   # bfloat16 has an 8-bit significand
    # Both push the singular values into roughly (0.5, 1.5).
    singular = np.linalg.svd(ours, compute_uv=False)
    assert singular.min() > 0.3 and singular.max() < 1.5


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("options", OPTIONS, ids=MUON.ids())
def test_full_steps_match_torch_over_100_steps(options, dtype):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    params, opt = _run_nopt(options, dtype, 100)
    with torch_newton_schulz_in_input_dtype(torch):
        tparams, topt = _run_torch(torch, options, dtype, 100)
    for i, (p, tp) in enumerate(zip(params, tparams)):
        assert_close(p, tp.detach().numpy(), TOL[dtype], f"param {i}")
        assert set(opt.state[p]) == set(topt.state[tp]) == {"momentum_buffer"}
        assert_close(opt.state[p]["momentum_buffer"], topt.state[tp]["momentum_buffer"].numpy(),
                     TOL[dtype], f"momentum_buffer {i}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("options", OPTIONS, ids=MUON.ids())
def test_matches_numpy_reference(options, dtype):
    params, opt = _run_nopt(options, dtype, 30)
    arrays = initial_arrays(dtype, 0, SHAPES)
    states = [dict() for _ in arrays]
    defaults = dict(opt.defaults)
    source = GradientSource(dtype, shapes=SHAPES)
    for t in range(30):
        grads = source(t, arrays)
        for i, (a, g, s) in enumerate(zip(arrays, grads, states)):
            group = dict(defaults, lr=options["lr"] * (0.5 if i >= 2 else 1.0))
            MUON.reference(a, g, s, group)
    for i, (p, a) in enumerate(zip(params, arrays)):
        assert_close(p, a, TOL[dtype], f"param {i}")


def _digits(dtype):
    X, y = nopt.models.load_digits(dtype)
    X = X / dtype(16)
    return X[:1200], y[:1200], X[1200:], y[1200:]


def test_convergence_matches_torchs_bfloat16_muon_on_digits():
    """A 64-64-10 MLP on the digits: Muon for the weights, AdamW for the biases,
    100 full-batch steps from the same start, nopt (float32 Newton-Schulz)
    against torch (bfloat16 Newton-Schulz). The losses agree to about 1e-3
    relative here (the bfloat16 rounding averages out); 10% is asserted."""
    torch = pytest.importorskip("torch")
    threadpoolctl = pytest.importorskip("threadpoolctl")
    torch.set_num_threads(1)
    with threadpoolctl.threadpool_limits(1):   # BLAS threads spin on a loaded machine
        _train_digits_both(torch)


def _train_digits_both(torch):
    dtype = np.float32
    X, y, X_test, y_test = _digits(dtype)
    model = nopt.models.MLP([64, 64, 10], dtype=dtype, seed=0)
    tw = [torch.tensor(np.array(w), requires_grad=True) for w in model.weights]
    tb = [torch.tensor(np.array(b), requires_grad=True) for b in model.biases]
    muon = nopt.Muon(model.weights, lr=0.1)
    adamw = nopt.AdamW(model.biases, lr=1e-2)
    tmuon = torch.optim.Muon(tw, lr=0.1)
    tadamw = torch.optim.AdamW(tb, lr=1e-2)
    tX, ty = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))

    def torch_loss(inputs, targets):
        hidden = torch.relu(inputs @ tw[0] + tb[0])
        return torch.nn.functional.cross_entropy(hidden @ tw[1] + tb[1], targets)

    first = model.loss_and_grad(X, y)
    for _ in range(100):
        model.loss_and_grad(X, y)
        muon.step()
        adamw.step()
        for opt in (tmuon, tadamw):
            opt.zero_grad()
        tloss = torch_loss(tX, ty)
        tloss.backward()
        tmuon.step()
        tadamw.step()
    loss = model.loss_and_grad(X, y)
    tloss = float(torch_loss(tX, ty).detach())
    assert loss < 0.1 * first and tloss < 0.1 * first
    assert abs(loss - tloss) <= 0.1 * tloss, (loss, tloss)
    accuracy = float(np.mean(model.predict(X_test) == y_test))
    with torch.no_grad():
        hidden = torch.relu(torch.from_numpy(X_test) @ tw[0] + tb[0])
        taccuracy = float(((hidden @ tw[1] + tb[1]).argmax(1).numpy() == y_test).mean())
    assert accuracy > 0.85 and abs(accuracy - taccuracy) < 0.03, (accuracy, taccuracy)


@pytest.mark.parametrize("shape", [(3,), (2, 3, 4), ()])
def test_only_2d_parameters(shape):
    with pytest.raises(ValueError, match=r"Muon only supports 2D parameters whereas we found a "
                                         r"parameter with size"):
        nopt.Muon([nopt.Parameter(np.zeros(shape))])
    opt = nopt.Muon([nopt.Parameter(np.zeros((2, 2)))])
    with pytest.raises(ValueError, match="only supports 2D"):
        opt.add_param_group({"params": [nopt.Parameter(np.zeros(shape))]})
    assert len(opt.param_groups) == 1
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        torch.optim.Muon([torch.zeros(shape, requires_grad=True)])


@pytest.mark.parametrize("kwargs,exc,match", MUON.invalid, ids=[str(k) for k, _, _ in MUON.invalid])
def test_invalid_hyperparameters_as_torch(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        nopt.Muon([nopt.Parameter(np.zeros((2, 3)))], **kwargs)
    torch = pytest.importorskip("torch")
    with pytest.raises(exc, match=match):
        torch.optim.Muon([torch.zeros((2, 3), requires_grad=True)], **kwargs)


@pytest.mark.parametrize("group_change,match", [
    ({"ns_steps": 100}, "Number of steps must be less than 100"),
    ({"ns_coefficients": (1.0, 2.0)}, "Coefficients must be a tuple of exactly 3 values"),
])
def test_bad_group_values_fail_before_any_change(group_change, match):
    params, opt = _run_nopt(OPTIONS[0], np.float64, 3)
    opt.param_groups[1].update(group_change)
    for p in params:
        p.grad = np.ones_like(p)
    before = snapshot(params, opt)
    with pytest.raises(ValueError, match=match):
        opt.step()
    assert_same_snapshot(before, snapshot(params, opt))


def test_bad_gradient_names_the_parameter_and_changes_nothing():
    params, opt = _run_nopt(OPTIONS[0], np.float64, 3)
    for p in params:
        p.grad = np.ones_like(p)
    params[3]._grad = np.ones(params[3].size + 1)
    before = snapshot(params, opt)
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['params'\]\[1\].*shape"):
        opt.step()
    assert_same_snapshot(before, snapshot(params, opt))


@pytest.mark.parametrize("options", [OPTIONS[0], OPTIONS[-1]], ids=["default", "custom-ns"])
def test_resume_from_checkpoint_is_bitwise_identical(options, tmp_path):
    params, opt = _run_nopt(options, np.float64, 12)
    nopt.save({"optimizer": opt.state_dict(), "params": [np.array(p) for p in params]},
              tmp_path / "ckpt.nopt")
    _run_nopt(options, np.float64, 12, start=12, params=params, opt=opt)
    saved = nopt.load(tmp_path / "ckpt.nopt")
    params2 = [nopt.Parameter(a) for a in saved["params"]]
    opt2 = nopt.Muon(_groups(params2, options), **options)
    opt2.load_state_dict(saved["optimizer"])
    _run_nopt(options, np.float64, 12, start=12, params=params2, opt=opt2)
    assert_same_snapshot(snapshot(params, opt), snapshot(params2, opt2))
    assert opt2.state_dict()["param_groups"][1]["ns_coefficients"] == options.get(
        "ns_coefficients", (3.4445, -4.775, 2.0315))


def test_momentum_buffer_overlapping_another_array_is_refused_before_any_change():
    a, b = nopt.Parameter(np.ones((2, 3))), nopt.Parameter(np.ones((2, 3)))
    opt = nopt.Muon([a, b])
    a.grad, b.grad = np.ones((2, 3)), np.full((2, 3), 2.0)
    opt.step()
    opt.state[a]["momentum_buffer"] = b.grad            # a's buffer is b's gradient
    before = snapshot([a, b], opt)
    with pytest.raises(ValueError):
        opt.step()
    assert_same_snapshot(before, snapshot([a, b], opt))
