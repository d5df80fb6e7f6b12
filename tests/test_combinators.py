"""MultiSteps and Lookahead: their rules, optax as oracle, checkpoints, and composition
with each other, with ApplyIfFinite and with schedulers."""
import numpy as np
import pytest

import nopt
from nopt.lr_scheduler import StepLR

SHAPES = [(6, 4), (9,)]


def _params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return [nopt.Parameter(rng.standard_normal(s).astype(dtype)) for s in SHAPES]


def _grads(n, dtype=np.float64, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(n)]


# ---------------------------------------------------------------- MultiSteps
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_multisteps_steps_every_k_with_the_mean(dtype):
    grads = _grads(12, dtype)
    params = _params(dtype)
    opt = nopt.MultiSteps(nopt.Adam(params, lr=0.1), every_k=3)
    expected = _params(dtype)
    ref = nopt.Adam(expected, lr=0.1)
    for t, gs in enumerate(grads):
        for p, g in zip(params, gs):
            p.grad = g.copy()
        opt.step()
        assert opt.last_step_applied == (t % 3 == 2)
        np.testing.assert_array_equal(params[0].grad, gs[0])     # the caller's grads are kept
        if t % 3 == 2:
            for k, p in enumerate(expected):
                cycle = [grads[t - i][k] for i in (2, 1, 0)]
                p.grad = ((cycle[0] + cycle[1]) + cycle[2]) * dtype(1 / 3)
            ref.step()
        for a, b in zip(params, expected):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert opt.optimizer.state[params[0]]["step"] == 4


def test_multisteps_parameters_without_gradients():
    a, b = _params()
    inner = nopt.SGD([a, b], lr=1.0)
    opt = nopt.MultiSteps(inner, every_k=2)
    a0, b0 = np.asarray(a).copy(), np.asarray(b).copy()
    ga, gb = np.full(a.shape, 2.0), np.full(b.shape, 4.0)
    a.grad, b.grad = ga, gb
    opt.step()                  # b has a gradient only in the first call
    b.grad = None
    opt.step()
    np.testing.assert_array_equal(np.asarray(a), a0 - 2.0)
    np.testing.assert_array_equal(np.asarray(b), b0 - 2.0)
    a.grad = None
    b.grad = None
    opt.step()
    opt.step()                  # no gradient at all in a cycle: the step is a no-op
    np.testing.assert_array_equal(np.asarray(b), b0 - 2.0)


def test_multisteps_matches_optax():
    # In float32: optax 0.2.8 keeps MultiSteps' accumulated mean in float32 even for float64
    # parameters (its acc_grads state is float32), so float64 runs differ by ~1e-7.
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    grads = _grads(30, np.float32)
    params = _params(np.float32)
    opt = nopt.MultiSteps(nopt.SGD(params, lr=0.1, momentum=0.9), every_k=4)
    tx = optax.MultiSteps(optax.sgd(0.1, momentum=0.9), every_k_schedule=4)
    jparams = [jnp.asarray(np.asarray(p)) for p in params]
    state = tx.init(jparams)
    update = jax.jit(tx.update)  # compiled once: eagerly, each update re-traced (~0.3 s)
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g
        opt.step()
        updates, state = update([jnp.asarray(g) for g in gs], state, jparams)
        jparams = optax.apply_updates(jparams, updates)
    for p, j in zip(params, jparams):
        assert np.asarray(j).dtype == np.float32
        np.testing.assert_allclose(np.asarray(p), np.asarray(j), rtol=1e-5, atol=1e-6)


