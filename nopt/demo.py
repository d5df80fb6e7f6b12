"""``nopt demo``: train a softmax regression and an MLP on the shipped digits.

Runs offline with nothing but numpy and scipy. Shows a progress bar on a
terminal and plain periodic lines otherwise, then prints the test accuracy
and the time per optimizer step.

``--optimizer`` takes any optimizer class that ``nopt`` exports (found at run
time from ``nopt.__all__``, so new optimizers need no change here). Those
whose ``step`` needs a closure (LBFGS, CG) train full-batch; an optimizer that
cannot train these models says why in one line.
"""
import argparse
import inspect
import math
import sys
import time

import numpy as np

from . import _threads
from .models import MLP, SoftmaxRegression, load_digits, train_test_split

__all__ = ["main", "train", "optimizer_classes", "DemoError"]

# Learning rates that train both demo models well in 30 epochs of batch 64,
# where the optimizer's own default is too small for that. Optimizers not
# listed use their constructor's default lr (1e-2 if it has none).
DEMO_LR = {"SGD": 0.1, "Adam": 1e-2, "AdamW": 1e-2, "Adamax": 2e-2, "NAdam": 1e-2,
           "RAdam": 1e-2, "Adagrad": 0.1, "ASGD": 0.1, "Rprop": 1e-3, "Adafactor": 0.1,
           "LARS": 0.3, "Lion": 1e-3, "LAMB": 1e-2}
_FALLBACK_LR = 1e-2

# Optimizers that can never train the demo's dense models, and why.
REFUSED = {
    "SparseAdam": "it takes scipy.sparse gradients (embedding rows), and the demo's models "
                  "have dense ones; try Adam",
}


class DemoError(Exception):
    """An optimizer cannot train the demo's models (the message says why, in one line)."""


# What a class needs to act as an optimizer (wrappers such as ApplyIfFinite).
_OPTIMIZER_API = ("step", "zero_grad", "state_dict", "load_state_dict", "param_groups")


def optimizer_classes():
    """The optimizer classes nopt exports, by name.

    Subclasses of ``nopt.Optimizer`` and classes with its API (wrappers around
    an optimizer), read from ``nopt.__all__`` at call time: optimizers that
    other modules add to nopt's exports are picked up without a change here.
    """
    import nopt
    from .optimizer import Optimizer

    found = {}
    for name in nopt.__all__:
        obj = getattr(nopt, name, None)
        if not isinstance(obj, type) or obj is Optimizer:
            continue
        if issubclass(obj, Optimizer) or all(hasattr(obj, a) for a in _OPTIMIZER_API):
            found[name] = obj
    return found


def _init_parameters(cls):
    try:
        return inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return {}


def _takes_lr(cls):
    return "lr" in _init_parameters(cls)


def default_lr(name, cls):
    """The demo's learning rate for ``cls`` (None when it has no lr)."""
    if not _takes_lr(cls):
        return None
    if name in DEMO_LR:
        return DEMO_LR[name]
    default = _init_parameters(cls)["lr"].default
    if isinstance(default, (int, float)) and not isinstance(default, bool) and default > 0:
        return float(default)
    return _FALLBACK_LR


def needs_closure(cls):
    """True when ``cls.step`` needs a closure (LBFGS, CG): train full-batch."""
    from ._closure_optimizer import ClosureOptimizer

    if issubclass(cls, ClosureOptimizer):
        return True
    try:
        closure = inspect.signature(cls.step).parameters.get("closure")
    except (TypeError, ValueError):
        return False
    return closure is not None and closure.default is inspect.Parameter.empty


def refusal(name, cls):
    """Why ``cls`` cannot train the demo's models, or None if it can (as far as we know)."""
    if name in REFUSED:
        return REFUSED[name]
    params = list(_init_parameters(cls))
    if params and params[0] == "optimizer":
        return (f"it wraps another optimizer ({name}(optimizer, ...)); the demo trains plain "
                "optimizers, e.g. --optimizer Adam")
    if not params or params[0] != "params":
        first = params[0] if params else "..."
        return f"its constructor takes {first!r} first, not a list of parameters ({name}({first}, ...))"
    return None


