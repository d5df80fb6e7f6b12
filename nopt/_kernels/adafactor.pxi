# Adafactor (torch.optim.Adafactor's rule): reductions, factored second
# moment and the clipped, relative-size update, for every array of a batch in
# one nogil call.
#
# Unlike the elementwise rules, each array needs three whole-array results
# before it can be updated: the row and column means of g^2 (factored case),
# RMS(param) and RMS(update). So an array is swept in passes over fixed
# tiles, with partial sums per tile combined afterwards in tile order:
#
#   A  (tiles)    sum g^2 per row and per column of the tile (factored), or
#                 v = lerp(v, g*g, w) (vector); sum p^2; sum u^2 (vector)
#   combine       row_var, col_var = lerp(., mean g^2, w); R = mean(row_var)
#   B  (tiles)    sum u^2, u = g / max(sqrt(row_var*col_var / R), eps1)
#                 (factored only; the vector case has it from pass A)
#   C  (tiles)    p = p * (1 - lr*wd) - alpha/denom * u   (u recomputed)
#
# The tiles depend only on the array's shape, never on the thread count, and
# every sum is taken in a fixed order (8 interleaved lanes within a tile, then
# the tiles in order; a tile's squares are computed into a small buffer by a
# reduction-free loop, then added to the lanes, so that both loops vectorise), so the results are bitwise identical for any number of
# threads. Sums are accumulated in double for both dtypes. Recomputing u in
# pass C costs a division and a square root per element but saves writing and
# re-reading an update-sized buffer: the passes are memory-bound.
#
# Order of operations (torch's single-tensor Adafactor; torch's norms give
# sqrt(sum) rounded to the dtype, then square_() and div_()):
#   row_mean = (norm_row(g))^2 / n      col_mean = (norm_col(g))^2 / m
#   row_var  = lerp(row_var, row_mean, w)   (w = step**beta2_decay)
#   R        = max(mean(row_var over rows), eps1)
#   v        = max(row_var * col_var / R, eps1*eps1)
#   u        = g * (1 / sqrt(v))
#   p        = p * (1 - lr*wd) + (-alpha/denom) * u
# where alpha = max(eps2, RMS(p)) * rho and denom = max(1, RMS(u) / d) are
# computed in double from the dtype-rounded norms, as torch's .item() does.
# torch's own reductions (vectorised float sums) are ordered differently, so
# parity with torch is to rounding, not bitwise.

cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport sqrt as dsqrt
from libc.stdint cimport int64_t, intptr_t

import numpy as np

cnp.import_array()

from ._common cimport floating, fsqrt, max_nan, nopt_dispatched

cdef enum:
    # Tile geometry: about 32K elements, at most 4096 columns wide.
    TILE = 32768
    MAX_COLS = 4096
    # Arrays smaller than this are swept by the calling thread alone.
    SERIAL_BELOW = 65536
    # Rows or columns per task when combining the partial sums.
    COMBINE_CHUNK = 4096
    # Elements whose squares are buffered before they are added to the lanes.
    BLOCK = 512


cdef inline void _geometry(Py_ssize_t m, Py_ssize_t n, Py_ssize_t* col_block,
                           Py_ssize_t* row_block, Py_ssize_t* n_cb, Py_ssize_t* n_rb) noexcept nogil:
    cdef Py_ssize_t cb = n if n < MAX_COLS else MAX_COLS
    if cb < 1:
        cb = 1
    cdef Py_ssize_t rb = TILE // cb
    if rb < 1:
        rb = 1
    if rb > m:
        rb = m if m > 0 else 1
    col_block[0] = cb
    row_block[0] = rb
    n_cb[0] = (n + cb - 1) // cb
    n_rb[0] = (m + rb - 1) // rb


