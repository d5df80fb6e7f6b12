"""Thread control: nopt's thread API, OMP_NUM_THREADS, threadpoolctl, and no nested teams."""
import os
import subprocess
import sys

import numpy as np
import pytest

import nopt
from nopt._kernels import _plan

needs_openmp = pytest.mark.skipif(not _plan.HAVE_OPENMP, reason="built without OpenMP")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIG = 4 * _plan.SERIAL_BELOW  # large enough to run on several threads


def _big_table():
    a, g = np.zeros(BIG, np.float32), np.zeros(BIG, np.float32)
    return _plan.make_table([[a], [g]])


def _sgd_result(n_steps=3):
    rng = np.random.default_rng(0)
    p = nopt.Parameter(rng.standard_normal(BIG).astype(np.float32))
    opt = nopt.SGD([p], lr=0.01, momentum=0.9)
    for _ in range(n_steps):
        p.grad = rng.standard_normal(BIG).astype(np.float32)
        opt.step()
    return p.tobytes()


def test_set_get_and_context_manager():
    before = nopt.get_num_threads()
    with nopt.num_threads(1):
        assert nopt.get_num_threads() == 1
        assert _big_table()[2] == 1
    assert nopt.get_num_threads() == before
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="positive int"):
            nopt.set_num_threads(bad)


@needs_openmp
def test_context_manager_sets_table_threads():
    with nopt.num_threads(3):
        assert nopt.get_num_threads() == 3
        assert _big_table()[2] == 3


def test_small_steps_are_serial():
    a = np.zeros(_plan.SERIAL_BELOW - 1, np.float32)
    with nopt.num_threads(2):
        assert _plan.make_table([[a], [a.copy()]])[2] == 1


@needs_openmp
def test_never_more_threads_than_tasks():
    a = np.zeros(_plan.SERIAL_BELOW, np.float32)  # two tasks
    with nopt.num_threads(8):
        ptrs, chunks, n_threads = _plan.make_table([[a], [a.copy()]])
    assert chunks.shape[0] == 2 and n_threads == 2


def _run_child(code, **env):
    full_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=full_env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


CHILD = (
    "import numpy as np, nopt\n"
    "from nopt._kernels import _plan\n"
    f"a = np.zeros({BIG}, np.float32)\n"
    "print(nopt.get_num_threads(), _plan.make_table([[a], [a.copy()]])[2], "
    "nopt.get_config()['num_threads'])\n"
)


@needs_openmp
@pytest.mark.parametrize("n", [1, 3])
def test_omp_num_threads_is_respected(n):
    assert _run_child(CHILD, OMP_NUM_THREADS=str(n)) == [str(n)] * 3


def test_omp_num_threads_1_gives_same_bits():
    """A subprocess pinned to one thread steps to the same bits as this one."""
    code = (
        "import sys, hashlib\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_threads import _sgd_result\n"
        "print(hashlib.sha256(_sgd_result()).hexdigest())\n"
    )
    import hashlib

    assert _run_child(code, OMP_NUM_THREADS="1") == [hashlib.sha256(_sgd_result()).hexdigest()]


@needs_openmp
def test_threadpoolctl_limits_apply():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with nopt.num_threads(2):
        with threadpoolctl.threadpool_limits(1, user_api="openmp"):
            assert nopt.get_num_threads() == 1
            assert _big_table()[2] == 1
            inside = _sgd_result()
        assert nopt.get_num_threads() == 2
        assert _big_table()[2] == 2
        assert _sgd_result() == inside


@needs_openmp
def test_threadpoolctl_sees_the_kernels_openmp():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from nopt._kernels import rules as sgd_module

    infos = threadpoolctl.threadpool_info()
    openmp = [i for i in infos if i["user_api"] == "openmp"]
    assert openmp, infos
    assert sgd_module.__file__  # loaded, so its OpenMP runtime is in the list above


@needs_openmp
def test_kernels_inside_a_parallel_region_run_serially():
    """Called from an OpenMP team, a step uses one thread (no nested teams) and gives the same bits."""
    expected = _sgd_result()

    def work():
        assert _plan.in_parallel()
        with nopt.num_threads(2):
            table_threads = _big_table()[2]
        return table_threads, _sgd_result()

    results = _plan.call_in_parallel(work, 2)
    assert not _plan.in_parallel()
    assert len(results) == 2
    for table_threads, bits in results:
        assert table_threads == 1
        assert bits == expected


def test_call_in_parallel_propagates_errors():
    def boom():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _plan.call_in_parallel(boom, 2)
