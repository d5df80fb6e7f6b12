"""Adafactor: option grid, bad input (its NumPy reference is nopt._reference.adafactor).

Not elementwise, but the generic table tests apply: the harness's shapes
(1-D, 2-D, 3-D) exercise both the full and the factored second moment.
nopt's norms (and the reference's) sum in another order than torch's
vectorised reductions, so float32 parity is to rounding (about 1e-6 over
100 steps), not bit for bit.
"""
from . import OptimRecord


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
        state_keys=("variance",),
        quick_options=[dict(), dict(lr=0.05, weight_decay=0.1, maximize=True)],
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
