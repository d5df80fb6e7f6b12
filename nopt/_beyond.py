"""Helpers shared by the update rules beyond torch.optim (Lion, LAMB, LARS, Adan, ...).

- :func:`init_state`: the checked, lazy creation of per-parameter state
  (``Optimizer._init_state``), with scalars from the class's ``_fresh``,
  arrays zeroed or, for the keys in ``_copied``, a copy of the parameter.
- :func:`state_arrays`: gather a batch's state arrays for a rule without a
  step count, creating missing state first.
- :func:`segmented_table`: a work table with one row per parameter, for the
  rules that reduce each parameter (LAMB, LARS), cached like ``_table``.
- validation helpers with torch's messages.
"""
import numbers

import numpy as np

from ._kernels._plan import CHUNK
from ._kernels.helpers import segment_table
from .optimizer import Optimizer


def check_real(name, value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {value!r}")


def check_betas(betas, count, upper_inclusive=False):
    """``betas`` as a tuple of ``count`` numbers, each in [0, 1) (or [0, 1])."""
    expected = f"betas must be a tuple of {count} real numbers, got {betas!r}"
    try:
        betas = tuple(betas)
    except TypeError:
        raise TypeError(expected) from None
    if len(betas) != count:
        raise ValueError(expected)
    for i, beta in enumerate(betas):
        check_real(f"betas[{i}]", beta)
        ok = 0.0 <= beta <= 1.0 if upper_inclusive else 0.0 <= beta < 1.0
        if not ok:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
    return betas


def check_non_negative(**values):
    """torch's ``Invalid <name> value`` checks, in order (NaN fails, as in torch)."""
    for name, value in values.items():
        check_real(name, value)
        if not 0.0 <= value:
            if name == "lr":
                raise ValueError(f"Invalid learning rate: {value}")
            if name == "eps":
                raise ValueError(f"Invalid epsilon value: {value}")
            raise ValueError(f"Invalid {name} value: {value}")


def init_state(optimizer, batch, keys, undo):
    """Check the batch's non-empty states, then create the missing ones.

    A state that holds some entries but lacks one of ``_fresh`` or ``keys``
    raises (naming the parameter) before anything changes. An empty state
    gets the ``_fresh`` scalars and one array per other key, zeroed, or a
    copy of the parameter for keys listed in ``_copied``; arrays of a batch
    are views into one flat buffer per key.
    """
    state = optimizer.state
    fresh = optimizer._fresh
    copied = optimizer._copied
    arrays = [key for key in keys if key not in fresh]
    wanted = tuple(fresh) + tuple(arrays)
    new = []
    for k, p in enumerate(batch.params):
        s = state.get(p)
        if not s:
            new.append(p)
            continue
        missing = [key for key in wanted if s.get(key) is None]
        if missing:
            raise ValueError(
                f"the state of param_groups[{batch.group_index}]['params'][{batch.indices[k]}] "
                f"has no {', '.join(repr(m) for m in missing)} entry; expected the keys "
                f"{list(wanted)} for this group's options"
            )
    columns = [optimizer._flat_zeros(new) for _ in arrays]
    for i, p in enumerate(new):
        entry = optimizer._fresh_state(p, undo)
        entry.update(fresh)
        for key, column in zip(arrays, columns):
            if key in copied:
                column[i][...] = p
            entry[key] = column[i]


def state_arrays(optimizer, batch, keys, undo):
    """The batch's state arrays ``[[state[p][key] for p] for key]``, creating missing state."""
    columns, missing = optimizer._state_columns(batch.params, keys)
    if missing:
        init_state(optimizer, batch, keys, undo)
        columns, missing = optimizer._state_columns(batch.params, keys)
        if missing:
            raise optimizer._incomplete_state(batch, keys)
    return columns


def split_steps(batch, columns, steps, common):
    """``(step, params, grads, columns)`` per distinct step count, in order."""
    if common is not None:
        return ((common, batch.params, batch.grads, columns),)
    out = []
    for step, part in Optimizer._split_by(batch.params, steps):
        out.append((step, [batch.params[k] for k in part], [batch.grads[k] for k in part],
                    [[col[k] for k in part] for col in columns]))
    return out


def segmented_table(optimizer, streams, tag):
    """``(ptrs, chunks, rows, partials, scale, n_threads)``: one table row per (nonzero-size) parameter.

    ``Optimizer._table`` merges arrays that are adjacent in every stream (flat
    storage); a per-parameter reduction needs them apart, so the merged
    table is split again (``beyond.segment_table``, which also makes the
    kernel's work space, ``partials`` and ``scale``). Cached per ``tag``
    while ``_table`` hands back the same table, so a step allocates nothing.
    """
    ptrs, chunks, n_threads = optimizer._table(streams, tag)
    caches = optimizer.__dict__.setdefault("_segment_caches", {})
    hit = caches.get(tag)
    if hit is not None and hit[0] is ptrs and hit[1] is chunks:
        return hit[2] + (n_threads,)
    params = streams[0]
    sizes = [p.size for p in params if p.size]
    itemsize = params[0].itemsize if params else 8
    segmented = segment_table(ptrs, chunks, sizes, itemsize, CHUNK)
    if len(caches) > 256:
        caches.clear()
    caches[tag] = (ptrs, chunks, segmented)
    return segmented + (n_threads,)


def work_space(optimizer, chunks, tag):
    """Two doubles per chunk of ``chunks``, for a reduction's partial sums; cached per ``tag``.

    The same array while ``chunks`` is the same table (``Optimizer._table``
    hands back its cached one), so a step allocates nothing.
    """
    caches = optimizer.__dict__.setdefault("_work_spaces", {})
    hit = caches.get(tag)
    if hit is not None and hit[0] is chunks:
        return hit[1]
    if len(caches) > 256:
        caches.clear()
    work = np.empty(2 * chunks.shape[0], dtype=np.float64)
    caches[tag] = (chunks, work)
    return work
