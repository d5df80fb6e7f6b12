"""An MLP on the digits with gradients from ``autograd`` (HIPS) and a nopt optimizer.

No hand-written backward pass: ``autograd.grad`` differentiates the NumPy
loss, and nopt's Adam and cosine schedule update the parameters in place.
autograd dispatches on exact array types, so it is handed ``np.asarray(p)``:
a plain ndarray *view* of each Parameter (no copy), and its gradients come
back as plain arrays of the same shapes and dtypes. Needs
``pip install autograd``.
"""
import autograd
import autograd.numpy as anp
import numpy as np

import nopt
from nopt.models import load_digits, train_test_split


def init_params(sizes, rng, dtype):
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        params.append(nopt.Parameter(rng.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype)))
        params.append(nopt.Parameter(np.zeros(fan_out, dtype)))
    return params


def forward(arrays, X):
    h = X
    for i in range(0, len(arrays) - 2, 2):
        h = anp.tanh(anp.dot(h, arrays[i]) + arrays[i + 1])
    return anp.dot(h, arrays[-2]) + arrays[-1]


def loss(arrays, X, y):
    """Mean cross-entropy, written with autograd.numpy."""
    logits = forward(arrays, X)
    log_norm = anp.log(anp.sum(anp.exp(logits - anp.max(logits, axis=1, keepdims=True)), axis=1))
    log_probs = logits - anp.max(logits, axis=1, keepdims=True) - log_norm[:, None]
    return -anp.mean(log_probs[anp.arange(len(y)), y])


loss_grad = autograd.value_and_grad(loss)


def main(quick=False, epochs=30, batch_size=64, dtype=np.float32):
    epochs = 4 if quick else epochs
    X, y = load_digits(dtype)
    X_train, X_test, y_train, y_test = train_test_split(X, y)
    rng = np.random.default_rng(0)
    params = init_params([64, 32, 10], rng, dtype)
    views = [np.asarray(p) for p in params]          # what autograd sees: the same memory
    opt = nopt.Adam(params, lr=1e-2)
    steps = epochs * -(-len(y_train) // batch_size)
    sched = nopt.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    history = []
    for epoch in range(epochs):
        order = rng.permutation(len(y_train))
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            value, grads = loss_grad(views, X_train[batch], y_train[batch])
            for p, g in zip(params, grads):
                p.grad = g
            opt.step()
            sched.step()
            total += float(value) * len(batch)
        history.append(total / len(y_train))
        print(f"epoch {epoch + 1:3d}  loss {history[-1]:.4f}")
    accuracy = float(np.mean(np.argmax(forward(views, X_test), axis=1) == y_test))
    print(f"test accuracy {100 * accuracy:.2f}%")
    return history, accuracy


if __name__ == "__main__":
    main()
