"""Issue 14, findings 3 and 8: checkpoints from hostile or careless sources.

Zip bombs are small files (compressed zeros) loaded under a ``max_bytes``
budget or an address-space limit (RLIMIT_AS, in a subprocess), so memory is
never actually exhausted.
"""
import json
import os
import stat
import subprocess
import sys
import textwrap
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

import nopt
from nopt import serialization
from nopt.serialization import CheckpointError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_python(code, timeout=60):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _npy_header(shape, dtype):
    """The bytes of a version 1.0 .npy header."""
    import io
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        out, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": shape})
    return out.getvalue()


def _write(path, root, members, compression=zipfile.ZIP_STORED):
    """A checkpoint with manifest ``root`` and raw ``members`` {name: bytes or (header, zeros)}."""
    manifest = {"format": "nopt-checkpoint", "version": 1, "root": root}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w", compression=compression) as archive:
            archive.writestr("manifest.json", json.dumps(manifest))
            for name, data in members:
                if isinstance(data, tuple):
                    header, zeros = data
                    with archive.open(name, "w", force_zip64=True) as out:
                        out.write(header)
                        chunk = bytes(1 << 22)
                        left = zeros
                        while left:
                            out.write(chunk[:min(left, len(chunk))])
                            left -= min(left, len(chunk))
                else:
                    archive.writestr(name, data)
    return path


def _bomb(path, n_bytes, refs=3):
    """A small file: one deflated .npy of ``n_bytes`` zeros, referenced ``refs`` times."""
    n = n_bytes // 8
    root = [{"__array__": "a0"}] * refs
    return _write(path, root, [("arrays/a0.npy", (_npy_header((n,), np.float64), n * 8))],
                  compression=zipfile.ZIP_DEFLATED)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """256 MiB of zeros in a ~250 KB file, referenced three times."""
    return _bomb(str(tmp_path_factory.mktemp("bomb") / "bomb.nopt"), 256 << 20)


def test_member_referenced_several_times_is_read_once(bomb):
    assert os.path.getsize(bomb) < 1 << 20
    out = nopt.load(bomb, max_bytes=300 << 20)
    assert out[0] is out[1] is out[2]
    assert out[0].shape == (32 << 20,) and not out[0].any()


def test_max_bytes_stops_a_bomb_before_allocating(bomb):
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="max_bytes"):
            nopt.load(bomb, max_bytes=100 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_default_budget_scales_with_the_file_size(bomb, monkeypatch):
    """The default max_bytes is max(1 GiB, 64 x file size): shown here with a 1 MiB floor."""
    monkeypatch.setattr(serialization, "_MIN_BUDGET", 1 << 20)
    with pytest.raises(CheckpointError, match="max_bytes"):
        nopt.load(bomb)
    path = os.path.join(os.path.dirname(bomb), "fine.nopt")
    nopt.save({"x": np.arange(100_000.0)}, path)
    np.testing.assert_array_equal(nopt.load(path)["x"], np.arange(100_000.0))


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's RLIMIT_AS and /proc")
def test_out_of_memory_is_a_checkpoint_error(bomb):
    """Under an address-space limit the failure is a CheckpointError, not MemoryError."""
    result = _run_python(f"""
        import resource, nopt
        from nopt import CheckpointError
        def vm():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm() + (128 << 20), resource.RLIM_INFINITY))
        try:
            nopt.load({bomb!r}, max_bytes=1 << 40)
        except CheckpointError as exc:
            print("CheckpointError", exc)
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("CheckpointError"), result.stdout


def test_arrays_are_read_straight_into_their_buffer(tmp_path):
    path = str(tmp_path / "big.nopt")
    nopt.save({"x": np.ones(4 << 20)}, path)  # 32 MiB
    tracemalloc.start()
    try:
        out = nopt.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out["x"].sum() == 4 << 20
    assert peak < (32 << 20) + (4 << 20), peak  # one copy, plus a chunk


def test_declared_size_must_match_the_member(tmp_path):
    # A header for 10 doubles followed by 1 MiB: main read it all, then
    # returned 10 elements.
    path = _write(str(tmp_path / "long.nopt"), {"__array__": "a0"},
                  [("arrays/a0.npy", (_npy_header((10,), np.float64), 1 << 20))])
    with pytest.raises(CheckpointError, match="header promises"):
        nopt.load(path)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /dev/zero and RLIMIT_AS")
def test_devices_are_refused():
    # In a subprocess with a memory limit: main read /dev/zero until killed.
    result = _run_python("""
        import resource, nopt
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, resource.RLIM_INFINITY))
        try:
            nopt.load("/dev/zero")
        except nopt.CheckpointError as exc:
            print("CheckpointError", exc)
    """)
    assert result.stdout.startswith("CheckpointError"), (result.stdout, result.stderr[-1000:])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_and_directories_are_refused(tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    result = _run_python(f"""
        import nopt
        try:
            nopt.load({fifo!r})
        except nopt.CheckpointError as exc:
            print("CheckpointError", exc)
    """, timeout=20)
    assert result.stdout.startswith("CheckpointError"), (result.stdout, result.stderr[-1000:])
    with pytest.raises(CheckpointError, match="regular file"):
        nopt.load(str(tmp_path))


def test_duplicate_members_are_refused(tmp_path):
    member = _npy_header((1,), np.float64) + np.float64(1).tobytes()
    other = _npy_header((1,), np.float64) + np.float64(2).tobytes()
    path = _write(str(tmp_path / "dup.nopt"), {"__array__": "a0"},
                  [("arrays/a0.npy", member), ("arrays/a0.npy", other)])
    with pytest.raises(CheckpointError, match="twice"):
        nopt.load(path)


@pytest.mark.parametrize("dtype", [
    np.dtype([("a", "<f8"), ("b", "<i4")]), np.dtype("<M8[s]"), np.dtype("<m8[s]"), np.dtype("|S0"),
    np.dtype("|V8"), np.dtype(("<f8", (2,))),
])
def test_foreign_dtypes_are_refused(tmp_path, dtype):
    n = 2
    size = max(np.dtype(dtype).itemsize, 0) * n
    header = _npy_header((n,), dtype)
    path = _write(str(tmp_path / "dtype.nopt"), {"__array__": "a0"},
                  [("arrays/a0.npy", header + bytes(size))])
    with pytest.raises(CheckpointError):
        nopt.load(path)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_save_through_a_symlink_replaces_the_target(tmp_path):
    target = tmp_path / "real.nopt"
    link = tmp_path / "link.nopt"
    nopt.save({"v": 1}, str(target))
    os.symlink(target, link)
    nopt.save({"v": 2}, str(link))
    assert os.path.islink(link)
    assert nopt.load(str(target)) == {"v": 2}
    assert sorted(os.listdir(tmp_path)) == ["link.nopt", "real.nopt"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_save_modes_follow_the_umask_and_keep_existing_modes(tmp_path):
    path = str(tmp_path / "ckpt.nopt")
    old = os.umask(0o022)
    try:
        nopt.save({"v": 1}, path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        os.chmod(path, 0o640)
        nopt.save({"v": 2}, path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    finally:
        os.umask(old)


def test_a_killed_save_leaves_a_recognisable_temp_file(tmp_path):
    path = str(tmp_path / "ckpt.nopt")
    result = _run_python(f"""
        import os, numpy as np, nopt
        os.replace = lambda *a: os._exit(9)   # killed just before the rename
        nopt.save({{"x": np.zeros(3)}}, {path!r})
    """)
    assert result.returncode == 9
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].startswith(".ckpt.nopt.nopt-tmp-"), left
    assert not os.path.exists(path)
