"""Adam-family specifics beyond the generic table tests (tests/optim_db/adam.py):
signatures and defaults, AdamW's definition, RAdam's rectification switch,
NAdam's mu_product, per-parameter step counts, and all-or-nothing steps."""
import inspect

import numpy as np
import pytest

import nopt
import optim_db.adam
from harness import assert_close, assert_same_snapshot, snapshot

torch = pytest.importorskip("torch")

NAMES = [r.name for r in optim_db.adam.RECORDS]   # the family's records
TORCH_ONLY = {"foreach", "fused", "capturable", "differentiable"}


def _params(dtype=np.float64, seed=0, shapes=((3,), (2, 4))):
    rng = np.random.default_rng(seed)
    return [nopt.Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]


def _torch_params(params):
    return [torch.tensor(np.array(p), requires_grad=True) for p in params]


@pytest.mark.parametrize("name", NAMES)
def test_signature_is_torchs_without_device_options(name):
    ours = {k: v for k, v in inspect.signature(getattr(nopt, name)).parameters.items()
            if k not in TORCH_ONLY}
    theirs = {k: v for k, v in inspect.signature(getattr(torch.optim, name)).parameters.items()
              if k not in TORCH_ONLY}
    assert list(ours) == list(theirs)
    for key, param in theirs.items():
        assert ours[key].default == param.default, key
        assert ours[key].kind == param.kind, key


@pytest.mark.parametrize("name", NAMES)
def test_defaults_match_torch(name):
    ours = getattr(nopt, name)(_params()).defaults
    theirs = getattr(torch.optim, name)([torch.zeros(1, requires_grad=True)]).defaults
    expected = {k: v for k, v in theirs.items() if k not in TORCH_ONLY}
    assert ours == expected


def test_adamw_is_adam_with_decoupled_decay():
    assert issubclass(nopt.AdamW, nopt.Adam)
    opt = nopt.AdamW(_params())
    assert opt.defaults["weight_decay"] == 1e-2
    assert opt.defaults["decoupled_weight_decay"] is True
    with pytest.raises(TypeError):
        nopt.AdamW(_params(), decoupled_weight_decay=False)

    runs = []
    for make in (lambda ps: nopt.AdamW(ps, lr=0.1, weight_decay=0.3, amsgrad=True),
                 lambda ps: nopt.Adam(ps, lr=0.1, weight_decay=0.3, amsgrad=True,
                                      decoupled_weight_decay=True)):
        params = _params()
        opt = make(params)
        rng = np.random.default_rng(5)
        for _ in range(10):
            for p in params:
                p.grad = rng.standard_normal(p.shape)
            opt.step()
        runs.append([p.tobytes() for p in params])
    assert runs[0] == runs[1]


def test_adamw_load_state_dict_keeps_decoupled_decay():
    params = _params()
    opt = nopt.AdamW(params)
    sd = opt.state_dict()
    sd["param_groups"][0]["decoupled_weight_decay"] = False
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["decoupled_weight_decay"] is True
    # as torch does
    t = torch.optim.AdamW([torch.zeros(3, requires_grad=True), torch.zeros(2, 4, requires_grad=True)])
    tsd = t.state_dict()
    tsd["param_groups"][0]["decoupled_weight_decay"] = False
    t.load_state_dict(tsd)
    assert t.param_groups[0]["decoupled_weight_decay"] is True


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_radam_rectification_switches_at_torchs_threshold(dtype):
    """Steps 1-5 (beta2 = 0.999) are plain bias-corrected momentum; from step 6 on
    the adaptive, rectified update applies; both agree with torch."""
    from nopt.radam import _rectification

    assert [_rectification(0.999, t)[1] is not None for t in range(1, 9)] == [False] * 5 + [True] * 3
    lr, beta1 = 0.1, 0.9
    params = _params(dtype)
    opt = nopt.RAdam(params, lr=lr, eps=1e-3)
    tparams = _torch_params(params)
    topt = torch.optim.RAdam(tparams, lr=lr, eps=1e-3, foreach=False)
    rng = np.random.default_rng(1)
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    for t in range(1, 9):
        before = [np.array(p, dtype=np.float64) for p in params]
        grads = [rng.standard_normal(p.shape).astype(dtype) * 10 for p in params]
        for p, tp, g in zip(params, tparams, grads):
            p.grad = g
            tp.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        for p, tp, b in zip(params, tparams, before):
            assert_close(p, tp.detach().numpy(), rtol, f"step {t}")
            m = opt.state[p]["exp_avg"].astype(np.float64)
            plain = b - lr * m / (1 - beta1 ** t)
            # The unrectified step does not depend on exp_avg_sq (grads are O(10),
            # so the adaptive step would be ~10x smaller).
            if t <= 5:
                assert_close(p, plain, rtol, f"plain step {t}")
            else:
                assert not np.allclose(p, plain, rtol=1e-3), f"step {t} should be rectified"


