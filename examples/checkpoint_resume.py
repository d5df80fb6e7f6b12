"""Save a checkpoint mid-training, resume in a fresh process state, continue identically.

The checkpoint holds the parameters, the optimizer and the scheduler state;
nopt.save writes it atomically and nopt.load never unpickles.
"""
import os
import tempfile

import numpy as np

import nopt
from nopt.models import MLP, load_digits


def make(seed=0):
    model = MLP([64, 32, 10], dtype=np.float32, seed=seed)
    opt = nopt.Adam(model.parameters(), lr=1e-2)
    sched = nopt.lr_scheduler.StepLR(opt, step_size=20, gamma=0.5)
    return model, opt, sched


def train(model, opt, sched, X, y, steps, start):
    rng = np.random.default_rng(start)  # batches depend on the step number only
    for _ in range(steps):
        batch = rng.integers(0, len(X), 64)
        model.loss_and_grad(X[batch], y[batch])
        opt.step()
        sched.step()


def main(quick=False):
    X, y = load_digits(np.float32)
    steps = 20 if quick else 60
    model, opt, sched = make()
    train(model, opt, sched, X, y, steps, start=0)
    path = os.path.join(tempfile.mkdtemp(), "checkpoint.nopt")
    nopt.save({"params": [np.asarray(p) for p in model.parameters()],
               "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, path)
    train(model, opt, sched, X, y, steps, start=1)          # keep going

    resumed, opt2, sched2 = make(seed=123)                  # fresh objects
    checkpoint = nopt.load(path)
    for p, saved in zip(resumed.parameters(), checkpoint["params"]):
        p[...] = saved
    opt2.load_state_dict(checkpoint["optimizer"])
    sched2.load_state_dict(checkpoint["scheduler"])
    train(resumed, opt2, sched2, X, y, steps, start=1)      # the same continuation

    same = all(a.tobytes() == b.tobytes() for a, b in zip(model.parameters(), resumed.parameters()))
    print(f"checkpoint at {path}: resumed run identical to the uninterrupted one: {same}")
    return same


if __name__ == "__main__":
    main()
