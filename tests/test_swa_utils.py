"""nopt.swa_utils: SWALR against torch, AveragedParameters against NumPy and torch's AveragedModel."""
import math
import warnings

import numpy as np
import pytest

import nopt
from nopt import lr_scheduler as nls
from nopt import swa_utils as nswa
from nopt._kernels import _plan

torch = pytest.importorskip("torch")
tls = torch.optim.lr_scheduler
tswa = torch.optim.swa_utils

SHAPES = [(1,), (7,), (4, 5), (3, 2, 2)]
STEPS = 300


# ---------------------------------------------------------------- SWALR
def make_optimizer(lib):
    if lib == "torch":
        ps = [torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)]
        cls = torch.optim.SGD
    else:
        ps = [nopt.Parameter(np.zeros(3)), nopt.Parameter(np.zeros(2))]
        cls = nopt.SGD
    return cls([{"params": [ps[0]], "lr": 0.1}, {"params": [ps[1]], "lr": 0.03}], lr=0.1, momentum=0.9)


def modules(lib):
    return (tls, tswa) if lib == "torch" else (nls, nswa)


SWALR_CASES = [
    ("cos", lambda s, w, o: [w.SWALR(o, swa_lr=0.05)], None),
    ("linear", lambda s, w, o: [w.SWALR(o, 0.01, anneal_epochs=5, anneal_strategy="linear")], None),
    ("no-anneal", lambda s, w, o: [w.SWALR(o, 0.02, anneal_epochs=0)], None),
    ("one-epoch", lambda s, w, o: [w.SWALR(o, 0.02, anneal_epochs=1)], None),
    ("per-group", lambda s, w, o: [w.SWALR(o, [0.05, 0.001], anneal_epochs=40)], None),
    ("long-anneal", lambda s, w, o: [w.SWALR(o, 0.2, anneal_epochs=400, anneal_strategy="linear")], None),
    # The usual recipe: a cosine schedule, then SWALR from swa_start on.
    ("after-cosine", lambda s, w, o: [s.CosineAnnealingLR(o, T_max=100), w.SWALR(o, 0.005, 20)], 100),
    ("after-steps", lambda s, w, o: [s.StepLR(o, 30, 0.5), w.SWALR(o, [0.02, 0.01], 15, "linear")], 75),
]


def snapshot(opt, scheds):
    return ([(g["lr"], g.get("swa_lr"), g.get("initial_lr")) for g in opt.param_groups],
            [list(s.get_last_lr()) for s in scheds])


def run_swalr(lib, build, switch, steps=STEPS):
    sched_mod, swa_mod = modules(lib)
    opt = make_optimizer(lib)
    scheds = build(sched_mod, swa_mod, opt)
    trace = [snapshot(opt, scheds)]
    for t in range(steps):
        opt.step()
        if switch is None:
            scheds[-1].step()
        elif t < switch:
            scheds[0].step()
        else:
            scheds[1].step()
        trace.append(snapshot(opt, scheds))
    return opt, scheds, trace


def close(a, b):
    if a is None or b is None:
        return a is b
    return a == b or abs(a - b) <= 1e-12 * abs(b)


@pytest.mark.parametrize("name,build,switch", SWALR_CASES, ids=[c[0] for c in SWALR_CASES])
def test_swalr_matches_torch(name, build, switch):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = run_swalr("nopt", build, switch)[2]
        theirs = run_swalr("torch", build, switch)[2]
    for t, ((og, ol), (tg, tl)) in enumerate(zip(ours, theirs)):
        for o, th in zip(og, tg):
            assert all(close(a, b) for a, b in zip(o, th)), f"{name} step {t}: {o} vs torch {th}"
        for o, th in zip(ol, tl):
            assert all(close(a, b) for a, b in zip(o, th)), f"{name} step {t}"


