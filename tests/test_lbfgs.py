"""nopt.LBFGS: torch parity (fixed step), scipy's line search, closures, state."""
import contextlib
import copy

import numpy as np
import pytest
import scipy.optimize as so

import nopt
from nopt._linesearch import NonFiniteError
from nopt.lbfgs import LBFGS

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

SHAPES = [(3, 4), (5,), (2, 1, 3)]
N = sum(int(np.prod(s)) for s in SHAPES)
TORCH_KEYS = {"func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag",
              "prev_flat_grad", "prev_loss", "al"}


def one_thread():
    return threadpool_limits(1) if threadpool_limits else contextlib.nullcontext()


class Problem:
    """f(v) = 0.5 v'Av + 0.05 sum v^4 - b'v over the concatenated arrays (convex, cond ~ 20)."""

    def __init__(self, n=N, seed=0):
        rng = np.random.default_rng(seed)
        Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        self.A = (Q * np.linspace(0.5, 10.0, n)) @ Q.T
        self.A = 0.5 * (self.A + self.A.T)
        self.b = rng.standard_normal(n)
        self.x0 = 4 * rng.standard_normal(n)

    def __call__(self, v):
        v = np.asarray(v, dtype=np.float64)
        Av = self.A @ v
        return 0.5 * v @ Av + 0.05 * np.sum(v ** 4) - self.b @ v, Av + 0.2 * v ** 3 - self.b


def split(v, shapes=SHAPES):
    out, k = [], 0
    for s in shapes:
        size = int(np.prod(s))
        out.append(np.asarray(v[k:k + size]).reshape(s))
        k += size
    return out


def make_params(x0, dtype, shapes=SHAPES):
    return [nopt.Parameter(a.astype(dtype)) for a in split(x0, shapes)]


def make_closure(params, fun, log=None):
    """The closure protocol: set .grad on every parameter, return the loss."""
    def closure():
        v = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in params])
        if log is not None:
            log.append(v.copy())
        f, g = fun(v)
        for p, gp in zip(params, split(g, [p.shape for p in params])):
            p.grad = np.ascontiguousarray(gp, dtype=p.dtype)
        return f
    return closure


def flat_values(params):
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in params])


# ---------------------------------------------------------------- torch parity
def torch_state_as_numpy(state):
    def conv(v):
        if hasattr(v, "detach"):
            a = v.detach().numpy()
            return a.item() if a.ndim == 0 else a.copy()
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v
    return {k: conv(v) for k, v in state.items()}


def assert_state_close(ours, theirs, tol):
    """Keys, counters and shapes equal; numbers within ``tol`` of each array's (or list's) scale."""
    assert set(ours) == set(theirs)
    for key in ours:
        a, b = ours[key], theirs[key]
        if key in ("func_evals", "n_iter"):
            assert a == b, key
            continue
        if isinstance(b, list):
            assert len(a) == len(b), key
            assert [x is None for x in a] == [y is None for y in b], key
            a = [x for x in a if x is not None]
            b = [y for y in b if y is not None]
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert a.shape == b.shape, key
        if tol is None:
            continue
        scale = np.abs(b).max(initial=0.0)
        np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale, err_msg=key)


OPTIONS = [
    dict(),
    dict(lr=0.5, history_size=3),
    dict(max_iter=5, max_eval=4),
    dict(lr=0.8, max_iter=30, tolerance_grad=1e-3, tolerance_change=1e-5),
]


def _option_id(o):
    return ",".join(f"{k}={v}" for k, v in o.items()) or "default"


