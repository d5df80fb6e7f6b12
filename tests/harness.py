"""Shared machinery for the table-driven optimizer tests.

A run builds the same parameters (shapes (1,), (7,), (4, 5), (3, 2, 2)) in two
groups (the second with half the lr), and feeds each library gradients computed
from its *own* parameters by the same NumPy function: a quadratic with mixed
curvature, plus a fixed noise sequence, with an all-zero gradient every 17th
step and a sign flip every 11th.
"""
import copy
import functools

import numpy as np

import nopt

SHAPES = [(1,), (7,), (4, 5), (3, 2, 2)]
TOL = {np.float64: 1e-10, np.float32: 1e-5}


def initial_arrays(dtype, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


@functools.lru_cache(maxsize=4096)
def _noise(seed, t, dtype, shapes):
    """Step ``t``'s noise: drawn once per process, then shared by every run (read-only).

    Seeding a generator per step and drawing took a third of a parity test.
    """
    rng = np.random.default_rng([seed, t])
    noise = [rng.standard_normal(s).astype(dtype) * dtype(0.1) for s in shapes]
    for n in noise:
        n.flags.writeable = False
    return noise


class GradientSource:
    """Deterministic gradients g_t(p) = a * p + b + noise_t, with zero and flipped steps."""

    def __init__(self, dtype, seed=1, shapes=SHAPES):
        rng = np.random.default_rng(seed)
        self.dtype = dtype
        self.a = [rng.uniform(-0.5, 2.0, s).astype(dtype) for s in shapes]
        self.b = [rng.standard_normal(s).astype(dtype) for s in shapes]
        self.seed = seed

    def __call__(self, t, arrays):
        grads = []
        for a, b, p, noise in zip(self.a, self.b, arrays, _noise(self.seed, t, self.dtype,
                                                                  tuple(p.shape for p in arrays))):
            g = a * p + b + noise
            if t % 17 == 0:
                g = np.zeros_like(g)
            elif t % 11 == 0:
                g = -g
            grads.append(np.ascontiguousarray(g, dtype=self.dtype))
        return grads


def group_options(options):
    """Hyperparameters of the second group: half the lr, when there is one."""
    return {"lr": options["lr"] * 0.5} if "lr" in options else {}


def split_groups(items, options):
    return [{"params": items[:2]}, {"params": items[2:], **group_options(options)}]


def make_nopt(record, options, dtype, seed=0):
    params = [nopt.Parameter(a) for a in initial_arrays(dtype, seed)]
    return params, record.cls(split_groups(params, options), **options)


def run_nopt(record, options, dtype, steps, seed=0, start=0, params=None, optimizer=None):
    if params is None:
        params, optimizer = make_nopt(record, options, dtype, seed)
    source = GradientSource(dtype)
    for t in range(start, start + steps):
        for p, g in zip(params, source(t, params)):
            p.grad = g
        optimizer.step()
    return params, optimizer


def run_torch(record, options, dtype, steps, seed=0):
    import torch

    tparams = [torch.tensor(a, requires_grad=True) for a in initial_arrays(dtype, seed)]
    optimizer = record.torch_cls(split_groups(tparams, options), **options, **record.torch_kwargs)
    source = GradientSource(dtype)
    for t in range(steps):
        grads = source(t, [p.detach().numpy() for p in tparams])
        for p, g in zip(tparams, grads):
            p.grad = torch.from_numpy(g)
        optimizer.step()
    return tparams, optimizer


def run_reference(record, options, dtype, steps, seed=0):
    """Apply ``record.reference`` per parameter: the NumPy oracle."""
    arrays = initial_arrays(dtype, seed)
    groups = split_groups(list(range(len(arrays))), options)
    defaults = dict(record.cls([nopt.Parameter(np.zeros(1, dtype))], **options).defaults)
    states = [dict() for _ in arrays]
    source = GradientSource(dtype)
    for t in range(steps):
        grads = source(t, arrays)
        for group in groups:
            hyper = {**defaults, **{k: v for k, v in group.items() if k != "params"}}
            for i in group["params"]:
                record.reference(arrays[i], grads[i], states[i], hyper)
    return arrays, states


def assert_close(actual, expected, rtol, what):
    """Relative tolerance, with an absolute floor of ``rtol`` times the array's scale.

    The scale is max(1, max|expected|): the test problem's values are O(1), and
    an element that is a small difference of O(1) terms (a parameter crossing
    zero, a momentum buffer near the optimum) carries rounding from those
    terms, not from itself. torch's own optimizer tests likewise pair rtol
    with an absolute tolerance (1e-5 for float32).
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def snapshot(params, optimizer):
    """A deep copy of everything a step may change."""
    return (
        [np.array(p, copy=True) for p in params],
        copy.deepcopy({k: v for k, v in optimizer.state_dict()["state"].items()}),
        copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]),
    )


def assert_same_snapshot(a, b):
    for x, y in zip(a[0], b[0]):
        assert x.tobytes() == y.tobytes()
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        assert a[1][k].keys() == b[1][k].keys()
        for key in a[1][k]:
            va, vb = a[1][k][key], b[1][k][key]
            if isinstance(va, np.ndarray):
                assert va.dtype == vb.dtype and va.tobytes() == vb.tobytes(), (k, key)
            else:
                assert va == vb or (va != va and vb != vb), (k, key)
    assert a[2] == b[2]