def test_multisteps_checkpoint_mid_cycle(tmp_path):
    grads = _grads(10)
    full = _params()
    opt = nopt.MultiSteps(nopt.Adam(full, lr=0.1), every_k=3)
    part = _params()
    opt2 = nopt.MultiSteps(nopt.Adam(part, lr=0.1), every_k=3)
    for t, gs in enumerate(grads):
        for p, g in zip(full, gs):
            p.grad = g
        opt.step()
        if t < 4:
            for p, g in zip(part, gs):
                p.grad = g
            opt2.step()
    nopt.save({"opt": opt2.state_dict(), "params": [np.asarray(p) for p in part]},
              tmp_path / "ms.nopt")
    checkpoint = nopt.load(tmp_path / "ms.nopt")
    resumed = [nopt.Parameter(x) for x in checkpoint["params"]]
    opt3 = nopt.MultiSteps(nopt.Adam(resumed, lr=0.1), every_k=3)
    opt3.load_state_dict(checkpoint["opt"])
    assert opt3.mini_step == 1
    for gs in grads[4:]:
        for p, g in zip(resumed, gs):
            p.grad = g
        opt3.step()
    for a, b in zip(full, resumed):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_multisteps_validation():
    params = _params()
    with pytest.raises(ValueError, match="every_k must be >= 1"):
        nopt.MultiSteps(nopt.SGD(params), 0)
    with pytest.raises(TypeError, match="every_k must be an int"):
        nopt.MultiSteps(nopt.SGD(params), 2.0)
    with pytest.raises(TypeError, match="expected a nopt optimizer"):
        nopt.MultiSteps(object(), 2)
    opt = nopt.MultiSteps(nopt.SGD(params), 2)
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="mini_step must be below every_k"):
        opt.load_state_dict({**sd, "mini_step": 2})


# ---------------------------------------------------------------- Lookahead
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lookahead_rule(dtype):
    grads = _grads(23, dtype)
    params = _params(dtype)
    opt = nopt.Lookahead(nopt.SGD(params, lr=0.1, momentum=0.5), k=5, alpha=0.3)
    fast = _params(dtype)
    inner = nopt.SGD(fast, lr=0.1, momentum=0.5)
    slow = [np.asarray(p).copy() for p in fast]
    for t, gs in enumerate(grads):
        for p, q, g in zip(params, fast, gs):
            p.grad = g
            q.grad = g
        opt.step()
        inner.step()
        if t % 5 == 4:
            for p, s in zip(fast, slow):
                s += dtype(0.3) * (np.asarray(p) - s)
                p[...] = s
        for a, b in zip(params, fast):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for p, s in zip(params, slow):
        np.testing.assert_array_equal(opt.slow_weights()[p], s)


def test_lookahead_matches_optax():
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    grads = _grads(40)
    params = _params()
    opt = nopt.Lookahead(nopt.SGD(params, lr=0.1, momentum=0.9), k=4, alpha=0.5)
    tx = optax.lookahead(optax.sgd(0.1, momentum=0.9), sync_period=4, slow_step_size=0.5,
                         reset_state=False)
    start = [jnp.asarray(np.asarray(p)) for p in params]
    jparams = optax.LookaheadParams(fast=start, slow=start)
    state = tx.init(jparams)
    update = jax.jit(tx.update)  # compiled once: eagerly, each update re-traced (~0.3 s)
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g
        opt.step()
        updates, state = update([jnp.asarray(g) for g in gs], state, jparams)
        jparams = optax.apply_updates(jparams, updates)
    for p, j in zip(params, jparams.fast):
        np.testing.assert_allclose(np.asarray(p), np.asarray(j), rtol=1e-12, atol=1e-13)
    for p, j in zip(params, jparams.slow):
        np.testing.assert_allclose(opt.slow_weights()[p], np.asarray(j), rtol=1e-12, atol=1e-13)