def _one_line(exc):
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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


def _resolve(optimizer):
    if isinstance(optimizer, type):
        return optimizer.__name__, optimizer
    classes = optimizer_classes()
    if optimizer in classes:
        return optimizer, classes[optimizer]
    by_lower = {name.lower(): name for name in classes}
    name = by_lower.get(str(optimizer).lower())
    if name is None:
        raise DemoError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(classes)}")
    return name, classes[name]


def _make_scheduler(opt, scheduler, lr, total_steps):
    import nopt

    if scheduler == "cosine":
        return nopt.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    if scheduler == "onecycle":
        # OneCycleLR cycles a momentum or beta1 only where the optimizer has one.
        cycle = "momentum" in opt.defaults or "betas" in opt.defaults
        return nopt.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps,
                                            cycle_momentum=cycle)
    return None


def _has_modes(opt):
    # Schedule-free optimizers evaluate at a different point than they train
    # at: torch's convention is optimizer.train() / optimizer.eval().
    return callable(getattr(opt, "train", None)) and callable(getattr(opt, "eval", None))


def train(model, X_train, y_train, X_test, y_test, *, optimizer="Adam", lr=1e-2, epochs=30,
          batch_size=64, scheduler="cosine", seed=0, label="model", stream=None):
    """Train ``model``; return a dict of curves and figures.

    Minibatch training (``batch_size``) for optimizers whose ``step`` takes
    gradients; one full-batch ``step(closure)`` per epoch for those that need
    a closure (LBFGS, CG). ``optimizer`` is a class or a name (any case);
    ``lr=None`` means the optimizer has no learning rate. Raises
    :class:`DemoError` when the optimizer cannot train the model: a known
    refusal, or an error from its constructor or its first step.
    """
    name, cls = _resolve(optimizer)
    reason = refusal(name, cls)
    if reason is not None:
        raise DemoError(f"{name} cannot train the demo's models: {reason}")
    full_batch = needs_closure(cls)
    params = model.parameters()
    try:
        opt = cls(params, lr=lr) if lr is not None else cls(params)
    except (TypeError, ValueError, RuntimeError, NotImplementedError) as exc:
        raise DemoError(f"{name} cannot train the demo's models: {_one_line(exc)}") from exc
    if full_batch:
        batch_size = len(X_train)
    n_batches = -(-len(X_train) // batch_size)
    sched = _make_scheduler(opt, scheduler, lr, epochs * n_batches) if lr is not None else None
    modes = _has_modes(opt)

    def evaluate(with_loss=False):
        if modes:
            opt.eval()
        loss = model.loss_and_grad(X_train, y_train) if with_loss else None
        accuracy = float(np.mean(model.predict(X_test) == y_test))
        if modes:
            opt.train()
        return loss, accuracy

    initial_loss, _ = evaluate(with_loss=True)
    rng = np.random.default_rng(seed)
    progress = Progress(epochs, label, stream)
    losses, accuracies, lrs, step_seconds = [], [], [], 0.0
    steps = 0
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(X_train))
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            Xb, yb = X_train[batch], y_train[batch]
            if lr is not None:
                lrs.append(float(opt.param_groups[0]["lr"]))
            try:
                if full_batch:
                    t0 = time.perf_counter()
                    # The step evaluates the closure as often as its line search needs.
                    loss = opt.step(lambda: model.loss_and_grad(Xb, yb))
                    step_seconds += time.perf_counter() - t0
                else:
                    loss = model.loss_and_grad(Xb, yb)
                    t0 = time.perf_counter()
                    opt.step()
                    step_seconds += time.perf_counter() - t0
            except (TypeError, ValueError, RuntimeError, NotImplementedError) as exc:
                if steps:
                    raise
                # Only the first step can tell us that the optimizer does not fit.
                raise DemoError(f"{name} cannot train the demo's models: {_one_line(exc)}") from exc
            total += float(loss) * len(batch)
            steps += 1
            if sched is not None:
                sched.step()
        losses.append(total / len(X_train))
        _, accuracy = evaluate()
        accuracies.append(accuracy)
        progress.update(epoch, loss=losses[-1], test_acc=accuracies[-1])
    final_loss, _ = evaluate(with_loss=True)
    return {
        "optimizer": name,
        "lr": lr,
        "full_batch": full_batch,
        "initial_loss": float(initial_loss),
        "final_loss": float(final_loss),
        "loss": losses,
        "test_accuracy": accuracies,
        "final_accuracy": accuracies[-1],
        "lr_per_step": lrs,
        "us_per_step": 1e6 * step_seconds / max(steps, 1),
        "steps": steps,
    }


