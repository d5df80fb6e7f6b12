"""``mpiexec -n 3 python -m nopt.bench --distributed``: the cost of data parallelism.

One launch measures every rank count from 1 to the launch size: the first
``k`` ranks form a sub-communicator while the others wait. For each model
size (float32 Adam, parameters in one :class:`nopt.ParameterBuffer`):

``step``
    The local optimizer step alone (what one process pays).
``allreduce``
    One ``Allreduce`` of the gradient buffer, and the achieved
    ring-allreduce bandwidth: a ring allreduce must move ``2 (k-1)/k x size``
    bytes in and out of every rank, so ``busbw = 2 (k-1)/k x size / time``.
``allreduce+step``
    ``DistributedOptimizer.step()`` (collective check, averaging, step).
``bucketed`` / ``one bucket``
    Averaging gradients that are *not* one buffer (16 separate arrays, so
    they are packed): 4 MiB buckets with ``Iallreduce`` overlapping the
    packing, against a single bucket. ``overlap`` is the time saved.
``deterministic``
    The rank-ordered reduce-scatter + allgather of ``deterministic=True``.
``ZeRO``
    ``ZeroRedundancyOptimizer`` step time (16 arrays, torch's sorted-greedy
    partition, packed; and ``flat``: a ParameterBuffer sharded as contiguous
    slices, reduced and gathered in place) and its optimizer-state bytes per
    rank (the peak: the largest shard), against the unsharded state.

Times are medians of interleaved samples; each sample is the slowest rank's
time (ranks are synchronised by a barrier before each sample).
"""
import argparse
import json
import sys
import time

import numpy as np
from mpi4py import MPI

from ..adam import Adam
from ..flat import ParameterBuffer
from .optimizer import DistributedOptimizer
from ._reduce import GradReducer
from .zero import ZeroRedundancyOptimizer

__all__ = ["main", "run"]

SIZES = {"1M": 1 << 20, "16M": 16 << 20}


def _state_bytes(state):
    return sum(v.nbytes for s in state.values() for v in s.values() if isinstance(v, np.ndarray))