@pytest.mark.parametrize("name,build,switch", SWALR_CASES, ids=[c[0] for c in SWALR_CASES])
def test_swalr_checkpoint_resume(name, build, switch, tmp_path):
    half = STEPS // 2
    full = run_swalr("nopt", build, switch)[2]
    opt, scheds, _ = run_swalr("nopt", build, switch, steps=half)
    nopt.save({"opt": opt.state_dict(), "scheds": [s.state_dict() for s in scheds]}, tmp_path / "c")
    saved = nopt.load(tmp_path / "c")
    opt = make_optimizer("nopt")
    scheds = build(nls, nswa, opt)
    opt.load_state_dict(saved["opt"])
    for s, state in zip(scheds, saved["scheds"]):
        s.load_state_dict(state)
    assert snapshot(opt, scheds) == full[half]
    for t in range(half, STEPS):
        opt.step()
        scheds[-1 if switch is None or t >= switch else 0].step()
        assert snapshot(opt, scheds) == full[t + 1]


def test_swalr_state_dict_keys_match_torch():
    ours = run_swalr("nopt", SWALR_CASES[0][1], None, steps=3)[1][0].state_dict()
    theirs = run_swalr("torch", SWALR_CASES[0][1], None, steps=3)[1][0].state_dict()
    assert set(ours) == set(theirs)


SWALR_ERRORS = [
    ("swa_lr-length", lambda w, o: w.SWALR(o, [0.1, 0.2, 0.3])),
    ("strategy", lambda w, o: w.SWALR(o, 0.1, anneal_strategy="exp")),
    ("anneal-negative", lambda w, o: w.SWALR(o, 0.1, anneal_epochs=-1)),
    ("anneal-float", lambda w, o: w.SWALR(o, 0.1, anneal_epochs=2.5)),
    ("not-an-optimizer", lambda w, o: w.SWALR(object(), 0.1)),
    ("resume-without-initial_lr", lambda w, o: w.SWALR(o, 0.1, last_epoch=4)),
]


@pytest.mark.parametrize("name,build", SWALR_ERRORS, ids=[c[0] for c in SWALR_ERRORS])
def test_swalr_errors_match_torch(name, build):
    types = []
    for lib in ("nopt", "torch"):
        try:
            build(modules(lib)[1], make_optimizer(lib))
        except Exception as exc:
            types.append(type(exc))
        else:
            types.append(None)
    assert types[1] is not None and types[0] is types[1]


def test_ema_decay_errors_match_torch():
    for bad in (-0.1, 1.5):
        for fn in ("get_ema_multi_avg_fn", "get_ema_avg_fn"):
            with pytest.raises(ValueError):
                getattr(tswa, fn)(bad)
            with pytest.raises(ValueError, match="decay"):
                getattr(nswa, fn)(bad)


