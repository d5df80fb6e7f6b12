"""asv benchmarks: one optimizer step, over optimizer x dtype x layout x threads.

The optimizers are the registry's (``nopt._registry.RULES``, with their
bench options and memory streams; an older nopt's ``nopt.bench.OPTIMIZERS``).
Names resolve through ``getattr(nopt, name)``; a name nopt does not have
raises NotImplementedError in ``setup``, which asv reports as skipped.

The figures the issue's targets refer to (ratios to torch, % of the
measured roofline) come from ``python -m nopt.bench``, which runs the peers
side by side; these benchmarks track nopt's own speed across commits.
"""
import time

import numpy as np

import nopt

try:  # the registry: every elementwise optimizer, its bench options and streams
    from nopt._registry import RULES as _SPECS
except ImportError:  # an older nopt: the bench's own table, or nothing
    try:
        from nopt.bench import OPTIMIZERS as _SPECS
    except ImportError:
        _SPECS = {}

NAMES = list(_SPECS) or ["SGD"]


def _kwargs(spec):
    return dict(getattr(spec, "bench_kwargs", None) or getattr(spec, "kwargs", {}))


# Hyperparameters per optimizer (SGD with momentum, the rest at their defaults).
_KWARGS = {name: _kwargs(spec) for name, spec in _SPECS.items()} or {"SGD": dict(lr=1e-3, momentum=0.9)}
# (streams read, streams written) per element of each pass of a step, for GB/s
# and the roofline (every pass: a rule's reductions too; see nopt._registry.Entry).
_PASSES = {name: tuple(getattr(spec, "all_passes", ((spec.n_read, spec.n_write),)))
           for name, spec in _SPECS.items()}


def _optimizer_class(name):
    try:
        return getattr(nopt, name)
    except (AttributeError, ImportError):
        raise NotImplementedError(f"nopt has no {name} yet") from None


def _model(n_arrays, size, dtype, layout, seed=0):
    """Parameters with gradients: separate arrays, or views into one flat buffer."""
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(size, dtype=dtype) for _ in range(n_arrays)]
    grads = [rng.standard_normal(size, dtype=dtype) * dtype(1e-2) for _ in range(n_arrays)]
    if layout == "flat":
        if not hasattr(nopt, "ParameterBuffer"):
            raise NotImplementedError("nopt has no ParameterBuffer yet")
        params = nopt.ParameterBuffer.from_arrays(values)
        for p, g in zip(params, grads):
            p.grad[...] = g
        return list(params), params
    params = [nopt.Parameter(v) for v in values]
    for p, g in zip(params, grads):
        p.grad = g
    return params, None


def _bytes_per_element(name, dtype):
    return sum(r + w for r, w in _PASSES.get(name, ((4, 3),))) * np.dtype(dtype).itemsize


class _Threads:
    """Set nopt's thread count in setup and restore it in teardown."""

    def _set_threads(self, n):
        self._saved_threads = nopt.get_num_threads()
        nopt.set_num_threads(n)

    def teardown(self, *args):
        if hasattr(self, "_saved_threads"):
            nopt.set_num_threads(self._saved_threads)


class Step(_Threads):
    """A 2000 x 1000 model (2M elements): separate arrays vs one flat buffer.

    Its bandwidth is ``bytes_per_step / time_step``; the GB/s and roofline
    tracks are on :class:`LargeStep`, where the step is memory-bound.
    """

    params = (NAMES, ["float32", "float64"], ["separate", "flat"], [1, 2])
    param_names = ["optimizer", "dtype", "layout", "threads"]
    timeout = 120

    N_ARRAYS, SIZE = 2000, 1000

    def setup(self, name, dtype, layout, threads):
        cls = _optimizer_class(name)
        dtype = np.dtype(dtype).type
        self.params_, self._keep = _model(self.N_ARRAYS, self.SIZE, dtype, layout)
        self.opt = cls(self.params_, **_KWARGS.get(name, {}))
        self._set_threads(threads)
        self.opt.step()  # state initialisation, outside the timing
        self.bytes_per_step = _bytes_per_element(name, dtype) * self.N_ARRAYS * self.SIZE

    def time_step(self, *args):
        self.opt.step()


class StepMemory:
    """Peak memory of the 2000 x 1000 model's step: per optimizer only.

    The state an optimizer keeps does not depend on the thread count or the
    layout, and float64 doubles float32: one run per optimizer keeps
    ``asv run --quick`` short (each benchmark and parameter set is a run).
    """

    params = NAMES
    param_names = ["optimizer"]

    def setup(self, name):
        cls = _optimizer_class(name)
        self.params_, _ = _model(Step.N_ARRAYS, Step.SIZE, np.float32, "separate")
        self.opt = cls(self.params_, **_KWARGS.get(name, {}))

    def peakmem_step(self, name):
        self.opt.step()


