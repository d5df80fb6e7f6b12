"""Generic tests over every elementwise optimizer in tests/optim_db: torch parity,
NumPy reference (nopt/_reference.py), thread-count independence, resume, and
hyperparameter validation (every record)."""
import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nopt
from harness import (
    TOL,
    assert_close,
    assert_same_snapshot,
    initial_arrays,
    make_nopt,
    run_nopt,
    run_reference,
    run_torch,
    snapshot,
    split_groups,
)
from optim_db import cases, records

DTYPES = [np.float64, np.float32]
DENSE = cases(sparse=False)
TORCH_DENSE = [c for c in DENSE if c[0].torch_oracle]


def _state_value(v):
    if hasattr(v, "detach"):
        return v.detach().numpy()
    return v


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("record,options", [c[:2] for c in TORCH_DENSE], ids=[c[2] for c in TORCH_DENSE])
def test_parity_with_torch(record, options, dtype):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    rtol = TOL[dtype]
    params, optimizer = run_nopt(record, options, dtype, record.steps)
    tparams, toptimizer = run_torch(record, options, dtype, record.steps)
    for i, (p, tp) in enumerate(zip(params, tparams)):
        assert_close(p, tp.detach().numpy(), rtol, f"param {i}")
    ours = optimizer.state_dict()["state"]
    theirs = toptimizer.state_dict()["state"]
    assert sorted(ours) == sorted(theirs)
    for pid, tstate in theirs.items():
        assert set(ours[pid]) == set(tstate), f"state keys of param {pid}"
        for key, tvalue in tstate.items():
            tvalue, value = _state_value(tvalue), ours[pid][key]
            if tvalue is None:
                assert value is None
            else:
                assert_close(value, tvalue, rtol, f"state[{pid}][{key!r}]")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("record,options", [c[:2] for c in DENSE], ids=[c[2] for c in DENSE])
def test_matches_numpy_reference(record, options, dtype):
    if record.reference is None:
        pytest.skip("no NumPy reference")
    steps = 30
    params, optimizer = run_nopt(record, options, dtype, steps)
    arrays, states = run_reference(record, options, dtype, steps)
    rtol = TOL[dtype]
    for i, (p, a) in enumerate(zip(params, arrays)):
        assert_close(p, a, rtol, f"param {i}")
        for key, value in states[i].items():
            if isinstance(value, np.ndarray):
                assert_close(optimizer.state[p][key], value, rtol, f"state[{i}][{key!r}]")


_dense_records = [r for r in records(elementwise=True, sparse_grad=False) if r.reference is not None]


@pytest.mark.skipif(not _dense_records, reason="no dense records")
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_random_shapes_match_reference(data):
    """Random shapes, dtypes, hyperparameters (an option set with a random lr)."""
    record = data.draw(st.sampled_from(_dense_records), label="record")
    options = dict(data.draw(st.sampled_from(record.option_sets), label="options"))
    if "lr" in options:
        options["lr"] = data.draw(st.floats(1e-4, 0.5), label="lr")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    shapes = data.draw(st.lists(
        st.lists(st.integers(0, 6), min_size=1, max_size=3).map(tuple), min_size=1, max_size=4,
    ), label="shapes")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(dtype) for s in shapes]
    params = [nopt.Parameter(a.copy()) for a in arrays]
    optimizer = record.cls(params, **options)
    hyper = dict(optimizer.param_groups[0])
    states = [dict() for _ in arrays]
    for _ in range(5):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.step()
        for a, g, s in zip(arrays, grads, states):
            record.reference(a, g, s, hyper)
    for i, (p, a) in enumerate(zip(params, arrays)):
        assert_close(p, a, TOL[dtype], f"param {i} of shape {a.shape}")


