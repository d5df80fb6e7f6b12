"""``python -m nopt.bench``: nopt against NumPy, torch.optim and the memory roofline.

Every measurement runs side by side in one process, interleaved round by
round (so a noisy, shared machine slows every peer alike), and is reported
as the median time per step. Peers:

``nopt``
    The nopt optimizer (flat storage for ``-flat`` cases).
``roofline``
    :func:`nopt._kernels.helpers.stream` over a work table of the same
    layout (one buffer per stream for ``-flat`` cases, else one array per
    array and stream; same threads, same schedule), in buffers at staggered
    page offsets (no 4K aliasing between streams): it reads and writes the
    same streams as the update with trivial arithmetic, so its time is the
    update's floor when memory is the limit. ``% roof`` = roofline time /
    nopt time.
``numpy``
    The same rule in plain NumPy (:mod:`nopt._reference`, the tests' second oracle too).
``torch-loop`` / ``torch-foreach`` / ``torch-fused``
    ``torch.optim`` with ``foreach=False`` / ``foreach=True`` / ``fused=True``
    (fused only where torch has a CPU kernel); skipped without torch.

Cases are ``{arrays}x{elements}[-flat][-f64]`` (``K``/``M`` = 2**10/2**20):
``1x16M`` is one float32 array of 16M elements, ``2000x1000-flat`` 2000
arrays of 1000 in one flat buffer, ``1x8M-f64`` float64.

Bytes moved per element (``BYTES``), the roofline's definition, the same
for every rule (:class:`nopt._registry.Entry`): each pass over memory that
the algorithm needs is counted, a stream read once counts once, a stream
written in place twice (read, then written back). A rule that must finish
a reduction (a norm, a global sum) before it can update makes one pass for
the reduction and one for the update: at sizes beyond the caches both read
memory, so both are counted, and the roofline peer runs both. float32
figures; float64 doubles them.

=============  ==============================================  ===========  ======
optimizer      streams per pass (read; written)                passes       B/elt
=============  ==============================================  ===========  ======
SGD            p, g, momentum_buffer; p, buf                   (3,2)          20
Adam, AdamW    p, g, exp_avg, exp_avg_sq; p, m, v              (4,3)          28
Adamax         p, g, exp_avg, exp_inf                          (4,3)          28
NAdam, RAdam   p, g, exp_avg, exp_avg_sq                       (4,3)          28
Adagrad        p, g, sum                                       (3,2)          20
Adadelta       p, g, square_avg, acc_delta                     (4,3)          28
RMSprop        p, g, square_avg                                (3,2)          20
Rprop          p, g, prev, step_size                           (4,3)          28
ASGD           p, g, ax (*)                                    (3,2)          20
Adafactor      p, g, v; v | p, g, v; p (**)                    (3,1)+(3,1)    32
Lion           p, g, exp_avg                                   (3,2)          20
AdaBelief      p, g, exp_avg, exp_avg_var                      (4,3)          28
Adan           p, g, m, diff, n, pre_grad                      (6,5)          44
ScheduleFree   y, g, z (SGD); y, g, z, v (AdamW)               (3,2)/(4,3)  20/28
LAMB           p, g, m, v; m, v | p, m, v; p                   (4,2)+(3,1)    40
LARS           p, g; - | p, g, buf; p, buf                     (2,0)+(3,2)    28
Prodigy        p, g, p0, s; s | p, g, m, v; p, m, v (***)      (4,1)+(4,3)    48
=============  ==============================================  ===========  ======

(*) ASGD writes ``ax`` without reading it while ``mu == 1``; a written
stream costs a read too (write-allocate), so it counts as read and written.
(**) Adafactor (a vector: the cases here are 1-D) needs RMS(update) before
it can update. Its 2-D (factored) case and Muon are timed by
``benchmarks/bench_matrix.py``.
(***) Prodigy's ``d`` comes from two sums over every parameter of every
group, so the sums are one pass and the update, which needs the new ``d``,
another; the moments (weighted by the old ``d``) wait for the second pass,
so that the first reads only what the sums need (its NumPy peer is
:class:`nopt._reference.Prodigy`).
The figures are for the options benchmarked (``OPTIMIZERS``, the
registry :data:`nopt._registry.RULES`: SGD with momentum, the others at
torch's defaults).

Examples
--------
::

    python -m nopt.bench                                   # every optimizer, every case
    python -m nopt.bench --optimizers SGD,Adam --cases 1x16M,1x100 --threads 1,2
    python -m nopt.bench --quick --json out.json           # tiny cases, few repeats
    # The rules beyond torch.optim: % of roofline at 1x16M, x vs NumPy at 2000x1000
    python -m nopt.bench --beyond --threads 1
"""
import argparse
import dataclasses
import gc
import json
import math
import os
import platform
import re
import statistics
import sys
import time

