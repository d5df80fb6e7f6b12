"""Gradient averaging over MPI: validation, buffers, buckets, the ordered sum.

Design
------
* **One collective check per step.** Every rank first checks its own
  gradients (presence, shape, dtype, contiguity) and joins one small
  ``Allreduce`` carrying an error flag and a fingerprint of which parameters
  have gradients. If any rank failed, every rank learns it there and raises
  the same error, before any gradient is exchanged or any parameter moves:
  a bad gradient on one rank can neither deadlock the others nor be applied
  on some ranks only.
* **One contiguous buffer per dtype.** When the gradients of one dtype are
  already end to end in one allocation (a :class:`nopt.ParameterBuffer`, or a
  single parameter) that memory is reduced in place. Otherwise they are
  packed into a reusable buffer and unpacked into ``p.grad`` in place.
* **Buckets.** The buffer is cut into buckets of ``bucket_bytes``; each is
  reduced with ``Iallreduce`` as soon as it is packed, so packing (and
  unpacking) one bucket overlaps the reduction of the others.
* **Deterministic order.** MPI does not promise the order in which an
  allreduce adds the ranks' values. With ``deterministic=True`` the sum is
  computed here, in rank order: a reduce-scatter (rank r receives chunk r
  of every rank: ``Alltoall`` of equal chunks, plus a ``Gather`` of the
  remainder to the last rank), a left-to-right NumPy sum
  ``((g_0 + g_1) + g_2) + ...``, then an allgather of the summed chunks
  (``Allgather``, plus a ``Bcast`` of the remainder). It moves the same
  2(N-1)/N x size bytes per rank as a ring allreduce, but needs a scratch
  buffer the size of the bucket, is not overlapped, and sums outside MPI.
  Equal chunks matter: MPICH's ``Alltoallv`` and ``Allgatherv`` ran 5-10x
  slower than ``Alltoall`` and ``Allgather`` of the same bytes here.

The average is ``sum / N`` (a true division, not a multiplication by 1/N).
"""
import zlib

import numpy as np
from mpi4py import MPI

