"""The 128-bit ring (``ring: 128``, SPU's FM128): its C kernels against the Python-int
references (kernels_ref), the device option, and 2-party programs on it against plain JAX.

Error model on ``examples/two_party_ring128.devices`` (f = 40): encoding is off by at
most 2^-41 per value and TruncPr by one unit (2^-40), so products of moderate values
agree with float32 JAX to float32 rounding; TruncPr is exact for values below
2^(126 - 2f) = 2^46 before truncation (``x * x`` at 2e4 is 4e8 < 2^46), and a
comparison is exact for differences below 2^(127 - f) = 2^87.
"""
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import mixc
from mixc.errors import ConfigError
from mixc.ir.ops import U128
from mixc.runtime import kernels as K
from mixc.runtime import kernels_ref as R

from conftest import run_secure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RING128 = os.path.join(ROOT, "examples", "two_party_ring128.devices")
MASK = (1 << 128) - 1
EDGE = [0, 1, 2, (1 << 64) - 1, 1 << 64, (1 << 127) - 1, 1 << 127, MASK - 1, MASK]
u128_values = st.one_of(st.sampled_from(EDGE), st.integers(0, MASK))
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def ring128():
    return mixc.init_device(RING128)


def u128(ints):
    return K.r128_from_int(np.asarray(ints, dtype=object))


@st.composite
def u128_arrays(draw, count=2):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=6))
    n = int(np.prod(shape))
    return [np.array(draw(st.lists(u128_values, min_size=n, max_size=n)),
                     dtype=object).reshape(shape) for _ in range(count)]


# ---------------------------------------------------------------- kernels

@SETTINGS
@given(u128_arrays(), st.integers(0, 127))
def test_elementwise_kernels_vs_ref(ab, bits):
    a, b = ab
    x, y = u128(a), u128(b)
    for fk, fr in [(K.r128_add, R.r128_add), (K.r128_sub, R.r128_sub), (K.r128_mul, R.r128_mul)]:
        np.testing.assert_array_equal(K.r128_to_int(fk(x, y)), fr(a, b))
    np.testing.assert_array_equal(K.r128_to_int(K.r128_neg(x)), R.r128_neg(a))
    for fk, fr in [(K.r128_shl, R.r128_shl), (K.r128_lrshift, R.r128_lrshift),
                   (K.r128_arshift, R.r128_arshift)]:
        np.testing.assert_array_equal(K.r128_to_int(fk(x, bits)), fr(a, bits))
    if a.ndim == 2:
        np.testing.assert_array_equal(K.r128_to_int(K.r128_rowsum(x)), R.r128_rowsum(a))


@SETTINGS
@given(u128_arrays(count=5), st.booleans(), st.integers(1, 126))
def test_fused_kernels_vs_ref(values, first, bits):
    c, e, f, a, b = values
    got = K.r128_beaver_finish(*(u128(v) for v in values), first)
    np.testing.assert_array_equal(K.r128_to_int(got), R.r128_beaver_finish(c, e, f, a, b, first))
    got = K.r128_truncpr_finish(u128(c), u128(e), u128(f), bits, first)
    np.testing.assert_array_equal(K.r128_to_int(got), R.r128_truncpr_finish(c, e, f, bits, first))


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 5, 7), (17, 300, 33), (2, 1400, 19), (4, 0, 3)])
def test_matmul_vs_ref(m, k, n):
    """Odd sizes cross the kernel's 3x16 tiles, 256-deep K blocks and the 1365 bound of
    its exact 2^52-weight sums."""
    rng = np.random.default_rng(m * 1000 + k + n)
    a, b = (rng.integers(0, 2**64, s + (2,), dtype=np.uint64).view(U128).reshape(s)
            for s in ((m, k), (k, n)))
    np.testing.assert_array_equal(K.r128_to_int(K.r128_matmul(a, b)),
                                  R.r128_matmul(K.r128_to_int(a), K.r128_to_int(b)))


