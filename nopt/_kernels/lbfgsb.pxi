"""Small kernels of nopt's L-BFGS-B iteration (``nopt/_lbfgsb.py``).

Design note: the iteration itself is Python (``_lbfgsb.lbfgsb_run``); these
kernels do the O(mn) memory work of one iteration in one call each, so that
a small problem pays a few calls per iteration instead of dozens of NumPy
ones. Dot products accumulate in double for float32 data too.

* :func:`pair` writes ``s = x1 - x0`` and ``y = g1 - g0`` into a free row of
  the history buffers and returns ``s.y``, ``y.y``;
* :func:`gram_update` fills the new row's entries of ``S S^T``,
  ``S Y^T``, ``Y Y^T`` and ``R`` (the upper triangle of ``S Y^T``);
* :func:`newton_step` is ``B^{-1} r`` with every variable free, by the
  compact form and its two triangular solves with ``R``.
"""
from ._common cimport floating


cdef inline double _dot(floating* a, floating* b, Py_ssize_t n) noexcept nogil:
    # Four partial sums in a fixed order: the same result on every call, and
    # independent additions the CPU can overlap (strict FP forbids the compiler
    # to reassociate one running sum).
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    cdef Py_ssize_t i, m = n - n % 4
    for i in range(0, m, 4):
        s0 += <double>a[i] * <double>b[i]
        s1 += <double>a[i + 1] * <double>b[i + 1]
        s2 += <double>a[i + 2] * <double>b[i + 2]
        s3 += <double>a[i + 3] * <double>b[i + 3]
    for i in range(m, n):
        s0 += <double>a[i] * <double>b[i]
    return (s0 + s1) + (s2 + s3)


def pair(floating[:, ::1] S,        # OUT row `row`
         floating[:, ::1] Y,        # OUT row `row`
         Py_ssize_t row,
         floating[::1] x1, floating[::1] x0, floating[::1] g1, floating[::1] g0):  # IN
    """Write s = x1 - x0 into S[row] and y = g1 - g0 into Y[row]; return (s.y, y.y)."""
    cdef Py_ssize_t n = x1.shape[0], i
    cdef double ys = 0.0, yy = 0.0, si, yi
    if S.shape[1] != n or Y.shape[1] != n or x0.shape[0] != n or g1.shape[0] != n \
            or g0.shape[0] != n or not 0 <= row < S.shape[0] or S.shape[0] != Y.shape[0]:
        raise ValueError("pair: shapes do not agree")
    with nogil:
        for i in range(n):
            S[row, i] = x1[i] - x0[i]
            Y[row, i] = g1[i] - g0[i]
            si = S[row, i]
            yi = Y[row, i]
            ys += si * yi
            yy += yi * yi
    return ys, yy


def gram_update(floating[:, ::1] S, floating[:, ::1] Y,   # IN rows start..row
                double[:, :, ::1] G,                        # OUT [SS, SY, YY, R]
                Py_ssize_t start, Py_ssize_t row):
    """Entries of the Gram matrices between row ``row`` and rows ``start..row``."""
    cdef Py_ssize_t n = S.shape[1], j
    cdef double v
    if Y.shape[1] != n or G.shape[0] != 4 or not 0 <= start <= row < S.shape[0] \
            or row >= G.shape[1] or G.shape[1] != G.shape[2] or S.shape[0] != Y.shape[0]:
        raise ValueError("gram_update: shapes do not agree")
    with nogil:
        for j in range(start, row + 1):
            v = _dot(&S[j, 0], &S[row, 0], n) if n else 0.0
            G[0, row, j] = v
            G[0, j, row] = v
            G[1, row, j] = _dot(&S[row, 0], &Y[j, 0], n) if n else 0.0  # s_new . y_j
            v = _dot(&S[j, 0], &Y[row, 0], n) if n else 0.0           # s_j . y_new
            G[1, j, row] = v
            G[3, j, row] = v
            v = _dot(&Y[j, 0], &Y[row, 0], n) if n else 0.0
            G[2, row, j] = v
            G[2, j, row] = v
    return None


def newton_step(floating[:, ::1] S, floating[:, ::1] Y,   # IN rows start..start+k-1
                double[:, :, ::1] G,                        # IN Gram buffers
                Py_ssize_t start, Py_ssize_t k, double theta,
                floating[::1] r,                            # IN
                floating[::1] out,                          # OUT
                double[::1] work):                          # scratch, >= 4k
    r"""``out = B^{-1} r`` for :math:`B = \theta I - W M W^\top`, every variable free.

    By Sherman-Morrison-Woodbury, :math:`B^{-1} r = r/\theta + W v/\theta^2`
    where :math:`v` solves :math:`(M^{-1} - W^\top W/\theta) v = W^\top r`,
    whose matrix is :math:`\begin{bmatrix} -D - Y^\top Y/\theta & -R^\top
    \\ -R & 0 \end{bmatrix}`: so :math:`v_1 = -R^{-1} a_2` and
    :math:`R^\top v_2 = (-D - Y^\top Y/\theta) v_1 - a_1`.
    """
    cdef Py_ssize_t n = r.shape[0], i, j, a = start
    cdef double acc, inv_theta = 1.0 / theta
    cdef double* a1
    cdef double* a2
    cdef double* v1
    cdef double* v2
    if S.shape[1] != n or Y.shape[1] != n or out.shape[0] != n or work.shape[0] < 4 * k \
            or not 0 <= start or start + k > S.shape[0] or start + k > G.shape[1] \
            or G.shape[0] != 4 or S.shape[0] != Y.shape[0] or k < 1:
        raise ValueError("newton_step: shapes do not agree")
    a1 = &work[0]
    a2 = &work[k]
    v1 = &work[2 * k]
    v2 = &work[3 * k]
    with nogil:
        for i in range(k):
            a1[i] = _dot(&Y[a + i, 0], &r[0], n) if n else 0.0
            a2[i] = theta * (_dot(&S[a + i, 0], &r[0], n) if n else 0.0)
        # R v1 = -a2, R upper triangular: back substitution
        for i in range(k - 1, -1, -1):
            acc = -a2[i]
            for j in range(i + 1, k):
                acc -= G[3, a + i, a + j] * v1[j]
            v1[i] = acc / G[3, a + i, a + i]
        # R^T v2 = (-D - YY/theta) v1 - a1, R^T lower triangular: forward substitution
        for i in range(k):
            acc = -G[1, a + i, a + i] * v1[i] - a1[i]
            for j in range(k):
                acc -= G[2, a + i, a + j] * inv_theta * v1[j]
            for j in range(i):
                acc -= G[3, a + j, a + i] * v2[j]
            v2[i] = acc / G[3, a + i, a + i]
        # out = r/theta + (Y^T v1 + theta S^T v2) / theta^2
        for i in range(n):
            out[i] = r[i] * inv_theta
        for j in range(k):
            acc = v1[j] * inv_theta * inv_theta
            for i in range(n):
                out[i] += acc * Y[a + j, i]
            acc = v2[j] * inv_theta
            for i in range(n):
                out[i] += acc * S[a + j, i]
    return None
