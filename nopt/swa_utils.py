r"""Stochastic weight averaging (SWA) and exponential moving averages (EMA).

- :class:`SWALR`: torch's SWA learning-rate schedule (anneal each group's lr
  to a fixed ``swa_lr``).
- :class:`AveragedParameters`: running SWA or EMA averages of a list of
  Parameters, with torch's ``AveragedModel`` update semantics, updated in
  place by one Cython kernel call per dtype, and swappable into the
  parameters for evaluation.
- ``get_swa_multi_avg_fn`` / ``get_ema_multi_avg_fn`` (kernel-backed) and
  ``get_swa_avg_fn`` / ``get_ema_avg_fn`` (NumPy), as in torch.

References
----------
.. [1] Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
   Generalization", UAI 2018.
"""
import contextlib
import math
import warnings

import numpy as np

from ._kernels import _plan
from ._kernels import helpers as _avg
from .lr_scheduler import LRScheduler, _format_param

__all__ = [
    "SWALR",
    "AveragedParameters",
    "get_swa_multi_avg_fn",
    "get_ema_multi_avg_fn",
    "get_swa_avg_fn",
    "get_ema_avg_fn",
]


def _check_decay(decay):
    if decay < 0.0 or decay > 1.0:
        raise ValueError(f"Invalid decay value {decay} provided. Please provide a value in [0,1] range.")


def _by_dtype(averages, currents):
    """Pairs of (averages, currents) lists, one per dtype (float32 first), order kept."""
    parts = []
    for dtype in (np.float32, np.float64):
        keep = [k for k, a in enumerate(averages) if a.dtype == dtype]
        if keep:
            parts.append(([averages[k] for k in keep], [currents[k] for k in keep]))
    return parts


def _run(op, averages, currents, value=0.0):
    """One kernel call per dtype over already-checked arrays."""
    for avgs, curs in _by_dtype(averages, currents):
        ptrs, chunks, n_threads = _plan.make_table([avgs, curs])
        _avg.average(ptrs, chunks, avgs[0].dtype == np.float64, n_threads, op, value)


class _KernelAverage:
    """A multi_avg_fn computed by nopt's averaging kernel (see the get_* factories)."""

    mode = None

    def __call__(self, averaged_param_list, current_param_list, num_averaged):
        averaged = list(averaged_param_list)
        current = list(current_param_list)
        _check_pairs(averaged, current, "current_param_list")
        self._apply(averaged, current, int(num_averaged))


class _SWAAverage(_KernelAverage):
    mode = "swa"

    def _apply(self, averaged, current, num_averaged):
        _run(_avg.SWA, averaged, current, num_averaged + 1)

    def __repr__(self):
        return "get_swa_multi_avg_fn()"


class _EMAAverage(_KernelAverage):
    mode = "ema"

    def __init__(self, decay):
        self.decay = decay

    def _apply(self, averaged, current, num_averaged):
        _run(_avg.EMA, averaged, current, 1.0 - self.decay)

    def __repr__(self):
        return f"get_ema_multi_avg_fn(decay={self.decay!r})"


def get_swa_multi_avg_fn():
    r"""In-place equal-weight average, for ``AveragedParameters(multi_avg_fn=...)``.

    .. math:: \bar\theta \leftarrow \bar\theta + \frac{\theta - \bar\theta}{n + 1}

    computed in the arrays' dtype, as torch's ``get_swa_avg_fn`` and
    ``AveragedModel``'s default CPU path. (torch's own
    ``get_swa_multi_avg_fn`` turns the tensor count into a float32 weight
    :math:`1/(n+1)`, so its float64 averages carry float32 rounding; nopt's
    does not.)

    Returns
    -------
    callable
        ``fn(averaged_list, current_list, num_averaged)``, run by nopt's kernel.
    """
    return _SWAAverage()


def get_ema_multi_avg_fn(decay=0.999):
    r"""In-place exponential moving average, for ``AveragedParameters(multi_avg_fn=...)``.

    .. math:: \bar\theta \leftarrow \operatorname{lerp}(\bar\theta, \theta, 1 - \text{decay})

    as torch's ``get_ema_multi_avg_fn`` (torch's lerp fuses the multiply-add,
    so results can differ from torch's by an ulp per update).

    Parameters
    ----------
    decay : float, default 0.999
        In [0, 1].

    Returns
    -------
    callable
        ``fn(averaged_list, current_list, num_averaged)``, run by nopt's kernel.
    """
    _check_decay(decay)
    return _EMAAverage(decay)


