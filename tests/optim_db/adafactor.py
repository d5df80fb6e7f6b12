"""Adafactor: option grid, NumPy reference, bad input.

The reference follows torch's single-tensor rule op by op, in the
parameter's dtype. Its norms (and nopt's) sum in another order than torch's
vectorised reductions, so float32 parity is to rounding (about 1e-6 over
100 steps), not bit for bit.
"""
import numpy as np

from . import OptimRecord, grid


def _norm(x, axis=None):
    """torch.norm: sqrt of the sum of squares (taken in float64), rounded to the dtype."""
    s = np.sum(np.square(x, dtype=np.float64), axis=axis, keepdims=axis is not None)
    return np.sqrt(s).astype(x.dtype)


def _lerp(start, end, w):
    """torch.lerp with a scalar weight (two-sided, the side picked in the dtype)."""
    dt = start.dtype.type
    w = dt(w)
    if abs(w) < dt(0.5):
        return start + w * (end - start)
    return end + (w - dt(1)) * (end - start)


def adafactor_reference(param, grad, state, group):
    """torch.optim.Adafactor's single-tensor rule, for one parameter, in NumPy."""
    dt = param.dtype.type
    if not state:
        state["step"] = 0.0
        if param.ndim >= 2:
            state["row_var"] = np.zeros(param.shape[:-1] + (1,), param.dtype)
            state["col_var"] = np.zeros(param.shape[:-2] + (1,) + param.shape[-1:], param.dtype)
        else:
            state["variance"] = np.zeros_like(param)
    if param.size == 0:
        state["step"] += 1
        return
    eps1, eps2 = group["eps"]
    if eps1 is None:
        eps1 = float(np.finfo(param.dtype).eps)
    g = -grad if group["maximize"] else grad
    state["step"] += 1
    t = state["step"]
    w = t ** group["beta2_decay"]
    rho = min(group["lr"], 1 / (t ** 0.5))
    alpha = max(eps2, float(_norm(param)) / (param.size ** 0.5)) * rho
    if group["weight_decay"] != 0:
        param[...] = param * dt(1 - group["lr"] * group["weight_decay"])
    if g.ndim >= 2:
        row_mean = np.square(_norm(g, axis=-1)) / dt(g.shape[-1])
        state["row_var"][...] = _lerp(state["row_var"], row_mean, w)
        col_mean = np.square(_norm(g, axis=-2)) / dt(g.shape[-2])
        state["col_var"][...] = _lerp(state["col_var"], col_mean, w)
        row_var_mean = (np.sum(state["row_var"], axis=-2, keepdims=True, dtype=np.float64)
                        / g.shape[-2]).astype(param.dtype)
        estimate = (state["row_var"] * state["col_var"]) / np.maximum(row_var_mean, dt(eps1))
    else:
        state["variance"][...] = _lerp(state["variance"], g * g, w)
        estimate = state["variance"].copy()
    update = (dt(1) / np.sqrt(np.maximum(estimate, dt(eps1 * eps1)))) * g
    denom = max(1.0, float(_norm(update)) / ((update.size ** 0.5) * group["d"]))
    param[...] = param + dt(-alpha / denom) * update


RECORDS = [
    OptimRecord(
        name="Adafactor",
        # d=1.5 makes the clipping bind less often; eps[0]=1e-3 binds the
        # floor on this problem's zero-gradient steps; beta2_decay=-0.5 is a
        # slower decay. lr stays small: the relative step grows parameters on
        # the problem's negative-curvature directions geometrically (lr=0.5
        # reaches |p| ~ 1e5, where float32 torch is 50% away from float64 torch).
        option_sets=[
            dict(lr=1e-2),
            dict(lr=1e-2, weight_decay=0.1, maximize=True),
            dict(lr=0.03, d=1.5, eps=(1e-3, 1e-3), beta2_decay=-0.5, weight_decay=0.1),
            dict(lr=0.05, beta2_decay=-0.8, eps=(None, 1e-2), d=1.0, weight_decay=0.05),
        ],
        reference=adafactor_reference,
        state_keys=("variance",),
        invalid=[
            (dict(lr=-0.1), ValueError, "Learning rate should be >= 0"),
            (dict(beta2_decay=0.5), ValueError, "beta2_decay should be <= 0"),
            (dict(eps=(-1.0, 1e-3)), ValueError, "epsilon1 should be >= 0"),
            (dict(eps=(None, -1e-3)), ValueError, "epsilon2 should be >= 0"),
            (dict(d=0.5), ValueError, "Clipping threshold d should be >= 1"),
            (dict(weight_decay=-1.0), ValueError, "weight_decay should be >= 0"),
        ],
    ),
]
