import os
import zipfile

import numpy as np
import pytest

import nopt
from nopt import CheckpointError


def sample():
    return {
        "state": {0: {"step": 3.0, "exp_avg": np.arange(4, dtype=np.float32).reshape(2, 2)},
                  1: {"momentum_buffer": None, "flag": True, "n": 7}},
        "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "name": "g", "params": [0, 1],
                          "nan": float("nan"), "inf": float("-inf"), "np": np.float32(2.5)}],
        "list": [1, [2.5, "x"], np.int64(4)],
        "zero_d": np.array(1.5),
        "f_order": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    }


def test_round_trip_preserves_types_and_values(tmp_path):
    path = tmp_path / "ckpt.nopt"
    nopt.save(sample(), path)
    out = nopt.load(path)
    assert list(out["state"].keys()) == [0, 1]
    a = out["state"][0]["exp_avg"]
    assert a.dtype == np.float32 and a.shape == (2, 2) and a[1, 1] == 3
    assert out["state"][0]["step"] == 3.0
    assert out["state"][1] == {"momentum_buffer": None, "flag": True, "n": 7}
    g = out["param_groups"][0]
    assert g["betas"] == (0.9, 0.999) and isinstance(g["betas"], tuple)
    assert g["params"] == [0, 1] and g["name"] == "g"
    assert np.isnan(g["nan"]) and g["inf"] == float("-inf")
    assert g["np"] == 2.5 and isinstance(g["np"], np.float32)
    assert out["list"][:2] == [1, [2.5, "x"]] and out["list"][2] == 4
    assert out["zero_d"].shape == () and out["zero_d"] == 1.5
    np.testing.assert_array_equal(out["f_order"], np.arange(6.0).reshape(2, 3))


def test_optimizer_checkpoint_round_trip(tmp_path):
    p = nopt.Parameter(np.ones(5))
    opt = nopt.SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.full(5, 0.5)
    opt.step()
    nopt.save(opt.state_dict(), tmp_path / "opt.nopt")
    q = nopt.Parameter(p.copy())
    opt2 = nopt.SGD([q], lr=1.0)
    opt2.load_state_dict(nopt.load(tmp_path / "opt.nopt"))
    for x in (p, q):
        x.grad = np.full(5, 0.25)
    opt.step()
    opt2.step()
    assert p.tobytes() == q.tobytes()


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "ckpt.nopt"
    nopt.save({"a": 1}, path)
    nopt.save({"a": 2}, path)
    assert nopt.load(path) == {"a": 2}
    assert os.listdir(tmp_path) == ["ckpt.nopt"]
    with pytest.raises(TypeError):
        nopt.save({"a": object()}, path)
    assert nopt.load(path) == {"a": 2}
    assert os.listdir(tmp_path) == ["ckpt.nopt"]


@pytest.mark.parametrize("bad", [object(), {"k": lambda: 1}, {(1, 2): 3}, np.array([None, 1])])
def test_save_rejects_unsupported_objects(bad, tmp_path):
    with pytest.raises(TypeError):
        nopt.save(bad, tmp_path / "x")


def test_truncated_file_raises_clear_error(tmp_path):
    path = tmp_path / "ckpt.nopt"
    nopt.save(sample(), path)
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 5):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError):
            nopt.load(path)


def test_foreign_files_raise_clear_error(tmp_path):
    path = tmp_path / "foreign"
    path.write_bytes(b"\x80\x04\x95 pickle-looking bytes")
    with pytest.raises(CheckpointError, match="not a nopt checkpoint"):
        nopt.load(path)
    np.savez(tmp_path / "arrays.npz", a=np.ones(3))
    with pytest.raises(CheckpointError, match="not a nopt checkpoint"):
        nopt.load(tmp_path / "arrays.npz")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("manifest.json", '{"format": "something-else", "version": 1, "root": 1}')
    with pytest.raises(CheckpointError, match="not a nopt checkpoint"):
        nopt.load(tmp_path / "other.zip")


def test_corrupted_array_bytes_raise(tmp_path):
    path = tmp_path / "ckpt.nopt"
    nopt.save({"a": np.arange(1000.0)}, path)
    data = bytearray(path.read_bytes())
    i = data.find(b"NUMPY")
    data[i + 400] ^= 0xFF  # flip bits inside the array payload
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        nopt.load(path)


def test_load_never_unpickles(tmp_path):
    # An object array stored by a foreign writer must be refused, not unpickled.
    path = tmp_path / "evil.nopt"
    import io
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("manifest.json", '{"format": "nopt-checkpoint", "version": 1, "root": {"__array__": "a0"}}')
        z.writestr("arrays/a0.npy", buf.getvalue())
    with pytest.raises(CheckpointError, match="unreadable"):
        nopt.load(path)
