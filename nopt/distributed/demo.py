"""``mpiexec -n 2 nopt demo --distributed``: the demo, data-parallel over MPI ranks.

Every rank holds the model; each global minibatch (the same shuffled order on
every rank) is split across the ranks, each rank computes the gradient of
its slice, and :class:`DistributedOptimizer` averages them before the step.
The trajectory is that of one process on the whole minibatch (up to the
averaging of per-slice means), so the accuracy is the same. Only rank 0
prints.
"""
import argparse
import sys
import time

import numpy as np
from mpi4py import MPI

from .. import _threads
from ..models import MLP, SoftmaxRegression, load_digits, train_test_split
from .optimizer import DistributedOptimizer
from .sync import broadcast_parameters, check_synced
from .zero import ZeroRedundancyOptimizer

__all__ = ["main", "train"]


def _say(comm, *args, **kwargs):
    if comm.Get_rank() == 0:
        print(*args, **kwargs, flush=True)


def train(model, X_train, y_train, X_test, y_test, *, comm, optimizer="Adam", lr=1e-2, epochs=30,
          batch_size=64, scheduler="cosine", seed=0, label="model", zero=False, deterministic=False):
    """Data-parallel minibatch training; returns curves and per-step timings (rank 0's)."""
    import nopt

    rank, size = comm.Get_rank(), comm.Get_size()
    params = model.parameters()
    broadcast_parameters(params, root=0, comm=comm)
    cls = getattr(nopt, optimizer)
    if zero:
        opt = ZeroRedundancyOptimizer(params, cls, comm=comm, deterministic=deterministic, lr=lr)
    else:
        opt = DistributedOptimizer(cls(params, lr=lr), comm, deterministic=deterministic)
    n_batches = -(-len(X_train) // batch_size)
    sched = None
    if scheduler == "cosine":
        sched = nopt.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * n_batches)
    elif scheduler == "onecycle":
        sched = nopt.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * n_batches)
    rng = np.random.default_rng(seed)      # the same order on every rank
    losses, accuracies = [], []
    compute = step_time = 0.0
    steps = 0
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(X_train))
        total = np.zeros(2)
        for start in range(0, len(order), batch_size):
            mine = order[start:start + batch_size][rank::size]   # this rank's slice of the batch
            t0 = time.perf_counter()
            if len(mine):
                loss = model.loss_and_grad(X_train[mine], y_train[mine])
            else:  # a short last batch: this rank contributes a zero gradient
                loss = 0.0
                for p in params:
                    p.grad = np.zeros_like(p)
            t1 = time.perf_counter()
            opt.step()
            t2 = time.perf_counter()
            compute += t1 - t0
            step_time += t2 - t1
            total += (loss * len(mine), len(mine))
            steps += 1
            if sched is not None:
                sched.step()
        total = comm.allreduce(total, op=MPI.SUM)
        losses.append(total[0] / total[1])
        accuracies.append(float(np.mean(model.predict(X_test) == y_test)))
        if epoch % max(1, epochs // 5) == 0 or epoch == epochs:
            _say(comm, f"{label} epoch {epoch}/{epochs}  loss {losses[-1]:.4f}  test_acc {accuracies[-1]:.4f}")
    check_synced(params, comm)
    return {
        "loss": losses, "test_accuracy": accuracies, "final_accuracy": accuracies[-1], "steps": steps,
        "ms_per_step": 1e3 * (compute + step_time) / max(steps, 1),
        "ms_compute": 1e3 * compute / max(steps, 1),
        "ms_comm": 1e3 * opt.comm_seconds / max(steps, 1),
        "ms_optimizer": 1e3 * (step_time - opt.comm_seconds) / max(steps, 1),
    }


def build_parser():
    parser = argparse.ArgumentParser(
        prog="mpiexec -n N nopt demo --distributed",
        description="The nopt demo, data-parallel over MPI ranks (each minibatch split across ranks).")
    parser.add_argument("--optimizer", default="Adam", help="any elementwise nopt optimizer (default Adam)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: 1e-2, SGD 0.1)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64, help="global minibatch (split across ranks)")
    parser.add_argument("--scheduler", choices=["cosine", "onecycle", "none"], default="cosine")
    parser.add_argument("--model", choices=["both", "softmax", "mlp"], default="both")
    parser.add_argument("--hidden", type=int, default=64, help="MLP hidden units")
    parser.add_argument("--threads", type=int, default=1, help="kernel threads per rank (default 1)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zero", action="store_true", help="shard the optimizer state (ZeroRedundancyOptimizer)")
    parser.add_argument("--deterministic", action="store_true", help="sum gradients in rank order")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        raise SystemExit("nopt demo: --epochs and --batch-size must be positive")
    comm = MPI.COMM_WORLD
    _threads.set_num_threads(args.threads)
    lr = args.lr if args.lr is not None else (0.1 if args.optimizer == "SGD" else 1e-2)
    dtype = np.dtype(args.dtype).type
    X, y = load_digits(dtype)
    X_train, X_test, y_train, y_test = train_test_split(X, y, seed=args.seed)
    size = comm.Get_size()
    _say(comm, f"nopt demo --distributed: {size} rank(s), digits, {len(X_train)} train / {len(X_test)} test "
               f"images, global batch {args.batch_size} (~{args.batch_size // size} per rank), "
               f"{args.optimizer}(lr={lr:g}){' sharded with ZeRO' if args.zero else ''}, {args.scheduler} "
               f"schedule, {args.dtype}, {args.threads} thread(s) per rank")
    if size == 1:
        _say(comm, "(one rank: launch with e.g. `mpiexec -n 2 nopt demo --distributed` to split the work)")
    models = {}
    if args.model in ("both", "softmax"):
        models["softmax regression"] = SoftmaxRegression(64, 10, l2=1e-4, dtype=dtype)
    if args.model in ("both", "mlp"):
        models[f"MLP 64-{args.hidden}-10"] = MLP([64, args.hidden, 10], alpha=1e-4, dtype=dtype, seed=args.seed)
    results = {}
    for name, model in models.items():
        results[name] = train(
            model, X_train, y_train, X_test, y_test, comm=comm, optimizer=args.optimizer, lr=lr,
            epochs=args.epochs, batch_size=args.batch_size,
            scheduler=None if args.scheduler == "none" else args.scheduler, seed=args.seed, label=name,
            zero=args.zero, deterministic=args.deterministic)
    _say(comm, "")
    for name, r in results.items():
        share = r["ms_comm"] / r["ms_per_step"] if r["ms_per_step"] else 0.0
        _say(comm, f"{name:>22}: final loss {r['loss'][-1]:.4f} (from {r['loss'][0]:.4f}), test accuracy "
                   f"{100 * r['final_accuracy']:.2f}%, {r['ms_per_step']:.3f} ms per step ({r['steps']} steps): "
                   f"gradient {r['ms_compute']:.3f} ms, communication {r['ms_comm']:.3f} ms "
                   f"({100 * share:.0f}%), optimizer {r['ms_optimizer']:.3f} ms")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
