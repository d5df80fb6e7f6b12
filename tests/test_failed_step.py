"""A failed step leaves the optimizer and the parameters exactly as they were.

A step plans every batch first (counts the step, creates missing state,
computes the scalars, builds the work tables) and only then runs the
kernels; when planning raises, what it changed is undone
(``Optimizer._plan_then_run``). These tests break group 1 of a two-group
optimizer in several ways, on the first step (no state yet) and after a few
steps, and check that the failed step changes no parameter and no state
(the same parameters with state, the same keys, counts and arrays), and
that once the problem is fixed the next steps match, bit for bit, a twin
optimizer that never failed.
"""
import numpy as np
import pytest

import nopt
from optim_db import quick_cases, quick_ids

# Every elementwise optimizer that keeps a step count (the "state_without_step"
# fault needs one), with its quick option sets; SGD has its own tests below.
OPTIMIZERS = quick_cases(elementwise=True, counts_steps=True)
IDS = quick_ids(OPTIMIZERS)

# Two groups of two parameters, float32 and float64 mixed: each group
# steps as two batches, so a failure can come after other batches counted.
SHAPES = [((3, 4), np.float64), ((5,), np.float32), ((2, 3), np.float32), ((4,), np.float64)]
BAD = 3   # the parameter the faults below break: param_groups[1]['params'][1]
WHERE = r"param_groups\[1\]\['params'\]\[1\]"


def _params():
    rng = np.random.default_rng(0)
    return [nopt.Parameter(rng.standard_normal(shape).astype(dtype)) for shape, dtype in SHAPES]


def _build(name, options, params, lazy=False):
    opt = getattr(nopt, name)([{"params": params[:2]}, {"params": params[2:]}], **options)
    if lazy:
        # Adagrad creates its state in the constructor; a checkpoint without
        # state leaves it to the first step, as other optimizers do.
        opt.load_state_dict({"state": {}, "param_groups": opt.state_dict()["param_groups"]})
    return opt


def _set_grads(params, step):
    rng = np.random.default_rng(100 + step)
    for p in params:
        p.grad = rng.standard_normal(p.shape).astype(p.dtype)


def _snapshot(opt, params):
    """Each parameter's bytes, and its state: None, or [(key, value, copy of value)]."""
    state = []
    for p in params:
        d = opt.state.get(p)
        if d is None:
            state.append(None)
        else:
            state.append([(k, v, v.copy() if isinstance(v, np.ndarray) else v) for k, v in d.items()])
    return [p.tobytes() for p in params], state, len(opt.state)


def _assert_unchanged(before, opt, params):
    after = _snapshot(opt, params)
    assert after[0] == before[0], "a parameter changed"
    assert after[2] == before[2], "parameters were added to or removed from opt.state"
    for k, (was, now) in enumerate(zip(before[1], after[1])):
        if was is None:
            assert now is None, f"param {k} got state"
            assert params[k] not in opt.state
            continue
        assert now is not None, f"param {k} lost its state"
        assert [e[0] for e in now] == [e[0] for e in was], f"param {k}: state keys changed"
        for (key, old, old_copy), (_, new, _) in zip(was, now):
            if isinstance(old, np.ndarray):
                assert new is old, f"param {k}: state[{key!r}] replaced"
                assert new.tobytes() == old_copy.tobytes(), f"param {k}: state[{key!r}] changed"
            else:
                assert type(new) is type(old) and new == old, f"param {k}: state[{key!r}] {old!r} -> {new!r}"


def _assert_same(opt, params, twin, twin_params):
    for k, (p, q) in enumerate(zip(params, twin_params)):
        assert p.tobytes() == q.tobytes(), f"param {k} differs from the twin's"
        a, b = opt.state.get(p), twin.state.get(q)
        assert (a is None) == (b is None)
        if a is None:
            continue
        assert list(a) == list(b), f"param {k}: state keys differ from the twin's"
        for key in a:
            if isinstance(a[key], np.ndarray):
                assert a[key].tobytes() == b[key].tobytes(), f"param {k}: state[{key!r}] differs"
            else:
                assert a[key] == b[key], f"param {k}: state[{key!r}] differs"


