"""Flat parameter storage (nopt.ParameterBuffer / nopt.flat_parameters)."""
import copy

import numpy as np
import pytest

import nopt
from nopt._kernels import _plan

SHAPES = [(3, 4), (5,), (2, 3, 2), (1,), (0,), (7,)]

# Elementwise optimizers whose step should be one merged loop over a flat model.
ELEMENTWISE = [
    ("SGD", dict(lr=0.01)),
    ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("Adamax", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01)),
    ("RAdam", dict(lr=0.01)),
    ("Adagrad", dict(lr=0.01)),
    ("Adadelta", dict(lr=0.5)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True)),
    ("Rprop", dict(lr=0.01)),
    ("ASGD", dict(lr=0.01)),
]


def _cls(name):
    try:
        return getattr(nopt, name)
    except (AttributeError, ImportError):
        pytest.skip(f"nopt.{name} does not exist yet")


def _values(dtype=np.float32, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


@pytest.fixture
def tables(monkeypatch):
    """Record the (ptrs, chunks) of every make_table call."""
    calls = []
    original = _plan.make_table

    def recording(streams):
        out = original(streams)
        calls.append(out)
        return out

    monkeypatch.setattr(_plan, "make_table", recording)
    return calls


def test_views_into_one_aligned_buffer():
    buf = nopt.ParameterBuffer(SHAPES)
    assert len(buf) == len(SHAPES) and buf.size == sum(int(np.prod(s)) for s in SHAPES)
    assert buf.data.ctypes.data % 64 == 0 and buf.grad.ctypes.data % 64 == 0
    offset = 0
    for p, s in zip(buf, SHAPES):
        assert isinstance(p, nopt.Parameter) and p.shape == s and p.dtype == np.float32
        assert p.flags.c_contiguous and p.flags.writeable
        if p.size:  # (an empty array's address means nothing)
            assert p.ctypes.data == buf.data.ctypes.data + 4 * offset
            assert p.grad.ctypes.data == buf.grad.ctypes.data + 4 * offset
        offset += p.size
    buf.data[...] = 2.0
    assert all(np.all(p == 2.0) for p in buf)
    assert buf.is_flat()


def test_init_forms():
    values = _values(np.float64)
    a = nopt.ParameterBuffer(SHAPES, dtype=np.float64, init=values)
    b = nopt.ParameterBuffer.from_arrays(values)
    c = nopt.flat_parameters(SHAPES, dtype=np.float64, init=lambda shape, dtype: np.full(shape, 3.0))
    d = nopt.flat_parameters(SHAPES, init=0.5)
    for p, q, r, s, v in zip(a, b, c, d, values):
        np.testing.assert_array_equal(p, v)
        np.testing.assert_array_equal(q, v)
        assert q.dtype == np.float64
        assert np.all(r == 3.0) and np.all(s == np.float32(0.5))
    values[0][...] = 99  # copied, not shared
    assert not np.any(a[0] == 99)


def test_names_and_mixed_dtypes():
    buf = nopt.ParameterBuffer({"w": (3, 2), "b": 2, "s": ()}, dtype=[np.float32, np.float64, np.float32])
    assert buf["w"].shape == (3, 2) and buf["b"].dtype == np.float64 and buf["s"].shape == ()
    assert [n for n, _ in buf.named_parameters()] == ["w", "b", "s"]
    assert set(buf.buffers) == {np.dtype(np.float32), np.dtype(np.float64)}
    assert buf.buffers[np.dtype(np.float32)][0].size == 7
    with pytest.raises(AttributeError, match="several dtypes"):
        buf.data
    with pytest.raises(KeyError):
        buf["nope"]


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(shapes=[(2, -1)]), ValueError, "negative"),
    (dict(shapes=[(2,)], dtype=np.int32), TypeError, "float32 or float64"),
    (dict(shapes=[(2,)], init=[np.zeros(3)]), ValueError, "shape"),
    (dict(shapes=[(2,)], init=[np.zeros(2)] * 2), ValueError, "2 arrays for 1"),
    (dict(shapes=[(2,)], init="x"), TypeError, "init"),
    (dict(shapes="abc"), TypeError, "shapes"),
    (dict(shapes=[(2,)], dtype=[np.float32] * 2), ValueError, "dtypes"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        nopt.ParameterBuffer(**kwargs)


@pytest.mark.parametrize("name,options", ELEMENTWISE, ids=[f"{n}-{o}" for n, o in ELEMENTWISE])
def test_flat_step_is_one_merged_loop_and_matches_separate(name, options, tables):
    """A flat model's step is one table row per call, with the same bits as separate arrays."""
    cls = _cls(name)
    shapes = [(300, 7), (5,), (40_000,), (3, 3)]  # > SERIAL_BELOW in all: two threads
    values = _values(shapes=shapes)
    flat = nopt.ParameterBuffer.from_arrays(values)
    separate = [nopt.Parameter(v.copy()) for v in values]
    opt_flat, opt_sep = cls(flat, **options), cls(separate, **options)
    rng = np.random.default_rng(1)
    for _ in range(3):
        grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        for p, q, g in zip(flat, separate, grads):
            p.grad[...] = g
            q.grad = g.copy()
        del tables[:]
        opt_flat.step()
        assert tables, "the step built no table"
        assert all(ptrs.shape[0] == 1 for ptrs, _, _ in tables), [t[0].shape for t in tables]
        opt_sep.step()
    assert flat.is_flat()
    for p, q in zip(flat, separate):
        assert p.tobytes() == q.tobytes()
    for p, q in zip(flat, separate):
        for key, value in opt_sep.state[q].items():
            if isinstance(value, np.ndarray):
                assert opt_flat.state[p][key].tobytes() == value.tobytes(), key
            else:
                assert opt_flat.state[p][key] == value, key


def test_one_row_for_2000_arrays(tables):
    params = nopt.flat_parameters([(1000,)] * 2000, init=1.0)
    opt = nopt.SGD(params, lr=0.01, momentum=0.9)
    opt.step()
    opt.step()
    assert [t[0].shape[0] for t in tables] == [1, 1]
    assert tables[-1][1].shape[0] == -(-2_000_000 // _plan.CHUNK)


def test_assigned_grad_still_works_and_zero_grad_reattaches(tables):
    values = _values()
    flat = nopt.ParameterBuffer.from_arrays(values)
    separate = [nopt.Parameter(v.copy()) for v in values]
    opt_flat = nopt.SGD(flat, lr=0.1, momentum=0.5)
    opt_sep = nopt.SGD(separate, lr=0.1, momentum=0.5)
    rng = np.random.default_rng(2)
    for step in range(3):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in flat]
        flat.zero_grad()
        for i, (p, q, g) in enumerate(zip(flat, separate, grads)):
            if i == 2:
                p.grad = g.copy()  # a plain assignment: this one is no longer flat
            else:
                p.grad += g
            q.grad = g
        assert not flat.is_flat()
        del tables[:]
        opt_flat.step()
        assert max(t[0].shape[0] for t in tables) > 1
        opt_sep.step()
    for p, q in zip(flat, separate):
        assert p.tobytes() == q.tobytes()
    flat.zero_grad()
    assert flat.is_flat() and not np.any(flat.grad)


def test_optimizer_zero_grad_keeps_views_only_without_set_to_none():
    flat = nopt.flat_parameters(SHAPES, init=1.0)
    opt = nopt.SGD(flat, lr=0.1)
    flat.grad[...] = 1.0
    opt.zero_grad(set_to_none=False)
    assert flat.is_flat() and not np.any(flat.grad)
    opt.zero_grad()
    assert all(p.grad is None for p in flat)
    flat.zero_grad()
    assert flat.is_flat()


def test_state_dict_and_checkpoint_round_trip(tmp_path):
    values = _values(np.float64)
    flat = nopt.ParameterBuffer.from_arrays(values)
    opt = nopt.SGD(flat, lr=0.1, momentum=0.9)
    for p in flat:
        p.grad[...] = 1.0
    opt.step()
    nopt.save({"opt": opt.state_dict(), "params": [np.array(p) for p in flat]}, tmp_path / "c.nopt")
    saved = nopt.load(tmp_path / "c.nopt")

    flat2 = nopt.ParameterBuffer.from_arrays(saved["params"])
    opt2 = nopt.SGD(flat2, lr=0.1, momentum=0.9)
    opt2.load_state_dict(saved["opt"])
    for opt_, buf in ((opt, flat), (opt2, flat2)):
        for p in buf:
            p.grad[...] = 0.5
        opt_.step()
    for p, q in zip(flat, flat2):
        assert p.tobytes() == q.tobytes()
        assert opt.state[p]["momentum_buffer"].tobytes() == opt2.state[q]["momentum_buffer"].tobytes()
    # A deep copy is an ordinary (non-flat) Parameter with the same values.
    clone = copy.deepcopy(flat[0])
    assert isinstance(clone, nopt.Parameter) and not np.shares_memory(clone, flat.data)
    np.testing.assert_array_equal(clone, flat[0])