# ---------------------------------------------------------------- averages
def values(dtype, seed, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def make_params(dtype, shapes=SHAPES):
    return [nopt.Parameter(v) for v in values(dtype, 0, shapes)]


def set_values(params, new):
    for p, v in zip(params, new):
        p[...] = v


def numpy_reference(mode, decay, sequence, dtype):
    """First update copies; then SWA avg + (x - avg) / (n + 1), or torch's two-sided lerp."""
    avg = None
    w = dtype(1.0 - decay)
    for n, xs in enumerate(sequence):
        if n == 0:
            avg = [x.copy() for x in xs]
        elif mode == "swa":
            avg = [a + (x - a) / dtype(n + 1) for a, x in zip(avg, xs)]
        elif abs(w) < 0.5:
            avg = [a + w * (x - a) for a, x in zip(avg, xs)]
        else:
            avg = [x + (w - dtype(1)) * (x - a) for a, x in zip(avg, xs)]
    return avg


def run_averaged(averaged, params, sequence):
    for xs in sequence:
        set_values(params, xs)
        averaged.update_parameters()
    return averaged


AVERAGE_KINDS = [
    ("swa", dict(mode="swa"), "swa", 0.0),
    ("swa-default", dict(), "swa", 0.0),
    ("ema-0.999", dict(mode="ema", decay=0.999), "ema", 0.999),
    ("ema-0.9", dict(mode="ema", decay=0.9), "ema", 0.9),
    ("ema-0.3", dict(mode="ema", decay=0.3), "ema", 0.3),  # the lerp's other side
    ("ema-0", dict(mode="ema", decay=0.0), "ema", 0.0),
    ("ema-1", dict(mode="ema", decay=1.0), "ema", 1.0),
    ("swa-multi_avg_fn", dict(multi_avg_fn=nswa.get_swa_multi_avg_fn()), "swa", 0.0),
    ("ema-multi_avg_fn", dict(multi_avg_fn=nswa.get_ema_multi_avg_fn(0.95)), "ema", 0.95),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kwargs,mode,decay", AVERAGE_KINDS, ids=[k[0] for k in AVERAGE_KINDS])
def test_averages_match_numpy_reference_bitwise(name, kwargs, mode, decay, dtype):
    params = make_params(dtype)
    sequence = [values(dtype, 10 + t) for t in range(60)]
    averaged = run_averaged(nswa.AveragedParameters(params, **kwargs), params, sequence)
    assert averaged.n_averaged == 60
    for ours, ref in zip(averaged.averages, numpy_reference(mode, decay, sequence, dtype)):
        assert ours.dtype == dtype
        np.testing.assert_array_equal(ours, ref)


def torch_averaged(kind, dtype, sequence):
    model = torch.nn.Module()
    model.ps = torch.nn.ParameterList(
        [torch.nn.Parameter(torch.tensor(v)) for v in values(dtype, 0)])
    if kind == "swa":
        averaged = tswa.AveragedModel(model)  # CPU default: avg + (x - avg) / (n + 1)
    elif kind == "swa-avg_fn":
        averaged = tswa.AveragedModel(model, avg_fn=tswa.get_swa_avg_fn())
    else:
        averaged = tswa.AveragedModel(model, multi_avg_fn=tswa.get_ema_multi_avg_fn(kind))
    for xs in sequence:
        with torch.no_grad():
            for p, x in zip(model.ps, xs):
                p.copy_(torch.tensor(x))
        averaged.update_parameters(model)
    return [p.detach().numpy() for p in averaged.module.ps], int(averaged.n_averaged)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["swa", "swa-avg_fn", 0.999, 0.9, 0.3])
def test_averages_match_torch_averaged_model(kind, dtype):
    sequence = [values(dtype, 100 + t) for t in range(80)]
    theirs, n = torch_averaged(kind, dtype, sequence)
    params = make_params(dtype)
    if isinstance(kind, str):
        averaged = nswa.AveragedParameters(params, mode="swa")
    else:
        averaged = nswa.AveragedParameters(params, mode="ema", decay=kind)
    run_averaged(averaged, params, sequence)
    assert averaged.n_averaged == n
    for ours, ref in zip(averaged.averages, theirs):
        if isinstance(kind, str):
            # torch's CPU path divides by n + 1 in the tensor's dtype, as nopt does.
            np.testing.assert_array_equal(ours, ref)
        else:
            # torch's vectorised lerp fuses multiply and add: an ulp per update at most,
            # which the EMA then damps.
            eps = np.finfo(dtype).eps
            np.testing.assert_allclose(ours, ref, rtol=8 * eps, atol=8 * eps)


def test_custom_functions_match_numpy():
    params = make_params(np.float64)
    sequence = [values(np.float64, 200 + t) for t in range(20)]

    def multi(avgs, curs, n):
        for a, c in zip(avgs, curs):
            a *= 0.5
            a += 0.5 * c

    seen = []

    def per_array(a, c, n):
        seen.append(n)
        return 0.25 * a + 0.75 * c

    a1 = run_averaged(nswa.AveragedParameters(params, multi_avg_fn=multi), params, sequence)
    a2 = run_averaged(nswa.AveragedParameters(params, avg_fn=per_array), params, sequence)
    a3 = run_averaged(nswa.AveragedParameters(params, avg_fn=nswa.get_ema_avg_fn(0.9)), params, sequence)
    r1 = r2 = r3 = None
    for xs in sequence:
        if r1 is None:
            r1, r2, r3 = [[x.copy() for x in xs] for _ in range(3)]
            continue
        r1 = [0.5 * a + 0.5 * x for a, x in zip(r1, xs)]
        r2 = [0.25 * a + 0.75 * x for a, x in zip(r2, xs)]
        r3 = [0.9 * a + (1 - 0.9) * x for a, x in zip(r3, xs)]
    for got, ref in ((a1, r1), (a2, r2), (a3, r3)):
        for g, r in zip(got.averages, ref):
            np.testing.assert_array_equal(g, r)
    assert seen[:len(SHAPES)] == [1] * len(SHAPES) and seen[-1] == 19


def test_multi_avg_fn_called_once_per_dtype():
    params = [nopt.Parameter(np.ones(3, np.float32)), nopt.Parameter(np.ones(2)),
              nopt.Parameter(np.ones(4, np.float32))]
    calls = []

    def fn(avgs, curs, n):
        calls.append(([a.dtype for a in avgs], [c.shape for c in curs], n))

    averaged = nswa.AveragedParameters(params, multi_avg_fn=fn)
    averaged.update_parameters()  # copies
    averaged.update_parameters()
    assert calls == [([np.float32, np.float32], [(3,), (4,)], 1), ([np.float64], [(2,)], 1)]


@pytest.mark.parametrize("mode", ["swa", "ema"])
def test_mixed_dtypes_and_flat_storage(mode):
    buf = np.random.default_rng(3).standard_normal(90)
    flat = [nopt.Parameter(buf[0:30]), nopt.Parameter(buf[30:90].reshape(6, 10))]  # adjacent
    mixed = flat + [nopt.Parameter(np.arange(5, dtype=np.float32))]
    averaged = nswa.AveragedParameters(mixed, mode=mode, decay=0.8)
    sequence = []
    for t in range(12):
        rng = np.random.default_rng(t)
        sequence.append([rng.standard_normal(p.shape).astype(p.dtype) for p in mixed])
    run_averaged(averaged, mixed, sequence)
    ref64 = numpy_reference(mode, 0.8, [s[:2] for s in sequence], np.float64)
    ref32 = numpy_reference(mode, 0.8, [s[2:] for s in sequence], np.float32)
    for got, ref in zip(averaged.averages, ref64 + ref32):
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["swa", "ema"])
def test_thread_counts_bitwise_identical(mode, dtype):
    n = 3 * _plan.SERIAL_BELOW + 17
    results = []
    for threads in (1, 2, 3):
        params = [nopt.Parameter(values(dtype, 0, [(n,)])[0]), nopt.Parameter(np.ones(5, dtype))]
        averaged = nswa.AveragedParameters(params, mode=mode, decay=0.7)
        with nopt.num_threads(threads):
            for t in range(4):
                set_values(params, values(dtype, 50 + t, [(n,), (5,)]))
                averaged.update_parameters()
            averaged.swap()
        results.append([a.copy() for a in averaged.averages] + [p.copy() for p in params])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def bits(arrays):
    return [np.array(a, copy=True).view(np.uint64 if a.dtype == np.float64 else np.uint32) for a in arrays]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_swap_in_and_out_restores_bits(dtype):
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, np.finfo(dtype).smallest_subnormal,
                        -np.finfo(dtype).tiny / 3, 1.5], dtype=dtype)
    payload_nan = special.copy().view(np.uint64 if dtype == np.float64 else np.uint32)
    payload_nan[4] |= 0x5  # a NaN with a payload
    special = payload_nan.view(dtype)
    n = 2 * _plan.SERIAL_BELOW  # threaded too
    params = [nopt.Parameter(special.copy()), nopt.Parameter(values(dtype, 1, [(n,)])[0])]
    averaged = nswa.AveragedParameters(params, mode="ema", decay=0.5)
    set_values(params, [special[::-1].copy(), values(dtype, 2, [(n,)])[0]])
    averaged.update_parameters()  # first call: copies
    set_values(params, [special * 2, values(dtype, 3, [(n,)])[0]])
    trained, avgs = bits(params), bits(averaged.averages)

    with averaged.swapped() as same:
        assert same is averaged and averaged.is_swapped
        for p, a in zip(bits(params), avgs):
            np.testing.assert_array_equal(p, a)
        for a, p in zip(bits(averaged.averages), trained):
            np.testing.assert_array_equal(a, p)
    assert not averaged.is_swapped
    for p, t in zip(bits(params), trained):
        np.testing.assert_array_equal(p, t)
    for a, t in zip(bits(averaged.averages), avgs):
        np.testing.assert_array_equal(a, t)

    averaged.swap()
    averaged.swap()
    for p, t in zip(bits(params), trained):
        np.testing.assert_array_equal(p, t)


