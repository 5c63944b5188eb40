"""Dense linear algebra on MPC devices (``jnp.linalg``, ``jax.scipy.linalg``).

JAX lowers solve, inv, det (n >= 4; below, a closed formula), slogdet, lu_factor,
cholesky, cho_solve and solve_triangular to three primitives -- ``lu``,
``triangular_solve`` and ``cholesky`` -- plus ``custom_linear_solve``, of which mixc
inlines the ``solve`` jaxpr. The three are the plain JAX functions below, built from
ops mixc runs on secret shares (comparisons, selects by a secret bit, products, and
``mixc.approx``'s reciprocal and rsqrt), which ``mixc.translate`` traces and inlines.
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

Accuracy, measured under MPC (18 fraction bits) against float32 JAX on batches of
20 random matrices of n = 3 to 6 with singular values from s to s / c (s in [1, 4],
condition number c = 10 and 100), as the largest error over the largest entry of
the result: ``solve`` and ``inv`` 5.3e-6 c; ``cholesky`` 1.2e-6 c, ``cho_solve``
7e-6 c; ``solve_triangular`` 6.6e-6 c (c of the triangle); ``det`` (n >= 4)
relative 1.1e-4 and ``slogdet``'s log|det| absolute 1.3e-4. tests/test_linalg.py
asserts 2e-5 c, 3e-4 and 3e-4. The errors are reciprocal's 1.5e-5 and
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
