"""Flat parameter storage (nopt.ParameterBuffer / nopt.flat_parameters)."""
import copy

import numpy as np
import pytest

import nopt
from nopt._kernels import _plan
from optim_db import quick_cases

SHAPES = [(3, 4), (5,), (2, 3, 2), (1,), (0,), (7,)]

# Elementwise optimizers whose step should be one merged loop over a flat model.
ELEMENTWISE = quick_cases(elementwise=True, flat_mergeable=True)


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

    def recording(streams, *args):
        out = original(streams, *args)
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


# ---------------------------------------------------------------- step machinery
# The helpers every optimizer's step uses (Optimizer._batches / _state_column(s)
# / _increment_state, _plan.make_table): the table merging flat storage relies on.


def test_make_table_merges_adjacent_rows_and_skips_empty_arrays():
    buf, gbuf = np.zeros(30, np.float32), np.zeros(30, np.float32)
    views = [buf[0:10], buf[10:10], buf[10:25], buf[25:30]]
    gviews = [gbuf[0:10], gbuf[10:10], gbuf[10:25], gbuf[25:30]]
    ptrs, chunks, n = _plan.make_table([views, gviews])
    assert ptrs.shape == (1, 2) and chunks.tolist() == [[0, 0, 30]] and n == 1
    # Grads laid out in another order: rows split where a stream is not adjacent.
    shuffled = [gbuf[0:10], gbuf[10:10], gbuf[15:30], gbuf[10:15]]
    ptrs, chunks, _ = _plan.make_table([views, shuffled])
    assert ptrs.shape[0] == 3 and chunks[:, 2].tolist() == [10, 15, 5]
    with pytest.raises(ValueError, match="same number"):
        _plan.make_table([views, gviews[:2]])


@pytest.mark.parametrize("bad,match", [
    (np.zeros(9, np.float32), "state array .stream 2. of array 1.*10 elements"),
    (np.zeros(10, np.float64), "state array .stream 2. of array 1.*float32"),
    (np.zeros(20, np.float32)[::2], "state array .stream 2. of array 1.*C-contiguous"),
    (None, "state array .stream 2. of array 1 in this step is NoneType"),
])
def test_make_table_refuses_arrays_a_kernel_cannot_walk(bad, match):
    """A state array replaced by hand raises instead of corrupting memory."""
    ps = [np.zeros(10, np.float32) for _ in range(2)]
    gs = [np.zeros(10, np.float32) for _ in range(2)]
    with pytest.raises(ValueError, match=match):
        _plan.make_table([ps, gs, [np.zeros(10, np.float32), bad]])
    ro = np.zeros(10, np.float32)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        _plan.make_table([ps, gs, [ro, ro]])
    _plan.make_table([ps, [ro, ro]])  # gradients are only read


def test_make_table_chunks_large_rows():
    a, g = np.zeros(2 * _plan.CHUNK + 5, np.float64), np.zeros(2 * _plan.CHUNK + 5, np.float64)
    ptrs, chunks, n_threads = _plan.make_table([[a], [g]])
    assert chunks.tolist() == [[0, 0, _plan.CHUNK], [0, _plan.CHUNK, 2 * _plan.CHUNK],
                               [0, 2 * _plan.CHUNK, 2 * _plan.CHUNK + 5]]
    assert ptrs[0].tolist() == [a.ctypes.data, g.ctypes.data]


def test_batches_split_dtypes_and_skip_missing_grads():
    ps = [nopt.Parameter(np.zeros(2, dt)) for dt in (np.float64, np.float32, np.float32, np.float64)]
    for p in ps[:3]:
        p.grad = np.ones_like(p)
    opt = nopt.SGD([{"params": [nopt.Parameter(np.zeros(1))]}, {"params": ps}], lr=0.1)
    batches = opt._batches()
    assert [(b.group_index, b.indices, b.is_double) for b in batches] == [(1, [1, 2], False), (1, [0], True)]
    assert batches[0].params == [ps[1], ps[2]] and batches[0].grads[0] is ps[1].grad


@pytest.mark.parametrize("breaker,exc,match", [
    (lambda p: setattr(p, "_grad", np.ones(6, np.float32)[::2]), ValueError, "C-contiguous"),
    (lambda p: setattr(p, "_grad", np.ones(3, np.float64)), TypeError, "dtype float64"),
    (lambda p: setattr(p, "_grad", p.view(np.ndarray)), ValueError, "shares memory"),
    (lambda p: setattr(p, "_grad", [1.0, 2.0, 3.0]), TypeError, "must be a numpy.ndarray"),
    (lambda p: p.setflags(write=False), ValueError, "read-only"),
])
def test_batches_name_the_bad_parameter(breaker, exc, match):
    ps = [nopt.Parameter(np.zeros(3, np.float32)) for _ in range(3)]
    for p in ps:
        p.grad = np.ones(3, np.float32)
    opt = nopt.SGD([{"params": ps[:1]}, {"params": ps[1:]}], lr=0.1)
    breaker(ps[2])
    with pytest.raises(exc, match=r"param_groups\[1\]\['params'\]\[1\].*" + match):
        opt._batches()


