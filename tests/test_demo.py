"""The main job: `nopt demo` (also `python -m nopt demo`)."""
import builtins
import io
import os
import subprocess
import sys

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
    assert "SGD(lr=0.2)" in capsys.readouterr().out
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
