"""Results a user would trust: nopt's NumPy models against scikit-learn's."""
import contextlib

import numpy as np
import pytest

import nopt
from nopt.demo import train
from nopt.models import MLP, SoftmaxRegression, load_digits, train_test_split

sklearn = pytest.importorskip("sklearn")

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """One BLAS thread: on these small matrices BLAS's threads only wait, spinning, for
    each other, and on a loaded machine that made the L-BFGS comparison 7x-25x slower."""
    with threadpool_limits(1, user_api="blas") if threadpool_limits else contextlib.nullcontext():
        yield


def test_mlp_matches_sklearn_adam_accuracy():
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    X, y = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(X, y)
    epochs, hidden, alpha, lr, batch = 100, 64, 1e-4, 1e-3, 200
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = MLPClassifier(hidden_layer_sizes=(hidden,), solver="adam", alpha=alpha,
                                  learning_rate_init=lr, batch_size=batch, max_iter=epochs,
                                  n_iter_no_change=epochs, random_state=0).fit(X_train, y_train)
    sklearn_accuracy = reference.score(X_test, y_test)
    model = MLP([64, hidden, 10], alpha=alpha, seed=0)
    result = train(model, X_train, y_train, X_test, y_test, optimizer="Adam", lr=lr,
                   epochs=epochs, batch_size=batch, scheduler=None, stream=open("/dev/null", "w"))
    nopt_accuracy = result["final_accuracy"]
    assert nopt_accuracy >= sklearn_accuracy - 0.01, (nopt_accuracy, sklearn_accuracy)


def _objective(model, X, y, C):
    loss = model.loss_and_grad(X, y) * len(X)
    for p in model.parameters():
        p.grad *= len(X)
    model.W.grad += model.W / C
    return loss + 0.5 / C * float(np.sum(np.square(model.W)))


def test_logistic_regression_matches_sklearn_lbfgs_loss():
    from sklearn.linear_model import LogisticRegression

    X, y = load_digits()
    C = 1.0
    reference = LogisticRegression(C=C, solver="lbfgs", max_iter=5000, tol=1e-10).fit(X, y)
    scored = SoftmaxRegression(64, 10)
    scored.W[...] = reference.coef_.T
    scored.b[...] = reference.intercept_
    sklearn_loss = _objective(scored, X, y, C)

    model = SoftmaxRegression(64, 10)
    opt = nopt.LBFGS(model.parameters(), max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-15,
                     history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        return _objective(model, X, y, C)

    for _ in range(4):
        opt.step(closure)
    nopt_loss = _objective(model, X, y, C)
    assert abs(nopt_loss - sklearn_loss) <= 1e-6 * abs(sklearn_loss), (nopt_loss, sklearn_loss)