cdef Py_ssize_t _workspace_size(Py_ssize_t b, Py_ssize_t m, Py_ssize_t n, bint factored) noexcept:
    """Doubles of scratch space one array of shape (b, m, n) needs."""
    cdef Py_ssize_t cb, rb, n_cb, n_rb, tiles
    if b * m * n == 0:
        return 0
    if not factored:
        return 2 * ((b * m * n + TILE - 1) // TILE)
    _geometry(m, n, &cb, &rb, &n_cb, &n_rb)
    tiles = b * n_rb * n_cb
    # row partials, column partials, sum p^2 and sum u^2 per tile, R per matrix
    return b * m * n_cb + b * n_rb * n + 2 * tiles + b


def make_table(list params, list grads, list firsts, list seconds):
    """The kernel's work table for a batch, and its scratch space.

    ``firsts[a]`` is ``row_var`` (or ``variance`` for a vector), ``seconds[a]``
    ``col_var`` (or None). The arrays were checked by the caller (shapes,
    dtype, C order). Returns ``(ptrs, dims, work)``: see :func:`adafactor`.
    """
    cdef Py_ssize_t n = len(params), a, k, b, m, cols, size, need = 1
    cdef cnp.ndarray p
    cdef cnp.ndarray[int64_t, ndim=2] ptrs = np.zeros((n, 4), dtype=np.int64)
    cdef cnp.ndarray[int64_t, ndim=2] dims = np.zeros((n, 4), dtype=np.int64)
    cdef cnp.npy_intp* shape
    cdef int ndim
    for a in range(n):
        p = <cnp.ndarray> params[a]
        ndim = cnp.PyArray_NDIM(p)
        shape = cnp.PyArray_DIMS(p)
        size = cnp.PyArray_SIZE(p)
        ptrs[a, 0] = <int64_t> <intptr_t> cnp.PyArray_DATA(p)
        ptrs[a, 1] = <int64_t> <intptr_t> cnp.PyArray_DATA(<cnp.ndarray> grads[a])
        ptrs[a, 2] = <int64_t> <intptr_t> cnp.PyArray_DATA(<cnp.ndarray> firsts[a])
        if ndim >= 2:
            ptrs[a, 3] = <int64_t> <intptr_t> cnp.PyArray_DATA(<cnp.ndarray> seconds[a])
            m, cols = shape[ndim - 2], shape[ndim - 1]
            b = 1
            for k in range(ndim - 2):
                b *= shape[k]
            dims[a, 0], dims[a, 1], dims[a, 2], dims[a, 3] = b, m, cols, 1
        else:
            b, m, cols = 1, 1, size
            dims[a, 0], dims[a, 1], dims[a, 2], dims[a, 3] = 1, 1, size, 0
        need = max(need, _workspace_size(b, m, cols, ndim >= 2))
    return ptrs, dims, np.empty(need, dtype=np.float64)


# ---------------------------------------------------------------- helpers

cdef inline void _add_lanes(const double* values, Py_ssize_t n, double* lanes) noexcept nogil:
    # lanes[l] += values[j] for j = l (mod 8): a fixed order. The loop that
    # fills ``values`` stays free of reductions, so both loops vectorise.
    cdef Py_ssize_t j, l, k = n - n % 8
    for j in range(0, k, 8):
        for l in range(8):
            lanes[l] += values[j + l]
    for j in range(k, n):
        lanes[j - k] += values[j]


cdef inline double _fold(double* lanes) noexcept nogil:
    return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))


cdef inline floating _lerp(floating start, floating end, floating w, bint small) noexcept nogil:
    # torch's two-sided lerp (the side is picked from the weight, per array).
    if small:
        return start + w * (end - start)
    return end + (w - 1) * (end - start)


cdef inline floating _rsqrt(floating x) noexcept nogil:
    # torch's rsqrt: 1 / sqrt(x), two roundings, in the dtype (a bare 1 would be a C double).
    return (<floating> 1) / fsqrt(x)


cdef inline floating _mean_square(double sum_squares, floating count) noexcept nogil:
    # torch.norm(...) rounds sqrt(sum) to the dtype, then square_() and div_(count).
    cdef floating norm = <floating> dsqrt(sum_squares)
    return (norm * norm) / count


# ---------------------------------------------------------------- factored passes