import numpy as np

from ._registry import RULES

__all__ = ["OPTIMIZERS", "BYTES", "DEFAULT_CASES", "QUICK_CASES", "Case", "parse_case", "run", "main"]


# name -> nopt._registry.Entry: every optimizer the bench knows (kwargs, streams, NumPy peer).
OPTIMIZERS = RULES

# Bytes per float32 element of each optimizer's step (float64: twice).
BYTES = {name: rule.bytes_per_element for name, rule in OPTIMIZERS.items()}

DEFAULT_CASES = ["1x16M", "1x1M", "2000x1000", "2000x1000-flat", "1x8M-f64", "1x100"]
# --beyond: the rules beyond torch.optim, at the two cases their targets name
# (% of the roofline at 1x16M float32, x the NumPy reference at 2000x1000).
BEYOND = [name for name, entry in OPTIMIZERS.items() if not entry.in_torch]
BEYOND_CASES = ["1x16M", "2000x1000"]
BEYOND_PEERS = ["nopt", "roofline", "numpy"]
QUICK_CASES = ["1x100", "1x64K", "20x1000-flat"]
PEERS = ["nopt", "roofline", "numpy", "torch-loop", "torch-foreach", "torch-fused"]
TORCH_HINT = ('"-" under torch-*: torch is not installed; to compare with torch.optim, '
              "pip install torch==2.13.0 (the CPU build; never a version range)")


@dataclasses.dataclass(frozen=True)
class Case:
    """``n_arrays`` arrays of ``size`` elements of ``dtype``, optionally in one flat buffer."""

    name: str
    n_arrays: int
    size: int
    dtype: type
    flat: bool

    @property
    def n_elements(self):
        return self.n_arrays * self.size


_CASE = re.compile(r"^(\d+)x(\d+)([KkMm]?)((?:-flat|-f64|-f32)*)$")


def parse_case(name):
    """Parse ``{arrays}x{elements}[K|M][-flat][-f64]`` into a :class:`Case`."""
    m = _CASE.match(name.strip())
    if not m:
        raise ValueError(
            f"bad case {name!r}: expected {{arrays}}x{{elements}}[K|M][-flat][-f64], e.g. 1x16M, 2000x1000-flat")
    n_arrays, size = int(m.group(1)), int(m.group(2)) * {"": 1, "k": 2**10, "m": 2**20}[m.group(3).lower()]
    flags = m.group(4)
    if n_arrays < 1 or size < 1:
        raise ValueError(f"bad case {name!r}: need at least one array of one element")
    return Case(name.strip(), n_arrays, size, np.float64 if "-f64" in flags else np.float32, "-flat" in flags)


# ---------------------------------------------------------------- peers
def _make_values(case, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(case.size, dtype=case.dtype) for _ in range(case.n_arrays)]
    grads = [rng.standard_normal(case.size, dtype=case.dtype) * case.dtype(1e-2) for _ in range(case.n_arrays)]
    return params, grads


def _nopt_peer(name, spec, case, params, grads):
    import nopt

    cls = getattr(nopt, name)
    if case.flat:
        model = nopt.ParameterBuffer.from_arrays(params, dtype=case.dtype)
        for p, g in zip(model, grads):
            p.grad[...] = g
        opt = cls(model, **spec.bench_kwargs)
    else:
        model = [nopt.Parameter(p.copy()) for p in params]
        for p, g in zip(model, grads):
            p.grad = g
        opt = cls(model, **spec.bench_kwargs)
    return opt.step, (model, opt)


def _roofline_peer(spec, case):
    """The stream kernel over arrays laid out like the nopt peer's."""
    from ._kernels import _plan, helpers as roofline
    from .optimizer import _aligned_zeros

    n = case.n_elements
    n_streams = max(r for r, _ in spec.all_passes)
    # Buffers at staggered page offsets (_aligned_zeros): no 4K aliasing
    # between streams, the best layout memory allows.
    if case.flat:
        buffers = [_aligned_zeros(n, case.dtype) for _ in range(n_streams)]
        for b in buffers:
            b.fill(1)  # touch every page: untouched zero pages read as fast as a cache
        streams = [[b[k * case.size:(k + 1) * case.size] for k in range(case.n_arrays)] for b in buffers]
    else:
        # Separate arrays, one allocation each, like the nopt peer's.
        streams = [[_aligned_zeros(case.size, case.dtype) for _ in range(case.n_arrays)]
                    for _ in range(n_streams)]
        for s in streams:
            for a in s:
                a.fill(1)  # (touch every page)
    is_double = case.dtype == np.float64

    def step():
        # make_table is part of the step, as it is for nopt (per-array cost).
        ptrs, chunks, n_threads = _plan.make_table(streams)
        for n_read, n_write in spec.all_passes:  # every pass of the step, reductions too
            roofline.stream(ptrs, chunks, is_double, n_threads, n_read, n_write)

    return step, streams


