"""nopt.lr_scheduler against torch.optim.lr_scheduler (torch 2.13) as the oracle.

Every case builds the same scheduler(s) with both libraries on an optimizer
with two param groups of different lrs (and momentums), steps 300 times and
compares, at every step, each group's lr and every scheduler-managed group
value (momentum or betas[0] where cycled, initial_lr, max_lr, ...) at rtol
1e-12, and get_last_lr(). A case may build a list of schedulers stepped in
turn on one optimizer: that is chaining by hand.
"""
import math
import warnings

import numpy as np
import pytest

import nopt
from nopt import lr_scheduler as nls

torch = pytest.importorskip("torch")
tls = torch.optim.lr_scheduler

STEPS = 300
RTOL = 1e-12
LRS = (0.1, 0.03)
MOMENTUMS = (0.9, 0.5)
MANAGED = ("lr", "initial_lr", "momentum", "betas", "max_momentum", "base_momentum",
           "max_lr", "min_lr")


class BetasOptimizer(nopt.Optimizer):
    """Test-only optimizer with Adam's ``betas`` hyperparameter; its step does nothing."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999)):
        super().__init__(params, dict(lr=lr, betas=betas))

    def step(self, closure=None):
        return None


class PlainOptimizer(nopt.Optimizer):
    """Test-only optimizer with neither momentum nor betas."""

    def __init__(self, params, lr=1e-3):
        super().__init__(params, dict(lr=lr))

    def step(self, closure=None):
        return None


def make_optimizer(lib, kind="sgd"):
    """Two groups, lrs 0.1 and 0.03 (and momentums 0.9 and 0.5 for SGD)."""
    if lib == "torch":
        ps = [torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)]
    else:
        ps = [nopt.Parameter(np.zeros(3)), nopt.Parameter(np.zeros(2))]
    if kind == "sgd":
        groups = [{"params": [ps[0]], "lr": LRS[0], "momentum": MOMENTUMS[0]},
                  {"params": [ps[1]], "lr": LRS[1], "momentum": MOMENTUMS[1]}]
        return (torch.optim.SGD if lib == "torch" else nopt.SGD)(groups, lr=LRS[0])
    groups = [{"params": [ps[0]], "lr": LRS[0]}, {"params": [ps[1]], "lr": LRS[1]}]
    if kind == "betas":
        groups[1]["betas"] = (0.8, 0.99)
        return (torch.optim.Adam if lib == "torch" else BetasOptimizer)(groups, lr=LRS[0])
    assert kind == "plain"
    return (torch.optim.Adagrad if lib == "torch" else PlainOptimizer)(groups, lr=LRS[0])


def lib_module(lib):
    return tls if lib == "torch" else nls


def metric(t):
    """A noisy, plateauing loss for ReduceLROnPlateau."""
    return max(0.25, 1.0 / (1.0 + 0.03 * t)) + 0.01 * ((t * 37) % 5)


class Warmup:
    """A callable object: LambdaLR's state_dict keeps its __dict__."""

    def __init__(self, n):
        self.n = n

    def __call__(self, epoch):
        return min(1.0, (epoch + 1) / self.n)


def decay(epoch):
    return 0.97 ** epoch


def wobble(epoch):
    return 1.0 + 0.02 * math.sin(epoch)


def half_cycles(x):
    return 1.0 / (1.0 + 0.1 * x)


