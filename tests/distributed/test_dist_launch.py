"""Plain-suite tests of nopt.distributed: no MPI in this process, ranks in subprocesses.

* ``import nopt`` never needs mpi4py; ``import nopt.distributed`` without it
  raises an ImportError that says what to install.
* With mpi4py and ``mpiexec`` present: the example and ``nopt demo
  --distributed`` run under ``mpiexec -n 2``, print from rank 0 only, and the
  demo reaches a single process's accuracy.
"""
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAUNCHED = any(v in os.environ for v in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"))
pytestmark = pytest.mark.skipif(LAUNCHED, reason="launches its own ranks; run it in the plain suite")


def child_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_", "HYDRA_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("MPIR_CVAR_ENABLE_HEAVY_YIELD", "1")   # waiting ranks yield the CPU (see README)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run(args, timeout=120):
    return subprocess.run(args, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout)


def test_nopt_imports_without_mpi4py_and_distributed_says_what_to_install():
    code = (
        "import sys; sys.modules['mpi4py'] = None\n"      # as if mpi4py were not installed
        "import nopt; nopt.Adam\n"
        "try:\n    import nopt.distributed\nexcept ImportError as e:\n    print('ImportError:', e)\n"
    )
    out = run([sys.executable, "-c", code])
    assert out.returncode == 0, out.stderr
    assert "ImportError: nopt.distributed needs mpi4py and an MPI library: pip install 'nopt[mpi]'" in out.stdout
    assert "pip install mpi4py mpich" in out.stdout


def mpiexec():
    pytest.importorskip("mpi4py")
    path = shutil.which("mpiexec")
    if path is None:
        pytest.skip("no mpiexec on PATH (pip install mpich)")
    return path


def test_example_runs_under_mpiexec_and_prints_once():
    out = run([mpiexec(), "-n", "2", sys.executable, "examples/distributed_mlp.py", "--quick"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("final test accuracy") == 1, out.stdout
    assert "2 rank(s), DistributedOptimizer" in out.stdout


def test_demo_distributed_reaches_the_single_process_accuracy():
    from nopt.demo import main

    args = ["--model", "softmax", "--epochs", "5", "--threads", "1"]
    single = main(args)["softmax regression"]["final_accuracy"]
    out = run([mpiexec(), "-n", "2", sys.executable, "-m", "nopt", "demo", "--distributed", *args])
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("nopt demo --distributed: 2 rank(s)") == 1, out.stdout   # rank 0 only
    line = next(line for line in out.stdout.splitlines() if "softmax regression: final loss" in line)
    accuracy = float(re.search(r"test accuracy ([\d.]+)%", line).group(1)) / 100
    assert abs(accuracy - single) <= 0.01, (accuracy, single)
    assert re.search(r"ms per step .* communication [\d.]+ ms \(\d+%\)", line), line


def test_bench_distributed_smoke(tmp_path):
    out = run([mpiexec(), "-n", "2", sys.executable, "-m", "nopt.bench", "--distributed", "--sizes", "16K",
               "--repeat", "1", "--min-time", "0.001", "--json", str(tmp_path / "rows.json")])
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("busbw GB/s") == 1, out.stdout           # rank 0 prints the header once
    import json

    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["ranks"] for r in rows] == [1, 2]
    assert rows[1]["zero_state_bytes_max"] * 2 == rows[1]["plain_state_bytes"]   # 16 equal arrays, 2 ranks
    assert all(rows[1][k] > 0 for k in ("step", "allreduce", "allreduce+step", "bucketed", "deterministic"))


def test_a_dead_rank_is_mpis_to_handle(tmp_path):
    """Rank 1 dies before a collective; rank 0 waits in it until mpiexec ends the job."""
    script = tmp_path / "die.py"
    script.write_text(
        "import os, sys, numpy as np, nopt\n"
        "from mpi4py import MPI\n"
        "from nopt.distributed import DistributedOptimizer\n"
        "p = nopt.Parameter(np.zeros(3))\n"
        "opt = DistributedOptimizer(nopt.SGD([p], lr=0.1))\n"
        "p.grad = np.ones(3)\n"
        "if MPI.COMM_WORLD.rank == 1:\n"
        "    os._exit(3)              # dies without telling anyone\n"
        "opt.step()                   # rank 0 blocks here\n"
        "print('rank 0 stepped alone', flush=True)\n")
    out = run([mpiexec(), "-n", "2", sys.executable, str(script)], timeout=60)
    assert out.returncode != 0
    assert "stepped alone" not in out.stdout
