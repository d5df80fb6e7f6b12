"""nopt.minimize against scipy.optimize.minimize: same optimum, comparable nfev.

Criterion for "same optimum": the loss, |f_nopt - f_scipy| <= 1e-6 * max(1, |f_scipy|)
(Rosenbrock's optimum is f = 0, hence the floor). At default tolerances the x's
differ by the solvers' own stopping error (scipy's L-BFGS-B stops ~3e-4 from the
quadratic's solution in x), so x is compared with tight tolerances, where both
must be within 1e-6 (relative) of the exact optimum.
"""
import contextlib
import warnings

import numpy as np
import pytest
import scipy.optimize as so

import nopt
from nopt._minimize import scipy_method

try:  # scipy's BLAS threads fight over the shared cores and slow L-BFGS-B 20x
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None


def one_thread():
    return threadpool_limits(1) if threadpool_limits else contextlib.nullcontext()


# ---------------------------------------------------------------- problems
def rosen_x0(n):
    x = np.empty(n)
    x[0::2] = -1.2
    x[1::2] = 1.0
    return x


def rosen_fg(x):
    return so.rosen(x), so.rosen_der(x)


def make_quadratic(n=100, cond=1e4, seed=0, dtype=np.float64):
    """0.5 x'Ax - b'x with A's eigenvalues log-spaced over [1, cond], in a random basis."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (Q * np.logspace(0, np.log10(cond), n)) @ Q.T
    A = 0.5 * (A + A.T)
    b = rng.standard_normal(n)
    A_, b_ = A.astype(dtype), b.astype(dtype)

    def fg(x):
        Ax = A_ @ x
        return float(0.5 * x @ Ax - b_ @ x), Ax - b_

    return fg, np.zeros(n, dtype), np.linalg.solve(A, b)


def make_logreg(m=1000, d=50, lam=1e-2, seed=0, dtype=np.float64):
    """mean log(1 + exp(-y Xw)) + lam/2 |w|^2 on synthetic data."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    w_true = rng.standard_normal(d)
    y = np.where(X @ w_true + 0.5 * rng.standard_normal(m) > 0, 1.0, -1.0)
    X, y = X.astype(dtype), y.astype(dtype)

    def fg(w):
        z = y * (X @ w)
        f = np.mean(np.logaddexp(0, -z)) + 0.5 * lam * (w @ w)
        s = -y * (0.5 * (1 - np.tanh(z / 2)))  # -y * sigmoid(-z)
        return float(f), X.T @ s / m + lam * w

    return fg, np.zeros(d, dtype)


PROBLEMS = {
    "rosen2": lambda: (rosen_fg, rosen_x0(2)),
    "rosen100": lambda: (rosen_fg, rosen_x0(100)),
    "rosen1000": lambda: (rosen_fg, rosen_x0(1000)),
    "quadratic": lambda: make_quadratic()[:2],
    "logreg": lambda: make_logreg(),
}
PAIRS = [("L-BFGS", "L-BFGS-B"), ("CG", "CG")]


def same_f(f, f_ref, rtol=1e-6):
    return abs(f - f_ref) <= rtol * max(1.0, abs(f_ref))


@pytest.mark.parametrize("method,scipy_name", PAIRS, ids=[p[0] for p in PAIRS])
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_same_optimum_and_nfev_as_scipy(problem, method, scipy_name):
    fg, x0 = PROBLEMS[problem]()
    with one_thread():
        ref = so.minimize(fg, x0, jac=True, method=scipy_name)
        res = nopt.minimize(fg, x0, jac=True, method=method)
    assert ref.success
    assert res.success, res.message
    assert res.status == 0
    assert same_f(res.fun, ref.fun), (res.fun, ref.fun)
    assert res.nfev <= 1.5 * ref.nfev, (res.nfev, ref.nfev)
    assert res.njev == res.nfev  # one closure call gives f and g
    assert res.x.dtype == np.float64 and res.x.shape == x0.shape
    f, g = fg(res.x)
    assert res.fun == f
    np.testing.assert_array_equal(res.jac, g)
    assert np.abs(res.jac).max() <= 1e-5 or "reduction" in res.message


