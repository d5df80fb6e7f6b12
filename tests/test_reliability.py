"""Issue 14: threads, interrupts, state validation, aliasing, ApplyIfFinite(LBFGS).

Each test here failed on main before the fix it names (see the issue's
findings 1, 2, 4, 5, 7 and 8).
"""
import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import nopt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_python(code, timeout=120):
    """Run ``code`` in a fresh interpreter importing this checkout's nopt."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- 1. threads
def test_concurrent_steps_on_one_optimizer_neither_crash_nor_lose_counts():
    """Two threads stepping one Adam (groups of 4M and 8 elements), replacing grads each time.

    On main this died with SIGSEGV in most runs (a kernel read gradients
    another thread had freed) or lost counts; steps now serialise on the
    optimizer's lock. Run in a subprocess so that a crash is a failure.
    """
    result = _run_python("""
        import threading, numpy as np, nopt
        big = nopt.Parameter(np.zeros(4_000_000, dtype=np.float32))
        small = nopt.Parameter(np.zeros(8, dtype=np.float32))
        opt = nopt.Adam([{"params": [big]}, {"params": [small]}], lr=1e-3)
        N = 30
        def work():
            for _ in range(N):
                big.grad = np.full(big.shape, 0.5, dtype=np.float32)
                small.grad = np.full(small.shape, 0.5, dtype=np.float32)
                opt.step()
        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads: t.start()
        for t in threads: t.join()
        # Sequential twin: the same 60 steps (the gradient is constant).
        b2 = nopt.Parameter(np.zeros(8, dtype=np.float32)); b2.grad = np.full(8, 0.5, np.float32)
        twin = nopt.Adam([b2], lr=1e-3)
        for _ in range(2 * N): twin.step()
        print(opt.state[big]["step"], opt.state[small]["step"],
              bool(np.array_equal(small, b2)), bool(np.array_equal(big[:8], b2)))
    """)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.split() == ["60.0", "60.0", "True", "True"], result.stdout


def _stepping_thread(opt, entered, release):
    """A thread whose step stops (holding the optimizer) until ``release`` is set.

    It stops in its closure, which runs inside the step (step hooks run
    outside the optimizer's lock, see test_hooks_run_outside_the_lock).
    """
    def closure():
        entered.set()
        release.wait(10)

    thread = threading.Thread(target=opt.step, args=(closure,))
    thread.start()
    assert entered.wait(10)
    return thread


@pytest.mark.parametrize("call", ["state_dict", "load_state_dict"])
def test_state_dict_waits_for_a_step_in_another_thread(call):
    """state_dict()/load_state_dict() while another thread steps: they wait for the step."""
    p = nopt.Parameter(np.ones(10))
    p.grad = np.ones(10)
    opt = nopt.Adam([p])
    opt.step()
    saved = opt.state_dict()
    saved = {"state": {0: dict(saved["state"][0])}, "param_groups": saved["param_groups"]}
    order = []
    entered, release, done = threading.Event(), threading.Event(), threading.Event()
    thread = _stepping_thread(opt, entered, release)

    def other():
        if call == "state_dict":
            opt.state_dict()
        else:
            opt.load_state_dict(saved)
        order.append(call)
        done.set()

    other_thread = threading.Thread(target=other)
    other_thread.start()
    # With the lock, `other` cannot finish while the step is held; without
    # it, it finishes at once. (The wait only bounds the failing case.)
    done.wait(0.5)
    order.append("step released")
    release.set()
    thread.join()
    other_thread.join()
    assert order == ["step released", call]


def _adam_with_grad():
    p = nopt.Parameter(np.ones(10))
    p.grad = np.ones(10)
    return p, nopt.Adam([p])


@pytest.mark.parametrize("kind", ["pre", "post"])
def test_a_step_hook_may_wait_on_another_thread_using_the_optimizer(kind):
    """A step hook that hands ``state_dict()`` to another thread and waits for it.

    With the hooks under the optimizer's lock (before this fix) the other
    thread waited for the lock the hook's step held: a deadlock, here cut
    short by the join's timeout. Hooks now run outside the lock, as torch
    runs them (plain calls before and after the step).
    """
    p, opt = _adam_with_grad()
    finished = []

    def hook(optimizer, args, kwargs):
        saver = threading.Thread(target=lambda: finished.append(optimizer.state_dict()))
        saver.start()
        saver.join(5)
        finished.append(not saver.is_alive())

    getattr(opt, f"register_step_{kind}_hook")(hook)
    opt.step()
    assert finished[-1] is True, "the hook's thread could not take state_dict() (deadlock)"


def test_pre_hooks_of_two_threads_stepping_one_optimizer_may_wait_for_each_other():
    """Two threads step one optimizer; their pre-hooks meet at a barrier (e.g. a sync point).

    Under the lock the second thread could not reach its hook while the first
    waited in its own: the barrier broke. Both steps still run, one at a time.
    """
    p, opt = _adam_with_grad()
    barrier = threading.Barrier(2, timeout=5)
    errors = []

    def meet(optimizer, args, kwargs):
        barrier.wait()

    opt.register_step_pre_hook(meet)

    def work():
        try:
            opt.step()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert not errors, errors
    assert opt.state[p]["step"] == 2.0


def test_steps_stay_atomic_with_hooks_outside_the_lock():
    """A post-hook in one thread while another thread steps: each step is whole.

    The hook runs after its own step released the lock, so it may see the
    other thread's steps too, but never half of one (both groups agree).
    """
    big = nopt.Parameter(np.zeros(1_000_000))
    small = nopt.Parameter(np.zeros(4))
    opt = nopt.SGD([{"params": [big]}, {"params": [small]}], lr=1.0)
    big.grad = np.ones(big.shape)
    small.grad = np.ones(4)
    seen = []
    opt.register_step_post_hook(lambda o, a, k: seen.append(o.state_dict() and (big[0], small[0])))
    threads = [threading.Thread(target=lambda: [opt.step() for _ in range(20)]) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert float(small[0]) == -40.0 and float(big[0]) == -40.0
    assert len(seen) == 40


def test_state_dict_never_sees_half_a_step():
    """A state_dict hook taken while another thread steps sees counts and parameters agree."""
    big = nopt.Parameter(np.zeros(2_000_000))
    small = nopt.Parameter(np.zeros(4))
    opt = nopt.SGD([{"params": [big]}, {"params": [small]}], lr=1.0, momentum=0.5)
    big.grad = np.ones(big.shape)
    small.grad = np.ones(4)
    seen = []

    def hook(optimizer, state_dict):
        seen.append((float(big[0]), float(small[0])))

    opt.register_state_dict_post_hook(hook)
    stop = threading.Event()

    def work():
        for _ in range(40):
            opt.step()
        stop.set()

    thread = threading.Thread(target=work)
    thread.start()
    for _ in range(2000):
        if stop.is_set():
            break
        opt.state_dict()
    thread.join()
    # Every snapshot is between steps: both groups moved equally.
    assert seen and all(b == s for b, s in seen), [x for x in seen if x[0] != x[1]][:3]


def test_two_optimizers_step_in_parallel():
    """Different optimizers in different threads overlap (the lock is per optimizer).

    Deterministic (no timing): with the GIL switch interval made huge, the
    main thread runs only while the worker's kernel has released the GIL;
    it then steps its own optimizer and stops the worker, which has done at
    most a step or two of its N.
    """
    def make():
        p = nopt.Parameter(np.zeros(1_000_000, dtype=np.float32))
        p.grad = np.ones(p.shape, dtype=np.float32)
        opt = nopt.Adam([p])
        opt.step()
        return opt
    mine, theirs = make(), make()
    started, stop, count = threading.Event(), threading.Event(), [0]
    N = 100

    def worker():
        started.set()
        for _ in range(N):
            if stop.is_set():
                break
            theirs.step()
            count[0] += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        thread = threading.Thread(target=worker)
        thread.start()
        started.wait()
        mine.step()
        stop.set()
        thread.join()
    finally:
        sys.setswitchinterval(old)
    assert count[0] < N
    assert mine.state[mine.param_groups[0]["params"][0]]["step"] == 2.0


# ---------------------------------------------------------------- 2. interrupts
def _twins(cls, kwargs, sizes, seed=0):
    made = []
    for _ in range(2):
        rng = np.random.default_rng(seed)
        params = [nopt.Parameter(rng.standard_normal(n)) for n in sizes]
        for p in params:
            p.grad = rng.standard_normal(p.shape)
        made.append((params, cls([{"params": [p]} for p in params], **kwargs)))
    return made


def _interrupt_during_step(opt, watched):
    """Step ``opt``; a helper thread sends SIGINT once ``watched`` starts changing.

    The helper runs while the kernel updating ``watched`` holds no GIL, so
    the signal arrives during the step's first kernel. Returns whether
    KeyboardInterrupt was raised.
    """
    before = float(watched[0])
    main = threading.get_ident()
    stop = threading.Event()

    def fire():
        while not stop.is_set():
            if float(watched[0]) != before:
                signal.pthread_kill(main, signal.SIGINT)
                return

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, handler)
    thread = threading.Thread(target=fire)
    interrupted = False
    try:
        thread.start()
        with nopt.num_threads(1):
            try:
                opt.step()
                # The helper fires once the parameter has moved: by now at
                # the latest. A signal that arrived late is raised here.
                thread.join()
                for _ in range(1000):
                    pass
            except KeyboardInterrupt:
                interrupted = True
    finally:
        stop.set()
        thread.join()
        signal.signal(signal.SIGINT, old)
    return interrupted


def _same_state(a, b, params_a, params_b):
    for pa, pb in zip(params_a, params_b):
        np.testing.assert_array_equal(pa, pb)
        sa, sb = a.state[pa], b.state[pb]
        assert sorted(sa) == sorted(sb)
        for key in sa:
            np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
@pytest.mark.parametrize("cls, kwargs", [
    (nopt.Adam, {}),
    (nopt.NAdam, {}),
    (nopt.ASGD, {"lr": 0.01, "t0": 0}),
])
def test_ctrl_c_during_a_step_applies_all_or_nothing(cls, kwargs):
    """SIGINT inside a two-group step: parameters and all state agree with a whole step."""
    (params, opt), (twin_params, twin) = _twins(cls, kwargs, [3_000_000, 1000])
    opt.step()
    twin.step()
    twin.step()
    interrupted = _interrupt_during_step(opt, params[0])
    assert interrupted
    # The interrupted step was applied whole: it matches the twin's two steps
    # (on main, group 1, NAdam's mu_product or ASGD's eta/mu lagged behind).
    _same_state(opt, twin, params, twin_params)


# ---------------------------------------------------------------- 4, 8. loaded scalars
def _adam_after_one_step():
    p = nopt.Parameter(np.ones(3))
    p.grad = np.ones(3)
    opt = nopt.Adam([p])
    opt.step()
    return p, opt


@pytest.mark.parametrize("bad, error", [
    (np.array(np.nan), ValueError),
    (np.array(-1.0), ValueError),
    (np.array([1.0, 2.0]), TypeError),
    (np.array(True), TypeError),
    (True, TypeError),
    (np.bool_(True), TypeError),
    (np.float64(np.inf), ValueError),
    (2.5, ValueError),
    (np.array(2.5), ValueError),
    pytest.param(10 ** 3999, ValueError, id="4000-digit int"),
    pytest.param(-(10 ** 3999), ValueError, id="-4000-digit int"),
    (2 ** 60, ValueError),
    ("3", TypeError),
])
def test_loaded_step_goes_through_one_check(bad, error):
    p, opt = _adam_after_one_step()
    sd = opt.state_dict()
    good = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in sd["state"][0].items()}
    before = np.array(p)
    state = {"state": {0: dict(good, step=bad)}, "param_groups": sd["param_groups"]}
    with pytest.raises(error):
        opt.load_state_dict(state)
    assert opt.state[p]["step"] == 1.0
    opt.step()
    assert np.isfinite(p).all() and not np.array_equal(p, before)


@pytest.mark.parametrize("good", [3, 3.0, np.int64(3), np.float32(3), np.array(3.0), np.array(3)])
def test_loaded_step_accepts_any_numeric_container(good):
    p, opt = _adam_after_one_step()
    sd = opt.state_dict()
    state = {"state": {0: dict(sd["state"][0], step=good)}, "param_groups": sd["param_groups"]}
    opt.load_state_dict(state)
    assert type(opt.state[p]["step"]) is float and opt.state[p]["step"] == 3.0


@pytest.mark.parametrize("cls, key", [(nopt.NAdam, "mu_product"), (nopt.ASGD, "eta"), (nopt.ASGD, "mu")])
@pytest.mark.parametrize("bad", [np.array(np.nan), np.array([1.0]), np.array(True), float("inf")])
def test_loaded_scalar_state_is_checked(cls, key, bad):
    p = nopt.Parameter(np.ones(3))
    p.grad = np.ones(3)
    opt = cls([p])
    opt.step()
    sd = opt.state_dict()
    state = {"state": {0: dict(sd["state"][0], **{key: bad})}, "param_groups": sd["param_groups"]}
    with pytest.raises((TypeError, ValueError)):
        opt.load_state_dict(state)


# ---------------------------------------------------------------- 5. failed step restores counts
@pytest.mark.parametrize("count", [5, 0.1, 2 ** 53, np.float64(7.0)])
def test_failed_step_restores_the_very_count_objects(count):
    p, q = nopt.Parameter(np.ones(3)), nopt.Parameter(np.ones(3))
    p.grad, q.grad = np.ones(3), np.ones(3)
    opt = nopt.Adam([{"params": [p]}, {"params": [q]}])
    opt.step()
    opt.state[p]["step"] = count
    q_count = opt.state[q]["step"]
    opt.param_groups[1]["betas"] = (0.9,)  # group 1 fails while planning, after group 0 counted
    before = np.array(p)
    with pytest.raises(ValueError):
        opt.step()
    assert opt.state[p]["step"] is count
    assert opt.state[q]["step"] is q_count
    np.testing.assert_array_equal(p, before)


# ---------------------------------------------------------------- option-dependent state
@pytest.mark.parametrize("cls, kwargs, key", [
    (nopt.Adam, {"amsgrad": True}, "max_exp_avg_sq"),
    (nopt.RMSprop, {"centered": True}, "grad_avg"),
    (nopt.RMSprop, {"momentum": 0.9}, "momentum_buffer"),
])
def test_load_checks_state_the_options_need(cls, kwargs, key):
    p = nopt.Parameter(np.ones(3))
    p.grad = np.ones(3)
    opt = cls([p], **kwargs)
    opt.step()
    sd = opt.state_dict()
    entry = {k: v for k, v in sd["state"][0].items() if k != key}
    with pytest.raises(ValueError, match=key):
        opt.load_state_dict({"state": {0: entry}, "param_groups": sd["param_groups"]})
    assert key in opt.state[p]


# ---------------------------------------------------------------- 7. aliasing
def _two_params():
    p, q = nopt.Parameter(np.ones(100)), nopt.Parameter(np.full(100, 2.0))
    p.grad, q.grad = np.full(100, 0.5), np.full(100, 0.25)
    return p, q


def _unchanged(opt, params, fn, match):
    opt.step()
    saved = [np.array(p) for p in params]
    states = [{k: np.array(v) for k, v in opt.state[p].items()} for p in params]
    with pytest.raises(ValueError, match=match):
        fn()
    for p, a, s in zip(params, saved, states):
        np.testing.assert_array_equal(p, a)
        for k, v in s.items():
            np.testing.assert_array_equal(opt.state[p][k], v)


def test_step_refuses_a_parameter_appended_twice():
    p, q = _two_params()
    opt = nopt.Adam([p, q])
    opt.step()
    opt.param_groups[0]["params"].append(p)
    before = np.array(p), opt.state[p]["step"]
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[2\]"):
        opt.step()
    np.testing.assert_array_equal(p, before[0])
    assert opt.state[p]["step"] is before[1]


def test_step_refuses_gradients_aliasing_other_parameters():
    p, q = _two_params()
    opt = nopt.Adam([{"params": [p]}, {"params": [q]}])
    opt.step()
    p.grad = np.asarray(q)
    saved = np.array(p), np.array(q)
    with pytest.raises(ValueError, match=r"grad of param_groups\[0\]\['params'\]\[0\].*param_groups\[1\]"):
        opt.step()
    np.testing.assert_array_equal(p, saved[0])
    np.testing.assert_array_equal(q, saved[1])


def test_step_refuses_state_aliasing_a_parameter():
    p, q = _two_params()
    opt = nopt.Adam([p, q])
    opt.step()
    opt.state[p]["exp_avg"] = np.asarray(q)
    saved = np.array(q)
    with pytest.raises(ValueError, match=r"'exp_avg' of param_groups\[0\]\['params'\]\[0\]"):
        opt.step()
    np.testing.assert_array_equal(q, saved)


def test_step_refuses_state_aliasing_another_state_array():
    p, q = _two_params()
    opt = nopt.Adam([p, q])
    opt.step()
    opt.state[p]["exp_avg"] = opt.state[q]["exp_avg_sq"]
    saved = np.array(opt.state[q]["exp_avg_sq"]), np.array(p)
    with pytest.raises(ValueError, match="shares memory"):
        opt.step()
    np.testing.assert_array_equal(opt.state[q]["exp_avg_sq"], saved[0])
    np.testing.assert_array_equal(p, saved[1])


def test_shared_gradient_is_allowed():
    """Two parameters may share one gradient array: it is only read."""
    p, q = _two_params()
    g = np.full(100, 0.5)
    p.grad = q.grad = g
    opt = nopt.Adam([p, q])
    opt.step()
    opt.step()
    assert opt.state[p]["step"] == 2.0


# ---------------------------------------------------------------- 8. ApplyIfFinite(LBFGS)
def test_apply_if_finite_passes_the_closure_to_lbfgs():
    p = nopt.Parameter(np.array([1.0, -2.0]))
    opt = nopt.ApplyIfFinite(nopt.LBFGS([p], line_search_fn="strong_wolfe"))

    def closure():
        p.grad = 2 * np.asarray(p)
        return float(np.sum(np.asarray(p) ** 2))

    loss = opt.step(closure)
    assert loss == 5.0
    assert opt.last_step_applied
    assert np.abs(p).max() < 1e-6


# ---------------------------------------------------------------- issue 18: multi-pass rules
# Rules whose step is more than one pass (norms or global sums first, then
# the update) get the same all-or-nothing run phase and aliasing check as
# every other optimizer. Prodigy used to run its passes from Python (a
# Ctrl-C between two groups' updates left one group stepped) and skipped the
# aliasing check.
_MULTI_PASS = [
    (nopt.Prodigy, {}, "exp_avg_sq"),
    (nopt.LAMB, {}, "exp_avg"),
    (nopt.LARS, {"lr": 0.1}, "momentum_buffer"),
    (nopt.Adan, {}, "exp_avg"),
    (nopt.Adafactor, {}, "variance"),
    (nopt.ScheduleFreeAdamW, {}, "z"),
]
_MULTI_IDS = [cls.__name__ for cls, _, _ in _MULTI_PASS]


def _same_groups(a, b):
    for ga, gb in zip(a.param_groups, b.param_groups):
        assert {k: v for k, v in ga.items() if k != "params"} == \
               {k: v for k, v in gb.items() if k != "params"}


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
@pytest.mark.parametrize("cls, kwargs, key", _MULTI_PASS, ids=_MULTI_IDS)
def test_ctrl_c_during_a_multi_pass_step_applies_all_or_nothing(cls, kwargs, key):
    """SIGINT once the first group's parameters move: both groups, their state and the
    groups' scalars (Prodigy's d, k, ...) agree with a whole step."""
    (params, opt), (twin_params, twin) = _twins(cls, kwargs, [3_000_000, 1000])
    opt.step()
    twin.step()
    twin.step()
    interrupted = _interrupt_during_step(opt, params[0])
    assert interrupted
    _same_state(opt, twin, params, twin_params)
    _same_groups(opt, twin)


@pytest.mark.parametrize("cls, kwargs, key", _MULTI_PASS, ids=_MULTI_IDS)
def test_multi_pass_step_refuses_a_parameter_appended_twice(cls, kwargs, key):
    p, q = _two_params()
    opt = cls([p, q], **kwargs)
    opt.step()
    opt.param_groups[0]["params"].append(p)
    before = np.array(p), opt.state[p]["step"] if "step" in opt.state[p] else None
    groups = [dict(g) for g in opt.param_groups]
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[2\]"):
        opt.step()
    np.testing.assert_array_equal(p, before[0])
    if before[1] is not None:
        assert opt.state[p]["step"] is before[1]
    assert [dict(g) for g in opt.param_groups] == groups


@pytest.mark.parametrize("cls, kwargs, key", _MULTI_PASS, ids=_MULTI_IDS)
def test_multi_pass_step_refuses_gradients_aliasing_other_parameters(cls, kwargs, key):
    p, q = _two_params()
    opt = cls([{"params": [p]}, {"params": [q]}], **kwargs)
    opt.step()
    p.grad = np.asarray(q)
    saved = np.array(p), np.array(q)
    with pytest.raises(ValueError, match=r"grad of param_groups\[0\]\['params'\]\[0\].*param_groups\[1\]"):
        opt.step()
    np.testing.assert_array_equal(p, saved[0])
    np.testing.assert_array_equal(q, saved[1])


@pytest.mark.parametrize("cls, kwargs, key", _MULTI_PASS, ids=_MULTI_IDS)
def test_multi_pass_step_refuses_state_aliasing_a_parameter(cls, kwargs, key):
    p, q = _two_params()
    opt = cls([p, q], **kwargs)
    opt.step()
    opt.state[p][key] = np.asarray(q)
    saved = np.array(q), np.array(p)
    with pytest.raises(ValueError, match=rf"'{key}' of param_groups\[0\]\['params'\]\[0\]"):
        opt.step()
    np.testing.assert_array_equal(q, saved[0])
    np.testing.assert_array_equal(p, saved[1])


def test_prodigy_shared_gradient_is_allowed():
    """Two parameters may share one gradient array (it is only read), also in Prodigy's two passes."""
    p, q = _two_params()
    g = np.full(100, 0.5)
    p.grad = q.grad = g
    opt = nopt.Prodigy([p, q])
    opt.step()
    opt.step()
    assert opt.state[p]["step"] == 2.0 and opt.param_groups[0]["k"] == 2


