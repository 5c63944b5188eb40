"""jnp.linalg and jax.scipy.linalg on MPC (``mixc/linalg.py``: LU with oblivious partial
pivoting, triangular solves, Cholesky, Householder QR) against float32 JAX, within the tolerances that
module states: for a matrix of condition number c, results within ``PER_CONDITION`` * c
of their largest entry. Every call runs a batch of matrices, so batching is covered
throughout."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

PER_CONDITION = 2e-5
QR_PER_CONDITION = 4e-5
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


def assert_within(got, want, conds, per_condition=PER_CONDITION):
    """Each batch item within ``per_condition`` * its condition number of its largest
    entry."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    for g, w, c in zip(got, want, conds):
        np.testing.assert_allclose(g, w, rtol=0, atol=per_condition * c * np.abs(w).max())


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


def test_qr_reduced_complete_and_r(secure, plain):
    """Tall, wide and square batches: q and r as JAX's (LAPACK's signs), q orthogonal,
    r upper triangular with exact zeros below; an upper triangular input needs no
    reflection at all (JAX: q = I, r = a)."""
    rng = np.random.default_rng(7)
    tall = np.stack([conditioned(4, 10, seed=30)[:, :3], 2 * conditioned(4, 50, seed=31)[:, :3]])
    wide = rng.normal(size=(2, 3, 5)).astype(np.float32)
    square = np.stack([conditioned(3, 20, seed=32), np.triu(conditioned(3, 5, seed=33))])

    def fn(tall, wide, square):
        return (*jnp.linalg.qr(tall), *jnp.linalg.qr(wide, mode="complete"),
                *jnp.linalg.qr(square), jnp.linalg.qr(tall, mode="r"))
    got, want = secure(fn, tall, wide, square), plain(fn, tall, wide, square)
    conds = [np.linalg.cond(m) for m in (*tall, *wide, *square)]
    for g, w, c in zip(got[:6], want[:6], [conds[:2]] * 2 + [conds[2:4]] * 2 + [conds[4:]] * 2):
        assert_within(g, w, c, QR_PER_CONDITION)
    assert_within(got[6], want[6], conds[:2], QR_PER_CONDITION)
    for q, r in (got[0:2], got[2:4], got[4:6]):
        np.testing.assert_allclose(np.swapaxes(q, -1, -2) @ q, np.broadcast_to(
            np.eye(q.shape[-1]), q.shape[:-2] + (q.shape[-1],) * 2), atol=2e-4)
        assert np.all(np.tril(r, -1) == 0)
    np.testing.assert_allclose(got[4][1], np.eye(3), atol=1e-6)


EIGH_VALUES = 1e-4    # of the largest |eigenvalue|
EIGH_VECTORS = 5e-5   # times the largest |eigenvalue| over the smallest gap
EIGH_ORTHOGONAL = 2e-4


def symmetric(n, spread, seed):
    """A random symmetric n x n matrix with eigenvalues uniform in [-spread, spread]."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (u @ np.diag(rng.uniform(-spread, spread, n)) @ u.T).astype(np.float32)


def assert_eigh(w, v, a):
    """Eigenvalues as float64 LAPACK's, eigenvectors up to each column's sign, v orthogonal."""
    want_w, want_v = np.linalg.eigh(a.astype(np.float64))
    for got_w, got_v, ww, wv in zip(w, v, want_w, want_v):
        scale, gap = np.abs(ww).max(), np.diff(ww).min()
        np.testing.assert_allclose(got_w, ww, rtol=0, atol=EIGH_VALUES * scale)
        sign = np.sign(np.sum(got_v * wv, axis=0))
        np.testing.assert_allclose(got_v * sign, wv, rtol=0, atol=EIGH_VECTORS * scale / gap)
        n = len(ww)
        np.testing.assert_allclose(got_v.T @ got_v, np.eye(n), rtol=0, atol=EIGH_ORTHOGONAL)


def test_eigh_odd_and_even_sizes(secure):
    """Cyclic Jacobi (round-robin pairs, a fixed number of sweeps) and the odd-even sort:
    3 x 3 (one index left out each step) and 4 x 4, eigenvalues spread over [-1, 1] and
    [-8, 8]; eigvalsh is eigh's eigenvalues."""
    three = np.stack([symmetric(3, 1, seed=1), symmetric(3, 8, seed=2)])
    four = np.stack([symmetric(4, 1, seed=3), symmetric(4, 8, seed=4)])

    def fn(three, four):
        return (*jnp.linalg.eigh(three), *jnp.linalg.eigh(four), jnp.linalg.eigvalsh(four))
    got = secure(fn, three, four)
    for (w, v), a in zip((got[0:2], got[2:4]), (three, four)):
        assert_eigh(w, v, a)
    np.testing.assert_allclose(got[4], got[2], rtol=0, atol=2 * EIGH_VALUES * 8)