# (id, optimizer kind, build(module, optimizer) -> scheduler or list of schedulers)
CASES = [
    ("LambdaLR-fn", "sgd", lambda m, o: m.LambdaLR(o, decay)),
    ("LambdaLR-list", "sgd", lambda m, o: m.LambdaLR(o, [decay, Warmup(25)])),
    ("LambdaLR-object", "sgd", lambda m, o: m.LambdaLR(o, Warmup(40))),
    ("MultiplicativeLR-fn", "sgd", lambda m, o: m.MultiplicativeLR(o, lambda e: 0.99)),
    ("MultiplicativeLR-list", "sgd", lambda m, o: m.MultiplicativeLR(o, [wobble, lambda e: 0.995])),
    ("StepLR", "sgd", lambda m, o: m.StepLR(o, step_size=7, gamma=0.5)),
    ("StepLR-default-gamma", "sgd", lambda m, o: m.StepLR(o, 30)),
    ("StepLR-every", "sgd", lambda m, o: m.StepLR(o, 1, gamma=0.98)),
    ("StepLR-gamma0", "sgd", lambda m, o: m.StepLR(o, 100, gamma=0.0)),
    ("MultiStepLR", "sgd", lambda m, o: m.MultiStepLR(o, [10, 50, 120], gamma=0.5)),
    ("MultiStepLR-repeated-unsorted", "sgd", lambda m, o: m.MultiStepLR(o, [120, 30, 30, 0])),
    ("MultiStepLR-negative", "sgd", lambda m, o: m.MultiStepLR(o, [-1, 5, 8.0], 0.5)),
    ("ConstantLR-default", "sgd", lambda m, o: m.ConstantLR(o)),
    ("ConstantLR", "sgd", lambda m, o: m.ConstantLR(o, factor=0.5, total_iters=40)),
    ("ConstantLR-factor1", "sgd", lambda m, o: m.ConstantLR(o, factor=1.0, total_iters=3)),
    ("ConstantLR-total0", "sgd", lambda m, o: m.ConstantLR(o, factor=0.25, total_iters=0)),
    ("LinearLR-default", "sgd", lambda m, o: m.LinearLR(o)),
    ("LinearLR-warmup", "sgd", lambda m, o: m.LinearLR(o, start_factor=0.1, total_iters=100)),
    ("LinearLR-to-zero", "sgd", lambda m, o: m.LinearLR(o, 1.0, 0.0, total_iters=250)),
    ("LinearLR-down", "sgd", lambda m, o: m.LinearLR(o, 0.9, 0.2, total_iters=77)),
    ("LinearLR-one", "sgd", lambda m, o: m.LinearLR(o, 0.5, 1.0, total_iters=1)),
    ("LinearLR-total0", "sgd", lambda m, o: m.LinearLR(o, 0.5, 1.0, total_iters=0)),
    ("ExponentialLR", "sgd", lambda m, o: m.ExponentialLR(o, gamma=0.99)),
    ("ExponentialLR-fast", "sgd", lambda m, o: m.ExponentialLR(o, 0.9)),
    ("ExponentialLR-grow", "sgd", lambda m, o: m.ExponentialLR(o, 1.01)),
    ("PolynomialLR-default", "sgd", lambda m, o: m.PolynomialLR(o)),
    ("PolynomialLR-power2", "sgd", lambda m, o: m.PolynomialLR(o, total_iters=250, power=2.0)),
    ("PolynomialLR-sqrt", "sgd", lambda m, o: m.PolynomialLR(o, total_iters=100, power=0.5)),
    ("PolynomialLR-long", "sgd", lambda m, o: m.PolynomialLR(o, total_iters=400, power=0.9)),
    ("PolynomialLR-total0", "sgd", lambda m, o: m.PolynomialLR(o, total_iters=0)),
    ("CosineAnnealingLR", "sgd", lambda m, o: m.CosineAnnealingLR(o, T_max=50)),
    ("CosineAnnealingLR-eta_min", "sgd", lambda m, o: m.CosineAnnealingLR(o, 37, eta_min=1e-3)),
    ("CosineAnnealingLR-T1", "sgd", lambda m, o: m.CosineAnnealingLR(o, 1, eta_min=1e-4)),
    ("CosineAnnealingLR-T7", "sgd", lambda m, o: m.CosineAnnealingLR(o, 7)),
    ("CosineAnnealingLR-T300", "sgd", lambda m, o: m.CosineAnnealingLR(o, 300)),
    # Restarts from its trough at step 244, where (1 + cos(pi * 244 / 243)) / 2 is 1.3e-12
    # (relative) off torch's increment (1 - cos(pi / 243)) / 2: the increment must be torch's.
    ("CosineAnnealingLR-T243", "sgd", lambda m, o: m.CosineAnnealingLR(o, 243)),
    ("CosineAnnealingLR-T100", "sgd", lambda m, o: m.CosineAnnealingLR(o, 100, eta_min=0.01)),
    ("SequentialLR-constant-exp", "sgd", lambda m, o: m.SequentialLR(
        o, [m.ConstantLR(o, factor=0.1, total_iters=20), m.ExponentialLR(o, gamma=0.95)], [20])),
    ("SequentialLR-warmup-cosine", "sgd", lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, 0.01, total_iters=10), m.CosineAnnealingLR(o, 290)], milestones=[10])),
    ("SequentialLR-three", "sgd", lambda m, o: m.SequentialLR(
        o, [m.ConstantLR(o, 0.5, 3), m.StepLR(o, 9, 0.7), m.CosineAnnealingLR(o, 40, 1e-3)],
        [5, 100])),
    ("SequentialLR-lambda-multiplicative", "sgd", lambda m, o: m.SequentialLR(
        o, [m.LambdaLR(o, Warmup(10)), m.MultiplicativeLR(o, lambda e: 0.99),
            m.PolynomialLR(o, 50, 2.0)], [10, 150])),
    ("SequentialLR-one", "sgd", lambda m, o: m.SequentialLR(o, [m.ExponentialLR(o, 0.99)], [])),
    ("SequentialLR-cyclic", "sgd", lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, 0.2, total_iters=5), m.CyclicLR(o, 0.01, 0.1, 20)], [30])),
    # A ChainedScheduler can only come first: torch cannot restart one at a milestone.
    ("SequentialLR-nested-chain", "sgd", lambda m, o: m.SequentialLR(
        o, [m.ChainedScheduler([m.LinearLR(o, 0.2, total_iters=10), m.MultiStepLR(o, [6, 9], 0.3)]),
            m.ExponentialLR(o, 0.99)], [15])),
    ("ChainedScheduler-constant-exp", "sgd", lambda m, o: m.ChainedScheduler(
        [m.ConstantLR(o, factor=0.1, total_iters=2), m.ExponentialLR(o, gamma=0.9)])),
    ("ChainedScheduler-three", "sgd", lambda m, o: m.ChainedScheduler(
        [m.LinearLR(o, 0.1, total_iters=30), m.CosineAnnealingLR(o, 60, 1e-3),
         m.MultiStepLR(o, [100, 200], 0.5)], optimizer=o)),
    ("ChainedScheduler-multiplicative", "sgd", lambda m, o: m.ChainedScheduler(
        [m.MultiplicativeLR(o, wobble), m.PolynomialLR(o, 280, 1.5), m.StepLR(o, 11, 0.9)])),
    # Two schedulers stepped by hand on one optimizer (no ChainedScheduler).
    ("chain-exp-step", "sgd", lambda m, o: [m.ExponentialLR(o, 0.99), m.StepLR(o, 25, 0.5)]),
    ("chain-linear-cosine", "sgd", lambda m, o: [m.LinearLR(o, 0.05, total_iters=20),
                                                 m.CosineAnnealingLR(o, 80, eta_min=1e-4)]),
    ("chain-cosine-constant", "sgd", lambda m, o: [m.CosineAnnealingLR(o, 33),
                                                   m.ConstantLR(o, 0.3, 100)]),
    ("chain-poly-multistep", "sgd", lambda m, o: [m.PolynomialLR(o, 200, 2.0),
                                                  m.MultiStepLR(o, [40, 80], 0.1)]),
    # lr falls far below eta_min, where torch's (lr - eta_min) * ratio + eta_min cancels: an ulp
    # off torch's per-step factors upstream shows here as 3.5e-11.
    ("chain-cosine-eta_min-poly-to-zero", "sgd", lambda m, o: [
        m.CosineAnnealingLR(o, 45, 0.0037), m.PolynomialLR(o, 105, 0.74),
        m.MultiStepLR(o, [127], 0.15)]),
    ("ReduceLROnPlateau-default", "sgd", lambda m, o: m.ReduceLROnPlateau(o, patience=3)),
    ("ReduceLROnPlateau-min-abs-cooldown", "sgd", lambda m, o: m.ReduceLROnPlateau(
        o, "min", factor=0.5, patience=2, threshold=0.005, threshold_mode="abs", cooldown=4)),
    ("ReduceLROnPlateau-max-rel", "sgd", lambda m, o: m.ReduceLROnPlateau(
        o, mode="max", factor=0.7, patience=1, threshold=1e-3)),
    ("ReduceLROnPlateau-max-abs", "sgd", lambda m, o: m.ReduceLROnPlateau(
        o, mode="max", threshold_mode="abs", threshold=0.01, patience=0, cooldown=1)),
    ("ReduceLROnPlateau-min_lr-list", "sgd", lambda m, o: m.ReduceLROnPlateau(
        o, factor=0.5, patience=0, min_lr=[0.01, 1e-3])),
    ("ReduceLROnPlateau-min_lr", "sgd", lambda m, o: m.ReduceLROnPlateau(
        o, factor=0.5, patience=1, min_lr=0.005)),
    ("ReduceLROnPlateau-eps", "sgd", lambda m, o: m.ReduceLROnPlateau(
        o, factor=0.9, patience=0, eps=0.004)),
    ("CyclicLR-triangular", "sgd", lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=10)),
    ("CyclicLR-triangular2", "sgd", lambda m, o: m.CyclicLR(
        o, [0.01, 0.002], [0.1, 0.05], step_size_up=7, step_size_down=13, mode="triangular2")),
    ("CyclicLR-exp_range", "sgd", lambda m, o: m.CyclicLR(
        o, 0.01, 0.1, 15, mode="exp_range", gamma=0.99, base_momentum=[0.8, 0.7],
        max_momentum=[0.95, 0.9])),
    ("CyclicLR-scale_fn-cycle", "sgd", lambda m, o: m.CyclicLR(
        o, 0.01, 0.1, 12, scale_fn=half_cycles)),
    ("CyclicLR-scale_fn-iterations", "sgd", lambda m, o: m.CyclicLR(
        o, 0.01, 0.1, 12, 5, scale_fn=decay, scale_mode="iterations")),
    ("CyclicLR-no-momentum", "sgd", lambda m, o: m.CyclicLR(o, 0.01, 0.1, 9, cycle_momentum=False)),
    ("CyclicLR-plain-no-momentum", "plain", lambda m, o: m.CyclicLR(
        o, 0.01, 0.1, 9, cycle_momentum=False)),
    ("CyclicLR-betas", "betas", lambda m, o: m.CyclicLR(
        o, 0.001, 0.01, 20, mode="triangular2", base_momentum=0.85, max_momentum=0.95)),
    ("CyclicLR-betas-exp_range", "betas", lambda m, o: m.CyclicLR(
        o, [1e-3, 2e-3], [1e-2, 5e-2], 8, 30, mode="exp_range", gamma=0.995)),
    ("OneCycleLR-cos", "sgd", lambda m, o: m.OneCycleLR(o, max_lr=1.0, total_steps=STEPS)),
    ("OneCycleLR-linear", "sgd", lambda m, o: m.OneCycleLR(
        o, [1.0, 0.5], total_steps=320, anneal_strategy="linear")),
    ("OneCycleLR-three_phase", "sgd", lambda m, o: m.OneCycleLR(
        o, 0.5, total_steps=STEPS, three_phase=True, pct_start=0.25)),
    ("OneCycleLR-three_phase-linear", "sgd", lambda m, o: m.OneCycleLR(
        o, 0.5, total_steps=310, three_phase=True, anneal_strategy="linear")),
    ("OneCycleLR-div", "sgd", lambda m, o: m.OneCycleLR(
        o, 0.3, total_steps=STEPS, div_factor=10.0, final_div_factor=100.0, pct_start=0.5)),
    ("OneCycleLR-epochs", "sgd", lambda m, o: m.OneCycleLR(o, 0.3, epochs=30, steps_per_epoch=10)),
    ("OneCycleLR-no-momentum", "plain", lambda m, o: m.OneCycleLR(
        o, 0.3, total_steps=STEPS, cycle_momentum=False)),
    ("OneCycleLR-momentum-lists", "sgd", lambda m, o: m.OneCycleLR(
        o, 0.3, total_steps=STEPS, base_momentum=[0.8, 0.6], max_momentum=[0.9, 0.95])),
    ("OneCycleLR-betas", "betas", lambda m, o: m.OneCycleLR(
        o, 0.01, total_steps=STEPS, pct_start=0.1)),
    ("CosineAnnealingWarmRestarts", "sgd", lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=10)),
    ("CosineAnnealingWarmRestarts-mult", "sgd", lambda m, o: m.CosineAnnealingWarmRestarts(
        o, 10, T_mult=2, eta_min=1e-3)),
    ("CosineAnnealingWarmRestarts-T1", "sgd", lambda m, o: m.CosineAnnealingWarmRestarts(o, 1)),
    ("CosineAnnealingWarmRestarts-mult3", "sgd", lambda m, o: m.CosineAnnealingWarmRestarts(
        o, 3, T_mult=3, eta_min=0.002)),
]
CASE_IDS = [c[0] for c in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS)


