"""The rule layer: specs, the generic planner, the state's cache rules, and ``opt.state = {}``."""
import collections

import numpy as np
import pytest

import nopt
from nopt._kernels import _plan, rules
from nopt.optimizer import Optimizer

ELEMENTWISE = [
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("Adamax", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01)),
    ("RAdam", dict(lr=0.01)),
    ("Adagrad", dict(lr=0.01, initial_accumulator_value=0.1)),
    ("Adadelta", dict(lr=0.5)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True)),
    ("Rprop", dict(lr=0.01)),
    ("ASGD", dict(lr=0.01, t0=2)),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(ELEMENTWISE)]


def _params(dtype=np.float64):
    rng = np.random.default_rng(0)
    return [nopt.Parameter(rng.standard_normal(s).astype(dtype)) for s in [(4, 3), (2, 5)]]


def _grads(params, t):
    rng = np.random.default_rng(100 + t)
    for p in params:
        p.grad = rng.standard_normal(p.shape).astype(p.dtype)


@pytest.mark.parametrize("name,options", ELEMENTWISE, ids=IDS)
def test_every_elementwise_optimizer_runs_its_rule(name, options):
    cls = getattr(nopt, name)
    assert isinstance(cls.rule, nopt._kernels._spec.Rule)
    assert cls._kernel is getattr(rules, cls.rule.name)
    # The base class owns step: no subclass re-implements it as a one-liner.
    assert "step" not in cls.__dict__ or name == "Adagrad"


def test_a_rule_without_a_step_count_keeps_none():
    params = _params()
    opt = nopt.SGD(params, lr=0.1, momentum=0.9)
    _grads(params, 0)
    opt.step()
    assert set(opt.state[params[0]]) == {"momentum_buffer"}
    assert nopt.SGD._required_state == ()


@pytest.mark.parametrize("make", [dict, lambda: collections.defaultdict(dict)],
                         ids=["dict", "defaultdict"])
@pytest.mark.parametrize("name,options", ELEMENTWISE + [("SparseAdam", dict(lr=0.01))],
                         ids=IDS + ["SparseAdam"])
def test_state_replaced_by_hand_works_as_in_torch(name, options, make):
    """``opt.state = {}`` (or a defaultdict) resets the state: the next steps equal a new optimizer's."""
    params, twin = _params(), _params()
    opt = getattr(nopt, name)(params, **options)
    for t in range(3):
        _grads(params, t)
        if name == "SparseAdam":
            sparse = pytest.importorskip("scipy.sparse")
            for p in params:
                p.grad = sparse.coo_matrix(p.grad)
        opt.step()
    opt.state = state = make()
    for p, q in zip(params, twin):
        q[...] = p
    fresh = getattr(nopt, name)(twin, **options)
    if name == "Adagrad":
        fresh.state = make()   # Adagrad's constructor makes its state eagerly; compare lazily
    for t in range(3, 7):
        for ps in (params, twin):
            _grads(ps, t)
            if name == "SparseAdam":
                for p in ps:
                    p.grad = sparse.coo_matrix(p.grad)
        opt.step()
        fresh.step()
        for p, q in zip(params, twin):
            assert p.tobytes() == q.tobytes()
    assert opt.state is state
    assert [p in state for p in params] == [q in fresh.state for q in twin]
    for p, q in zip(params, twin):
        if p in state:
            assert sorted(state[p]) == sorted(fresh.state[q])
    # And the state dict round trip still works from there.
    again = getattr(nopt, name)(_params(), **options)
    again.load_state_dict(opt.state_dict())


def _state_with(keys_values):
    state = _plan.StateMap()
    p = nopt.Parameter(np.zeros(3))
    state[p] = _plan.StateDict(keys_values)
    return state, p


def test_step_cache_refuses_scalar_columns():
    """Only arrays are cached: a scalar column is read again on every call."""
    state, p = _state_with({"step": 0.0, "exp_avg": np.zeros(3), "mu": 1.0})
    cache = _plan.StepCache()
    (m, mu), _, _, _ = _plan.columns_and_increment(state, [p], ("exp_avg", "mu"), "step", cache)
    assert mu == [1.0]
    dict.__setitem__(state[p], "mu", 5.0)   # a write that bypasses change tracking
    (m, mu), _, steps, _ = _plan.columns_and_increment(state, [p], ("exp_avg", "mu"), "step", cache)
    assert list(mu) == [5.0] and steps == [2.0]


