"""The rules beyond torch.optim against their oracles, and the combinators.

Each rule runs 100 steps on a few parameters (gradients from a quadratic
plus fixed noise, computed from each implementation's own parameters) in
float64 and float32 and is compared with:
- the NumPy transcription of its paper (nopt/_reference.py, which the bench and the
  generic table tests share; Prodigy's steps every array at once, d being global), always;
- optax (jax on the CPU, float64 enabled) and the authors' torch packages
  (lion-pytorch, schedulefree, prodigyopt) and pytorch-optimizer, when
  installed (importorskip).

Tolerances: float64 rtol 1e-9 (differences are rounding: evaluation order,
FMA contraction in the vectorised kernels); float32 rtol 2e-4 / atol 1e-5
over 100 steps (rounding of the float32 arithmetic, which every
implementation orders differently; Prodigy's package sums float32 dot
products in float32 where nopt sums in double).
"""
import numpy as np
import pytest

import nopt
import math

from nopt import _reference

STEPS = 100
SHAPES = [(7, 5), (13,), (3, 2, 2)]
TOL = {np.float64: dict(rtol=1e-9, atol=1e-12), np.float32: dict(rtol=2e-4, atol=1e-5)}

# (name, options) pairs every rule is checked with against the NumPy reference.
CASES = [
    ("Lion", dict(lr=1e-3)),
    ("Lion", dict(lr=3e-3, betas=(0.8, 0.95), weight_decay=0.5, maximize=True)),
    ("AdaBelief", dict(lr=1e-2)),
    ("AdaBelief", dict(lr=1e-2, eps=1e-8, weight_decay=0.1)),
    ("AdaBelief", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=False, maximize=True)),
    ("Adan", dict(lr=1e-2)),
    ("Adan", dict(lr=1e-2, weight_decay=0.05)),
    ("Adan", dict(lr=1e-2, betas=(0.9, 0.5, 0.95), weight_decay=0.05, no_prox=True)),
    ("LAMB", dict(lr=1e-2)),
    ("LAMB", dict(lr=1e-2, weight_decay=0.1, betas=(0.8, 0.99), maximize=True)),
    ("LARS", dict(lr=1.0, trust_coefficient=1e-2)),
    ("LARS", dict(lr=0.5, trust_coefficient=1e-2, weight_decay=1e-2, eps=1e-8, nesterov=True)),
    ("ScheduleFreeSGD", dict(lr=0.1)),
    ("ScheduleFreeSGD", dict(lr=0.1, momentum=0.8, weight_decay=0.01, warmup_steps=10, r=0.5)),
    ("ScheduleFreeAdamW", dict(lr=1e-2)),
    ("ScheduleFreeAdamW", dict(lr=1e-2, weight_decay=0.01, warmup_steps=10, weight_lr_power=1.0)),
    ("Prodigy", dict()),
    ("Prodigy", dict(weight_decay=0.01, use_bias_correction=True)),
    ("Prodigy", dict(weight_decay=0.01, decouple=False, safeguard_warmup=True, d_coef=0.5)),
]