def _numpy_peer(name, spec, case, params, grads):
    from . import _reference

    arrays = [p.copy() for p in params]
    opt = _reference.make(name, arrays, grads, **spec.bench_kwargs)
    return opt.step, (arrays, opt)


def _torch_peer(name, spec, case, params, grads, variant):
    import torch

    tparams = []
    for p, g in zip(params, grads):
        t = torch.from_numpy(p.copy())
        t.requires_grad_(True)
        t.grad = torch.from_numpy(g)
        tparams.append(t)
    flag = {"torch-loop": dict(foreach=False), "torch-foreach": dict(foreach=True),
            "torch-fused": dict(fused=True)}[variant]
    opt = getattr(torch.optim, name)(tparams, **spec.bench_kwargs, **flag)

    def step():
        opt.step()

    return step, (tparams, opt)


def _build_peers(name, spec, case, peers):
    """({peer: step callable}, {peer: why skipped}, objects to keep alive).

    The nopt and roofline peers must build; a NumPy or torch peer that cannot
    (no torch, no fused kernel) is skipped with the reason.
    """
    params, grads = _make_values(case)
    steps, skipped, keep = {}, {}, []
    for peer in peers:
        if peer == "nopt":
            step, obj = _nopt_peer(name, spec, case, params, grads)
        elif peer == "roofline":
            step, obj = _roofline_peer(spec, case)
        else:
            if peer.startswith("torch") and not spec.in_torch:
                skipped[peer] = "torch.optim has no such optimizer"
                continue
            if peer == "torch-fused" and not spec.torch_fused:
                skipped[peer] = "torch has no fused CPU kernel for it"
                continue
            try:
                if peer == "numpy":
                    step, obj = _numpy_peer(name, spec, case, params, grads)
                else:
                    step, obj = _torch_peer(name, spec, case, params, grads, peer)
                step()
            except Exception as exc:  # no torch, or this torch cannot: report and go on
                skipped[peer] = f"{type(exc).__name__}: {exc}"
                continue
        step()  # first step: state initialisation, outside the timing
        steps[peer] = step
        keep.append(obj)
    return steps, skipped, keep