def test_nadam_mu_product_is_a_float_equal_to_torchs():
    params = _params()
    opt = nopt.NAdam(params, lr=0.01, momentum_decay=0.05)
    tparams = _torch_params(params)
    topt = torch.optim.NAdam(tparams, lr=0.01, momentum_decay=0.05, foreach=False)
    rng = np.random.default_rng(2)
    for _ in range(30):
        for p, tp in zip(params, tparams):
            g = rng.standard_normal(p.shape)
            p.grad = g
            tp.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    for i, p in enumerate(params):
        mu = opt.state[p]["mu_product"]
        assert type(mu) is float
        assert mu == topt.state[tparams[i]]["mu_product"].item()
        assert type(opt.state[p]["step"]) is float


def test_nadam_resume_from_torch_style_state():
    """A state dict whose step and mu_product are 0-d arrays (as converted from
    torch tensors) resumes exactly like the uninterrupted run."""
    params = _params()
    opt = nopt.NAdam(params, lr=0.01)
    rng = np.random.default_rng(3)
    grads = [[rng.standard_normal(p.shape) for p in params] for _ in range(12)]
    for t in range(6):
        for p, g in zip(params, grads[t]):
            p.grad = g
        opt.step()
    sd = opt.state_dict()
    saved = {
        "state": {k: {key: (np.array(v) if not isinstance(v, np.ndarray) else v.copy())
                      for key, v in s.items()} for k, s in sd["state"].items()},
        "param_groups": sd["param_groups"],
    }
    params2 = [nopt.Parameter(np.array(p)) for p in params]
    opt2 = nopt.NAdam(params2, lr=0.01)
    opt2.load_state_dict(saved)
    for t in range(6, 12):
        for ps, o in ((params, opt), (params2, opt2)):
            for p, g in zip(ps, grads[t]):
                p.grad = g.copy()
            o.step()
    for p, p2 in zip(params, params2):
        assert p.tobytes() == p2.tobytes()
        assert opt.state[p]["mu_product"] == float(opt2.state[p2]["mu_product"])