@pytest.mark.skipif(not _dense_records, reason="no dense records")
@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_random_thread_counts_give_identical_bits(data):
    """Random optimizer, options, dtype and sizes (some large enough to split): 1 thread vs 2 or 3."""
    record = data.draw(st.sampled_from(_dense_records), label="record")
    options = data.draw(st.sampled_from(record.option_sets), label="options")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    sizes = data.draw(st.lists(st.one_of(st.integers(0, 50), st.integers(65_536, 250_000)),
                               min_size=1, max_size=3), label="sizes")
    n_threads = data.draw(st.sampled_from([2, 3]), label="n_threads")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    results = []
    for n in (1, n_threads):
        rng = np.random.default_rng(seed)
        params = [nopt.Parameter(rng.standard_normal(k).astype(dtype)) for k in sizes]
        optimizer = record.cls(params, **options)
        with nopt.num_threads(n):
            for _ in range(3):
                for p in params:
                    p.grad = rng.standard_normal(p.shape).astype(dtype)
                optimizer.step()
        results.append([p.tobytes() for p in params])
    assert results[0] == results[1]


@functools.cache
def _threads_data():
    """Initial values and 4 steps' gradients for the thread test: drawn once,
    the same for every optimizer (drawing them took most of the test's time)."""
    rng = np.random.default_rng(3)
    shapes = [(300_001,), (5,), (70_000,)]
    initial = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(4)]
    for a in initial + [g for step in grads for g in step]:
        a.flags.writeable = False
    return initial, grads


@pytest.mark.parametrize("record,options", [c[:2] for c in DENSE], ids=[c[2] for c in DENSE])
def test_threads_give_identical_bits(record, options):
    """1, 2 and 3 threads give bitwise identical results on arrays large enough to split."""
    initial, grads = _threads_data()
    results = []
    for n in (1, 2, 3):
        params = [nopt.Parameter(a.copy()) for a in initial]
        optimizer = record.cls(params, **options)
        with nopt.num_threads(n):
            for step in grads:
                for p, g in zip(params, step):
                    p.grad = g.copy()
                optimizer.step()
        results.append([p.tobytes() for p in params])
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize("record,options", [c[:2] for c in DENSE], ids=[c[2] for c in DENSE])
def test_resume_from_checkpoint_is_bitwise_identical(record, options, tmp_path):
    dtype = np.float64
    params, optimizer = run_nopt(record, options, dtype, 12)
    nopt.save({"optimizer": optimizer.state_dict(), "params": [np.array(p) for p in params]},
              tmp_path / "ckpt.nopt")
    run_nopt(record, options, dtype, 12, start=12, params=params, optimizer=optimizer)

    saved = nopt.load(tmp_path / "ckpt.nopt")
    params2 = [nopt.Parameter(a) for a in saved["params"]]
    optimizer2 = record.cls(split_groups(params2, options), **options)
    optimizer2.load_state_dict(saved["optimizer"])
    run_nopt(record, options, dtype, 12, start=12, params=params2, optimizer=optimizer2)
    assert_same_snapshot(snapshot(params, optimizer), snapshot(params2, optimizer2))


_invalid = [(r, kw, exc, msg) for r in records() for kw, exc, msg in r.invalid]


@pytest.mark.parametrize("record,kwargs,exc,match", _invalid,
                         ids=[f"{c[0].name}-{c[1]}" for c in _invalid])
def test_invalid_hyperparameters(record, kwargs, exc, match):
    p = nopt.Parameter(np.zeros(3))
    with pytest.raises(exc, match=match):
        record.make([p], **kwargs)
    if not record.torch_oracle:
        return
    torch = pytest.importorskip("torch")
    with pytest.raises(exc):
        record.torch_cls([torch.zeros(3, requires_grad=True)], **kwargs)


@pytest.mark.parametrize("record,options", [c[:2] for c in DENSE], ids=[c[2] for c in DENSE])
def test_bad_gradient_changes_nothing(record, options):
    params, optimizer = run_nopt(record, options, np.float64, 3)
    before = snapshot(params, optimizer)
    for p in params:
        p.grad = np.ones_like(p)
    params[-1]._grad = np.ones(params[-1].size + 1)  # bypass the setter's check
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['params'\]\[1\].*shape"):
        optimizer.step()
    assert_same_snapshot(before, snapshot(params, optimizer))


