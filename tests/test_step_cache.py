"""The per-batch caches that let an unchanged group skip re-reading its state.

A step revalidates a group by identity (``_plan.GatherCache``, a Parameter
gradient epoch) and reuses the state it gathered last time
(``_plan.StepCache``, ``StateMap.version``, ``StateDict.owner``). These
tests drive an optimizer through random edits of gradients, state, groups
and checkpoints, and compare it, bit for bit, with a twin whose caches are
dropped before every step (so every step reads everything afresh).
"""
import copy
import pickle

import numpy as np
import pytest

import nopt
from nopt._kernels._plan import StateDict, StateMap
from optim_db import quick_cases

SHAPES = [(3, 4), (5,), (2, 3), (1,), (6,), (4,)]

CACHED = quick_cases(elementwise=True, step_cached=True)


def _model(flat, dtype, seed):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    if flat:
        return list(nopt.ParameterBuffer.from_arrays(values, dtype=dtype))
    params = [nopt.Parameter(v) for v in values]
    for p in params:
        p.grad = np.zeros_like(p)
    return params


def _assert_equal(actual, desired, err_msg=""):
    """np.testing.assert_array_equal, which took three quarters of this file's
    time, behind a shortcut for the usual case: the same bits."""
    if (isinstance(actual, np.ndarray) and isinstance(desired, np.ndarray)
            and actual.dtype == desired.dtype and actual.shape == desired.shape
            and actual.tobytes() == desired.tobytes()):
        return
    if type(actual) is float and type(desired) is float and actual == desired:
        return
    np.testing.assert_array_equal(actual, desired, err_msg=err_msg)


def _drop_caches(opt):
    for name in ("_step_caches", "_gather_caches", "_table_caches"):
        opt.__dict__.pop(name, None)


class _Pair:
    """The same model and optimizer twice; ``b`` forgets its caches before each step."""

    def __init__(self, name, kwargs, flat, dtype):
        self.params_a = _model(flat, dtype, 0)
        self.params_b = _model(flat, dtype, 0)
        cls = getattr(nopt, name)
        half = len(SHAPES) // 2
        self.a = cls([{"params": self.params_a[:half]}, {"params": self.params_a[half:], "lr": 0.02}], **kwargs)
        self.b = cls([{"params": self.params_b[:half]}, {"params": self.params_b[half:], "lr": 0.02}], **kwargs)

    def both(self, fn):
        """Apply ``fn(opt, params)`` to both; both must raise alike or not at all."""
        errors = []
        for opt, params in ((self.a, self.params_a), (self.b, self.params_b)):
            try:
                fn(opt, params)
                errors.append(None)
            except (ValueError, TypeError, KeyError) as exc:
                errors.append(type(exc))
        assert errors[0] == errors[1]
        return errors[0]

    def step(self):
        _drop_caches(self.b)
        ra = rb = None
        try:
            self.a.step()
        except (ValueError, TypeError, KeyError) as exc:
            ra = type(exc)
        try:
            self.b.step()
        except (ValueError, TypeError, KeyError) as exc:
            rb = type(exc)
        assert ra == rb
        self.check()

    def check(self):
        for pa, pb in zip(self.params_a, self.params_b):
            _assert_equal(pa, pb)
        assert [{k: v for k, v in g.items() if k != "params"} for g in self.a.param_groups] == \
            [{k: v for k, v in g.items() if k != "params"} for g in self.b.param_groups]
        for i, (pa, pb) in enumerate(zip(self.params_a, self.params_b)):
            sa, sb = self.a.state.get(pa), self.b.state.get(pb)
            assert (sa is None) == (sb is None)
            if sa is not None:
                assert sa.keys() == sb.keys()
                for key, va in sa.items():
                    _assert_equal(va, sb[key], err_msg=f"state of param {i}, {key!r}")