def as_list(scheds):
    return scheds if isinstance(scheds, list) else [scheds]


def step_all(scheds, lib, t):
    plateau = lib_module(lib).ReduceLROnPlateau
    for s in scheds:
        if isinstance(s, plateau):
            s.step(metric(t))
        else:
            s.step()


def snapshot(optimizer, scheds):
    """Every scheduler-managed group value, and each scheduler's get_last_lr()."""
    groups = []
    for g in optimizer.param_groups:
        values = {}
        for key in MANAGED:
            if key in g:
                values[key] = g[key][0] if key == "betas" else g[key]
        groups.append(values)
    return groups, [list(s.get_last_lr()) for s in scheds]


def close(a, b):
    return a == b or abs(a - b) <= RTOL * abs(b)


def assert_same(ours, theirs, where):
    (og, ol), (tg, tl) = ours, theirs
    assert len(og) == len(tg)
    for i, (o, t) in enumerate(zip(og, tg)):
        assert set(o) == set(t), f"{where}: group {i} keys {sorted(o)} vs torch {sorted(t)}"
        for key in t:
            assert close(o[key], t[key]), f"{where}: group {i} {key} = {o[key]!r}, torch {t[key]!r}"
    for o, t in zip(ol, tl):
        assert all(close(a, b) for a, b in zip(o, t)), f"{where}: get_last_lr {o} vs torch {t}"


