"""Muon: option grid, invalid inputs, NumPy reference.

Muon only takes 2-D parameters, and the generic harness has 1-D and 3-D
ones, so its record is not ``elementwise``: tests/test_muon.py runs its
option grid on 2-D shapes (torch parity with torch's Newton-Schulz run in
the parameter's dtype, this reference, resume, bad input).
"""
import numpy as np

from . import OptimRecord, grid


def _lerp(start, end, w):
    dt = start.dtype.type
    w = dt(w)
    if abs(w) < dt(0.5):
        return start + w * (end - start)
    return end + (w - dt(1)) * (end - start)


def newton_schulz_reference(x, coefficients, steps, eps):
    """The quintic iteration written plainly (new arrays each time), in x's dtype."""
    a, b, c = (x.dtype.type(v) for v in coefficients)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    norm = x.dtype.type(np.sqrt(np.sum(np.square(x.astype(np.float64)))))
    x = x / max(norm, x.dtype.type(eps))
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.T if tall else x


def muon_reference(param, grad, state, group):
    """torch.optim.Muon's single-tensor rule (Newton-Schulz in the dtype), in NumPy."""
    dt = param.dtype.type
    if "momentum_buffer" not in state:
        state["momentum_buffer"] = np.zeros_like(param)
    buf = state["momentum_buffer"] = _lerp(state["momentum_buffer"], grad, 1 - group["momentum"])
    update = _lerp(grad, buf, group["momentum"]) if group["nesterov"] else buf
    ortho = newton_schulz_reference(update, group["ns_coefficients"], group["ns_steps"], group["eps"])
    rows, cols = param.shape
    fn = group["adjust_lr_fn"]
    ratio = (np.sqrt(max(1, rows / cols)) if fn in (None, "original")
             else 0.2 * np.sqrt(max(rows, cols)))
    param[...] = param * dt(1 - group["lr"] * group["weight_decay"])
    param[...] = param + dt(-group["lr"] * ratio) * ortho


MUON = OptimRecord(
    name="Muon",
    option_sets=grid(lr=[0.02], weight_decay=[0.1, 0.0], momentum=[0.95, 0.3],
                     nesterov=[True, False], adjust_lr_fn=[None, "match_rms_adamw"])
    + [dict(lr=0.01, ns_coefficients=(2.0, -1.5, 0.5), ns_steps=7, eps=1e-3)],
    reference=muon_reference,
    state_keys=("momentum_buffer",),
    torch_kwargs={},
    invalid=[
        (dict(lr=-0.1), ValueError, "Learning rate should be >= 0"),
        (dict(momentum=-0.5), ValueError, "momentum should be >= 0"),
        (dict(weight_decay=-1.0), ValueError, "weight decay should be >= 0"),
        (dict(adjust_lr_fn="spectral"), ValueError,
         "Adjust learning rate function spectral is not supported"),
    ],
    extra={"shapes": [(4, 5), (6, 3), (3, 3), (1, 8)]},
    quick_options=[dict(), dict(lr=0.02, nesterov=False, adjust_lr_fn="match_rms_adamw")],
    elementwise=False,
    counts_steps=False,         # torch's Muon state is the momentum buffer only
    supports_maximize=False,
)

RECORDS = [MUON]
