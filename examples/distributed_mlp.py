"""Data-parallel training of an MLP over MPI ranks, with flat parameters.

    mpiexec -n 2 python examples/distributed_mlp.py            # DistributedOptimizer
    mpiexec -n 2 python examples/distributed_mlp.py --zero     # ZeRO: optimizer state sharded
    (add --quick for a short run; needs `pip install mpi4py mpich`, i.e. nopt[mpi])

The pattern, for any model:

1. every rank builds the same model and copies rank 0's initial values
   (``broadcast_parameters``);
2. every rank reads its own shard of the data (here: its slice of each
   shuffled minibatch; on a cluster, its own files);
3. the optimizer is wrapped: ``DistributedOptimizer(opt)`` averages the
   gradients of all ranks before each step, or ``ZeroRedundancyOptimizer``
   also splits the optimizer state so each rank keeps about 1/N of it;
4. only rank 0 prints and saves checkpoints.

The parameters live in one ``ParameterBuffer``: gradients are written into
its flat gradient buffer in place, and that buffer is what the allreduce
sends, with no packing copy.
"""
import argparse
import sys

import numpy as np
from mpi4py import MPI

import nopt
from nopt.distributed import DistributedOptimizer, ZeroRedundancyOptimizer, broadcast_parameters, check_synced
from nopt.models import cross_entropy, load_digits, train_test_split


class FlatMLP:
    """64-hidden-10 ReLU MLP whose parameters are views into one buffer."""

    def __init__(self, hidden=64, seed=0):
        rng = np.random.default_rng(seed)
        shapes = {"W1": (64, hidden), "b1": hidden, "W2": (hidden, 10), "b2": 10}

        def init(shape, dtype):
            bound = np.sqrt(6.0 / (shape[0] + (shape[1] if len(shape) > 1 else 0) or 1))
            return rng.uniform(-bound, bound, shape)

        self.buffer = nopt.ParameterBuffer(shapes, dtype=np.float32, init=init)
        self.W1, self.b1, self.W2, self.b2 = (self.buffer[k] for k in ("W1", "b1", "W2", "b2"))

    def loss_and_grad(self, X, y):
        h = np.maximum(X @ self.W1 + self.b1, 0)
        loss, delta = cross_entropy(h @ self.W2 + self.b2, y)
        self.W2.grad[...] = h.T @ delta           # in place: the buffer stays flat
        self.b2.grad[...] = delta.sum(axis=0)
        delta = (delta @ self.W2.T) * (h > 0)
        self.W1.grad[...] = X.T @ delta
        self.b1.grad[...] = delta.sum(axis=0)
        return loss

    def predict(self, X):
        return np.argmax(np.maximum(X @ self.W1 + self.b1, 0) @ self.W2 + self.b2, axis=1)


def main(quick=False, zero=False, comm=None):
    comm = MPI.COMM_WORLD if comm is None else comm
    rank, size = comm.Get_rank(), comm.Get_size()
    X, y = load_digits(np.float32)
    X_train, X_test, y_train, y_test = train_test_split(X, y, seed=0)
    model = FlatMLP(seed=rank)                   # deliberately different on every rank ...
    broadcast_parameters(model.buffer, root=0, comm=comm)   # ... until rank 0's values are copied
    epochs, batch = (8, 64) if quick else (40, 64)
    steps = epochs * -(-len(X_train) // batch)
    if zero:
        opt = ZeroRedundancyOptimizer(model.buffer, nopt.AdamW, comm=comm, lr=1e-2, weight_decay=1e-4)
    else:
        opt = DistributedOptimizer(nopt.AdamW(model.buffer, lr=1e-2, weight_decay=1e-4), comm)
    sched = nopt.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=steps)
    rng = np.random.default_rng(0)               # the same shuffle on every rank
    for epoch in range(epochs):
        order = rng.permutation(len(X_train))
        for start in range(0, len(order), batch):
            mine = order[start:start + batch][rank::size]   # this rank's shard of the minibatch
            model.loss_and_grad(X_train[mine], y_train[mine])
            opt.step()
            sched.step()
        accuracy = float(np.mean(model.predict(X_test) == y_test))
        if rank == 0 and (epoch + 1) % max(1, epochs // 4) == 0:
            print(f"epoch {epoch + 1}/{epochs}: test accuracy {accuracy:.4f}", flush=True)
    check_synced(model.buffer, comm)             # every rank holds bitwise the same model
    if rank == 0:
        kind = "ZeRO (optimizer state sharded)" if zero else "DistributedOptimizer"
        print(f"{size} rank(s), {kind}: final test accuracy {accuracy:.4f}, "
              f"{1e3 * opt.comm_seconds / steps:.3f} ms of communication per step", flush=True)
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--zero", action="store_true")
    args = parser.parse_args()
    sys.exit(0 if main(args.quick, args.zero) > 0.9 else 1)