@pytest.mark.parametrize("options", OPTIONS, ids=_option_id)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_fixed_step_matches_torch(dtype, options):
    """The trajectory (parameters, loss) is torch's: float64 to 1e-10, float32 to 1e-4.

    The state is compared in float64 only, to 1e-10 of each array's scale while
    the gradient is large; it is built from gradient differences y = g_k - g_{k-1},
    which lose digits as g -> 0 (torch's dot products and fused multiply-adds
    round differently from NumPy's), so the bound grows as 1e-13 / max|g|.
    In float32 that regime starts at once: there the counters, keys and shapes
    are compared.
    """
    torch = pytest.importorskip("torch")
    rtol = 1e-10 if dtype == np.float64 else 1e-4
    problem = Problem()
    params = make_params(problem.x0, dtype)
    opt = LBFGS(params, **options)
    closure = make_closure(params, problem)

    tparams = [torch.tensor(a.astype(dtype), requires_grad=True) for a in split(problem.x0)]
    topt = torch.optim.LBFGS(tparams, **options)

    def tclosure():
        v = np.concatenate([p.detach().numpy().astype(np.float64).ravel() for p in tparams])
        f, g = problem(v)
        for p, gp in zip(tparams, split(g)):
            p.grad = torch.tensor(np.ascontiguousarray(gp, dtype=dtype))
        return torch.tensor(f)

    for _ in range(4):
        loss = opt.step(closure)
        tloss = topt.step(tclosure)
        assert loss == pytest.approx(float(tloss), rel=rtol)
        scale = np.abs(flat_values(params)).max()
        for p, tp in zip(params, tparams):
            assert p.dtype == dtype
            np.testing.assert_allclose(p, tp.detach().numpy(), rtol=rtol, atol=rtol * scale)
        ours = opt.state_dict()["state"][0]
        theirs = torch_state_as_numpy(topt.state_dict()["state"][0])
        if dtype == np.float64:
            gmax = np.abs(theirs["prev_flat_grad"]).max()
            assert_state_close(ours, theirs, 1e-10 + 1e-13 / gmax)
        else:
            assert_state_close(ours, theirs, None)
            assert ours["d"].dtype == np.float32


def test_state_layout_is_torchs():
    problem = Problem()
    params = make_params(problem.x0, np.float64)
    for ls in (None, "strong_wolfe"):
        opt = LBFGS(params, line_search_fn=ls, max_iter=3)
        closure = make_closure(params, problem)
        opt.step(closure)
        opt.step(closure)
        sd = opt.state_dict()
        assert list(sd["state"]) == [0]
        assert set(sd["state"][0]) == TORCH_KEYS
        state = sd["state"][0]
        assert isinstance(state["func_evals"], int) and isinstance(state["n_iter"], int)
        assert state["d"].shape == (N,) and state["prev_flat_grad"].shape == (N,)
        assert len(state["old_dirs"]) == len(state["old_stps"]) == len(state["ro"])
        assert len(state["al"]) == 100
        assert set(sd["param_groups"][0]) == {"lr", "max_iter", "max_eval", "tolerance_grad",
                                              "tolerance_change", "history_size", "line_search_fn",
                                              "params"}


def test_torch_state_dict_loads_and_continues():
    torch = pytest.importorskip("torch")
    problem = Problem()
    tparams = [torch.tensor(a, requires_grad=True) for a in split(problem.x0)]
    topt = torch.optim.LBFGS(tparams, lr=0.7, max_iter=4, history_size=5)

    def tclosure():
        v = np.concatenate([p.detach().numpy().ravel() for p in tparams])
        f, g = problem(v)
        for p, gp in zip(tparams, split(g)):
            p.grad = torch.tensor(np.ascontiguousarray(gp))
        return torch.tensor(f)

    topt.step(tclosure)
    topt.step(tclosure)
    sd = topt.state_dict()
    state = torch_state_as_numpy(sd["state"][0])
    params = [nopt.Parameter(p.detach().numpy().copy()) for p in tparams]
    opt = LBFGS(params, lr=0.7, max_iter=4, history_size=5)
    opt.load_state_dict({"state": {0: state}, "param_groups": sd["param_groups"]})
    opt.step(make_closure(params, problem))
    topt.step(tclosure)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- scipy's line search