def run(lib, kind, build, steps=STEPS):
    """Build on a fresh optimizer, then optimizer.step() + scheduler step(s) per iteration."""
    opt = make_optimizer(lib, kind)
    scheds = as_list(build(lib_module(lib), opt))
    trace = [snapshot(opt, scheds)]
    for t in range(steps):
        opt.step()
        step_all(scheds, lib, t)
        trace.append(snapshot(opt, scheds))
    return opt, scheds, trace


@pytest.mark.parametrize("name,kind,build", CASES, ids=CASE_IDS)
def test_matches_torch(name, kind, build):
    caught = []
    for lib in ("nopt", "torch"):
        with warnings.catch_warnings(record=True) as log:
            warnings.simplefilter("always")
            caught.append(run(lib, kind, build)[2])
        caught.append([w.category for w in log])
    ours, our_warnings, theirs, their_warnings = caught
    assert our_warnings == their_warnings
    for t, (o, th) in enumerate(zip(ours, theirs)):
        assert_same(o, th, f"{name} step {t}")


# A ChainedScheduler first in a SequentialLR steps its schedulers at construction, before any
# optimizer step: torch warns there, and so does nopt (test_matches_torch compares the warnings).
construction_warning = pytest.mark.filterwarnings("ignore:Detected call of")


def random_chainable(rng):
    """A random chainable scheduler: (class name, args)."""
    k = int(rng.integers(0, 8))
    if k == 0:
        return "StepLR", (int(rng.integers(1, 20)), float(rng.uniform(0.1, 1)))
    if k == 1:
        return "MultiStepLR", (sorted(rng.integers(0, 150, size=rng.integers(1, 4)).tolist()),
                               float(rng.uniform(0.1, 1)))
    if k == 2:
        return "ConstantLR", (float(rng.uniform(0.05, 1)), int(rng.integers(0, 60)))
    if k == 3:
        return "LinearLR", (float(rng.uniform(0.05, 1)), float(rng.uniform(0, 1)),
                            int(rng.integers(0, 120)))
    if k == 4:
        return "ExponentialLR", (float(rng.uniform(0.9, 1.02)),)
    if k == 5:
        return "PolynomialLR", (int(rng.integers(0, 200)), float(rng.uniform(0.3, 3)))
    if k == 6:
        return "CosineAnnealingLR", (int(rng.integers(1, 150)),
                                     float(rng.choice([0.0, rng.uniform(0, 0.01)])))
    factor = float(rng.uniform(0.97, 1.01))
    return "MultiplicativeLR", (lambda epoch: factor,)


@pytest.mark.parametrize("seed", range(20))
def test_random_chains_match_torch(seed):
    """Random chains of 1-3 chainable schedulers stepped by hand: torch's values at every step."""
    rng = np.random.default_rng(seed)
    for _ in range(10):
        parts = [random_chainable(rng) for _ in range(int(rng.integers(1, 4)))]

        def build(m, o, parts=parts):
            return [getattr(m, name)(o, *args) for name, args in parts]

        ours, theirs = run("nopt", "sgd", build, 150)[2], run("torch", "sgd", build, 150)[2]
        for t, (o, th) in enumerate(zip(ours, theirs)):
            assert_same(o, th, f"{[p[0] for p in parts]} step {t}")


