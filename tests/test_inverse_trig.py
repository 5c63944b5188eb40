"""Inverse trigonometric, tan and hyperbolic functions on MPC (simulate, real protocols)
against float64 numpy and plain JAX.

Bounds are ``mixc.approx.ERROR_BOUNDS`` on each function's stated range (atan2 and tan:
their documented bounds), with the fixed-point allowance for relative bounds, plus one
unit 2^-18 per truncation of the last product. Inputs are party inputs on the 2^-18 grid,
so the reference is the function at the encoded input, as the bounds are stated. Outside
the ranges the functions saturate as ``mixc.approx`` documents (never NaN). Each test is
one secure program over many inputs.
"""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from mixc import approx

ULP = 2.0 ** -18
E12_HALF = math.exp(12) / 2
LOG_2_20 = 20 * math.log(2)
ATANH_AT_ONE = 9.5 * math.log(2)        # (log 2 + 18 log 2) / 2: atanh(1 - 2^-18)

UNARY = {
    "atan": (jnp.arctan, np.arctan), "asin": (jnp.arcsin, np.arcsin),
    "acos": (jnp.arccos, np.arccos), "sinh": (jnp.sinh, np.sinh), "cosh": (jnp.cosh, np.cosh),
    "asinh": (jnp.arcsinh, np.arcsinh), "acosh": (jnp.arccosh, np.arccosh),
    "atanh": (jnp.arctanh, np.arctanh),
}

# outside the stated ranges: (input, documented result)
SATURATED = {
    "atan": [(2.0 ** 20, math.atan(2.0 ** 20)), (-1e6, math.atan(-1e6))],
    "asin": [(1.0, math.pi / 2), (-1.0, -math.pi / 2), (1.5, math.pi / 2), (-1e4, -math.pi / 2)],
    "acos": [(1.0, 0.0), (-1.0, math.pi), (1.5, 0.0), (-1e4, math.pi)],
    "sinh": [(13.0, E12_HALF), (-1e4, -E12_HALF)],
    "cosh": [(-13.0, E12_HALF), (1e4, E12_HALF)],
    "asinh": [(2.0 ** 20, LOG_2_20), (-2.0 ** 21, -LOG_2_20)],
    "acosh": [(1.0, 0.0), (0.5, 0.0), (-7.0, 0.0), (2.0 ** 20, LOG_2_20)],
    "atanh": [(1.0, ATANH_AT_ONE), (-1.0, -ATANH_AT_ONE), (3.0, ATANH_AT_ONE),
              (-1e4, -ATANH_AT_ONE)],
}


def _encoded(x):
    return (np.round(np.asarray(x, np.float64) / ULP) * ULP).astype(np.float32)


def _in_range_inputs(name, rng):
    lo, hi, _, _ = approx.ERROR_BOUNDS[name]
    steep_ends = np.array([0, 1, 2, 3, 100, 4096]) * ULP    # next to +-1, where it is steep
    if name in ("asin", "acos", "atanh"):
        ends = 1 - steep_ends[1:] if name == "atanh" else 1 - steep_ends
        return np.concatenate([rng.uniform(-1, 1, 96), ends, -ends, [0.0]])
    if name == "acosh":
        return np.concatenate([np.exp(rng.uniform(0, math.log(hi), 96)), 1 + steep_ends[1:]])
    if name in ("sinh", "cosh"):
        return np.concatenate([rng.uniform(lo, hi, 96), [0.0, 1e-4, -1e-4, 2.0, -2.0]])
    far = np.geomspace(20, hi, 8)       # atan, asinh: dense where they bend, sparse beyond
    return np.concatenate([rng.uniform(-20, 20, 96), far, -far, [0.0]])


def _unary_inputs():
    rng = np.random.default_rng(11)
    inputs = {}
    for name in UNARY:
        outside = [x for x, _ in SATURATED[name]]
        inputs[name] = _encoded(np.concatenate([_in_range_inputs(name, rng), outside]))
    return inputs


@pytest.fixture(scope="module")
def unary_results(secure):
    """Every function of UNARY on its inputs, in one secure program."""
    inputs = _unary_inputs()
    names = sorted(UNARY)

    def f(*xs):
        return tuple(UNARY[name][0](x) for name, x in zip(names, xs))
    got = secure(f, *[inputs[name] for name in names])
    return {name: (inputs[name], np.asarray(g, np.float64)) for name, g in zip(names, got)}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_within_the_documented_bound_on_the_range(unary_results, plain, name):
    x, got = unary_results[name]
    lo, hi, _, _ = approx.ERROR_BOUNDS[name]
    inside = (x >= lo) & (x <= hi)
    x, got = x[inside], got[inside]
    exact = UNARY[name][1](x.astype(np.float64))
    bound = approx.allowed_error(name, exact, fixed_point=True) + 2 * ULP
    err = np.abs(got - exact)
    assert (err <= bound).all(), (name, float(err.max()), x[np.argmax(err - bound)])
    # and against plain JAX (float32) within the same bound plus its own rounding
    jax_values = np.asarray(plain(UNARY[name][0], x), np.float64)
    assert (np.abs(got - jax_values) <= bound + 2e-6 * np.abs(exact)).all()


