"""Muon: momentum orthogonalised by a Newton-Schulz iteration, for 2-D parameters."""
import math

import numpy as np

from .optimizer import Optimizer

__all__ = ["Muon"]

# Keller Jordan's quintic coefficients and defaults (as torch.optim.Muon).
_DEFAULT_COEFFICIENTS = (3.4445, -4.775, 2.0315)


class Muon(Optimizer):
    r"""Muon, as ``torch.optim.Muon``, with Newton-Schulz in the parameter's dtype.

    .. math::
        \begin{aligned}
        B_t &\leftarrow \mathrm{lerp}(B_{t-1}, g_t, 1 - \mu)
            = \mu B_{t-1} + (1 - \mu)\,g_t \\
        \tilde B_t &\leftarrow \mathrm{lerp}(g_t, B_t, \mu) \ \text{(nesterov)}, \quad
            \text{else } B_t \\
        O_t &\leftarrow \mathrm{NS}^{(a,b,c)}_k(\tilde B_t; \varepsilon) \\
        \theta_t &\leftarrow (1 - \gamma\lambda)\,\theta_{t-1}
            - \gamma\,s(A, B)\,O_t
        \end{aligned}

    :math:`\mathrm{NS}` normalises :math:`X_0 = \tilde B / \max(\|\tilde B\|_F,
    \varepsilon)` (transposed first when it has more rows than columns, so
    :math:`X X^\top` is the smaller Gram matrix), then iterates :math:`k`
    times

    .. math::
        A = X X^\top, \qquad X \leftarrow a X + (b A + c A^2) X,

    which pushes every singular value of :math:`X` towards one. The
    learning-rate scale :math:`s` of a parameter of shape :math:`(A, B)` is
    :math:`\sqrt{\max(1, A/B)}` (``adjust_lr_fn=None`` or ``"original"``) or
    :math:`0.2\sqrt{\max(A, B)}` (``"match_rms_adamw"``, to match AdamW's
    update RMS).

    Parameters
    ----------
    params : iterable
        2-D Parameters or parameter-group dicts. Biases, embeddings and other
        parameters belong in another optimizer (e.g. :class:`nopt.AdamW`).
    lr : float, default 1e-3
        Learning rate :math:`\gamma`.
    weight_decay : float, default 0.1
        Decoupled weight decay :math:`\lambda`.
    momentum : float, default 0.95
        Momentum :math:`\mu`.
    nesterov : bool, default True
        Use the Nesterov form :math:`\tilde B_t`.
    ns_coefficients : (float, float, float), default (3.4445, -4.775, 2.0315)
        The quintic's coefficients :math:`(a, b, c)`.
    eps : float, default 1e-7
        Floor :math:`\varepsilon` of the Frobenius norm.
    ns_steps : int, default 5
        Newton-Schulz iterations :math:`k` (fewer than 100).
    adjust_lr_fn : {None, "original", "match_rms_adamw"}
        The learning-rate scale :math:`s`.

    Notes
    -----
    State per parameter: ``momentum_buffer`` (torch's key; Muon keeps no step
    count).

    torch runs Newton-Schulz in **bfloat16**. nopt runs it in the parameter's
    dtype (float32 or float64) with NumPy's BLAS matrix products, so its
    orthogonalisation matches torch's float32/float64 computation of the same
    iteration to rounding, and differs from torch's bfloat16 result by about
    bfloat16's precision (a relative 1e-2). The matrix products use NumPy's
    BLAS threads (set them with ``threadpoolctl``); ``nopt.num_threads`` does
    not apply. The elementwise parts (momentum and the final update) are
    NumPy operations in place.

    References
    ----------
    .. [1] Jordan et al., "Muon: An optimizer for hidden layers in neural
       networks", 2024, https://kellerjordan.github.io/posts/muon/
    .. [2] Liu et al., "Muon is Scalable for LLM Training", arXiv:2502.16982, 2025.
    """

    _elementwise_state = ("momentum_buffer",)
    _required_state = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=_DEFAULT_COEFFICIENTS, eps=1e-7, ns_steps=5, adjust_lr_fn=None):
        if not 0.0 <= lr:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not 0.0 <= momentum:
            raise ValueError(f"momentum should be >= 0 but is: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"weight decay should be >= 0 but is: {weight_decay}")
        if adjust_lr_fn is not None and adjust_lr_fn not in ("original", "match_rms_adamw"):
            raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_coefficients=tuple(ns_coefficients), eps=eps, ns_steps=ns_steps,
                        adjust_lr_fn=adjust_lr_fn)
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        """Add a group; every parameter must be 2-D (torch checks this in ``__init__``)."""
        params = param_group.get("params") if isinstance(param_group, dict) else None
        if isinstance(params, np.ndarray):
            params = [params]
        if params is not None and not isinstance(params, (set, frozenset)):
            params = list(params)
            for p in params:
                p = p[1] if isinstance(p, tuple) else p
                if isinstance(p, np.ndarray) and p.ndim != 2:
                    raise ValueError("Muon only supports 2D parameters whereas we found a "
                                     f"parameter with size: {p.shape}")
            param_group = dict(param_group, params=params)
        super().add_param_group(param_group)

    def _plan(self, batch, calls, undo):
        """Check the group, create missing momentum buffers, append the batch's update."""
        group = batch.group
        gi = batch.group_index
        coefficients, ns_steps = group["ns_coefficients"], group["ns_steps"]
        if ns_steps >= 100:
            raise ValueError("Number of steps must be less than 100 for computational efficiency")
        if not isinstance(coefficients, (tuple, list)) or len(coefficients) != 3:
            raise ValueError("Coefficients must be a tuple of exactly 3 values")
        if isinstance(ns_steps, bool) or not isinstance(ns_steps, (int, np.integer)) or ns_steps < 0:
            raise TypeError(f"param_groups[{gi}]['ns_steps'] must be an int >= 0, got {ns_steps!r}")
        buffers = []
        for k, p in enumerate(batch.params):
            where = f"Muon: param_groups[{gi}]['params'][{batch.indices[k]}]"
            if p.ndim != 2:
                raise ValueError(f"{where}: Param gradient must be a 2D matrix (shape {p.shape})")
            state = self.state.get(p)
            if not state or "momentum_buffer" not in state:
                self._fresh_state(p, undo)["momentum_buffer"] = np.zeros(p.shape, p.dtype)
            buf = self.state[p]["momentum_buffer"]
            if (not isinstance(buf, np.ndarray) or buf.shape != p.shape or buf.dtype != p.dtype
                    or not buf.flags.writeable or np.may_share_memory(buf, p)):
                raise ValueError(f"{where}: state['momentum_buffer'] must be a writeable array of "
                                 f"shape {p.shape} and dtype {p.dtype}, apart from the parameter")
            buffers.append(buf)
        tables = self._step_tables
        if tables is not None:
            # Keep the arrays alive until the update ran, and have the base
            # class check that none overlaps another.
            tables.append([batch.params, batch.grads, buffers])
            tables[0] = True
        calls.append((_muon_update, (batch.params, batch.grads, buffers, dict(group))))