def _bad_grad_shape(params):
    params[-1]._grad = np.ones(params[-1].size + 1)
    return ValueError, r"param_groups\[1\]\['params'\]\[1\].*shape \(13,\); expected \(3, 2, 2\)"


def _int_grad(params):
    params[-1]._grad = np.ones(params[-1].shape, dtype=np.int64)
    return TypeError, r"param_groups\[1\]\['params'\]\[1\].*dtype int64; expected float64"


def _float32_grad(params):
    params[0]._grad = np.ones(params[0].shape, dtype=np.float32)
    return TypeError, r"param_groups\[0\]\['params'\]\[0\].*dtype float32; expected float64"


def _object_grad(params):
    params[1]._grad = np.array([1.0] * params[1].size, dtype=object).reshape(params[1].shape)
    return TypeError, r"param_groups\[0\]\['params'\]\[1\].*dtype object"


def _scalar_grad(params):
    params[2]._grad = 1.0
    return TypeError, r"param_groups\[1\]\['params'\]\[0\].*got float"


def _aliasing_grad(params):
    params[2]._grad = params[2].view(np.ndarray)
    return ValueError, r"param_groups\[1\]\['params'\]\[0\].*shares memory"


def _non_contiguous_grad(params):
    params[2]._grad = np.asfortranarray(np.ones(params[2].shape))
    return ValueError, r"param_groups\[1\]\['params'\]\[0\].*C-contiguous"


def _read_only_param(params):
    params[1].flags.writeable = False
    return ValueError, r"param_groups\[0\]\['params'\]\[1\].*read-only"


BAD_INPUTS = [_bad_grad_shape, _int_grad, _float32_grad, _object_grad, _scalar_grad,
              _aliasing_grad, _non_contiguous_grad, _read_only_param]
_REPRESENTATIVE = [(r, r.option_sets[-1]) for r in records(elementwise=True, sparse_grad=False)]


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[f.__name__[1:] for f in BAD_INPUTS])
@pytest.mark.parametrize("record,options", _REPRESENTATIVE, ids=[r.name for r, _ in _REPRESENTATIVE])
def test_bad_input_names_the_parameter_and_changes_nothing(record, options, bad):
    params, optimizer = run_nopt(record, options, np.float64, 3)
    for p in params:
        p.grad = np.ones_like(p)
    before = snapshot(params, optimizer)
    exc, match = bad(params)
    with pytest.raises(exc, match=match):
        optimizer.step()
    for p in params:
        p.flags.writeable = True
    assert_same_snapshot(before, snapshot(params, optimizer))


@pytest.mark.parametrize("record,options", _REPRESENTATIVE, ids=[r.name for r, _ in _REPRESENTATIVE])
def test_non_contiguous_parameter_is_rejected_before_any_change(record, options):
    base = nopt.Parameter(np.ones((4, 3)))
    transposed = base.T  # a Parameter view that is not C-contiguous
    ok = nopt.Parameter(np.ones(5))
    optimizer = record.cls([ok, transposed], **options)
    ok.grad = np.ones(5)
    transposed._grad = np.ones((3, 4))
    before = snapshot([ok, transposed], optimizer)
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[1\].*C-contiguous"):
        optimizer.step()
    assert_same_snapshot(before, snapshot([ok, transposed], optimizer))


@pytest.mark.parametrize("record,options", _REPRESENTATIVE, ids=[r.name for r, _ in _REPRESENTATIVE])
def test_zero_size_parameters_are_a_no_op(record, options):
    empty = nopt.Parameter(np.zeros((0, 3)))
    other = nopt.Parameter(np.ones(4))
    optimizer = record.cls([empty, other], **options)
    empty.grad = np.zeros((0, 3))
    other.grad = np.ones(4)
    for _ in range(3):
        optimizer.step()
    assert empty.shape == (0, 3)
    reference = nopt.Parameter(np.ones(4))
    solo = record.cls([reference], **options)
    reference.grad = np.ones(4)
    for _ in range(3):
        solo.step()
    assert other.tobytes() == reference.tobytes()
