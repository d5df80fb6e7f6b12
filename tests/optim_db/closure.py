"""LBFGS and CG: optimizers whose step needs a closure (tests/test_lbfgs.py,
tests/test_cg.py and tests/test_minimize.py test them against torch and scipy).

The generic table tests do not apply (``elementwise=False``): a step
evaluates the closure many times over the whole model.
"""
from . import OptimRecord

_FLAGS = dict(elementwise=False, needs_closure=True, counts_steps=False,
              supports_maximize=False, supports_weight_decay=False)

RECORDS = [
    OptimRecord(
        name="LBFGS",
        option_sets=[dict(lr=1)],
        quick_options=[dict(lr=1), dict(lr=1, line_search_fn="strong_wolfe")],
        invalid=[(dict(lr=-0.1), ValueError, "Invalid learning rate")],
        state_keys=("d", "prev_flat_grad"),
        **_FLAGS,
    ),
    OptimRecord(
        name="CG",
        option_sets=[dict()],
        quick_options=[dict(), dict(beta="FR")],
        torch_oracle=False,   # scipy.optimize.minimize(method="CG") is its oracle
        state_keys=("d", "prev_flat_grad"),
        **_FLAGS,
    ),
]
