"""Flat parameter storage: a model's parameters as views into one buffer.

A step over many small arrays pays a little per array (table rows, tasks,
cache misses at every array's edges). When the parameters, their gradients
and the optimizer's state each lie end to end in one buffer, the optimizers
merge them into a single contiguous loop (``_plan.make_table`` merges arrays
adjacent in every stream, and ``Optimizer._flat_zeros`` allocates state flat),
so a 2000-array model steps as fast as one array of the same size.
"""
import numbers
from collections.abc import Mapping, Sequence

import numpy as np

from ._parameter import Parameter
from .optimizer import _aligned_zeros

__all__ = ["ParameterBuffer", "flat_parameters"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _as_shape(shape, where):
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (int(shape),)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"{where} must be a shape (an int or a tuple of ints), got {shape!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"{where} has a negative dimension: {shape}")
    return shape


def _as_dtype(dtype, where):
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{where}: dtype must be float32 or float64, got {dtype!r}") from None
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{where}: dtype must be float32 or float64, got {dtype}")
    return dtype


class ParameterBuffer(Sequence):
    """Parameters (and their gradients) as views into one buffer per dtype.

    The Parameters are ordinary :class:`nopt.Parameter` objects: use them in
    any optimizer, state_dict, checkpoint or NumPy expression. They are also
    views into one contiguous, 64-byte-aligned buffer per dtype (in the order
    given), and each ``p.grad`` is a view into a matching gradient buffer, so
    an optimizer's step over them is one contiguous loop.

    Parameters
    ----------
    shapes : sequence or mapping
        One shape per parameter (an int or a tuple), or ``{name: shape}``
        (the names are then kept, see :meth:`named_parameters`).
    dtype : dtype or sequence of dtypes, default numpy.float32
        float32 or float64, for all parameters or one per parameter.
    init : None, number, sequence of arrays, or callable, optional
        Initial values: zeros (None), a constant, one array per parameter
        (copied), or ``init(shape, dtype) -> array_like`` called per parameter.

    Attributes
    ----------
    params : list of Parameter
        In the order given. The buffer is also a sequence of them.
    names : list of str or None

    Notes
    -----
    Every parameter has a gradient from the start (zeros): with flat storage a
    gradient is a view, never None, as after torch's
    ``zero_grad(set_to_none=False)``. Write gradients in place
    (``p.grad[...] = g``, ``np.copyto(p.grad, g)``, or into :attr:`grad`).
    Assigning ``p.grad = new_array`` still works; that parameter is then
    simply not flat any more (the step splits around it), until
    :meth:`zero_grad` re-attaches the flat views. Likewise
    ``optimizer.zero_grad()`` (which sets grads to None by default) detaches
    them; call ``buffer.zero_grad()`` or ``optimizer.zero_grad(set_to_none=False)``
    instead.

    Examples
    --------
    >>> buf = nopt.ParameterBuffer({"w": (784, 128), "b": 128}, init=0.01)
    >>> opt = nopt.Adam(buf, lr=1e-3)
    >>> buf.zero_grad()
    >>> buf["w"].grad[...] = grad_w      # in place: stays flat
    >>> opt.step()
    """

    def __init__(self, shapes, dtype=np.float32, init=None):
        if isinstance(shapes, Mapping):
            names = [str(k) for k in shapes]
            shapes = list(shapes.values())
        else:
            if isinstance(shapes, (str, bytes)) or not isinstance(shapes, (Sequence, np.ndarray)):
                raise TypeError(f"shapes must be a sequence or a mapping of shapes, got {type(shapes).__name__}")
            names = None
            shapes = list(shapes)
        shapes = [_as_shape(s, f"shapes[{i}]") for i, s in enumerate(shapes)]
        n = len(shapes)
        if isinstance(dtype, (list, tuple)):
            if len(dtype) != n:
                raise ValueError(f"got {len(dtype)} dtypes for {n} shapes")
            dtypes = [_as_dtype(d, f"dtype[{i}]") for i, d in enumerate(dtype)]
        else:
            dtypes = [_as_dtype(dtype, "dtype")] * n
        values = self._initial_values(init, shapes, dtypes)

        self.names = names
        self._index = {name: i for i, name in enumerate(names)} if names else {}
        self._buffers = {}
        self.params = [None] * n
        self._grads = [None] * n
        for dt in _FLOAT_DTYPES:
            members = [i for i in range(n) if dtypes[i] == dt]
            if not members:
                continue
            total = sum(int(np.prod(shapes[i], dtype=np.int64)) for i in members)
            data = _aligned_zeros(total, dt)
            grad = _aligned_zeros(total, dt)
            offset = 0
            for i in members:
                size = int(np.prod(shapes[i], dtype=np.int64))
                view = data[offset:offset + size].reshape(shapes[i])
                if values is not None:
                    view[...] = values[i]
                p = Parameter(view)  # wraps the view, no copy
                g = grad[offset:offset + size].reshape(shapes[i])
                p.grad = g
                self.params[i] = p
                self._grads[i] = g
                offset += size
            self._buffers[dt] = (data, grad)

    @staticmethod
    def _initial_values(init, shapes, dtypes):
        if init is None:
            return None
        if isinstance(init, numbers.Real) and not isinstance(init, bool):
            return [init] * len(shapes)
        if callable(init):
            values = [np.asarray(init(s, d)) for s, d in zip(shapes, dtypes)]
        elif isinstance(init, (Sequence, np.ndarray)) and not isinstance(init, (str, bytes)):
            values = [np.asarray(v) for v in init]
            if len(values) != len(shapes):
                raise ValueError(f"init has {len(values)} arrays for {len(shapes)} shapes")
        else:
            raise TypeError(
                "init must be None, a number, a sequence of arrays or a callable, "
                f"got {type(init).__name__}")
        for i, (v, s) in enumerate(zip(values, shapes)):
            if v.shape != s:
                raise ValueError(f"init value {i} has shape {v.shape}; expected {s}")
            if v.dtype.kind not in "fiub":
                raise TypeError(f"init value {i} has dtype {v.dtype}; expected numbers")
        return values

    @classmethod
    def from_arrays(cls, arrays, dtype=None):
        """A buffer holding copies of ``arrays`` (a sequence, or a mapping of names).

        ``dtype`` None keeps each array's float dtype (other dtypes become
        float64, as :class:`nopt.Parameter` does).
        """
        if isinstance(arrays, Mapping):
            items = {k: np.asarray(v) for k, v in arrays.items()}
            values = list(items.values())
            shapes = {k: v.shape for k, v in items.items()}
        else:
            values = [np.asarray(v) for v in arrays]
            shapes = [v.shape for v in values]
        if dtype is None:
            dtype = [v.dtype if v.dtype in _FLOAT_DTYPES else np.dtype(np.float64) for v in values]
        return cls(shapes, dtype=dtype, init=values)

    # ------------------------------------------------------------ sequence
    def __len__(self):
        return len(self.params)

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self._index:
                raise KeyError(key)
            return self.params[self._index[key]]
        return self.params[key]

    def __iter__(self):
        return iter(self.params)

    def named_parameters(self):
        """``(name, Parameter)`` pairs (names are ``"0"``, ``"1"``, ... when none were given)."""
        names = self.names or [str(i) for i in range(len(self.params))]
        return list(zip(names, self.params))

    # ------------------------------------------------------------ buffers
    def _single(self):
        if len(self._buffers) != 1:
            raise AttributeError(
                "this buffer holds several dtypes; use .buffers[dtype] for (data, grad)")
        return next(iter(self._buffers.values()))

    @property
    def buffers(self):
        """``{dtype: (data, grad)}``: the flat 1-D parameter and gradient buffers."""
        return dict(self._buffers)

    @property
    def data(self):
        """The flat 1-D parameter buffer (one dtype only)."""
        return self._single()[0]

    @property
    def grad(self):
        """The flat 1-D gradient buffer (one dtype only)."""
        return self._single()[1]

    @property
    def grads(self):
        """The flat gradient views, one per parameter (whatever ``p.grad`` now is)."""
        return list(self._grads)

    @property
    def size(self):
        """Total number of elements."""
        return int(sum(d.size for d, _ in self._buffers.values()))

    def is_flat(self):
        """True when every parameter's ``grad`` is its flat gradient view."""
        return all(p.grad is g for p, g in zip(self.params, self._grads))

    def zero_grad(self):
        """Zero every gradient and re-attach the flat gradient views.

        A parameter whose ``grad`` was replaced or set to None gets its flat
        view back, so the next step is one contiguous loop again.
        """
        for _, grad in self._buffers.values():
            grad.fill(0)
        for p, g in zip(self.params, self._grads):
            if p.grad is not g:
                p.grad = g

    def __repr__(self):
        kinds = ", ".join(f"{np.dtype(dt).name}: {d.size}" for dt, (d, _) in self._buffers.items())
        return f"ParameterBuffer({len(self.params)} parameters; {kinds or 'empty'})"


def flat_parameters(shapes, dtype=np.float32, init=None):
    """Allocate parameters as views into one contiguous buffer per dtype.

    Shorthand for :class:`ParameterBuffer` ``(shapes, dtype, init)``; the
    result is a sequence of :class:`nopt.Parameter` that any optimizer takes,
    with :meth:`ParameterBuffer.zero_grad` and the flat buffers.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> params = nopt.flat_parameters([(1000,)] * 2000,
    ...                               init=lambda shape, dtype: rng.standard_normal(shape))
    >>> opt = nopt.SGD(params, lr=0.01, momentum=0.9)  # one loop over 2M elements
    """
    return ParameterBuffer(shapes, dtype=dtype, init=init)
