"""How the suite itself runs: pytest-xdist workers by default (pyproject.toml),
and tests/conftest.py's thread settings and MPI guard."""
import importlib.util
import os
import tomllib
from types import SimpleNamespace

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def conftest():
    spec = importlib.util.spec_from_file_location("suite_conftest", os.path.join(ROOT, "tests", "conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(numprocesses):
    option = SimpleNamespace(numprocesses=numprocesses)
    return SimpleNamespace(option=option, getoption=lambda name, default=None: getattr(option, name, default))


def test_the_suite_runs_on_one_worker_per_core_with_the_test_extra():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    assert "-n auto" in project["tool"]["pytest"]["ini_options"]["addopts"]
    assert any(r.startswith("pytest-xdist") for r in project["project"]["optional-dependencies"]["test"])


def test_idle_openmp_threads_sleep():
    # Set by the conftest before nopt's (or torch's) OpenMP runtime loads; a user's value stands.
    assert os.environ.get("OMP_WAIT_POLICY")


@pytest.mark.parametrize("variable", ["PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"])
def test_mpi_ranks_run_their_tests_in_process(conftest, monkeypatch, variable):
    monkeypatch.setenv(variable, "0")
    config = _config(2)
    conftest.pytest_cmdline_main(config)
    assert config.option.numprocesses == 0


def test_without_an_mpi_launcher_the_workers_stay(conftest, monkeypatch):
    for name in conftest.MPI_LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    config = _config(2)
    conftest.pytest_cmdline_main(config)
    assert config.option.numprocesses == 2


def test_each_workers_blas_gets_its_share_of_the_cores(conftest, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    for name in conftest.BLAS_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(conftest, "_usable_cpus", lambda: 8)
    conftest.pytest_configure(_config(2))
    assert all(os.environ[name] == "4" for name in conftest.BLAS_THREAD_VARIABLES)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")  # a user's setting stands
    conftest.pytest_configure(_config(4))
    assert os.environ["OPENBLAS_NUM_THREADS"] == "3" and os.environ["MKL_NUM_THREADS"] == "4"


def test_in_process_runs_leave_blas_alone(conftest, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    for name in conftest.BLAS_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for workers in (0, 1, None):
        conftest.pytest_configure(_config(workers))
    assert not any(name in os.environ for name in conftest.BLAS_THREAD_VARIABLES)


def test_auto_workers_follow_the_usable_cores(conftest, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    monkeypatch.setattr(conftest, "_usable_cpus", lambda: 2)
    assert conftest.pytest_xdist_auto_num_workers(None) == 2
    monkeypatch.setattr(conftest, "_usable_cpus", lambda: 64)
    assert conftest.pytest_xdist_auto_num_workers(None) == 8
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "3")
    assert conftest.pytest_xdist_auto_num_workers(None) is None  # xdist's own hook reads it