def logreg(m=400, d=N, lam=1e-2, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    y = np.where(X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(m) > 0, 1.0, -1.0)

    def fg(w):
        z = y * (X @ w)
        s = -y * (0.5 * (1 - np.tanh(z / 2)))
        return float(np.mean(np.logaddexp(0, -z)) + 0.5 * lam * w @ w), X.T @ s / m + lam * w

    return fg


@pytest.mark.parametrize("name", ["logreg", "rosen", "problem"])
def test_strong_wolfe_matches_scipy_over_several_params(name):
    fun = {"logreg": logreg(), "rosen": lambda v: (so.rosen(v), so.rosen_der(v)),
           "problem": Problem()}[name]
    x0 = np.zeros(N) if name == "logreg" else (np.tile([-1.2, 1.0], N // 2 + 1)[:N]
                                                 if name == "rosen" else Problem().x0)
    with one_thread():
        ref = so.minimize(fun, x0, jac=True, method="L-BFGS-B", options=dict(gtol=1e-6))
    params = make_params(x0, np.float64)
    log = []
    opt = LBFGS(params, line_search_fn="strong_wolfe", max_iter=10000, max_eval=10000,
                tolerance_grad=1e-6, tolerance_change=1e-13, history_size=10)
    opt.step(make_closure(params, fun, log))
    assert opt.last_step.reason in ("gtol", "tolerance_change"), opt.last_step
    f = fun(flat_values(params))[0]
    assert abs(f - ref.fun) <= 1e-6 * max(1.0, abs(ref.fun))
    assert len(log) <= 1.5 * ref.nfev, (len(log), ref.nfev)
    assert opt.state[params[0]]["func_evals"] == len(log) == opt.last_step.n_evals
    # no point evaluated twice
    assert len({v.tobytes() for v in log}) == len(log)
    assert opt.last_step.loss == f


def test_strong_wolfe_float32():
    fun = logreg()
    params64 = make_params(np.zeros(N), np.float64)
    LBFGS(params64, line_search_fn="strong_wolfe", max_iter=500, tolerance_grad=1e-8,
          tolerance_change=0).step(make_closure(params64, fun))
    params = make_params(np.zeros(N), np.float32)
    opt = LBFGS(params, line_search_fn="strong_wolfe", max_iter=500, tolerance_grad=1e-4)
    opt.step(make_closure(params, fun))
    assert all(p.dtype == np.float32 for p in params)
    assert opt.state[params[0]]["d"].dtype == np.float32
    assert opt.last_step.reason in ("gtol", "tolerance_change", "line_search"), opt.last_step
    np.testing.assert_allclose(flat_values(params), flat_values(params64), rtol=0, atol=1e-3)
    assert fun(flat_values(params))[0] == pytest.approx(fun(flat_values(params64))[0], rel=1e-6)


def test_mixed_dtypes():
    fun = logreg()
    params = [nopt.Parameter(a.astype(dt)) for a, dt in zip(split(np.zeros(N)),
                                                          (np.float32, np.float64, np.float32))]
    opt = LBFGS(params, line_search_fn="strong_wolfe", max_iter=200, tolerance_grad=1e-4)
    opt.step(make_closure(params, fun))
    assert [p.dtype for p in params] == [np.float32, np.float64, np.float32]
    assert opt.state[params[0]]["d"].dtype == np.float64
    assert np.abs(opt.last_step.grad).max() <= 1e-4


@pytest.mark.parametrize("ls", [None, "strong_wolfe"])
def test_params_in_one_buffer_take_the_fast_path(ls):
    problem = Problem()
    buffer = problem.x0.copy()
    views = [nopt.Parameter(v) for v in split(buffer)]
    separate = make_params(problem.x0, np.float64)
    a = LBFGS(views, line_search_fn=ls, lr=0.5)
    b = LBFGS(separate, line_search_fn=ls, lr=0.5)
    for _ in range(3):
        a.step(make_closure(views, problem))
        b.step(make_closure(separate, problem))
    assert a._flat.view is not None and b._flat.view is None
    np.testing.assert_array_equal(buffer, flat_values(separate))
    np.testing.assert_array_equal(a.state[views[0]]["d"], b.state[separate[0]]["d"])


def test_max_eval_is_respected():
    fun = lambda v: (so.rosen(v), so.rosen_der(v))  # noqa: E731
    params = make_params(np.tile([-1.2, 1.0], N // 2 + 1)[:N], np.float64)
    for max_eval in (1, 2, 7, 30):
        log = []
        opt = LBFGS(params, line_search_fn="strong_wolfe", max_iter=100, max_eval=max_eval)
        opt.step(make_closure(params, fun, log))
        assert len(log) <= max_eval
        assert opt.last_step.reason == "max_eval"


def test_missing_grad_counts_as_zero():
    problem = Problem()
    params = make_params(problem.x0, np.float64)
    extra = nopt.Parameter(np.ones(3))
    opt = LBFGS(params + [extra], line_search_fn="strong_wolfe")
    opt.step(make_closure(params, problem))
    np.testing.assert_array_equal(extra, np.ones(3))


# ---------------------------------------------------------------- state dicts
@pytest.mark.parametrize("ls", [None, "strong_wolfe"])
def test_state_dict_round_trip(ls, tmp_path):
    problem = Problem()
    params = make_params(problem.x0, np.float64)
    opt = LBFGS(params, line_search_fn=ls, max_iter=3, history_size=4, lr=0.5)
    closure = make_closure(params, problem)
    opt.step(closure)
    opt.step(closure)
    nopt.save(opt.state_dict(), tmp_path / "lbfgs.ckpt")

    clone_params = [nopt.Parameter(np.array(p)) for p in params]
    clone = LBFGS(clone_params, line_search_fn=ls, max_iter=3, history_size=4, lr=0.5)
    clone.load_state_dict(nopt.load(tmp_path / "lbfgs.ckpt"))
    clone_closure = make_closure(clone_params, problem)
    for _ in range(3):
        opt.step(closure)
        clone.step(clone_closure)
    for p, q in zip(params, clone_params):
        np.testing.assert_array_equal(p, q)
    a, b = opt.state_dict()["state"][0], clone.state_dict()["state"][0]
    assert a.keys() == b.keys()
    np.testing.assert_array_equal(a["d"], b["d"])
    assert a["func_evals"] == b["func_evals"] and a["n_iter"] == b["n_iter"]


def test_load_state_dict_checks_shapes():
    problem = Problem()
    params = make_params(problem.x0, np.float64)
    opt = LBFGS(params)
    opt.step(make_closure(params, problem))
    sd = copy.deepcopy(opt.state_dict())
    other = LBFGS(make_params(problem.x0, np.float64, shapes=[(3, 4), (5,), (5,)]))
    with pytest.raises(ValueError, match="expected"):
        other.load_state_dict(sd)
    assert len(other.state) == 0
    bad = copy.deepcopy(sd)
    bad["state"][0]["old_dirs"] = bad["state"][0]["old_dirs"][:-1]
    with pytest.raises(ValueError, match="different lengths"):
        LBFGS(make_params(problem.x0, np.float64)).load_state_dict(bad)


# ---------------------------------------------------------------- bad closures
def test_nan_at_start_raises_and_changes_nothing():
    params = make_params(Problem().x0, np.float64)
    before = flat_values(params)
    opt = LBFGS(params, line_search_fn="strong_wolfe")
    closure = make_closure(params, lambda v: (np.nan, v))
    with pytest.raises(NonFiniteError, match="non-finite loss"):
        opt.step(closure)
    np.testing.assert_array_equal(flat_values(params), before)
    assert opt.state[params[0]] == {}
    with pytest.raises(FloatingPointError, match="non-finite gradient"):
        opt.step(make_closure(params, lambda v: (1.0, v * np.inf)))


def test_fixed_step_nonfinite_restores_and_raises():
    problem = Problem()
    params = make_params(problem.x0, np.float64)
    opt = LBFGS(params, lr=1.0)
    calls = []

    def fun(v):
        calls.append(v)
        return problem(v) if len(calls) < 4 else (np.inf, v)

    closure = make_closure(params, fun)
    with pytest.raises(NonFiniteError, match="put back"):
        opt.step(closure)
    np.testing.assert_array_equal(flat_values(params), calls[-2])
    state = opt.state[params[0]]
    assert state["func_evals"] == 4 and state["t"] == 0.0


def test_line_search_backtracks_out_of_nan_region():
    params = [nopt.Parameter(np.array([0.6, 0.3]))]

    def fun(v):
        f = float(50 * v @ v)
        return (f if v.min() > -0.2 else np.nan), 100 * v

    opt = LBFGS(params, line_search_fn="strong_wolfe", max_iter=50)
    opt.step(make_closure(params, fun))
    assert opt.last_step.reason == "gtol"
    np.testing.assert_allclose(params[0], 0, atol=1e-9)


def test_nan_everywhere_stops_with_a_status():
    x0 = np.array([0.5, -0.25])
    params = [nopt.Parameter(x0.copy())]

    def fun(v):
        return (float(v @ v) if np.array_equal(v, x0) else np.nan), 2 * v

    log = []
    opt = LBFGS(params, line_search_fn="strong_wolfe", max_iter=100, max_eval=10000)
    opt.step(make_closure(params, fun, log))
    assert opt.last_step.reason == "nonfinite" and opt.last_step.status == 3
    np.testing.assert_array_equal(params[0], x0)
    assert len(log) <= 1 + opt.max_ls


def test_wrong_gradient_stops_with_a_status():
    params = [nopt.Parameter(np.array([1.0, 2.0]))]
    log = []
    opt = LBFGS(params, line_search_fn="strong_wolfe", max_iter=100, max_eval=10000)
    opt.step(make_closure(params, lambda v: (float(v @ v), -2 * v), log))
    assert opt.last_step.reason == "line_search" and opt.last_step.status == 2
    np.testing.assert_array_equal(params[0], [1.0, 2.0])
    assert len(log) <= 1 + opt.max_ls


@pytest.mark.parametrize("ls", [None, "strong_wolfe"])
def test_raising_closure_propagates_with_params_at_an_accepted_point(ls):
    problem = Problem()
    params = make_params(problem.x0, np.float64)
    log = []

    def fun(v):
        if len(log) == 6:
            raise KeyError("boom")
        return problem(v)

    opt = LBFGS(params, line_search_fn=ls, max_iter=50, lr=0.5)
    with pytest.raises(KeyError, match="boom"):
        opt.step(make_closure(params, fun, log))
    x = flat_values(params)
    assert any(np.array_equal(x, v) for v in log[:-1])
    assert not np.array_equal(x, log[-1])
    assert opt.state[params[0]]["func_evals"] == len(log)


def test_closure_errors():
    params = make_params(Problem().x0, np.float64)
    opt = LBFGS(params)
    with pytest.raises(TypeError, match="needs a closure"):
        opt.step(None)
    with pytest.raises(TypeError, match="returned None"):
        opt.step(lambda: None)
    with pytest.raises(TypeError, match="scalar loss"):
        opt.step(lambda: np.ones(3))
    for p in params:
        p.grad = None
    with pytest.raises(RuntimeError, match="no gradient"):
        opt.step(lambda: 1.0)


def test_hyperparameter_validation():
    params = make_params(Problem().x0, np.float64)
    for kwargs, match in [
        (dict(lr=-1), "learning rate"), (dict(max_iter=0), "max_iter"), (dict(max_eval=0), "max_eval"),
        (dict(history_size=0), "history_size"), (dict(tolerance_grad=-1), "tolerance_grad"),
        (dict(tolerance_change=float("nan")), "tolerance_change"),
        (dict(line_search_fn="armijo"), "strong_wolfe"),
    ]:
        with pytest.raises(ValueError, match=match):
            LBFGS(params, **kwargs)
    with pytest.raises(ValueError, match="parameter groups"):
        LBFGS([{"params": params[:1]}, {"params": params[1:]}])
    opt = LBFGS(params)
    assert opt.defaults["max_eval"] == 25
    with pytest.raises(ValueError, match="parameter groups"):
        opt.add_param_group({"params": [nopt.Parameter(np.ones(2))]})


def test_step_hooks_run():
    problem = Problem()
    params = make_params(problem.x0, np.float64)
    opt = LBFGS(params)
    seen = []
    opt.register_step_post_hook(lambda o, a, k: seen.append(o.state[params[0]]["n_iter"]))
    opt.step(make_closure(params, problem))
    assert seen == [opt.state[params[0]]["n_iter"]]


@pytest.mark.parametrize("cls", [nopt.LBFGS, nopt.CG])
def test_a_refused_load_runs_no_post_hook_and_changes_nothing(cls):
    """The closure optimizers' load checks (options as the constructor, history shapes) run
    inside the base class's load, before anything changes: a refused state dict leaves the
    optimizer as it was and never reaches the post-load hooks (before, the hooks ran and the
    state was put back afterwards, outside the optimizer's lock)."""
    x = nopt.Parameter(np.array([1.5, -0.5]))

    def closure():
        x.grad = 2 * np.asarray(x)
        return float(np.sum(np.asarray(x) ** 2))

    opt = cls([x], max_iter=3)
    opt.step(closure)
    good = opt.state_dict()
    groups, state = opt.param_groups, opt.state
    calls = []
    opt.register_load_state_dict_post_hook(lambda o: calls.append(1))
    bad_history = {"state": {0: {**good["state"][0], "d": np.zeros(5)}},
                   "param_groups": good["param_groups"]}
    bad_option = {"state": good["state"],
                  "param_groups": [{**good["param_groups"][0], "max_iter": 0}]}
    for bad in (bad_history, bad_option):
        with pytest.raises(ValueError):
            opt.load_state_dict(bad)
        assert opt.param_groups is groups and opt.state is state and calls == []
    opt.load_state_dict(good)
    assert calls == [1]