def _initial(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    noise = [[rng.standard_normal(s).astype(dtype) * dtype(0.3) for s in SHAPES]
             for _ in range(STEPS)]
    curvature = [np.abs(rng.standard_normal(s)).astype(dtype) + dtype(0.5) for s in SHAPES]
    return x0, noise, curvature


def _grad(x, k, t, noise, curvature):
    return (curvature[k] * x + noise[t][k]).astype(x.dtype)


def run_nopt(name, options, dtype, switch_every=0):
    x0, noise, curvature = _initial(dtype)
    params = [nopt.Parameter(x.copy()) for x in x0]
    opt = getattr(nopt, name)(params, **options)
    for t in range(STEPS):
        for k, p in enumerate(params):
            p.grad = _grad(np.asarray(p), k, t, noise, curvature)
        opt.step()
        if switch_every and t % switch_every == switch_every - 1:
            opt.eval()
            opt.train()
    if hasattr(opt, "eval"):
        opt.eval()
    return [np.asarray(p).copy() for p in params]


def _switch(rule, name, train):
    """Schedule-free train()/eval() on the NumPy reference's arrays: p = lerp(p, z, w)."""
    beta = rule.group["betas"][0] if name == "ScheduleFreeAdamW" else rule.group["momentum"]
    for p, s in zip(rule.params, rule.state):
        if s:
            _reference._lerp_(p, s["z"], (1 - beta) if train else (1 - 1 / beta))


def run_reference(name, options, dtype, switch_every=0):
    x0, noise, curvature = _initial(dtype)
    params = [x.copy() for x in x0]
    grads = [np.zeros_like(x) for x in x0]
    rule = _reference.make(name, params, grads, **options)
    for t in range(STEPS):
        for k, p in enumerate(params):
            grads[k][...] = _grad(p, k, t, noise, curvature)
        rule.step()
        if switch_every and t % switch_every == switch_every - 1:
            _switch(rule, name, False)
            _switch(rule, name, True)
    if name.startswith("ScheduleFree"):
        _switch(rule, name, False)
    return params


def run_torch(make_optimizer, dtype, switch_every=0, grad_copy=True):
    """An oracle torch optimizer over the same problem; ``make_optimizer(params)``."""
    torch = pytest.importorskip("torch")
    x0, noise, curvature = _initial(dtype)
    params = [torch.tensor(x.copy(), requires_grad=True) for x in x0]
    opt = make_optimizer(params)
    if hasattr(opt, "train"):
        opt.train()
    for t in range(STEPS):
        for k, p in enumerate(params):
            # A fresh copy each step: some oracles modify the gradient in place.
            p.grad = torch.from_numpy(_grad(p.detach().numpy(), k, t, noise, curvature).copy())
        opt.step()
        if switch_every and t % switch_every == switch_every - 1:
            opt.eval()
            opt.train()
    if hasattr(opt, "eval"):
        opt.eval()
    return [p.detach().numpy().copy() for p in params]


@pytest.fixture(scope="module")
def jax_x64():
    jax = pytest.importorskip("jax")
    pytest.importorskip("optax")
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    return jax


def run_optax(transform, dtype, jax, eval_fn=None):
    import jax.numpy as jnp
    import optax

    x0, noise, curvature = _initial(dtype)
    params = [jnp.asarray(x) for x in x0]
    state = transform.init(params)
    # Compiled once, as optax is meant to be used: run eagerly, each update
    # re-traced its control flow (seconds per test).
    update = jax.jit(transform.update)
    for t in range(STEPS):
        grads = [jnp.asarray(_grad(np.asarray(p), k, t, noise, curvature)) for k, p in enumerate(params)]
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    if eval_fn is not None:
        params = eval_fn(params, state)
    return [np.asarray(p) for p in params]


def assert_close(actual, expected, dtype):
    for a, e in zip(actual, expected):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, e, **TOL[dtype])


DTYPES = [np.float64, np.float32]


# ---------------------------------------------------------------- the NumPy reference
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, options", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_matches_reference(name, options, dtype):
    switch = 7 if name.startswith("ScheduleFree") else 0
    assert_close(run_nopt(name, options, dtype, switch), run_reference(name, options, dtype, switch),
                 dtype)


# ---------------------------------------------------------------- the authors' packages
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", [dict(lr=1e-3), dict(lr=3e-3, betas=(0.8, 0.95), weight_decay=0.5)])
def test_lion_matches_lion_pytorch(options, dtype):
    lion_pytorch = pytest.importorskip("lion_pytorch")
    expected = run_torch(lambda ps: lion_pytorch.Lion(ps, **options), dtype)
    assert_close(run_nopt("Lion", options, dtype), expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", [
    dict(lr=0.1), dict(lr=0.1, momentum=0.8, weight_decay=0.01, warmup_steps=10, r=0.5)])
def test_schedule_free_sgd_matches_package(options, dtype):
    schedulefree = pytest.importorskip("schedulefree")
    expected = run_torch(lambda ps: schedulefree.SGDScheduleFree(ps, **options), dtype, 7)
    assert_close(run_nopt("ScheduleFreeSGD", options, dtype, 7), expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", [
    dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.01, warmup_steps=10, weight_lr_power=1.0, r=1.0)])
def test_schedule_free_adamw_matches_package(options, dtype):
    schedulefree = pytest.importorskip("schedulefree")
    expected = run_torch(lambda ps: schedulefree.AdamWScheduleFree(ps, foreach=False, **options),
                         dtype, 7)
    assert_close(run_nopt("ScheduleFreeAdamW", options, dtype, 7), expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", [
    dict(), dict(weight_decay=0.01, use_bias_correction=True),
    dict(weight_decay=0.01, decouple=False, safeguard_warmup=True, d_coef=0.5),
    dict(betas=(0.0, 0.99), growth_rate=1.05)])
