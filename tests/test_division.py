"""Division on MPC beyond a product with a known reciprocal (``mixc/translate.py``:
``_rem``, ``_fmod``, ``_secret_int_quotient``), end to end against JAX and numpy.

- Float ``lax.rem`` (``jnp.fmod``; ``%`` is ``jnp.remainder``, JAX's sign fix-up
  of it) is exactly the fmod of the operands as encoded on the 2^-18 grid: equal
  to JAX's and numpy's for operands on the grid, and otherwise within
  2^-19 (1 + |x/y|) of it, or that close to the other end of the period where
  the fmod is that close to 0 or |y|. Ranges: a secret y needs |x| < 2^22,
  2^-8 <= |y| <= 2^12 and |x/y| < 2^16; a known y, |x| < 2^18 and
  |x/y| < 2^22. A zero divisor gives x (JAX: NaN).
- Integer ``lax.div``/``lax.rem`` (so ``//`` and ``%``) by a secret divisor are
  bit for bit JAX's for |x| < 2^22 and 1 <= |y| <= 2^12. By zero: ``lax.rem``
  gives x (as XLA), ``%`` JAX's 0 (jnp divides by 1 there), ``//`` runs but its
  quotient is unspecified.

- Float ``/`` by a secret divisor (``approx.div``): numerators up to 2^40 (either sign, the
  tiers' ends 2^21 and 2^39 among them), divisors over [2^-8, 2^40], quotients up to 2^43,
  within 1.5e-5 |a/b| + 2^-17 (1 + 1/(4|b|)): with a dealer, without one (``offline: he``)
  and on three parties (rep3).

Values sit near multiples of the divisor (one grid unit either side), at the
ends of the ranges and at random; each secure call builds and simulates one
program, so they are batched into a few calls.
"""
# No `from __future__ import annotations`: mixc.program needs the Input objects.
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mixc.bundle import build, simulate

from conftest import secure_program

ULP = 2.0 ** -18
LARGEST_X = 2 ** 22 - 1            # integers and floats by a secret divisor
LARGEST_X_KNOWN = 2 ** 18 - ULP    # floats by a known divisor


def on_grid(v):
    """v rounded to the fixed-point grid, so that encoding it loses nothing."""
    return (np.round(np.asarray(v, np.float64) / ULP) * ULP).astype(np.float32)


def fmod_and_remainder(x, y):
    return jnp.fmod(x, y), x % y


def assert_within_documented_bound(got, x, y, want):
    """|got - want| <= 2^-19 (1 + |x/y|), or |y| less than that where fmod wraps around."""
    x, y, got, want = (np.asarray(v, np.float64) for v in (x, y, got, want))
    err = np.abs(got - want)
    bound = 2.0 ** -19 * (1 + np.abs(x / y))
    far = np.minimum(err, np.abs(err - np.abs(y))) > bound
    assert not far.any(), list(zip(x[far], y[far], got[far], want[far]))


# ------------------------------------------------------------ floats, secret divisor

GRID_PAIRS = [(7.0, 3.5), (-7.0, 3.5), (7.0, -3.5), (-7.0, -3.5), (10.5, 3.5), (3.5, 3.5),
              (7 - ULP, 3.5), (7 + ULP, 3.5), (-7 + ULP, 3.5), (-7 - ULP, -3.5), (ULP, 3.5),
              (0.0, 3.5), (0.0, -2.0), (1.25, 2.5), (-1.25, 2.5), (12345.25, 0.75),
              (255.5, 2 ** -8), (-255.5, -2 ** -8), (LARGEST_X, 65.0), (-LARGEST_X, 4096.0),
              (LARGEST_X, -4096.0), (4095.75, 4096.0), (-4096.0, 4096.0)]
OFF_GRID_PAIRS = [(6.999, 3.5), (-6.999, 3.5), (6.999, -3.5), (0.3, 0.1), (-0.7, 0.1),
                  (1.0, 0.3), (5.1, 1.7), (2.0, 0.2), (6.9999995, 3.5), (7.0000005, 3.5),
                  (-6.9999995, 3.5), (0.01, 0.003)]


