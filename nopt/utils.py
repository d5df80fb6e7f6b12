"""Gradient clipping, as ``torch.nn.utils``: clip_grad_norm_, clip_grad_value_ & co.

The norm is a multi-tensor reduction in nopt/_kernels/helpers.pyx.tp: per-chunk
partial sums in double, combined in a fixed order, so the result does not
depend on the thread count. Scaling and clamping are elementwise kernels.
"""
import math
import types
import warnings

import numpy as np

from ._kernels import _plan
from ._kernels import helpers as _k

__all__ = [
    "clip_grad_norm_",
    "clip_grad_norm",
    "clip_grad_value_",
    "get_total_norm",
    "clip_grads_with_norm_",
]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _as_list(parameters):
    return [parameters] if isinstance(parameters, np.ndarray) else list(parameters)


def _grads_of(parameters):
    """The non-None grads of ``parameters`` (a list), in order."""
    grads = []
    for i, p in enumerate(parameters):
        try:
            g = p.grad
        except AttributeError:
            raise TypeError(
                f"parameters[{i}] is a {type(p).__name__} without a .grad; expected nopt.Parameter"
            ) from None
        if g is not None:
            grads.append(g)
    return grads


def _check_arrays(arrays, what, writeable=False):
    """Float32/float64 ndarrays only (and writeable ones, when they will be changed)."""
    for i, a in enumerate(arrays):
        if not isinstance(a, np.ndarray):
            raise TypeError(
                f"{what}[{i}] must be a numpy.ndarray of dtype float32 or float64, got "
                f"{type(a).__name__}" + (" (scipy.sparse gradients are not supported)"
                                         if hasattr(a, "tocoo") else "")
            )
        if a.dtype not in _FLOATS:
            raise TypeError(f"{what}[{i}] has dtype {a.dtype}; expected float32 or float64")
        if writeable and not a.flags.writeable:
            raise ValueError(f"{what}[{i}] (shape {a.shape}) is read-only; it cannot be changed in place")


def _plain(a):
    return a.view(np.ndarray) if type(a) is not np.ndarray else a


try:
    _byte_bounds = np.lib.array_utils.byte_bounds
except AttributeError:  # NumPy < 2
    _byte_bounds = np.byte_bounds


def _overlapping(arrays):
    """True if any two non-empty arrays' memory extents intersect (e.g. one array listed twice)."""
    spans = sorted(_byte_bounds(a) for a in arrays if a.size)
    end = None
    for lo, hi in spans:
        if end is not None and lo < end:
            return True
        end = hi if end is None else max(end, hi)
    return False


def _by_dtype(arrays):
    """[(is_double, contiguous arrays)] for the kernels, float32 first."""
    out = []
    for dtype in _FLOATS:
        same = [_plain(a) for a in arrays if a.dtype == dtype]
        if same:
            out.append((dtype == np.float64, same))
    return out


def _apply(grads, kernel, numpy_op, *args):
    """Run an in-place elementwise op over ``grads``.

    Contiguous grads go through one kernel call per dtype; others through
    NumPy. Overlapping grads (e.g. a parameter listed twice) are updated one
    after another, in order, as torch's loop does, so an element listed twice
    is changed twice.
    """
    if _overlapping(grads):
        for g in grads:
            numpy_op(_plain(g), *args)
        return
    contiguous = [g for g in grads if g.flags.c_contiguous and g.flags.aligned]
    for g in grads:
        if not (g.flags.c_contiguous and g.flags.aligned):
            numpy_op(_plain(g), *args)
    for is_double, arrays in _by_dtype(contiguous):
        ptrs, chunks, n_threads = _plan.make_table([arrays])
        kernel(ptrs, chunks, is_double, n_threads, *args)


def _numpy_scale(g, coef):
    np.multiply(g, g.dtype.type(coef), out=g)


