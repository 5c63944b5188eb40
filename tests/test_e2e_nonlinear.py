"""Nonlinear functions under MPC (simulate, real protocols) against plain JAX.

Bounds are ``mixc.approx.ERROR_BOUNDS`` (each function's documented maximum
error on its stated range, with the fixed-point allowance for relative
bounds), plus one unit 2^-18 per truncation of the last product. Inputs are
encoded to 2^-18 first, so the reference is the function at the encoded
input, as the bounds are stated.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mixc import approx

ULP = 2.0 ** -18
FUNCTIONS = {"exp": jnp.exp, "log": jnp.log, "logistic": jax.nn.sigmoid, "tanh": jnp.tanh,
             "erf": jax.scipy.special.erf,
             "sqrt": jnp.sqrt, "rsqrt": jax.lax.rsqrt, "reciprocal": lambda x: 1.0 / x}
RANGES = {"exp": (-16.0, 12.0), "log": (2.0 ** -10, 2.0 ** 10), "logistic": (-20.0, 20.0),
          "tanh": (-10.0, 10.0), "erf": (-5.0, 5.0), "sqrt": (2.0 ** -8, 2.0 ** 14), "rsqrt": (2.0 ** -8, 2.0 ** 14),
          "reciprocal": (2.0 ** -8, 2.0 ** 12)}


def _encoded(x):
    return (np.round(np.asarray(x, np.float64) / ULP) * ULP).astype(np.float32)


def _inputs(name, n, seed):
    lo, hi = RANGES[name]
    rng = np.random.default_rng(seed)
    if lo > 0:  # log-uniform over wide positive ranges
        x = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    else:
        x = rng.uniform(lo, hi, n)
    return _encoded(x)


def _check(name, x, got):
    ref = np.asarray(FUNCTIONS[name](x), np.float64)
    exact = {"exp": np.exp, "log": np.log, "logistic": lambda v: 1 / (1 + np.exp(-v)),
             "tanh": np.tanh, "erf": np.vectorize(math.erf), "sqrt": np.sqrt, "rsqrt": lambda v: 1 / np.sqrt(v),
             "reciprocal": lambda v: 1 / v}[name](x.astype(np.float64))
    bound = approx.allowed_error(name, exact, fixed_point=True) + 2 * ULP
    err = np.abs(np.asarray(got, np.float64) - exact)
    assert (err <= bound).all(), (name, float(err.max()), x[np.argmax(err - bound)])
    # and against plain JAX (float32) within the same bound plus its own rounding
    assert (np.abs(np.asarray(got, np.float64) - ref) <= bound + 1e-6 * np.abs(ref)).all()


def test_every_function_on_its_range(secure):
    for i, name in enumerate(FUNCTIONS):
        x = _inputs(name, 400, seed=i)
        _check(name, x, secure(FUNCTIONS[name], x, owners="p1"))


@settings(max_examples=4, deadline=None)
@given(st.integers(0, 2 ** 31), st.sampled_from(sorted(FUNCTIONS)))
def test_hypothesis_in_documented_ranges(secure, seed, name):
    x = _inputs(name, 64, seed)
    _check(name, x, secure(FUNCTIONS[name], x, owners="p2"))


def test_saturation_outside_the_range(secure):
    x = np.array([-1e4, -100.0, -30.0, 30.0, 100.0, 1e4], np.float32)
    sig = secure(jax.nn.sigmoid, x, owners="p1")
    np.testing.assert_allclose(sig, (x > 0).astype(np.float64), atol=2.5e-4)  # saturated
    assert np.isfinite(secure(jnp.exp, np.array([-100.0, -40.0], np.float32))).all()
    np.testing.assert_allclose(secure(jnp.exp, np.array([-100.0, -40.0], np.float32)), 0,
                               atol=ULP)


def test_division_by_a_secret_and_softmax(secure, plain):
    rng = np.random.default_rng(7)
    a = _encoded(rng.uniform(-50, 50, 200))
    b = _encoded(np.exp(rng.uniform(np.log(0.01), np.log(1000), 200)) * rng.choice([-1, 1], 200))
    q = secure(lambda a, b: a / b, a, b)
    exact = a.astype(np.float64) / b
    assert (np.abs(q - exact) <= 1.5e-5 * np.abs(exact) + 2.0 ** -17 * (1 + 1 / (4 * np.abs(b)))
            + 4 * ULP * (1 + np.abs(a))).all()
    logits = _encoded(rng.normal(0, 3, (8, 10)))
    probs = secure(lambda z: jax.nn.softmax(z, axis=-1), logits, owners="p2")
    np.testing.assert_allclose(probs, plain(lambda z: jax.nn.softmax(z, axis=-1), logits),
                               atol=approx.SOFTMAX_ERROR)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=10 * approx.SOFTMAX_ERROR)