def random_secret_divisor_pairs(n, seed):
    """On the grid, in the documented range, half of them within a unit of a multiple."""
    rng = np.random.default_rng(seed)
    y = on_grid(2 ** rng.uniform(-8, 12, n) * rng.choice([-1, 1], n)).astype(np.float64)
    x = np.clip(2 ** rng.uniform(-4, 15.9, n) * rng.choice([-1, 1], n) * y,
                -LARGEST_X, LARGEST_X)
    near = rng.random(n) < 0.5
    x[near] = np.trunc(x[near] / y[near]) * y[near] + rng.integers(-1, 2, near.sum()) * ULP
    x = on_grid(x).astype(np.float64)
    keep = np.abs(x / y) < 2 ** 16
    return x[keep], y[keep]


def test_float_rem_by_a_secret_divisor(secure, plain):
    gx, gy = (on_grid(v) for v in zip(*GRID_PAIRS))
    rx, ry = (on_grid(v) for v in random_secret_divisor_pairs(400, seed=1))
    ox, oy = (np.float32(v) for v in zip(*OFF_GRID_PAIRS))
    zx = np.float32([5.25, -5.25, 0.0])
    x, y = np.concatenate([gx, rx, ox, zx]), np.concatenate([gy, ry, oy, np.zeros(3, np.float32)])
    fmod, remainder = (np.asarray(v) for v in secure(fmod_and_remainder, x, y))
    want_fmod, want_remainder = plain(fmod_and_remainder, x, y)
    on, off = slice(0, len(gx) + len(rx)), slice(len(gx) + len(rx), len(x) - len(zx))
    np.testing.assert_array_equal(fmod[on], want_fmod[on])
    np.testing.assert_array_equal(fmod[on], np.fmod(x[on], y[on]))
    np.testing.assert_array_equal(remainder[on], want_remainder[on])
    assert_within_documented_bound(fmod[off], x[off], y[off], want_fmod[off])
    assert_within_documented_bound(remainder[off], x[off], y[off], want_remainder[off])
    np.testing.assert_array_equal(fmod[-len(zx):], zx)
    np.testing.assert_array_equal(remainder[-len(zx):], zx)


# ------------------------------------------------------------ floats, known divisor

KNOWN_DIVISORS = (3.5, -3.5, 0.1, -2 * np.pi, 1000.0)
SMALL_DIVISOR = 2.0 ** -10                       # |x/y| < 2^22: |x| < 2^12


def test_float_rem_by_a_known_divisor(secure, plain):
    rng = np.random.default_rng(2)
    near = [k * np.float64(on_grid(d)) + e * ULP for d in KNOWN_DIVISORS
            for k in (2, -3, int(2 ** 18 / abs(d)) - 1) for e in (-1, 0, 1)]
    x = on_grid(np.clip(np.concatenate([near, [0.0, 6.999, -6.999, LARGEST_X_KNOWN,
                                               -LARGEST_X_KNOWN],
                                        rng.uniform(-2 ** 18, 2 ** 18, 150)]),
                        -LARGEST_X_KNOWN, LARGEST_X_KNOWN))
    small = on_grid(np.concatenate([[0.0, 3 * SMALL_DIVISOR, -5 * SMALL_DIVISOR + ULP,
                                     4095.5], rng.uniform(-2 ** 12, 2 ** 12, 60)]))

    cases = [(0, d) for d in KNOWN_DIVISORS] + [(1, SMALL_DIVISOR), (1, 0.0)]

    def fn(*values):     # outputs are one flat tuple: fmod and % for each case
        return tuple(out for i, d in cases for out in fmod_and_remainder(values[i], np.float32(d)))
    got, want = secure(fn, x, small), plain(fn, x, small)
    for k, (i, d) in enumerate(cases):
        values = (x, small)[i]
        outs, jax_outs = got[2 * k:2 * k + 2], want[2 * k:2 * k + 2]
        if d == 0.0:                          # by zero: x
            for g in outs:
                np.testing.assert_array_equal(g, values)
            continue
        encoded = np.float64(on_grid(d))      # exact against the divisor as encoded
        for g, exact, jax_value in zip(outs, (np.fmod, np.remainder), jax_outs):
            np.testing.assert_array_equal(
                g, exact(values.astype(np.float64), encoded).astype(np.float32), err_msg=d)
            assert_within_documented_bound(g, values, np.float32(d), jax_value)


