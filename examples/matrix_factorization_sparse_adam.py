"""Matrix factorisation (embeddings) with SparseAdam on scipy.sparse gradients.

Each minibatch of observed (user, item, rating) triples touches only a few
rows of the user and item embedding tables, so their gradients are sparse:
SparseAdam updates only those rows' moments and values.
"""
import numpy as np
import scipy.sparse as sp

import nopt


def make_ratings(n_users=500, n_items=300, rank=5, n_obs=20_000, seed=0):
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((n_users, rank)) / np.sqrt(rank)
    V = rng.standard_normal((n_items, rank)) / np.sqrt(rank)
    users = rng.integers(0, n_users, n_obs)
    items = rng.integers(0, n_items, n_obs)
    ratings = np.sum(U[users] * V[items], axis=1) + 0.05 * rng.standard_normal(n_obs)
    return users, items, ratings


def sparse_rows_grad(rows, values, shape):
    """A COO gradient for the given rows (duplicates are summed by the optimizer)."""
    n, k = values.shape
    return sp.coo_array((values.ravel(), (np.repeat(rows, k), np.tile(np.arange(k), n))), shape=shape)


def main(quick=False, rank=8, epochs=30, batch_size=512, lr=0.02):
    epochs = 3 if quick else epochs
    users, items, ratings = make_ratings()
    n_users, n_items = users.max() + 1, items.max() + 1
    rng = np.random.default_rng(1)
    P = nopt.Parameter(0.1 * rng.standard_normal((n_users, rank)))
    Q = nopt.Parameter(0.1 * rng.standard_normal((n_items, rank)))
    opt = nopt.SparseAdam([P, Q], lr=lr)
    n_train = int(0.9 * len(ratings))
    for epoch in range(epochs):
        order = rng.permutation(n_train)
        for start in range(0, n_train, batch_size):
            b = order[start:start + batch_size]
            u, i, r = users[b], items[b], ratings[b]
            err = np.sum(P[u] * Q[i], axis=1) - r                     # prediction error
            P.grad = sparse_rows_grad(u, err[:, None] * Q[i] / len(b), P.shape)
            Q.grad = sparse_rows_grad(i, err[:, None] * P[u] / len(b), Q.shape)
            opt.step()
        test = slice(n_train, None)
        rmse = np.sqrt(np.mean((np.sum(P[users[test]] * Q[items[test]], axis=1) - ratings[test]) ** 2))
        print(f"epoch {epoch + 1:3d}  test RMSE {rmse:.4f}")
    return float(rmse)


if __name__ == "__main__":
    main()