class LargeStep(_Threads):
    """One float32 array of 16M elements: memory-bound."""

    params = (NAMES, [1, 2])
    param_names = ["optimizer", "threads"]
    timeout = 180
    SIZE = 16 * 2**20

    def setup(self, name, threads):
        cls = _optimizer_class(name)
        self.params_, _ = _model(1, self.SIZE, np.float32, "separate")
        self.opt = cls(self.params_, **_KWARGS.get(name, {}))
        self._set_threads(threads)
        self.opt.step()
        self.bytes_per_step = _bytes_per_element(name, np.float32) * self.SIZE
        self.name = name

    def time_step(self, *args):
        self.opt.step()

    def track_gbps(self, *args):
        steps, t0 = 0, time.perf_counter()
        while steps < 3 or time.perf_counter() - t0 < 0.3:
            self.opt.step()
            steps += 1
        return self.bytes_per_step * steps / (time.perf_counter() - t0) / 1e9

    track_gbps.unit = "GB/s"

    def track_roofline_pct(self, *args):
        """nopt's step time as % of the roofline kernel's over the same arrays."""
        try:
            from nopt._kernels import _plan
            try:
                from nopt._kernels import helpers as roofline   # the rule layer's module
            except ImportError:
                from nopt._kernels import roofline              # before it
        except ImportError:
            raise NotImplementedError("no roofline kernel in this nopt") from None
        passes = _PASSES.get(self.name, ((4, 3),))
        n_read = max(r for r, _ in passes)
        try:  # staggered page offsets: no 4K aliasing between the streams
            from nopt.optimizer import _aligned_zeros
        except ImportError:
            _aligned_zeros = np.zeros
        streams = [[_aligned_zeros(self.SIZE, np.float32)] for _ in range(n_read)]
        for (a,) in streams:
            a.fill(1)

        def roof():
            ptrs, chunks, n_threads = _plan.make_table(streams)
            for r, w in passes:
                roofline.stream(ptrs, chunks, False, n_threads, r, w)

        roof()
        t_roof, t_step = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            roof()
            t_roof.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            self.opt.step()
            t_step.append(time.perf_counter() - t0)
        return 100.0 * float(np.median(t_roof)) / float(np.median(t_step))

    track_roofline_pct.unit = "%"


class SmallStep:
    """One float32 array of 100 elements: the fixed cost of a step."""

    params = NAMES
    param_names = ["optimizer"]

    def setup(self, name):
        cls = _optimizer_class(name)
        self.params_, _ = _model(1, 100, np.float32, "separate")
        self.opt = cls(self.params_, **_KWARGS.get(name, {}))
        self.opt.step()

    def time_step(self, name):
        self.opt.step()


class SubnormalState(_Threads):
    """Moments that decayed into subnormals must not slow the step down.

    The state is refilled before every timed step (``number = 1``) with
    normal or subnormal values and the gradients are zero, the case where
    moments decay towards zero. The kernels flush subnormals to zero, so the
    two times should match; ``numpy_subnormal`` shows the cost nopt avoids.
    """

    params = (["SGD", "RMSprop", "Adam"], ["normal", "subnormal"], [1, 2])
    param_names = ["optimizer", "state", "threads"]
    number = 1
    repeat = (5, 20, 10.0)
    SIZE = 4 * 2**20
    # Three rules with one, one and two state streams (a chosen subset: the
    # cost being measured is the subnormal arithmetic, not the rule).
    KWARGS = {"SGD": dict(lr=1e-3, momentum=0.9), "RMSprop": dict(lr=1e-3), "Adam": dict(lr=1e-3)}

    def setup(self, name, state, threads):
        cls = _optimizer_class(name)
        self.p = nopt.Parameter(np.ones(self.SIZE, np.float32))
        self.p.grad = np.ones(self.SIZE, np.float32)
        self.opt = cls([self.p], **self.KWARGS[name])
        self.opt.step()  # creates the state
        self.p.grad[...] = 0
        value = np.float32(1e-40) if state == "subnormal" else np.float32(1e-3)
        for v in self.opt.state[self.p].values():
            if isinstance(v, np.ndarray) and v.shape == self.p.shape:
                v.fill(value)
        self.numpy_state = np.full(self.SIZE, value, np.float32)
        self._set_threads(threads)

    def time_step(self, *args):
        self.opt.step()

    def time_numpy_decay(self, *args):
        # The same decay done by NumPy, which does not flush subnormals.
        self.numpy_state *= np.float32(0.9)