def _title(optimizer, lr, schedule, full_batch):
    lr_text = "line search, no lr" if lr is None else f"lr={lr:g}"
    mode = ", full batch" if full_batch else ""
    sched_text = "no" if schedule in (None, "none") or lr is None else schedule
    return f"{optimizer}({lr_text}) with {sched_text} schedule{mode}"


def _plot(results, path, title):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"nopt demo: --plot needs matplotlib (pip install matplotlib); {path} not written",
              file=sys.stderr)
        return False
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4))
    for name, r in results.items():
        epochs = np.arange(1, len(r["loss"]) + 1)
        ax1.plot(epochs, r["loss"], label=name)
        ax2.plot(epochs, r["test_accuracy"], label=name)
        if r["lr_per_step"]:
            # One point per step, on the epoch axis.
            x = np.arange(1, len(r["lr_per_step"]) + 1) * len(epochs) / len(r["lr_per_step"])
            ax3.plot(x, r["lr_per_step"], label=name)
    ax1.set(xlabel="epoch", ylabel="training loss", yscale="log", title="Loss")
    ax2.set(xlabel="epoch", ylabel="test accuracy", title="Test accuracy")
    ax3.set(xlabel="epoch", ylabel="learning rate", title="Learning rate")
    if not any(r["lr_per_step"] for r in results.values()):
        ax3.text(0.5, 0.5, "no learning rate\n(line search)", ha="center", va="center",
                 transform=ax3.transAxes)
    ax1.legend()
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"loss curves written to {path}")
    return True