def test_prodigy_matches_prodigyopt(options, dtype):
    prodigyopt = pytest.importorskip("prodigyopt")
    expected = run_torch(lambda ps: prodigyopt.Prodigy(ps, **options), dtype)
    assert_close(run_nopt("Prodigy", options, dtype), expected, dtype)


# ---------------------------------------------------------------- pytorch-optimizer
@pytest.mark.parametrize("dtype", DTYPES)
def test_adabelief_matches_pytorch_optimizer(dtype):
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    options = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-16, weight_decay=0.1)
    expected = run_torch(lambda ps: pytorch_optimizer.AdaBelief(
        ps, weight_decouple=True, rectify=False, **options), dtype)
    assert_close(run_nopt("AdaBelief", options, dtype), expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", [dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.05)])
def test_adan_matches_pytorch_optimizer(options, dtype):
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    expected = run_torch(lambda ps: pytorch_optimizer.Adan(ps, **options), dtype)
    assert_close(run_nopt("Adan", options, dtype), expected, dtype)


# ---------------------------------------------------------------- optax
@pytest.mark.parametrize("dtype", DTYPES)
def test_lion_matches_optax(dtype, jax_x64):
    import optax

    tx = optax.lion(3e-3, b1=0.8, b2=0.95, weight_decay=0.5)
    assert_close(run_nopt("Lion", dict(lr=3e-3, betas=(0.8, 0.95), weight_decay=0.5), dtype),
                 run_optax(tx, dtype, jax_x64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adabelief_matches_optax(dtype, jax_x64):
    import optax

    # optax's eps_root is the paper's epsilon inside s_t; its default (1e-16, eps 1e-16) is the paper's
    # single epsilon when both are equal.
    tx = optax.adabelief(1e-2, b1=0.9, b2=0.99, eps=1e-8, eps_root=1e-8)
    assert_close(run_nopt("AdaBelief", dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8), dtype),
                 run_optax(tx, dtype, jax_x64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adan_matches_optax_where_they_agree(dtype, jax_x64):
    import optax

    # optax weighs the gradient difference by 1 - b2 where the paper uses b2: equal at b2 = 0.5.
    tx = optax.adan(1e-2, b1=0.9, b2=0.5, b3=0.95, eps=1e-8, eps_root=0.0, weight_decay=0.05)
    options = dict(lr=1e-2, betas=(0.9, 0.5, 0.95), eps=1e-8, weight_decay=0.05, no_prox=True)
    assert_close(run_nopt("Adan", options, dtype), run_optax(tx, dtype, jax_x64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_lamb_matches_optax(weight_decay, dtype, jax_x64):
    import optax

    tx = optax.lamb(1e-2, b1=0.8, b2=0.99, eps=1e-6, weight_decay=weight_decay)
    options = dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay)
    assert_close(run_nopt("LAMB", options, dtype), run_optax(tx, dtype, jax_x64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_matches_optax_without_weight_decay(nesterov, dtype, jax_x64):
    import optax

    # With weight decay optax divides by |g + wd*p|, the paper by |g| + wd*|p| (see LARS's notes).
    tx = optax.lars(0.5, trust_coefficient=1e-2, momentum=0.8, nesterov=nesterov)
    options = dict(lr=0.5, trust_coefficient=1e-2, momentum=0.8, nesterov=nesterov)
    assert_close(run_nopt("LARS", options, dtype), run_optax(tx, dtype, jax_x64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_schedule_free_adamw_matches_optax(dtype, jax_x64):
    import optax
    from optax import contrib

    # optax's warmup starts at lr 0 (the package's at lr/warmup_steps): compared without one.
    tx = contrib.schedule_free_adamw(1e-2, b1=0.9, b2=0.99, weight_decay=0.01)
    expected = run_optax(tx, dtype, jax_x64,
                         eval_fn=lambda ps, state: contrib.schedule_free_eval_params(state, ps))
    options = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.01)
    assert_close(run_nopt("ScheduleFreeAdamW", options, dtype), expected, dtype)
    del optax


# ---------------------------------------------------------------- generic behaviour
NAMES = sorted({name for name, _ in CASES})
OPTIONS = {name: options for name, options in reversed(CASES)}   # each rule's first option set


def _big_problem(dtype, sizes=(70_000, 40_000, 0, 5), seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(dtype) for n in sizes]


def _steps(opt, params, n, seed=2):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        for p in params:
            p.grad = (p * p.dtype.type(0.5) + rng.standard_normal(p.shape).astype(p.dtype))
        opt.step()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_thread_count_gives_the_same_bits(name, dtype):
    results = []
    for threads in (1, 2):
        params = [nopt.Parameter(x) for x in _big_problem(dtype)]
        opt = getattr(nopt, name)(params, **OPTIONS[name])
        with nopt.num_threads(threads):
            _steps(opt, params, 3)
        results.append([np.asarray(p).copy() for p in params])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["LAMB", "LARS", "Prodigy", "Lion"])
def test_flat_storage_keeps_per_parameter_norms(name):
    # A ParameterBuffer's arrays are adjacent in memory (one merged table row);
    # LAMB's and LARS's trust ratios must still be per parameter.
    arrays = _big_problem(np.float64, sizes=(3000, 50, 70_000))
    separate = [nopt.Parameter(x.copy()) for x in arrays]
    flat = nopt.ParameterBuffer.from_arrays([x.copy() for x in arrays])
    for params in (separate, flat):
        _steps(getattr(nopt, name)(list(params), **OPTIONS[name]), list(params), 5)
    for a, b in zip(separate, flat):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_resume_is_bitwise(name, tmp_path):
    arrays = _big_problem(np.float32, sizes=(300, 7))
    full = [nopt.Parameter(x.copy()) for x in arrays]
    opt = getattr(nopt, name)(full, **OPTIONS[name])
    _steps(opt, full, 10, seed=3)
    _steps(opt, full, 10, seed=4)

    part = [nopt.Parameter(x.copy()) for x in arrays]
    opt = getattr(nopt, name)(part, **OPTIONS[name])
    _steps(opt, part, 10, seed=3)
    nopt.save({"opt": opt.state_dict(), "params": [np.asarray(p) for p in part]},
              tmp_path / "ckpt.nopt")
    checkpoint = nopt.load(tmp_path / "ckpt.nopt")
    resumed = [nopt.Parameter(x) for x in checkpoint["params"]]
    opt = getattr(nopt, name)(resumed, **OPTIONS[name])
    opt.load_state_dict(checkpoint["opt"])
    _steps(opt, resumed, 10, seed=4)
    for a, b in zip(full, resumed):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name", NAMES)
def test_bad_gradient_changes_nothing(name):
    params = [nopt.Parameter(x) for x in _big_problem(np.float64, sizes=(20, 30))]
    opt = getattr(nopt, name)(params, **OPTIONS[name])
    _steps(opt, params, 2)
    before = [np.asarray(p).copy() for p in params]
    state = {k: {key: (v.copy() if isinstance(v, np.ndarray) else v) for key, v in s.items()}
             for k, s in opt.state_dict()["state"].items()}
    groups = [dict(g) for g in opt.state_dict()["param_groups"]]
    params[0].grad = np.ones(20)
    params[1].grad = np.ones(60)[::2]          # not contiguous: refused before any change
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[1\]"):
        opt.step()
    for p, b in zip(params, before):
        np.testing.assert_array_equal(np.asarray(p), b)
    after = opt.state_dict()
    assert [dict(g) for g in after["param_groups"]] == groups
    for k, s in state.items():
        for key, v in s.items():
            np.testing.assert_array_equal(after["state"][k][key], v)


INVALID = [
    ("Lion", dict(lr=-1.0), ValueError, "Invalid learning rate"),
    ("Lion", dict(betas=(0.9, 1.5)), ValueError, "Invalid beta parameter at index 1"),
    ("Lion", dict(weight_decay=-0.1), ValueError, "Invalid weight_decay value"),
    ("Lion", dict(betas=0.9), TypeError, "betas must be a tuple of 2"),
    ("AdaBelief", dict(eps=-1e-8), ValueError, "Invalid epsilon value"),
    ("AdaBelief", dict(betas=(1.0, 0.9)), ValueError, "Invalid beta parameter at index 0"),
    ("Adan", dict(betas=(0.9, 0.9)), ValueError, "betas must be a tuple of 3"),
    ("Adan", dict(lr="1e-3"), TypeError, "lr must be a real number"),
    ("LAMB", dict(weight_decay=float("nan")), ValueError, "Invalid weight_decay value"),
    ("LARS", dict(momentum=1.0), ValueError, "Invalid momentum value"),
    ("LARS", dict(trust_coefficient=-1), ValueError, "Invalid trust_coefficient value"),
    ("ScheduleFreeSGD", dict(momentum=0.0), ValueError, "Momentum must be between 0 and 1"),
    ("ScheduleFreeAdamW", dict(warmup_steps=-1), ValueError, "Invalid warmup_steps value"),
    ("ScheduleFreeAdamW", dict(betas=(0.0, 0.9)), ValueError, "Invalid beta parameter at index 0"),
    ("Prodigy", dict(d0=0.0), ValueError, "Invalid d0 value"),
    ("Prodigy", dict(lr=0.0), ValueError, "Invalid learning rate"),
    ("Prodigy", dict(growth_rate=0.5), ValueError, "Invalid growth_rate value"),
]


@pytest.mark.parametrize("name, options, error, message", INVALID)
def test_invalid_hyperparameters(name, options, error, message):
    with pytest.raises(error, match=message):
        getattr(nopt, name)([nopt.Parameter(np.zeros(3))], **options)


def test_schedule_free_refuses_to_step_in_eval_mode():
    p = nopt.Parameter(np.ones(3))
    opt = nopt.ScheduleFreeAdamW([p])
    p.grad = np.ones(3)
    opt.step()
    opt.eval()
    opt.eval()                               # a no-op
    x = np.asarray(p).copy()
    with pytest.raises(RuntimeError, match="call optimizer.train"):
        opt.step()
    np.testing.assert_array_equal(np.asarray(p), x)
    opt.train()
    opt.step()
    assert opt.param_groups[0]["k"] == 2


def test_prodigy_groups_may_only_differ_by_lr_zero():
    a, b = nopt.Parameter(np.ones(3)), nopt.Parameter(np.ones(3))
    opt = nopt.Prodigy([{"params": [a]}, {"params": [b], "lr": 0.5}])
    a.grad = b.grad = np.ones(3)
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['lr'\]"):
        opt.step()
    assert not opt.state
    frozen = nopt.Prodigy([{"params": [a]}, {"params": [b], "lr": 0.0}])
    for _ in range(3):
        frozen.step()
    np.testing.assert_array_equal(np.asarray(b), np.ones(3))
    assert not np.array_equal(np.asarray(a), np.ones(3))


@pytest.mark.parametrize("scale", [1.0, 1e-12, 1e-25, 1e20, 1e30])
@pytest.mark.parametrize("dtype", DTYPES)
def test_lars_norms_hold_at_any_scale(scale, dtype):
    """LARS's norm pass (float32: squares summed in float per block, the block
    sums in double; blocks out of float's safe range summed again in double):
    the trust ratio matches float64 norms, whatever the magnitude (squares
    that would underflow, flush to zero or overflow in float), on 1 and 2 threads."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(100_003) * scale).astype(dtype)
    g = (rng.standard_normal(100_003) * scale * 1e-2).astype(dtype)
    # One block of the parameter far smaller than the rest: its squares vanish in float.
    x[5000:9000] *= dtype(1e-30) if scale < 1e20 else dtype(1)
    results = []
    for threads in (1, 2):
        p = nopt.Parameter(x.copy())
        p.grad = g.copy()
        opt = nopt.LARS([p], lr=1.0, momentum=0.0, trust_coefficient=1e-3)
        with nopt.num_threads(threads):
            opt.step()
        results.append(np.asarray(p).copy())
    np.testing.assert_array_equal(results[0], results[1])
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    trust = 1e-3 * np.linalg.norm(x64) / np.linalg.norm(g64)
    expected = x64 - trust * g64
    step = (x64 - results[0].astype(np.float64))
    # The step is trust * g: its size gives nopt's trust ratio.
    measured = np.dot(step, g64) / np.dot(g64, g64)
    assert measured == pytest.approx(trust, rel=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(results[0], expected, rtol=1e-5 if dtype == np.float32 else 1e-12)