cdef nopt_dispatched _factored_reduce(
    const floating* p, const floating* g, Py_ssize_t m, Py_ssize_t n,
    Py_ssize_t t, Py_ssize_t cb, Py_ssize_t rb, Py_ssize_t n_cb, Py_ssize_t n_rb,
    double* row_part,             # OUT [b*m, n_cb]
    double* col_part,             # OUT [b*n_rb, n]
    double* p_part,               # OUT [tiles]
) noexcept nogil:
    """Pass A of one tile: per-row and per-column sums of g^2, and sum p^2."""
    cdef Py_ssize_t tiles_per_matrix = n_rb * n_cb
    cdef Py_ssize_t bi = t // tiles_per_matrix, r = (t // n_cb) % n_rb, c = t % n_cb
    cdef Py_ssize_t i0 = r * rb, i1 = min(i0 + rb, m), j0 = c * cb, j1 = min(j0 + cb, n)
    cdef Py_ssize_t width = j1 - j0, i, j, l, jb, bk, w
    cdef double* cols = col_part + (bi * n_rb + r) * n + j0
    cdef double lanes[8]
    cdef double plane[8]
    cdef double squares[BLOCK]
    cdef double psquares[BLOCK]
    cdef double s, x
    cdef const floating* grow
    cdef const floating* prow
    for j in range(width):
        cols[j] = 0
    for l in range(8):
        plane[l] = 0
    for i in range(i0, i1):
        grow = g + (bi * m + i) * n + j0
        prow = p + (bi * m + i) * n + j0
        for l in range(8):
            lanes[l] = 0
        for bk in range((width + BLOCK - 1) // BLOCK):
            jb = bk * BLOCK
            w = min(<Py_ssize_t> BLOCK, width - jb)
            for j in range(w):
                s = <double> grow[jb + j] * <double> grow[jb + j]
                squares[j] = s
                cols[jb + j] += s
                x = <double> prow[jb + j]
                psquares[j] = x * x
            _add_lanes(squares, w, lanes)
            _add_lanes(psquares, w, plane)
        row_part[(bi * m + i) * n_cb + c] = _fold(lanes)
    p_part[t] = _fold(plane)


cdef nopt_dispatched _factored_norm(
    const floating* g, const floating* row_var, const floating* col_var, const double* r_mean,
    Py_ssize_t m, Py_ssize_t n,
    Py_ssize_t t, Py_ssize_t cb, Py_ssize_t rb, Py_ssize_t n_cb, Py_ssize_t n_rb,
    floating eps1_sq,
    double* u_part,               # OUT [tiles]
) noexcept nogil:
    """Pass B of one tile: sum u^2."""
    cdef Py_ssize_t tiles_per_matrix = n_rb * n_cb
    cdef Py_ssize_t bi = t // tiles_per_matrix, r = (t // n_cb) % n_rb, c = t % n_cb
    cdef Py_ssize_t i0 = r * rb, i1 = min(i0 + rb, m), j0 = c * cb, j1 = min(j0 + cb, n)
    cdef Py_ssize_t width = j1 - j0, i, j, l, jb, bk, w
    cdef const floating* cols = col_var + bi * n + j0
    cdef floating big_r = <floating> r_mean[bi]
    cdef floating row, v, u
    cdef double lanes[8]
    cdef double squares[BLOCK]
    cdef const floating* grow
    for l in range(8):
        lanes[l] = 0
    for i in range(i0, i1):
        grow = g + (bi * m + i) * n + j0
        row = row_var[bi * m + i]
        for bk in range((width + BLOCK - 1) // BLOCK):
            jb = bk * BLOCK
            w = min(<Py_ssize_t> BLOCK, width - jb)
            for j in range(w):
                v = max_nan((row * cols[jb + j]) / big_r, eps1_sq)
                u = grow[jb + j] * _rsqrt(v)
                squares[j] = <double> u * <double> u
            _add_lanes(squares, w, lanes)
    u_part[t] = _fold(lanes)


cdef nopt_dispatched _factored_apply(
    floating* p, const floating* g, const floating* row_var, const floating* col_var,
    const double* r_mean, Py_ssize_t m, Py_ssize_t n,
    Py_ssize_t t, Py_ssize_t cb, Py_ssize_t rb, Py_ssize_t n_cb, Py_ssize_t n_rb,
    floating eps1_sq, floating decay, floating neg_step, bint decayed,
) noexcept nogil:
    """Pass C of one tile: p = p * decay + neg_step * u (neg_step carries the sign of maximize)."""
    cdef Py_ssize_t tiles_per_matrix = n_rb * n_cb
    cdef Py_ssize_t bi = t // tiles_per_matrix, r = (t // n_cb) % n_rb, c = t % n_cb
    cdef Py_ssize_t i0 = r * rb, i1 = min(i0 + rb, m), j0 = c * cb, j1 = min(j0 + cb, n)
    cdef Py_ssize_t width = j1 - j0, i, j
    cdef const floating* cols = col_var + bi * n + j0
    cdef floating big_r = <floating> r_mean[bi]
    cdef floating row, v, u, x
    cdef const floating* grow
    cdef floating* prow
    for i in range(i0, i1):
        grow = g + (bi * m + i) * n + j0
        prow = p + (bi * m + i) * n + j0
        row = row_var[bi * m + i]
        if decayed:
            for j in range(width):
                v = max_nan((row * cols[j]) / big_r, eps1_sq)
                u = grow[j] * _rsqrt(v)
                x = prow[j] * decay
                prow[j] = x + neg_step * u
        else:
            for j in range(width):
                v = max_nan((row * cols[j]) / big_r, eps1_sq)
                u = grow[j] * _rsqrt(v)
                prow[j] = prow[j] + neg_step * u


# ---------------------------------------------------------------- vector passes

cdef inline void _vector_reduce_loop(
    const floating* pt, const floating* gt, floating* vt, Py_ssize_t width,
    floating w, bint small, floating eps1_sq,
    double* p_part, double* u_part,   # OUT (one value each)
) noexcept nogil:
    cdef Py_ssize_t j, l, jb, bk, bw
    cdef double ulanes[8]
    cdef double planes[8]
    cdef double usquares[BLOCK]
    cdef double psquares[BLOCK]
    cdef floating gj, v, u
    cdef double x
    for l in range(8):
        ulanes[l] = 0
        planes[l] = 0
    for bk in range((width + BLOCK - 1) // BLOCK):
        jb = bk * BLOCK
        bw = min(<Py_ssize_t> BLOCK, width - jb)
        for j in range(bw):
            gj = gt[jb + j]
            v = _lerp(vt[jb + j], gj * gj, w, small)
            vt[jb + j] = v
            u = gj * _rsqrt(max_nan(v, eps1_sq))
            usquares[j] = <double> u * <double> u
            x = <double> pt[jb + j]
            psquares[j] = x * x
        _add_lanes(usquares, bw, ulanes)
        _add_lanes(psquares, bw, planes)
    p_part[0] = _fold(planes)
    u_part[0] = _fold(ulanes)


cdef nopt_dispatched _vector_reduce(
    const floating* p, const floating* g, floating* var, Py_ssize_t size, Py_ssize_t t,
    floating w, bint small, floating eps1_sq,
    double* p_part, double* u_part,   # OUT [tiles]
) noexcept nogil:
    """Pass A of one vector tile: variance = lerp(variance, g*g, w); sums of p^2 and u^2."""
    cdef Py_ssize_t j0 = t * TILE, j1 = min(j0 + TILE, size)
    # The lerp side is a literal in each inlined copy: a branch-free loop body.
    if small:
        _vector_reduce_loop(p + j0, g + j0, var + j0, j1 - j0, w, True, eps1_sq,
                            p_part + t, u_part + t)
    else:
        _vector_reduce_loop(p + j0, g + j0, var + j0, j1 - j0, w, False, eps1_sq,
                            p_part + t, u_part + t)


cdef nopt_dispatched _vector_apply(
    floating* p, const floating* g, const floating* var, Py_ssize_t size, Py_ssize_t t,
    floating eps1_sq, floating decay, floating neg_step, bint decayed,
) noexcept nogil:
    """Pass C of one vector tile."""
    cdef Py_ssize_t j0 = t * TILE, j1 = min(j0 + TILE, size), j
    cdef floating u, x
    if decayed:
        for j in range(j0, j1):
            u = g[j] * _rsqrt(max_nan(var[j], eps1_sq))
            x = p[j] * decay
            p[j] = x + neg_step * u
    else:
        for j in range(j0, j1):
            u = g[j] * _rsqrt(max_nan(var[j], eps1_sq))
            p[j] = p[j] + neg_step * u


# ---------------------------------------------------------------- drivers

cdef inline double _ordered_sum(const double* parts, Py_ssize_t count) noexcept nogil:
    cdef double total = 0
    cdef Py_ssize_t k
    for k in range(count):
        total = total + parts[k]
    return total


cdef inline double _py_max(double a, double b) noexcept nogil:
    # Python's max(a, b): b only if b > a (so a NaN b gives a).
    return b if b > a else a


cdef void _combine_rows(
    floating* row_var, const double* row_part, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t n_cb,
    floating n_cols, floating w, bint small,
) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(lo, hi):
        row_var[i] = _lerp(row_var[i], _mean_square(_ordered_sum(row_part + i * n_cb, n_cb), n_cols),
                           w, small)


cdef void _combine_cols(
    floating* col_var, const double* col_part, Py_ssize_t bi, Py_ssize_t lo, Py_ssize_t hi,
    Py_ssize_t n, Py_ssize_t n_rb, floating n_rows, floating w, bint small,
) noexcept nogil:
    cdef Py_ssize_t j, r
    cdef double s
    for j in range(lo, hi):
        s = 0
        for r in range(n_rb):
            s = s + col_part[(bi * n_rb + r) * n + j]
        col_var[bi * n + j] = _lerp(col_var[bi * n + j], _mean_square(s, n_rows), w, small)


cdef int _one_array(
    floating* p, const floating* g, floating* row_var, floating* col_var,
    Py_ssize_t nb, Py_ssize_t m, Py_ssize_t n, bint factored,
    double w_d, double rho, double lr, double weight_decay, double eps1, double eps2, double d,
    bint maximize, double* work, int n_threads,
) noexcept nogil:
    cdef Py_ssize_t size = nb * m * n, tiles, t, cb = 1, rb = 1, n_cb = 1, n_rb = 1, i, bi, lo
    cdef Py_ssize_t n_chunks
    cdef floating w = <floating> w_d
    cdef bint small = (w if w >= 0 else -w) < <floating> 0.5
    cdef floating eps1_f = <floating> eps1
    cdef floating eps1_sq = <floating> (eps1 * eps1)
    cdef floating decay = <floating> (1 - lr * weight_decay)
    cdef bint decayed = weight_decay != 0
    cdef double* row_part = NULL
    cdef double* col_part = NULL
    cdef double* p_part = NULL
    cdef double* u_part = NULL
    cdef double* r_mean = NULL
    cdef double sum_p, sum_u, alpha, denom, s
    cdef floating norm_p, norm_u, neg_step
    cdef int threads = n_threads if size >= SERIAL_BELOW else 1
    cdef Py_ssize_t ci, chunk = COMBINE_CHUNK
    if size == 0:
        return 0
    if factored:
        _geometry(m, n, &cb, &rb, &n_cb, &n_rb)
        tiles = nb * n_rb * n_cb
        row_part = work
        col_part = row_part + nb * m * n_cb
        p_part = col_part + nb * n_rb * n
        u_part = p_part + tiles
        r_mean = u_part + tiles
        # A: partial sums
        if threads <= 1:
            for t in range(tiles):
                _factored_reduce(p, g, m, n, t, cb, rb, n_cb, n_rb, row_part, col_part, p_part)
        else:
            for t in prange(tiles, schedule="static", num_threads=threads):
                _factored_reduce(p, g, m, n, t, cb, rb, n_cb, n_rb, row_part, col_part, p_part)
        # combine: rows and columns are independent, element by element
        n_chunks = (nb * m + chunk - 1) // chunk
        if threads <= 1:
            _combine_rows(row_var, row_part, 0, nb * m, n_cb, <floating> n, w, small)
        else:
            for ci in prange(n_chunks, schedule="static", num_threads=threads):
                _combine_rows(row_var, row_part, ci * chunk, min(ci * chunk + chunk, nb * m), n_cb,
                              <floating> n, w, small)
        for bi in range(nb):
            s = 0
            for i in range(m):
                s = s + <double> row_var[bi * m + i]
            r_mean[bi] = <double> max_nan(<floating> (s / m), eps1_f)
            n_chunks = (n + chunk - 1) // chunk
            if threads <= 1 or n < 2 * chunk:
                _combine_cols(col_var, col_part, bi, 0, n, n, n_rb, <floating> m, w, small)
            else:
                for ci in prange(n_chunks, schedule="static", num_threads=threads):
                    _combine_cols(col_var, col_part, bi, ci * chunk, min(ci * chunk + chunk, n), n,
                                  n_rb, <floating> m, w, small)
        # B: sum u^2
        if threads <= 1:
            for t in range(tiles):
                _factored_norm(g, row_var, col_var, r_mean, m, n, t, cb, rb, n_cb, n_rb,
                               eps1_sq, u_part)
        else:
            for t in prange(tiles, schedule="static", num_threads=threads):
                _factored_norm(g, row_var, col_var, r_mean, m, n, t, cb, rb, n_cb, n_rb,
                               eps1_sq, u_part)
    else:
        tiles = (size + TILE - 1) // TILE
        p_part = work
        u_part = work + tiles
        if threads <= 1:
            for t in range(tiles):
                _vector_reduce(p, g, row_var, size, t, w, small, eps1_sq, p_part, u_part)
        else:
            for t in prange(tiles, schedule="static", num_threads=threads):
                _vector_reduce(p, g, row_var, size, t, w, small, eps1_sq, p_part, u_part)
    # torch: alpha = max(eps2, norm(p).item() / sqrt(numel)) * rho, with the
    # norm rounded to the dtype; denom = max(1, norm(u).item() / (sqrt(numel) * d)).
    sum_p = _ordered_sum(p_part, tiles)
    sum_u = _ordered_sum(u_part, tiles)
    norm_p = <floating> dsqrt(sum_p)
    norm_u = <floating> dsqrt(sum_u)
    alpha = _py_max(eps2, <double> norm_p / dsqrt(<double> size)) * rho
    denom = _py_max(1.0, <double> norm_u / (dsqrt(<double> size) * d))
    neg_step = <floating> (-alpha / denom)
    if maximize:
        neg_step = -neg_step    # u's sign flips with g (exact)
    if factored:
        if threads <= 1:
            for t in range(tiles):
                _factored_apply(p, g, row_var, col_var, r_mean, m, n, t, cb, rb, n_cb, n_rb,
                                eps1_sq, decay, neg_step, decayed)
        else:
            for t in prange(tiles, schedule="static", num_threads=threads):
                _factored_apply(p, g, row_var, col_var, r_mean, m, n, t, cb, rb, n_cb, n_rb,
                                eps1_sq, decay, neg_step, decayed)
    else:
        if threads <= 1:
            for t in range(tiles):
                _vector_apply(p, g, row_var, size, t, eps1_sq, decay, neg_step, decayed)
        else:
            for t in prange(tiles, schedule="static", num_threads=threads):
                _vector_apply(p, g, row_var, size, t, eps1_sq, decay, neg_step, decayed)
    return 0


cdef void _adafactor(
    floating* tag, const int64_t[:, ::1] ptrs, const int64_t[:, ::1] dims,
    const double[::1] weights, const double[::1] rhos, double[::1] work, int n_threads,
    double lr, double weight_decay, double eps1, double eps2, double d, bint maximize,
) noexcept nogil:
    cdef Py_ssize_t a
    for a in range(ptrs.shape[0]):
        _one_array(<floating*> <intptr_t> ptrs[a, 0], <const floating*> <intptr_t> ptrs[a, 1],
                   <floating*> <intptr_t> ptrs[a, 2], <floating*> <intptr_t> ptrs[a, 3],
                   dims[a, 0], dims[a, 1], dims[a, 2], dims[a, 3] != 0,
                   weights[a], rhos[a], lr, weight_decay, eps1, eps2, d, maximize,
                   &work[0], n_threads)


def adafactor(const int64_t[:, ::1] ptrs, const int64_t[:, ::1] dims, const double[::1] weights,
              const double[::1] rhos, double[::1] work, bint is_double, int n_threads,
              double lr, double weight_decay, double eps1, double eps2, double d, bint maximize):
    """Apply one Adafactor step to every array of a batch (releases the GIL).

    ``ptrs[a]`` holds the addresses of (param, grad, row_var or variance,
    col_var or 0); ``dims[a]`` is (b, m, n, factored): the array seen as b
    matrices of m x n (a vector is (1, 1, size, 0)). ``weights[a]`` is the
    lerp weight ``step**beta2_decay`` and ``rhos[a]`` the relative step size
    ``min(lr, 1/sqrt(step))``. ``work`` holds at least the largest
    :func:`workspace_size` of the arrays. All arrays are C-contiguous, of
    one dtype (float64 when ``is_double``).
    """
    if ptrs.shape[0] == 0:
        return
    with nogil:
        if is_double:
            _adafactor(<double*> NULL, ptrs, dims, weights, rhos, work, n_threads, lr,
                       weight_decay, eps1, eps2, d, maximize)
        else:
            _adafactor(<float*> NULL, ptrs, dims, weights, rhos, work, n_threads, lr,
                       weight_decay, eps1, eps2, d, maximize)
