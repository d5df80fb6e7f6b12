"""A problem set for nopt.minimize against scipy: non-smooth, badly scaled,
finite-difference gradients, unbounded below, and bounded problems.

Each problem is ``(name, fun, x0, jac, bounds)`` with ``fun`` returning
``(f, g)`` when ``jac is True`` and ``f`` alone when ``jac is None`` (finite
differences). Seeds are fixed.
"""
import numpy as np
import scipy.optimize as so


def _rosen(x):
    return so.rosen(x), so.rosen_der(x)


def _abs_sum(x):  # non-smooth at its optimum 0
    return float(np.abs(x - 1).sum() + 0.5 * (x @ x)), np.sign(x - 1) + x


def _max_quad(x):  # max of two quadratics: a kink along a curve
    a = float((x - 1) @ (x - 1))
    b = float((x + 1) @ (x + 1)) - 1.0
    return (a, 2 * (x - 1)) if a >= b else (b, 2 * (x + 1))


def _bukin06(x):  # go_benchmark's Bukin06: 100 sqrt|y - 0.01 x^2| + 0.01 |x + 10|
    u = x[1] - 0.01 * x[0] ** 2
    r = np.sqrt(abs(u)) + 1e-300
    f = 100 * r + 0.01 * abs(x[0] + 10)
    du = 100 * 0.5 / r * np.sign(u)
    return float(f), np.array([du * (-0.02 * x[0]) + 0.01 * np.sign(x[0] + 10), du])


def _scaled_quadratic(n=20, spread=6):  # diagonal scales over 10^spread
    w = np.logspace(0, spread, n)
    return lambda x: (float(0.5 * (w * x) @ x), w * x)


def _meyer_like():  # exp fit with parameters of very different sizes
    t = 45.0 + 5.0 * np.arange(16)
    y = 0.0056 * np.exp(6181.4 / (t + 345.2))

    def fg(p):
        x1, x2, x3 = p
        e = np.exp(x2 / (t + x3))
        r = x1 * e - y
        J = np.stack([e, x1 * e / (t + x3), -x1 * e * x2 / (t + x3) ** 2], axis=1)
        return float(r @ r), 2 * J.T @ r

    return fg


def _logreg(m=200, d=10, seed=3, lam=1e-3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    y = np.where(X @ rng.standard_normal(d) + 0.3 * rng.standard_normal(m) > 0, 1.0, -1.0)

    def fg(w):
        z = y * (X @ w)
        s = -y * (0.5 * (1 - np.tanh(z / 2)))
        return float(np.mean(np.logaddexp(0, -z)) + 0.5 * lam * w @ w), X.T @ s / m + lam * w

    return fg


def _lsq(m=60, n=20, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n))
    b = rng.standard_normal(m)

    def fg(x):
        r = A @ x - b
        return float(0.5 * r @ r), A.T @ r

    return fg


def _f_only(fg):
    return lambda x: fg(x)[0]


def _unbounded_linear(x):  # unbounded below: f -> -inf
    return float(-x.sum()), -np.ones_like(x)


def _unbounded_cubic(x):
    return float((x ** 3).sum()), 3 * x ** 2


def problems():
    rng = np.random.default_rng(12345)
    out = []
    x10 = np.tile([-1.2, 1.0], 5)
    out.append(("rosen10", _rosen, x10, True, None))
    out.append(("rosen2-fd", _f_only(_rosen), np.array([-1.2, 1.0]), None, None))
    for i in range(3):
        out.append((f"abs-sum-{i}", _abs_sum, rng.uniform(-3, 3, 8), True, None))
        out.append((f"max-quad-{i}", _max_quad, rng.uniform(-3, 3, 5), True, None))
        out.append((f"bukin06-{i}", _bukin06,
                    np.array([rng.uniform(-15, -5), rng.uniform(-3, 3)]), True, None))
    out.append(("scaled-quad-1e6", _scaled_quadratic(), np.ones(20), True, None))
    out.append(("scaled-quad-1e3", _scaled_quadratic(30, 3), np.ones(30), True, None))
    out.append(("meyer-like", _meyer_like(), np.array([0.02, 4000.0, 250.0]), True, None))
    out.append(("logreg-fd", _f_only(_logreg()), np.zeros(10), None, None))
    out.append(("lsq-fd", _f_only(_lsq()), np.zeros(20), None, None))
    out.append(("unbounded-linear", _unbounded_linear, np.zeros(3), True, None))
    out.append(("unbounded-cubic", _unbounded_cubic, np.ones(3), True, None))
    # bounded (L-BFGS only)
    out.append(("rosen10-box", _rosen, x10, True, [(-1.5, 0.8)] * 10))
    out.append(("rosen10-half", _rosen, x10, True, [(None, 0.5)] * 5 + [(0.0, None)] * 5))
    out.append(("lsq-box", _lsq(), np.zeros(20), True, [(-0.1, 0.1)] * 20))
    out.append(("nn-logreg", _logreg(300, 15, seed=1), np.ones(15), True, [(0, None)] * 15))
    out.append(("unbounded-linear-box", _unbounded_linear, np.zeros(3), True, [(None, 2.0)] * 3))
    return out