@pytest.mark.parametrize("name", sorted(UNARY))
def test_saturates_outside_the_range_without_nan(unary_results, name):
    x, got = unary_results[name]
    assert np.isfinite(got).all()
    _, _, err, kind = approx.ERROR_BOUNDS[name]
    for value, expected in SATURATED[name]:
        at = np.flatnonzero(x == np.float32(value))
        tol = err * abs(expected) + approx.FIXED_POINT_ATOL if kind == "rel" else err + 2 * ULP
        assert at.size and (np.abs(got[at] - expected) <= tol).all(), (name, value, got[at])


ATAN2_ERROR = 2.5e-5


def _tan_bound(x):
    return (2.5e-5 + 2.0 ** -17 * np.abs(x)) * (1 + np.abs(np.tan(x))) / np.abs(np.cos(x))


def test_atan2_and_tan(secure, plain):
    rng = np.random.default_rng(12)
    angle = rng.uniform(-math.pi, math.pi, 160)
    radius = np.exp(rng.uniform(math.log(2.0 ** -12), math.log(2.0 ** 12), 160))
    axes = [(0.0, 0.0), (0.0, -2.0), (0.0, 5.0), (3.0, 0.0), (-3.0, 0.0), (-7.0, -7.0)]
    y = _encoded(np.concatenate([radius * np.sin(angle), [a for a, _ in axes]]))
    x = _encoded(np.concatenate([radius * np.cos(angle), [b for _, b in axes]]))
    poles = np.array([math.pi / 2, -math.pi / 2, 3 * math.pi / 2])
    z = _encoded(np.concatenate([rng.uniform(-10, 10, 160), poles, poles + 1e-3, poles - 1e-3]))

    def f(y, x, z):
        return (jnp.arctan2(y, x), jnp.arctan2(y, 1.0),
                jnp.arctan2(y[:8, None], x[None, :8]), jnp.tan(z))
    angles, over_one, grid, tangents = (np.asarray(v, np.float64) for v in secure(f, y, x, z))

    def angle_error(got, y, x):
        d = np.abs(got - np.arctan2(y.astype(np.float64), x))
        return np.minimum(d, 2 * np.pi - d)      # -pi and pi are the same angle

    assert (angle_error(angles, y, x) <= ATAN2_ERROR + 2 * ULP).all()
    assert angles[-6] == 0 and angles[-4] == 0           # atan2(0, 0) and atan2(0, 5)
    assert abs(angles[-5] - math.pi) <= ATAN2_ERROR      # atan2(0, -2) = pi, as JAX
    assert (angle_error(over_one, y, np.ones_like(x)) <= ATAN2_ERROR + 2 * ULP).all()
    assert (angle_error(grid, y[:8, None], x[None, :8]) <= ATAN2_ERROR + 2 * ULP).all()
    jax_angles = np.asarray(plain(jnp.arctan2, y, x), np.float64)
    d = np.abs(angles - jax_angles)
    assert (np.minimum(d, 2 * np.pi - d) <= ATAN2_ERROR + 4 * ULP).all()

    away = np.abs(np.cos(z.astype(np.float64))) >= 2.0 ** -8
    err = np.abs(tangents - np.tan(z.astype(np.float64)))
    assert (err[away] <= _tan_bound(z[away].astype(np.float64))).all()
    assert np.isfinite(tangents).all() and np.abs(tangents).max() <= 256 * (1 + 1e-4)
    assert np.abs(tangents[~away]).min() > 200       # |tan| > 1000 at the poles: cut at 256
    moderate = np.abs(z) <= 1.4
    np.testing.assert_allclose(tangents[moderate], plain(jnp.tan, z[moderate]),
                               atol=float(_tan_bound(1.4)))


def test_atan2_clamps_inputs_beyond_2_18(secure):
    y = np.array([2.0 ** 20, 1e6, -2.0 ** 19], np.float32)
    x = np.array([2.0 ** 19, -3.0, -2.0 ** 20], np.float32)
    got = secure(lambda y, x: jnp.arctan2(y, x), y, x)
    # the angles of (2^18, 2^18), (2^18, -3), (-2^18, -2^18)
    want = [math.pi / 4, math.atan2(2.0 ** 18, -3.0), -3 * math.pi / 4]
    np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=ATAN2_ERROR)


def test_known_values_are_computed_exactly_while_compiling(secure, plain):
    """On values known when compiling, each function is JAX's own (folded to a public
    constant): no approximation, no message but the revealed result."""
    def f(a):
        c = jnp.linspace(-0.9, 0.9, 8)
        return (a + jnp.arctan(c * 5) + jnp.arcsin(c) + jnp.arccos(c) + jnp.tan(c)
                + jnp.sinh(c) + jnp.cosh(c) + jnp.arcsinh(c) + jnp.arccosh(2 + c)
                + jnp.arctanh(c) + jnp.arctan2(c, c[::-1]))
    a = np.linspace(-1, 1, 8).astype(np.float32)
    got, bundle = secure(f, a, with_bundle=True)
    np.testing.assert_allclose(got, plain(f, a), atol=4 * ULP)
    assert bundle.text("alice").count("= recv(") == 1
