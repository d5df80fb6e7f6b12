"""The rules beyond torch.optim (no torch oracle): option grids, bad input, flags.

Their NumPy references are in nopt/_reference.py (from the papers, in nopt's
order of operations); tests/test_beyond.py compares them, and nopt, with optax
and the authors' packages over 100 steps. Prodigy's d is one scalar for the
whole optimizer, so it is not elementwise in the table's sense (its
reference, which needs every array at once, is in tests/test_beyond.py).
"""
from . import OptimRecord, grid

# Steps cached by _count_step (rules with a step count); tables merged over flat storage.
_ELEMENTWISE = dict(torch_oracle=False, flat_mergeable=True)

RECORDS = [
    OptimRecord(
        name="Lion",
        option_sets=grid(lr=[1e-3], betas=[(0.9, 0.99), (0.8, 0.95)], weight_decay=[0.0, 0.5],
                         maximize=[False, True]),
        quick_options=[dict(lr=1e-3), dict(lr=1e-3, weight_decay=0.1)],
        **_ELEMENTWISE,
        invalid=[
            (dict(lr=-0.1), ValueError, "Invalid learning rate"),
            (dict(betas=(0.9, 1.1)), ValueError, "Invalid beta parameter at index 1"),
            (dict(weight_decay=-1.0), ValueError, "Invalid weight_decay value"),
            (dict(betas=(0.9,)), ValueError, "betas must be a tuple of 2"),
        ],
    ),
    OptimRecord(
        name="AdaBelief",
        option_sets=grid(lr=[1e-2], eps=[1e-16, 1e-8], weight_decay=[0.0, 0.1],
                         decoupled_weight_decay=[True, False], maximize=[False, True]),
        quick_options=[dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=False)],
        step_cached=True, **_ELEMENTWISE,
        invalid=[
            (dict(lr=-0.1), ValueError, "Invalid learning rate"),
            (dict(eps=-1.0), ValueError, "Invalid epsilon value"),
            (dict(betas=(1.0, 0.9)), ValueError, "Invalid beta parameter at index 0"),
            (dict(weight_decay=float("nan")), ValueError, "Invalid weight_decay value"),
        ],
    ),
    OptimRecord(
        name="Adan",
        option_sets=grid(lr=[1e-2], betas=[(0.98, 0.92, 0.99), (0.9, 0.5, 0.95)],
                         weight_decay=[0.0, 0.05], no_prox=[False, True], maximize=[False, True]),
        quick_options=[dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.05, no_prox=True)],
        step_cached=True, state_keys=("exp_avg", "exp_avg_diff", "exp_avg_sq", "pre_grad"),
        **_ELEMENTWISE,
        invalid=[
            (dict(lr=-0.1), ValueError, "Invalid learning rate"),
            (dict(betas=(0.9, 0.9)), ValueError, "betas must be a tuple of 3"),
            (dict(betas=(0.9, 0.9, 1.0)), ValueError, "Invalid beta parameter at index 2"),
            (dict(eps=-1e-8), ValueError, "Invalid epsilon value"),
        ],
    ),
    OptimRecord(
        name="LAMB",
        option_sets=grid(lr=[1e-2], betas=[(0.9, 0.999), (0.8, 0.99)], weight_decay=[0.0, 0.1],
                         maximize=[False, True]),
        quick_options=[dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.1)],
        # One table row per parameter (its norms), so flat storage is not one merged loop.
        torch_oracle=False, step_cached=True, state_keys=("exp_avg", "exp_avg_sq"),
        invalid=[
            (dict(lr=-0.1), ValueError, "Invalid learning rate"),
            (dict(eps=-1.0), ValueError, "Invalid epsilon value"),
            (dict(weight_decay=-0.1), ValueError, "Invalid weight_decay value"),
        ],
    ),
    OptimRecord(
        name="LARS",
        option_sets=grid(lr=[0.5], momentum=[0.0, 0.9], weight_decay=[0.0, 0.01],
                         trust_coefficient=[1e-2], eps=[0.0, 1e-8], nesterov=[False, True],
                         maximize=[False, True]),
        quick_options=[dict(lr=0.5), dict(lr=0.5, weight_decay=0.01, nesterov=True)],
        torch_oracle=False, counts_steps=False, state_keys=("momentum_buffer",),
        invalid=[
            (dict(lr=-0.1), ValueError, "Invalid learning rate"),
            (dict(momentum=1.0), ValueError, "Invalid momentum value"),
            (dict(trust_coefficient=-1.0), ValueError, "Invalid trust_coefficient value"),
            (dict(eps=-1.0), ValueError, "Invalid epsilon value"),
        ],
    ),
    OptimRecord(
        name="ScheduleFreeSGD",
        option_sets=grid(lr=[0.1], momentum=[0.9, 0.5], weight_decay=[0.0, 0.01],
                         warmup_steps=[0, 10], maximize=[False, True]),
        quick_options=[dict(lr=0.1), dict(lr=0.1, warmup_steps=3, weight_decay=0.01)],
        counts_steps=False, state_keys=("z",), **_ELEMENTWISE,
        invalid=[
            (dict(lr=-0.1), ValueError, "Invalid learning rate"),
            (dict(momentum=1.0), ValueError, "Momentum must be between 0 and 1"),
            (dict(warmup_steps=1.5), ValueError, "Invalid warmup_steps value"),
            (dict(r=-1.0), ValueError, "Invalid r value"),
        ],
    ),
    OptimRecord(
        name="ScheduleFreeAdamW",
        option_sets=grid(lr=[1e-2], betas=[(0.9, 0.999), (0.5, 0.99)], weight_decay=[0.0, 0.01],
                         warmup_steps=[0, 10], r=[0.0, 1.0], maximize=[False, True]),
        quick_options=[dict(lr=1e-2), dict(lr=1e-2, warmup_steps=3, weight_decay=0.01)],
        counts_steps=False, state_keys=("z", "exp_avg_sq"), **_ELEMENTWISE,
        invalid=[
            (dict(lr=-0.1), ValueError, "Invalid learning rate"),
            (dict(betas=(0.0, 0.9)), ValueError, "Invalid beta parameter at index 0"),
            (dict(eps=-1.0), ValueError, "Invalid epsilon value"),
            (dict(weight_lr_power=-1.0), ValueError, "Invalid weight_lr_power value"),
        ],
    ),
    OptimRecord(
        name="Prodigy",
        option_sets=[dict(), dict(weight_decay=0.01, use_bias_correction=True)],
        quick_options=[dict(), dict(weight_decay=0.01, decouple=False)],
        elementwise=False, torch_oracle=False, supports_maximize=False,
        state_keys=("s", "p0", "exp_avg", "exp_avg_sq"),
        invalid=[
            (dict(lr=0.0), ValueError, "Invalid learning rate"),
            (dict(d0=-1.0), ValueError, "Invalid d0 value"),
            (dict(eps=0.0), ValueError, "Invalid epsilon value"),
            (dict(beta3=1.0), ValueError, "Invalid beta3 value"),
            (dict(growth_rate=0.5), ValueError, "Invalid growth_rate value"),
        ],
    ),
]