def test_swapped_restores_after_exception():
    params = make_params(np.float64)
    before = [p.copy() for p in params]
    averaged = nswa.AveragedParameters(params)
    averaged.update_parameters()
    set_values(params, values(np.float64, 9))
    before = [p.copy() for p in params]
    with pytest.raises(KeyError):
        with averaged.swapped():
            raise KeyError("boom")
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    assert not averaged.is_swapped


def test_update_while_swapped_is_refused_and_changes_nothing():
    params = make_params(np.float32)
    averaged = nswa.AveragedParameters(params)
    averaged.update_parameters()
    with averaged.swapped():
        state = [p.copy() for p in params] + [a.copy() for a in averaged.averages]
        with pytest.raises(RuntimeError, match="swapped"):
            averaged.update_parameters()
        with pytest.raises(RuntimeError, match="already swapped"):
            with averaged.swapped():
                pass
        with pytest.raises(RuntimeError, match="swap"):
            averaged.load_state_dict(averaged.state_dict())
        for x, y in zip([p for p in params] + averaged.averages, state):
            np.testing.assert_array_equal(x, y)
        assert averaged.n_averaged == 1 and averaged.is_swapped


def test_optimizer_steps_then_evaluate_with_average():
    """The workflow: SGD steps, EMA updates, evaluation on the averages, training goes on."""
    params = make_params(np.float64)
    opt = nopt.SGD(params, lr=0.05, momentum=0.9)
    ema = nswa.AveragedParameters(params, mode="ema", decay=0.9)
    for t in range(30):
        for p in params:
            p.grad = np.asarray(p) * 0.5 + 0.1
        opt.step()
        ema.update_parameters()
    trained = [p.copy() for p in params]
    with ema.swapped():
        evaluated = [p.copy() for p in params]
    for e, a in zip(evaluated, ema.averages):
        np.testing.assert_array_equal(e, a)
    for p, t in zip(params, trained):
        np.testing.assert_array_equal(p, t)


