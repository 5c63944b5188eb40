"""jnp functions that were compile or run-time errors on secrets, against plain JAX.

Each runs on the two-party MPC device under ``simulate`` (``conftest.secure``).
Data movement (split) and selections are exact up to the 2^-19 encoding of
each input; searchsorted counts by exact comparisons. Functions built on
``mixc.approx`` inherit its errors: interp divides by a secret (reciprocal,
rel 1.5e-5), hypot divides and takes a square root (rel 1.5e-5 + 1e-5), cbrt is
exp(log|x| / 3) (log abs 4e-5, so rel 1.5e-5, then exp rel 1e-4).
``scripts/jnp_coverage.py`` sweeps every jnp function; this file keeps the
ones it relies on fast to check.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ENCODE = 2.0 ** -18     # two encodings' worth of error (2^-19 each)


def floats(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def assert_close(out, ref, atol=ENCODE, rtol=0.0):
    for o, r in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(ref)):
        o, r = np.asarray(o), np.asarray(r)
        assert o.shape == r.shape and o.dtype == r.dtype, (o.shape, r.shape, o.dtype, r.dtype)
        if r.dtype == np.bool_ or np.issubdtype(r.dtype, np.integer):
            np.testing.assert_array_equal(o, r)
        else:
            np.testing.assert_allclose(o, r, atol=atol, rtol=rtol)


def compare(secure, plain, fn, *arrays, **tolerance):
    assert_close(secure(fn, *arrays), plain(fn, *arrays), **tolerance)


@pytest.mark.parametrize("fn", [
    lambda x: jnp.split(x, 2, axis=1),
    lambda x: jnp.split(x, [1, 4], axis=0),
    lambda x: jnp.array_split(x, 4, axis=0),
    lambda x: jnp.hsplit(x, 2),
], ids=["split", "split_at", "array_split", "hsplit"])
def test_split(secure, plain, fn):
    compare(secure, plain, fn, floats(6, 4))


def test_select_many_branches(secure, plain):
    def fn(x):
        return jnp.select([x < -1, x < 0, x < 1], [x * 2, -x, x * x], x - 1)
    x = floats(4, 5, scale=1.5)
    compare(secure, plain, fn, x, atol=4 * ENCODE)


def test_select_bool_cases_and_default(secure, plain):
    def fn(x, y):
        return jnp.select([x < 0, y < 0, x > y], [x > 1, y > 1, x < 2], y > 0)
    compare(secure, plain, fn, floats(12), floats(12, seed=1))


def test_select_n_with_known_index_is_local(secure, plain):
    which = np.array([[0, 1, 2], [2, 1, 0]], np.int32)

    def fn(a, b, c):
        return jax.lax.select_n(which, a, b, c)
    out, bundle = secure(fn, floats(2, 3), floats(2, 3, seed=1), floats(2, 3, seed=2),
                         with_bundle=True)
    assert_close(out, plain(fn, floats(2, 3), floats(2, 3, seed=1), floats(2, 3, seed=2)))
    assert "select_n" not in bundle.text("alice")


def test_switch_with_secret_index(secure, plain):
    def fn(i, x):
        return jax.lax.switch(i, [lambda v: v + 1, lambda v: v * 2, lambda v: -v], x)
    compare(secure, plain, fn, np.int32(2), floats(3))


SEARCH_POINTS = np.array([-1.5, -0.5, 0.0, 0.25, 1.0], np.float32)


@pytest.mark.parametrize("side", ["left", "right"])
def test_searchsorted_public_breakpoints(secure, plain, side):
    x = np.concatenate([floats(9), SEARCH_POINTS]).astype(np.float32)   # ties at the points
    compare(secure, plain, lambda v: jnp.searchsorted(SEARCH_POINTS, v, side=side), x)


@pytest.mark.parametrize("side", ["left", "right"])
def test_searchsorted_secret_breakpoints(secure, plain, side):
    a = np.sort(floats(6, seed=3))
    v = np.concatenate([floats(2, 3), a[:3].reshape(1, 3)])
    compare(secure, plain, lambda a, v: jnp.searchsorted(a, v, side=side), a, v)


def test_digitize(secure, plain):
    compare(secure, plain, lambda x: jnp.digitize(x, SEARCH_POINTS), floats(10))


def test_interp_public_breakpoints(secure, plain):
    xp = np.array([-2.0, -0.5, 0.0, 1.0, 3.0], np.float32)
    fp = np.array([1.0, -1.0, 0.5, 2.0, 0.0], np.float32)
    x = np.concatenate([floats(10, scale=2), xp, [-5.0, 5.0]]).astype(np.float32)
    compare(secure, plain, lambda x: jnp.interp(x, xp, fp), x, atol=1e-4)


@settings(max_examples=2, deadline=None)
@given(st.integers(0, 2 ** 16))
def test_interp_secret_breakpoints(secure, plain, seed):
    rng = np.random.default_rng(seed)
    xp = np.cumsum(rng.uniform(0.1, 1.0, 6)).astype(np.float32) - 2
    fp = rng.standard_normal(6).astype(np.float32)
    x = rng.uniform(-3, 5, 8).astype(np.float32)
    compare(secure, plain, lambda x, xp, fp: jnp.interp(x, xp, fp, left=-9.0), x, xp, fp,
            atol=1e-4)


def test_vander_powers_by_position(secure, plain):
    """x ** y with a known integer y that differs by position: product chains, no log."""
    compare(secure, plain, lambda x: jnp.vander(x, 4), floats(5), atol=4 * ENCODE, rtol=1e-5)


def test_unstack(secure, plain):
    compare(secure, plain, lambda x: jnp.unstack(x, axis=1), floats(3, 4))


def test_cbrt(secure, plain):
    x = np.array([0.0, 1e-2, -0.3, 1.0, -8.0, 27.0, 500.0, -1000.0], np.float32)
    compare(secure, plain, lambda x: jnp.cbrt(x), x, atol=1e-4, rtol=2e-4)


def test_signbit_and_copysign(secure, plain):
    x, y = floats(10), floats(10, seed=1)
    y[0] = 0.0
    compare(secure, plain, lambda x: jnp.signbit(x), x)
    compare(secure, plain, lambda x, y: jnp.copysign(x, y), x, y)


def test_signbit_of_integers(secure, plain):
    compare(secure, plain, lambda n: jnp.signbit(n), np.array([-3, 0, 5], np.int32))


def test_hypot(secure, plain):
    x, y = floats(12, scale=3), floats(12, seed=1, scale=3)
    x[0] = y[0] = 0.0
    compare(secure, plain, lambda x, y: jnp.hypot(x, y), x, y, atol=1e-4, rtol=5e-5)


def test_nan_to_num_is_the_identity_in_range(secure, plain):
    """Fixed point has no NaN or infinity: nan_to_num leaves every value as it is."""
    x = floats(3, 4, scale=100)
    compare(secure, plain, lambda x: jnp.nan_to_num(x), x, atol=ENCODE * 2)
    compare(secure, plain, lambda x: jnp.nan_to_num(x, nan=1.0, posinf=5.0, neginf=-5.0), x,
            atol=ENCODE * 2)


def test_comparisons_with_infinities_are_known():
    """x < inf, x == -inf, ...: folded while compiling (no comparison, nothing encoded)."""
    from mixc.translate_arith import _against_infinity
    assert _against_infinity("less", 1, True) and not _against_infinity("less", 0, True)
    assert _against_infinity("greater", 1, False) and not _against_infinity("greater", 0, False)
    assert not _against_infinity("eq", 0, True) and _against_infinity("ne", 1, False)


def test_isinf_isfinite(secure, plain):
    x = floats(5)
    compare(secure, plain, lambda x: (jnp.isinf(x), jnp.isfinite(x), jnp.isposinf(x)), x)


def _pool_gradient(window, stride, padding, op=jax.lax.max, init=-jnp.inf):
    def fn(x):
        def pooled(a):
            return (jax.lax.reduce_window(a, init, op, window, stride, padding) ** 2).sum()
        return jax.grad(pooled)(x)
    return fn


@pytest.mark.parametrize("window,stride,padding", [
    ((2, 2), (2, 2), "VALID"),
    ((3, 3), (1, 1), "SAME"),        # overlapping windows: several layers of adds
    ((2, 3), (2, 1), ((0, 1), (1, 0))),
])
def test_max_pool_gradient(secure, plain, window, stride, padding):
    x = np.round(floats(5, 6, scale=2), 0).astype(np.float32)     # ties: first max wins
    compare(secure, plain, _pool_gradient(window, stride, padding), x, atol=4 * ENCODE)


def test_min_pool_gradient(secure, plain):
    fn = _pool_gradient((2, 2), (1, 1), "VALID", jax.lax.min, jnp.inf)
    compare(secure, plain, fn, np.round(floats(4, 4, scale=2)).astype(np.float32),
            atol=4 * ENCODE)


def test_cnn_max_pool_training_step(secure, plain):
    """A conv + max-pool layer's weight gradient, as jax.grad writes it."""
    def loss(w, x):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME")
        pooled = jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2),
                                       "VALID")
        return jnp.sum(pooled * pooled)
    w, x = floats(2, 1, 3, 3, scale=0.5), floats(1, 1, 4, 4, seed=1)
    compare(secure, plain, jax.grad(loss), w, x, atol=2e-3)