def _adjusted_lr(lr, adjust_lr_fn, shape):
    """torch's learning-rate scale for a parameter of ``shape`` (rows, cols)."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, rows / cols))
    elif adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(rows, cols))
    else:
        ratio = 1.0
    return lr * ratio


def _lerp_(start, end, weight, scratch):
    """``start = torch.lerp(start, end, weight)`` in place (torch's two-sided formula)."""
    w = start.dtype.type(weight)
    np.subtract(end, start, out=scratch)
    if abs(w) < 0.5:
        scratch *= w
        start += scratch
    else:
        scratch *= w - start.dtype.type(1)
        np.add(end, scratch, out=start)


def newton_schulz(matrix, ns_coefficients=_DEFAULT_COEFFICIENTS, ns_steps=5, eps=1e-7):
    r"""Orthogonalise a 2-D array by torch's quintic Newton-Schulz iteration, in its dtype.

    Parameters
    ----------
    matrix : ndarray, shape (m, n), float32 or float64
        Left unchanged.
    ns_coefficients : (float, float, float)
        :math:`(a, b, c)`.
    ns_steps : int
    eps : float
        Floor of the Frobenius norm.

    Returns
    -------
    ndarray, shape (m, n)
        Approximately :math:`U V^\top` for :math:`U S V^\top` the SVD of
        ``matrix`` (the singular values end near 1, not at 1: the
        coefficients trade accuracy for speed).
    """
    a, b, c = ns_coefficients
    dtype = matrix.dtype.type
    tall = matrix.shape[0] > matrix.shape[1]
    x = np.array(matrix.T if tall else matrix, order="C", copy=True)
    norm = dtype(np.sqrt(np.sum(np.square(x, dtype=np.float64))))
    x /= max(norm, dtype(eps))      # a NaN norm stays NaN, as torch's clamp
    rows = x.shape[0]
    gram = np.empty((rows, rows), x.dtype)
    poly = np.empty((rows, rows), x.dtype)
    nxt = np.empty_like(x)
    a, b, c = dtype(a), dtype(b), dtype(c)
    for _ in range(ns_steps):
        np.matmul(x, x.T, out=gram)              # A = X X^T (BLAS syrk)
        # A is symmetric, so A A = A A^T: NumPy then calls BLAS syrk, which
        # computes one triangle (half the products of a general matmul).
        np.matmul(gram, gram.T, out=poly)        # b A + c A^2
        poly *= c
        gram *= b
        poly += gram
        np.matmul(poly, x, out=nxt)              # X = a X + (b A + c A^2) X
        x *= a
        nxt += x
        x, nxt = nxt, x
    return x.T if tall else x


def _muon_update(params, grads, buffers, group):
    """One Muon step for a batch (every check was made while planning)."""
    lr, momentum = group["lr"], group["momentum"]
    decay = 1 - lr * group["weight_decay"]
    for p, g, buf in zip(params, grads, buffers):
        plain = p.view(np.ndarray)
        scratch = np.empty_like(buf)
        _lerp_(buf, g, 1 - momentum, scratch)
        if group["nesterov"]:
            update = np.array(g, copy=True)
            _lerp_(update, buf, momentum, scratch)
        else:
            update = buf
        ortho = newton_schulz(update, group["ns_coefficients"], group["ns_steps"], group["eps"])
        step = _adjusted_lr(lr, group["adjust_lr_fn"], p.shape)
        plain *= p.dtype.type(decay)
        ortho *= p.dtype.type(-step)
        plain += ortho
