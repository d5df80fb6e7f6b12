"""Smoke tests: every script in examples/ runs (in its quick mode) and does its job."""
import importlib.util
import pathlib

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_has_a_smoke_test():
    # distributed_mlp's runs under mpiexec: tests/distributed/test_dist_launch.py
    scripts = sorted(p.stem for p in EXAMPLES.glob("*.py"))
    assert scripts == sorted([
        "checkpoint_resume", "distributed_mlp", "least_squares_cg", "logistic_regression_lbfgs",
        "matrix_factorization_sparse_adam", "mlp_adamw_onecycle",
        # tested in test_torch_porting.py:
        "autograd_mlp", "port_from_torch",
    ])


def test_logistic_regression_lbfgs_vs_adam(capsys):
    lbfgs_loss, adam_loss = load("logistic_regression_lbfgs").main(quick=True)
    assert lbfgs_loss <= adam_loss * (1 + 1e-9)
    assert "L-BFGS" in capsys.readouterr().out


def test_mlp_adamw_onecycle():
    accuracy = load("mlp_adamw_onecycle").main(quick=True)
    assert accuracy > 0.85


def test_matrix_factorization_sparse_adam():
    rmse = load("matrix_factorization_sparse_adam").main(quick=True)
    assert rmse < 0.6  # the ratings have std ~1; noise 0.05


def test_least_squares_cg():
    err_closure, err_minimize, _ = load("least_squares_cg").main(quick=True)
    assert err_closure < 1e-6 and err_minimize < 1e-6


def test_checkpoint_resume_is_identical():
    assert load("checkpoint_resume").main(quick=True) is True
