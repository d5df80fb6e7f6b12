"""L-BFGS-B in nopt: bounds, failed line searches, the problem set against scipy, and LBFGS/CG
state checks (issue 14 item 6)."""
import contextlib
import copy
import warnings

import numpy as np
import pytest
import scipy.optimize as so

import nopt
from nopt import CG, LBFGS

from minimize_problems import problems

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None


def one_thread():
    return threadpool_limits(1) if threadpool_limits else contextlib.nullcontext()


def rosen(x):
    return so.rosen(x), so.rosen_der(x)


def counting(fun):
    calls = []

    def wrapped(x, *args):
        calls.append(np.array(x, copy=True))
        return fun(x, *args)

    return wrapped, calls


BOUNDED = [p for p in problems() if p[4] is not None]
SET = [p for p in problems() if p[4] is None]


# ---------------------------------------------------------------- bounds vs scipy L-BFGS-B
@pytest.mark.parametrize("problem", BOUNDED, ids=[p[0] for p in BOUNDED])
def test_bounded_matches_lbfgsb(problem):
    name, fun, x0, jac, bounds = problem
    with one_thread():
        ref = so.minimize(fun, x0, jac=jac, method="L-BFGS-B", bounds=bounds)
        res = nopt.minimize(fun, x0, jac=jac, method="L-BFGS-B", bounds=bounds)
    assert res.success and ref.success
    assert abs(res.fun - ref.fun) <= 1e-8 * max(1.0, abs(ref.fun))
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-6, atol=1e-7)
    assert res.nfev <= 1.5 * ref.nfev and res.nit <= 1.5 * ref.nit
    lower = np.array([-np.inf if b[0] is None else b[0] for b in bounds])
    upper = np.array([np.inf if b[1] is None else b[1] for b in bounds])
    assert np.all(res.x >= lower) and np.all(res.x <= upper)


def test_bounds_object_and_pairs_agree():
    x0 = np.tile([-1.2, 1.0], 3)
    a = nopt.minimize(rosen, x0, jac=True, bounds=so.Bounds(-0.5, [0.7] * 6))
    b = nopt.minimize(rosen, x0, jac=True, method="L-BFGS", bounds=[(-0.5, 0.7)] * 6)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.nfev == b.nfev


def test_x0_outside_bounds_is_clipped_first():
    fun, calls = counting(rosen)
    nopt.minimize(fun, [5.0, -5.0], jac=True, bounds=[(-1, 2), (0, None)])
    np.testing.assert_array_equal(calls[0], [2.0, 0.0])
    assert all(np.all(c >= [-1, 0]) and c[0] <= 2 for c in calls)


@pytest.mark.parametrize("bounds, match", [
    ([(1.0, 0.0), (None, None)], "lower bound 1.0 > upper bound 0.0 at index 0"),
    ([(0.0, 1.0)], "expected 2"),
    ([(0.0, np.nan), (None, None)], "NaN"),
    (so.Bounds([0, 0, 0], 1), "length 2"),
    ([(0.0, 1.0), 3.0], r"bounds\[1\]"),
])
def test_bad_bounds_raise_before_any_evaluation(bounds, match):
    fun, calls = counting(rosen)
    with pytest.raises(ValueError, match=match):
        nopt.minimize(fun, [0.0, 0.0], jac=True, bounds=bounds)
    assert calls == []


def test_bounds_with_cg_are_refused():
    with pytest.raises(ValueError, match="does not support bounds"):
        nopt.minimize(rosen, [0.0, 0.0], jac=True, method="CG", bounds=[(0, 1)] * 2)


def test_lbfgs_bounds_per_parameter_match_minimize():
    x0 = np.tile([-1.2, 1.0], 3)
    params = [nopt.Parameter(x0[:2].reshape(1, 2).copy()), nopt.Parameter(x0[2:].copy())]
    # a scalar for the first parameter, an array broadcast against the second
    opt = LBFGS(params, line_search_fn="strong_wolfe", history_size=10, max_iter=1000,
                max_eval=15000, tolerance_grad=1e-5, tolerance_change=0,
                bounds=[(-0.5, 0.7), (np.array([-0.5, -0.5, -0.5, -0.5]), 0.7)])
    opt.max_ls = 20

    def closure():
        v = np.concatenate([p.ravel() for p in params])
        f, g = rosen(v)
        params[0].grad = g[:2].reshape(1, 2).copy()
        params[1].grad = g[2:].copy()
        return f

    ref = nopt.minimize(rosen, x0, jac=True, bounds=[(-0.5, 0.7)] * 6, options=dict(ftol=0))
    opt.step(closure)
    np.testing.assert_allclose(np.concatenate([p.ravel() for p in params]), ref.x, atol=1e-6)
    assert np.all(params[0] <= 0.7) and np.all(params[1] >= -0.5)