def _donor_state(name, options):
    """A complete state for parameter BAD after one step, less its 'step'."""
    params = _params()
    opt = _build(name, options, params)
    _set_grads(params, 0)
    opt.step()
    return {k: v for k, v in opt.state[params[BAD]].items() if k != "step"}


# Each fault: break(opt, params, name, options) -> fix(), the exception and its message.
def _read_only_param(opt, params, name, options):
    params[2].flags.writeable = False

    def fix():
        params[2].flags.writeable = True
    return fix


def _grad_of_wrong_dtype(opt, params, name, options):
    good = params[BAD].grad
    params[BAD]._grad = good.astype(np.float32)   # bypasses the setter's check

    def fix():
        params[BAD].grad = good
    return fix


def _state_without_step(opt, params, name, options):
    p = params[BAD]
    if p not in opt.state:
        # First step: a hand-made state, as a step would make it but without
        # 'step'. Group 0's state (and param 2's, but for the Adam family,
        # which checks first) is created before this one is found wanting.
        opt.state[p] = _donor_state(name, options)

        def fix():
            del opt.state[p]
    else:
        state = opt.state[p]
        items = list(state.items())
        del state["step"]

        def fix():
            state.clear()
            state.update(items)   # (in the order the twin has them)
    return fix


def _state_array_of_wrong_dtype(opt, params, name, options):
    state = opt.state[params[BAD]]
    key = next(k for k in opt._elementwise_state if isinstance(state.get(k), np.ndarray))
    good = state[key]
    state[key] = good.astype(np.float32)   # found when the work table is built

    def fix():
        state[key] = good
    return fix


FAULTS = {
    "read_only_param": (_read_only_param, ValueError, r"param_groups\[1\]\['params'\]\[0\].*read-only"),
    "grad_dtype": (_grad_of_wrong_dtype, TypeError, rf"grad of {WHERE} has dtype float32"),
    "state_without_step": (_state_without_step, (ValueError, KeyError), rf"{WHERE} has no 'step'"),
    "state_dtype": (_state_array_of_wrong_dtype, ValueError, r"state array"),
}


def _run(name, options, fault, steps_before, lazy=False):
    params, twin_params = _params(), _params()
    opt = _build(name, options, params, lazy)
    twin = _build(name, options, twin_params, lazy)
    for t in range(steps_before):
        _set_grads(params, t)
        _set_grads(twin_params, t)
        opt.step()
        twin.step()
    _set_grads(params, steps_before)
    _set_grads(twin_params, steps_before)
    breaker, exc, match = FAULTS[fault]
    fix = breaker(opt, params, name, options)
    before = _snapshot(opt, params)
    for _ in range(2):   # a second failure finds the same state (nothing half-undone)
        with pytest.raises(exc, match=match):
            opt.step()
        _assert_unchanged(before, opt, params)
        if lazy:
            assert [p in opt.state for p in params] == [False, False, False, True]
    fix()
    for t in range(steps_before, steps_before + 3):
        if t > steps_before:
            _set_grads(params, t)
            _set_grads(twin_params, t)
        opt.step()
        twin.step()
        _assert_same(opt, params, twin, twin_params)


@pytest.mark.parametrize("name,options", OPTIMIZERS, ids=IDS)
@pytest.mark.parametrize("steps_before", [0, 3])
@pytest.mark.parametrize("fault", ["read_only_param", "grad_dtype", "state_without_step"])
def test_failed_step_changes_nothing(name, options, fault, steps_before):
    _run(name, options, fault, steps_before)


@pytest.mark.parametrize("name,options", OPTIMIZERS, ids=IDS)
def test_failed_table_after_counting_changes_nothing(name, options):
    """Group 1's work table fails after every batch before it counted its step."""
    _run(name, options, "state_dtype", 3)


@pytest.mark.parametrize("name,options", OPTIMIZERS, ids=IDS)
def test_failure_while_creating_state_removes_the_new_state(name, options):
    """No state yet (Adagrad's, made by its constructor, dropped by loading a
    checkpoint without state): group 0's state is created, then creating
    group 1's fails. None of it stays; only the hand-made state is there."""
    _run(name, options, "state_without_step", 0, lazy=True)