def test_encode_decode_vs_ref():
    x = np.array([0.0, 1.5, -2e4, 1e-8, -1e-8, 3.0e13, -0.5, 2.0 ** -41], np.float64)
    for f in (18, 40, 48):
        enc = K.r128_encode(x, f)
        np.testing.assert_array_equal(K.r128_to_int(enc), R.r128_encode(x, f))
        np.testing.assert_array_equal(K.r128_decode(enc, f), R.r128_decode(R.r128_encode(x, f), f))
    with pytest.raises(ValueError, match="out of range"):
        K.r128_encode(np.array([np.nan]), 40)
    with pytest.raises(ValueError, match="out of range"):
        K.r128_encode(np.array([2.0 ** 90]), 40)


def test_u128_arithmetic_never_runs_in_numpy():
    """numpy refuses arithmetic on the structured dtype: a 128-bit value cannot be added
    as if it were something else; the IR ops dispatch to the kernels instead."""
    from mixc.ir.ops import OPS
    x = u128([1, MASK])
    with pytest.raises(TypeError):
        np.add(x, x)
    with pytest.raises(TypeError):
        OPS["add"].impl({}, x, x)  # the numpy evaluation refuses; the executor picks impl_u128
    np.testing.assert_array_equal(K.r128_to_int(OPS["add"].impl_u128({}, x, u128(1))), [2, 0])


# ---------------------------------------------------------------- the device option

DEVICES = """domain: ["alice", "bob"]
device:
  - mpc:
      type: MPC
      domain: ["alice", "bob"]
{options}
"""


def _config(*options):
    return mixc.config.parse_config(DEVICES.format(options="\n".join("      " + o for o in options)))


def test_ring_option():
    assert _config().mpc.ring == 64
    assert _config("ring: 64") == _config()  # the default is left out: equal configs
    dev = _config("ring: 128", "fraction_bits: 48").mpc
    assert (dev.ring, dev.fraction_bits) == (128, 48)
    with pytest.raises(ConfigError, match=r"ring must be 64 or 128, got number 96"):
        _config("ring: 96")
    with pytest.raises(ConfigError, match=r"1\.\.40, got 44 \(up to 48 with ring: 128\)"):
        _config("fraction_bits: 44")
    with pytest.raises(ConfigError, match=r"1\.\.48, got 49"):
        _config("ring: 128", "fraction_bits: 49")


# ---------------------------------------------------------------- programs on the ring

