"""Porting from torch.optim: the ``nopt.optim`` namespace, torch's signatures,
a torch script ported by its imports, and gradients from ``autograd``."""
import difflib
import importlib
import inspect
import pathlib

import numpy as np
import pytest

import nopt
from nopt import optim

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
# Accepted and ignored by nopt (its base class), or absent: not compared.
IGNORED = {"foreach", "fused", "capturable", "differentiable"}


def _load(path):
    spec = importlib.util.spec_from_file_location(path.stem + "_" + path.parent.name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_optim_namespace_is_nopts_classes_and_modules():
    for name in optim.__all__:
        value = getattr(optim, name)
        assert value is getattr(nopt, name), name
    assert optim.lr_scheduler is nopt.lr_scheduler and optim.swa_utils is nopt.swa_utils
    from nopt.optim.lr_scheduler import OneCycleLR
    from nopt.optim.swa_utils import SWALR
    import nopt.optim.lr_scheduler as lr_scheduler

    assert OneCycleLR is nopt.lr_scheduler.OneCycleLR and SWALR is nopt.swa_utils.SWALR
    assert lr_scheduler is nopt.lr_scheduler
    assert set(dir(optim)) >= set(optim.__all__)
    assert optim.CG is nopt.CG       # nopt's own optimizers are reachable too
    assert nopt.optim is optim and "optim" in nopt.__all__
    with pytest.raises(AttributeError):
        optim.minimize              # but only optimizers


def _torch_optimizers():
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return []
    return [name for name in torch.optim.__all__
            if isinstance(getattr(torch.optim, name), type)
            and issubclass(getattr(torch.optim, name), torch.optim.Optimizer)
            and name != "Optimizer"]


@pytest.mark.parametrize("name", _torch_optimizers() or ["(torch not installed)"])
def test_every_torch_optimizer_is_in_nopt_optim_with_torchs_signature(name):
    torch = pytest.importorskip("torch")
    assert name in optim.__all__, f"nopt.optim lacks {name}"
    theirs = inspect.signature(getattr(torch.optim, name).__init__).parameters.values()
    ours = inspect.signature(getattr(optim, name).__init__).parameters.values()
    theirs = [p for p in theirs if p.name not in IGNORED]
    ours = [p for p in ours if p.name not in IGNORED]
    # torch's arguments, in torch's order; nopt may add its own after them
    # (e.g. LBFGS's bounds=), with defaults, so every torch call binds the same.
    assert [p.name for p in ours[:len(theirs)]] == [p.name for p in theirs]
    for extra in ours[len(theirs):]:
        assert extra.default is not inspect.Parameter.empty, f"nopt-only {extra.name} needs a default"
    for o, t in zip(ours, theirs):
        assert o.default == t.default or (o.default is t.default), (o.name, o.default, t.default)
    # Positional order is torch's up to torch's first ignored argument; after
    # it torch's arguments cannot be passed by position meaningfully, and
    # nopt may make them keyword-only.
    full = list(inspect.signature(getattr(torch.optim, name).__init__).parameters.values())
    first_ignored = next((i for i, p in enumerate(full) if p.name in IGNORED), len(full))
    for o, t in zip(ours, full[:first_ignored]):
        assert o.kind == t.kind, (o.name, o.kind, t.kind)


def test_the_other_torch_optim_names_are_covered():
    torch = pytest.importorskip("torch")
    for name in torch.optim.__all__:
        if name in ("swap_in_optimizer_params_and_state",):
            continue   # a tracing helper for torch's FX graphs, not an optimizer
        assert hasattr(optim, name), name


def _code_lines(path):
    """The script's lines after its module docstring."""
    return path.read_text().split('"""', 2)[2].splitlines()


def test_ported_script_differs_from_torchs_only_in_imports_and_backward_pass():
    original = _code_lines(EXAMPLES / "torch_original" / "port_from_torch.py")
    ported = _code_lines(EXAMPLES / "port_from_torch.py")
    changed = [line[1:] for line in difflib.unified_diff(original, ported, lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---", "@@"))]
    allowed = (
        "import ", "from ",                                            # the imports
        "    return torch.from_numpy(x)", "    return np.asarray(x)",  # the array constructor
        "    loss = torch.nn.functional.cross_entropy(", "    loss.backward()",  # the backward
        "    return loss.item()", "    loss, dlogits = cross_entropy(", "    W.grad, b.grad = ",
        "    return loss",
    )
    unexpected = [line for line in changed if line.strip() and not line.startswith(allowed)]
    assert not unexpected, unexpected
    assert "from torch import optim" in changed and "from nopt import optim" in changed
    assert len(changed) <= 16


def test_ported_script_runs_and_reproduces_the_torch_original():
    losses, accuracy = _load(EXAMPLES / "port_from_torch.py").main(quick=True)
    assert losses[-1] < 0.5 * losses[0] and accuracy > 0.9
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    torch_losses, torch_accuracy = _load(EXAMPLES / "torch_original" / "port_from_torch.py").main(quick=True)
    np.testing.assert_allclose(losses, torch_losses, rtol=1e-9)
    assert accuracy == torch_accuracy


def test_autograd_example_trains_with_nopt():
    pytest.importorskip("autograd")
    history, accuracy = _load(EXAMPLES / "autograd_mlp.py").main(quick=True)
    assert history[-1] < 0.5 * history[0]
    assert accuracy > 0.85


def test_autograd_gradients_of_parameter_views_drive_every_optimizer():
    autograd = pytest.importorskip("autograd")
    anp = pytest.importorskip("autograd.numpy")
    rng = np.random.default_rng(0)
    A = rng.standard_normal((20, 5))
    target = rng.standard_normal(20)

    def loss(arrays):
        w, b = arrays
        return anp.mean((anp.dot(A, w) + b - target) ** 2)

    for dtype in (np.float64, np.float32):
        w, b = nopt.Parameter(np.zeros((5,), dtype)), nopt.Parameter(np.zeros((1,), dtype))
        views = [np.asarray(w), np.asarray(b)]
        assert all(np.shares_memory(v, p) for v, p in zip(views, (w, b)))
        grads = autograd.grad(loss)(views)
        expected_w = 2 * A.T @ (A @ np.asarray(w, np.float64) + float(b[0]) - target) / 20
        np.testing.assert_allclose(grads[0], expected_w, rtol=1e-6)
        opt = nopt.Adam([w, b], lr=0.05)
        first = float(loss(views))
        for _ in range(300):
            w.grad, b.grad = (np.asarray(g, dtype) for g in autograd.grad(loss)(views))
            opt.step()
        best = np.linalg.lstsq(np.c_[A, np.ones(20)], target, rcond=None)[0]
        assert float(loss(views)) < 0.5 * first
        np.testing.assert_allclose(np.r_[w, b], best, atol=2e-2)