def test_store_goes_through_change_tracking():
    """``store`` (scalar state written from C) invalidates a step cache over the same dicts."""
    state, p = _state_with({"step": 0.0, "exp_avg": np.zeros(3)})
    cache = _plan.StepCache()
    _plan.columns_and_increment(state, [p], ("exp_avg",), "step", cache)
    _plan.columns_and_increment(state, [p], ("exp_avg",), "step", cache)   # a cache hit
    new = np.ones(3)
    _plan.store(state, [p], ("exp_avg",), (new,))
    (m,), _, steps, _ = _plan.columns_and_increment(state, [p], ("exp_avg",), "step", cache)
    assert m[0] is new and steps == [3.0]


def test_kernel_checks_its_table():
    p = nopt.Parameter(np.zeros(4))
    p.grad = np.ones(4)
    ptrs, chunks, n = _plan.make_table([[p], [p.grad]])
    with pytest.raises(ValueError, match="ptrs must be"):
        rules.adam(ptrs, chunks, True, n, 1.0, 1.0, 0.0, 0.1, 0.999, 0.001, 1.0, 1e-8, -1e-3, False)
    with pytest.raises(ValueError, match="chunks must be"):
        rules.sgd(ptrs, chunks.astype(np.int32), True, n, 0.1, 0.0, 1.0, 0.0, False, False, False,
                  False)


def test_rule_spec_reaches_the_generated_kernel():
    """Every Rule has its kernel, whose arguments are the spec's args then its Python flags."""
    for cls in (nopt.Adam, nopt.SGD, nopt.RMSprop, nopt.ASGD):
        rule = cls.rule
        doc = getattr(rules, rule.name).__doc__
        for name in rule.args + rule.python_flags:
            assert name in doc.split("\n")[0]
    assert issubclass(nopt.Adam, Optimizer)


def test_option_state_checked_at_load_comes_from_the_spec():
    """The arrays a group's options need at load are the spec's optional streams
    (``(key, init, when)``), not a hand-written list per optimizer."""
    for cls in (nopt.Adam, nopt.RMSprop):
        assert "_option_state" not in vars(cls)
    cases = [(nopt.Adam, dict(amsgrad=True), "max_exp_avg_sq", "'amsgrad' on"),
             (nopt.RMSprop, dict(momentum=0.9), "momentum_buffer", "'use_momentum' on"),
             (nopt.RMSprop, dict(centered=True), "grad_avg", "'centered' on")]
    for cls, options, key, flag in cases:
        p = nopt.Parameter(np.ones(3))
        p.grad = np.ones(3)
        opt = cls([p], **options)
        opt.step()
        saved = opt.state_dict()
        del saved["state"][0][key]
        before = {k: np.array(v, copy=True) for k, v in opt.state[p].items()}
        with pytest.raises(ValueError, match=rf"param_groups\[0\]\['params'\]\[0\] lacks '{key}'"
                                             rf".*{flag}"):
            opt.load_state_dict(saved)
        assert opt.state[p].keys() == before.keys()
        # Without the option the array is not needed.
        plain = cls([nopt.Parameter(np.ones(3))])
        saved["param_groups"][0].update({k: type(v)(0) if not isinstance(v, bool) else False
                                         for k, v in options.items()})
        plain.load_state_dict(saved)


def test_spec_pieces_are_checked_and_prepended():
    """A shared piece (nopt/_kernels/_spec.py PIECES) opens the body; a rule lacking
    what the piece reads, or naming an unknown piece, fails when the spec is made
    (so at build time, in setup.py), not in the C compiler."""
    from nopt._kernels._spec import PIECES, Rule

    for cls in (nopt.Adam, nopt.RAdam, nopt.NAdam):
        assert cls.rule.pieces == ("adam_moments",)
        assert cls.rule.body.startswith(PIECES["adam_moments"][1].strip("\n"))
    # Placed where the body says: the schedule-free rules end with their shared step.
    from nopt import schedule_free

    step = PIECES["schedule_free_step"][1].strip("\n")
    for spec in (schedule_free.RULE_SGD, schedule_free.RULE_ADAMW):
        assert spec.body.endswith(step) and "# piece" not in spec.body
    assert "fsqrt(v / bc2)" in schedule_free.RULE_ADAMW.body.split(step)[0]
    with pytest.raises(ValueError, match="places piece 'schedule_free_step', which pieces="):
        Rule("x", body="# piece schedule_free_step")
    with pytest.raises(ValueError, match="unknown piece 'nope'"):
        Rule("x", body="pass", pieces=("nope",))
    with pytest.raises(ValueError, match=r"piece 'adam_moments' needs \[.*'decay'"):
        Rule("x", body="pass", pieces=("adam_moments",), state=("exp_avg", "exp_avg_sq"),
             args=("sign", "wd", "w", "beta2", "one_minus_beta2"),
             derived=(("w_minus_1", "w_t - 1"),), flags=(("coupled", "wd != 0"), ("small", "1")))