def _edits(rng, dtype):
    """Random edits of the kind a training loop, a user or a checkpoint makes."""

    def new_grads(opt, params):
        r = np.random.default_rng(seed)
        for p in params:
            if p.grad is not None:
                p.grad[...] = r.standard_normal(p.shape).astype(dtype)

    def replace_grad(opt, params):
        p = params[k % len(params)]
        p.grad = np.random.default_rng(seed).standard_normal(p.shape).astype(dtype)

    def drop_grad(opt, params):
        params[k % len(params)].grad = None

    def restore_grad(opt, params):
        for p in params:
            if p.grad is None:
                p.grad = np.ones(p.shape, dtype)

    def set_step(opt, params):
        p = params[k % len(params)]
        if opt.state.get(p):
            opt.state[p]["step"] = float(3 + k % 5)

    def update_step(opt, params):
        p = params[k % len(params)]
        if opt.state.get(p):
            opt.state[p].update(step=opt.state[p]["step"] + 2.0)

    def replace_array(opt, params):
        p = params[k % len(params)]
        s = opt.state.get(p)
        if s:
            key = next(key for key in opt._elementwise_state if key in s)
            s[key] = s[key] * 2 + 0.25

    def edit_array_in_place(opt, params):
        p = params[k % len(params)]
        s = opt.state.get(p)
        if s:
            s[next(key for key in opt._elementwise_state if key in s)][...] *= 0.5

    def delete_state(opt, params):
        opt.state.pop(params[k % len(params)], None)

    def plain_dict(opt, params):
        p = params[k % len(params)]
        if opt.state.get(p):
            opt.state[p] = dict(opt.state[p])

    def reload(opt, params):
        grouped = {id(q) for g in opt.param_groups for q in g["params"]}
        if all(id(p) in grouped for p in opt.state):
            opt.load_state_dict(copy.deepcopy(opt.state_dict()))

    def change_lr(opt, params):
        opt.param_groups[k % 2]["lr"] = 0.001 * (1 + k % 7)

    def shrink_group(opt, params):
        group = opt.param_groups[1]["params"]
        if len(group) > 1:
            group.pop()

    def regrow_group(opt, params):
        group = opt.param_groups[1]["params"]
        if all(q is not params[-1] for q in group):
            group.append(params[-1])

    def failing_step(opt, params):
        p = params[-1]
        p.flags.writeable = False
        try:
            opt.step()
        finally:
            p.flags.writeable = True

    edits = [new_grads, new_grads, new_grads, replace_grad, drop_grad, restore_grad, set_step,
             update_step, replace_array, edit_array_in_place, delete_state, plain_dict, reload,
             change_lr, shrink_group, regrow_group, failing_step]
    for _ in range(60):
        seed = int(rng.integers(1 << 30))
        k = int(rng.integers(100))
        fn = edits[int(rng.integers(len(edits)))]
        yield fn
        # (closures read ``seed`` and ``k`` at call time: call before the next draw)


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "arrays"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,kwargs", CACHED, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CACHED)])
def test_cached_steps_match_fresh_reads(name, kwargs, flat, dtype):
    pair = _Pair(name, kwargs, flat, dtype)
    rng = np.random.default_rng(hash((name, flat, str(dtype))) % (1 << 32))
    pair.both(lambda opt, params: [p.grad.__setitem__(..., 0.1) for p in params])
    for _ in range(3):
        pair.step()
    for edit in _edits(rng, dtype):
        pair.both(edit)
        pair.check()
        pair.step()
        pair.step()


def test_steady_flat_steps_hit_the_caches():
    # The point of the caches: after the first step, an unchanged flat group
    # reuses its StepCache (state dicts still owned by it) on every step.
    params = list(nopt.flat_parameters([(10,), (20,), (5,)]))
    for p in params:
        p.grad[...] = 1.0
    opt = nopt.Adam(params, lr=0.1)
    opt.step()
    (cache,) = opt._step_caches.values()
    before = [opt.state[p] for p in params]
    opt.step()
    opt.step()
    assert [opt.state[p] for p in params] == before
    assert all(opt.state[p]["step"] == 3.0 for p in params)
    assert opt._step_caches[(0, False)] is cache
    # Each state dict names the cache's token; a write from Python clears it.
    opt.state[params[1]]["step"] = 10.0
    opt.step()
    assert [opt.state[p]["step"] for p in params] == [4.0, 11.0, 4.0]


def test_failed_step_leaves_counts_and_caches_consistent():
    params = list(nopt.flat_parameters([(4,), (4,)]))
    for p in params:
        p.grad[...] = 1.0
    opt = nopt.Adam([{"params": params[:1]}, {"params": params[1:]}], lr=0.1)
    opt.step()
    opt.step()
    params[1].grad = np.full(4, np.float32(2))
    params[0].flags.writeable = False
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\]"):
        opt.step()
    params[0].flags.writeable = True
    assert [opt.state[p]["step"] for p in params] == [2.0, 2.0]
    opt.step()
    assert [opt.state[p]["step"] for p in params] == [3.0, 3.0]