__all__ = ["GradReducer", "allgather_blocks", "block_counts", "check_step", "contiguous_run", "mpi_type",
           "ordered_reduce_scatter", "split_counts"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_ERROR_TYPES = {"TypeError": TypeError, "ValueError": ValueError, "FloatingPointError": FloatingPointError}


def mpi_type(dtype):
    return MPI.DOUBLE if np.dtype(dtype) == np.float64 else MPI.FLOAT


def split_counts(n, parts):
    """Sizes and offsets of ``parts`` nearly equal chunks of ``n`` elements."""
    base, extra = divmod(n, parts)
    counts = [base + (r < extra) for r in range(parts)]
    displs = [0] * parts
    for r in range(1, parts):
        displs[r] = displs[r - 1] + counts[r - 1]
    return counts, displs


def block_counts(n, parts):
    """Chunks of ``n // parts`` elements, the last one also taking the remainder."""
    m = n // parts
    counts = [m] * parts
    counts[-1] += n - m * parts
    return counts, [m * r for r in range(parts)]


def allgather_blocks(comm, view, counts):
    """Every rank's chunk of ``view`` (laid out by :func:`block_counts`) to every rank, in place."""
    size = comm.Get_size()
    m = counts[0]
    t = mpi_type(view.dtype)
    if m:
        comm.Allgather(MPI.IN_PLACE, [view[:m * size], t])
    tail = view[m * size:]
    if tail.size:
        comm.Bcast([tail, t], root=size - 1)


def _sum_in_rank_order(rows, out, size):
    # Rank order, left to right: ((g_0 + g_1) + g_2) + ..., then / N.
    np.copyto(out, rows[0])
    for r in range(1, size):
        np.add(out, rows[r], out=out)
    np.divide(out, size, out=out)


def ordered_reduce_scatter(comm, buf, counts, displs, out, scratch):
    """``out = (buf_0[chunk] + buf_1[chunk] + ... ) / N`` for this rank's chunk, summed in rank order.

    Parameters
    ----------
    buf : 1-D ndarray
        This rank's contribution; chunk ``r`` is ``buf[displs[r]:displs[r] + counts[r]]``.
    out : 1-D ndarray of ``counts[rank]`` elements
        Receives the average of chunk ``rank``; may be that chunk of ``buf``.
    scratch : 1-D ndarray of at least ``N * counts[rank]`` elements

    Notes
    -----
    The layout of :func:`block_counts` (equal chunks, the last one with the
    remainder) travels with ``Alltoall`` plus a ``Gather`` of the remainder
    to the last rank; any other layout with ``Alltoallv``, which MPICH ran
    5-7x slower than ``Alltoall`` of the same bytes here.
    """
    size, rank = comm.Get_size(), comm.Get_rank()
    t = mpi_type(buf.dtype)
    m = counts[0]
    blocks = all(c == m for c in counts[:-1]) and all(d == m * r for r, d in enumerate(displs))
    if not blocks:
        n = counts[rank]
        recv = scratch[:size * n]
        comm.Alltoallv([buf, (counts, displs), t], [recv, ([n] * size, [n * r for r in range(size)]), t])
        _sum_in_rank_order(recv.reshape(size, n), out, size)
        return
    tail = counts[-1] - m
    recv = scratch[:size * m]
    if m:
        comm.Alltoall([buf[:size * m], t], [recv, t])
    tails = scratch[size * m:size * (m + tail)] if rank == size - 1 else None
    if tail:
        comm.Gather([buf[size * m:], t], [tails, t] if tails is not None else None, root=size - 1)
    _sum_in_rank_order(recv.reshape(size, m), out[:m], size)
    if tails is not None and tail:
        _sum_in_rank_order(tails.reshape(size, tail), out[m:], size)


def _local_problem(params, where):
    """The first problem with this rank's gradients, as ``(type name, message)``, or None."""
    for name, p in zip(where, params):
        g = p.grad
        if g is None:
            continue
        if not isinstance(g, np.ndarray):
            if hasattr(g, "tocoo") and hasattr(g, "shape"):  # scipy.sparse (SparseAdam)
                if tuple(g.shape) != p.shape:
                    return "ValueError", f"{name}.grad has shape {tuple(g.shape)}; expected {p.shape}"
                continue
            return "TypeError", f"{name}.grad must be an ndarray, got {type(g).__name__}"
        if g.shape != p.shape:
            return "ValueError", f"{name}.grad has shape {g.shape}; expected {p.shape}"
        if g.dtype != p.dtype:
            return "TypeError", f"{name}.grad has dtype {g.dtype}; expected {p.dtype}"
        if not g.flags.c_contiguous:
            return "ValueError", f"{name}.grad must be C-contiguous"
    return None


def check_step(comm, params, where, extra=()):
    """Every rank's gradients are good and present for the same parameters, or every rank raises.

    One ``Allreduce`` (MAX) of ``[error, fingerprint, -fingerprint, *extra]``
    int64 values; on an error a second, pickled ``allgather`` tells every rank
    which rank failed and why. Returns the reduced ``extra`` values.
    """
    problem = _local_problem(params, where)
    presence = np.fromiter((p.grad is not None for p in params), dtype=np.uint8, count=len(params))
    fingerprint = zlib.crc32(presence.tobytes())
    local = np.array([problem is not None, fingerprint, -fingerprint, *extra], dtype=np.int64)
    result = np.empty_like(local)
    comm.Allreduce(local, result, op=MPI.MAX)
    if result[0]:
        problems = comm.allgather(problem)
        rank, (kind, message) = next((r, p) for r, p in enumerate(problems) if p is not None)
        raise _ERROR_TYPES.get(kind, ValueError)(f"rank {rank}: {message} (no rank stepped)")
    if result[1] != -result[2]:
        patterns = comm.allgather(presence)
        for i, name in enumerate(where):
            have = [r for r, pat in enumerate(patterns) if pat[i]]
            if 0 < len(have) < len(patterns):
                lack = [r for r in range(len(patterns)) if r not in have]
                raise ValueError(
                    f"{name} has a gradient on rank(s) {have} but not on rank(s) {lack}; every rank "
                    "must compute gradients for the same parameters (no rank stepped)")
    return result[3:]


def _memory_owner(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def contiguous_run(arrays):
    """A 1-D view over ``arrays`` when they lie end to end in one allocation, in order, else None."""
    first = arrays[0]
    owner = _memory_owner(first)
    if not owner.flags.c_contiguous or not owner.flags.writeable:
        return None
    address = first.ctypes.data
    for a in arrays:
        if not a.flags.c_contiguous or _memory_owner(a) is not owner or a.ctypes.data != address:
            return None
        address += a.nbytes
    total = sum(a.size for a in arrays)
    offset = first.ctypes.data - owner.ctypes.data
    return np.ndarray((total,), dtype=first.dtype, buffer=owner, offset=offset)


class _Segment:
    """One dtype's gradients as one 1-D buffer, cut into buckets."""

    def __init__(self, grads, bucket_elements, in_place):
        self.grads = grads
        self.flat = [g.reshape(-1) for g in grads]
        run = contiguous_run(grads) if in_place else None
        self.in_place = run is not None
        total = sum(g.size for g in grads)
        self.buffer = run if run is not None else np.empty(total, dtype=grads[0].dtype)
        # (start, stop, [(flat grad slice, buffer slice), ...]) per bucket.
        n_buckets = max(1, -(-total // max(1, bucket_elements)))
        counts, displs = split_counts(total, n_buckets)
        self.buckets = []
        offsets = np.cumsum([0] + [g.size for g in grads])
        for count, start in zip(counts, displs):
            stop = start + count
            pieces = []
            if not self.in_place:
                for g, lo, hi in zip(self.flat, offsets[:-1], offsets[1:]):
                    a, b = max(lo, start), min(hi, stop)
                    if a < b:
                        pieces.append((g[a - lo:b - lo], self.buffer[a:b]))
            self.buckets.append((start, stop, pieces))
        self.scratch = None

    def pack(self, pieces):
        for src, dst in pieces:
            np.copyto(dst, src)

    def unpack(self, pieces):
        for dst, src in pieces:
            np.copyto(dst, src)


class GradReducer:
    """Averages the gradients of a list of parameters across the ranks of ``comm``.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
    bucket_bytes : int
        Target bucket size.
    deterministic : bool
        Sum in rank order (see the module notes) instead of MPI's order.
    in_place : bool
        Reduce gradients that lie end to end in one allocation in place.
    """

    def __init__(self, comm, bucket_bytes=25 << 20, deterministic=False, in_place=True):
        self.comm = comm
        self.bucket_bytes = int(bucket_bytes)
        self.deterministic = bool(deterministic)
        self.in_place = bool(in_place)
        self._segments = None
        self._key = None

    def _plan(self, grads):
        key = tuple(id(g) for g in grads)
        if key != self._key:
            segments = []
            for dtype in _FLOAT_DTYPES:
                of_dtype = [g for g in grads if g.dtype == dtype and g.size]
                if of_dtype:
                    segments.append(_Segment(of_dtype, self.bucket_bytes // dtype.itemsize, self.in_place))
            self._segments, self._key = segments, key
        return self._segments

    def average(self, grads):
        """Replace every array in ``grads`` by the average over ranks, in place.

        ``grads`` are dense, C-contiguous float arrays, the same list (shapes,
        dtypes, order) on every rank.
        """
        if self.comm.Get_size() == 1:
            return
        segments = self._plan(grads)
        if self.deterministic:
            for seg in segments:
                self._average_ordered(seg)
        else:
            self._average_mpi(segments)

    def _average_mpi(self, segments):
        size = self.comm.Get_size()
        pending = []
        for seg in segments:
            t = mpi_type(seg.buffer.dtype)
            for start, stop, pieces in seg.buckets:
                seg.pack(pieces)
                view = seg.buffer[start:stop]
                if len(seg.buckets) == 1 and len(segments) == 1:
                    self.comm.Allreduce(MPI.IN_PLACE, [view, t], op=MPI.SUM)
                    np.divide(view, size, out=view)
                    seg.unpack(pieces)
                    return
                pending.append((self.comm.Iallreduce(MPI.IN_PLACE, [view, t], op=MPI.SUM), seg, view, pieces))
                # MPI progresses a non-blocking collective only inside MPI calls.
                MPI.Request.Testall([p[0] for p in pending])
        for request, seg, view, pieces in pending:
            request.Wait()
            np.divide(view, size, out=view)
            seg.unpack(pieces)

    def _average_ordered(self, seg):
        comm = self.comm
        size, rank = comm.Get_size(), comm.Get_rank()
        for start, stop, pieces in seg.buckets:
            seg.pack(pieces)
            view = seg.buffer[start:stop]
            counts, displs = block_counts(stop - start, size)
            need = size * counts[rank]
            if seg.scratch is None or seg.scratch.size < need:
                seg.scratch = np.empty(need, dtype=view.dtype)
            mine = view[displs[rank]:displs[rank] + counts[rank]]
            ordered_reduce_scatter(comm, view, counts, displs, mine, seg.scratch)
            allgather_blocks(comm, view, counts)
            seg.unpack(pieces)


def average_sparse(comm, params):
    """Average scipy.sparse gradients: gather every rank's entries in rank order, sum duplicates, / N."""
    import scipy.sparse as sp

    size = comm.Get_size()
    for p in params:
        g = p.grad
        coo = g.tocoo()
        parts = comm.allgather((coo.row, coo.col, coo.data))
        row = np.concatenate([r for r, _, _ in parts])
        col = np.concatenate([c for _, c, _ in parts])
        data = np.concatenate([d for _, _, d in parts])
        total = sp.coo_matrix((data, (row, col)), shape=coo.shape)
        total.sum_duplicates()
        total.data /= size
        p.grad = total.asformat(g.format)