def test_update_from_other_arrays_is_checked_first():
    params = make_params(np.float64)
    averaged = nswa.AveragedParameters(params)
    good = values(np.float64, 4)
    averaged.update_parameters(good)
    for a, g in zip(averaged.averages, good):
        np.testing.assert_array_equal(a, g)
    before = [a.copy() for a in averaged.averages]
    bad_cases = [
        (good[:3], ValueError),
        (good[:3] + [np.zeros((3, 2, 3))], ValueError),
        (good[:3] + [good[3].astype(np.float32)], TypeError),
        (good[:3] + [np.asfortranarray(np.zeros((3, 2, 2)))[:, :, ::-1]], ValueError),
        (good[:3] + ["x"], TypeError),
    ]
    for bad, exc in bad_cases:
        with pytest.raises(exc, match=r"params\[3\]|params has 3"):
            averaged.update_parameters(bad)
        for a, b in zip(averaged.averages, before):
            np.testing.assert_array_equal(a, b)
        assert averaged.n_averaged == 1


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(mode="median"), ValueError, "mode"),
    (dict(mode="ema", decay=1.5), ValueError, "decay"),
    (dict(mode="ema", decay=-0.1), ValueError, "decay"),
    (dict(avg_fn=nswa.get_swa_avg_fn(), multi_avg_fn=nswa.get_swa_multi_avg_fn()), ValueError, "one of"),
    (dict(mode="ema", multi_avg_fn=nswa.get_swa_multi_avg_fn()), ValueError, "either"),
    (dict(multi_avg_fn=3), TypeError, "callable"),
])
def test_bad_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        nswa.AveragedParameters(make_params(np.float64), **kwargs)


@pytest.mark.parametrize("params,exc,match", [
    ([], ValueError, "empty"),
    (np.zeros(3), TypeError, "single ndarray"),
    ([np.zeros(3, dtype=np.int64)], TypeError, r"params\[0\] has dtype int64"),
    ([nopt.Parameter(np.zeros(3)), [1.0]], TypeError, r"params\[1\]"),
    ([np.zeros((4, 4))[:, ::2]], ValueError, "C-contiguous"),
])
def test_bad_params(params, exc, match):
    with pytest.raises(exc, match=match):
        nswa.AveragedParameters(params)


