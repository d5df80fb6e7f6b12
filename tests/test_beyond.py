"""The rules beyond torch.optim against their oracles, and the combinators.

Each rule runs 100 steps on a few parameters (gradients from a quadratic
plus fixed noise, computed from each implementation's own parameters) in
float64 and float32 and is compared with:
- the NumPy transcription of its paper (nopt/_reference_beyond.py), always;
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
from nopt import _reference_beyond as reference

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


def run_reference(name, options, dtype, switch_every=0):
    x0, noise, curvature = _initial(dtype)
    params = [x.copy() for x in x0]
    grads = [np.zeros_like(x) for x in x0]
    rule = reference.make(name, params, grads, **options)
    for t in range(STEPS):
        for k, p in enumerate(params):
            grads[k][...] = _grad(p, k, t, noise, curvature)
        rule.step()
        if switch_every and t % switch_every == switch_every - 1:
            rule.eval()
            rule.train()
    if hasattr(rule, "eval"):
        rule.eval()
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
    for t in range(STEPS):
        grads = [jnp.asarray(_grad(np.asarray(p), k, t, noise, curvature)) for k, p in enumerate(params)]
        updates, state = transform.update(grads, state, params)
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
