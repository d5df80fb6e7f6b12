"""Least squares with nonlinear conjugate gradient (and nopt.minimize).

On a quadratic, CG with an exact-enough line search behaves like linear CG;
we compare the answer with numpy.linalg.lstsq.
"""
import numpy as np

import nopt


def main(quick=False, n_samples=400, n_features=60, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n_samples, n_features)) * np.logspace(0, 1, n_features)
    b = rng.standard_normal(n_samples)

    x = nopt.Parameter(np.zeros(n_features))
    opt = nopt.CG([x], max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-14)

    def closure():
        r = A @ x - b
        x.grad = A.T @ r
        return 0.5 * float(r @ r)

    loss = opt.step(closure)
    exact = np.linalg.lstsq(A, b, rcond=None)[0]
    print(f"CG closure: loss {0.5 * np.sum((A @ x - b) ** 2):.8f}, "
          f"max |x - lstsq| = {np.max(np.abs(x - exact)):.2e}")

    result = nopt.minimize(lambda v: (0.5 * np.sum((A @ v - b) ** 2), A.T @ (A @ v - b)),
                           np.zeros(n_features), jac=True, method="CG")
    print(f"nopt.minimize(method='CG'): {result.message} after {result.nit} iterations, "
          f"{result.nfev} evaluations; max |x - lstsq| = {np.max(np.abs(result.x - exact)):.2e}")
    return np.max(np.abs(x - exact)), np.max(np.abs(result.x - exact)), loss


if __name__ == "__main__":
    main()
