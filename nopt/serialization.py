"""Checkpoints that never unpickle: ``nopt.save`` and ``nopt.load``.

A checkpoint is a zip file holding ``manifest.json`` (the nested structure,
with arrays replaced by references) and one ``.npy`` file per array, read
with ``allow_pickle=False``. Writes go to a temporary file in the same folder
(named ``.<name>.nopt-tmp-<pid>-<random>``) and are moved into place with
``os.replace``, so a crash never leaves a half-written checkpoint under the
final name; a save killed outright (``kill -9``, power loss) can leave such a
temporary file behind, which is safe to delete.

Loading treats the file as hostile: only regular files are opened; every
array's size is checked against its member's declared size and against a
``max_bytes`` budget before anything is allocated; each array is read once,
straight into its final buffer; and every failure is a
:class:`CheckpointError`.
"""
import json
import math
import numbers
import os
import secrets
import stat
import struct
import zipfile
import zlib

import numpy as np

__all__ = ["save", "load", "CheckpointError"]

FORMAT = "nopt-checkpoint"
VERSION = 1
_MANIFEST = "manifest.json"
_MAX_DEPTH = 64


class CheckpointError(ValueError):
    """A file is not a readable nopt checkpoint (foreign, truncated or corrupt)."""


# What reading a damaged zip member or .npy header can raise.
_READ_ERRORS = (
    ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError,
    struct.error, UnicodeDecodeError, OverflowError, TypeError, SyntaxError, zlib.error,
)


def _encode(obj, arrays, depth=0):
    if depth > _MAX_DEPTH:
        raise ValueError("object is nested too deeply to save")
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject or obj.dtype.kind not in "biufcSU":
            raise TypeError(f"cannot save an array of dtype {obj.dtype}")
        name = f"a{len(arrays)}"
        arrays[name] = np.asarray(obj.view(np.ndarray) if type(obj) is not np.ndarray else obj)
        return {"__array__": name}
    if isinstance(obj, np.generic):
        return _encode(np.asarray(obj), arrays, depth + 1) | {"__scalar__": True}
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return {"__float__": repr(obj)}
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, arrays, depth + 1) for v in obj]
        return items if isinstance(obj, list) else {"__tuple__": items}
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"cannot save a dict key of type {type(k).__name__}")
            items.append([k, _encode(v, arrays, depth + 1)])
        return {"__dict__": items}
    raise TypeError(f"cannot save an object of type {type(obj).__name__}")


class _Reader:
    """Reads a checkpoint's arrays once each, within a byte budget."""

    def __init__(self, archive, max_bytes):
        self.archive = archive
        self.max_bytes = max_bytes
        self.used = 0
        self.arrays = {}

    def array(self, name):
        # A member referenced several times is read (and counted) once.
        if not isinstance(name, str):
            raise CheckpointError("bad array reference in manifest")
        if name not in self.arrays:
            self.arrays[name] = _read_array(self, name)
        return self.arrays[name]


def _decode(node, archive, depth=0):
    if depth > _MAX_DEPTH:
        raise CheckpointError("manifest is nested too deeply")
    if node is None or isinstance(node, (bool, str, int, float)):
        return node
    if isinstance(node, list):
        return [_decode(v, archive, depth + 1) for v in node]
    if not isinstance(node, dict) or len(node) == 0:
        raise CheckpointError(f"unexpected manifest entry {node!r}")
    if "__array__" in node:
        array = archive.array(node["__array__"])
        return array[()] if node.get("__scalar__") else array
    if "__float__" in node:
        text = node["__float__"]
        if text not in ("nan", "inf", "-inf"):
            raise CheckpointError(f"bad float {text!r} in manifest")
        return float(text)
    if "__tuple__" in node:
        return tuple(_decode(v, archive, depth + 1) for v in _expect_list(node["__tuple__"]))
    if "__dict__" in node:
        out = {}
        for item in _expect_list(node["__dict__"]):
            if not isinstance(item, list) or len(item) != 2:
                raise CheckpointError("bad dict entry in manifest")
            key, value = item
            if isinstance(key, (list, dict)):
                raise CheckpointError("bad dict key in manifest")
            out[key] = _decode(value, archive, depth + 1)
        return out
    raise CheckpointError(f"unexpected manifest entry {sorted(node)!r}")


