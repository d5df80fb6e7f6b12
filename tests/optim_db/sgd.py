import numpy as np

from . import OptimRecord, grid


def sgd_reference(param, grad, state, group):
    """torch.optim.SGD's single-tensor rule, for one parameter, in NumPy."""
    dt = param.dtype.type
    g = -grad if group["maximize"] else grad.copy()
    if group["weight_decay"] != 0:
        g = g + dt(group["weight_decay"]) * param
    momentum = group["momentum"]
    if momentum != 0:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = g.copy()
        else:
            buf = buf * dt(momentum) + dt(1 - group["dampening"]) * g
        state["momentum_buffer"] = buf
        g = g + dt(momentum) * buf if group["nesterov"] else buf
    param[...] = param - dt(group["lr"]) * g


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
        reference=sgd_reference,
        state_keys=("momentum_buffer",),
        invalid=[
            (dict(lr=-0.1), ValueError, "Invalid learning rate"),
            (dict(lr=0.1, momentum=-0.5), ValueError, "Invalid momentum value"),
            (dict(lr=0.1, weight_decay=-1.0), ValueError, "Invalid weight_decay value"),
            (dict(lr=0.1, nesterov=True), ValueError, "Nesterov momentum requires"),
            (dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError, "Nesterov momentum requires"),
        ],
    ),
]