class _Case:
    """Everything one (size, rank count) measurement needs, allocated once."""

    def __init__(self, comm, n):
        self.comm = comm
        k = comm.Get_size()
        rng = np.random.default_rng(comm.Get_rank())
        self.buffer = ParameterBuffer([n], init=0.0)
        self.buffer.grad[...] = rng.standard_normal(n, dtype=np.float32)
        self.plain = Adam(self.buffer, lr=1e-4)
        self.dist = DistributedOptimizer(Adam(self.buffer, lr=1e-4), comm)
        # 16 separate gradient arrays: packed, in buckets or in one.
        self.pieces = [rng.standard_normal(n // 16, dtype=np.float32) for _ in range(16)]
        self.bucketed = GradReducer(comm, bucket_bytes=4 << 20)
        self.single = GradReducer(comm, bucket_bytes=1 << 40)
        self.ordered = GradReducer(comm, bucket_bytes=1 << 40, deterministic=True)
        zparams = ParameterBuffer([n // 16] * 16, init=0.0)
        for p in zparams:
            p.grad[...] = 1.0
        self.zero = ZeroRedundancyOptimizer(list(zparams), Adam, comm=comm, lr=1e-4)
        self.zparams = zparams
        # The same model sharded as contiguous slices of the flat buffers: no packing.
        fparams = ParameterBuffer([n // 16] * 16, init=0.0)
        fparams.grad[...] = 1.0
        self.zero_flat = ZeroRedundancyOptimizer(fparams, Adam, comm=comm, partition="contiguous", lr=1e-4)
        self.fparams = fparams
        self.work = np.empty(n, dtype=np.float32)
        self.k = k

    def allreduce(self):
        # Out of place: summing in place again and again would overflow.
        self.comm.Allreduce([self.buffer.grad, MPI.FLOAT], [self.work, MPI.FLOAT], op=MPI.SUM)

    def zero_step(self):
        self.zero.step()


def _time(comm, fn, iters):
    comm.Barrier()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    elapsed = (time.perf_counter() - t0) / iters
    return comm.allreduce(elapsed, op=MPI.MAX)


def measure(comm, n, repeat=5, min_time=0.05):
    """Medians (seconds) for one size on ``comm``; every rank of ``comm`` calls it."""
    case = _Case(comm, n)
    peers = {
        "step": case.plain.step,
        "allreduce": case.allreduce,
        "allreduce+step": case.dist.step,
        "bucketed": lambda: case.bucketed.average(case.pieces),
        "one bucket": lambda: case.single.average(case.pieces),
        "deterministic": lambda: case.ordered.average(case.pieces),
        "ZeRO step": case.zero_step,
        "ZeRO flat step": case.zero_flat.step,
    }
    if case.k == 1:
        for name in ("allreduce", "bucketed", "one bucket", "deterministic"):
            peers.pop(name)
    iters = {}
    for name, fn in peers.items():      # warm up, and size the samples
        once = _time(comm, fn, 1)
        iters[name] = comm.bcast(max(1, min(50, int(min_time / max(once, 1e-6)))), root=0)
    samples = {name: [] for name in peers}
    for _ in range(repeat):             # interleaved rounds
        for name, fn in peers.items():
            samples[name].append(_time(comm, fn, iters[name]))
    result = {name: float(np.median(v)) for name, v in samples.items()}
    zero_bytes = comm.allgather(_state_bytes(case.zero.optim.state))
    result["zero_state_bytes_max"] = max(zero_bytes)
    result["zero_state_bytes_sum"] = sum(zero_bytes)
    result["plain_state_bytes"] = _state_bytes(case.plain.state)
    return result


def _idle_barrier(comm):
    # Ranks outside the measured sub-communicator wait here: sleeping, so they
    # take no CPU from the ranks being timed (a plain Barrier may busy-poll).
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(0.001)


def run(sizes=("1M", "16M"), repeat=5, min_time=0.05, comm=None):
    """Measure every rank count 1..N of ``comm``; returns rank 0's rows (others get None)."""
    comm = MPI.COMM_WORLD if comm is None else comm
    rank, world = comm.Get_rank(), comm.Get_size()
    rows = []
    for k in range(1, world + 1):
        sub = comm.Split(0 if rank < k else MPI.UNDEFINED, rank)
        for label in sizes:
            if sub != MPI.COMM_NULL:
                r = measure(sub, SIZES[label] if label in SIZES else _parse_size(label), repeat, min_time)
                r.update(ranks=k, size=label, elements=SIZES.get(label) or _parse_size(label))
                if rank == 0:
                    rows.append(r)
                    _print_row(r)
            _idle_barrier(comm)
        if sub != MPI.COMM_NULL:
            sub.Free()
    return rows if rank == 0 else None


def _parse_size(label):
    units = {"K": 1 << 10, "M": 1 << 20}
    return int(float(label[:-1]) * units[label[-1]]) if label[-1] in units else int(label)


_HEADER = False


def _print_row(r):
    global _HEADER
    ms = lambda key: f"{1e3 * r[key]:8.2f}" if key in r else "       -"   # noqa: E731
    nbytes = 4 * r["elements"]
    k = r["ranks"]
    if not _HEADER:
        print("size  ranks  step ms  allreduce ms  busbw GB/s  allreduce+step ms  comm share  "
              "1 bucket ms  4MiB buckets ms  overlap  determ. ms  ZeRO step ms  ZeRO flat ms  ZeRO state/rank",
              flush=True)
        _HEADER = True
    busbw = f"{2 * (k - 1) / k * nbytes / r['allreduce'] / 1e9:10.2f}" if "allreduce" in r else "         -"
    share = 1 - r["step"] / r["allreduce+step"]
    overlap = (f"{100 * (1 - r['bucketed'] / r['one bucket']):6.0f}%" if "bucketed" in r else "      -")
    print(f"{r['size']:>4}  {k:5d}  {ms('step')}  {ms('allreduce'):>12}  {busbw}  {ms('allreduce+step'):>17}  "
          f"{100 * share:9.0f}%  {ms('one bucket'):>11}  {ms('bucketed'):>15}  {overlap}  {ms('deterministic'):>10}  "
          f"{ms('ZeRO step'):>12}  {ms('ZeRO flat step'):>12}  {r['zero_state_bytes_max'] / 2**20:7.1f} MiB "
          f"({r['zero_state_bytes_max'] / r['plain_state_bytes']:.2f} of {r['plain_state_bytes'] / 2**20:.0f})",
          flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="mpiexec -n N python -m nopt.bench --distributed",
        description="Allreduce, bucketing, deterministic sums and ZeRO on 1..N ranks (float32 Adam).")
    parser.add_argument("--sizes", default="1M,16M", help="comma-separated parameter counts (default 1M,16M)")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved samples (default 5)")
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds per sample (default 0.05)")
    parser.add_argument("--threads", type=int, default=1, help="kernel threads per rank (default 1)")
    parser.add_argument("--json", metavar="FILE", help="rank 0 also writes the rows as JSON")
    args = parser.parse_args(argv)
    from .. import _threads

    _threads.set_num_threads(args.threads)
    comm = MPI.COMM_WORLD
    if comm.Get_rank() == 0:
        print(f"nopt.bench --distributed: {comm.Get_size()} rank(s) launched, float32 Adam, "
              f"{args.threads} thread(s) per rank, {MPI.Get_library_version().splitlines()[0].strip()}",
              flush=True)
    rows = run([s.strip() for s in args.sizes.split(",") if s.strip()], args.repeat, args.min_time, comm)
    if rows is not None and args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
