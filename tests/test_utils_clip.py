"""nopt.utils gradient clipping against torch.nn.utils and a NumPy reference."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nopt
from harness import TOL, assert_close
from nopt.utils import (
    clip_grad_norm,
    clip_grad_norm_,
    clip_grad_value_,
    clip_grads_with_norm_,
    get_total_norm,
)

torch = pytest.importorskip("torch")

DTYPES = [np.float64, np.float32]
DTYPE_IDS = ["f64", "f32"]
SHAPES = [(3, 4), (7,), (2, 3, 2), (1,), (0,), (5, 1)]
NONEMPTY = [s for s in SHAPES if 0 not in s]  # torch: no inf/negative norm of an empty array
NORMS = [1.0, 2.0, 3.0, math.inf]


def _make(dtype, seed=0, shapes=SHAPES, none=(1,), scale=1.0):
    """nopt and torch parameters with equal gradients; ``none``: indices without a grad."""
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [(rng.standard_normal(s) * scale).astype(dtype) for s in shapes]
    params, tparams = [], []
    for i, (v, g) in enumerate(zip(values, grads)):
        p = nopt.Parameter(v.copy())
        tp = torch.tensor(v.copy(), requires_grad=True)
        if i not in none:
            p.grad = g.copy()
            tp.grad = torch.tensor(g.copy())
        params.append(p)
        tparams.append(tp)
    return params, tparams


def _assert_grads(params, tparams, rtol):
    for i, (p, tp) in enumerate(zip(params, tparams)):
        if tp.grad is None:
            assert p.grad is None
        else:
            assert_close(p.grad, tp.grad.numpy(), rtol, f"grad {i}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("norm_type", NORMS + [0.0, 0.5, -math.inf], ids=str)
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(dtype, norm_type, max_norm):
    shapes = SHAPES if 0 < norm_type < math.inf else NONEMPTY
    params, tparams = _make(dtype, shapes=shapes)
    before = [None if p.grad is None else p.grad.copy() for p in params]
    total = clip_grad_norm_(params, max_norm, norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type)
    assert isinstance(total, np.float64)
    assert_close(total, ttotal.item(), TOL[dtype], "total norm")
    _assert_grads(params, tparams, TOL[dtype])
    if max_norm == 1e6:  # coefficient clamped to 1: gradients untouched
        for p, b in zip(params, before):
            assert (p.grad is None) == (b is None)
            if b is not None:
                assert p.grad.tobytes() == b.tobytes()


@pytest.mark.parametrize("norm_type", NORMS, ids=str)
def test_mixed_dtypes_match_torch(norm_type):
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal(s).astype(d) for s, d in
              [((4, 3), np.float32), ((6,), np.float64), ((2, 2), np.float32)]]
    params = [nopt.Parameter(a.copy()) for a in arrays]
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    for p, tp in zip(params, tparams):
        g = rng.standard_normal(p.shape).astype(p.dtype)
        p.grad = g.copy()
        tp.grad = torch.tensor(g)
    total = clip_grad_norm_(params, 0.3, norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, 0.3, norm_type)
    assert ttotal.dtype == torch.float64
    # torch's norms of the float32 grads are float32 numbers, so its total (and
    # its coefficient, also for the float64 grads) is only float32-accurate.
    assert_close(total, ttotal.item(), TOL[np.float32], "total norm")
    for i, (p, tp) in enumerate(zip(params, tparams)):
        assert_close(p.grad, tp.grad.numpy(), TOL[np.float32], f"grad {i}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("norm_type", NORMS, ids=str)
def test_get_total_norm_and_clip_grads_with_norm_match_torch(dtype, norm_type):
    params, tparams = _make(dtype, seed=2, none=(), shapes=NONEMPTY)
    total = get_total_norm([p.grad for p in params], norm_type)
    ttotal = torch.nn.utils.get_total_norm([p.grad for p in tparams], norm_type)
    assert_close(total, ttotal.item(), TOL[dtype], "total norm")
    clip_grads_with_norm_(params, 0.25, total)
    torch.nn.utils.clip_grads_with_norm_(tparams, 0.25, ttotal)
    _assert_grads(params, tparams, TOL[dtype])
    if dtype == np.float32:
        assert float(np.float32(total)) == total  # torch's result is a float32 number


def test_float32_norm_is_accumulated_in_double():
    g = np.full(1_000_003, 0.1, dtype=np.float32)
    exact = math.sqrt(g.size * float(np.float32(0.1)) ** 2)
    assert get_total_norm([g]) == float(np.float32(exact))
    assert get_total_norm([g], 1) == float(np.float32(g.size * float(np.float32(0.1))))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("clip_value", [0.5, 0.0, -0.7, 1e9, math.nan, math.inf])
def test_clip_grad_value_matches_torch_bitwise(dtype, clip_value):
    params, tparams = _make(dtype, seed=3)
    for p, tp in ((params[0], tparams[0]), (params[2], tparams[2])):
        p.grad.flat[[0, 3]] = [np.nan, -np.inf]
        tp.grad.view(-1)[[0, 3]] = torch.tensor([math.nan, -math.inf], dtype=tp.grad.dtype)
    clip_grad_value_(params, clip_value)
    torch.nn.utils.clip_grad_value_(tparams, clip_value)
    for i, (p, tp) in enumerate(zip(params, tparams)):
        if tp.grad is None:
            assert p.grad is None
        else:
            np.testing.assert_array_equal(p.grad, tp.grad.numpy(), err_msg=f"grad {i}")


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_error_if_nonfinite_raises_like_torch_and_changes_nothing(bad, norm_type):
    params, tparams = _make(np.float64, shapes=NONEMPTY)
    params[0].grad[0, 0] = bad
    tparams[0].grad[0, 0] = bad
    before = [None if p.grad is None else p.grad.copy() for p in params]
    with pytest.raises(RuntimeError) as ours:
        clip_grad_norm_(params, 1.0, norm_type, error_if_nonfinite=True)
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.utils.clip_grad_norm_(tparams, 1.0, norm_type, error_if_nonfinite=True)
    assert str(ours.value) == str(theirs.value)
    for p, b in zip(params, before):
        if b is not None:
            np.testing.assert_array_equal(p.grad, b)


def test_nonfinite_norm_without_error_scales_like_torch():
    params, tparams = _make(np.float64)
    params[2].grad.flat[1] = np.inf
    tparams[2].grad.view(-1)[1] = math.inf
    total = clip_grad_norm_(params, 1.0)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, 1.0)
    assert total == ttotal.item() == math.inf
    for p, tp in zip(params, tparams):
        if tp.grad is not None:
            np.testing.assert_array_equal(p.grad, tp.grad.numpy())


def test_single_parameter_duplicates_and_no_grads():
    p = nopt.Parameter(np.zeros(3))
    p.grad = np.ones(3)
    assert clip_grad_norm_(p, 1.0) == pytest.approx(math.sqrt(3))
    np.testing.assert_allclose(p.grad, 1 / (math.sqrt(3) + 1e-6))

    # A parameter listed twice counts twice and is scaled twice, as torch.
    tp = torch.ones(3, dtype=torch.float64, requires_grad=True)
    tp.grad = torch.ones(3, dtype=torch.float64)
    p.grad = np.ones(3)
    total = clip_grad_norm_([p, p], 1.0)
    ttotal = torch.nn.utils.clip_grad_norm_([tp, tp], 1.0)
    assert total == pytest.approx(ttotal.item(), rel=1e-12)
    np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-12)
    p.grad = np.full(3, 5.0)
    clip_grad_value_([p, p], 2.0)
    np.testing.assert_array_equal(p.grad, 2.0)

    q = nopt.Parameter(np.zeros(2))
    assert clip_grad_norm_([q], 1.0) == 0.0
    assert get_total_norm([]) == 0.0
    clip_grad_value_([q], 1.0)
    with pytest.warns(UserWarning, match="empty generator"):
        assert clip_grad_norm_((x for x in []), 1.0) == 0.0
    with pytest.warns(FutureWarning):
        clip_grad_norm([q], 1.0)


def test_non_contiguous_grads():
    rng = np.random.default_rng(7)
    base = rng.standard_normal((6, 8))
    p = nopt.Parameter(np.zeros((6, 4)))
    p.grad = base[:, ::2]
    q = nopt.Parameter(np.zeros(5))
    q.grad = rng.standard_normal(5)
    expected_total = math.sqrt(np.sum(base[:, ::2] ** 2) + np.sum(q.grad ** 2))
    expected = [g * (0.1 / (expected_total + 1e-6)) for g in (p.grad.copy(), q.grad.copy())]
    total = clip_grad_norm_([p, q], 0.1)
    assert total == pytest.approx(expected_total, rel=1e-12)
    np.testing.assert_allclose(p.grad, expected[0], rtol=1e-12)
    np.testing.assert_allclose(q.grad, expected[1], rtol=1e-12)
    np.testing.assert_allclose(base[:, ::2], expected[0], rtol=1e-12)  # changed in place


def test_bad_grads_raise_and_change_nothing():
    p = nopt.Parameter(np.zeros(3))
    p.grad = np.ones(3)
    r = nopt.Parameter(np.zeros(2))
    g = np.full(2, 7.0)
    g.flags.writeable = False
    r.grad = g
    with pytest.raises(ValueError, match=r"grads\[1\].*read-only"):
        clip_grad_norm_([p, r], 0.1)
    with pytest.raises(ValueError, match="read-only"):
        clip_grad_value_([p, r], 0.1)
    np.testing.assert_array_equal(p.grad, 1.0)
    with pytest.raises(TypeError, match=r"parameters\[1\].*without a .grad"):
        clip_grad_norm_([p, np.zeros(2)], 0.1)
    with pytest.raises(TypeError, match="float32 or float64"):
        get_total_norm([np.arange(3)])
    sp = pytest.importorskip("scipy.sparse")
    r._grad = sp.coo_array(np.ones((1, 2)))
    with pytest.raises(TypeError, match="scipy.sparse"):
        clip_grad_norm_([p, r], 0.1)
    np.testing.assert_array_equal(p.grad, 1.0)
    with pytest.raises(RuntimeError, match="identity"):
        get_total_norm([np.zeros(0), np.ones(2)], math.inf)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("norm_type", NORMS, ids=str)
def test_threads_give_identical_bits(dtype, norm_type):
    """~1M elements over several arrays: 1, 2 and 3 threads, bitwise identical."""
    shapes = [(700_001,), (5,), (300_000,), (3, 7)]
    results = []
    for n in (1, 2, 3):
        rng = np.random.default_rng(11)
        params = [nopt.Parameter(np.zeros(s, dtype)) for s in shapes]
        for p in params:
            p.grad = rng.standard_normal(p.shape).astype(dtype)
        with nopt.num_threads(n):
            total = clip_grad_norm_(params, 1.0, norm_type)
            clip_grad_value_(params, 1e-4)
        results.append((np.float64(total).tobytes(), [p.grad.tobytes() for p in params]))
    assert results[0] == results[1] == results[2]


def _reference_clip(grads, max_norm, norm_type):
    """NumPy reference: the norm of all elements as one float64 vector, then the scaling."""
    flat = np.concatenate([g.ravel().astype(np.float64) for g in grads]) if grads else np.zeros(0)
    if norm_type == math.inf:
        total = float(np.max(np.abs(flat))) if flat.size else 0.0
    else:
        total = float(np.sum(np.abs(flat) ** norm_type) ** (1.0 / norm_type))
    if all(g.dtype == np.float32 for g in grads):
        total = float(np.float32(total))
    coef = min(max_norm / (total + 1e-6), 1.0)
    return total, [g * g.dtype.type(coef) for g in grads]


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_random_inputs_match_numpy_reference(data):
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    norm_type = data.draw(st.sampled_from([1.0, 2.0, 3.0, 0.5, math.inf]), label="norm_type")
    shapes = data.draw(st.lists(
        st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple), min_size=0, max_size=5,
    ), label="shapes")
    max_norm = data.draw(st.floats(1e-3, 10.0), label="max_norm")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    rng = np.random.default_rng(seed)
    params = []
    for s in shapes:
        p = nopt.Parameter(np.zeros(s, dtype))
        if rng.random() < 0.8:
            p.grad = np.asarray(rng.standard_normal(s) * rng.choice([1e-3, 1.0, 1e3]), dtype=dtype)
        params.append(p)
    grads = [p.grad.copy() for p in params if p.grad is not None]
    total, expected = _reference_clip(grads, max_norm, norm_type)
    ours = clip_grad_norm_(params, max_norm, norm_type)
    rtol = TOL[dtype]
    assert_close(ours, total, rtol, "total norm")
    for i, (g, e) in enumerate(zip([p.grad for p in params if p.grad is not None], expected)):
        assert_close(g, e, rtol, f"grad {i}")


def test_foreach_and_norm_type_strings_are_accepted():
    params, tparams = _make(np.float64, seed=9, shapes=NONEMPTY)
    total = clip_grad_norm_(params, 0.5, "inf", foreach=True)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, 0.5, "inf", foreach=True)
    assert total == ttotal.item()
    _assert_grads(params, tparams, TOL[np.float64])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clip_grad_value_(params, 0.1, foreach=False)
