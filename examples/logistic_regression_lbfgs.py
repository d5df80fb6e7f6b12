"""L2-regularised logistic regression on the digits: L-BFGS with a closure vs Adam.

L-BFGS re-evaluates the loss inside its line search, so its step takes a
closure that computes the loss and sets the gradients. Adam takes plain
minibatch steps. Both minimise the same objective:

    sum_i cross_entropy(x_i) + (1 / (2 C)) ||W||^2
"""
import numpy as np

import nopt
from nopt.models import SoftmaxRegression, load_digits, train_test_split


def objective(model, X, y, C):
    """The full-batch objective (scikit-learn's, with intercepts unpenalised)."""
    loss = model.loss_and_grad(X, y) * len(X)   # mean -> sum; sets .grad
    for p in model.parameters():
        p.grad *= len(X)
    model.W.grad += model.W / C
    return loss + 0.5 / C * float(np.sum(np.square(model.W)))


def fit_lbfgs(X, y, C=1.0, max_iter=100):
    model = SoftmaxRegression(X.shape[1], 10)
    opt = nopt.LBFGS(model.parameters(), lr=1, max_iter=max_iter, tolerance_grad=1e-10,
                     tolerance_change=1e-14, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        return objective(model, X, y, C)

    for _ in range(5):  # each step runs up to max_iter iterations
        opt.step(closure)
    return model, objective(model, X, y, C), opt.state[opt.param_groups[0]["params"][0]]["func_evals"]


def fit_adam(X, y, C=1.0, epochs=200, lr=0.05):
    model = SoftmaxRegression(X.shape[1], 10)
    opt = nopt.Adam(model.parameters(), lr=lr)
    sched = nopt.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    for _ in range(epochs):
        opt.zero_grad()
        objective(model, X, y, C)
        opt.step()
        sched.step()
    return model, objective(model, X, y, C)


def main(quick=False):
    X, y = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(X, y)
    lbfgs_model, lbfgs_loss, evals = fit_lbfgs(X_train, y_train, max_iter=30 if quick else 100)
    adam_model, adam_loss = fit_adam(X_train, y_train, epochs=50 if quick else 300)
    for name, model, loss in [("L-BFGS", lbfgs_model, lbfgs_loss), ("Adam", adam_model, adam_loss)]:
        accuracy = np.mean(model.predict(X_test) == y_test)
        print(f"{name:>7}: objective {loss:.6f}, test accuracy {100 * accuracy:.2f}%")
    print(f"L-BFGS used {evals} function evaluations")
    return lbfgs_loss, adam_loss


if __name__ == "__main__":
    main()