def test_rmsprop_buffers_added_to_an_incomplete_state_are_removed():
    """RMSprop starts buffers a state lacks at zero; if the step then fails, they go again."""
    params = _params()
    opt = _build("RMSprop", dict(lr=0.01, momentum=0.9, centered=True), params)
    _set_grads(params, 0)
    square_avg = np.zeros_like(params[BAD])
    opt.state[params[BAD]] = {"square_avg": square_avg}   # no 'step': the step fails
    with pytest.raises(KeyError, match=rf"{WHERE} has no 'step'"):
        opt.step()
    assert list(opt.state[params[BAD]].items()) == [("square_avg", square_avg)]
    assert [p in opt.state for p in params] == [False, False, False, True]


def test_asgd_eta_that_is_not_real_changes_nothing():
    """ASGD's next eta is computed while planning: a group whose eta would be
    complex fails the step after the other group's state was created."""
    params, twin_params = _params(), _params()
    opt = _build("ASGD", dict(lr=0.01), params)
    twin = _build("ASGD", dict(lr=0.01), twin_params)
    _set_grads(params, 0)
    _set_grads(twin_params, 0)
    opt.param_groups[1]["lambd"] = -1e4
    with pytest.raises(ValueError, match="is not real"):
        opt.step()
    assert len(opt.state) == 0
    assert all(p.tobytes() == q.tobytes() for p, q in zip(params, twin_params))
    opt.param_groups[1]["lambd"] = twin.param_groups[1]["lambd"]
    opt.step()
    twin.step()
    _assert_same(opt, params, twin, twin_params)


@pytest.mark.parametrize("name,options", OPTIMIZERS, ids=IDS)
def test_closure_runs_once_before_planning(name, options):
    params = _params()
    opt = _build(name, options, params)
    calls = []

    def closure():
        calls.append(len(opt.state))
        _set_grads(params, 0)
        return 1.5

    assert opt.step(closure) == 1.5
    assert len(calls) == 1


SGD_OPTIONS = [dict(lr=0.01), dict(lr=0.01, momentum=0.9), dict(lr=0.01, momentum=0.9, nesterov=True)]


@pytest.mark.parametrize("options", SGD_OPTIONS, ids=["plain", "momentum", "nesterov"])
@pytest.mark.parametrize("steps_before", [0, 3])
@pytest.mark.parametrize("fault", ["read_only_param", "grad_dtype"])
def test_failed_sgd_step_changes_nothing(options, fault, steps_before):
    _run("SGD", options, fault, steps_before)


@pytest.mark.parametrize("options", SGD_OPTIONS[1:], ids=["momentum", "nesterov"])
def test_failed_sgd_table_after_group_0_changes_nothing(options):
    """A bad momentum buffer in group 1 is found before group 0's kernel runs."""
    _run("SGD", options, "state_dtype", 3)


def test_failed_sgd_step_removes_new_momentum_buffers():
    params = _params()
    opt = _build("SGD", dict(lr=0.01, momentum=0.9), params)
    _set_grads(params, 0)
    opt.state[params[BAD]]["momentum_buffer"] = np.zeros(3)   # wrong size: its table fails
    before = _snapshot(opt, params)
    with pytest.raises(ValueError, match="state array"):
        opt.step()
    _assert_unchanged(before, opt, params)
    assert [p in opt.state for p in params] == [False, False, False, True]


ALL = quick_cases(elementwise=True)


@pytest.mark.parametrize("name,options", ALL, ids=quick_ids(ALL))
@pytest.mark.parametrize("steps_before", [0, 2])
@pytest.mark.parametrize("bad", [None, "0.1", [0.1]], ids=["None", "str", "list"])
def test_hyperparameter_set_to_a_non_number_changes_nothing(name, options, steps_before, bad):
    """A group value set by hand to a non-number fails before any kernel runs (torch would
    fail part-way, after updating the groups before it)."""
    params = _params()
    opt = _build(name, options, params)
    for t in range(steps_before):
        _set_grads(params, t)
        opt.step()
    _set_grads(params, steps_before)
    good = opt.param_groups[1]["lr"]
    opt.param_groups[1]["lr"] = bad
    before = _snapshot(opt, params)
    with pytest.raises(TypeError, match=r"param_groups\[1\]\['lr'\] must be a real number"):
        opt.step()
    _assert_unchanged(before, opt, params)
    opt.param_groups[1]["lr"] = good
    opt.step()