@construction_warning
@pytest.mark.parametrize("name,kind,build", CASES, ids=CASE_IDS)
def test_state_dict_keys_match_torch(name, kind, build):
    ours = [s.state_dict() for s in run("nopt", kind, build, steps=5)[1]]
    theirs = [s.state_dict() for s in run("torch", kind, build, steps=5)[1]]
    for o, t in zip(ours, theirs):
        assert set(o) - {"_scale_fn_ref"} == set(t) - {"_scale_fn_ref"}


@construction_warning
@pytest.mark.parametrize("name,kind,build", CASES, ids=CASE_IDS)
def test_checkpoint_resume(name, kind, build, tmp_path):
    """Save optimizer + scheduler state mid-run with nopt.save, load into fresh ones, continue."""
    half = STEPS // 2
    _, _, full = run("nopt", kind, build)
    opt, scheds, _ = run("nopt", kind, build, steps=half)
    path = tmp_path / "ckpt.nopt"
    nopt.save({"optimizer": opt.state_dict(), "schedulers": [s.state_dict() for s in scheds]}, path)
    del opt, scheds

    saved = nopt.load(path)
    opt = make_optimizer("nopt", kind)
    scheds = as_list(build(nls, opt))
    opt.load_state_dict(saved["optimizer"])
    for s, state in zip(scheds, saved["schedulers"]):
        s.load_state_dict(state)
    assert snapshot(opt, scheds) == full[half]
    opt._opt_called = True  # the restored run has stepped its optimizer before
    for t in range(half, STEPS):
        opt.step()
        step_all(scheds, "nopt", t)
        assert snapshot(opt, scheds) == full[t + 1], f"step {t + 1} after resume"


RESUMABLE = [
    lambda m, o, e: m.StepLR(o, 7, 0.5, last_epoch=e),
    lambda m, o, e: m.MultiStepLR(o, [10, 38, 60], 0.5, last_epoch=e),
    lambda m, o, e: m.ConstantLR(o, 0.5, 38, last_epoch=e),
    lambda m, o, e: m.LinearLR(o, 0.1, 0.9, 50, last_epoch=e),
    lambda m, o, e: m.ExponentialLR(o, 0.97, last_epoch=e),
    lambda m, o, e: m.PolynomialLR(o, 80, 2.0, last_epoch=e),
    lambda m, o, e: m.CosineAnnealingLR(o, 30, 1e-3, last_epoch=e),
    lambda m, o, e: m.MultiplicativeLR(o, wobble, last_epoch=e),
    lambda m, o, e: m.LambdaLR(o, decay, last_epoch=e),
    lambda m, o, e: m.CyclicLR(o, 0.01, 0.1, 8, last_epoch=e),
    lambda m, o, e: m.OneCycleLR(o, 0.5, total_steps=200, last_epoch=e),
    lambda m, o, e: m.CosineAnnealingWarmRestarts(o, 9, 2, last_epoch=e),
]


@pytest.mark.parametrize("resumed_at", [34, 37])
@pytest.mark.parametrize("build", RESUMABLE, ids=[f"resume{i}" for i in range(len(RESUMABLE))])
def test_last_epoch_resume_matches_torch(build, resumed_at):
    """Construct with last_epoch=e on an optimizer that ran e steps: torch's quirks included."""
    traces = []
    for lib in ("nopt", "torch"):
        m = lib_module(lib)
        opt = make_optimizer(lib)
        first = build(m, opt, -1)
        for _ in range(resumed_at):
            opt.step()
            first.step()
        resumed = build(m, opt, resumed_at)
        trace = [snapshot(opt, [resumed])]
        for _ in range(40):
            opt.step()
            resumed.step()
            trace.append(snapshot(opt, [resumed]))
        traces.append(trace)
    for t, (o, th) in enumerate(zip(*traces)):
        assert_same(o, th, f"step {t}")


@pytest.mark.parametrize("make", [
    lambda m, o: m.StepLR(o, 3, last_epoch=4),
    lambda m, o: m.CosineAnnealingLR(o, 10, last_epoch=0),
    lambda m, o: m.LambdaLR(o, decay, last_epoch=2),
])
def test_resume_without_initial_lr_is_keyerror(make):
    for lib in ("nopt", "torch"):
        with pytest.raises(KeyError, match="initial_lr"):
            make(lib_module(lib), make_optimizer(lib))


EPOCH_CASES = [
    ("StepLR", lambda m, o: m.StepLR(o, 4, 0.5)),
    ("MultiStepLR", lambda m, o: m.MultiStepLR(o, [3, 9, 9], 0.5)),
    ("ConstantLR", lambda m, o: m.ConstantLR(o, 0.25, 6)),
    ("LinearLR", lambda m, o: m.LinearLR(o, 0.2, 0.8, 12)),
    ("ExponentialLR", lambda m, o: m.ExponentialLR(o, 0.9)),
    ("PolynomialLR", lambda m, o: m.PolynomialLR(o, 20, 1.5)),
    ("CosineAnnealingLR", lambda m, o: m.CosineAnnealingLR(o, 10, 1e-3)),
    ("LambdaLR", lambda m, o: m.LambdaLR(o, decay)),
    ("MultiplicativeLR", lambda m, o: m.MultiplicativeLR(o, wobble)),
    ("CyclicLR", lambda m, o: m.CyclicLR(o, 0.01, 0.1, 5)),
    ("OneCycleLR", lambda m, o: m.OneCycleLR(o, 0.5, total_steps=40)),
    ("chained-by-hand", lambda m, o: [m.ExponentialLR(o, 0.9), m.StepLR(o, 3, 0.5)]),
]
EPOCHS = [None, None, 5, None, 11, 2, None, None, 30, 17, None, 7, 0, None]


