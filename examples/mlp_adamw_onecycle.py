"""An MLP classifier on the digits, trained with AdamW and a one-cycle schedule."""
import numpy as np

import nopt
from nopt.models import MLP, load_digits, train_test_split


def main(quick=False, epochs=40, batch_size=64, max_lr=1e-2):
    epochs = 5 if quick else epochs
    X, y = load_digits(np.float32)
    X_train, X_test, y_train, y_test = train_test_split(X, y)
    model = MLP([64, 128, 10], dtype=np.float32)
    opt = nopt.AdamW(model.parameters(), lr=max_lr, weight_decay=1e-2)
    steps_per_epoch = -(-len(X_train) // batch_size)
    sched = nopt.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, epochs=epochs, steps_per_epoch=steps_per_epoch)
    rng = np.random.default_rng(0)
    for epoch in range(epochs):
        order = rng.permutation(len(X_train))
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            total += model.loss_and_grad(X_train[batch], y_train[batch]) * len(batch)
            opt.step()
            sched.step()
        if epoch % 5 == 4 or epoch == epochs - 1:
            accuracy = np.mean(model.predict(X_test) == y_test)
            print(f"epoch {epoch + 1:3d}  loss {total / len(X_train):.4f}  "
                  f"lr {sched.get_last_lr()[0]:.2e}  test accuracy {100 * accuracy:.2f}%")
    return float(np.mean(model.predict(X_test) == y_test))


if __name__ == "__main__":
    main()