def test_eigh_reads_one_triangle(secure):
    """Unsymmetrized (``symmetrize_input=False``), the primitive reads the named triangle
    only: garbage in the other changes nothing."""
    a = symmetric(3, 4, seed=6)[None]
    garbage = a + np.tril(rhs(3, 3, seed=7), -1)[None] * 5

    def fn(garbage):
        return jax.lax.linalg.eigh(garbage, lower=False, symmetrize_input=False)
    v, w = secure(fn, garbage)
    assert_eigh(w, v, a)


SVD_VALUES = 1.5e-4   # of the largest singular value
SVD_VECTORS = 1.5e-4  # times the largest singular value over the smallest gap (or value)


def assert_svd(u, s, vt, a):
    """Singular values as float64 LAPACK's, u's columns and vt's rows up to a common
    sign per pair."""
    want_u, want_s, want_vt = np.linalg.svd(a.astype(np.float64), full_matrices=False)
    for got in zip(u, s, vt, want_u, want_s, want_vt):
        gu, gs, gvt, wu, ws, wvt = got
        k = len(ws)
        scale, gap = ws.max(), min(np.diff(-ws).min(), ws.min())
        np.testing.assert_allclose(gs, ws, rtol=0, atol=SVD_VALUES * scale)
        sign = np.sign(np.sum(gu[:, :k] * wu, axis=0))
        atol = SVD_VECTORS * scale / gap
        np.testing.assert_allclose(gu[:, :k] * sign, wu, rtol=0, atol=atol)
        np.testing.assert_allclose(gvt[:k] * sign[:, None], wvt, rtol=0, atol=atol)


def test_svd_tall_wide_square_and_pinv(secure, plain):
    """One-sided Jacobi on a tall and (transposed) a wide batch, full_matrices on a
    square one; pinv (JAX's, from svd with full_matrices=False) as JAX's."""
    tall = np.stack([conditioned(4, 10, seed=40)[:, :3], 3 * conditioned(4, 30, seed=41)[:, :3]])
    wide = np.random.default_rng(42).normal(size=(1, 3, 5)).astype(np.float32)
    square = conditioned(3, 20, seed=43)[None]

    def fn(tall, wide, square):
        return (*jnp.linalg.svd(tall, full_matrices=False),
                *jnp.linalg.svd(wide, full_matrices=False), *jnp.linalg.svd(square),
                jnp.linalg.pinv(tall))
    got = secure(fn, tall, wide, square)
    for (u, s, vt), a in zip((got[0:3], got[3:6], got[6:9]), (tall, wide, square)):
        assert_svd(u, s, vt, a)
    assert_within(got[9], plain(jnp.linalg.pinv, tall), np.linalg.cond(tall), QR_PER_CONDITION)


def test_svd_full_matrices_of_a_wide_matrix(secure):
    """JAX's default: vt completed to a square orthogonal matrix (its last row spans the
    null space of a: one dimension here, so it is LAPACK's up to its sign)."""
    a = np.random.default_rng(44).normal(size=(1, 3, 4)).astype(np.float32)
    u, s, vt = secure(lambda a: jnp.linalg.svd(a), a)
    assert u.shape == (1, 3, 3) and vt.shape == (1, 4, 4)
    assert_svd(u, s, vt[:, :3], a)
    np.testing.assert_allclose(vt[0] @ vt[0].T, np.eye(4), rtol=0, atol=EIGH_ORTHOGONAL)
    want = np.linalg.svd(a[0].astype(np.float64))[2][3]
    np.testing.assert_allclose(vt[0, 3] * np.sign(vt[0, 3] @ want), want, rtol=0, atol=1e-3)
