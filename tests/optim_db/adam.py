"""The Adam family: Adam, AdamW, Adamax, NAdam, RAdam (tests/test_adam_family.py
runs its specifics over these records).

Their NumPy references (nopt/_reference.py) follow torch's single-tensor
functions, with every scalar cast to the parameter's dtype (as torch casts a
Python scalar to the tensor's type), so float32 stays float32.
"""
from . import OptimRecord, grid


def _invalid(**extra):
    """torch's hyperparameter errors shared by the family (messages as torch's)."""
    cases = [
        (dict(lr=-0.1), ValueError, "Invalid learning rate: -0.1"),
        (dict(lr=float("nan")), ValueError, "Invalid learning rate: nan"),
        (dict(eps=-1e-8), ValueError, "Invalid epsilon value: -1e-08"),
        (dict(betas=(1.0, 0.999)), ValueError, "Invalid beta parameter at index 0: 1.0"),
        (dict(betas=(-0.1, 0.999)), ValueError, "Invalid beta parameter at index 0: -0.1"),
        (dict(betas=(0.9, 1.0)), ValueError, "Invalid beta parameter at index 1: 1.0"),
        (dict(betas=(0.9, -0.5)), ValueError, "Invalid beta parameter at index 1: -0.5"),
        (dict(weight_decay=-0.01), ValueError, "Invalid weight_decay value: -0.01"),
    ]
    for name, value in extra.items():
        cases.append(({name: value}, ValueError, f"Invalid {name} value: {value}"))
    return cases


# beta1 < 0.5 makes torch's lerp take its second formula; a small beta2
# gives RAdam a different rectification switch (rho_t > 5 from step 7).
_LARGE_LERP = dict(lr=0.05, betas=(0.3, 0.8))

_adam_options = grid(
    lr=[0.05], amsgrad=[False, True], weight_decay=[0.0, 0.1], maximize=[False, True],
    decoupled_weight_decay=[False, True],
) + [
    {**_LARGE_LERP, "amsgrad": True, "weight_decay": 0.1},
    {**_LARGE_LERP, "eps": 1e-3, "decoupled_weight_decay": True, "weight_decay": 0.5},
]

_adamw_options = grid(
    lr=[0.05], amsgrad=[False, True], weight_decay=[0.0, 0.1], maximize=[False, True],
) + [
    dict(lr=0.05),  # AdamW's own default weight_decay (1e-2)
    {**_LARGE_LERP, "amsgrad": True, "maximize": True},
]

_adamax_options = grid(lr=[0.05], weight_decay=[0.0, 0.1], maximize=[False, True]) + [
    {**_LARGE_LERP, "weight_decay": 0.1, "eps": 1e-3},
]

_nadam_options = grid(
    lr=[0.05], weight_decay=[0.0, 0.1], decoupled_weight_decay=[False, True],
    maximize=[False, True], momentum_decay=[4e-3, 0.1],
) + [
    {**_LARGE_LERP, "weight_decay": 0.1},
    dict(lr=0.05, momentum_decay=0.0),
]

_radam_options = grid(
    lr=[0.05], weight_decay=[0.0, 0.1], decoupled_weight_decay=[False, True],
    maximize=[False, True],
) + [
    {**_LARGE_LERP, "weight_decay": 0.1},             # rectified from step 7
    dict(lr=0.05, betas=(0.9, 0.5)),                  # rho_inf = 3: never rectified
    dict(lr=0.05, betas=(0.9, 0.99), eps=1e-3),       # rectified from step 6
]


_FLAGS = dict(flat_mergeable=True, step_cached=True)

RECORDS = [
    OptimRecord(name="Adam", option_sets=_adam_options, invalid=_invalid(),
                quick_options=[dict(lr=0.01), dict(lr=0.01, amsgrad=True, weight_decay=0.1)], **_FLAGS),
    OptimRecord(name="AdamW", option_sets=_adamw_options, invalid=_invalid(),
                quick_options=[dict(lr=0.01)], **_FLAGS),
    OptimRecord(name="Adamax", option_sets=_adamax_options,
                invalid=_invalid(), quick_options=[dict(lr=0.01)], **_FLAGS),
    OptimRecord(name="NAdam", option_sets=_nadam_options,
                invalid=_invalid(momentum_decay=-0.1), quick_options=[dict(lr=0.01)], **_FLAGS),
    OptimRecord(name="RAdam", option_sets=_radam_options,
                invalid=_invalid(),
                quick_options=[dict(lr=0.01), dict(lr=0.01, decoupled_weight_decay=True, weight_decay=0.1)],
                **_FLAGS),
]