def test_duplicate_and_readonly_params():
    p = nopt.Parameter(np.zeros(3))
    with pytest.raises(ValueError, match="more than once"):
        nswa.AveragedParameters([p, p])
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        nswa.AveragedParameters([ro])


def test_averages_start_as_copies():
    params = make_params(np.float32)
    averaged = nswa.AveragedParameters(params)
    assert averaged.n_averaged == 0
    for a, p in zip(averaged.averages, params):
        np.testing.assert_array_equal(a, p)
        assert not np.shares_memory(a, p)


@pytest.mark.parametrize("mode", ["swa", "ema"])
def test_state_dict_round_trip_continues_bitwise(mode, tmp_path):
    sequence = [values(np.float32, 300 + t) for t in range(40)]
    params = make_params(np.float32)
    full = run_averaged(nswa.AveragedParameters(params, mode=mode, decay=0.9), params, sequence)

    params = make_params(np.float32)
    first = run_averaged(nswa.AveragedParameters(params, mode=mode, decay=0.9), params, sequence[:17])
    nopt.save(first.state_dict(), tmp_path / "avg")
    params = make_params(np.float32)
    resumed = nswa.AveragedParameters(params, mode=mode, decay=0.9)
    resumed.load_state_dict(nopt.load(tmp_path / "avg"))
    assert resumed.n_averaged == 17
    run_averaged(resumed, params, sequence[17:])
    assert resumed.n_averaged == full.n_averaged
    for a, b in zip(resumed.averages, full.averages):
        np.testing.assert_array_equal(a, b)


def test_state_dict_while_swapped_holds_the_averages():
    params = make_params(np.float64)
    averaged = nswa.AveragedParameters(params)
    run_averaged(averaged, params, [values(np.float64, 7), values(np.float64, 8)])
    expected = [a.copy() for a in averaged.averages]
    with averaged.swapped():
        state = averaged.state_dict()
    for s, e in zip(state["averages"], expected):
        np.testing.assert_array_equal(s, e)


def test_load_state_dict_checks_before_changing():
    params = make_params(np.float64)
    averaged = nswa.AveragedParameters(params)
    averaged.update_parameters()
    good = averaged.state_dict()
    before = [a.copy() for a in averaged.averages]
    bad = [
        ({"averages": good["averages"]}, ValueError),
        ({"n_averaged": -1, "averages": good["averages"]}, ValueError),
        ({"n_averaged": 2, "averages": good["averages"][:3]}, ValueError),
        ({"n_averaged": 2, "averages": good["averages"][:3] + [np.zeros(12)]}, ValueError),
        ({"n_averaged": 2, "averages": good["averages"][:3] + [np.zeros((3, 2, 2), int)]}, TypeError),
        ({"n_averaged": 2, "averages": [np.ones(1)] + good["averages"][1:3] + [None]}, TypeError),
    ]
    for state, exc in bad:
        with pytest.raises(exc):
            averaged.load_state_dict(state)
        for a, b in zip(averaged.averages, before):
            np.testing.assert_array_equal(a, b)
        assert averaged.n_averaged == 1


def test_kernel_multi_avg_fn_on_plain_lists():
    """get_*_multi_avg_fn work like torch's on lists of arrays, in place."""
    avgs = [np.zeros(4), np.ones(3)]
    curs = [np.ones(4), np.full(3, 3.0)]
    nswa.get_swa_multi_avg_fn()(avgs, curs, 1)
    np.testing.assert_array_equal(avgs[0], np.full(4, 0.5))
    np.testing.assert_array_equal(avgs[1], np.full(3, 2.0))
    nswa.get_ema_multi_avg_fn(0.75)(avgs, curs, 5)
    np.testing.assert_array_equal(avgs[0], 0.5 + 0.25 * (1 - 0.5) * np.ones(4))
    with pytest.raises(ValueError, match="shape"):
        nswa.get_swa_multi_avg_fn()(avgs, [np.ones(4), np.ones(2)], 1)
    assert math.isclose(avgs[1][0], 2.0 + 0.25 * 1.0)