# ------------------------------------------------------------ integers, secret divisor

N = 256
EDGE_DIVISORS = (1, -1, 2, -2, 3, -3, 7, -7, 10, -10, 4095, -4095, 4096, -4096)


def edge_int_pairs():
    """Each edge divisor against 0, +-1, its own multiples +-1 and the ends of the range."""
    pairs = []
    for y in EDGE_DIVISORS:
        k = LARGEST_X // abs(y) * abs(y)
        pairs += [(x, y) for x in (0, 1, -1, y, -y, y + 1, -y - 1, y - 1, 1 - y, k, k - 1,
                                   -k, 1 - k, LARGEST_X, -LARGEST_X)]
    return pairs


def divisions(x, y):
    return {"lax.div": jax.lax.div(x, y), "lax.rem": jax.lax.rem(x, y), "//": x // y, "%": x % y}


@pytest.fixture(scope="module")
def int_bundle(cluster):
    prog, _ = secure_program(cluster, divisions, np.zeros(N, np.int32), np.ones(N, np.int32))
    return build(prog, verify_between=True)


def test_int_division_by_a_secret_divisor(int_bundle, plain):
    pairs = edge_int_pairs()
    zero = [5, -5, 0, LARGEST_X]
    rng = np.random.default_rng(3)
    n = N - len(pairs) - len(zero)
    x = np.concatenate([[p[0] for p in pairs], zero, rng.integers(-LARGEST_X, LARGEST_X + 1, n)])
    y = np.concatenate([[p[1] for p in pairs], [0] * len(zero),
                        rng.integers(1, 4097, n) * rng.choice([-1, 1], n)])
    x, y = x.astype(np.int32), y.astype(np.int32)
    got, want = simulate(int_bundle, {"x0": x, "x1": y}), plain(divisions, x, y)
    by_zero = y == 0
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(got[name][~by_zero], want[name][~by_zero], err_msg=name)
    np.testing.assert_array_equal(got["lax.rem"][by_zero], x[by_zero])
    np.testing.assert_array_equal(got["%"][by_zero], want["%"][by_zero])


def test_floor_division_shares_one_quotient(int_bundle):
    """lax.div, lax.rem and // of the same operands compute one quotient (two approximate
    divisions, each cast to int32); % divides by where(y == 0, 1, y): one more."""
    casts = [n for n in int_bundle.graph_module.nodes if n.op == "convert_element_type"
             and n.operands[0].type.dtype == "f32" and n.result.type.dtype == "i32"]
    assert len(casts) == 2 * 2


@settings(max_examples=5, deadline=None, derandomize=True)
@given(hnp.arrays(np.int32, (N,), elements=st.integers(-LARGEST_X, LARGEST_X)),
       hnp.arrays(np.int32, (N,), elements=st.integers(1, 4096) | st.integers(-4096, -1)))
def test_random_int_division_matches_jax(int_bundle, plain, x, y):
    got, want = simulate(int_bundle, {"x0": x, "x1": y}), plain(divisions, x, y)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# ------------------------------------------------------------ floats, large numerators

def large_numerator_pairs(n, seed, largest=2.0 ** 40, smallest_divisor=2.0 ** -8):
    """On the grid, either sign: |a| log-uniform up to ``largest`` (a third of them from 2^22
    on, and the tiers' ends 2^21 and 2^39 themselves), |b| log-uniform on
    [smallest_divisor, 2^40], with |a/b| < 2^43 (div's quotients: below 2^44)."""
    rng = np.random.default_rng(seed)
    a = 2 ** rng.uniform(-6, np.log2(largest), 4 * n)
    a[: n] = 2 ** rng.uniform(min(22, np.log2(largest)), np.log2(largest), n)
    a[: 4] = np.minimum([2.0 ** 21, 2.0 ** 21 - ULP, 2.0 ** 39, 2.0 ** 40 + 2.0 ** 20], largest)
    b = 2 ** rng.uniform(np.log2(smallest_divisor), 40, 4 * n)
    keep = a / b < 2 ** 43
    a, b = a[keep][:n], b[keep][:n]
    signs = rng.choice([-1.0, 1.0], (2, len(a)))
    return on_grid(signs[0] * a), on_grid(signs[1] * b)


def assert_quotients(got, a, b):
    """|got - a/b| <= 1.5e-5 |a/b| + 2^-17 (1 + 1/(4|b|)) (approx.div's fixed-point bound)."""
    a, b, got = (np.asarray(v, np.float64) for v in (a, b, got))
    want = a / b
    bound = 1.5e-5 * np.abs(want) + 2.0 ** -17 * (1 + 1 / (4 * np.abs(b)))
    far = np.abs(got - want) > bound
    assert not far.any(), list(zip(a[far], b[far], got[far], want[far]))


def test_float_division_of_numerators_up_to_2_40(secure, plain):
    a, b = large_numerator_pairs(300, seed=4)
    got = np.asarray(secure(lambda x, y: x / y, a, b))
    assert_quotients(got, a, b)
    want = plain(lambda x, y: x / y, a, b)
    assert (np.abs(got - want) <= 1.5e-5 * np.abs(want) + 2.0 ** -17 * (1 + 1 / (4 * np.abs(b)))
            + 1e-7 * np.abs(want)).all()


def test_a_large_sum_divided_by_a_broadcast_count(secure):
    """A sum divided by counts: each divisor reduced once for a row of large numerators
    (|a| up to 2^40, divisors from 2^15 on)."""
    a, _ = large_numerator_pairs(64, seed=5)
    b = on_grid(np.float32([2.0 ** 15 + 3.0, -1234567.5, 2.0 ** 30]))
    got = np.asarray(secure(lambda x, y: x[None, :] / y[:, None], a, b))
    assert_quotients(got, np.broadcast_to(a, got.shape), np.broadcast_to(b[:, None], got.shape))


def _cluster(name):
    import mixc
    from conftest import REPO
    return mixc.init_device(str(REPO / "examples" / name))


def test_float_division_of_large_numerators_without_a_dealer(plain):
    """offline: he (OT-made triples and truncation): the same bound."""
    from conftest import run_secure
    a, b = large_numerator_pairs(48, seed=6)
    got = np.asarray(run_secure(_cluster("two_party_he.devices"), lambda x, y: x / y, a, b))
    assert_quotients(got, a, b)


def test_float_division_on_three_parties():
    """rep3's truncation is exact (TruncPr dealt by the third party): the dealer's ranges
    and bound on three parties, and x uniform in +-1e6 by y in [0.5, 100] (2000 elements,
    where the probabilistic share truncation gave about 32 wrong quotients), 0 wrong."""
    from conftest import run_secure
    cluster = _cluster("three_party.devices")
    a, b = large_numerator_pairs(300, seed=7)
    got = np.asarray(run_secure(cluster, lambda x, y: x / y, a, b))
    assert_quotients(got, a, b)
    rng = np.random.default_rng(0)
    a = on_grid(rng.uniform(-1e6, 1e6, 2000))
    b = on_grid(rng.uniform(0.5, 100, 2000))
    got = np.asarray(run_secure(cluster, lambda x, y: x / y, a, b))
    assert_quotients(got, a, b)
