"""Kernels release the GIL; optimizers in two threads; no leaks, no full-size temporaries."""
import gc
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest

import nopt

BIG = 16 * 1024 * 1024


def _adam():
    return nopt.Adam, {"lr": 1e-3}


def test_kernel_releases_the_gil():
    """While one thread runs steps, the main thread runs Python: the kernels release the GIL.

    Deterministic (no timing): with the GIL switch interval made huge, the
    main thread gets the GIL only when the stepping thread releases it,
    i.e. inside a kernel. The main thread then sets ``stop``, so the worker
    does a step or two, not all ``N`` (as it would if it held the GIL).
    """
    p = nopt.Parameter(np.zeros(BIG, dtype=np.float32))
    p.grad = np.ones(BIG, dtype=np.float32)
    opt = nopt.SGD([p], lr=0.1, momentum=0.9)
    opt.step()  # allocate state first
    started, stop, count = threading.Event(), threading.Event(), [0]
    N = 50

    def worker():
        with nopt.num_threads(1):
            started.set()
            for _ in range(N):
                if stop.is_set():
                    break
                opt.step()
                count[0] += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        thread = threading.Thread(target=worker)
        thread.start()
        started.wait()
        stop.set()  # runs as soon as the worker releases the GIL
        thread.join()
    finally:
        sys.setswitchinterval(old)
    assert count[0] < N


def test_two_optimizers_in_two_threads_match_sequential():
    def make(seed):
        rng = np.random.default_rng(seed)
        params = [nopt.Parameter(rng.standard_normal(s).astype(np.float32)) for s in [(200_000,), (3, 7)]]
        cls, kwargs = _adam()
        return params, cls(params, **kwargs), rng

    def run(params, opt, rng):
        for _ in range(20):
            for p in params:
                p.grad = rng.standard_normal(p.shape).astype(np.float32)
            opt.step()

    sequential = [make(s) for s in (1, 2)]
    for item in sequential:
        run(*item)
    concurrent = [make(s) for s in (1, 2)]
    threads = [threading.Thread(target=run, args=item) for item in concurrent]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (ps, _, _), (pc, _, _) in zip(sequential, concurrent):
        for a, b in zip(ps, pc):
            assert a.tobytes() == b.tobytes()


def test_no_memory_growth_over_many_small_steps():
    cls, kwargs = _adam()
    params = [nopt.Parameter(np.zeros(s)) for s in [(10, 5), (5,)]]
    opt = cls(params, **kwargs)
    grads = [np.full(p.shape, 0.01) for p in params]
    for p, g in zip(params, grads):
        p.grad = g

    def run(n):
        for _ in range(n):
            opt.step()

    run(2000)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        run(100_000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes kept after 100000 steps"


def test_large_step_allocates_no_full_size_temporaries():
    cls, kwargs = _adam()
    p = nopt.Parameter(np.zeros(BIG, dtype=np.float32))
    p.grad = np.ones(BIG, dtype=np.float32)
    opt = cls([p], **kwargs)
    opt.step()  # lazy state allocation happens here, once
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(3):
            opt.step()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < 1024 * 1024, f"a step allocated {peak - base} bytes"
    assert current - base < 64 * 1024


def test_no_rss_growth_over_200_large_steps():
    psutil = pytest.importorskip("psutil")
    cls, kwargs = _adam()
    p = nopt.Parameter(np.zeros(BIG, dtype=np.float32))
    p.grad = np.full(BIG, 1e-3, dtype=np.float32)
    opt = cls([p], **kwargs)
    for _ in range(5):
        opt.step()
    process = psutil.Process()
    before = process.memory_info().rss
    for _ in range(200):
        opt.step()
    grown = process.memory_info().rss - before
    assert grown < 8 * 1024 * 1024, f"RSS grew by {grown} bytes over 200 steps"