def _expect_list(value):
    if not isinstance(value, list):
        raise CheckpointError("manifest entry should be a list")
    return value


# Loadable dtypes: numbers, and the non-empty strings ``save`` writes. Never
# structured, object, datetime or void arrays, nor zero-width strings.
_DTYPE_KINDS = "biufcSU"
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}
_CHUNK = 1 << 20


def _read_array(reader, name):
    member = f"arrays/{name}.npy"
    try:
        info = reader.archive.getinfo(member)
    except KeyError as exc:
        raise CheckpointError(f"checkpoint lacks array {name!r}") from exc
    try:
        with reader.archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            read_header = _HEADER_READERS.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = read_header(f)
            if (dtype.hasobject or dtype.names is not None or dtype.subdtype is not None
                    or dtype.kind not in _DTYPE_KINDS or dtype.itemsize == 0):
                raise ValueError(f"dtype {dtype} is not allowed (numbers and non-empty strings only)")
            count = 1
            for n in shape:
                count *= n
            nbytes = count * dtype.itemsize
            # Check the declared sizes before allocating: the header must
            # describe exactly the member's uncompressed bytes, and the
            # total must stay within the budget.
            if nbytes != info.file_size - f.tell():
                raise ValueError(
                    f"header promises shape {shape} of {dtype} ({nbytes} bytes), but the member "
                    f"holds {info.file_size - f.tell()} bytes of data")
            if reader.used + nbytes > reader.max_bytes:
                raise CheckpointError(
                    f"array {name!r} ({nbytes} bytes) would take the checkpoint past "
                    f"max_bytes={reader.max_bytes}; pass a larger max_bytes to nopt.load "
                    "if the file is trusted")
            reader.used += nbytes
            array = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
            # Straight into the array's own memory, a chunk at a time.
            view = memoryview(array.T if fortran else array).cast("B") if nbytes else memoryview(b"")
            pos = 0
            while pos < nbytes:
                got = f.readinto(view[pos:pos + _CHUNK])
                if not got:
                    raise EOFError(f"member ends after {pos} of {nbytes} bytes")
                pos += got
            if f.read(1):  # also makes zipfile check the CRC
                raise ValueError("member holds more bytes than its header describes")
            return array
    except CheckpointError:
        raise
    except MemoryError as exc:
        raise CheckpointError(f"array {name!r} in the checkpoint does not fit in memory") from exc
    except _READ_ERRORS as exc:
        raise CheckpointError(f"array {name!r} in the checkpoint is unreadable: {exc}") from exc


def _save_target(path):
    """The file a save to ``path`` replaces: a symlink's final target, so the link stays."""
    return os.path.realpath(path) if os.path.islink(path) else path


def _create_temp(target):
    """Open a new temporary file next to ``target``; return (fd, name).

    Created with mode 0o666, which the umask reduces as for any new file.
    """
    folder, base = os.path.split(os.path.abspath(target))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(folder, f".{base}.nopt-tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file next to {target!r}")