def _numpy_clamp(g, lo, hi):
    np.maximum(g, g.dtype.type(lo), out=g)
    np.minimum(g, g.dtype.type(hi), out=g)


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    r"""The norm of ``tensors`` viewed as one vector, as ``torch.nn.utils.get_total_norm``.

    .. math::
        \|x\|_p = \Big(\sum_{a}\sum_{j} |x_{a,j}|^p\Big)^{1/p}, \qquad
        \|x\|_\infty = \max_{a,j} |x_{a,j}|

    Parameters
    ----------
    tensors : ndarray or iterable of ndarray
        Float32/float64 arrays (e.g. gradients). Not ``None`` entries.
    norm_type : float or str, default 2.0
        The order :math:`p`; ``float("inf")`` or ``"inf"`` for the max norm.
        Any real order works as in torch, ``0`` counting the arrays that
        have a nonzero element (torch's norm of the per-array norms).
    error_if_nonfinite : bool, default False
        Raise ``RuntimeError`` if the norm is NaN or infinite.
    foreach : None or bool
        Accepted for torch compatibility; nopt always runs its multi-tensor kernel.

    Returns
    -------
    numpy.float64
        The total norm (``0.0`` for no arrays). Sums are accumulated in
        double, also for float32 arrays; when every array is float32 the
        result is rounded to float32, the dtype torch's result has.

    Notes
    -----
    The result is bitwise identical for any thread count: every chunk of
    the work writes its own partial sum, and the partials are combined in a
    fixed order. torch accumulates float32 in float32, so nopt's float32
    norms are more accurate (they agree to float32 rounding) and stay finite
    where torch's sum of squares overflows (|x| above about 1.8e19).
    """
    tensors = _as_list(tensors)
    norm_type = float(norm_type)
    _check_arrays(tensors, "tensors")
    if len(tensors) == 0:
        return np.float64(0.0)
    p = norm_type
    if p < 0 or math.isinf(p):
        for i, a in enumerate(tensors):
            if a.size == 0:
                raise RuntimeError(
                    f"cannot compute the {p:g} norm of tensors[{i}], which is empty, because "
                    "the operation does not have an identity"
                )
    if p == 0:
        total = float(sum(1 for a in tensors if np.count_nonzero(a)))
    else:
        if p == 1:
            kind = _k.NORM_L1
        elif p == 2:
            kind = _k.NORM_L2
        elif p == math.inf:
            kind = _k.NORM_INF
        elif p == -math.inf:
            kind = _k.NORM_NEG_INF
        else:
            kind = _k.NORM_P
        parts = []
        for is_double, arrays in _by_dtype([np.ascontiguousarray(a) for a in tensors]):
            ptrs, chunks, n_threads = _plan.make_table([arrays])
            part = _k.norm_partial(ptrs, chunks, is_double, n_threads, kind, p)
            if part is not None:
                parts.append(part)
        if kind == _k.NORM_INF:
            total = parts[0] if len(parts) == 1 else (
                math.nan if any(math.isnan(x) for x in parts) else max(parts))
        elif kind == _k.NORM_NEG_INF:
            total = parts[0] if len(parts) == 1 else (
                math.nan if any(math.isnan(x) for x in parts) else min(parts))
        else:
            s = math.fsum(parts) if len(parts) > 1 else parts[0]
            if kind == _k.NORM_L1:
                total = s
            elif kind == _k.NORM_L2:
                total = math.sqrt(s)
            else:
                total = _root(s, p)
    if all(a.dtype == np.float32 for a in tensors):
        total = float(np.float32(total))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from "
            "`parameters` is non-finite, so it cannot be clipped. To disable "
            "this error and scale the gradients by the non-finite norm anyway, "
            "set `error_if_nonfinite=False`"
        )
    return np.float64(total)


def _root(s, p):
    """s ** (1/p) with C pow's special cases (NaN, inf, 0), as torch."""
    with np.errstate(all="ignore"):
        return float(np.power(np.float64(s), np.float64(1.0 / p)))