# ---------------------------------------------------------------- the containers
def test_state_map_is_a_defaultdict_of_dicts():
    state = StateMap()
    assert isinstance(state, dict)
    d = state["w"]
    assert type(d) is StateDict and d == {} and "w" in state
    assert state.get("x") is None and "x" not in state
    d["step"] = 1.0
    d.update(exp_avg=np.zeros(2))
    assert state == {"w": {"step": 1.0, "exp_avg": d["exp_avg"]}}
    assert type(d.copy()) is dict and type(dict(state)) is dict
    assert d.pop("step") == 1.0 and d.pop("nope", 5) == 5
    assert d.setdefault("k", 2) == 2 and d.popitem() == ("k", 2)
    d |= {"a": 1}
    assert d == {"exp_avg": d["exp_avg"], "a": 1}
    del d["a"]
    d.clear()
    assert d == {}
    state |= {"v": StateDict(step=2.0)}
    assert state.pop("v") == {"step": 2.0}
    del state["w"]
    assert state == {}


@pytest.mark.parametrize("clone", [copy.deepcopy, copy.copy, lambda x: pickle.loads(pickle.dumps(x))],
                         ids=["deepcopy", "copy", "pickle"])
def test_state_containers_copy_and_pickle_as_themselves(clone):
    state = StateMap()
    state["w"].update(step=3.0, exp_avg=np.arange(3.0))
    out = clone(state)
    assert type(out) is StateMap and type(out["w"]) is StateDict
    assert out["w"]["step"] == 3.0
    np.testing.assert_array_equal(out["w"]["exp_avg"], np.arange(3.0))
    assert "new" not in out and type(out["new"]) is StateDict


def test_optimizer_state_containers():
    params = list(nopt.flat_parameters([(3,), (2,)]))
    for p in params:
        p.grad[...] = 1.0
    opt = nopt.Adam(params)
    assert type(opt.state) is StateMap
    opt.step()
    assert all(type(opt.state[p]) is StateDict for p in params)
    opt.load_state_dict(opt.state_dict())
    assert type(opt.state) is StateMap
    assert all(type(opt.state[p]) is StateDict for p in params)
    clone = pickle.loads(pickle.dumps(opt))
    assert type(clone.state) is StateMap


# ---------------------------------------------------------------- make_table with tuple columns
def test_make_table_accepts_tuples_and_rechecks_a_new_tuple():
    from nopt._kernels import _plan

    params = [np.zeros(4, np.float32), np.zeros(3, np.float32)]
    grads = [np.ones(4, np.float32), np.ones(3, np.float32)]
    col = (np.zeros(4, np.float32), np.zeros(3, np.float32))
    cache = _plan.TableCache()
    first = _plan.make_table([params, grads, col], cache)
    again = _plan.make_table([list(params), list(grads), col], cache)
    assert again[0] is first[0]   # the same table: nothing changed
    # A new tuple is read afresh: a bad array in it is caught.
    bad = (col[0], np.zeros(3, np.float64))
    with pytest.raises(ValueError):
        _plan.make_table([params, grads, bad], cache)
    moved = (col[0], np.zeros(3, np.float32))
    table = _plan.make_table([params, grads, moved], cache)
    assert table[0][1, 2] == moved[1].ctypes.data


def test_steady_steps_reuse_column_tuples():
    params = list(nopt.flat_parameters([(10,), (20,)]))
    for p in params:
        p.grad[...] = 1.0
    opt = nopt.Adam(params, lr=0.1)
    opt.step()
    b = opt._batches()[0]
    cols1, _, _ = opt._count_step(b, ("exp_avg", "exp_avg_sq"), [], (0, False))
    cols2, _, _ = opt._count_step(b, ("exp_avg", "exp_avg_sq"), [], (0, False))
    assert all(type(c) is tuple for c in cols1)
    assert [c1 is c2 for c1, c2 in zip(cols1, cols2)] == [True, True]
    opt.state[params[0]]["exp_avg"] = np.zeros(10, np.float32)
    cols3, _, _ = opt._count_step(b, ("exp_avg", "exp_avg_sq"), [], (0, False))
    assert cols3[0] is not cols2[0] and cols3[0][0] is opt.state[params[0]]["exp_avg"]
