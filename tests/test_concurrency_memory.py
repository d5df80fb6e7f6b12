"""Kernels release the GIL; optimizers in two threads; no leaks, no full-size temporaries."""
import gc
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
    """While one thread runs long steps, the main thread keeps running Python."""
    p = nopt.Parameter(np.zeros(BIG, dtype=np.float32))
    p.grad = np.ones(BIG, dtype=np.float32)
    opt = nopt.SGD([p], lr=0.1, momentum=0.9)
    opt.step()  # allocate state outside the timed part
    durations, done = [], threading.Event()

    def worker():
        with nopt.num_threads(1):
            for _ in range(3):
                t0 = time.perf_counter()
                opt.step()
                durations.append(time.perf_counter() - t0)
        done.set()

    thread = threading.Thread(target=worker)
    stamps = []
    thread.start()
    while not done.is_set():
        stamps.append(time.perf_counter())
    thread.join()
    gaps = np.diff(stamps)
    step = min(durations)
    # Holding the GIL through a step would stall this loop for a whole step.
    assert len(stamps) > 1000
    assert gaps.max() < 0.5 * step + 0.005, (gaps.max(), step)


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