def get_swa_avg_fn():
    """Per-array equal-weight average ``avg + (current - avg) / (n + 1)`` (returns a new array)."""

    def swa_update(averaged_param, current_param, num_averaged):
        return averaged_param + (current_param - averaged_param) / (num_averaged + 1)

    return swa_update


def get_ema_avg_fn(decay=0.999):
    """Per-array EMA ``decay * avg + (1 - decay) * current`` (returns a new array)."""
    _check_decay(decay)

    def ema_update(ema_param, current_param, num_averaged):
        return decay * ema_param + (1 - decay) * current_param

    return ema_update


def _describe(x):
    if isinstance(x, np.ndarray):
        return f"ndarray of dtype {x.dtype} and shape {x.shape}"
    return type(x).__name__


def _check_array(x, where):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{where} must be a nopt.Parameter or float ndarray, got {_describe(x)}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{where} has dtype {x.dtype}; expected float32 or float64")
    if not x.flags.c_contiguous or not x.flags.aligned:
        raise ValueError(f"{where} (shape {x.shape}) is not an aligned C-contiguous array")


def _check_pairs(averaged, current, name):
    if len(averaged) != len(current):
        raise ValueError(f"{name} has {len(current)} arrays; expected {len(averaged)}")
    for k, (a, c) in enumerate(zip(averaged, current)):
        _check_array(a, f"averaged[{k}]")
        _check_array(c, f"{name}[{k}]")
        if not a.flags.writeable:
            raise ValueError(f"averaged[{k}] is read-only")
        if c.dtype != a.dtype:
            raise TypeError(f"{name}[{k}] has dtype {c.dtype}; expected {a.dtype}")
        if c.shape != a.shape:
            raise ValueError(f"{name}[{k}] has shape {c.shape}; expected {a.shape}")


