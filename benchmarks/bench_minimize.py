"""asv benchmarks: nopt.minimize (L-BFGS, CG) next to scipy.optimize.minimize.

Each benchmark is parametrised by ``problem`` and ``solver``; the solvers are
nopt's L-BFGS and CG and scipy's L-BFGS-B and CG on the same seeded problems
with default tolerances, gradients supplied (``jac=True``):

* ``time_minimize``: wall time of one full minimisation;
* ``track_nfev``: calls of the objective (each gives f and g);
* ``track_nit``: iterations;
* ``track_fun``: the final loss.

``Overhead.time_per_call_overhead`` is the time per call of the objective
*outside* it (the solver's own work), on Rosenbrock for n = 2, 10, 100 and
10,000: one whole run's time minus nfev calls of the objective alone.

scipy's BLAS threads are pinned to one (threadpoolctl) for every benchmark,
as the step benchmarks do: on a shared machine its threads fight over the
cores and scipy's L-BFGS-B timings vary 2-10x, which would flatter nopt.

Run directly (``python benchmarks/bench_minimize.py``) for a smoke check that
prints every figure and nopt's nfev over scipy's.
"""
import os
import sys
import time

import numpy as np
import scipy.optimize as so

try:
    import nopt
except ImportError:  # run from a checkout: python benchmarks/bench_minimize.py
    if __name__ != "__main__":
        raise
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import nopt

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - asv's [bench] extra installs it
    threadpool_limits = None

SOLVERS = ["nopt-L-BFGS", "scipy-L-BFGS-B", "nopt-CG", "scipy-CG"]
PROBLEMS = ["rosen2", "rosen100", "rosen1000", "quadratic", "logreg"]


# ---------------------------------------------------------------- problems
def _rosen_x0(n):
    x = np.empty(n)
    x[0::2] = -1.2
    x[1::2] = 1.0
    return x


def _rosen(x):
    return so.rosen(x), so.rosen_der(x)


def _quadratic(n=100, cond=1e4, seed=0):
    """0.5 x'Ax - b'x, eigenvalues log-spaced in [1, cond], random basis."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (Q * np.logspace(0, np.log10(cond), n)) @ Q.T
    A = 0.5 * (A + A.T)
    b = rng.standard_normal(n)

    def fg(x):
        Ax = A @ x
        return float(0.5 * x @ Ax - b @ x), Ax - b

    return fg, np.zeros(n)


def _logreg(m=1000, d=50, lam=1e-2, seed=0):
    """L2-regularised logistic regression on synthetic data."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    y = np.where(X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(m) > 0, 1.0, -1.0)

    def fg(w):
        z = y * (X @ w)
        s = -y * (0.5 * (1 - np.tanh(z / 2)))
        return float(np.mean(np.logaddexp(0, -z)) + 0.5 * lam * w @ w), X.T @ s / m + lam * w

    return fg, np.zeros(d)


def make_problem(name):
    """(fun returning (f, g), x0) for a problem name."""
    if name.startswith("rosen"):
        return _rosen, _rosen_x0(int(name[len("rosen"):]))
    if name == "quadratic":
        return _quadratic()
    if name == "logreg":
        return _logreg()
    raise ValueError(f"unknown problem {name!r}")


def solve(fun, x0, solver, options=None):
    library, method = solver.split("-", 1)
    if library == "nopt":
        return nopt.minimize(fun, x0, jac=True, method=method, options=options)
    return so.minimize(fun, x0, jac=True, method=method, options=options)


class _OneBlasThread:
    """Pins BLAS (scipy's and NumPy's) to one thread from setup to teardown."""

    def _pin(self):
        self._limits = threadpool_limits(1, user_api="blas") if threadpool_limits else None

    def teardown(self, *params):
        if getattr(self, "_limits", None) is not None:
            self._limits.restore_original_limits()
            self._limits = None


OVERHEAD_MAXITER = 300  # enough iterations to average over; CG at n = 10,000 never ends otherwise


