"""Dense linear algebra on MPC devices (``jnp.linalg``, ``jax.scipy.linalg``).

JAX lowers solve, inv, det (n >= 4; below, a closed formula), slogdet, lu_factor,
cholesky, cho_solve, solve_triangular, qr, eigh, eigvalsh, svd and what is built on
it to six primitives -- ``lu``, ``triangular_solve``, ``cholesky``, ``qr``, ``eigh``
and ``svd`` -- plus ``custom_linear_solve``, of which mixc inlines the ``solve``
jaxpr. The six are the plain JAX functions below, built from ops mixc runs on secret
shares (comparisons, selects by a secret bit, products, and ``mixc.approx``'s
reciprocal, division, sqrt and rsqrt), which ``mixc.translate`` traces and inlines.
Their loops run over the matrix size, known when tracing, so they unroll; leading
batch dimensions ride along at no extra rounds. On matrices known when compiling JAX
factorizes exactly instead.

Methods and costs (rounds measured on a 2-party device with a dealer, LAN profile,
including the one that reveals the result; a comparison takes 4 rounds, a product
2, a select by a secret bit 1, a reciprocal 26):

- ``lu`` (m x n): Doolittle with partial pivoting, column by column. The pivot of
  column k is the first largest |a[i, k]| over rows i >= k, as in LAPACK: a
  log-depth tree of comparisons whose selects carry each candidate's one-hot, so
  no secret index is converted or used to move data. Rows k and p swap by selects
  on that one-hot (exact: a select multiplies by a 0/1 share without truncating),
  and pivots and permutation follow by the same selects on int32 shares. The
  pivot's reciprocal comes from ``approx.reciprocal_parts`` (``approx.div``'s
  reduction: multipliers keep their relative precision), computed for every
  candidate while the pivot is searched for and picked by the one-hot, so the two
  overlap; then the multipliers and the rank-1 update. Per column but the last,
  about 31 rounds: the reciprocal's (the search's 5 for |x| and 5 per halving of
  the rows left run alongside), a select for the pivot's reciprocal and the swap,
  two products for the multipliers and one for the update (n = 2, 3, 4, 6: 32,
  63, 94, 156 rounds in all).
- ``triangular_solve``: one reciprocal of the whole diagonal (none for a unit
  diagonal), the rows of the triangle and of b scaled by it up front, then
  substitution, one matrix-vector product per row: about 27 + 2n rounds (39 at
  n = 6). ``jnp.linalg.solve`` is lu, a one-hot gather by the secret permutation
  and two of these: 194 rounds at n = 6.
- ``cholesky``: the right-looking column algorithm: r = rsqrt(d) of the pivot d,
  refined by one Newton step r (3 - d r^2) / 2 (rsqrt's relative error 3e-5 down
  to the fixed-point resolution), the column times r (its top entry d r =
  sqrt(d)), then the trailing block minus the column's outer product: about 28
  rounds per column (169 at n = 6). Reads the lower triangle only, as JAX does;
  zeros above the diagonal.
- ``qr`` (m x n): Householder reflections H = I - w w^T, column by column, with
  LAPACK's signs (r[j, j] = -sign(x0) |x|, none where x has nothing nonzero below
  x0), so q and r are JAX's, not another valid factorization. The part x of the
  column has |x| = |x|^2 / |x| and w = v sqrt(2) / |v| (|v|^2 from v itself, so H
  is orthogonal whatever the error in |x|), each inverse root as
  ``approx.rsqrt_parts`` q g refined by a Newton step on the reduced argument (2e-6
  relative, where rsqrt's 3e-5 error in |x| would show as one in q r - a, grown by
  the condition number), g a power of two applied last (a small 1/|v| keeps its
  relative precision); r's part below the diagonal is set to exact zeros. About 69
  rounds per column but the last of a square matrix (71, 140, 209, 347 at n = 2,
  3, 4, 6).
- ``eigh`` (n x n symmetric, the named triangle read): cyclic Jacobi. Each sweep
  rotates every index pair once, in n - 1 steps of disjoint pairs (n for odd n: the
  circle method), all of a step's rotations at once: for x = a_qq - a_pp and
  y = 2 a_pq, t = tan(theta) = sign(x) y / (|x| + sqrt(x^2 + y^2)) (|theta| <= pi/4),
  computed from u = min(|x|, |y|) / max(|x|, |y|) alone (``approx.div``; x and y are
  often too small to square in fixed point), c = 1/sqrt(1 + t^2) (refined
  ``rsqrt_parts``), s = t c; columns p, q of a and v and then rows p, q of a rotated.
  ceil(log2 n) + 2 sweeps (one for n = 2): float64 Jacobi on random symmetric
  matrices brings the off-diagonal part below 2^-18 of its start in one sweep fewer
  for n <= 16. Then the eigenvalues (a's diagonal) ascending with v's columns by
  odd-even transposition (n layers of compare-exchange, by selects). About 140
  rounds per step (170, 1926, 1935, 4007, 5605 at n = 2, 3, 4, 6, 8). An
  eigenvector's sign is not LAPACK's (which fixes none): compare up to it.
- ``svd`` (m x n, k = min(m, n); a wide matrix through its transpose): one-sided
  Jacobi, the same steps and rotations on the columns of a (and of v), for
  x = |a_q|^2 - |a_p|^2 and y = 2 a_p . a_q, until they are orthogonal; then the
  singular values are their norms (|a_j|^2 times its refined inverse root), u's
  columns a_j over them, sorted descending with u and v. jnp.linalg.pinv, lstsq,
  matrix_rank, cond, svdvals and polyfit follow as JAX builds them on it.
  ``full_matrices`` of a non-square matrix completes u (or vt) by the last columns
  of its complete ``qr`` (any orthonormal basis of the complement is one; LAPACK's
  differs where it has more than one dimension). 1955 rounds at 3 x 3 (or 4 x 3),
  4036 at 6 x 6, plus the completion's qr. Each pair (u's column, vt's row) has its
  own sign, not LAPACK's.

Accuracy, measured under MPC (18 fraction bits) against float32 JAX on batches of
20 random matrices of n = 3 to 6 with singular values from s to s / c (s in [1, 4],
condition number c = 10 and 100), as the largest error over the largest entry of
the result: ``solve`` and ``inv`` 5.3e-6 c; ``cholesky`` 1.2e-6 c, ``cho_solve``
7e-6 c; ``solve_triangular`` 6.6e-6 c (c of the triangle); ``det`` (n >= 4)
relative 1.1e-4 and ``slogdet``'s log|det| absolute 1.3e-4. tests/test_linalg.py
asserts 2e-5 c, 3e-4 and 3e-4. ``qr`` (m x n from 3 x 3 to 8 x 4, scaled by 0.5 to
8, c = 3 to 100): 1.6e-5 c for q and 1.3e-5 c for r (the largest at scale 0.5, where
2^-18 is a larger part of each entry), asserted 4e-5 c, for column norms in the
inverse roots' range [2^-8, 2^10]. ``eigh`` (n = 2 to 8, eigenvalues uniform in
[-1, 1] and [-8, 8], measured against float64 LAPACK): eigenvalues within 4.6e-5 of
the largest |eigenvalue| (asserted 1e-4), eigenvectors (each up to its sign) within
2.5e-5 of it over the smallest gap between eigenvalues (asserted 5e-5), v^T v within
7.5e-5 of I (asserted 2e-4). ``svd`` (m x n from 3 x 3 to 8 x 4, scaled by 0.5 to 8,
c = 3 to 100, against float64 LAPACK): singular values within 7e-5 of the largest
and singular vectors within 7e-5 of it over the smallest gap or value (asserted
1.5e-4 each), except where the smallest singular values near 2^-8 (6 x 6 at scale
0.5, c = 100: 3.4e-4 and 2.4e-4, fixed point's 2^-18 being a larger part of
them); keep singular values in [2^-8, 2^10]. The errors are reciprocal's 1.5e-5 and
2^-18 per product, grown by the condition number; they hold while pivots stay in
reciprocal's range |x| in [2^-8, 2^12] (and rsqrt's [2^-8, 2^14] for Cholesky),
products below 2^26, and, for det, every |pivot| in log's [2^-10, 2^10] and
log|det| in exp's [-16, 12]. Cholesky's r is a multiple of 2^-18, which adds a
relative error up to 2^-19 sqrt(d) (1e-4 at d = 2500): keep its diagonal below
about 1e3 (scale the matrix).

Where JAX gives NaN or infinities (fixed point has neither): a singular matrix
makes some pivot 0 or tiny, whose reciprocal saturates at 256, so solve and inv
return finite garbage; a pivot exactly 0 makes slogdet (0, -2^20) (mixc.translate's
stand-in for -inf) and det 0. For a matrix that is not positive definite the
first pivot d <= 0 shows as L[j, j] = d r <= 0 (rsqrt saturates at 16 and the
Newton step keeps r positive); the columns after it are garbage, finite but
possibly large, and wrap once products pass 2^26.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from . import approx


def _larger_of_pairs(values):
    """(take_hi, merged): for adjacent pairs (2i, 2i + 1) of the last axis, whether the
    right one is larger, and each pair's larger value (the left on a tie) followed by
    an unpaired last value."""
    paired = 2 * (values.shape[-1] // 2)
    lo, hi = values[..., 0:paired:2], values[..., 1:paired:2]
    take_hi = lo < hi
    return take_hi, jnp.concatenate([jnp.where(take_hi, hi, lo), values[..., paired:]], axis=-1)


def _first_largest(values):
    """Bool one-hot (last axis) of the first largest of ``values``'s last axis (at
    least two entries).

    Adjacent pairs are compared level by level (a log-depth tree) and each winner
    carries its one-hot; every position always stands for a contiguous run of
    candidates and the left of a pair for the earlier run, so keeping the left on a
    tie picks the first largest, like LAPACK's pivot search."""
    count = values.shape[-1]
    take_hi, values = _larger_of_pairs(values)
    # The first level by hand: its candidates' one-hots are public, and the winner of
    # pair (i, i + 1) has (not t, t) at positions i, i + 1 (mixc selects only with a
    # secret case; later levels pair at most one public one-hot, the last candidate's).
    widths = [(0, 0)] * (values.ndim - 1)
    hot = [jnp.pad(jnp.stack([~take_hi[..., i], take_hi[..., i]], axis=-1),
                   widths + [(2 * i, count - 2 * i - 2)]) for i in range(count // 2)]
    if count % 2:
        hot.append(jnp.broadcast_to(np.arange(count) == count - 1, values.shape[:-1] + (count,)))
    hot = jnp.stack(hot, axis=-2)
    while values.shape[-1] > 1:
        paired = 2 * (values.shape[-1] // 2)
        take_hi, values = _larger_of_pairs(values)
        hot = jnp.concatenate([jnp.where(take_hi[..., None], hot[..., 1:paired:2, :],
                                         hot[..., 0:paired:2, :]),
                               hot[..., paired:, :]], axis=-2)
    return hot[..., 0, :]


def _swap_rows(x, k, hot):
    """``x`` ([..., m, c]) with row k and the row marked by ``hot`` ([..., m], false
    above row k) exchanged, by selects only."""
    marked = hot[..., :, None]
    picked = jnp.sum(jnp.where(marked, x, jnp.zeros_like(x)), axis=-2)
    swapped = jnp.where(marked, x[..., k:k + 1, :], x)
    return swapped.at[..., k, :].set(picked)


def lu(a):
    """jax.lax.linalg.lu: (lu, pivots, permutation) of ``a`` ([..., m, n]) with
    a[..., permutation, :] = L @ U, L unit lower (below lu's diagonal) and U upper.

    Method, cost and accuracy: see the module docstring. A singular ``a`` gives
    finite garbage (1/0 is reciprocal's saturated 256)."""
    a = jnp.asarray(a, jnp.float32)
    *batch, m, n = a.shape
    permutation = jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32), (*batch, m))
    pivots = []
    for k in range(min(m, n)):
        if k == m - 1:           # one candidate row, nothing below it to eliminate
            pivots.append(jnp.full(batch, k, jnp.int32))
            break
        candidates = a[..., k:, k]
        hot = _first_largest(jnp.abs(candidates))
        # every candidate's reciprocal while the pivot is searched for, the pivot's then
        # picked by a select: the reciprocal's rounds overlap the search's
        scale, factor = (jnp.sum(jnp.where(hot, part, 0.0), axis=-1)
                         for part in approx.reciprocal_parts(candidates))
        pivots.append(k + jnp.sum(jnp.where(hot, np.arange(m - k, dtype=np.int32), 0), axis=-1))
        hot = jnp.pad(hot, [(0, 0)] * len(batch) + [(k, 0)])
        a = _swap_rows(a, k, hot)
        permutation = _swap_rows(permutation[..., None], k, hot)[..., 0]
        multipliers = (a[..., k + 1:, k] * scale[..., None]) * factor[..., None]
        a = a.at[..., k + 1:, k].set(multipliers)
        a = a.at[..., k + 1:, k + 1:].add(-multipliers[..., :, None] * a[..., k, None, k + 1:])
    return a, jnp.stack(pivots, axis=-1), permutation


def triangular_solve(a, b, *, left_side, lower, transpose_a, conjugate_a, unit_diagonal):
    """jax.lax.linalg.triangular_solve: x with op(a) x = b (``left_side``) or
    x op(a) = b, op(a) = a or its transpose; only ``a``'s triangle is read (and not
    its diagonal when ``unit_diagonal``). ``conjugate_a`` changes nothing for reals.

    Method, cost and accuracy: see the module docstring. A zero on the diagonal
    gives finite garbage (1/0 is reciprocal's saturated 256)."""
    del conjugate_a
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    if not left_side:          # x op(a) = b  is  op(a)^T x^T = b^T
        x = triangular_solve(a, jnp.swapaxes(b, -1, -2), left_side=True, lower=lower,
                             transpose_a=not transpose_a, conjugate_a=False,
                             unit_diagonal=unit_diagonal)
        return jnp.swapaxes(x, -1, -2)
    m = a.shape[-1]
    t = jnp.swapaxes(a, -1, -2) if transpose_a else a
    if not unit_diagonal:
        # rows scaled by 1/diagonal up front: the substitution then needs no division
        diagonal = a[..., np.arange(m), np.arange(m)]
        scale, factor = approx.reciprocal_parts(diagonal)
        t = (t * scale[..., :, None]) * factor[..., :, None]
        b = (b * scale[..., :, None]) * factor[..., :, None]
    order = range(m) if lower != transpose_a else reversed(range(m))
    solved, rows = [], [None] * m
    for i in order:
        row = b[..., i, :]
        if solved:
            weights = t[..., i, np.array(solved)]
            earlier = jnp.stack([rows[j] for j in solved], axis=-2)
            row = row - jnp.matmul(weights[..., None, :], earlier)[..., 0, :]
        rows[i] = row
        solved.append(i)
    return jnp.stack(rows, axis=-2)


def cholesky(a):
    """jax.lax.linalg.cholesky's primitive: the lower factor L of ``a`` ([..., n, n],
    lower triangle read), zeros above the diagonal.

    Method, cost and accuracy: see the module docstring. A matrix that is not
    positive definite (JAX: NaN) gives no factor; its first pivot d <= 0 shows as
    L[j, j] <= 0."""
    a = jnp.asarray(a, jnp.float32)
    n = a.shape[-1]
    columns = []
    for j in range(n):
        pivot = a[..., 0, 0]
        # the narrow range: a pivot d <= 0 gives r = 16, so d r stays small and <= 0
        inverse_root = approx.rsqrt(pivot, lo=2.0 ** -8, hi=2.0 ** 14)
        # one Newton step: the approximation's error down to fixed point's resolution
        inverse_root = inverse_root * (1.5 - 0.5 * ((pivot * inverse_root) * inverse_root))
        column = a[..., :, 0] * inverse_root[..., None]
        columns.append(jnp.pad(column, [(0, 0)] * (a.ndim - 2) + [(j, 0)]))
        below = column[..., 1:]
        a = a[..., 1:, 1:] - below[..., :, None] * below[..., None, :]
    return jnp.stack(columns, axis=-1)


def _inverse_root(square):
    """1/sqrt(square) as ``approx.rsqrt_parts``'s refined (q, g), for a column's squared
    norm: square in [2^-16, 2^20]."""
    return approx.rsqrt_parts(square, lo=2.0 ** -16, hi=2.0 ** 20, refine=True)


def qr(a, *, full_matrices, pivoting=False, use_magma=None):
    """jax.lax.linalg.qr: (q, r) with a = q r ([..., m, n]), q orthogonal and r upper
    triangular, by Householder reflections with LAPACK's signs (geqrf, as JAX on a CPU):
    column j's reflection maps the part x of column j from row j down onto
    (-sign(x0) |x|, 0, ...), sign(0) = +1, so r[j, j] = -sign(x0) |x|; where x has
    nothing nonzero below x0 there is no reflection (r keeps x0). ``full_matrices``:
    q is m x m and r m x n, else m x k and k x n (k = min(m, n)).

    Method, cost and accuracy: see the module docstring."""
    del use_magma
    if pivoting:
        raise NotImplementedError("column-pivoted QR (qr with pivoting=True) on secret values")
    a = jnp.asarray(a, jnp.float32)
    *batch, m, n = a.shape
    r = a
    q = jnp.broadcast_to(jnp.eye(m, dtype=jnp.float32), (*batch, m, m))
    for j in range(min(m - 1, n)):
        x = r[..., j:, j]
        top = x[..., 0]
        below = jnp.sum(x[..., 1:] * x[..., 1:], axis=-1)
        square = top * top + below
        # |x| = |x|^2 / |x|, precise to 2e-6: an error in it would be one in q r - a
        q_part, g_part = _inverse_root(square)
        norm = (square * q_part) * g_part
        reflected_top = jnp.where(top >= 0, -norm, norm)
        # H = I - w w^T with w = v sqrt(2) / |v|, v = x - reflected_top e0: its top
        # x0 + sign(x0) |x| has no cancellation
        v_top = top - reflected_top
        v = x.at[..., 0].set(v_top)
        # 1/sqrt(|v|^2 / 2) as q g, g a power of two: v q g keeps w's relative precision;
        # |v|^2 from v itself, so H stays orthogonal whatever sqrt's error in the norm
        q_part, g_part = _inverse_root(0.5 * (v_top * v_top + below))
        w = (v * q_part[..., None]) * g_part[..., None]
        w = jnp.where((below > 0)[..., None], w, 0.0)
        r = r.at[..., j:, :].add(-w[..., :, None] * jnp.matmul(w[..., None, :], r[..., j:, :]))
        q = q.at[..., :, j:].add(-jnp.matmul(q[..., :, j:], w[..., :, None]) * w[..., None, :])
    r = jnp.triu(r)  # below the diagonal: what the reflections left of exact zeros
    if not full_matrices:
        k = min(m, n)
        q, r = q[..., :, :k], r[..., :k, :]
    return q, r


def _round_robin(n):
    """The Jacobi steps of one sweep: n - 1 (n even) or n (odd) lists of disjoint index
    pairs (p < q) that together cover every pair once (the circle method)."""
    players = list(range(n + n % 2))
    steps = []
    for _ in range(len(players) - 1):
        half = len(players) // 2
        pairs = [(min(a, b), max(a, b)) for a, b in zip(players[:half], players[::-1])]
        steps.append([pair for pair in pairs if pair[1] < n])
        players = [players[0], players[-1], *players[1:-1]]
    return steps


def _sweeps(n):
    """Jacobi sweeps for an n x n matrix: the off-diagonal part of random symmetric
    matrices falls below 2^-18 of its start within ceil(log2 n) + 1 (float64, n <= 16):
    one more for margin; a 2 x 2 needs one rotation."""
    return 1 if n <= 2 else math.ceil(math.log2(n)) + 2


def _jacobi_rotation(x, y):
    """(c, s) of the rotation that zeroes a[p, q] of a symmetric a, for x = a_qq - a_pp
    and y = 2 a_pq: t = tan(theta), |theta| <= pi / 4, is sign(x) y / (|x| + sqrt(x^2 +
    y^2)), computed from the ratio u = min(|x|, |y|) / max(|x|, |y|) alone (x and y
    may be too small to square in fixed point): |t| = u / (1 + sqrt(1 + u^2)) where
    |x| >= |y|, else 1 / (u + sqrt(1 + u^2)); t = 0 where y = 0 (x = y = 0 too: 0 / 0
    is div's 0). c = 1/sqrt(1 + t^2) (refined ``rsqrt_parts``), s = t c."""
    abs_x, abs_y = jnp.abs(x), jnp.abs(y)
    x_major = abs_x >= abs_y
    u = approx.div(jnp.where(x_major, abs_y, abs_x), jnp.where(x_major, abs_x, abs_y))
    root = approx.sqrt(1.0 + u * u, lo=1.0, hi=2.0)
    magnitude = jnp.where(x_major, u, 1.0) * approx.reciprocal(
        jnp.where(x_major, 1.0 + root, u + root), lo=1.0, hi=4.0)
    t = jnp.where(y >= 0, magnitude, -magnitude)
    t = jnp.where(x >= 0, t, -t)
    c_part, g_part = approx.rsqrt_parts(1.0 + t * t, lo=1.0, hi=2.0, refine=True)
    c = c_part * g_part
    return c, t * c


def _rotate(x, p, q, c, s, axis):
    """``x`` with its index pairs (p[k], q[k]) along ``axis`` (-1: columns, -2: rows)
    rotated by (c[..., k], s[..., k]): (x_p, x_q) -> (c x_p - s x_q, s x_p + c x_q)."""
    if axis == -2:
        return jnp.swapaxes(_rotate(jnp.swapaxes(x, -1, -2), p, q, c, s, -1), -1, -2)
    xp, xq = x[..., p], x[..., q]
    c, s = c[..., None, :], s[..., None, :]
    return x.at[..., p].set(c * xp - s * xq).at[..., q].set(s * xp + c * xq)


def eigh(a, *, lower=True, sort_eigenvalues=True, subset_by_index=None, algorithm=None):
    """jax.lax.linalg.eigh's primitive: (v, w) with a = v diag(w) v^T for the symmetric
    matrix of ``a``'s lower (``lower``) or upper triangle ([..., n, n]), eigenvalues w
    ascending (``sort_eigenvalues``) and v orthogonal. An eigenvector's sign is not
    LAPACK's (which fixes none either): compare v up to the sign of each column.

    Method, cost and accuracy: see the module docstring."""
    del algorithm
    a = jnp.asarray(a, jnp.float32)
    n = a.shape[-1]
    if subset_by_index is not None and tuple(subset_by_index) != (0, n):
        raise NotImplementedError("eigh of a subset of the eigenvalues (subset_by_index) "
                                  "on secret values")
    triangle = jnp.tril(a) if lower else jnp.triu(a)
    a = triangle + jnp.swapaxes(triangle, -1, -2) - a * np.eye(n, dtype=np.float32)
    v = jnp.broadcast_to(jnp.eye(n, dtype=jnp.float32), a.shape)
    for _ in range(_sweeps(n)):
        for pairs in _round_robin(n):
            p, q = (np.array(side) for side in zip(*pairs))
            app, aqq, apq = a[..., p, p], a[..., q, q], a[..., p, q]
            c, s = _jacobi_rotation(aqq - app, 2.0 * apq)
            a = _rotate(_rotate(a, p, q, c, s, -1), p, q, c, s, -2)
            v = _rotate(v, p, q, c, s, -1)
    w = a[..., np.arange(n), np.arange(n)]
    if sort_eigenvalues:
        w, v = _sort_with_columns(w, v)
    return v, w


def _sort_with_columns(w, *matrices, descending=False):
    """``w`` ([..., n]) ascending (or descending) and each matrix's columns in the same
    order: odd-even transposition (n layers of compare-exchange of neighbours), by
    selects only."""
    n = w.shape[-1]
    matrices = list(matrices)
    for layer in range(n):
        left = np.arange(layer % 2, n - 1, 2)
        if left.size == 0:
            continue
        right = left + 1
        swap = (w[..., left] < w[..., right]) if descending else (w[..., left] > w[..., right])
        w = _exchange(w, left, right, swap)
        matrices = [_exchange(m, left, right, swap[..., None, :]) for m in matrices]
    return (w, *matrices)


def _exchange(x, left, right, swap):
    """``x`` with its last-axis entries ``left`` and ``right`` exchanged where ``swap``."""
    x_left, x_right = x[..., left], x[..., right]
    return x.at[..., left].set(jnp.where(swap, x_right, x_left)).at[..., right].set(
        jnp.where(swap, x_left, x_right))


def svd(a, *, full_matrices, compute_uv=True, subset_by_index=None, algorithm=None):
    """jax.lax.linalg.svd's primitive: s (descending), and with ``compute_uv`` u and vt,
    a = u diag(s) vt ([..., m, n], k = min(m, n) singular values). u is m x k and vt
    k x n, or with ``full_matrices`` m x m and n x n: the longer one completed by an
    orthonormal basis of the complement of its k vectors (the last columns of their
    complete ``qr``; LAPACK's basis is another where the complement has more than one
    dimension). Each pair (u's column, vt's row) has its own sign, not LAPACK's (which
    fixes none): compare up to it.

    Method, cost and accuracy: see the module docstring."""
    del algorithm
    a = jnp.asarray(a, jnp.float32)
    *batch, m, n = a.shape
    if subset_by_index is not None and tuple(subset_by_index) != (0, min(m, n)):
        raise NotImplementedError("svd of a subset of the singular values (subset_by_index) "
                                  "on secret values")
    if m < n:
        outs = svd(jnp.swapaxes(a, -1, -2), full_matrices=full_matrices, compute_uv=compute_uv)
        if not compute_uv:
            return outs
        s, u, vt = outs
        return s, jnp.swapaxes(vt, -1, -2), jnp.swapaxes(u, -1, -2)
    # one-sided Jacobi: rotate a's columns (and v's) until they are orthogonal; then a's
    # columns are u's times the singular values (their norms)
    u = a
    v = jnp.broadcast_to(jnp.eye(n, dtype=jnp.float32), (*batch, n, n))
    for _ in range(_sweeps(n)):
        for pairs in _round_robin(n):
            p, q = (np.array(side) for side in zip(*pairs))
            up, uq = u[..., :, p], u[..., :, q]
            alpha, beta = jnp.sum(up * up, axis=-2), jnp.sum(uq * uq, axis=-2)
            c, s = _jacobi_rotation(beta - alpha, 2.0 * jnp.sum(up * uq, axis=-2))
            u = _rotate(u, p, q, c, s, -1)
            v = _rotate(v, p, q, c, s, -1)
    squares = jnp.sum(u * u, axis=-2)
    q_part, g_part = _inverse_root(squares)
    singular = (squares * q_part) * g_part
    if not compute_uv:
        (singular,) = _sort_with_columns(singular, descending=True)
        return singular
    u = (u * q_part[..., None, :]) * g_part[..., None, :]
    singular, u, v = _sort_with_columns(singular, u, v, descending=True)
    if full_matrices and m > n:
        complete, _ = qr(u, full_matrices=True)
        u = jnp.concatenate([u, complete[..., :, n:]], axis=-1)
    return singular, u, jnp.swapaxes(v, -1, -2)
