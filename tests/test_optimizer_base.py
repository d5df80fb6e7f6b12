"""The Optimizer base class: torch's semantics, errors and hooks."""
import warnings

import numpy as np
import pytest

import nopt
from nopt import Parameter
from nopt.optimizer import Optimizer, required


def params3(dtype=np.float64):
    rng = np.random.default_rng(0)
    return [Parameter(rng.standard_normal(s).astype(dtype)) for s in [(3,), (2, 2), (1,)]]


def set_grads(params, value=1.0):
    for p in params:
        p.grad = np.full(p.shape, value, dtype=p.dtype)


class Plain(Optimizer):
    def __init__(self, params, lr=required, flag=False):
        super().__init__(params, dict(lr=lr, flag=flag))

    def step(self, closure=None):
        return closure() if closure is not None else None


def test_param_groups_and_defaults():
    a, b, c = params3()
    opt = nopt.SGD([{"params": [a, b]}, {"params": c, "lr": 0.5}], lr=0.1, momentum=0.9)
    assert len(opt.param_groups) == 2
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[1]["lr"] == 0.5
    assert opt.param_groups[1]["params"] == [c]
    assert opt.param_groups[1]["momentum"] == 0.9
    assert opt.defaults["lr"] == 0.1


def test_constructor_errors():
    p = Parameter(np.zeros(2))
    with pytest.raises(TypeError, match="iterable of Parameters or dicts"):
        nopt.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        nopt.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="ordered collections"):
        nopt.SGD({p}, lr=0.1)
    with pytest.raises(TypeError, match="can only optimize nopt.Parameter"):
        nopt.SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(TypeError, match="can only optimize nopt.Parameter"):
        nopt.SGD([[1.0, 2.0]], lr=0.1)


def test_required_hyperparameter():
    p = Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="didn't specify a value of required optimization parameter lr"):
        Plain([p])
    opt = Plain([{"params": [p], "lr": 0.3}])
    assert opt.param_groups[0]["lr"] == 0.3
    assert repr(required) == "<required parameter>"


def test_add_param_group_errors():
    a, b, c = params3()
    opt = nopt.SGD([a], lr=0.1)
    with pytest.raises(TypeError, match="param_group must be a dict"):
        opt.add_param_group([b])
    with pytest.raises(TypeError, match="ordered collections"):
        opt.add_param_group({"params": {b}})
    with pytest.raises(TypeError, match="can only optimize"):
        opt.add_param_group({"params": [np.ones(2)]})
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [b, a]})
    assert len(opt.param_groups) == 1
    with pytest.raises(ValueError, match="duplicate parameters"):
        opt.add_param_group({"params": [b, b]})
    x = np.zeros(6)
    with pytest.raises(ValueError, match=r"share memory"):
        nopt.SGD([Parameter(x[:4]), Parameter(x[3:])], lr=0.1)
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\] and param_groups\[1\]"):
        nopt.SGD([{"params": [Parameter(x)]}, {"params": [Parameter(x)]}], lr=0.1)
    nopt.SGD([Parameter(x[:3]), Parameter(x[3:])], lr=0.1)  # adjacent is fine
    opt.add_param_group({"params": [b]})
    opt.add_param_group({"params": c, "lr": 0.01})
    assert opt.param_groups[-1]["params"] == [c] and opt.param_groups[-1]["momentum"] == 0


def test_named_params():
    a, b, _ = params3()
    opt = nopt.SGD([("w", a), ("b", b)], lr=0.1)
    assert opt.param_groups[0]["param_names"] == ["w", "b"]
    with pytest.raises(ValueError, match="with/without names"):
        opt.add_param_group({"params": [Parameter(np.ones(1))]})


def test_zero_grad():
    params = params3()
    opt = nopt.SGD(params, lr=0.1)
    set_grads(params, 2.0)
    grads = [p.grad for p in params]
    opt.zero_grad(set_to_none=False)
    for p, g in zip(params, grads):
        assert p.grad is g and not g.any()
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_step_returns_closure_loss_and_skips_params_without_grad():
    a, b, c = params3()
    before = b.copy()
    opt = nopt.SGD([a, b, c], lr=0.1)
    calls = []

    def closure():
        calls.append(1)
        a.grad = np.ones_like(a)
        c.grad = np.ones_like(c)
        return 4.5

    assert opt.step(closure) == 4.5
    assert calls == [1]
    np.testing.assert_array_equal(b, before)
    assert opt.step() is None