def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None):
    r"""Scale the gradients by :math:`\min(1, \text{max\_norm} / (\text{total\_norm} + 10^{-6}))`.

    As ``torch.nn.utils.clip_grads_with_norm_``: :func:`clip_grad_norm_`
    with a norm computed beforehand (e.g. by :func:`get_total_norm`).

    Parameters
    ----------
    parameters : Parameter or iterable of Parameter
        Parameters whose ``grad`` is scaled in place; ``None`` grads are skipped.
    max_norm : float
        The largest norm allowed.
    total_norm : float
        The gradients' norm.
    foreach : None or bool
        Accepted for torch compatibility.

    Notes
    -----
    The coefficient is computed in double and cast to each gradient's dtype.
    A coefficient of exactly 1 leaves the gradients untouched (multiplying
    by 1 would not change them). A NaN norm makes every gradient NaN, as in
    torch.
    """
    parameters = _as_list(parameters)
    grads = _grads_of(parameters)
    max_norm = float(max_norm)
    total_norm = float(total_norm)
    if not grads:
        return
    _check_arrays(grads, "grads", writeable=True)
    coef = max_norm / (total_norm + 1e-6)
    if coef > 1.0:  # torch.clamp(max=1.0); NaN stays NaN
        coef = 1.0
    if coef == 1.0:
        return
    _apply(grads, _k.scale, _numpy_scale, coef)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    r"""Clip the gradients' total norm in place, as ``torch.nn.utils.clip_grad_norm_``.

    The norm is taken over all gradients together, as if concatenated into
    one vector (:func:`get_total_norm`); then every gradient is multiplied by

    .. math::
        c = \min\Big(1, \frac{\text{max\_norm}}{\|g\|_p + 10^{-6}}\Big).

    Parameters
    ----------
    parameters : Parameter or iterable of Parameter
        Parameters whose ``grad`` is clipped; ``None`` grads are skipped.
    max_norm : float
        The largest norm allowed.
    norm_type : float or str, default 2.0
        The order :math:`p` of the norm; ``float("inf")`` or ``"inf"`` for the max norm.
    error_if_nonfinite : bool, default False
        Raise ``RuntimeError`` (changing nothing) if the norm is NaN or infinite.
    foreach : None or bool
        Accepted for torch compatibility; nopt always runs its multi-tensor kernels.

    Returns
    -------
    numpy.float64
        The total norm of the gradients before clipping (torch returns a
        0-d tensor). See :func:`get_total_norm` for float32 gradients.

    Examples
    --------
    >>> loss_grad(params)                      # fills p.grad
    >>> nopt.utils.clip_grad_norm_(params, max_norm=1.0)
    >>> optimizer.step()
    """
    if isinstance(parameters, np.ndarray):
        parameters = [parameters]
    else:
        is_generator = isinstance(parameters, types.GeneratorType)
        parameters = list(parameters)
        if is_generator and len(parameters) == 0:
            warnings.warn(
                "`parameters` is an empty generator, no gradient clipping will occur.",
                stacklevel=2,
            )
    grads = _grads_of(parameters)
    max_norm = float(max_norm)
    _check_arrays(grads, "grads", writeable=True)  # all checks before any change
    total_norm = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(parameters, max_norm, total_norm, foreach)
    return total_norm


def clip_grad_norm(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Deprecated alias of :func:`clip_grad_norm_` (as in torch)."""
    warnings.warn(
        "`nopt.utils.clip_grad_norm` is now deprecated in favor of `nopt.utils.clip_grad_norm_`.",
        FutureWarning,
        stacklevel=2,
    )
    return clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)


def clip_grad_value_(parameters, clip_value, foreach=None):
    r"""Clamp every gradient element to :math:`[-c, c]` in place, as ``torch.nn.utils.clip_grad_value_``.

    Parameters
    ----------
    parameters : Parameter or iterable of Parameter
        Parameters whose ``grad`` is clipped; ``None`` grads are skipped.
    clip_value : float
        :math:`c`. As torch: NaN elements stay NaN, a NaN ``clip_value``
        makes every element NaN, and a negative one sets every element to
        ``clip_value`` (torch.clamp with min > max).
    foreach : None or bool
        Accepted for torch compatibility.
    """
    parameters = _as_list(parameters)
    clip_value = float(clip_value)
    grads = _grads_of(parameters)
    if not grads:
        return
    _check_arrays(grads, "grads", writeable=True)
    _apply(grads, _k.clamp, _numpy_clamp, -clip_value, clip_value)