@pytest.mark.parametrize("name,build", EPOCH_CASES, ids=[c[0] for c in EPOCH_CASES])
def test_deprecated_step_epoch_matches_torch(name, build):
    traces = []
    for lib in ("nopt", "torch"):
        opt = make_optimizer(lib)
        scheds = as_list(build(lib_module(lib), opt))
        trace = []
        for epoch in EPOCHS:
            opt.step()
            for s in scheds:
                if epoch is None:
                    s.step()
                else:
                    with pytest.warns(UserWarning, match="deprecated"):
                        s.step(epoch)
            trace.append(snapshot(opt, scheds))
        traces.append(trace)
    for t, (o, th) in enumerate(zip(*traces)):
        assert_same(o, th, f"{name} call {t}")


def test_warm_restarts_fractional_epochs_match_torch():
    """step(epoch + i / iters) inside each epoch, as in torch's docs, and jumps back and forth."""
    epochs = [e + i / 7 for e in range(40) for i in range(7)] + [3.5, 100.25, 0, 12, 61.9]
    for args in [(5, 1, 0.0), (4, 2, 1e-3), (3, 3, 0.01)]:
        traces = []
        for lib in ("nopt", "torch"):
            opt = make_optimizer(lib)
            s = lib_module(lib).CosineAnnealingWarmRestarts(opt, *args)
            trace = []
            for epoch in epochs:
                opt.step()
                s.step(epoch)
                trace.append(snapshot(opt, [s]) + (s.T_cur, s.T_i, s.last_epoch))
            traces.append(trace)
        for t, (o, th) in enumerate(zip(*traces)):
            assert_same(o[:2], th[:2], f"{args} call {t}")
            assert close(o[2], th[2]) and o[3:] == th[3:]


def test_warm_restarts_negative_epoch():
    for lib in ("nopt", "torch"):
        s = lib_module(lib).CosineAnnealingWarmRestarts(make_optimizer(lib), 5)
        with pytest.raises(ValueError, match="non-negative"):
            s.step(-1)


def test_plateau_deprecated_epoch_matches_torch():
    traces = []
    for lib in ("nopt", "torch"):
        opt = make_optimizer(lib)
        s = lib_module(lib).ReduceLROnPlateau(opt, patience=0, factor=0.5)
        trace = []
        for t, epoch in enumerate([None, 5, None, 3, None, None]):
            if epoch is None:
                s.step(1.0)
            else:
                with pytest.warns(UserWarning, match="deprecated"):
                    s.step(1.0, epoch)
            trace.append((snapshot(opt, [s]), s.last_epoch))
        traces.append(trace)
    assert traces[0] == traces[1]


# ---------------------------------------------------------------- errors
def other(lib):
    return make_optimizer(lib)