class AveragedParameters:
    r"""Running SWA or EMA averages of a list of Parameters.

    The semantics are ``torch.optim.swa_utils.AveragedModel``'s over a
    parameter list: the averages start as copies of the parameters;
    ``update_parameters()`` copies the current values on its first call
    (``n_averaged == 0``) and averages them in afterwards; ``n_averaged``
    counts the calls.

    .. math::
        \text{SWA:}\quad \bar\theta_{n+1} = \bar\theta_n + \frac{\theta - \bar\theta_n}{n + 1}
        \qquad
        \text{EMA:}\quad \bar\theta_{n+1} = \operatorname{lerp}(\bar\theta_n, \theta, 1 - d)

    Parameters
    ----------
    params : iterable of nopt.Parameter
        The parameters to average (float32 and/or float64, C-contiguous,
        each listed once).
    mode : {'swa', 'ema'}, optional
        The average kept by nopt's kernel; default ``'swa'``. Not with
        ``avg_fn`` / ``multi_avg_fn``.
    decay : float, default 0.999
        EMA decay :math:`d`, in [0, 1] (``mode='ema'``).
    avg_fn : callable, optional
        Custom ``avg_fn(averaged, current, n_averaged) -> new averaged`` per
        array, as torch's.
    multi_avg_fn : callable, optional
        Custom in-place ``multi_avg_fn(averaged_list, current_list,
        n_averaged)``, called once per dtype, as torch's. The functions from
        :func:`get_swa_multi_avg_fn` / :func:`get_ema_multi_avg_fn` run on
        nopt's kernel.

    Attributes
    ----------
    params : list of nopt.Parameter
    averages : list of numpy.ndarray
        The running averages (views into one buffer per dtype).
    n_averaged : int
    is_swapped : bool
        Whether the averages are currently in the parameters.

    Examples
    --------
    >>> ema = nopt.swa_utils.AveragedParameters(params, mode="ema", decay=0.99)
    >>> for batch in data:
    ...     optimizer.step()
    ...     ema.update_parameters()
    >>> with ema.swapped():   # the parameters hold the averages here
    ...     evaluate(model)
    """

    def __init__(self, params, mode=None, decay=0.999, *, avg_fn=None, multi_avg_fn=None):
        if avg_fn is not None and multi_avg_fn is not None:
            raise ValueError("Only one of avg_fn and multi_avg_fn should be provided")
        custom = avg_fn is not None or multi_avg_fn is not None
        if custom and mode is not None:
            raise ValueError("give either mode or a custom avg_fn / multi_avg_fn, not both")
        if mode is None and not custom:
            mode = "swa"
        if mode is not None and mode not in ("swa", "ema"):
            raise ValueError(f"mode must be 'swa' or 'ema', got {mode!r}")
        for name, fn in (("avg_fn", avg_fn), ("multi_avg_fn", multi_avg_fn)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        if isinstance(params, np.ndarray):
            raise TypeError(
                "params must be an iterable of Parameters, got a single ndarray (wrap it in a list)"
            )
        params = list(params)
        if not params:
            raise ValueError("AveragedParameters got an empty parameter list")
        for k, p in enumerate(params):
            _check_array(p, f"params[{k}]")
            if not p.flags.writeable:
                raise ValueError(f"params[{k}] is read-only; swapping needs writeable parameters")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("params lists the same parameter more than once")
        if mode == "ema":
            _check_decay(decay)
        self.params = params
        self.mode = mode
        self.decay = decay
        self.avg_fn = avg_fn
        self.multi_avg_fn = multi_avg_fn
        if mode == "swa":
            self._kernel_fn = _SWAAverage()
        elif mode == "ema":
            self._kernel_fn = _EMAAverage(decay)
        else:
            self._kernel_fn = None
        self.averages = self._allocate(params)
        _run(_avg.COPY, self.averages, params)
        self.n_averaged = 0
        self.is_swapped = False

    @staticmethod
    def _allocate(params):
        """Arrays shaped like ``params``, as views into one buffer per dtype (one kernel loop)."""
        out = [None] * len(params)
        for dtype in (np.float32, np.float64):
            keep = [k for k, p in enumerate(params) if p.dtype == dtype]
            buffer = np.empty(sum(params[k].size for k in keep), dtype=dtype)
            offset = 0
            for k in keep:
                out[k] = buffer[offset:offset + params[k].size].reshape(params[k].shape)
                offset += params[k].size
        return out

    def update_parameters(self, params=None):
        """Average in the current values of ``params`` (default: the tracked parameters).

        Parameters
        ----------
        params : list of arrays, optional
            Same count, shapes and dtypes as the tracked parameters (e.g. a
            copy of the model). Checked before anything changes.

        Raises
        ------
        RuntimeError
            While the averages are swapped in.
        """
        if self.is_swapped:
            raise RuntimeError(
                "update_parameters() called while the averages are swapped into the parameters; "
                "swap them back first"
            )
        current = self.params if params is None else list(params)
        _check_pairs(self.averages, current, "params")
        if self.n_averaged == 0:
            _run(_avg.COPY, self.averages, current)
        elif self._kernel_fn is not None:
            self._kernel_fn._apply(self.averages, current, self.n_averaged)
        elif self.multi_avg_fn is not None:
            for avgs, curs in _by_dtype(self.averages, current):
                self.multi_avg_fn(avgs, [np.asarray(c) for c in curs], self.n_averaged)
        else:
            for a, c in zip(self.averages, current):
                a[...] = self.avg_fn(a, np.asarray(c), self.n_averaged)
        self.n_averaged += 1

    def swap(self):
        """Exchange the averages and the parameters' values, bit for bit.

        Called twice, everything is as before. While swapped in
        (``is_swapped``), ``averages`` holds the training values.
        """
        _run(_avg.SWAP, self.averages, self.params)
        self.is_swapped = not self.is_swapped

    @contextlib.contextmanager
    def swapped(self):
        """Context manager: the parameters hold the averages inside the block.

        The training values come back on exit, also after an exception.

        Raises
        ------
        RuntimeError
            If the averages are already swapped in.
        """
        if self.is_swapped:
            raise RuntimeError("the averages are already swapped into the parameters")
        self.swap()
        try:
            yield self
        finally:
            self.swap()

    def state_dict(self):
        """``{"n_averaged": int, "averages": [arrays]}``: copies of the averages (also while swapped)."""
        source = self.params if self.is_swapped else self.averages
        return {
            "n_averaged": self.n_averaged,
            "averages": [np.array(a, copy=True).view(np.ndarray) for a in source],
        }

    def load_state_dict(self, state_dict):
        """Load a state from :meth:`state_dict` (or :func:`nopt.load`); checked before any change.

        Raises
        ------
        TypeError, ValueError
            On a wrong count, shape or non-float data.
        RuntimeError
            While the averages are swapped in.
        """
        if self.is_swapped:
            raise RuntimeError("cannot load a state while the averages are swapped in; swap back first")
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        for key in ("n_averaged", "averages"):
            if key not in state_dict:
                raise ValueError(f"loaded state dict has no '{key}' entry")
        n = state_dict["n_averaged"]
        if isinstance(n, np.ndarray) and n.ndim == 0:
            n = n.item()
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"loaded 'n_averaged' must be an int >= 0, got {n!r}")
        saved = state_dict["averages"]
        if not isinstance(saved, (list, tuple)) or len(saved) != len(self.averages):
            raise ValueError(
                f"loaded 'averages' must be a list of {len(self.averages)} arrays, got "
                f"{len(saved) if isinstance(saved, (list, tuple)) else type(saved).__name__}"
            )
        for k, (a, s) in enumerate(zip(self.averages, saved)):
            if not isinstance(s, np.ndarray) or s.dtype.kind != "f":
                raise TypeError(f"loaded averages[{k}] must be a float array, got {_describe(s)}")
            if s.shape != a.shape:
                raise ValueError(f"loaded averages[{k}] has shape {s.shape}; expected {a.shape}")
        for a, s in zip(self.averages, saved):
            a[...] = s
        self.n_averaged = int(n)

    def __repr__(self):
        how = self.mode or ("multi_avg_fn" if self.multi_avg_fn is not None else "avg_fn")
        extra = f", decay={self.decay}" if self.mode == "ema" else ""
        return (f"AveragedParameters({len(self.params)} arrays, mode={how!r}{extra}, "
                f"n_averaged={self.n_averaged})")