# ---------------------------------------------------------------- timing
def _calibrate(step, min_time):
    """Steps per sample so that one sample takes about ``min_time`` seconds."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time / 4 or n >= 1 << 20:
            return max(1, int(math.ceil(n * min_time / max(elapsed, 1e-9))))
        n *= 4


def _sample(step, n):
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


def _time_peers(steps, repeat, min_time):
    """Interleaved samples: {peer: [seconds per step, ...]}."""
    counts = {peer: _calibrate(step, min_time) for peer, step in steps.items()}
    samples = {peer: [] for peer in steps}
    order = list(steps)
    for r in range(repeat):
        # Rotate the order every round, so no peer always follows the same one.
        for peer in order[r % len(order):] + order[:r % len(order)]:
            samples[peer].append(_sample(steps[peer], counts[peer]))
    return samples, counts


# ---------------------------------------------------------------- running
def _set_threads(n):
    import nopt

    nopt.set_num_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


def _get_torch_threads():
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return None


def run(optimizers=None, cases=None, threads=None, repeat=7, min_time=0.1, peers=None, log=print):
    """Run the benchmark; return a JSON-ready dict.

    Parameters
    ----------
    optimizers : list of str, optional
        Names in :data:`OPTIMIZERS`; default every one nopt has.
    cases : list of str, optional
        Case names (see :func:`parse_case`); default :data:`DEFAULT_CASES`.
    threads : list of int, optional
        Thread counts to run each case with; default nopt's current count.
    repeat : int
        Interleaved samples per peer; the median is reported.
    min_time : float
        Seconds per sample (the steps per sample are calibrated to it).
    peers : list of str, optional
        Subset of :data:`PEERS`.
    log : callable
        Called with each table line as it is ready (None: silent).
    """
    import nopt

    if optimizers is None:
        optimizers = [n for n in OPTIMIZERS if _has(nopt, n)]
    cases = [parse_case(c) for c in (cases or DEFAULT_CASES)]
    threads = list(threads or [nopt.get_num_threads()])
    peers = list(peers or PEERS)
    for p in peers:
        if p not in PEERS:
            raise ValueError(f"unknown peer {p!r}; have {PEERS}")
    for name in optimizers:
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}; have {sorted(OPTIMIZERS)}")

    log = log or (lambda *a, **k: None)
    result = {"meta": _meta(repeat, min_time), "results": [], "skipped": []}
    saved = (nopt.get_num_threads(), _get_torch_threads())
    log(_header())
    blas = _quiet_blas()
    try:
        for name in optimizers:
            if not _has(nopt, name):
                result["skipped"].append({"optimizer": name, "reason": f"nopt has no {name} yet"})
                log(f"{name:9s} skipped: nopt has no {name} yet")
                continue
            spec = OPTIMIZERS[name]
            for case in cases:
                steps, skipped, keep = _build_peers(name, spec, case, peers)
                for n in threads:
                    _set_threads(n)
                    samples, counts = _time_peers(steps, repeat, min_time)
                    entry = _entry(name, spec, case, n, samples, counts, skipped)
                    result["results"].append(entry)
                    log(_row(entry))
                del steps, keep
                gc.collect()
    finally:
        nopt.set_num_threads(saved[0])
        if saved[1] is not None:
            _set_threads_torch(saved[1])
        if blas is not None:
            blas.restore_original_limits()
    if result["meta"]["torch"] is None and any(p.startswith("torch") for p in peers):
        log(TORCH_HINT)
    result["scaling"] = _scaling(result["results"])
    for line in _scaling_lines(result["scaling"]):
        log(line)
    return result


def _quiet_blas():
    """Limit NumPy's BLAS to one thread while timing (no peer uses BLAS, but
    OpenBLAS's idle worker threads can spin and take a core from the peers)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(1, user_api="blas")


def _set_threads_torch(n):
    import torch

    torch.set_num_threads(n)


def _has(nopt, name):
    try:
        getattr(nopt, name)
        return True
    except (AttributeError, ImportError):
        return False


def _entry(name, spec, case, n_threads, samples, counts, skipped):
    itemsize = np.dtype(case.dtype).itemsize
    bytes_per_step = spec.streams * itemsize * case.n_elements
    peers = {}
    for peer, s in samples.items():
        med = statistics.median(s)
        peers[peer] = {
            "median_s": med,
            "min_s": min(s),
            "samples_s": s,
            "steps_per_sample": counts[peer],
            "gbps": bytes_per_step / med / 1e9,
        }
    entry = {
        "optimizer": name,
        "case": case.name,
        "n_arrays": case.n_arrays,
        "n_elements": case.n_elements,
        "dtype": np.dtype(case.dtype).name,
        "flat": case.flat,
        "threads": n_threads,
        "bytes_per_element": spec.streams * itemsize,
        "bytes_per_step": bytes_per_step,
        "peers": peers,
        "skipped": skipped,
    }
    if "nopt" in peers:
        t = peers["nopt"]["median_s"]
        if "roofline" in peers:
            entry["roofline_pct"] = 100.0 * peers["roofline"]["median_s"] / t
        entry["speedup"] = {p: v["median_s"] / t for p, v in peers.items() if p not in ("nopt", "roofline")}
    return entry


def _scaling(results):
    """nopt's (and the roofline's) 1-thread time over its n-thread time, per optimizer and case."""
    out = []
    by_key = {}
    for e in results:
        by_key.setdefault((e["optimizer"], e["case"]), {})[e["threads"]] = e
    for (name, case), per in by_key.items():
        if 1 not in per:
            continue
        for n, e in sorted(per.items()):
            if n == 1:
                continue
            row = {"optimizer": name, "case": case, "threads": n}
            for peer in ("nopt", "roofline"):
                if peer in e["peers"] and peer in per[1]["peers"]:
                    row[peer] = per[1]["peers"][peer]["median_s"] / e["peers"][peer]["median_s"]
            out.append(row)
    return out


# ---------------------------------------------------------------- output
def _fmt_time(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f}us"
    return f"{s * 1e3:.2f}ms"


def _header():
    cols = ["optimizer", "case", "thr", "nopt", "GB/s", "% roof"] + [
        f"{p} (x)" for p in PEERS[2:]
    ]
    return ("{:9s} {:15s} {:>3s} {:>9s} {:>6s} {:>6s}" + " {:>17s}" * 4).format(*cols)