ERROR_CASES = [
    # (id, build(module, optimizer, lib), steps after construction)
    ("not-an-optimizer", lambda m, o, lib: m.StepLR(object(), 3), 0),
    ("lambda-not-an-optimizer", lambda m, o, lib: m.LambdaLR(object(), decay), 0),
    ("lambda-list-length", lambda m, o, lib: m.LambdaLR(o, [decay]), 0),
    ("lambda-not-callable", lambda m, o, lib: m.LambdaLR(o, 3), 0),
    ("multiplicative-list-length", lambda m, o, lib: m.MultiplicativeLR(o, [decay] * 3), 0),
    ("multiplicative-not-callable", lambda m, o, lib: m.MultiplicativeLR(o, 0.9), 0),
    ("step-size-0", lambda m, o, lib: m.StepLR(o, 0), 3),
    ("constant-factor-high", lambda m, o, lib: m.ConstantLR(o, factor=1.5), 0),
    ("constant-factor-negative", lambda m, o, lib: m.ConstantLR(o, factor=-0.1), 0),
    ("constant-factor-0", lambda m, o, lib: m.ConstantLR(o, factor=0.0, total_iters=3), 5),
    ("linear-start-0", lambda m, o, lib: m.LinearLR(o, start_factor=0.0), 0),
    ("linear-start-high", lambda m, o, lib: m.LinearLR(o, start_factor=1.5), 0),
    ("linear-end-negative", lambda m, o, lib: m.LinearLR(o, end_factor=-0.5), 0),
    ("linear-end-high", lambda m, o, lib: m.LinearLR(o, end_factor=1.01), 0),
    ("polynomial-negative-power", lambda m, o, lib: m.PolynomialLR(o, 4, power=-1.0), 6),
    ("cosine-T0", lambda m, o, lib: m.CosineAnnealingLR(o, 0), 2),
    ("sequential-empty", lambda m, o, lib: m.SequentialLR(o, [], []), 0),
    ("sequential-milestones", lambda m, o, lib: m.SequentialLR(
        o, [m.StepLR(o, 2), m.StepLR(o, 3)], [1, 2]), 0),
    ("sequential-other-optimizer", lambda m, o, lib: m.SequentialLR(
        o, [m.StepLR(o, 2), m.StepLR(other(lib), 3)], [4]), 0),
    ("sequential-plateau", lambda m, o, lib: m.SequentialLR(
        o, [m.StepLR(o, 2), m.ReduceLROnPlateau(o)], [4]), 0),
    ("sequential-not-a-scheduler", lambda m, o, lib: m.SequentialLR(o, [object()], []), 0),
    ("chained-empty", lambda m, o, lib: m.ChainedScheduler([]), 0),
    ("chained-other-optimizer", lambda m, o, lib: m.ChainedScheduler(
        [m.StepLR(o, 2), m.StepLR(other(lib), 3)]), 0),
    ("chained-plateau", lambda m, o, lib: m.ChainedScheduler([m.ReduceLROnPlateau(o)]), 0),
    ("sequential-chained-after-milestone", lambda m, o, lib: m.SequentialLR(
        o, [m.StepLR(o, 2), m.ChainedScheduler([m.StepLR(o, 3)])], [4]), 6),
    ("chained-not-a-scheduler", lambda m, o, lib: m.ChainedScheduler([m.StepLR(o, 2), 5]), 0),
    ("plateau-factor", lambda m, o, lib: m.ReduceLROnPlateau(o, factor=1.0), 0),
    ("plateau-mode", lambda m, o, lib: m.ReduceLROnPlateau(o, mode="avg"), 0),
    ("plateau-threshold-mode", lambda m, o, lib: m.ReduceLROnPlateau(o, threshold_mode="x"), 0),
    ("plateau-min_lr-length", lambda m, o, lib: m.ReduceLROnPlateau(o, min_lr=[0.1]), 0),
    ("plateau-not-an-optimizer", lambda m, o, lib: m.ReduceLROnPlateau(None), 0),
    ("cyclic-mode", lambda m, o, lib: m.CyclicLR(o, 0.01, 0.1, mode="sine"), 0),
    ("cyclic-base_lr-length", lambda m, o, lib: m.CyclicLR(o, [0.01] * 3, 0.1), 0),
    ("cyclic-max_lr-length", lambda m, o, lib: m.CyclicLR(o, 0.01, [0.1]), 0),
    ("cyclic-momentum-length", lambda m, o, lib: m.CyclicLR(o, 0.01, 0.1, base_momentum=[0.8]), 0),
    ("cyclic-no-momentum", lambda m, o, lib: m.CyclicLR(make_optimizer(lib, "plain"), 0.01, 0.1), 0),
    ("cyclic-step-size", lambda m, o, lib: m.CyclicLR(o, 0.01, 0.1, step_size_up="x"), 0),
    ("cyclic-zero-size", lambda m, o, lib: m.CyclicLR(o, 0.01, 0.1, 0, 0), 0),
    ("cyclic-not-an-optimizer", lambda m, o, lib: m.CyclicLR([], 0.01, 0.1), 0),
    ("onecycle-total-0", lambda m, o, lib: m.OneCycleLR(o, 0.1, total_steps=0), 0),
    ("onecycle-total-negative", lambda m, o, lib: m.OneCycleLR(o, 0.1, total_steps=-5), 0),
    ("onecycle-total-float", lambda m, o, lib: m.OneCycleLR(o, 0.1, total_steps=10.5), 0),
    ("onecycle-no-total", lambda m, o, lib: m.OneCycleLR(o, 0.1, epochs=3), 0),
    ("onecycle-epochs-0", lambda m, o, lib: m.OneCycleLR(o, 0.1, epochs=0, steps_per_epoch=4), 0),
    ("onecycle-steps-float", lambda m, o, lib: m.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=1.5), 0),
    ("onecycle-pct-high", lambda m, o, lib: m.OneCycleLR(o, 0.1, 100, pct_start=1.5), 0),
    ("onecycle-pct-negative", lambda m, o, lib: m.OneCycleLR(o, 0.1, 100, pct_start=-0.1), 0),
    ("onecycle-pct-int", lambda m, o, lib: m.OneCycleLR(o, 0.1, 100, pct_start=1), 0),
    ("onecycle-pct-degenerate", lambda m, o, lib: m.OneCycleLR(o, 0.1, 10, pct_start=0.1), 0),
    ("onecycle-anneal", lambda m, o, lib: m.OneCycleLR(o, 0.1, 100, anneal_strategy="exp"), 0),
    ("onecycle-max_lr-length", lambda m, o, lib: m.OneCycleLR(o, [0.1, 0.2, 0.3], 100), 0),
    ("onecycle-no-momentum", lambda m, o, lib: m.OneCycleLR(make_optimizer(lib, "plain"), 0.1, 100), 0),
    ("onecycle-momentum-length", lambda m, o, lib: m.OneCycleLR(o, 0.1, 100, max_momentum=[0.9]), 0),
    ("onecycle-past-total", lambda m, o, lib: m.OneCycleLR(o, 0.1, total_steps=10), 11),
    ("onecycle-not-an-optimizer", lambda m, o, lib: m.OneCycleLR(None, 0.1, 10), 0),
    ("warm-T0-zero", lambda m, o, lib: m.CosineAnnealingWarmRestarts(o, 0), 0),
    ("warm-T0-negative", lambda m, o, lib: m.CosineAnnealingWarmRestarts(o, -3), 0),
    ("warm-T0-float", lambda m, o, lib: m.CosineAnnealingWarmRestarts(o, 2.5), 0),
    ("warm-T0-str", lambda m, o, lib: m.CosineAnnealingWarmRestarts(o, "5"), 0),
    ("warm-Tmult-zero", lambda m, o, lib: m.CosineAnnealingWarmRestarts(o, 5, 0), 0),
    ("warm-Tmult-float", lambda m, o, lib: m.CosineAnnealingWarmRestarts(o, 5, 1.5), 0),
    ("warm-eta_min-str", lambda m, o, lib: m.CosineAnnealingWarmRestarts(o, 5, eta_min="0"), 0),
    ("resume-without-initial_lr", lambda m, o, lib: m.ExponentialLR(o, 0.9, last_epoch=3), 0),
]