def test_prodigy_zero_gradient_step_is_not_counted():
    """As prodigyopt: with every |s| sum 0 there is no update, and neither the step nor k counts."""
    p = nopt.Parameter(np.ones(10))
    p.grad = np.zeros(10)
    opt = nopt.Prodigy([p])
    opt.step()
    assert opt.state[p]["step"] == 0.0 and opt.param_groups[0]["k"] == 0
    np.testing.assert_array_equal(p, np.ones(10))
    p.grad = np.ones(10)
    opt.step()
    assert opt.state[p]["step"] == 1.0 and opt.param_groups[0]["k"] == 1


# The combinators' own changes run in the wrapped step's run phase.
def _wrapped_twins(wrap, sizes, seed=0):
    made = []
    for _ in range(2):
        rng = np.random.default_rng(seed)
        params = [nopt.Parameter(rng.standard_normal(n)) for n in sizes]
        for p in params:
            p.grad = rng.standard_normal(p.shape)
        made.append((params, wrap(nopt.Adam([{"params": [p]} for p in params]))))
    return made


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
@pytest.mark.parametrize("wrap, counter", [
    (lambda opt: nopt.MultiSteps(opt, every_k=2), "mini_step"),
    (lambda opt: nopt.Lookahead(opt, k=2, alpha=0.5), "fast_steps"),
], ids=["MultiSteps", "Lookahead"])
def test_ctrl_c_during_a_wrapped_step_applies_all_or_nothing(wrap, counter):
    """SIGINT during the step that ends a MultiSteps cycle (the mean gradient, Adam's
    step, the reset) or a Lookahead period (Adam's step, the synchronisation, the
    counter): the wrapper and the wrapped optimizer agree with an uninterrupted twin."""
    (params, opt), (twin_params, twin) = _wrapped_twins(wrap, [3_000_000, 1000])
    opt.step()
    twin.step()
    twin.step()
    interrupted = _interrupt_during_step(opt, params[0])
    assert interrupted
    _same_state(opt.optimizer, twin.optimizer, params, twin_params)
    assert getattr(opt, counter) == getattr(twin, counter) == 0
    if isinstance(opt, nopt.Lookahead):
        for p, q in zip(params, twin_params):
            np.testing.assert_array_equal(opt.slow_weights()[p], twin.slow_weights()[q])
    else:
        assert opt.last_step_applied and not opt._seen


def test_multi_steps_failed_step_changes_nothing():
    """A wrapped step that fails when planned leaves the accumulators and counters as they were."""
    p = nopt.Parameter(np.ones(10))
    p.grad = np.full(10, 0.5)
    opt = nopt.MultiSteps(nopt.Adam([p]), every_k=2)
    opt.step()
    acc = np.array(opt._accumulators[p])
    opt.optimizer.state[p]["exp_avg"] = np.zeros(10)    # incomplete: refused when planned
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\] has no"):
        opt.step()
    np.testing.assert_array_equal(opt._accumulators[p], acc)
    np.testing.assert_array_equal(p, np.ones(10))
    assert opt.mini_step == 1 and opt._seen == {p}