def test_repr_like_torch():
    a, b, c = params3()
    opt = nopt.SGD([{"params": [a]}, {"params": [b, c], "lr": 0.5}], lr=0.1)
    text = repr(opt)
    assert text.startswith("SGD (\nParameter Group 0\n    dampening: 0\n    lr: 0.1\n")
    assert "Parameter Group 1\n" in text and "    lr: 0.5\n" in text and text.endswith(")")
    torch = pytest.importorskip("torch")
    t = [torch.zeros(1, requires_grad=True) for _ in range(3)]
    topt = torch.optim.SGD([{"params": [t[0]]}, {"params": t[1:], "lr": 0.5}], lr=0.1)
    expected = "\n".join(line for line in repr(topt).splitlines()
                         if not any(k in line for k in ("foreach", "fused", "differentiable")))
    assert text == expected


def test_step_hooks_order_and_removal():
    params = params3()
    opt = nopt.SGD(params, lr=0.1)
    log = []
    h1 = opt.register_step_pre_hook(lambda o, args, kwargs: log.append(("pre", o is opt)))
    h2 = opt.register_step_post_hook(lambda o, args, kwargs: log.append(("post", o is opt)))
    g1 = nopt.register_optimizer_step_pre_hook(lambda o, a, k: log.append(("gpre", True)))
    g2 = nopt.register_optimizer_step_post_hook(lambda o, a, k: log.append(("gpost", True)))
    try:
        set_grads(params)
        opt.step()
        assert log == [("gpre", True), ("pre", True), ("post", True), ("gpost", True)]
        for h in (h1, h2, g1, g2):
            h.remove()
        log.clear()
        opt.step()
        assert log == []
    finally:
        g1.remove()
        g2.remove()


def test_step_pre_hook_can_replace_arguments():
    params = params3()
    opt = nopt.SGD(params, lr=0.1)
    opt.register_step_pre_hook(lambda o, args, kwargs: ((lambda: 7.0,), {}))
    set_grads(params)
    assert opt.step() == 7.0
    opt2 = nopt.SGD(params3(), lr=0.1)
    opt2.register_step_pre_hook(lambda o, args, kwargs: 5)
    with pytest.raises(RuntimeError, match="must return None or a tuple"):
        opt2.step()


def test_state_dict_hooks():
    params = params3()
    opt = nopt.SGD(params, lr=0.1, momentum=0.9)
    log = []
    opt.register_state_dict_pre_hook(lambda o: log.append("pre"))

    def post(o, sd):
        log.append("post")
        sd["extra"] = 1
        return sd

    opt.register_state_dict_post_hook(post)
    sd = opt.state_dict()
    assert sd["extra"] == 1 and log == ["pre", "post"]

    def load_pre(o, sd):
        log.append("load_pre")
        sd = dict(sd)
        sd.pop("extra")
        return sd

    h = opt.register_load_state_dict_pre_hook(load_pre)
    opt.register_load_state_dict_post_hook(lambda o: log.append("load_post"))
    opt.load_state_dict(sd)
    assert log[-2:] == ["load_pre", "load_post"]
    h.remove()
    order = []
    opt.register_state_dict_pre_hook(lambda o: order.append(2))
    opt.register_state_dict_pre_hook(lambda o: order.append(1), prepend=True)
    opt.state_dict()
    assert order == [1, 2]


def test_state_dict_layout_matches_torch():
    torch = pytest.importorskip("torch")
    a, b, c = params3()
    opt = nopt.SGD([{"params": [a, b]}, {"params": [c], "lr": 0.5}], lr=0.1, momentum=0.9)
    set_grads([a, b, c])
    opt.step()
    sd = opt.state_dict()
    ta, tb, tc = (torch.tensor(np.asarray(p), requires_grad=True) for p in (a, b, c))
    topt = torch.optim.SGD([{"params": [ta, tb]}, {"params": [tc], "lr": 0.5}], lr=0.1, momentum=0.9)
    for t in (ta, tb, tc):
        t.grad = torch.ones_like(t)
    topt.step()
    tsd = topt.state_dict()
    assert sd["state"].keys() == tsd["state"].keys()
    assert [g["params"] for g in sd["param_groups"]] == [g["params"] for g in tsd["param_groups"]]
    for g, tg in zip(sd["param_groups"], tsd["param_groups"]):
        for k, v in g.items():
            assert tg[k] == v
    for k in sd["state"]:
        np.testing.assert_allclose(sd["state"][k]["momentum_buffer"],
                                   tsd["state"][k]["momentum_buffer"].numpy(), rtol=1e-15)


