"""Optimizers that wrap another one: ApplyIfFinite (tests/test_finite.py)."""
from . import OptimRecord

RECORDS = [
    OptimRecord(
        name="ApplyIfFinite",
        option_sets=[dict()],
        quick_options=[dict(), dict(max_consecutive_skips=3)],
        invalid=[(dict(max_consecutive_skips=-1), ValueError, "max_consecutive_skips must be >= 0")],
        wraps_optimizer=True,
        elementwise=False,
        torch_oracle=False,
        counts_steps=False,        # its state is the wrapped optimizer's (here plain SGD)
        supports_maximize=False,
        supports_weight_decay=False,
    ),
]
