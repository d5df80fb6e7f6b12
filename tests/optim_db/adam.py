"""The Adam family: Adam, AdamW, Adamax, NAdam, RAdam.

Each NumPy reference follows torch's single-tensor function op by op, with
every scalar cast to the parameter's dtype (as torch casts a Python scalar to
the tensor's type), so float32 stays float32.
"""
import numpy as np

from . import OptimRecord, grid


def _lerp(start, end, weight):
    """torch.lerp with a scalar weight: the two-sided formula, chosen in the tensor's type."""
    dt = start.dtype.type
    w = dt(weight)
    if abs(w) < 0.5:
        return start + w * (end - start)
    return end - (end - start) * (dt(1) - w)


def _grad(param, grad, group):
    return -grad if group["maximize"] else grad.copy()


def _weight_decay(param, g, group):
    """torch's coupled (into the gradient) or decoupled (onto the parameter) decay."""
    dt = param.dtype.type
    wd = group["weight_decay"]
    if wd != 0:
        if group.get("decoupled_weight_decay", False):
            param *= dt(1 - group["lr"] * wd)
        else:
            g = g + dt(wd) * param
    return g


def _init(state, param, keys, **scalars):
    if not state:
        state.update(scalars)
        for key in keys:
            state[key] = np.zeros_like(param)


def adam_reference(param, grad, state, group):
    """torch.optim.Adam / AdamW single-tensor rule, for one parameter."""
    dt = param.dtype.type
    keys = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ())
    _init(state, param, keys, step=0.0)
    beta1, beta2 = group["betas"]
    g = _grad(param, grad, group)
    state["step"] += 1
    step = state["step"]
    g = _weight_decay(param, g, group)
    state["exp_avg"] = _lerp(state["exp_avg"], g, 1 - beta1)
    state["exp_avg_sq"] = state["exp_avg_sq"] * dt(beta2) + dt(1 - beta2) * g * g
    step_size = group["lr"] / (1 - beta1 ** step)
    bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
    v = state["exp_avg_sq"]
    if group["amsgrad"]:
        state["max_exp_avg_sq"] = np.maximum(state["max_exp_avg_sq"], v)
        v = state["max_exp_avg_sq"]
    denom = np.sqrt(v) / dt(bias_correction2_sqrt) + dt(group["eps"])
    param[...] = param + dt(-step_size) * state["exp_avg"] / denom


def adamax_reference(param, grad, state, group):
    """torch.optim.Adamax single-tensor rule, for one parameter."""
    dt = param.dtype.type
    _init(state, param, ("exp_avg", "exp_inf"), step=0.0)
    beta1, beta2 = group["betas"]
    g = _grad(param, grad, group)
    state["step"] += 1
    if group["weight_decay"] != 0:
        g = g + dt(group["weight_decay"]) * param
    state["exp_avg"] = _lerp(state["exp_avg"], g, 1 - beta1)
    state["exp_inf"] = np.maximum(state["exp_inf"] * dt(beta2), np.abs(g) + dt(group["eps"]))
    clr = group["lr"] / (1 - beta1 ** state["step"])
    param[...] = param + dt(-clr) * state["exp_avg"] / state["exp_inf"]


def nadam_reference(param, grad, state, group):
    """torch.optim.NAdam single-tensor rule, for one parameter.

    ``mu_product`` lives in a float32 tensor in torch, so its update is a
    float32 product.
    """
    dt = param.dtype.type
    _init(state, param, ("exp_avg", "exp_avg_sq"), step=0.0, mu_product=1.0)
    beta1, beta2 = group["betas"]
    lr, psi = group["lr"], group["momentum_decay"]
    g = _grad(param, grad, group)
    state["step"] += 1
    step = state["step"]
    bias_correction2 = 1 - beta2 ** step
    g = _weight_decay(param, g, group)
    mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * psi)))
    mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * psi)))
    state["mu_product"] = float(np.float32(state["mu_product"]) * np.float32(mu))
    state["exp_avg"] = _lerp(state["exp_avg"], g, 1 - beta1)
    state["exp_avg_sq"] = state["exp_avg_sq"] * dt(beta2) + dt(1 - beta2) * g * g
    denom = np.sqrt(state["exp_avg_sq"] / dt(bias_correction2)) + dt(group["eps"])
    mu_product_next = state["mu_product"] * mu_next
    p = param + dt(-lr * (1.0 - mu) / (1.0 - state["mu_product"])) * g / denom
    param[...] = p + dt((-lr * mu_next) / (1.0 - mu_product_next)) * state["exp_avg"] / denom


def radam_reference(param, grad, state, group):
    """torch.optim.RAdam single-tensor rule, for one parameter."""
    dt = param.dtype.type
    _init(state, param, ("exp_avg", "exp_avg_sq"), step=0.0)
    beta1, beta2 = group["betas"]
    lr = group["lr"]
    g = _grad(param, grad, group)
    state["step"] += 1
    step = state["step"]
    g = _weight_decay(param, g, group)
    state["exp_avg"] = _lerp(state["exp_avg"], g, 1 - beta1)
    state["exp_avg_sq"] = state["exp_avg_sq"] * dt(beta2) + dt(1 - beta2) * g * g
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    corrected = state["exp_avg"] / dt(bias_correction1)
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2 ** step) / bias_correction2
    if rho_t > 5.0:
        rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
        adaptive = dt(bias_correction2 ** 0.5) / (np.sqrt(state["exp_avg_sq"]) + dt(group["eps"]))
        param[...] = param - corrected * dt(lr) * adaptive * dt(rect)
    else:
        param[...] = param - corrected * dt(lr)


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

_ADAM_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

RECORDS = [
    OptimRecord(name="Adam", option_sets=_adam_options, reference=adam_reference,
                state_keys=_ADAM_KEYS, invalid=_invalid()),
    OptimRecord(name="AdamW", option_sets=_adamw_options, reference=adam_reference,
                state_keys=_ADAM_KEYS, invalid=_invalid()),
    OptimRecord(name="Adamax", option_sets=_adamax_options, reference=adamax_reference,
                state_keys=("exp_avg", "exp_inf"), invalid=_invalid()),
    OptimRecord(name="NAdam", option_sets=_nadam_options, reference=nadam_reference,
                state_keys=("exp_avg", "exp_avg_sq"), invalid=_invalid(momentum_decay=-0.1)),
    OptimRecord(name="RAdam", option_sets=_radam_options, reference=radam_reference,
                state_keys=("exp_avg", "exp_avg_sq"), invalid=_invalid()),
]
