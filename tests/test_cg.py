"""nopt.CG: beta rules, restarts, scipy's line search through the closure, state."""
import contextlib
import copy

import numpy as np
import pytest
import scipy.optimize as so

import nopt
from nopt._linesearch import NonFiniteError
from nopt.cg import BETA_RULES, CG

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

SHAPES = [(4, 5), (6,), (2, 2, 1)]
N = sum(int(np.prod(s)) for s in SHAPES)
STATE_KEYS = {"func_evals", "n_iter", "d", "t", "prev_flat_grad", "prev_loss", "n_since_restart"}


def one_thread():
    return threadpool_limits(1) if threadpool_limits else contextlib.nullcontext()


def split(v, shapes=SHAPES):
    out, k = [], 0
    for s in shapes:
        size = int(np.prod(s))
        out.append(np.asarray(v[k:k + size]).reshape(s))
        k += size
    return out


def make_params(x0, dtype=np.float64, shapes=SHAPES):
    return [nopt.Parameter(a.astype(dtype)) for a in split(x0, shapes)]


def flat_values(params):
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in params])


def make_closure(params, fun, log=None):
    def closure():
        v = flat_values(params)
        if log is not None:
            log.append(v)
        f, g = fun(v)
        for p, gp in zip(params, split(g, [p.shape for p in params])):
            p.grad = np.ascontiguousarray(gp, dtype=p.dtype)
        return f
    return closure


