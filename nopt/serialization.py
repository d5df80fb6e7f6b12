"""Checkpoints that never unpickle: ``nopt.save`` and ``nopt.load``.

A checkpoint is a zip file holding ``manifest.json`` (the nested structure,
with arrays replaced by references) and one ``.npy`` file per array, read
with ``allow_pickle=False``. Writes go to a temporary file in the same folder
and are moved into place with ``os.replace``, so a crash never leaves a
half-written checkpoint under the final name.
"""
import io
import json
import math
import os
import struct
import tempfile
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
        array = _read_array(archive, node["__array__"])
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


def _read_array(archive, name):
    if not isinstance(name, str):
        raise CheckpointError("bad array reference in manifest")
    try:
        with archive.open(f"arrays/{name}.npy") as f:
            data = f.read()
        stream = io.BytesIO(data)
        # Check the header against the bytes present before numpy allocates:
        # a corrupt header must not ask for terabytes.
        version = np.lib.format.read_magic(stream)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = read_header(stream)
        if dtype.hasobject:
            raise ValueError("object arrays are not allowed")
        if int(np.prod(shape, dtype=np.float64)) * dtype.itemsize > len(data):
            raise ValueError(f"header promises shape {shape} of {dtype}, more than the stored bytes")
        stream.seek(0)
        return np.lib.format.read_array(stream, allow_pickle=False)
    except KeyError as exc:
        raise CheckpointError(f"checkpoint lacks array {name!r}") from exc
    except _READ_ERRORS as exc:
        raise CheckpointError(f"array {name!r} in the checkpoint is unreadable: {exc}") from exc


def save(obj, path):
    """Save a state dict (nested dicts/lists of numbers, strings, None, arrays).

    Parameters
    ----------
    obj : object
        Typically ``optimizer.state_dict()`` or ``scheduler.state_dict()``,
        or a dict holding several of them.
    path : str or os.PathLike
        Destination file. It is replaced atomically.
    """
    arrays = {}
    manifest = {"format": FORMAT, "version": VERSION, "root": _encode(obj, arrays)}
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".nopt-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as archive:
                archive.writestr(_MANIFEST, json.dumps(manifest, allow_nan=False))
                for name, array in arrays.items():
                    with archive.open(f"arrays/{name}.npy", "w", force_zip64=True) as out:
                        np.lib.format.write_array(out, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load(path):
    """Read a checkpoint written by :func:`save`. Never executes code.

    Raises
    ------
    CheckpointError
        (a ``ValueError``) if the file is not a nopt checkpoint, is
        truncated, or is corrupt.
    """
    path = os.fspath(path)
    try:
        archive = zipfile.ZipFile(path, "r")
    except FileNotFoundError:
        raise
    except _READ_ERRORS as exc:
        raise CheckpointError(f"{path!r} is not a nopt checkpoint (not a zip file, or truncated)") from exc
    with archive:
        try:
            with archive.open(_MANIFEST) as f:
                manifest = json.loads(f.read().decode("utf-8"))
        except KeyError as exc:
            raise CheckpointError(f"{path!r} is not a nopt checkpoint (no manifest)") from exc
        except (_READ_ERRORS + (RecursionError,)) as exc:
            raise CheckpointError(f"{path!r} has a corrupt manifest: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CheckpointError(f"{path!r} is not a nopt checkpoint")
        if manifest.get("version") != VERSION:
            raise CheckpointError(f"{path!r} has unsupported checkpoint version {manifest.get('version')!r}")
        if "root" not in manifest:
            raise CheckpointError(f"{path!r} has no content")
        try:
            return _decode(manifest["root"], archive)
        except RecursionError as exc:
            raise CheckpointError("manifest is nested too deeply") from exc
