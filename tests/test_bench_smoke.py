"""The benchmark tools run and report well-formed results (no timing assertions)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import nopt
import optim_db
from nopt import _reference, bench
from nopt._kernels import _plan, helpers as roofline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cli_quick_json(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "nopt.bench", "--quick", "--optimizers", "SGD,Adam",
         "--cases", "1x100,3x1000-flat,2x50-f64", "--threads", "1,2", "--repeat", "2",
         "--min-time", "0.001", "--json", str(out)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "SGD" in proc.stdout and "1x100" in proc.stdout
    data = json.loads(out.read_text())
    assert set(data) == {"meta", "results", "skipped", "scaling"}
    assert data["meta"]["repeat"] == 2 and "nopt_config" in data["meta"]
    assert isinstance(data["meta"]["simd"], str) and data["meta"]["simd"]
    sgd = [r for r in data["results"] if r["optimizer"] == "SGD"]
    assert [(r["case"], r["threads"]) for r in sgd] == [
        (c, t) for c in ("1x100", "3x1000-flat", "2x50-f64") for t in (1, 2)]
    for r in sgd:
        assert r["bytes_per_element"] == (20 if r["dtype"] == "float32" else 40)
        assert r["n_elements"] == {"1x100": 100, "3x1000-flat": 3000, "2x50-f64": 100}[r["case"]]
        for peer in ("nopt", "roofline", "numpy"):
            p = r["peers"][peer]
            assert len(p["samples_s"]) == 2 and p["median_s"] > 0 and p["gbps"] > 0
        assert r["roofline_pct"] > 0 and r["speedup"]["numpy"] > 0
    if not hasattr_safe("Adam"):
        assert {"optimizer": "Adam", "reason": "nopt has no Adam yet"} in data["skipped"]
    assert {(s["case"], s["threads"]) for s in data["scaling"] if s["optimizer"] == "SGD"} == {
        ("1x100", 2), ("3x1000-flat", 2), ("2x50-f64", 2)}


def hasattr_safe(name):
    try:
        getattr(nopt, name)
        return True
    except (AttributeError, ImportError):
        return False


def test_run_in_process_with_every_peer():
    lines = []
    result = bench.run(optimizers=["SGD"], cases=["2x10"], repeat=1, min_time=1e-4, log=lines.append)
    (entry,) = result["results"]
    expected = {"nopt", "roofline", "numpy"}
    try:
        import torch  # noqa: F401

        expected |= {"torch-loop", "torch-foreach", "torch-fused"}
    except ImportError:
        assert set(entry["skipped"]) == {"torch-loop", "torch-foreach", "torch-fused"}
    assert set(entry["peers"]) == expected
    assert len(lines) >= 2 and lines[0].split()[:3] == ["optimizer", "case", "thr"]


def test_cli_rejects_bad_case():
    with pytest.raises(SystemExit):
        bench.main(["--cases", "banana"])


@pytest.mark.parametrize("name,expected", [
    ("1x16M", (1, 16 * 2**20, np.float32, False)),
    ("2000x1000-flat", (2000, 1000, np.float32, True)),
    ("1x8M-f64", (1, 8 * 2**20, np.float64, False)),
    ("3x2K-flat-f64", (3, 2048, np.float64, True)),
])
def test_parse_case(name, expected):
    c = bench.parse_case(name)
    assert (c.n_arrays, c.size, c.dtype, c.flat) == expected


def test_bytes_table_covers_every_rule():
    per_array = {name for name, spec in bench.OPTIMIZERS.items() if spec.per_array}
    assert per_array == {r.name for r in optim_db.records(elementwise=True)}
    assert bench.BYTES["Adam"] == 28 and bench.BYTES["SGD"] == 20
    # Every pass counted (the norm pass of LARS, Prodigy's two passes).
    assert bench.BYTES["LARS"] == 28 and bench.BYTES["LAMB"] == 40
    assert bench.BYTES["Prodigy"] == 48 and bench.BYTES["Adafactor"] == 32
    for spec in bench.OPTIMIZERS.values():
        for n_read, n_write in spec.all_passes:
            assert 0 <= n_write <= n_read <= roofline.MAX_STREAMS and n_read >= 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_read,n_write", [(2, 1), (3, 2), (4, 3), (5, 4), (5, 5), (6, 5), (6, 6),
                                             (1, 0), (2, 0), (6, 0)])
def test_roofline_stream_moves_the_streams(dtype, n_read, n_write):
    rng = np.random.default_rng(0)
    streams = [[rng.standard_normal(s).astype(dtype) for s in (70_000, 3, 40_000)] for _ in range(n_read)]
    before = [[a.copy() for a in s] for s in streams]
    ptrs, chunks, n_threads = _plan.make_table(streams)
    roofline.stream(ptrs, chunks, dtype == np.float64, n_threads, n_read, n_write)
    for k in range(3):
        total = sum(before[s][k] for s in range(n_read))
        expected = total * dtype(0.5 / n_read) + dtype(1)
        for s in range(n_read):
            want = expected if s < n_write else before[s][k]
            np.testing.assert_allclose(streams[s][k], want, rtol=1e-5)


def test_roofline_stream_checks_counts():
    a = [np.zeros(4, np.float32)]
    ptrs, chunks, n = _plan.make_table([a, a])
    with pytest.raises(ValueError, match="n_write"):
        roofline.stream(ptrs, chunks, False, n, 2, 3)
    with pytest.raises(ValueError, match="n_read >= 1"):
        roofline.stream(ptrs, chunks, False, n, 0, 0)
    with pytest.raises(ValueError, match="streams"):
        roofline.stream(ptrs, chunks, False, n, 3, 1)


# Every elementwise record with a torch oracle, over its whole option grid.
TORCH_OPTIONS = [(r.name, o) for r in optim_db.records(elementwise=True, torch_oracle=True) for o in r.option_sets]


@pytest.mark.parametrize("name,options", TORCH_OPTIONS, ids=[f"{n}-{o}" for n, o in TORCH_OPTIONS])
def test_numpy_rules_match_torch(name, options):
    """The NumPy peer (the tests' NumPy reference too) computes the same update as
    torch.optim (float64, 12 steps)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    shapes = [(7,), (3, 4)]
    params = [rng.standard_normal(s) for s in shapes]
    grads = [np.zeros(s) for s in shapes]
    ours = _reference.make(name, [p.copy() for p in params], grads, **options)
    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    theirs = getattr(torch.optim, name)(tparams, foreach=False, **options)
    for t in range(12):
        for g, tp in zip(grads, tparams):
            g[...] = rng.standard_normal(g.shape) if t % 5 != 4 else 0.0
            tp.grad = torch.tensor(g)
        ours.step()
        theirs.step()
    for a, tp in zip(ours.params, tparams):
        np.testing.assert_allclose(a, tp.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_numpy_sgd_matches_nopt_bitwise():
    rng = np.random.default_rng(1)
    values = [rng.standard_normal(s).astype(np.float32) for s in ((100,), (3, 5))]
    grads = [np.zeros_like(v) for v in values]
    ours = _reference.make("SGD", [v.copy() for v in values], grads, lr=0.1, momentum=0.9)
    params = [nopt.Parameter(v.copy()) for v in values]
    opt = nopt.SGD(params, lr=0.1, momentum=0.9)
    for _ in range(5):
        for g, p in zip(grads, params):
            g[...] = rng.standard_normal(g.shape)
            p.grad = g.copy()
        ours.step()
        opt.step()
    for a, p in zip(ours.params, params):
        assert a.tobytes() == p.tobytes()


def test_numpy_rules_reject_unknown_options():
    with pytest.raises(TypeError, match="unknown"):
        _reference.make("Adam", [np.zeros(2)], [np.zeros(2)], momentum=0.9)
    with pytest.raises(ValueError, match="no NumPy rule"):
        _reference.make("LBFGS", [np.zeros(2)], [np.zeros(2)])