def outcome(lib, build, steps):
    m = lib_module(lib)
    opt = make_optimizer(lib)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            sched = build(m, opt, lib)
            for _ in range(steps):
                opt.step()
                sched.step()
        except Exception as exc:  # the type is what is compared
            return type(exc)
    return None


@pytest.mark.parametrize("name,build,steps", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_errors_match_torch(name, build, steps):
    theirs = outcome("torch", build, steps)
    assert theirs is not None, "torch accepts this case; it does not belong in the table"
    assert outcome("nopt", build, steps) is theirs


# ---------------------------------------------------------------- warnings
@pytest.mark.parametrize("lib", ["nopt", "torch"])
def test_step_before_optimizer_step_warns(lib):
    opt = make_optimizer(lib)
    sched = lib_module(lib).StepLR(opt, 3)
    with pytest.warns(UserWarning, match=r"before `optimizer.step\(\)`"):
        sched.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.step()  # only the first step is checked
        opt.step()
        sched.step()


@pytest.mark.parametrize("lib", ["nopt", "torch"])
def test_no_warning_after_optimizer_step(lib):
    opt = make_optimizer(lib)
    scheds = [lib_module(lib).LinearLR(opt), lib_module(lib).ExponentialLR(opt, 0.9)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()
        for s in scheds:
            s.step()


def test_warns_for_any_optimizer_subclass():
    """nopt's step wrapper marks every subclass's step, so the check needs no patching."""
    opt = make_optimizer("nopt", "betas")
    sched = nls.CyclicLR(opt, 0.01, 0.1, 4)
    assert opt._opt_called is False
    with pytest.warns(UserWarning, match="before"):
        sched.step()
    opt2 = make_optimizer("nopt", "betas")
    sched2 = nls.CyclicLR(opt2, 0.01, 0.1, 4)
    opt2.step()
    assert opt2._opt_called is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched2.step()


def test_get_lr_outside_step_warns():
    sched = nls.StepLR(make_optimizer("nopt"), 3)
    with pytest.warns(UserWarning, match="get_last_lr"):
        sched.get_lr()


# ---------------------------------------------------------------- state dicts
def test_state_dict_is_plain_data_and_excludes_optimizer():
    opt = make_optimizer("nopt")
    scheds = [
        nls.LambdaLR(opt, [decay, Warmup(5)]),
        nls.CyclicLR(opt, 0.01, 0.1, 4, scale_fn=half_cycles),
        nls.SequentialLR(opt, [nls.ConstantLR(opt), nls.ExponentialLR(opt, 0.9)], [3]),
        nls.ReduceLROnPlateau(opt),
    ]
    for s in scheds:
        state = s.state_dict()
        assert "optimizer" not in state
        nopt.serialization._encode(state, {})  # raises on anything nopt.save cannot store
    lam = scheds[0].state_dict()["lr_lambdas"]
    assert lam == [None, {"n": 5}]
    assert scheds[1].state_dict()["_scale_fn_custom"] is None


def test_lambda_object_state_round_trip():
    opt = make_optimizer("nopt")
    fn = Warmup(5)
    sched = nls.LambdaLR(opt, fn)
    state = sched.state_dict()
    assert state["lr_lambdas"] == [{"n": 5}, {"n": 5}]  # one entry per group, as torch
    for entry in state["lr_lambdas"]:
        entry["n"] = 50
    sched.load_state_dict(state)
    assert fn.n == 50


def test_cyclic_callable_object_scale_fn_state():
    class Scale:
        def __init__(self):
            self.k = 2.0

        def __call__(self, x):
            return 1.0 / self.k ** x

    fn = Scale()
    sched = nls.CyclicLR(make_optimizer("nopt"), 0.01, 0.1, 4, scale_fn=fn)
    state = sched.state_dict()
    assert state["_scale_fn_custom"] == {"k": 2.0}
    state["_scale_fn_custom"]["k"] = 3.0
    sched.load_state_dict(state)
    assert fn.k == 3.0 and sched._scale_fn_custom is fn


def test_load_state_dict_does_not_alias():
    opt = make_optimizer("nopt")
    a = nls.MultiStepLR(opt, [3, 5])
    state = a.state_dict()
    b = nls.MultiStepLR(make_optimizer("nopt"), [1])
    b.load_state_dict(state)
    assert b.base_lrs == a.base_lrs and b.base_lrs is not a.base_lrs
    assert b.milestones == a.milestones


def test_constructing_resets_lr_and_sets_initial_lr():
    opt = make_optimizer("nopt")
    nls.ExponentialLR(opt, 0.5)
    assert [g["initial_lr"] for g in opt.param_groups] == list(LRS)
    opt.param_groups[0]["lr"] = 7.0
    s = nls.StepLR(opt, 2)  # keeps the recorded initial_lr
    assert s.base_lrs == list(LRS)