def save(obj, path):
    """Save a state dict (nested dicts/lists of numbers, strings, None, arrays).

    Parameters
    ----------
    obj : object
        Typically ``optimizer.state_dict()`` or ``scheduler.state_dict()``,
        or a dict holding several of them.
    path : str or os.PathLike
        Destination file. It is replaced atomically. A symlink is followed:
        its target is replaced and the link kept. An existing file keeps
        its permission bits; a new one gets those the umask gives.

    Notes
    -----
    The data is first written to ``.<name>.nopt-tmp-<pid>-<random>`` in the
    destination's folder. A save killed before it could clean up (``kill
    -9``, power loss) leaves that file behind; such files are never read and
    can be deleted (``rm .*.nopt-tmp-*``).
    """
    arrays = {}
    manifest = {"format": FORMAT, "version": VERSION, "root": _encode(obj, arrays)}
    target = _save_target(os.fspath(path))
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None
    fd, tmp = _create_temp(target)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None and hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)  # an existing file keeps its mode
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as archive:
                archive.writestr(_MANIFEST, json.dumps(manifest, allow_nan=False))
                for name, array in arrays.items():
                    with archive.open(f"arrays/{name}.npy", "w", force_zip64=True) as out:
                        np.lib.format.write_array(out, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# The default budget of nopt.load: what a checkpoint's arrays may take in
# memory. ``nopt.save`` stores arrays uncompressed, so a genuine checkpoint
# needs about its file size; a small file that inflates to far more is a zip
# bomb.
_MIN_BUDGET = 1 << 30
_BUDGET_RATIO = 64
_MAX_MANIFEST = 64 << 20


def load(path, max_bytes=None):
    """Read a checkpoint written by :func:`save`. Never executes code.

    Parameters
    ----------
    path : str or os.PathLike
        A regular file (devices, FIFOs and directories are refused).
    max_bytes : int, optional
        The most bytes the checkpoint's arrays may take once loaded, checked
        before each array is allocated. Default: the larger of 1 GiB and 64
        times the file's size (``nopt.save`` writes arrays uncompressed, so
        this only stops files that inflate far beyond their size).

    Raises
    ------
    CheckpointError
        (a ``ValueError``) if the file is not a nopt checkpoint, is
        truncated, corrupt, not a regular file, or needs more than
        ``max_bytes`` (or more memory than there is).
    """
    path = os.fspath(path)
    if max_bytes is not None and (not isinstance(max_bytes, numbers.Integral)
                                  or isinstance(max_bytes, bool) or max_bytes < 0):
        raise TypeError(f"max_bytes must be a non-negative int or None, got {max_bytes!r}")
    # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CheckpointError(f"cannot open {path!r}: {exc}") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise CheckpointError(f"{path!r} is not a regular file (a device, FIFO or directory)")
    with os.fdopen(fd, "rb") as file:
        if max_bytes is None:
            max_bytes = max(_MIN_BUDGET, _BUDGET_RATIO * info.st_size)
        try:
            archive = zipfile.ZipFile(file, "r")
        except (_READ_ERRORS + (MemoryError,)) as exc:
            raise CheckpointError(f"{path!r} is not a nopt checkpoint (not a zip file, or truncated)") from exc
        with archive:
            return _load(archive, path, int(max_bytes))


def _load(archive, path, max_bytes):
    names = archive.namelist()
    if len(set(names)) != len(names):
        raise CheckpointError(f"{path!r} holds the same member twice")
    try:
        info = archive.getinfo(_MANIFEST)
    except KeyError as exc:
        raise CheckpointError(f"{path!r} is not a nopt checkpoint (no manifest)") from exc
    if info.file_size > min(_MAX_MANIFEST, max_bytes):
        raise CheckpointError(f"{path!r} has a manifest of {info.file_size} bytes, too large")
    try:
        with archive.open(info) as f:
            manifest = json.loads(f.read(info.file_size + 1).decode("utf-8"))
    except (_READ_ERRORS + (RecursionError, MemoryError)) as exc:
        raise CheckpointError(f"{path!r} has a corrupt manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a nopt checkpoint")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"{path!r} has unsupported checkpoint version {manifest.get('version')!r}")
    if "root" not in manifest:
        raise CheckpointError(f"{path!r} has no content")
    try:
        return _decode(manifest["root"], _Reader(archive, max_bytes))
    except RecursionError as exc:
        raise CheckpointError("manifest is nested too deeply") from exc
    except MemoryError as exc:
        raise CheckpointError(f"{path!r} does not fit in memory") from exc