def _row(e):
    nopt_peer = e["peers"].get("nopt")
    cells = [
        e["optimizer"], e["case"], str(e["threads"]),
        _fmt_time(nopt_peer["median_s"]) if nopt_peer else "-",
        f"{nopt_peer['gbps']:.1f}" if nopt_peer else "-",
        f"{e['roofline_pct']:.0f}%" if "roofline_pct" in e else "-",
    ]
    for peer in PEERS[2:]:
        if peer in e["peers"]:
            x = e.get("speedup", {}).get(peer)
            cells.append(f"{_fmt_time(e['peers'][peer]['median_s'])} ({x:.2f}x)" if x else
                         _fmt_time(e["peers"][peer]["median_s"]))
        else:
            cells.append("-")
    return ("{:9s} {:15s} {:>3s} {:>9s} {:>6s} {:>6s}" + " {:>17s}" * 4).format(*cells)


def _scaling_lines(scaling):
    if not scaling:
        return []
    lines = ["", "thread scaling (1-thread time / n-thread time):"]
    for r in scaling:
        parts = [f"{p} {r[p]:.2f}x" for p in ("nopt", "roofline") if p in r]
        lines.append(f"  {r['optimizer']:9s} {r['case']:15s} {r['threads']} threads: " + ", ".join(parts))
    return lines


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meta(repeat, min_time):
    import nopt

    from ._kernels import _plan

    meta = {
        "nopt_config": nopt.get_config(),
        "simd": _plan.SIMD_LEVEL,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "repeat": repeat,
        "min_time_s": min_time,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "bytes_per_element_f32": dict(BYTES),
    }
    try:
        import torch

        meta["torch"] = torch.__version__
    except ImportError:
        meta["torch"] = None
    return meta


def _csv(text, convert=str):
    return [convert(x) for x in text.split(",") if x.strip()] if text else None


def main(argv=None):
    """Command-line entry point: ``python -m nopt.bench --help``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--distributed" in argv:  # under mpiexec, its own options: nopt/distributed/bench.py
        try:
            from .distributed.bench import main as distributed_main
        except ImportError as exc:
            raise SystemExit(f"--distributed: {exc}") from None
        return distributed_main([a for a in argv if a != "--distributed"])
    parser = argparse.ArgumentParser(
        prog="python -m nopt.bench",
        description="Time nopt's optimizers against NumPy, torch.optim and the memory roofline.",
    )
    parser.add_argument("--optimizers", help="comma-separated names (default: every one nopt has)")
    parser.add_argument("--cases", help=f"comma-separated cases (default: {','.join(DEFAULT_CASES)}; "
                                        f"with --quick: {','.join(QUICK_CASES)})")
    parser.add_argument("--threads", help="comma-separated thread counts, e.g. 1,2 (default: nopt's current)")
    parser.add_argument("--repeat", type=int, help="interleaved samples per peer (default 7; 3 with --quick)")
    parser.add_argument("--min-time", type=float, help="seconds per sample (default 0.1; 0.005 with --quick)")
    parser.add_argument("--peers", help=f"comma-separated subset of {','.join(PEERS)}")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--quick", action="store_true", help="tiny cases and few, short samples (a smoke run)")
    parser.add_argument("--beyond", action="store_true",
                        help=f"the rules beyond torch.optim ({','.join(BEYOND)}) at "
                             f"{','.join(BEYOND_CASES)} against the roofline and NumPy (the "
                             "figures of the README's table; other options still apply)")
    parser.add_argument("--distributed", action="store_true",
                        help="allreduce and ZeRO costs: mpiexec -n 3 python -m nopt.bench --distributed")
    args = parser.parse_args(argv)

    optimizers, peers = _csv(args.optimizers), _csv(args.peers)
    if args.beyond:
        optimizers = optimizers or BEYOND
        peers = peers or BEYOND_PEERS
        args.cases = args.cases or ",".join(BEYOND_CASES)
    cases = _csv(args.cases) or (QUICK_CASES if args.quick else DEFAULT_CASES)
    repeat = args.repeat or (3 if args.quick else 7)
    min_time = args.min_time or (0.005 if args.quick else 0.1)
    try:
        threads = _csv(args.threads, int)
        for c in cases:
            parse_case(c)
    except ValueError as exc:
        parser.error(str(exc))
    result = run(
        optimizers=optimizers, cases=cases, threads=threads, repeat=repeat,
        min_time=min_time, peers=peers,
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
