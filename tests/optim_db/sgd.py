"""SGD: option grid, bad input, flags (its NumPy reference: nopt/_reference.py)."""
from . import OptimRecord, grid

_options = [
    o for o in grid(
        lr=[0.05], momentum=[0.0, 0.9], dampening=[0.0, 0.3], weight_decay=[0.0, 0.1],
        nesterov=[False, True], maximize=[False, True],
    )
    if not (o["nesterov"] and (o["momentum"] == 0 or o["dampening"] != 0))
]

RECORDS = [
    OptimRecord(
        name="SGD",
        option_sets=_options,
        quick_options=[dict(lr=0.01), dict(lr=0.01, momentum=0.9),
                       dict(lr=0.01, momentum=0.9, nesterov=True)],
        flat_mergeable=True,
        invalid=[
            (dict(lr=-0.1), ValueError, "Invalid learning rate"),
            (dict(lr=0.1, momentum=-0.5), ValueError, "Invalid momentum value"),
            (dict(lr=0.1, weight_decay=-1.0), ValueError, "Invalid weight_decay value"),
            (dict(lr=0.1, nesterov=True), ValueError, "Nesterov momentum requires"),
            (dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError, "Nesterov momentum requires"),
        ],
    ),
]