def test_state_columns_and_increment():
    ps = [nopt.Parameter(np.zeros(2)) for _ in range(3)]
    opt = nopt.SGD(ps, lr=0.1, momentum=0.9)
    opt.state[ps[0]].update(step=2.0, a=np.ones(2), b=np.zeros(2))
    opt.state[ps[2]].update(step=2.0, a=np.ones(2))
    col, missing = opt._state_column(ps, "a")
    assert missing == 1 and col[1] is None and col[0] is opt.state[ps[0]]["a"]
    assert ps[1] not in opt.state  # reading does not add entries
    (a, b), missing = opt._state_columns(ps, ("a", "b"))
    assert missing == 2 and b[0] is opt.state[ps[0]]["b"] and b[2] is None and a[2] is not None
    with pytest.raises(KeyError, match="no state for parameter 1"):
        opt._increment_state(ps, "step")
    assert opt.state[ps[0]]["step"] == 2.0  # checked before anything changed
    opt.state[ps[1]]["step"] = 2
    values, common = opt._increment_state(ps, "step")
    assert values == [3.0, 3.0, 3.0] and common == 3.0
    assert all(type(opt.state[p]["step"]) is float for p in ps)
    opt.state[ps[1]]["step"] = 7.0
    values, common = opt._increment_state(ps, "step")
    assert values == [4.0, 8.0, 4.0] and common is None
    assert opt._split_by(ps, values) == [(4.0, [0, 2]), (8.0, [1])]
    assert opt._split_by([], []) == [(None, [])]


def _sgd_model(n=3, size=4):
    ps = [nopt.Parameter(np.arange(size, dtype=np.float64) + i) for i in range(n)]
    for p in ps:
        p.grad = np.ones(size)
    return ps, nopt.SGD(ps, lr=0.5)


def test_revalidation_catches_changes_between_steps():
    """_batches revalidates by identity; every kind of change still takes effect or raises."""
    ps, opt = _sgd_model()
    opt.step()
    opt.step()  # the cached path
    before = [p.copy() for p in ps]
    ps[1].grad = np.full(4, 2.0)  # a new gradient object
    opt.step()
    np.testing.assert_array_equal(ps[1], before[1] - 1.0)
    np.testing.assert_array_equal(ps[0], before[0] - 0.5)
    ps[2].grad = None  # no gradient: skipped
    opt.step()
    np.testing.assert_array_equal(ps[2], before[2] - 0.5)
    np.testing.assert_array_equal(ps[0], before[0] - 1.0)
    assert [b.indices for b in opt._batches()] == [[0, 1]]
    ps[2].grad = np.ones(4)
    opt.step()
    ps[2].setflags(write=False)  # reflagged in place, same gradient object
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[2\].*read-only"):
        opt.step()
    ps[2].setflags(write=True)
    extra = nopt.Parameter(np.zeros(4))
    extra.grad = np.ones(4)
    opt.param_groups[0]["params"].append(extra)  # the group's list, changed in place
    opt.step()
    np.testing.assert_array_equal(extra, np.full(4, -0.5))


def test_revalidation_never_confuses_a_new_gradient_at_a_recycled_address():
    ps, opt = _sgd_model(n=1, size=1000)
    for step in range(20):
        ps[0].grad = np.full(1000, float(step))  # the old one is freed: its address may be reused
        before = ps[0].copy()
        opt.step()
        np.testing.assert_array_equal(ps[0], before - 0.5 * step)


def test_revalidation_keeps_no_gradient_alive():
    import weakref

    ps, opt = _sgd_model(n=2)
    opt.step()
    ref = weakref.ref(ps[0].grad)
    ps[0].grad = np.ones(4)
    opt.step()
    assert ref() is None


def test_table_reuse_follows_state_replaced_by_hand():
    ps, _ = _sgd_model(n=2, size=5)
    opt = nopt.SGD(ps, lr=0.5, momentum=0.5)
    opt.step()
    opt.step()  # a reused table
    opt.state[ps[1]]["momentum_buffer"] = np.zeros(4)
    with pytest.raises(ValueError, match="state array .stream 2. of array 1.*5 elements"):
        opt.step()
    opt.state[ps[1]]["momentum_buffer"] = np.full(5, 2.0)
    before = ps[1].copy()
    opt.step()
    np.testing.assert_array_equal(opt.state[ps[1]]["momentum_buffer"], np.full(5, 2.0))
    np.testing.assert_array_equal(ps[1], before - 0.5 * 2.0)


def test_table_reuse_with_new_gradients_every_step():
    rng = np.random.default_rng(0)
    values = [rng.standard_normal(s) for s in (7, 70_000, 3)]
    a = [nopt.Parameter(v.copy()) for v in values]
    opt = nopt.SGD(a, lr=0.1, momentum=0.9)
    b = [v.copy() for v in values]
    bufs = [None] * 3
    for _ in range(6):
        grads = [rng.standard_normal(v.shape) for v in values]
        for p, g in zip(a, grads):
            p.grad = g
        opt.step()
        for i, g in enumerate(grads):
            bufs[i] = g.copy() if bufs[i] is None else bufs[i] * 0.9 + g
            b[i] -= 0.1 * bufs[i]
    for p, q in zip(a, b):
        assert p.tobytes() == q.tobytes()


def test_state_step_reads_then_counts_only_when_complete():
    ps = [nopt.Parameter(np.zeros(2)) for _ in range(3)]
    opt = nopt.SGD(ps, lr=0.1)
    for p in ps[:2]:
        opt.state[p].update(step=4.0, m=np.ones(2), v=np.zeros(2))
    (m, v), missing, steps, common = opt._state_step(ps, ("m", "v"))
    assert missing == 1 and steps is None and common is None and m[2] is None
    assert [opt.state[p].get("step") for p in ps] == [4.0, 4.0, None]  # nothing counted
    opt.state[ps[2]].update(step=1, m=np.ones(2), v=np.zeros(2))
    (m, v), missing, steps, common = opt._state_step(ps, ("m", "v"))
    assert missing == 0 and steps == [5.0, 5.0, 2.0] and common is None
    assert m[2] is opt.state[ps[2]]["m"] and v[0] is opt.state[ps[0]]["v"]
    opt.state[ps[2]]["step"] = "x"
    with pytest.raises(ValueError):
        opt._state_step(ps, ("m",))
    assert opt.state[ps[0]]["step"] == 5.0