def overhead_per_call(fun, x0, solver, repeat=3):
    """Seconds per objective call spent outside the objective (best of ``repeat``).

    Runs at most ``OVERHEAD_MAXITER`` iterations.
    """
    best = float("inf")
    nfev = 1
    for _ in range(repeat):
        start = time.perf_counter()
        nfev = solve(fun, x0, solver, dict(maxiter=OVERHEAD_MAXITER)).nfev
        best = min(best, time.perf_counter() - start)
    alone = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(nfev):
            fun(x0)
        alone = min(alone, time.perf_counter() - start)
    return max(best - alone, 0.0) / nfev


# ---------------------------------------------------------------- asv
class Overhead(_OneBlasThread):
    """Solver time per objective call, outside the objective (Rosenbrock)."""

    params = ([2, 10, 100, 10000], SOLVERS)
    param_names = ["n", "solver"]
    number = 1
    repeat = (1, 3, 30.0)
    timeout = 300.0

    def setup(self, n, solver):
        self._pin()
        self.x0 = _rosen_x0(n)
        nopt.LBFGS, nopt.CG, nopt.minimize  # noqa: B018 - resolve lazy imports

    def track_overhead_us(self, n, solver):
        return 1e6 * overhead_per_call(_rosen, self.x0, solver)

    track_overhead_us.unit = "us per call"


class Minimize(_OneBlasThread):
    """One full minimisation per call, each problem and solver."""

    params = (PROBLEMS, SOLVERS)
    param_names = ["problem", "solver"]
    number = 1
    repeat = (1, 5, 30.0)
    timeout = 300.0

    def setup(self, problem, solver):
        self._pin()
        self.fun, self.x0 = make_problem(problem)
        self.solver = solver
        nopt.LBFGS, nopt.CG, nopt.minimize  # resolve nopt's lazy imports outside the timing

    def time_minimize(self, problem, solver):
        solve(self.fun, self.x0, self.solver)

    def track_nfev(self, problem, solver):
        return int(solve(self.fun, self.x0, self.solver).nfev)

    track_nfev.unit = "evaluations"

    def track_nit(self, problem, solver):
        return int(solve(self.fun, self.x0, self.solver).nit)

    track_nit.unit = "iterations"

    def track_fun(self, problem, solver):
        return float(solve(self.fun, self.x0, self.solver).fun)

    track_fun.unit = "loss"


def main(problems=PROBLEMS):
    """Smoke check: every figure once, and nopt's nfev over scipy's (BLAS pinned to one thread)."""
    if threadpool_limits is not None:
        with threadpool_limits(1, user_api="blas"):
            return _main(problems)
    return _main(problems)


def _main(problems):
    pairs = {"nopt-L-BFGS": "scipy-L-BFGS-B", "nopt-CG": "scipy-CG"}
    print(f"{'problem':10s} {'solver':15s} {'nfev':>7s} {'nit':>7s} {'fun':>13s} {'time s':>8s} {'nfev/scipy':>10s}")
    for problem in problems:
        results = {}
        for solver in SOLVERS:
            bench = Minimize()
            bench.setup(problem, solver)
            start = time.perf_counter()
            res = solve(bench.fun, bench.x0, solver)
            results[solver] = (res, time.perf_counter() - start)
        for solver in SOLVERS:
            res, seconds = results[solver]
            ratio = f"{res.nfev / results[pairs[solver]][0].nfev:10.2f}" if solver in pairs else ""
            print(f"{problem:10s} {solver:15s} {res.nfev:7d} {res.nit:7d} {res.fun:13.6g} {seconds:8.3f} {ratio}")
    print(f"\n{'overhead per call (us), Rosenbrock':40s}" + "".join(f"{s:>16s}" for s in SOLVERS))
    for n in (2, 10, 100, 10000):
        cells = [1e6 * overhead_per_call(_rosen, _rosen_x0(n), s) for s in SOLVERS]
        print(f"{'n = ' + str(n):40s}" + "".join(f"{c:16.1f}" for c in cells))


if __name__ == "__main__":
    main(sys.argv[1:] or PROBLEMS)