def test_lbfgs_bad_bounds():
    p = nopt.Parameter(np.zeros(3))
    with pytest.raises(ValueError, match="one .low, high. pair per parameter"):
        LBFGS([p], line_search_fn="strong_wolfe", bounds=[(0, 1), (0, 1)])
    with pytest.raises(ValueError, match="broadcastable"):
        LBFGS([p], line_search_fn="strong_wolfe", bounds=[(np.zeros(2), 1)])
    with pytest.raises(ValueError, match="lower bound 2.0 > upper bound 1.0"):
        LBFGS([p], line_search_fn="strong_wolfe", bounds=[(2, 1)])
    with pytest.raises(ValueError, match="strong_wolfe"):
        LBFGS([p], bounds=[(0, 1)])


def test_lbfgsb_alias():
    a = nopt.minimize(rosen, [-1.2, 1.0], jac=True, method="L-BFGS-B")
    b = nopt.minimize(rosen, [-1.2, 1.0], jac=True, method="L-BFGS")
    np.testing.assert_array_equal(a.x, b.x)


def test_unbounded_direction_is_lbfgsbs():
    """Without bounds, nfev and nit are L-BFGS-B's (to rounding: equal at small n)."""
    for n in (2, 10, 50):
        x0 = np.tile([-1.2, 1.0], n // 2)
        with one_thread():
            ref = so.minimize(rosen, x0, jac=True, method="L-BFGS-B")
        res = nopt.minimize(rosen, x0, jac=True, method="L-BFGS-B")
        if n <= 10:
            assert (res.nfev, res.nit) == (ref.nfev, ref.nit)
        assert abs(res.nfev - ref.nfev) <= 0.05 * ref.nfev
        assert abs(res.fun - ref.fun) <= 1e-8


def test_maxls_and_tol_options():
    res = nopt.minimize(rosen, [-1.2, 1.0], jac=True, tol=1e-3)
    ref = so.minimize(rosen, [-1.2, 1.0], jac=True, method="L-BFGS-B", tol=1e-3)
    assert (res.nfev, res.nit) == (ref.nfev, ref.nit)
    with pytest.raises(ValueError, match="maxls"):
        nopt.minimize(rosen, [0.0, 0.0], jac=True, options=dict(maxls=0))


# ---------------------------------------------------------------- failed line searches
def test_failed_search_keeps_the_best_point_and_says_why():
    # Bukin06 from a random start (issue 15): the start is f = 209.5-like; L-BFGS used to return it.
    name, fun, x0, jac, _ = [p for p in SET if p[0] == "bukin06-0"][0]
    f0 = fun(x0)[0]
    res = nopt.minimize(fun, x0, jac=True)
    assert res.fun < 0.1 * f0
    assert res.status == 2 and res.message.startswith("ABNORMAL_TERMINATION_IN_LNSRCH")
    assert res.fun == fun(res.x)[0]


def test_closure_lbfgs_leaves_best_point_in_params():
    fun = [p for p in SET if p[0] == "bukin06-1"][0][1]
    x0 = [p for p in SET if p[0] == "bukin06-1"][0][2]
    param = nopt.Parameter(x0.copy())
    seen = []

    def closure():
        f, g = fun(np.asarray(param))
        seen.append(f)
        param.grad = g
        return f

    opt = LBFGS([param], line_search_fn="strong_wolfe", max_iter=500, max_eval=5000)
    opt.step(closure)
    assert fun(np.asarray(param))[0] == min(seen) == opt.last_step.loss


def test_cg_leaves_best_point_after_failed_restart():
    fun = [p for p in SET if p[0] == "max-quad-0"][0][1]
    x0 = [p for p in SET if p[0] == "max-quad-0"][0][2]
    seen = []

    def f(x):
        out = fun(x)
        seen.append(out[0])
        return out

    res = nopt.minimize(f, x0, jac=True, method="CG")
    assert res.fun == min(seen)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@pytest.mark.parametrize("method", ["L-BFGS", "CG"])
def test_unbounded_below_stops(method):
    for fun, x0 in ((lambda x: (float(-x.sum()), -np.ones_like(x)), np.zeros(3)),
                    (lambda x: (float((x ** 3).sum()), 3 * x ** 2), -np.ones(3))):
        res = nopt.minimize(fun, x0, jac=True, method=method, options=dict(maxiter=5000))
        assert not res.success and res.status in (1, 2, 3)
        assert res.fun < fun(x0)[0]


# ---------------------------------------------------------------- the problem set vs scipy
def run_set():
    rows = []
    with one_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fun, x0, jac, _ in SET:
            if name.startswith("unbounded"):
                continue  # no optimum to compare: test_unbounded_below_stops
            f0 = fun(x0)[0] if jac is True else fun(x0)
            for ours, theirs in (("L-BFGS", "L-BFGS-B"), ("CG", "CG")):
                ref = so.minimize(fun, x0, jac=jac, method=theirs, options=dict(maxiter=2000))
                res = nopt.minimize(fun, x0, jac=jac, method=ours, options=dict(maxiter=2000))
                rows.append(dict(name=name, method=ours, f0=f0, ours=res, scipy=ref))
    return rows


@pytest.fixture(scope="module")
def set_rows():
    return run_set()


def reaches(a, b):
    return a.fun <= b.fun + 1e-6 * max(1.0, abs(b.fun))


def test_set_never_worse_than_start(set_rows):
    for r in set_rows:
        assert r["ours"].fun <= r["f0"], (r["name"], r["method"])


def test_set_lbfgs_against_scipy(set_rows):
    rows = [r for r in set_rows if r["method"] == "L-BFGS"]
    ratios = np.array([r["ours"].nfev / r["scipy"].nfev for r in rows])
    ours_reach = sum(reaches(r["ours"], r["scipy"]) for r in rows)
    scipy_reach = sum(reaches(r["scipy"], r["ours"]) for r in rows)
    assert ours_reach >= scipy_reach
    assert np.exp(np.log(ratios).mean()) <= 1.05
    assert ratios.max() <= 2.0


def test_set_cg_against_scipy(set_rows):
    rows = [r for r in set_rows if r["method"] == "CG"]
    ours_reach = sum(reaches(r["ours"], r["scipy"]) for r in rows)
    scipy_reach = sum(reaches(r["scipy"], r["ours"]) for r in rows)
    assert ours_reach >= scipy_reach
    ratios = np.array([r["ours"].nfev / r["scipy"].nfev for r in rows])
    assert np.exp(np.log(ratios).mean()) <= 1.05


# ---------------------------------------------------------------- state checks (issue 14 item 6)
def lbfgs_state_dict(line_search_fn=None):
    p = nopt.Parameter(np.array([-1.2, 1.0, 0.5]))

    def closure():
        f, g = rosen(np.asarray(p))
        p.grad = g
        return f

    opt = LBFGS([p], line_search_fn=line_search_fn, lr=0.1, max_iter=5)
    opt.step(closure)
    return copy.deepcopy(opt.state_dict()), closure


def fresh_lbfgs(line_search_fn=None):
    p = nopt.Parameter(np.array([-1.2, 1.0, 0.5]))
    return LBFGS([p], line_search_fn=line_search_fn, lr=0.1, max_iter=5), p


@pytest.mark.parametrize("edit, match", [
    (lambda s: s.__setitem__("al", []), r"state\['al'\] has 0 entries"),
    (lambda s: s.__setitem__("ro", [np.ones(3)] * len(s["ro"])), r"state\['ro'\]\[0\]"),
    (lambda s: s.__setitem__("prev_flat_grad", None), "prev_flat_grad"),
    (lambda s: s.__setitem__("H_diag", np.nan), r"state\['H_diag'\]"),
    (lambda s: s.__setitem__("old_dirs", s["old_dirs"][:-1]), "different lengths"),
])
def test_lbfgs_load_rejects_malformed_history(edit, match):
    sd, _ = lbfgs_state_dict()
    edit(sd["state"][0])
    opt, p = fresh_lbfgs()
    with pytest.raises((ValueError, TypeError), match=match):
        opt.load_state_dict(sd)
    assert len(opt.state) == 0 and opt.param_groups[0]["lr"] == 0.1


@pytest.mark.parametrize("key, value", [
    ("line_search_fn", "bogus"), ("history_size", 0), ("history_size", 2.5), ("max_iter", 2.5),
])
def test_lbfgs_load_rejects_options_the_constructor_rejects(key, value):
    sd, _ = lbfgs_state_dict()
    sd["param_groups"][0][key] = value
    opt, p = fresh_lbfgs()
    with pytest.raises(ValueError):
        opt.load_state_dict(sd)
    assert opt.param_groups[0][key] != value and len(opt.state) == 0


def test_cg_load_rejects_bad_options_and_state():
    p = nopt.Parameter(np.array([-1.2, 1.0]))

    def closure():
        f, g = rosen(np.asarray(p))
        p.grad = g
        return f

    opt = CG([p], max_iter=3)
    opt.step(closure)
    sd = copy.deepcopy(opt.state_dict())
    for key, value in (("beta", "XX"), ("c1", 0.9), ("restart_every", 0), ("max_iter", 1.5)):
        bad = copy.deepcopy(sd)
        bad["param_groups"][0][key] = value
        fresh = CG([nopt.Parameter(np.zeros(2))])
        with pytest.raises(ValueError):
            fresh.load_state_dict(bad)
    bad = copy.deepcopy(sd)
    bad["state"][0]["d"] = None
    with pytest.raises(ValueError, match="d"):
        CG([nopt.Parameter(np.zeros(2))]).load_state_dict(bad)


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_hand_edited_state_fails_before_anything_moves(line_search_fn):
    sd, closure = lbfgs_state_dict(line_search_fn)
    opt, p = fresh_lbfgs(line_search_fn)
    opt.load_state_dict(sd)
    x = np.array(p, copy=True)
    state = opt.state[p]
    state["al"] = []
    before = {k: (v.copy() if isinstance(v, np.ndarray) else copy.copy(v)) for k, v in state.items()}

    def closure2():
        f, g = rosen(np.asarray(p))
        p.grad = g
        return f

    with pytest.raises(ValueError, match="al"):
        opt.step(closure2)
    np.testing.assert_array_equal(p, x)
    assert state["n_iter"] == before["n_iter"] and state["func_evals"] == before["func_evals"]
    assert len(state["old_dirs"]) == len(before["old_dirs"])


@pytest.mark.parametrize("cls", [LBFGS, CG])
def test_step_without_closure_names_the_class(cls):
    opt = cls([nopt.Parameter(np.zeros(2))])
    with pytest.raises(TypeError, match=f"^{cls.__name__}.step needs a closure"):
        opt.step()


def test_scipy_method_passes_bounds():
    x0 = np.tile([-1.2, 1.0], 3)
    bounds = [(-0.5, 0.7)] * 6
    via_scipy = so.minimize(rosen, x0, jac=True, method=nopt.scipy_method("L-BFGS"), bounds=bounds)
    direct = nopt.minimize(rosen, x0, jac=True, bounds=bounds)
    np.testing.assert_array_equal(via_scipy.x, direct.x)
    with pytest.raises(ValueError, match="does not support bounds"):
        so.minimize(rosen, x0, jac=True, method=nopt.scipy_method("CG"), bounds=bounds)


# ---------------------------------------------------------------- the compact form vs the two-loop recursion
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n, m, pairs", [(1, 3, 2), (7, 3, 5), (50, 10, 10), (203, 5, 12)])
def test_direction_is_the_two_loop_recursion(dtype, n, m, pairs):
    """Without bounds, d = -H g from the compact form (Cython kernels) is the two-loop one."""
    from nopt._lbfgsb import History, direction

    rng = np.random.default_rng(n * 100 + pairs)
    A = rng.standard_normal((n, n))
    A = A @ A.T + n * np.eye(n)  # s.y > 0 for every pair
    hist = History(m, n, dtype)
    kept = []
    x = rng.standard_normal(n).astype(dtype)
    g = (A @ x).astype(dtype)
    for _ in range(pairs):
        x1 = (x - 0.1 * rng.standard_normal(n)).astype(dtype)
        g1 = (A @ x1).astype(dtype)
        row, ys, yy = hist.pair(x1, x, g1, g)
        hist.accept(ys, yy)
        kept.append(((x1 - x).astype(np.float64), (g1 - g).astype(np.float64)))
        x, g = x1, g1
    kept = kept[-m:]
    q = -g.astype(np.float64)
    alphas = []
    for s, y in reversed(kept):
        a = (s @ q) / (s @ y)
        alphas.append(a)
        q -= a * y
    s, y = kept[-1]
    r = q * (s @ y) / (y @ y)
    for (s, y), a in zip(kept, reversed(alphas)):
        r += s * (a - (y @ r) / (s @ y))
    d = direction(x, g, None, hist)
    assert d.dtype == dtype and hist.k == min(m, pairs)
    tol = 1e-10 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(d, r, rtol=0, atol=tol * np.abs(r).max())
    assert [np.shares_memory(a, hist._S) for a in hist.old_stps] == [True] * hist.k