def _run(opt, params, steps, seed):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        for p in params:
            p.grad = rng.standard_normal(p.shape).astype(p.dtype)
        opt.step()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_dict_round_trip_continues_identically(dtype):
    params = params3(dtype)
    opt = nopt.SGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.3}],
                   lr=0.1, momentum=0.9, nesterov=True)
    _run(opt, params, 5, 0)
    sd = opt.state_dict()
    clones = [Parameter(p.copy()) for p in params]
    opt2 = nopt.SGD([{"params": clones[:2]}, {"params": clones[2:]}], lr=1.0)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[1]["lr"] == 0.3 and opt2.param_groups[0]["nesterov"]
    for p, q in zip(params, clones):
        assert opt2.state[q]["momentum_buffer"] is not opt.state[p]["momentum_buffer"]
    _run(opt, params, 7, 1)
    _run(opt2, clones, 7, 1)
    for p, q in zip(params, clones):
        assert p.tobytes() == q.tobytes()


def test_load_state_dict_casts_floating_state_to_param_dtype():
    params = params3(np.float32)
    opt = nopt.SGD(params, lr=0.1, momentum=0.9)
    set_grads(params)
    opt.step()
    sd = opt.state_dict()
    sd["state"] = {k: {"momentum_buffer": v["momentum_buffer"].astype(np.float64)} for k, v in sd["state"].items()}
    opt.load_state_dict(sd)
    assert all(s["momentum_buffer"].dtype == np.float32 for s in opt.state.values())


def _loaded_opt():
    params = params3()
    opt = nopt.SGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.5}], lr=0.1, momentum=0.9)
    set_grads(params)
    opt.step()
    return params, opt


def _corrupt(sd, how):
    sd = {"state": {k: dict(v) for k, v in sd["state"].items()},
          "param_groups": [dict(g) for g in sd["param_groups"]]}
    how(sd)
    return sd


BAD_LOADS = [
    ("not a dict", lambda sd: None, TypeError),
    ("missing state", lambda sd: sd.pop("state"), ValueError),
    ("missing groups", lambda sd: sd.pop("param_groups"), ValueError),
    ("extra group", lambda sd: sd["param_groups"].append(dict(sd["param_groups"][0], params=[9])), ValueError),
    ("group size", lambda sd: sd["param_groups"][0].update(params=[0]), ValueError),
    ("unknown id", lambda sd: sd["state"].update({7: sd["state"][0]}), ValueError),
    ("string id", lambda sd: sd["param_groups"][0].update(params=["a", 1]), TypeError),
    ("wrong shape", lambda sd: sd["state"][1].update(momentum_buffer=np.zeros(3)), ValueError),
    ("int dtype", lambda sd: sd["state"][1].update(momentum_buffer=np.zeros((2, 2), dtype=int)), TypeError),
    ("object dtype", lambda sd: sd["state"][0].update(momentum_buffer=np.array([None] * 3)), TypeError),
    ("string lr", lambda sd: sd["param_groups"][1].update(lr="fast"), TypeError),
    ("string nesterov", lambda sd: sd["param_groups"][1].update(nesterov="yes"), TypeError),
    ("missing lr", lambda sd: sd["param_groups"][1].pop("lr"), ValueError),
    ("state not dict", lambda sd: sd["state"].update({0: [1, 2]}), TypeError),
    ("string state", lambda sd: sd["state"][0].update(momentum_buffer="x"), TypeError),
]


@pytest.mark.parametrize("name,how,exc", BAD_LOADS, ids=[b[0] for b in BAD_LOADS])
def test_bad_load_state_dict_changes_nothing(name, how, exc):
    params, opt = _loaded_opt()
    sd = opt.state_dict()
    before_groups = [dict(g) for g in opt.param_groups]
    before_state = {id(p): {k: v.copy() for k, v in s.items()} for p, s in opt.state.items()}
    bad = None if name == "not a dict" else _corrupt(sd, how)
    with pytest.raises(exc):
        opt.load_state_dict(bad if bad is not None else [1, 2])
    assert opt.param_groups == before_groups
    after_state = {id(p): s for p, s in opt.state.items()}
    assert after_state.keys() == before_state.keys()
    for k, s in before_state.items():
        for key, value in s.items():
            assert after_state[k][key].tobytes() == value.tobytes()


def test_getstate_setstate_pickle():
    import pickle
    params, opt = _loaded_opt()
    clone = pickle.loads(pickle.dumps(opt))
    assert clone.param_groups[1]["lr"] == 0.5
    assert len(clone.state) == 3


def test_no_warning_in_plain_use():
    params = params3()
    opt = nopt.SGD(params, lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        set_grads(params)
        opt.step()


def test_sparse_gradient_on_a_dense_optimizer_points_to_sparse_adam():
    import scipy.sparse as sp

    p = Parameter(np.zeros((2, 3)))
    opt = nopt.Adam([p], lr=0.1)
    p.grad = sp.coo_array(([1.0], ([0], [1])), shape=(2, 3))
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[0\].*consider SparseAdam"):
        opt.step()
    assert not p.any() and not opt.state
