"""``import nopt`` stays light: scipy.optimize (most of its import time) loads at first use."""
import subprocess
import sys


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_import_nopt_does_not_import_scipy_optimize():
    out = _run("import sys, nopt; print('scipy.optimize' in sys.modules)")
    assert out.strip() == "False"


def test_scipy_optimize_loads_when_a_closure_optimizer_searches():
    out = _run(
        "import sys, numpy as np, nopt\n"
        "p = nopt.Parameter(np.array([3.0, -2.0]))\n"
        "opt = nopt.LBFGS([p], line_search_fn='strong_wolfe')\n"
        "def closure():\n"
        "    opt.zero_grad(); p.grad = 2 * np.asarray(p); return float(np.sum(np.asarray(p) ** 2))\n"
        "opt.step(closure)\n"
        "r = nopt.minimize(lambda x: float(x @ x), np.ones(3), jac=lambda x: 2 * x)\n"
        "print('scipy.optimize' in sys.modules, type(r).__name__, abs(float(np.sum(np.asarray(p) ** 2))) < 1e-10)\n")
    assert out.split() == ["True", "OptimizeResult", "True"]
