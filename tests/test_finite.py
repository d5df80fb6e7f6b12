import numpy as np
import pytest

import nopt


def _params(dtype=np.float64):
    return [nopt.Parameter(np.ones(s, dtype=dtype)) for s in [(100_000,), (3, 4), (0,)]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_grads_are_finite_finds_any_bad_element(dtype, bad):
    params = _params(dtype)
    opt = nopt.SGD(params, lr=0.1)
    for p in params:
        p.grad = np.zeros(p.shape, dtype=dtype)
    assert nopt.grads_are_finite(opt)
    for index in (0, 54_321, 99_999):
        params[0].grad[index] = bad
        for n in (1, 2, 3):
            with nopt.num_threads(n):
                assert not nopt.grads_are_finite(opt)
        params[0].grad[index] = 0
    params[1].grad[2, 3] = bad
    assert not nopt.grads_are_finite(opt)


def test_default_policy_propagates_non_finite_like_torch():
    p = nopt.Parameter(np.ones(3))
    opt = nopt.SGD([p], lr=0.1)
    p.grad = np.array([np.nan, np.inf, 1.0])
    opt.step()
    assert np.isnan(p[0]) and np.isinf(p[1]) and p[2] == 0.9


def test_apply_if_finite_skips_and_counts():
    params = _params()
    inner = nopt.SGD(params, lr=0.1, momentum=0.9)
    opt = nopt.ApplyIfFinite(inner, max_consecutive_skips=2)
    for p in params:
        p.grad = np.ones(p.shape)
    opt.step()
    assert opt.last_step_applied and opt.skipped_steps == 0
    snapshot = [p.copy() for p in params]
    buffers = [inner.state[p]["momentum_buffer"].copy() for p in params]
    params[1].grad[0, 0] = np.nan
    for expected in (1, 2):
        opt.step()
        assert not opt.last_step_applied and opt.skipped_steps == expected
    for p, s, b in zip(params, snapshot, buffers):
        assert p.tobytes() == s.tobytes()
        assert inner.state[p]["momentum_buffer"].tobytes() == b.tobytes()
    with pytest.raises(FloatingPointError, match="3 consecutive"):
        opt.step()
    params[1].grad[0, 0] = 1.0
    opt.step()
    assert opt.last_step_applied and opt.consecutive_skips == 0 and opt.skipped_steps == 3
    sd = opt.state_dict()
    other = nopt.ApplyIfFinite(nopt.SGD(params, lr=0.1, momentum=0.9))
    other.load_state_dict(sd)
    assert other.skipped_steps == 3


def test_apply_if_finite_returns_closure_loss_and_validates():
    p = nopt.Parameter(np.ones(2))
    opt = nopt.ApplyIfFinite(nopt.SGD([p], lr=0.1))

    def closure():
        p.grad = np.array([1.0, np.inf])
        return 2.0

    assert opt.step(closure) == 2.0 and opt.skipped_steps == 1
    p._grad = np.ones(3)
    with pytest.raises(ValueError, match="shape"):
        opt.step()
    with pytest.raises(ValueError):
        nopt.ApplyIfFinite(opt.optimizer, max_consecutive_skips=-1)
