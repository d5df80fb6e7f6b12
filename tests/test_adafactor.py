"""Adafactor beyond the generic table: large and multi-tile shapes against torch,
thread-count independence of the reductions, state layout, mixed dtypes."""
import functools

import numpy as np
import pytest

import nopt
from harness import TOL, assert_close

# Shapes that cross the kernel's tiles: more than 4096 columns (two column
# blocks), many row blocks, a batch of matrices, a long vector, and the small
# and degenerate cases (scalar, one row, one column).
SHAPES = [(12, 4500), (3, 40, 300), (40_003,), (9, 1), (1, 9), (), (2, 3, 4, 5)]


def _problem(dtype, shapes, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(rng.standard_normal(s), dtype=dtype) for s in shapes]
    curvature = [np.asarray(rng.uniform(0.1, 2.0, s), dtype=dtype) for s in shapes]
    return arrays, curvature


@functools.lru_cache(maxsize=1)
def _noise(t, shapes, dtype):
    """Step ``t``'s noise, drawn once for both libraries' gradients (read-only)."""
    rng = np.random.default_rng([7, t])
    noise = [np.asarray(rng.standard_normal(s) * 0.1, dtype=dtype) for s in shapes]
    for n in noise:
        n.flags.writeable = False
    return noise


def _grads(t, params, curvature, dtype):
    out = []
    for p, a, noise in zip(params, curvature, _noise(t, tuple(np.shape(p) for p in params), dtype)):
        g = np.asarray(a * np.asarray(p) + noise, dtype=dtype)
        if t % 13 == 0:
            g = np.zeros_like(g)
        out.append(g)
    return out


