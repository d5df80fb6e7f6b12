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

# optax's combinators (tests/test_combinators.py).
RECORDS += [
    OptimRecord(
        name="MultiSteps",
        option_sets=[dict(every_k=2)],
        quick_options=[dict(every_k=1), dict(every_k=3)],
        invalid=[(dict(every_k=0), ValueError, "every_k must be >= 1"),
                 (dict(every_k=1.5), TypeError, "every_k must be an int")],
        wraps_optimizer=True, elementwise=False, torch_oracle=False, counts_steps=False,
        supports_maximize=False, supports_weight_decay=False,
    ),
    OptimRecord(
        name="Lookahead",
        option_sets=[dict(k=5, alpha=0.5)],
        quick_options=[dict(), dict(k=2, alpha=0.8)],
        invalid=[(dict(k=0), ValueError, "k must be >= 1"),
                 (dict(alpha=1.5), ValueError, "Invalid alpha value")],
        wraps_optimizer=True, elementwise=False, torch_oracle=False, counts_steps=False,
        supports_maximize=False, supports_weight_decay=False,
    ),
]
