"""``nopt demo``: train a softmax regression and an MLP on the shipped digits.

Runs offline with nothing but numpy and scipy. Shows a progress bar on a
terminal and plain periodic lines otherwise, then prints the test accuracy
and the time per optimizer step.
"""
import argparse
import sys
import time

import numpy as np

from . import _threads
from .models import MLP, SoftmaxRegression, load_digits, train_test_split

__all__ = ["main", "train"]


class Progress:
    """A one-line progress bar on a terminal; periodic plain lines elsewhere."""

    def __init__(self, total, label, stream=None, every=None):
        self.total = total
        self.label = label
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = every or max(1, total // 10)

    def update(self, done, **metrics):
        text = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        if self.tty:
            width = 30
            filled = int(width * done / self.total)
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total}  {text}")
            if done == self.total:
                self.stream.write("\n")
            self.stream.flush()
        elif done % self.every == 0 or done == self.total:
            print(f"{self.label} epoch {done}/{self.total}  {text}", file=self.stream, flush=True)


def _make_optimizer(name, params, lr):
    import nopt

    try:
        cls = getattr(nopt, name)
    except AttributeError:
        raise SystemExit(f"nopt demo: unknown optimizer {name!r}") from None
    return cls(params, lr=lr)


def train(model, X_train, y_train, X_test, y_test, *, optimizer="Adam", lr=1e-2, epochs=30,
          batch_size=64, scheduler="cosine", seed=0, label="model", stream=None):
    """Minibatch training of ``model``; returns a dict of curves and figures."""
    import nopt

    opt = _make_optimizer(optimizer, model.parameters(), lr)
    n_batches = -(-len(X_train) // batch_size)
    sched = None
    if scheduler == "cosine":
        sched = nopt.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * n_batches)
    elif scheduler == "onecycle":
        sched = nopt.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * n_batches)
    rng = np.random.default_rng(seed)
    progress = Progress(epochs, label, stream)
    losses, accuracies, step_seconds = [], [], 0.0
    steps = 0
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(X_train))
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            total += model.loss_and_grad(X_train[batch], y_train[batch]) * len(batch)
            t0 = time.perf_counter()
            opt.step()
            step_seconds += time.perf_counter() - t0
            steps += 1
            if sched is not None:
                sched.step()
        losses.append(total / len(X_train))
        accuracies.append(float(np.mean(model.predict(X_test) == y_test)))
        progress.update(epoch, loss=losses[-1], test_acc=accuracies[-1])
    return {
        "loss": losses,
        "test_accuracy": accuracies,
        "final_accuracy": accuracies[-1],
        "us_per_step": 1e6 * step_seconds / max(steps, 1),
        "steps": steps,
    }


def _plot(results, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"nopt demo: --plot needs matplotlib (pip install matplotlib); {path} not written",
              file=sys.stderr)
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, r in results.items():
        epochs = np.arange(1, len(r["loss"]) + 1)
        ax1.plot(epochs, r["loss"], label=name)
        ax2.plot(epochs, r["test_accuracy"], label=name)
    ax1.set(xlabel="epoch", ylabel="training loss", yscale="log", title="Loss")
    ax2.set(xlabel="epoch", ylabel="test accuracy", title="Test accuracy")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"loss curves written to {path}")
    return True


def build_parser():
    parser = argparse.ArgumentParser(
        prog="nopt demo",
        description="Train a softmax regression and an MLP on 8x8 handwritten digits with nopt.",
    )
    parser.add_argument("--optimizer", default="Adam", help="any nopt optimizer class name (default Adam)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: 1e-2, SGD 0.1)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--scheduler", choices=["cosine", "onecycle", "none"], default="cosine")
    parser.add_argument("--model", choices=["both", "softmax", "mlp"], default="both")
    parser.add_argument("--hidden", type=int, default=64, help="MLP hidden units")
    parser.add_argument("--threads", type=int, default=None, help="kernel threads (default: OpenMP's)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="FILE", help="write the loss curves to a PNG (needs matplotlib)")
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel over MPI ranks: mpiexec -n 2 nopt demo --distributed (needs nopt[mpi])")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--distributed" in argv:  # its own options: nopt/distributed/demo.py
        try:
            from .distributed.demo import main as distributed_main
        except ImportError as exc:
            raise SystemExit(f"--distributed: {exc}") from None
        return distributed_main([a for a in argv if a != "--distributed"])
    args = build_parser().parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        raise SystemExit("nopt demo: --epochs and --batch-size must be positive")
    if args.threads is not None:
        _threads.set_num_threads(args.threads)
    lr = args.lr if args.lr is not None else (0.1 if args.optimizer == "SGD" else 1e-2)
    dtype = np.dtype(args.dtype).type
    X, y = load_digits(dtype)
    X_train, X_test, y_train, y_test = train_test_split(X, y, seed=args.seed)
    print(f"nopt demo: digits, {len(X_train)} train / {len(X_test)} test images, "
          f"{args.optimizer}(lr={lr:g}) with {args.scheduler} schedule, {args.dtype}, "
          f"{_threads.get_num_threads()} thread(s)")
    models = {}
    if args.model in ("both", "softmax"):
        models["softmax regression"] = SoftmaxRegression(64, 10, l2=1e-4, dtype=dtype)
    if args.model in ("both", "mlp"):
        models[f"MLP 64-{args.hidden}-10"] = MLP([64, args.hidden, 10], alpha=1e-4, dtype=dtype, seed=args.seed)
    results = {}
    for name, model in models.items():
        results[name] = train(
            model, X_train, y_train, X_test, y_test, optimizer=args.optimizer, lr=lr,
            epochs=args.epochs, batch_size=args.batch_size,
            scheduler=None if args.scheduler == "none" else args.scheduler,
            seed=args.seed, label=name,
        )
    print()
    for name, r in results.items():
        print(f"{name:>22}: final loss {r['loss'][-1]:.4f} (from {r['loss'][0]:.4f}), "
              f"test accuracy {100 * r['final_accuracy']:.2f}%, "
              f"{r['us_per_step']:.1f} us per optimizer step ({r['steps']} steps)")
    if args.plot:
        _plot(results, args.plot)
    return results


if __name__ == "__main__":
    main()