@pytest.mark.parametrize("options", [
    dict(),
    dict(lr=0.05, weight_decay=0.1, maximize=True, d=1.2),
    dict(eps=(1e-3, 1e-2), beta2_decay=-0.6),
], ids=["defaults", "decay-maximize-d", "eps-beta2"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_multi_tile_shapes_match_torch_over_100_steps(dtype, options):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    arrays, curvature = _problem(dtype, SHAPES)
    params = [nopt.Parameter(a.copy()) for a in arrays]
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    opt = nopt.Adafactor(params, **options)
    topt = torch.optim.Adafactor(tparams, **options)
    sign = -1 if options.get("maximize") else 1
    for t in range(100):
        grads = _grads(t, params, curvature, dtype)
        tgrads = _grads(t, [p.detach().numpy() for p in tparams], curvature, dtype)
        for p, g, tp, tg in zip(params, grads, tparams, tgrads):
            p.grad = np.asarray(sign * g, dtype=dtype)
            tp.grad = torch.from_numpy(np.asarray(sign * tg, dtype=dtype))
        opt.step()
        topt.step()
    rtol = TOL[dtype]
    for i, (p, tp) in enumerate(zip(params, tparams)):
        assert_close(p, tp.detach().numpy(), rtol, f"param {i} {p.shape}")
        for key, value in topt.state[tp].items():
            if key != "step":
                assert opt.state[p][key].shape == tuple(value.shape), key
                assert_close(opt.state[p][key], value.numpy(), rtol, f"state[{i}][{key!r}]")
        assert opt.state[p]["step"] == float(topt.state[tp]["step"])
        assert set(opt.state[p]) == set(topt.state[tp])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thread_count_gives_identical_bits(dtype):
    shapes = [(300, 700), (5, 90, 200), (70_000,), (4, 9000)]
    results = []
    for n in (1, 2, 3):
        arrays, curvature = _problem(dtype, shapes, seed=3)
        params = [nopt.Parameter(a) for a in arrays]
        opt = nopt.Adafactor(params, lr=0.05, weight_decay=0.01)
        with nopt.num_threads(n):
            for t in range(4):
                for p, g in zip(params, _grads(t + 1, params, curvature, dtype)):
                    p.grad = g
                opt.step()
        results.append([p.tobytes() for p in params]
                       + [v.tobytes() for p in params for k, v in opt.state[p].items() if k != "step"])
    assert results[0] == results[1] == results[2]


def test_state_layout_is_torchs():
    p2, p3, p1, p0 = (nopt.Parameter(np.ones(s)) for s in [(4, 5), (2, 3, 4), (6,), ()])
    opt = nopt.Adafactor([p2, p3, p1, p0])
    for p in (p2, p3, p1, p0):
        p.grad = np.ones(p.shape)
    opt.step()
    assert opt.state[p2]["row_var"].shape == (4, 1) and opt.state[p2]["col_var"].shape == (1, 5)
    assert opt.state[p3]["row_var"].shape == (2, 3, 1) and opt.state[p3]["col_var"].shape == (2, 1, 4)
    assert set(opt.state[p1]) == {"step", "variance"} and opt.state[p1]["variance"].shape == (6,)
    assert opt.state[p0]["variance"].shape == ()
    assert set(opt.state[p2]) == {"step", "row_var", "col_var"}
    sd = opt.state_dict()
    assert sd["param_groups"][0]["eps"] == (None, 1e-3)
    again = nopt.Adafactor([nopt.Parameter(np.ones(s)) for s in [(4, 5), (2, 3, 4), (6,), ()]])
    again.load_state_dict(sd)
    bad = {"state": {0: {"step": 1.0, "row_var": np.zeros((5, 1)), "col_var": np.zeros((1, 5))}},
           "param_groups": sd["param_groups"]}
    with pytest.raises(ValueError, match="row_var.*shape"):
        again.load_state_dict(bad)
    bad["state"][0] = {"step": 1.0, "variance": np.zeros((4, 5))}
    with pytest.raises(ValueError, match="lacks the 'row_var'"):
        again.load_state_dict(bad)


def test_mixed_dtype_group_uses_the_first_parameters_eps1_as_torch():
    torch = pytest.importorskip("torch")
    arrays = [np.full((3, 4), 1e-6, np.float64), np.full((5,), 1e-6, np.float32),
              np.full((2, 2), 1e-6, np.float32)]
    for order in ([0, 1, 2], [1, 0, 2]):
        params = [nopt.Parameter(arrays[i].copy()) for i in order]
        tparams = [torch.tensor(arrays[i].copy(), requires_grad=True) for i in order]
        opt, topt = nopt.Adafactor(params, lr=0.1), torch.optim.Adafactor(tparams, lr=0.1)
        for t in range(5):
            for p, tp in zip(params, tparams):
                g = np.full(p.shape, 1e-9 * (t + 1), p.dtype)
                p.grad, tp.grad = g, torch.from_numpy(g.copy())
            opt.step()
            topt.step()
        for p, tp in zip(params, tparams):
            assert_close(p, tp.detach().numpy(), TOL[p.dtype.type], str(p.shape))


def test_validation_messages_are_torchs():
    p = nopt.Parameter(np.zeros(3))
    cases = [(dict(lr=-1.0), "Learning rate should be >= 0 but is: -1.0"),
             (dict(beta2_decay=0.1), "beta2_decay should be <= 0 but is: 0.1"),
             (dict(eps=(-1.0, 1e-3)), "epsilon1 should be >= 0 but is: -1.0"),
             (dict(eps=(None, -1.0)), "epsilon2 should be >= 0 but is: -1.0"),
             (dict(d=0.5), "Clipping threshold d should be >= 1 but is: 0.5"),
             (dict(weight_decay=-0.5), "weight_decay should be >= 0 but is: -0.5")]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as ours:
            nopt.Adafactor([p], **kwargs)
        assert str(ours.value) == message


def test_empty_parameter_is_left_alone_and_others_step():
    empty, other = nopt.Parameter(np.zeros((0, 4))), nopt.Parameter(np.ones((3, 4)))
    opt = nopt.Adafactor([empty, other])
    empty.grad, other.grad = np.zeros((0, 4)), np.ones((3, 4))
    opt.step()
    assert opt.state[empty]["step"] == 1.0 and opt.state[empty]["row_var"].shape == (0, 1)
    assert np.all(np.asarray(other) < 1)


def test_state_array_overlapping_another_array_is_refused_before_any_change():
    a, b = nopt.Parameter(np.ones(6)), nopt.Parameter(np.ones((2, 3)))
    opt = nopt.Adafactor([a, b])
    a.grad, b.grad = np.ones(6), np.ones((2, 3))
    opt.step()
    opt.state[a]["variance"] = b.grad.reshape(6)      # a state array that is b's gradient
    before = (np.array(a), np.array(b), {k: np.array(v) for k, v in opt.state[b].items()})
    with pytest.raises(ValueError):
        opt.step()
    assert np.array_equal(a, before[0]) and np.array_equal(b, before[1])
    assert opt.state[a]["step"] == 1.0 and opt.state[b]["step"] == 1.0