_options = {
    "Adam": dict(lr=0.05, amsgrad=True, weight_decay=0.1),
    "AdamW": dict(lr=0.05),
    "Adamax": dict(lr=0.05, weight_decay=0.1),
    "NAdam": dict(lr=0.05, decoupled_weight_decay=True, weight_decay=0.1),
    "RAdam": dict(lr=0.05, weight_decay=0.1),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", NAMES)
def test_parameters_with_different_step_counts(name, dtype):
    """Parameters that skip steps (no grad) lag in ``step``; one group then
    runs split by step count, and still matches torch."""
    options = _options[name]
    params = _params(dtype, shapes=((3,), (2, 4), (5,)))
    opt = getattr(nopt, name)(params, **options)
    tparams = _torch_params(params)
    topt = getattr(torch.optim, name)(tparams, **options, foreach=False)
    rng = np.random.default_rng(4)
    for t in range(25):
        for i, (p, tp) in enumerate(zip(params, tparams)):
            if (t + i) % (i + 2) == 0:     # each parameter skips on its own pattern
                p.grad, tp.grad = None, None
                continue
            g = rng.standard_normal(p.shape).astype(dtype)
            p.grad = g
            tp.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    steps = [opt.state[p]["step"] for p in params]
    assert len(set(steps)) > 1
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    for p, tp in zip(params, tparams):
        assert_close(p, tp.detach().numpy(), rtol, name)
        for key, value in topt.state[tp].items():
            value = value.numpy() if hasattr(value, "numpy") else value
            assert_close(opt.state[p][key], value, rtol, f"{name} state {key}")


def test_missing_state_entry_raises_before_any_change():
    params = _params()
    opt = nopt.Adam([{"params": params[:1]}, {"params": params[1:]}], lr=0.1)
    for p in params:
        p.grad = np.ones_like(p)
    opt.step()
    opt.param_groups[1]["amsgrad"] = True
    before = snapshot(params, opt)
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['params'\]\[0\].*'max_exp_avg_sq'"):
        opt.step()
    assert_same_snapshot(before, snapshot(params, opt))


def test_failing_step_changes_no_group():
    """Scalars for every group are computed before any kernel runs: a group
    whose hyperparameters break the step (beta1 set to 1 after construction:
    division by zero, as in torch) leaves the other groups untouched."""
    params = _params()
    opt = nopt.Adam([{"params": params[:1]}, {"params": params[1:]}], lr=0.1)
    for p in params:
        p.grad = np.ones_like(p)
    opt.step()
    opt.param_groups[1]["betas"] = (1.0, 0.999)
    before = snapshot(params, opt)
    with pytest.raises(ZeroDivisionError):
        opt.step()
    assert_same_snapshot(before, snapshot(params, opt))


@pytest.mark.parametrize("name", NAMES)
def test_hyperparameter_types_are_checked(name):
    cls = getattr(nopt, name)
    with pytest.raises(TypeError, match="lr must be a real number"):
        cls(_params(), lr="0.1")
    with pytest.raises(ValueError, match="betas must be a pair"):
        cls(_params(), betas=(0.9,))
    with pytest.raises(TypeError, match=r"betas\[1\] must be a real number"):
        cls(_params(), betas=(0.9, None))
    # Integer betas are accepted (and kept as given) where torch's Adam asks for floats.
    opt = cls(_params(), betas=(0, 0.5))
    assert opt.defaults["betas"] == (0, 0.5)


def test_flat_state_is_one_buffer_per_key():
    params = _params(shapes=((3,), (2, 4), (5,)))
    opt = nopt.Adam(params, amsgrad=True)
    for p in params:
        p.grad = np.ones_like(p)
    opt.step()
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        bases = {id(opt.state[p][key].base) for p in params}
        assert len(bases) == 1, key


@pytest.mark.parametrize("name,options", [
    ("Adam", dict(amsgrad=True)), ("Adam", dict(weight_decay=0.1)), ("AdamW", {}),
    ("Adamax", {}), ("NAdam", {}), ("RAdam", {}),
])
def test_non_finite_values_propagate_as_in_torch(name, options):
    """A NaN or inf gradient element, and an inf parameter with zero weight decay,
    leave the same non-finite pattern in params and state as torch (NaN-propagating
    maxima; no 0 * inf from an absent decay term)."""
    params = [nopt.Parameter(np.array([1.0, -2.0, np.inf, 0.5, 3.0]))]
    opt = getattr(nopt, name)(params, lr=0.1, **options)
    tparams = _torch_params(params)
    topt = getattr(torch.optim, name)(tparams, lr=0.1, **options, foreach=False)
    # (No gradient cancels its decay term exactly: torch's add(alpha=) may use an
    # FMA there, and Adam would then amplify that rounding.)
    grads = [np.array([0.13, np.nan, 0.2, np.inf, -0.37]), np.array([0.2, 0.1, -0.1, 0.3, 0.4])]
    for g in grads:
        params[0].grad = g
        tparams[0].grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    t = tparams[0].detach().numpy()
    np.testing.assert_array_equal(np.isnan(params[0]), np.isnan(t))
    np.testing.assert_array_equal(np.isinf(params[0]), np.isinf(t))
    finite = np.isfinite(t)
    assert_close(params[0][finite], t[finite], 1e-10, "finite entries")
    for key, value in topt.state[tparams[0]].items():
        if key in ("step", "mu_product"):
            continue
        value = value.numpy()
        np.testing.assert_array_equal(np.isnan(opt.state[params[0]][key]), np.isnan(value), key)