class SWALR(LRScheduler):
    r"""Anneal each group's lr to a fixed ``swa_lr``, then hold it (torch's SWALR).

    Over ``anneal_epochs`` steps, with :math:`\alpha_t` = ``anneal_func(t /
    anneal_epochs)`` (``cos``: :math:`(1 - \cos \pi x)/2`, ``linear``:
    :math:`x`):

    .. math:: \eta_t = \alpha_t\, \eta_{swa} + (1 - \alpha_t)\, \eta_{start}

    where :math:`\eta_{start}` is recovered each step from the group's
    current lr and :math:`\alpha_{t-1}`.

    Parameters
    ----------
    optimizer : nopt.Optimizer
    swa_lr : float or list of float
        Target lr, for all groups or per group (stored as ``group['swa_lr']``).
    anneal_epochs : int, default 10
        Steps of annealing, >= 0.
    anneal_strategy : {'cos', 'linear'}, default 'cos'
    last_epoch : int, default -1

    Notes
    -----
    Like torch's, the step reads the group's current lr (so it takes over from
    whatever schedule ran before, typically switched to at ``swa_start``);
    it has no closed form of the step count alone.
    """

    def __init__(self, optimizer, swa_lr, anneal_epochs=10, anneal_strategy="cos", last_epoch=-1):
        swa_lrs = _format_param("swa_lr", optimizer, swa_lr)
        for value, group in zip(swa_lrs, optimizer.param_groups):
            group["swa_lr"] = value
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError(
                f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}"
            )
        self._anneal_strategy = anneal_strategy
        if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
        self.anneal_epochs = anneal_epochs
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _linear_anneal(t):
        return t

    @staticmethod
    def _cosine_anneal(t):
        return (1 - math.cos(math.pi * t)) / 2

    @property
    def anneal_func(self):
        """The annealing function of ``anneal_strategy``."""
        return self._cosine_anneal if self._anneal_strategy == "cos" else self._linear_anneal

    @staticmethod
    def _get_initial_lr(lr, swa_lr, alpha):
        if alpha == 1:
            return swa_lr
        return (lr - alpha * swa_lr) / (1 - alpha)

    def get_lr(self):
        if not self._get_lr_called_within_step:
            warnings.warn(
                "To get the last learning rate computed by the scheduler, please use `get_last_lr()`.",
                UserWarning,
                stacklevel=2,
            )
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        prev_t = max(0, min(1, (step - 1) / max(1, self.anneal_epochs)))
        prev_alpha = self.anneal_func(prev_t)
        groups = self.optimizer.param_groups
        prev_lrs = [self._get_initial_lr(g["lr"], g["swa_lr"], prev_alpha) for g in groups]
        t = max(0, min(1, step / max(1, self.anneal_epochs)))
        alpha = self.anneal_func(t)
        return [g["swa_lr"] * alpha + lr * (1 - alpha) for g, lr in zip(groups, prev_lrs)]