def test_square_at_2e4_right_on_128_wrong_or_warned_on_64(ring128):
    x = np.array([2e4, -2e4, 1.5e4, 3.25], np.float32)
    ref = x * x
    np.testing.assert_allclose(run_secure(ring128, lambda a: a * a, x), ref, rtol=1e-6)
    c64 = mixc.init_device(os.path.join(ROOT, "examples", "two_party.devices"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out64 = run_secure(c64, lambda a: a * a, x)
    warned = any(w.category.__name__ == "RangeWarning" for w in seen)
    assert warned or not np.allclose(out64, ref, rtol=1e-3)


def test_eps_1e8_survives_at_40_fraction_bits(ring128):
    """Adam's eps: 0 at 18 fraction bits, 10995 units at 40."""
    x = np.array([0.0, 1.0, -3.0], np.float32)
    out = run_secure(ring128, lambda a: ((a + 1e-8) - a) * 1e8, x)
    np.testing.assert_allclose(out, np.ones(3), rtol=1e-4)


def test_adam_step_vs_jax(ring128, plain):
    def step(w, g, m, v):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        return w - 0.01 * m / (jnp.sqrt(v) + 1e-8)
    rng = np.random.default_rng(0)
    w, g = (rng.normal(size=6).astype(np.float32) for _ in range(2))
    m = rng.normal(scale=0.1, size=6).astype(np.float32)
    v = rng.uniform(0.05, 2.0, size=6).astype(np.float32)
    np.testing.assert_allclose(run_secure(ring128, step, w, g, m, v), plain(step, w, g, m, v),
                               atol=2e-4)


def test_lr_loop_vs_jax(ring128, plain):
    """Logistic regression, 5 steps of one fori_loop (the loop's shares and captured
    public values on the 128-bit ring); error from the sigmoid approximation."""
    def train(x, y):
        def step(i, w):
            return w - 0.1 * x.T @ (jax.nn.sigmoid(x @ w) - y) / x.shape[0]
        return jax.lax.fori_loop(0, 5, step, jnp.zeros(x.shape[1]))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    np.testing.assert_allclose(run_secure(ring128, train, x, y), plain(train, x, y), atol=1e-3)


def test_comparisons_vs_jax(ring128, plain):
    """lt's carry tree over 128 positions and eq's 128-bit AND tree, with differences far
    beyond 2^63 units (4e8 * 2^40 ~ 2^68.5): the 64-bit circuit would be wrong there."""
    x = np.array([2e4, -2e4, 3.5, 1e-3, 7.0, -1e-9], np.float32)
    y = np.array([1e-3, 3.5, -2e4, 2e4, 7.0, 1e-9], np.float32)

    def fn(a, b):
        return a * a < -(b * b), a < b, a == b, jnp.maximum(a * a, b), jax.nn.relu(a - b)
    for got, want in zip(run_secure(ring128, fn, x, y), plain(fn, x, y)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def test_matmul_vs_jax(ring128, plain):
    rng = np.random.default_rng(1)
    a = rng.normal(scale=1e3, size=(5, 7)).astype(np.float32)
    b = rng.normal(scale=1e3, size=(7, 3)).astype(np.float32)
    np.testing.assert_allclose(run_secure(ring128, lambda p, q: p @ q, a, b), plain(
        lambda p, q: p @ q, a, b), rtol=1e-5, atol=1e-2)


def test_scalar_results_vs_jax(ring128, plain):
    """0-d ring values (a dot of vectors, a sum) through products, truncation and max."""
    a = np.array([2e4, -3.0, 1e-3, 5.0], np.float32)
    b = np.array([1.0, 2.0, 3.0, 4.0], np.float32)

    def fn(p, q):
        return jnp.maximum(p * p, q @ q), (q @ q) * p.sum()
    for got, want in zip(run_secure(ring128, fn, a, b), plain(fn, a, b)):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_integer_scalar_results_vs_jax(ring128, plain):
    """0-d int32 results (argmax, a count, a cast) keep JAX's shape () when decoded from
    the 128-bit ring's low word (it came back as (1,): scripts/jnp_coverage.py)."""
    x = np.array([[0.5, -2.0, 3.25], [1.0, 0.0, -0.75]], np.float32)

    def fn(v):
        return jnp.argmax(v), jnp.count_nonzero(v), v[0, 2].astype(jnp.int32), jnp.argmin(v[1])
    for got, want in zip(run_secure(ring128, fn, x), plain(fn, x)):
        assert np.shape(got) == np.shape(want) == ()
        np.testing.assert_array_equal(got, want)


def test_exp_family_vs_jax(ring128, plain):
    """exp and what is built on it (softmax, logsumexp, elu, power): their range reduction
    turns a 0/1 share back into a boolean one, bit 0 of the u128 share's low word (it
    crashed in bits_pack on 128 bits). Errors: mixc/approx.py's table (exp rel 1e-4, so elu
    = exp - 1 near 0 abs 1e-4)."""
    x = np.random.default_rng(3).normal(size=(3, 4)).astype(np.float32)
    for fn in (jnp.exp, jnp.exp2, jax.nn.softmax, jax.nn.logsumexp, jax.nn.elu,
               lambda v: jnp.power(jnp.abs(v) + 0.5, v)):
        np.testing.assert_allclose(run_secure(ring128, fn, x), plain(fn, x), rtol=1e-4,
                                   atol=1e-4)


def test_dealer_free_runs_on_128():
    """``offline: he`` on 128 bits (tests/test_ring128_ot.py and test_ring128_he.py test it
    in depth): a product at 2e4, which wraps on the 64-bit ring."""
    cluster = mixc.config.parse_config(
        DEVICES.format(options="      offline: he\n      ring: 128")
        .replace('device:\n', 'device:\n  - p1:\n      type: PYU\n      domain: "alice"\n'
                              '  - p2:\n      type: PYU\n      domain: "bob"\n'))
    x = np.array([2e4, -3e4, 1.5], np.float32)
    np.testing.assert_allclose(run_secure(cluster, lambda a, b: a * b, x, x), x * x, rtol=1e-6)
