"""Softmax regression on the digits: a torch.optim script ported to nopt.

The original is torch_original/port_from_torch.py. The port changes the
imports (``from torch import optim`` becomes ``from nopt import optim``), the
tensor constructor, and the backward pass (torch's autograd becomes three
lines of NumPy; see autograd_mlp.py for automatic gradients). Every line
that touches the optimizer, the scheduler or the checkpoint is unchanged,
and the printed losses are torch's to rounding.
"""
import numpy as np
from nopt import optim
from nopt import Parameter

from nopt.models import cross_entropy, load_digits, train_test_split


def as_array(x):
    return np.asarray(x)


def loss_and_grad(W, b, X, y):
    """Mean cross-entropy of the batch; sets ``W.grad`` and ``b.grad``."""
    loss, dlogits = cross_entropy(X @ W + b, y)
    W.grad, b.grad = X.T @ dlogits, dlogits.sum(axis=0)
    return loss


def accuracy(W, b, X, y):
    return float(np.mean(np.asarray((X @ W + b).argmax(1) == y)))


def main(quick=False, epochs=30, batch_size=64):
    epochs = 4 if quick else epochs
    X, y = load_digits(np.float64)
    X_train, X_test, y_train, y_test = (as_array(a) for a in train_test_split(X, y))
    rng = np.random.default_rng(0)
    W = Parameter(as_array(rng.normal(0.0, 0.01, (64, 10))))
    b = Parameter(as_array(np.zeros(10)))
    opt = optim.SGD([{"params": [W], "weight_decay": 1e-4}, {"params": [b]}],
                    lr=0.5, momentum=0.9, nesterov=True)
    sched = optim.lr_scheduler.MultiStepLR(opt, milestones=[epochs // 2, 3 * epochs // 4], gamma=0.3)
    losses = []
    for epoch in range(epochs):
        order = rng.permutation(len(y_train))
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            opt.zero_grad()
            total += loss_and_grad(W, b, X_train[batch], y_train[batch]) * len(batch)
            opt.step()
        sched.step()
        losses.append(total / len(y_train))
        print(f"epoch {epoch + 1:3d}  loss {losses[-1]:.6f}  lr {sched.get_last_lr()[0]:.3f}")
    checkpoint = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    opt.load_state_dict(checkpoint["optimizer"])
    sched.load_state_dict(checkpoint["scheduler"])
    print(f"test accuracy {100 * accuracy(W, b, X_test, y_test):.2f}%")
    return losses, accuracy(W, b, X_test, y_test)


if __name__ == "__main__":
    main()
