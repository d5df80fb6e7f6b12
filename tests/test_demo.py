"""The main job: `nopt demo` (also `python -m nopt demo`)."""
import builtins
import io
import os
import subprocess
import sys

import numpy as np
import pytest

from nopt.demo import Progress, main


def test_demo_trains_and_reports(capsys):
    results = main(["--epochs", "8"])
    out = capsys.readouterr().out
    assert "test accuracy" in out and "us per optimizer step" in out
    assert "Adam" in out and "cosine" in out
    for r in results.values():
        assert r["loss"][-1] < 0.5 * r["loss"][0]
    assert results["MLP 64-64-10"]["final_accuracy"] > 0.9


def test_demo_options(capsys):
    results = main(["--optimizer", "SGD", "--lr", "0.2", "--epochs", "2", "--batch-size", "32",
                    "--threads", "1", "--model", "softmax", "--scheduler", "none", "--dtype", "float64"])
    assert list(results) == ["softmax regression"]
    assert results["softmax regression"]["steps"] == 2 * 43
    assert "SGD(lr=0.2) with no schedule" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--optimizer", "NoSuchOptimizer", "--epochs", "1"])


def test_plot_writes_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    main(["--epochs", "2", "--plot", str(path)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_so(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    path = tmp_path / "curves.png"
    main(["--epochs", "1", "--model", "softmax", "--plot", str(path)])
    assert "needs matplotlib" in capsys.readouterr().err
    assert not path.exists()


def test_progress_bar_on_a_terminal_and_lines_elsewhere():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    bar = Progress(4, "m", stream=tty)
    for i in range(1, 5):
        bar.update(i, loss=1.0 / i)
    assert "\r" in tty.getvalue() and "[####" in tty.getvalue()
    plain = io.StringIO()
    lines = Progress(20, "m", stream=plain)
    for i in range(1, 21):
        lines.update(i, loss=1.0)
    text = plain.getvalue()
    assert "\r" not in text and text.count("\n") == 10


def test_command_line_entry_points():
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    out = subprocess.run([sys.executable, "-m", "nopt", "demo", "--epochs", "1", "--model", "softmax"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "softmax regression" in out.stdout and "epoch 1/1" in out.stdout
    out = subprocess.run([sys.executable, "-m", "nopt", "config"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0 and "openmp" in out.stdout
    out = subprocess.run([sys.executable, "-m", "nopt", "frobnicate"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 2


# ---------------------------------------------------------------- every optimizer
from nopt import demo as demo_module  # noqa: E402

EXPORTED = demo_module.optimizer_classes()


def test_optimizer_choices_are_exactly_the_exported_optimizer_classes():
    import nopt

    api = ("step", "zero_grad", "state_dict", "load_state_dict", "param_groups")
    expected = {name for name in nopt.__all__
                if isinstance(getattr(nopt, name), type) and name != "Optimizer"
                and (issubclass(getattr(nopt, name), nopt.Optimizer)
                     or all(hasattr(getattr(nopt, name), a) for a in api))}
    assert set(EXPORTED) == expected
    # Today's torch-style rules are all there (the discovery is not empty by accident).
    assert {"SGD", "Adam", "LBFGS", "CG", "SparseAdam", "ApplyIfFinite"} <= set(EXPORTED)
    assert "Optimizer" not in EXPORTED and "utils" not in EXPORTED


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_every_exported_optimizer_trains_or_says_why_in_one_line(name, capsys):
    # Case-insensitive, one short epoch on the small model.
    argv = ["--optimizer", name.lower(), "--epochs", "1", "--model", "softmax"]
    try:
        results = main(argv)
    except SystemExit as exc:
        message = str(exc.code)
        assert message.startswith(f"nopt demo: {name} cannot train the demo's models: "), message
        assert "\n" not in message and len(message) < 300
        assert capsys.readouterr().out == ""       # refused before printing anything
        return
    r = results["softmax regression"]
    assert r["optimizer"] == name
    assert r["final_loss"] < r["initial_loss"], r
    out = capsys.readouterr().out
    assert f"{name}(" in out and "final loss" in out


def test_torch_rules_and_closure_optimizers_train():
    for name in ["SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "Adagrad", "Adadelta",
                 "RMSprop", "Rprop", "ASGD", "LBFGS", "CG"]:
        assert demo_module.refusal(name, EXPORTED[name]) is None, name
    assert demo_module.needs_closure(EXPORTED["LBFGS"]) and demo_module.needs_closure(EXPORTED["CG"])
    assert not demo_module.needs_closure(EXPORTED["Adam"])


def test_closure_optimizers_train_full_batch(capsys):
    results = main(["--optimizer", "LBFGS", "--epochs", "2", "--model", "softmax"])
    r = results["softmax regression"]
    assert r["full_batch"] and r["steps"] == 2 and r["final_loss"] < 0.2 * r["initial_loss"]
    results = main(["--optimizer", "cg", "--epochs", "2", "--model", "softmax"])
    assert results["softmax regression"]["lr"] is None
    assert "CG(line search, no lr) with no schedule, full batch" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["--optimizer", "CG", "--lr", "0.1", "--epochs", "1"])
    assert exc.value.code == 2
    assert "CG takes no learning rate" in capsys.readouterr().err


def test_a_wrapper_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--optimizer", "applyiffinite", "--epochs", "1"])
    assert str(exc.value.code) == (
        "nopt demo: ApplyIfFinite cannot train the demo's models: it wraps another optimizer "
        "(ApplyIfFinite(optimizer, ...)); the demo trains plain optimizers, e.g. --optimizer Adam")


def test_sparse_adam_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--optimizer", "SparseAdam", "--epochs", "1"])
    assert str(exc.value.code).startswith("nopt demo: SparseAdam cannot train the demo's models: ")
    assert "scipy.sparse" in str(exc.value.code) and "\n" not in str(exc.value.code)


def test_an_optimizer_that_fails_to_start_says_why_in_one_line(capsys):
    import nopt
    from nopt.models import SoftmaxRegression, load_digits, train_test_split

    class Wrapper(nopt.Optimizer):     # takes an optimizer, not parameters
        def __init__(self, optimizer, k=5):
            super().__init__(optimizer.param_groups[0]["params"], {"k": k})

    class Broken(nopt.Optimizer):
        def __init__(self, params, lr=0.1):
            super().__init__(params, {"lr": lr})

        def step(self, closure=None):
            raise ValueError("needs 2-D parameters,\nand this one is 1-D")

    X, y = load_digits(np.float64)
    X_train, X_test, y_train, y_test = train_test_split(X, y)
    for cls, why in [(Wrapper, r"wraps another optimizer \(Wrapper\(optimizer, ...\)\)"), (Broken, "ValueError: needs 2-D parameters, and")]:
        with pytest.raises(demo_module.DemoError, match=why) as exc:
            demo_module.train(SoftmaxRegression(64, 10), X_train, y_train, X_test, y_test, optimizer=cls, lr=0.1, epochs=1,
                              stream=io.StringIO())
        assert "\n" not in str(exc.value)


@pytest.mark.parametrize("argv, error", [
    (["--lr", "-1"], "argument --lr: must be positive, got -1"),
    (["--lr", "nan"], "argument --lr: must be positive"),
    (["--lr", "abc"], "argument --lr: expected a positive float"),
    (["--epochs", "0"], "argument --epochs: must be positive, got 0"),
    (["--batch-size", "-3"], "argument --batch-size: must be positive"),
    (["--hidden", "0"], "argument --hidden: must be positive"),
    (["--threads", "0"], "argument --threads: must be positive"),
    (["--seed", "-1"], "argument --seed: must be >= 0"),
    (["--optimizer", "Foo"], "unknown optimizer 'Foo'; choose one of: SGD, Adam"),
    (["--optimizer", "utils"], "unknown optimizer 'utils'"),
    (["--optimizer", "Optimizer"], "unknown optimizer 'Optimizer'"),
])
def test_bad_values_are_command_line_errors(argv, error, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert error in captured.err
    assert captured.out == ""                  # no header before the error


def test_help_shows_defaults_and_every_optimizer(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ["(default: 30)", "(default: 64)", "(default: cosine)", "(default: Adam)",
                 "(default: float32)", "Adam 0.01", "SGD 0.1"]:
        assert text in out, text
    for name in EXPORTED:
        assert name in out


def test_plot_has_a_title_and_an_lr_panel(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.figure

    seen = {}
    real_savefig = matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kwargs):
        seen["title"] = fig._suptitle.get_text()
        seen["axes"] = [ax.get_title() for ax in fig.axes]
        seen["lr"] = [line.get_ydata() for line in fig.axes[2].get_lines()]
        return real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    main(["--optimizer", "sgd", "--lr", "0.3", "--epochs", "2", "--model", "softmax",
          "--plot", str(tmp_path / "c.png")])
    assert seen["title"] == "nopt demo: SGD(lr=0.3) with cosine schedule"
    assert seen["axes"] == ["Loss", "Test accuracy", "Learning rate"]
    (lr,) = seen["lr"]
    assert lr[0] == pytest.approx(0.3) and lr[-1] < 0.01 and len(lr) == 2 * 22


def test_version_and_demo_errors_from_the_command_line():
    import nopt

    env = dict(os.environ, PYTHONPATH=os.getcwd())

    def run(*args):
        return subprocess.run([sys.executable, "-m", "nopt", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"nopt {nopt.__version__}"
    out = run("demo", "--lr", "-1")
    assert out.returncode == 2 and "Traceback" not in out.stderr and "--lr: must be positive" in out.stderr
    out = run("demo", "--optimizer", "SparseAdam")
    assert out.returncode == 1 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "SparseAdam cannot train" in out.stderr


def test_a_pipe_closed_early_is_quiet():
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    out = subprocess.run(f"{sys.executable} -m nopt demo --epochs 3 --model softmax | head -1",
                         shell=True, capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.startswith("nopt demo: digits") and out.stdout.count("\n") == 1
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