@pytest.mark.parametrize("method,scipy_name", PAIRS, ids=[p[0] for p in PAIRS])
def test_tight_tolerance_x_matches_exact_optimum(method, scipy_name):
    fg, x0, x_star = make_quadratic(n=50, cond=1e3)
    with one_thread():
        ref = so.minimize(fg, x0, jac=True, method=scipy_name,
                          options=dict(gtol=1e-10, **({"ftol": 0} if scipy_name == "L-BFGS-B" else {})))
        res = nopt.minimize(fg, x0, jac=True, method=method, options=dict(gtol=1e-10, ftol=0))
    rel = lambda x: np.linalg.norm(x - x_star) / np.linalg.norm(x_star)  # noqa: E731
    assert rel(ref.x) <= 1e-6
    assert rel(res.x) <= 1e-6
    assert res.nfev <= 1.5 * ref.nfev


def test_tight_tolerance_logreg_x_matches_scipy():
    fg, x0 = make_logreg()
    with one_thread():
        ref = so.minimize(fg, x0, jac=True, method="L-BFGS-B", options=dict(gtol=1e-11, ftol=0))
    for method in ("L-BFGS", "CG"):
        res = nopt.minimize(fg, x0, jac=True, method=method, options=dict(gtol=1e-11, ftol=0))
        assert np.linalg.norm(res.x - ref.x) <= 1e-6 * np.linalg.norm(ref.x), method


@pytest.mark.parametrize("method", ["L-BFGS", "CG"])
def test_float32(method):
    fg64, x0 = make_logreg()
    ref = nopt.minimize(fg64, x0, jac=True, method=method)
    fg, x0 = make_logreg(dtype=np.float32)
    res = nopt.minimize(fg, x0, jac=True, method=method, options=dict(gtol=1e-4))
    assert res.x.dtype == np.float32 and res.jac.dtype == np.float32
    assert res.status in (0, 2), res.message  # 2: float32 precision ran out first
    assert abs(res.fun - ref.fun) <= 1e-5 * abs(ref.fun)
    assert np.linalg.norm(res.x - ref.x) <= 1e-3 * np.linalg.norm(ref.x)


@pytest.mark.parametrize("method", ["L-BFGS", "CG"])
def test_float32_quadratic(method):
    # A loss-based line search resolves the gradient to ~sqrt(eps32) of its scale.
    fg, x0, x_star = make_quadratic(n=30, cond=10, dtype=np.float32)
    res = nopt.minimize(fg, x0, jac=True, method=method, options=dict(gtol=1e-3))
    assert res.x.dtype == np.float32
    assert res.status in (0, 2), res.message
    assert np.abs(res.jac).max() <= 1e-3
    assert np.linalg.norm(res.x - x_star) <= 1e-3 * np.linalg.norm(x_star)


# ---------------------------------------------------------------- jac forms
def test_jac_callable_and_finite_differences():
    fg, x0, x_star = make_quadratic(n=10, cond=10)
    f = lambda x: fg(x)[0]  # noqa: E731
    g = lambda x: fg(x)[1]  # noqa: E731
    a = nopt.minimize(fg, x0, jac=True)
    b = nopt.minimize(f, x0, jac=g)
    np.testing.assert_array_equal(a.x, b.x)
    assert (a.nfev, a.njev, a.nit) == (b.nfev, b.njev, b.nit)
    with pytest.warns(RuntimeWarning, match="finite differences"):
        c = nopt.minimize(f, x0)
    assert c.success
    assert same_f(c.fun, a.fun)
    np.testing.assert_allclose(c.x, x_star, atol=1e-4)
    assert c.nfev == c.njev * (1 + x0.size)  # every gradient costs n + 1 calls


def test_args_are_passed():
    def fg(x, a, b):
        return float(np.sum((x - a) ** 2) * b), 2 * b * (x - a)

    res = nopt.minimize(fg, np.zeros(3), args=(np.arange(3.0), 2.0), jac=True)
    np.testing.assert_allclose(res.x, np.arange(3.0), atol=1e-6)
    res = nopt.minimize(lambda x, a: (float(x @ x - a), 2 * x), [1.0, 2.0], args=1.0, jac=True)
    assert res.success and abs(res.fun + 1.0) < 1e-10


def test_fun_receives_a_copy():
    seen = []

    def fg(x):
        seen.append(x)
        return float(x @ x), 2 * x

    res = nopt.minimize(fg, np.ones(3), jac=True)
    assert len({id(x) for x in seen}) == len(seen)
    assert all(x is not res.x for x in seen)