def test_lookahead_checkpoint_and_validation(tmp_path):
    grads = _grads(13)
    full = _params()
    opt = nopt.Lookahead(nopt.Adam(full, lr=0.1), k=3)
    part = _params()
    opt2 = nopt.Lookahead(nopt.Adam(part, lr=0.1), k=3)
    for t, gs in enumerate(grads):
        for p, g in zip(full, gs):
            p.grad = g
        opt.step()
        if t < 7:
            for p, g in zip(part, gs):
                p.grad = g
            opt2.step()
    nopt.save({"opt": opt2.state_dict(), "params": [np.asarray(p) for p in part]},
              tmp_path / "la.nopt")
    checkpoint = nopt.load(tmp_path / "la.nopt")
    resumed = [nopt.Parameter(x) for x in checkpoint["params"]]
    opt3 = nopt.Lookahead(nopt.Adam(resumed, lr=0.1), k=3)
    opt3.load_state_dict(checkpoint["opt"])
    for gs in grads[7:]:
        for p, g in zip(resumed, gs):
            p.grad = g
        opt3.step()
    for a, b in zip(full, resumed):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    with pytest.raises(ValueError, match="Invalid alpha value"):
        nopt.Lookahead(nopt.SGD(full), alpha=1.5)
    with pytest.raises(ValueError, match="k must be >= 1"):
        nopt.Lookahead(nopt.SGD(full), k=0)
    bad = opt3.state_dict()
    bad["slow"] = {0: np.zeros(3)}
    before = [np.asarray(p).copy() for p in resumed]
    with pytest.raises(ValueError, match="loaded slow weights"):
        opt3.load_state_dict(bad)
    assert opt3.fast_steps == opt.fast_steps
    for p, b in zip(resumed, before):
        np.testing.assert_array_equal(np.asarray(p), b)


# ---------------------------------------------------------------- composition
def test_wrappers_compose_with_apply_if_finite_and_a_scheduler():
    grads = _grads(24)
    grads[5][0][0, 0] = np.nan          # a whole call is skipped by ApplyIfFinite
    params = _params()
    adam = nopt.Adam(params, lr=0.1)
    sched = StepLR(adam, step_size=2, gamma=0.5)
    opt = nopt.ApplyIfFinite(nopt.MultiSteps(nopt.Lookahead(adam, k=2, alpha=0.5), every_k=2))

    expected = _params()
    ref = nopt.Adam(expected, lr=0.1)
    ref_sched = StepLR(ref, step_size=2, gamma=0.5)
    slow = [np.asarray(p).copy() for p in expected]
    pending, fast_steps = [], 0
    for t, gs in enumerate(grads):
        for p, g in zip(params, gs):
            p.grad = g
        opt.step()
        if not opt.last_step_applied:
            assert t == 5
            continue
        pending.append(gs)
        if opt.optimizer.last_step_applied:
            sched.step()
            for k, p in enumerate(expected):
                p.grad = (pending[0][k] + pending[1][k]) * 0.5
            pending = []
            ref.step()
            ref_sched.step()
            fast_steps += 1
            if fast_steps == 2:
                fast_steps = 0
                for p, s in zip(expected, slow):
                    s += 0.5 * (np.asarray(p) - s)
                    p[...] = s
        for a, b in zip(params, expected):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert opt.skipped_steps == 1
    assert adam.param_groups[0]["lr"] == ref.param_groups[0]["lr"] < 0.1
    # The whole chain saves and loads.
    sd = opt.state_dict()
    opt.load_state_dict(sd)


def test_lookahead_does_not_count_skipped_steps():
    params = _params()
    opt = nopt.Lookahead(nopt.ApplyIfFinite(nopt.SGD(params, lr=0.1)), k=2)
    for p in params:
        p.grad = np.full(p.shape, np.inf)
    opt.step()
    assert opt.fast_steps == 0
    for p in params:
        p.grad = np.ones(p.shape)
    opt.step()
    assert opt.fast_steps == 1


def test_multisteps_with_skipping_inner_optimizer():
    # A non-finite gradient in a cycle makes the mean non-finite: the inner step is skipped.
    params = _params()
    x0 = [np.asarray(p).copy() for p in params]
    guarded = nopt.ApplyIfFinite(nopt.SGD(params, lr=0.1))
    opt = nopt.MultiSteps(guarded, every_k=2)
    params[0].grad = np.full(params[0].shape, np.nan)
    params[1].grad = np.ones(params[1].shape)
    opt.step()
    params[0].grad = np.ones(params[0].shape)
    opt.step()
    assert guarded.skipped_steps == 1
    for p, x in zip(params, x0):
        np.testing.assert_array_equal(np.asarray(p), x)
