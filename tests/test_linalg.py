"""jnp.linalg and jax.scipy.linalg on MPC (``mixc/linalg.py``: LU with oblivious partial
pivoting, triangular solves, Cholesky) against float32 JAX, within the tolerances that
module states: for a matrix of condition number c, results within ``PER_CONDITION`` * c
of their largest entry. Every call runs a batch of matrices, so batching is covered
throughout."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

PER_CONDITION = 2e-5
DET_RTOL = 3e-4             # n <= 6, condition number <= 100
LOGDET_ATOL = 3e-4

# a zero on the diagonal: no LU without a row swap; the pivots are clear-cut
NEEDS_PIVOTING = np.array([[0.0, 2.0, 1.0],
                           [1.0, 1.0, 0.0],
                           [3.0, 0.5, 2.0]], np.float32)


def conditioned(n, cond, seed, spd=False):
    """A random n x n matrix with singular values from s down to s / cond, s in [1, 4]."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(n, n)))
    v = u if spd else np.linalg.qr(rng.normal(size=(n, n)))[0]
    s = np.geomspace(1.0, 1.0 / cond, n) * rng.uniform(1.0, 4.0)
    return (u @ np.diag(s) @ v.T).astype(np.float32)


def rhs(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def assert_within(got, want, conds):
    """Each batch item within PER_CONDITION * its condition number of its largest entry."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    for g, w, c in zip(got, want, conds):
        np.testing.assert_allclose(g, w, rtol=0, atol=PER_CONDITION * c * np.abs(w).max())


def test_lu_and_inv_n3(secure, plain):
    a = np.stack([NEEDS_PIVOTING, conditioned(3, 10, seed=1), conditioned(3, 100, seed=2)])

    def fn(a):
        return (*jax.lax.linalg.lu(a), jnp.linalg.inv(a))
    lu, pivots, perm, inv = secure(fn, a)
    want_lu, want_pivots, want_perm, want_inv = plain(fn, a)
    np.testing.assert_array_equal(pivots[0], want_pivots[0])
    np.testing.assert_array_equal(perm[0], want_perm[0])
    np.testing.assert_allclose(lu[0], want_lu[0], atol=1e-4)
    # any pivot order of a near tie is as good: P a = L U, and partial pivoting's |L| <= 1
    lower = np.tril(lu, -1) + np.eye(3)
    np.testing.assert_allclose(lower @ np.triu(lu), np.take_along_axis(a, perm[..., None], 1),
                               atol=1e-4)
    assert np.abs(lower).max() <= 1 + 1e-4
    assert_within(inv, want_inv, np.linalg.cond(a))


def test_det_n4_and_slogdet(secure, plain):
    """det of n >= 4 is JAX's sign * exp(logdet) from lu, as is slogdet for any n (here
    n = 2, one column to eliminate); a row swap flips the sign."""
    swapped = conditioned(4, 10, seed=3)[[1, 0, 2, 3]]
    a = np.stack([swapped, 2 * conditioned(4, 30, seed=4), -conditioned(4, 5, seed=5)])
    small = np.array([[[0, 1], [2, 3]], [[4, 1], [-2, 3]], [[-0.5, 2], [1, 1]]], np.float32)

    def fn(a, small):
        return (jnp.linalg.det(a), *jnp.linalg.slogdet(small))
    det, sign, logdet = secure(fn, a, small)
    want_det, want_sign, want_logdet = plain(fn, a, small)
    assert 1e-3 < np.abs(want_det).min() and np.abs(want_det).max() < 1e3
    np.testing.assert_allclose(det, want_det, rtol=DET_RTOL)
    np.testing.assert_array_equal(sign, want_sign)
    np.testing.assert_allclose(logdet, want_logdet, atol=LOGDET_ATOL)


def test_cholesky_and_cho_solve(secure, plain):
    """Two positive definite matrices, and an indefinite one (JAX: NaN) whose second
    pivot, -1 - 2 * 2 / 4 = -2, shows as a diagonal entry of the factor below 0."""
    indefinite = np.diag(np.float32([4, -1, 1, 1]))
    indefinite[0, 1] = indefinite[1, 0] = 2
    s = np.stack([conditioned(4, 10, seed=20, spd=True), conditioned(4, 100, seed=110, spd=True),
                  indefinite])
    b = rhs(3, 4, seed=1)

    def fn(s, b):
        factor = jnp.linalg.cholesky(s)
        return factor, jsl.cho_solve((factor, True), b[..., None])[..., 0]
    (factor, x), (want_factor, want_x) = secure(fn, s, b), plain(fn, s, b)
    conds = np.linalg.cond(s[:2])
    assert_within(factor[:2], want_factor[:2], conds)
    assert_within(x[:2], want_x[:2], conds)
    assert np.all(np.triu(factor, 1) == 0)
    assert np.isnan(want_factor[2][np.tril_indices(4)]).all()
    np.testing.assert_allclose(factor[2][:, 0], [2, 1, 0, 0], atol=1e-4)
    assert factor[2][1, 1] < 0


def test_solve_triangular(secure, plain):
    """Only the named triangle is read (the other holds garbage, and so does the
    diagonal with unit_diagonal), from either side, transposed or not."""
    t = np.stack([conditioned(4, 10, seed=20), conditioned(4, 10, seed=21)])
    t = t + np.float32(2) * np.eye(4, dtype=np.float32)
    b = rhs(2, 4, 2, seed=2)

    def fn(t, b):
        return (jsl.solve_triangular(t, b, lower=True),
                jsl.solve_triangular(t, b, lower=False, trans=1),
                jax.lax.linalg.triangular_solve(t, jnp.swapaxes(b, -1, -2), left_side=False,
                                                lower=True, unit_diagonal=True))
    conds = [max(np.linalg.cond(np.tril(m)), np.linalg.cond(np.triu(m)),
                 np.linalg.cond(np.tril(m, -1) + np.eye(4))) for m in t]
    for got, want in zip(secure(fn, t, b), plain(fn, t, b)):
        assert_within(got, want, conds)


def test_ridge_regression_n6(secure, plain):
    """Closed-form ridge regression, features at alice and labels at bob, on four data
    sets at once whose correlated features make X^T X + I/2 (6 x 6, solved by lu with
    pivoting) conditioned from about 6 to 230."""
    rng = np.random.default_rng(7)
    mixing = np.stack([conditioned(6, np.sqrt(c), seed=30 + c) for c in (3, 10, 30, 100)])
    x = (rng.normal(size=(4, 40, 6)) @ mixing).astype(np.float32)
    y = (x @ rng.normal(size=6) + 0.1 * rng.normal(size=(4, 40))).astype(np.float32)

    def ridge(x, y):
        xt = jnp.swapaxes(x, -1, -2)
        return jnp.linalg.solve(xt @ x + 0.5 * jnp.eye(6), (xt @ y[..., None]))[..., 0]
    gram = np.swapaxes(x, -1, -2) @ x + 0.5 * np.eye(6)
    assert_within(secure(ridge, x, y), plain(ridge, x, y), np.linalg.cond(gram))