def test_tol_maps_to_gtol():
    fg, x0 = make_logreg()
    loose = nopt.minimize(fg, x0, jac=True, method="CG", tol=1e-2)
    tight = nopt.minimize(fg, x0, jac=True, method="CG")
    assert np.abs(loose.jac).max() <= 1e-2
    assert loose.nit < tight.nit
    explicit = nopt.minimize(fg, x0, jac=True, method="CG", tol=1e-2, options=dict(gtol=1e-8))
    assert np.abs(explicit.jac).max() <= 1e-8  # options win over tol, as scipy


def test_maxiter_status():
    res = nopt.minimize(rosen_fg, rosen_x0(10), jac=True, options=dict(maxiter=5))
    assert (res.status, res.success, res.nit) == (1, False, 5)
    res = nopt.minimize(rosen_fg, rosen_x0(10), jac=True, method="CG", options=dict(maxfev=7))
    assert res.status == 1 and res.nfev <= 7


# ---------------------------------------------------------------- callbacks
@pytest.mark.parametrize("method", ["L-BFGS", "CG", "SGD"])
def test_callback_intermediate_result_and_stopiteration(method):
    fg, x0 = make_logreg(m=200, d=10)
    options = dict(lr=0.5, maxiter=100) if method == "SGD" else None
    seen = []

    def callback(intermediate_result):
        assert isinstance(intermediate_result, so.OptimizeResult)
        seen.append((intermediate_result.x.copy(), intermediate_result.fun))
        if len(seen) == 3:
            raise StopIteration

    res = nopt.minimize(fg, x0, jac=True, method=method, callback=callback, options=options)
    assert (res.status, res.success) == (99, False)
    assert len(seen) == 3 and res.nit == 3
    np.testing.assert_array_equal(res.x, seen[-1][0])
    assert res.fun == seen[-1][1] == fg(res.x)[0]


def test_legacy_callback_gets_x_copy():
    xs = []
    res = nopt.minimize(rosen_fg, rosen_x0(2), jac=True, callback=xs.append)
    assert len(xs) == res.nit
    np.testing.assert_array_equal(xs[-1], res.x)
    assert xs[0] is not xs[1]


# ---------------------------------------------------------------- other optimizers
def test_first_order_optimizer_by_name():
    fg, x0, x_star = make_quadratic(n=5, cond=4)
    res = nopt.minimize(fg, x0, jac=True, method="SGD",
                        options=dict(lr=0.1, momentum=0.5, maxiter=2000, gtol=1e-8))
    assert res.success and res.status == 0
    np.testing.assert_allclose(res.x, x_star, atol=1e-7)
    assert res.nfev == res.nit + 1
    res = nopt.minimize(fg, x0, jac=True, method=nopt.SGD, options=dict(lr=0.01, maxiter=3))
    assert (res.status, res.nit, res.nfev) == (1, 3, 4)


def test_adam_by_name():
    Adam = pytest.importorskip("nopt.adam").Adam
    fg, x0, x_star = make_quadratic(n=5, cond=4)
    res = nopt.minimize(fg, x0, jac=True, method="Adam", options=dict(lr=0.05, maxiter=3000, gtol=1e-6))
    assert res.success
    res = nopt.minimize(fg, x0, jac=True, method=Adam, options=dict(lr=0.05, maxiter=2))
    assert res.nit == 2


def test_unknown_method_and_options():
    with pytest.raises(ValueError, match="Unknown method"):
        nopt.minimize(rosen_fg, rosen_x0(2), jac=True, method="Newton")
    with pytest.warns(so.OptimizeWarning, match="Unknown solver options"):
        nopt.minimize(rosen_fg, rosen_x0(2), jac=True, options=dict(bogus=1))
    with pytest.raises(TypeError):
        nopt.minimize(rosen_fg, rosen_x0(2), jac=True, method="SGD", options=dict(bogus=1))
    with pytest.raises(ValueError, match="one dimension"):
        nopt.minimize(rosen_fg, np.ones((2, 2)), jac=True)


