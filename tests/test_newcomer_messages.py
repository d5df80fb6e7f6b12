"""The messages a newcomer meets first: dtype mismatches and complex data."""
import numpy as np
import pytest

import nopt


def test_float64_grad_on_a_float32_parameter_suggests_astype():
    p = nopt.Parameter(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match=r"grad has dtype float64; expected float32, the "
                                        r"parameter's dtype \(convert it: param.grad = "
                                        r"grad.astype\(param.dtype\)\)"):
        p.grad = np.zeros(3)
    assert p.grad is None
    p.grad = np.zeros(3).astype(p.dtype)          # the suggested fix works
    assert p.grad.dtype == np.float32


def test_the_step_names_the_parameter_and_suggests_astype():
    # A grad that bypassed the setter (the kernels' own check at the boundary).
    p = nopt.Parameter(np.zeros(3, np.float32))
    opt = nopt.Adam([p], lr=0.1)
    p._grad = np.ones(3)
    with pytest.raises(TypeError, match=r"the grad of param_groups\[0\]\['params'\]\[0\] has "
                                        r"dtype float64; expected float32, the parameter's "
                                        r"dtype \(convert it: p.grad = grad.astype\(p.dtype\)\)"):
        opt.step()
    assert not opt.state[p] and np.all(p == 0)


@pytest.mark.parametrize("data", [np.zeros(3, np.complex128), np.ones((2, 2), np.complex64),
                                  [1 + 2j, 3.0], 1j])
def test_complex_data_is_not_a_real_float_type(data):
    with pytest.raises(TypeError, match="has dtype complex(64|128), which is not a real float type"):
        nopt.Parameter(data)


def test_complex_dtype_is_not_a_real_float_type():
    with pytest.raises(TypeError, match="got complex128, not a real float type"):
        nopt.Parameter(np.zeros(3), dtype=np.complex128)


def test_other_non_float_data_keeps_its_message():
    with pytest.raises(TypeError, match="must be numeric, got dtype <U1"):
        nopt.Parameter(np.array(["a"]))
    assert nopt.Parameter([1, 2]).dtype == np.float64           # integer lists convert, as before


def test_bench_without_torch_says_how_to_install_it(monkeypatch):
    import builtins

    from nopt import bench

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    lines = []
    result = bench.run(optimizers=["SGD"], cases=["2x10"], repeat=1, min_time=1e-4, log=lines.append)
    assert result["meta"]["torch"] is None
    (row,) = [line for line in lines if line.startswith("SGD")]
    assert row.split()[-3:] == ["-", "-", "-"]
    assert bench.TORCH_HINT in lines and "pip install torch==2.13.0" in bench.TORCH_HINT
    # Not said when torch's columns were not asked for.
    lines.clear()
    bench.run(optimizers=["SGD"], cases=["2x10"], repeat=1, min_time=1e-4, log=lines.append,
              peers=["nopt", "numpy"])
    assert bench.TORCH_HINT not in lines