def quadratic(n=N, cond=100.0, seed=0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (Q * np.logspace(0, np.log10(cond), n)) @ Q.T
    A = 0.5 * (A + A.T)
    b = rng.standard_normal(n)

    def fg(x):
        Ax = A @ x
        return float(0.5 * x @ Ax - b @ x), Ax - b

    return fg, np.linalg.solve(A, b)


def logreg(m=300, d=N, lam=1e-2, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    y = np.where(X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(m) > 0, 1.0, -1.0)

    def fg(w):
        z = y * (X @ w)
        s = -y * (0.5 * (1 - np.tanh(z / 2)))
        return float(np.mean(np.logaddexp(0, -z)) + 0.5 * lam * w @ w), X.T @ s / m + lam * w

    return fg


def rosen(v):
    return so.rosen(v), so.rosen_der(v)


def rosen_x0(n=N):
    return np.tile([-1.2, 1.0], n // 2 + 1)[:n]


def run(fun, x0, log=None, dtype=np.float64, **options):
    params = make_params(x0, dtype)
    kw = dict(max_iter=100000, max_eval=1000000, tolerance_grad=1e-5, tolerance_change=0.0)
    kw.update(options)
    opt = CG(params, **kw)
    opt.step(make_closure(params, fun, log))
    return params, opt


# ---------------------------------------------------------------- against scipy
@pytest.mark.parametrize("name", ["rosen", "logreg", "quadratic"])
def test_pr_plus_matches_scipy_cg_over_several_params(name):
    fun, x0 = {"rosen": (rosen, rosen_x0()), "logreg": (logreg(), np.zeros(N)),
               "quadratic": (quadratic()[0], np.zeros(N))}[name]
    with one_thread():
        ref = so.minimize(fun, x0, jac=True, method="CG")
    log = []
    params, opt = run(fun, x0, log)
    assert opt.last_step.reason == "gtol", opt.last_step
    f = fun(flat_values(params))[0]
    assert abs(f - ref.fun) <= 1e-6 * max(1.0, abs(ref.fun))
    assert len(log) <= 1.5 * ref.nfev, (len(log), ref.nfev)
    assert len({v.tobytes() for v in log}) == len(log)  # no point evaluated twice
    assert opt.state[params[0]]["func_evals"] == len(log) == opt.last_step.n_evals


@pytest.mark.parametrize("beta", BETA_RULES)
def test_every_beta_rule_solves_a_quadratic(beta):
    fun, x_star = quadratic(cond=50)
    params, opt = run(fun, np.zeros(N), beta=beta, tolerance_grad=1e-7)
    assert opt.last_step.reason == "gtol", opt.last_step
    x = flat_values(params)
    assert np.linalg.norm(x - x_star) <= 1e-6 * np.linalg.norm(x_star)


@pytest.mark.parametrize("beta", BETA_RULES)
def test_every_beta_rule_solves_rosenbrock(beta):
    params = [nopt.Parameter(rosen_x0(6))]
    opt = CG(params, max_iter=100000, max_eval=100000, tolerance_grad=1e-6, beta=beta,
             tolerance_change=0)
    opt.step(make_closure(params, rosen))
    assert opt.last_step.reason == "gtol", opt.last_step
    np.testing.assert_allclose(params[0], np.ones(6), atol=1e-5)


def test_float32():
    fun = logreg()
    p64, _ = run(fun, np.zeros(N), tolerance_grad=1e-9)
    params, opt = run(fun, np.zeros(N), dtype=np.float32, tolerance_grad=1e-4)
    assert all(p.dtype == np.float32 for p in params)
    assert opt.state[params[0]]["d"].dtype == np.float32
    assert opt.last_step.reason in ("gtol", "line_search"), opt.last_step
    np.testing.assert_allclose(flat_values(params), flat_values(p64), atol=1e-3)


# ---------------------------------------------------------------- restarts
def test_restart_every_1_is_steepest_descent():
    fun, _ = quadratic(cond=10)
    params = make_params(np.zeros(N))
    opt = CG(params, max_iter=1, max_eval=30, restart_every=1)
    closure = make_closure(params, fun)
    for _ in range(5):
        opt.step(closure)
        state = opt.state[params[0]]
        np.testing.assert_array_equal(state["d"], -state["prev_flat_grad"])
        assert state["n_since_restart"] == 0


def test_restart_period():
    fun, _ = quadratic(cond=10)
    params = make_params(np.zeros(N))
    opt = CG(params, max_iter=1, max_eval=30, restart_every=3)
    closure = make_closure(params, fun)
    seen = []
    for _ in range(7):
        opt.step(closure)
        seen.append(opt.state[params[0]]["n_since_restart"])
    assert seen == [0, 1, 2, 0, 1, 2, 0]
    # the default period is the number of variables
    assert CG(params).param_groups[0]["restart_every"] is None


def test_restart_when_not_a_descent_direction():
    fun, _ = quadratic(cond=10)
    params = make_params(np.ones(N))
    opt = CG(params, max_iter=1, max_eval=30, beta="FR")
    closure = make_closure(params, fun)
    opt.step(closure)
    opt.step(closure)
    state = opt.state[params[0]]
    assert state["n_since_restart"] == 1
    # An uphill previous direction and a tiny previous gradient make beta * d huge
    # and uphill: the next direction must restart at -g.
    g = fun(flat_values(params))[1]
    state["d"] = g.copy()
    state["prev_flat_grad"] = 1e-3 * g
    opt.step(closure)
    np.testing.assert_array_equal(state["d"], -g)
    assert state["n_since_restart"] == 0


# ---------------------------------------------------------------- state
def test_state_keys_and_round_trip(tmp_path):
    fun = logreg()
    params = make_params(np.zeros(N))
    opt = CG(params, max_iter=3, beta="HS")
    closure = make_closure(params, fun)
    opt.step(closure)
    sd = opt.state_dict()
    assert set(sd["state"][0]) == STATE_KEYS
    nopt.save(sd, tmp_path / "cg.ckpt")
    clone_params = [nopt.Parameter(np.array(p)) for p in params]
    clone = CG(clone_params, max_iter=3, beta="HS")
    clone.load_state_dict(nopt.load(tmp_path / "cg.ckpt"))
    clone_closure = make_closure(clone_params, fun)
    for _ in range(3):
        opt.step(closure)
        clone.step(clone_closure)
    for p, q in zip(params, clone_params):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(opt.state[params[0]]["d"], clone.state[clone_params[0]]["d"])

    bad = copy.deepcopy(opt.state_dict())
    bad["state"][0]["d"] = bad["state"][0]["d"][:-1]
    fresh = CG(make_params(np.zeros(N)))
    with pytest.raises(ValueError, match="expected"):
        fresh.load_state_dict(bad)
    assert len(fresh.state) == 0


def test_resumed_steps_continue_the_same_run():
    """max_iter=k steps in a row follow one long run exactly (deterministic closure)."""
    fun = logreg()
    p1, o1 = run(fun, np.zeros(N), max_iter=12, tolerance_grad=0)
    params = make_params(np.zeros(N))
    opt = CG(params, max_iter=4, max_eval=1000, tolerance_grad=0, tolerance_change=0.0)
    closure = make_closure(params, fun)
    for _ in range(3):
        opt.step(closure)
    np.testing.assert_array_equal(flat_values(params), flat_values(p1))


# ---------------------------------------------------------------- bad closures
def test_nan_at_start_raises_and_changes_nothing():
    params = make_params(np.ones(N))
    opt = CG(params)
    with pytest.raises(NonFiniteError, match="non-finite loss"):
        opt.step(make_closure(params, lambda v: (np.nan, v)))
    np.testing.assert_array_equal(flat_values(params), np.ones(N))
    assert opt.state[params[0]] == {}


def test_inf_region_backtracks():
    params = [nopt.Parameter(np.array([0.6, 0.3]))]

    def fun(v):
        return (float(50 * v @ v) if v.min() > -0.2 else np.inf), 100 * v

    opt = CG(params, max_iter=50)
    opt.step(make_closure(params, fun))
    assert opt.last_step.reason == "gtol"
    np.testing.assert_allclose(params[0], 0, atol=1e-9)


def test_wrong_gradient_stops_with_a_status():
    params = [nopt.Parameter(np.array([1.0, 2.0]))]
    log = []
    opt = CG(params, max_iter=100, max_eval=10000)
    opt.step(make_closure(params, lambda v: (float(v @ v), -2 * v), log))
    assert opt.last_step.reason == "line_search" and opt.last_step.status == 2
    np.testing.assert_array_equal(params[0], [1.0, 2.0])
    assert len(log) <= 1 + opt.max_ls


def test_raising_closure_puts_params_back():
    fun = logreg()
    params = make_params(np.zeros(N))
    log = []

    def f(v):
        if len(log) == 5:
            raise KeyError("boom")
        return fun(v)

    opt = CG(params, max_iter=50)
    with pytest.raises(KeyError):
        opt.step(make_closure(params, f, log))
    x = flat_values(params)
    assert any(np.array_equal(x, v) for v in log[:-1]) and not np.array_equal(x, log[-1])
    assert opt.state[params[0]]["func_evals"] == len(log)


def test_max_eval_is_respected():
    for max_eval in (1, 2, 9):
        log = []
        params, opt = run(rosen, rosen_x0(), log, max_eval=max_eval)
        assert len(log) <= max_eval and opt.last_step.reason == "max_eval"


def test_validation():
    params = make_params(np.ones(N))
    for kwargs, match in [
        (dict(beta="CD"), "beta rule"), (dict(restart_every=0), "restart_every"),
        (dict(c1=0.5, c2=0.4), "Wolfe"), (dict(c2=1.0), "Wolfe"), (dict(max_iter=0), "max_iter"),
        (dict(tolerance_grad=-1), "tolerance_grad"),
    ]:
        with pytest.raises(ValueError, match=match):
            CG(params, **kwargs)
    with pytest.raises(ValueError, match="parameter groups"):
        CG([{"params": params[:1]}, {"params": params[1:]}])
    with pytest.raises(TypeError, match="needs a closure"):
        CG(params).step(None)
    assert CG(params, max_iter=7).defaults["max_eval"] == 21