# ---------------------------------------------------------------- bad functions
@pytest.mark.parametrize("method", ["L-BFGS", "CG"])
def test_nan_at_start_is_status_3(method):
    res = nopt.minimize(lambda x: (np.nan, x), np.ones(3), jac=True, method=method)
    assert (res.status, res.success) == (3, False)
    np.testing.assert_array_equal(res.x, np.ones(3))
    assert "non-finite" in res.message


@pytest.mark.parametrize("method", ["L-BFGS", "CG"])
def test_inf_outside_domain_backtracks(method):
    # log-barrier: f = inf outside (-1, 1); the first trial steps leave the domain.
    def fg(x):
        if np.any(np.abs(x) >= 1):
            return np.inf, np.full_like(x, np.nan)
        return float(np.sum(-np.log1p(-x * x) + 3 * x)), 2 * x / (1 - x * x) + 3

    res = nopt.minimize(fg, np.zeros(4), jac=True, method=method)
    assert res.success, res.message
    x_star = (2 - np.sqrt(40)) / 6  # the root of 3x^2 - 2x - 3 in (-1, 1)
    np.testing.assert_allclose(res.x, np.full(4, x_star), rtol=1e-6)


@pytest.mark.parametrize("method", ["L-BFGS", "CG"])
def test_nan_everywhere_but_start_stops(method):
    x0 = np.array([0.5, -0.25])

    def fg(x):
        if np.array_equal(x, x0):
            return float(x @ x), 2 * x
        return np.nan, 2 * x

    res = nopt.minimize(fg, x0, jac=True, method=method)
    assert (res.status, res.success) == (3, False)
    np.testing.assert_array_equal(res.x, x0)
    assert res.nfev <= 60


@pytest.mark.parametrize("method", ["L-BFGS", "CG"])
def test_wrong_gradient_stops_with_status_2(method):
    res = nopt.minimize(lambda x: (float(x @ x), -2 * x), np.ones(3), jac=True, method=method)
    assert (res.status, res.success) == (2, False)
    np.testing.assert_array_equal(res.x, np.ones(3))
    assert res.nfev < 250


def test_raising_fun_propagates():
    def fg(x):
        if x[0] < 0.5:
            raise KeyError("boom")
        return float(x @ x), 2 * x

    with pytest.raises(KeyError, match="boom"):
        nopt.minimize(fg, np.ones(2), jac=True)


def test_bad_return_values():
    with pytest.raises(ValueError, match="scalar"):
        nopt.minimize(lambda x: (x, x), np.ones(2), jac=True)
    with pytest.raises(ValueError, match="gradient has shape"):
        nopt.minimize(lambda x: (float(x @ x), np.ones(3)), np.ones(2), jac=True)
    with pytest.raises(TypeError, match="pair"):
        nopt.minimize(lambda x: float(x @ x), np.ones(2), jac=True)


# ---------------------------------------------------------------- scipy's custom method
@pytest.mark.parametrize("name", ["L-BFGS", "CG"])
def test_scipy_custom_method(name):
    fg, x0 = make_logreg(m=300, d=20)
    direct = nopt.minimize(fg, x0, jac=True, method=name, tol=1e-7)
    via = so.minimize(fg, x0, jac=True, method=scipy_method(name), tol=1e-7)
    np.testing.assert_array_equal(via.x, direct.x)
    assert (via.nfev, via.nit, via.status) == (direct.nfev, direct.nit, direct.status)

    calls = []

    def callback(intermediate_result):
        calls.append(intermediate_result.fun)
        raise StopIteration

    stopped = so.minimize(fg, x0, jac=True, method=scipy_method(name), callback=callback)
    assert stopped.status == 99 and len(calls) == 1
    if name == "CG":  # bounds are L-BFGS-B's (tests/test_lbfgsb.py)
        with pytest.raises(ValueError, match="bounds"):
            so.minimize(fg, x0, jac=True, method=scipy_method(name), bounds=[(0, 1)] * x0.size)


def test_scipy_custom_method_first_order():
    fg, x0, x_star = make_quadratic(n=5, cond=4)
    res = so.minimize(fg, x0, jac=True, method=scipy_method("SGD"),
                      options=dict(lr=0.1, maxiter=3000, gtol=1e-9))
    np.testing.assert_allclose(res.x, x_star, atol=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scipy_method("CG")  # resolving a name does not warn
    with pytest.raises(ValueError, match="Unknown method"):
        scipy_method("nope")
