"""``Parameter``: an ndarray that an optimizer updates in place, with a ``.grad``."""
import numpy as np

from ._kernels._plan import grads_changed as _grads_changed

__all__ = ["Parameter"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _plain(x):
    return x.view(np.ndarray) if isinstance(x, Parameter) else x


def _unwrap(value):
    """Replace Parameters (also inside lists/tuples) by plain ndarray views."""
    if isinstance(value, Parameter):
        return value.view(np.ndarray)
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v) for v in value)
    return value


def _is_sparse(value):
    module = type(value).__module__
    if not module.startswith("scipy.sparse"):
        return False
    import scipy.sparse

    return scipy.sparse.issparse(value)


class Parameter(np.ndarray):
    """A float32 or float64, C-contiguous, writeable ndarray with a ``grad``.

    Parameters
    ----------
    data : array_like
        The initial values. A float ndarray of the requested dtype that is
        C-contiguous and writeable is wrapped without copying, so the
        optimizer's in-place updates are visible through ``data`` too.
        Anything else (a list, another dtype, a Fortran-ordered array, a
        strided view such as ``x[:, ::2]`` or ``x.T``) is copied into a new
        C-contiguous array, as ``torch.tensor(data)`` copies: updates are
        then *not* visible through ``data``; read them from the Parameter.
        A read-only C-contiguous array of the requested dtype is refused.
    dtype : {None, numpy.float32, numpy.float64}
        The parameter's dtype. ``None`` keeps ``data``'s float dtype (Python
        floats become float64).

    Notes
    -----
    Arithmetic on a Parameter returns plain ndarrays, so the subclass does
    not spread into user code. Parameters hash by identity and can key
    ``optimizer.state``.
    """

    __hash__ = object.__hash__

    def __new__(cls, data, dtype=None):
        if dtype is not None:
            try:
                dtype = np.dtype(dtype)
            except TypeError as exc:
                raise TypeError(f"Parameter dtype must be float32 or float64, got {dtype!r}") from exc
            if dtype not in _FLOAT_DTYPES:
                raise TypeError(f"Parameter dtype must be float32 or float64, got {dtype}")
        if isinstance(data, np.ndarray):
            if data.dtype == object or data.dtype.kind not in "fiub":
                raise TypeError(f"Parameter data must be numeric, got dtype {data.dtype}")
            if dtype is None:
                if data.dtype not in _FLOAT_DTYPES:
                    raise TypeError(
                        f"Parameter data has dtype {data.dtype}; expected float32 or float64 "
                        "(pass dtype=np.float32 or np.float64 to convert)"
                    )
                dtype = data.dtype
            if data.dtype == dtype and data.flags.c_contiguous:
                if not data.flags.writeable:
                    raise ValueError("Parameter data must be writeable")
                array = data.view(np.ndarray)
            else:
                # Another dtype, Fortran order or a strided view: the kernels
                # need one C-contiguous block, so the Parameter owns a copy
                # (as for lists) and ``data`` does not see its updates.
                array = np.array(data, dtype=dtype, order="C", copy=True)
        else:
            if isinstance(data, (str, bytes, dict, set)) or data is None:
                raise TypeError(f"Parameter data must be array_like numbers, got {type(data).__name__}")
            try:
                array = np.asarray(data)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"Parameter data must be array_like numbers: {exc}") from exc
            if array.dtype == object or array.dtype.kind not in "fiub":
                raise TypeError(
                    f"Parameter data must be array_like numbers, got {type(data).__name__} "
                    f"(dtype {array.dtype})"
                )
            if dtype is None:
                dtype = array.dtype if array.dtype in _FLOAT_DTYPES else None
                if dtype is None:
                    if array.dtype.kind == "f":
                        raise TypeError(f"Parameter dtype must be float32 or float64, got {array.dtype}")
                    dtype = np.dtype(np.float64)
            array = np.array(array, dtype=dtype, order="C", copy=True)
        obj = array.view(cls)
        obj._grad = None
        return obj

    def __array_finalize__(self, obj):
        self._grad = None

    # Arithmetic gives plain arrays: the subclass stays a marker for optimizers.
    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        inputs = tuple(_plain(x) for x in inputs)
        if out is not None:
            kwargs["out"] = tuple(_plain(o) for o in out)
        result = getattr(ufunc, method)(*inputs, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return result

    def __array_function__(self, func, types, args, kwargs):
        return func(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()})

    def __getitem__(self, index):
        result = super().__getitem__(index)
        return result.view(np.ndarray) if isinstance(result, Parameter) else result

    def __reduce__(self):
        # Pickle as a Parameter of the same values (the grad is not kept).
        return (Parameter, (np.asarray(self.view(np.ndarray)),))

    def __deepcopy__(self, memo):
        copy = Parameter(self.view(np.ndarray).copy())
        if self._grad is not None:
            copy._grad = self._grad.copy()
        memo[id(self)] = copy
        return copy

    @property
    def grad(self):
        """The gradient: ``None`` or an ndarray of the parameter's shape and dtype."""
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is not None and not isinstance(value, np.ndarray) and _is_sparse(value):
            # SparseAdam's gradients: scipy.sparse matrices/arrays of the same shape.
            if tuple(value.shape) != self.shape:
                raise ValueError(f"grad has shape {value.shape}; expected {self.shape}")
            _grads_changed()
            self._grad = value
            return
        if value is not None:
            if not isinstance(value, np.ndarray):
                raise TypeError(
                    f"grad must be None or a numpy.ndarray of shape {self.shape} and dtype "
                    f"{self.dtype}, got {type(value).__name__}"
                )
            if value.shape != self.shape:
                raise ValueError(f"grad has shape {value.shape}; expected {self.shape}")
            if value.dtype != self.dtype:
                raise TypeError(f"grad has dtype {value.dtype}; expected {self.dtype}")
            if isinstance(value, Parameter):
                value = value.view(np.ndarray)
        # Tell the optimizers' gather caches (they skip re-reading .grad
        # while no gradient object has changed anywhere).
        _grads_changed()
        self._grad = value

    @grad.deleter
    def grad(self):
        _grads_changed()
        self._grad = None
