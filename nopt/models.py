"""Small NumPy models with hand-written forward and backward passes.

They show how to train with nopt: parameters are :class:`nopt.Parameter`,
``loss_and_grad`` fills each parameter's ``.grad`` and returns the loss, and
an optimizer's ``step`` does the rest. Used by ``nopt demo`` and examples/.
"""
import os

import numpy as np

from ._parameter import Parameter

__all__ = ["load_digits", "train_test_split", "SoftmaxRegression", "MLP", "cross_entropy"]


def load_digits(dtype=np.float64):
    """The 8x8 handwritten digits shipped with nopt (1797 images, 10 classes).

    Returns
    -------
    X : ndarray, shape (1797, 64)
        Pixel values scaled to [0, 1].
    y : ndarray of int64, shape (1797,)
    """
    path = os.path.join(os.path.dirname(__file__), "data", "digits.npz")
    with np.load(path, allow_pickle=False) as data:
        images, target = data["images"], data["target"]
    X = images.reshape(len(images), -1).astype(dtype) / dtype(16)
    return X, target.astype(np.int64)


def train_test_split(X, y, test_fraction=0.25, seed=0):
    """Shuffle with ``seed`` and split off the last ``test_fraction`` as test set."""
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = int(round(len(X) * test_fraction))
    train, test = order[n_test:], order[:n_test]
    return X[train], X[test], y[train], y[test]


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(logits, y):
    """Mean cross-entropy of ``logits`` against integer labels, and its gradient."""
    probs = _softmax(logits)
    n = len(y)
    loss = -np.log(np.maximum(probs[np.arange(n), y], np.finfo(probs.dtype).tiny)).mean()
    dlogits = probs
    dlogits[np.arange(n), y] -= 1
    dlogits /= n
    return float(loss), dlogits


class SoftmaxRegression:
    """Multinomial logistic regression: ``softmax(X W + b)``, with an L2 penalty.

    Parameters
    ----------
    n_features, n_classes : int
    l2 : float
        Penalty ``l2 / 2 * ||W||^2`` added to the mean cross-entropy.
    """

    def __init__(self, n_features, n_classes, l2=0.0, dtype=np.float64, seed=0):
        self.W = Parameter(np.zeros((n_features, n_classes), dtype=dtype))
        self.b = Parameter(np.zeros(n_classes, dtype=dtype))
        self.l2 = l2

    def parameters(self):
        return [self.W, self.b]

    def logits(self, X):
        return X @ self.W + self.b

    def loss_and_grad(self, X, y):
        """Return the loss and set ``.grad`` of every parameter."""
        loss, d = cross_entropy(self.logits(X), y)
        self.W.grad = X.T @ d + self.l2 * self.W
        self.b.grad = d.sum(axis=0)
        return loss + 0.5 * self.l2 * float(np.sum(np.square(self.W)))

    def predict(self, X):
        return np.argmax(self.logits(X), axis=1)


class MLP:
    """A multilayer perceptron with ReLU hidden layers and a softmax output.

    Glorot-uniform initialisation (as scikit-learn's MLPClassifier), and an
    L2 penalty ``alpha / (2 n) * sum ||W||^2`` on a batch of ``n`` samples,
    as scikit-learn defines it.
    """

    def __init__(self, sizes, alpha=0.0, dtype=np.float64, seed=0):
        rng = np.random.default_rng(seed)
        self.weights, self.biases = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            self.weights.append(Parameter(rng.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype)))
            self.biases.append(Parameter(rng.uniform(-bound, bound, fan_out).astype(dtype)))
        self.alpha = alpha

    def parameters(self):
        return [p for pair in zip(self.weights, self.biases) for p in pair]

    def _forward(self, X):
        activations = [X]
        for i, (W, b) in enumerate(zip(self.weights, self.biases)):
            z = activations[-1] @ W + b
            activations.append(np.maximum(z, 0) if i < len(self.weights) - 1 else z)
        return activations

    def loss_and_grad(self, X, y):
        """Return the loss and set ``.grad`` of every parameter."""
        activations = self._forward(X)
        loss, delta = cross_entropy(activations[-1], y)
        n = len(X)
        for i in range(len(self.weights) - 1, -1, -1):
            W = self.weights[i]
            W.grad = activations[i].T @ delta + (self.alpha / n) * W
            self.biases[i].grad = delta.sum(axis=0)
            if i > 0:
                delta = (delta @ W.T) * (activations[i] > 0)
        penalty = sum(float(np.sum(np.square(W))) for W in self.weights)
        return loss + 0.5 * self.alpha / n * penalty

    def predict(self, X):
        return np.argmax(self._forward(X)[-1], axis=1)