# --------------------------------------------------------------- command line
def _positive(kind):
    def check(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    check.__name__ = f"positive {kind.__name__}"
    return check


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _optimizer_choice(classes):
    by_lower = {name.lower(): name for name in classes}

    def check(text):
        name = by_lower.get(text.lower())
        if name is None:
            raise argparse.ArgumentTypeError(
                f"unknown optimizer {text!r}; choose one of: {', '.join(classes)} (any case)")
        return name

    check.__name__ = "optimizer"
    return check


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    # Show "(default: X)" except where the help already explains a None default.
    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _time_text(us):
    return f"{us:.1f} us" if us < 1000 else f"{us / 1000:.1f} ms"


def build_parser():
    classes = optimizer_classes()
    trainable = {name: cls for name, cls in classes.items() if refusal(name, cls) is None}
    lrs = ", ".join(f"{name} {default_lr(name, cls):g}" for name, cls in trainable.items()
                    if default_lr(name, cls) is not None)
    no_lr = [name for name, cls in trainable.items() if not _takes_lr(cls)]
    closure = [name for name, cls in classes.items() if needs_closure(cls)]
    parser = argparse.ArgumentParser(
        prog="nopt demo",
        description="Train a softmax regression and an MLP on 8x8 handwritten digits with nopt.",
        epilog=(f"Optimizers that need a closure ({', '.join(closure)}) train full-batch, "
                "one step per epoch." if closure else None),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--optimizer", default="Adam", type=_optimizer_choice(classes),
                        metavar="NAME", help=f"one of {', '.join(classes)} (any case)")
    parser.add_argument("--lr", type=_positive(float), default=None,
                        help=f"learning rate (default, per optimizer: {lrs}"
                             + (f"; none for {', '.join(no_lr)}: line search)"
                                if no_lr else ")"))
    parser.add_argument("--epochs", type=_positive(int), default=30, help="passes over the data")
    parser.add_argument("--batch-size", type=_positive(int), default=64,
                        help="minibatch size (full batch for closure optimizers)")
    parser.add_argument("--scheduler", choices=["cosine", "onecycle", "none"], default="cosine",
                        help="learning-rate schedule over all steps")
    parser.add_argument("--model", choices=["both", "softmax", "mlp"], default="both",
                        help="which model(s) to train")
    parser.add_argument("--hidden", type=_positive(int), default=64, help="MLP hidden units")
    parser.add_argument("--threads", type=_positive(int), default=None,
                        help="kernel threads (default: OpenMP's)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                        help="parameter and data dtype")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="shuffling and init seed")
    parser.add_argument("--plot", metavar="FILE", default=None,
                        help="write loss, accuracy and lr curves to a PNG (needs matplotlib)")
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel over MPI ranks: mpiexec -n 2 nopt demo --distributed "
                             "(needs nopt[mpi]; its own options)")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--distributed" in argv:  # its own options: nopt/distributed/demo.py
        try:
            from .distributed.demo import main as distributed_main
        except ImportError as exc:
            raise SystemExit(f"--distributed: {exc}") from None
        return distributed_main([a for a in argv if a != "--distributed"])
    parser = build_parser()
    args = parser.parse_args(argv)
    classes = optimizer_classes()
    name, cls = args.optimizer, classes[args.optimizer]
    reason = refusal(name, cls)
    if reason is not None:
        raise SystemExit(f"nopt demo: {name} cannot train the demo's models: {reason}")
    lr = default_lr(name, cls)
    if args.lr is not None:
        if lr is None:
            parser.error(f"{name} takes no learning rate (it uses a line search); drop --lr")
        lr = args.lr
    full_batch = needs_closure(cls)
    if args.threads is not None:
        _threads.set_num_threads(args.threads)
    dtype = np.dtype(args.dtype).type
    X, y = load_digits(dtype)
    X_train, X_test, y_train, y_test = train_test_split(X, y, seed=args.seed)
    models = {}
    if args.model in ("both", "softmax"):
        models["softmax regression"] = SoftmaxRegression(64, 10, l2=1e-4, dtype=dtype)
    if args.model in ("both", "mlp"):
        models[f"MLP 64-{args.hidden}-10"] = MLP([64, args.hidden, 10], alpha=1e-4, dtype=dtype, seed=args.seed)
    # An optimizer that rejects these models' parameters says so before the header.
    for model in models.values():
        try:
            cls(model.parameters(), lr=lr) if lr is not None else cls(model.parameters())
        except (TypeError, ValueError, RuntimeError, NotImplementedError) as exc:
            raise SystemExit(f"nopt demo: {name} cannot train the demo's models: {_one_line(exc)}") from None
    schedule = None if args.scheduler == "none" else args.scheduler
    title = _title(name, lr, schedule, full_batch)
    print(f"nopt demo: digits, {len(X_train)} train / {len(X_test)} test images, {title}, "
          f"{args.dtype}, {_threads.get_num_threads()} thread(s)")
    results = {}
    try:
        for label, model in models.items():
            results[label] = train(
                model, X_train, y_train, X_test, y_test, optimizer=cls, lr=lr,
                epochs=args.epochs, batch_size=args.batch_size, scheduler=schedule,
                seed=args.seed, label=label,
            )
    except DemoError as exc:
        raise SystemExit(f"nopt demo: {exc}") from None
    print()
    for label, r in results.items():
        what = "step (with its closure calls)" if r["full_batch"] else "optimizer step"
        print(f"{label:>22}: final loss {r['final_loss']:.4f} (from {r['initial_loss']:.4f}), "
              f"test accuracy {100 * r['final_accuracy']:.2f}%, "
              f"{_time_text(r['us_per_step'])} per {what} ({r['steps']} steps)")
    if args.plot:
        _plot(results, args.plot, f"nopt demo: {title}")
    return results


if __name__ == "__main__":
    main()
