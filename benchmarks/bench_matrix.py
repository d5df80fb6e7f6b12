"""asv benchmarks: one step of the matrix optimizers (Adafactor factored, Muon) next to torch.

The cases are single float32 matrices: Adafactor at 4096x4096 (its factored
second moment) and Muon at 1024x1024 and 4096x4096 (Newton-Schulz: three
matrix products per iteration, five iterations). ``peer`` is ``nopt`` or
``torch`` (torch.optim with ``foreach=False``; Muon has no other path).
nopt's, torch's and NumPy's BLAS threads are pinned to ``threads``.

Run directly for the side-by-side figures (interleaved rounds, medians,
torch time / nopt time)::

    python benchmarks/bench_matrix.py [--threads 1,2] [--repeat 5]

Note: torch's Muon runs Newton-Schulz in bfloat16; nopt's runs it in the
parameter's dtype (float32 here), so it does about the same number of
floating-point operations at a different precision.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

try:
    import nopt
except ImportError:  # run from a checkout: python benchmarks/bench_matrix.py
    if __name__ != "__main__":
        raise
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import nopt

CASES = [("Adafactor", (4096, 4096)), ("Muon", (1024, 1024)), ("Muon", (4096, 4096))]
KWARGS = {"Adafactor": dict(lr=1e-2), "Muon": dict(lr=1e-3)}


def _values(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape, dtype=np.float32),
            rng.standard_normal(shape, dtype=np.float32) * np.float32(1e-2))


def _make(name, shape, peer):
    value, grad = _values(shape)
    if peer == "nopt":
        param = nopt.Parameter(value)
        param.grad = grad
        opt = getattr(nopt, name)([param], **KWARGS[name])
    else:
        import torch

        param = torch.from_numpy(value).requires_grad_(True)
        param.grad = torch.from_numpy(grad)
        extra = {"foreach": False} if name == "Adafactor" else {}
        opt = getattr(torch.optim, name)([param], **KWARGS[name], **extra)
    opt.step()   # state initialisation, outside the timing
    return opt


def pin_threads(n):
    """nopt, torch and BLAS threads to ``n``; returns the threadpoolctl limiter (or None)."""
    nopt.set_num_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(n, user_api="blas")


class MatrixStep:
    params = ([f"{name}-{shape[0]}x{shape[1]}" for name, shape in CASES], ["nopt", "torch"], [1, 2])
    param_names = ["case", "peer", "threads"]
    timeout = 600

    def setup(self, case, peer, threads):
        name, size = case.split("-")
        rows, cols = (int(x) for x in size.split("x"))
        if peer == "torch":
            try:
                import torch  # noqa: F401
            except ImportError:
                raise NotImplementedError("torch is not installed") from None
        self.limiter = pin_threads(threads)
        self.opt = _make(name, (rows, cols), peer)

    def teardown(self, case, peer, threads):
        if self.limiter is not None:
            self.limiter.restore_original_limits()

    def time_step(self, case, peer, threads):
        self.opt.step()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="2")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cases", default=",".join(f"{n}-{s[0]}x{s[1]}" for n, s in CASES))
    args = parser.parse_args(argv)
    import torch  # the comparison needs it

    print(f"{'case':22s} {'thr':>3s} {'nopt':>10s} {'torch':>10s} {'torch/nopt':>10s}")
    for n in [int(t) for t in args.threads.split(",")]:
        limiter = pin_threads(n)
        try:
            for case in args.cases.split(","):
                name, size = case.split("-")
                shape = tuple(int(x) for x in size.split("x"))
                opts = {"nopt": _make(name, shape, "nopt"), "torch": _make(name, shape, "torch")}
                samples = {peer: [] for peer in opts}
                for r in range(args.repeat):
                    for peer in (["nopt", "torch"] if r % 2 == 0 else ["torch", "nopt"]):
                        t0 = time.perf_counter()
                        opts[peer].step()
                        samples[peer].append(time.perf_counter() - t0)
                med = {peer: statistics.median(s) for peer, s in samples.items()}
                print(f"{case:22s} {n:3d} {med['nopt'] * 1e3:8.1f}ms {med['torch'] * 1e3:8.1f}ms "
                      f"{med['torch'] / med['nopt']:9.2f}x", flush=True)
                del opts
        finally:
            if limiter is not None:
                limiter.restore_original_limits()
    del torch


if __name__ == "__main__":
    main()
