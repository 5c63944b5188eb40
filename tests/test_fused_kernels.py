"""Fused finish kernels (beaver_finish, and_finish, truncpr_finish) against the
numpy references, plus Python-int checks of the references and share-level
protocol checks."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mixc.runtime import kernels as K
from mixc.runtime import kernels_ref as R

MASK = (1 << 64) - 1
EDGE = [0, 1, 2, (1 << 63) - 1, 1 << 63, (1 << 63) + 1, MASK - 1, MASK]

u64_values = st.one_of(st.sampled_from(EDGE), st.integers(0, MASK))
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9)
SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def rand_u64(rng, shape):
    return rng.integers(0, 2**64, size=shape, dtype=np.uint64)


@st.composite
def u64_arrays(draw, k):
    shape = draw(shapes)
    return [draw(hnp.arrays(np.uint64, shape, elements=u64_values)) for _ in range(k)]


# --------------------------------------------------------------------------
# against the numpy references
# --------------------------------------------------------------------------

@SETTINGS
@given(u64_arrays(5), st.sampled_from([0, 1, True, False]))
def test_beaver_and_vs_ref(ops, first):
    for fk, fr in [(K.beaver_finish, R.beaver_finish), (K.and_finish, R.and_finish)]:
        got = fk(*ops, first)
        assert got.dtype == np.uint64 and got.shape == ops[0].shape
        np.testing.assert_array_equal(got, fr(*ops, first))


@SETTINGS
@given(u64_arrays(3), st.integers(1, 62), st.sampled_from([0, 1]))
def test_truncpr_vs_ref(ops, bits, first):
    got = K.truncpr_finish(*ops, bits, first)
    assert got.dtype == np.uint64 and got.shape == ops[0].shape
    np.testing.assert_array_equal(got, R.truncpr_finish(*ops, bits, first))


@pytest.mark.parametrize("shape", [(0,), (0, 5), (3, 0, 2), (), (1,), (7,), (4, 9), (17, 33),
                                   (1000,), (3, 5, 7)])
def test_fixed_shapes_all_kernels(shape):
    rng = np.random.default_rng(sum(shape) + 7 * len(shape))
    ops = [rand_u64(rng, shape) for _ in range(5)]
    for first in (0, 1):
        for fk, fr in [(K.beaver_finish, R.beaver_finish), (K.and_finish, R.and_finish)]:
            np.testing.assert_array_equal(fk(*ops, first), fr(*ops, first))
        for bits in (1, 12, 40, 62):
            np.testing.assert_array_equal(K.truncpr_finish(*ops[:3], bits, first),
                                          R.truncpr_finish(*ops[:3], bits, first))


def test_all_edge_combinations():
    """Every combination of edge values (8^5 for beaver/and, 8^3 x bits for truncpr)."""
    grid = np.array(np.meshgrid(*[np.array(EDGE, dtype=np.uint64)] * 5, indexing="ij"))
    ops = [np.ascontiguousarray(g.reshape(-1)) for g in grid]
    for first in (0, 1):
        np.testing.assert_array_equal(K.beaver_finish(*ops, first), R.beaver_finish(*ops, first))
        np.testing.assert_array_equal(K.and_finish(*ops, first), R.and_finish(*ops, first))
    grid3 = np.array(np.meshgrid(*[np.array(EDGE, dtype=np.uint64)] * 3, indexing="ij"))
    ops3 = [np.ascontiguousarray(g.reshape(-1)) for g in grid3]
    for bits in range(1, 63):
        for first in (0, 1):
            np.testing.assert_array_equal(K.truncpr_finish(*ops3, bits, first),
                                          R.truncpr_finish(*ops3, bits, first))


# --------------------------------------------------------------------------
# the references against Python ints (so kernel == ref == formula)
# --------------------------------------------------------------------------

def _py_beaver(c, e, f, a, b, first):
    return (c + e * b + f * a + (e * f if first else 0)) & MASK


def _py_and(c, e, f, a, b, first):
    return c ^ (e & b) ^ (f & a) ^ ((e & f) if first else 0)


def _py_truncpr(c, msb, low, bits, first):
    c_low = ((c << 1) & MASK) >> (bits + 1)
    c_msb = c >> 63
    t = msb - 2 * c_msb * msb + (c_msb if first else 0)
    y = (t << (63 - bits)) - low + ((c_low - (1 << (62 - bits))) if first else 0)
    return y & MASK


def test_refs_match_python_ints():
    rng = np.random.default_rng(11)
    vals = np.concatenate([np.array(EDGE, dtype=np.uint64), rand_u64(rng, 24)])
    ops = [rng.permutation(vals) for _ in range(5)]
    py = [[int(v) for v in o] for o in ops]
    for first in (0, 1):
        assert [int(v) for v in R.beaver_finish(*ops, first)] == \
            [_py_beaver(*t, first) for t in zip(*py)]
        assert [int(v) for v in R.and_finish(*ops, first)] == \
            [_py_and(*t, first) for t in zip(*py)]
        for bits in (1, 2, 13, 31, 61, 62):
            assert [int(v) for v in R.truncpr_finish(*ops[:3], bits, first)] == \
                [_py_truncpr(*t, bits, first) for t in zip(*py[:3])]
            assert [int(v) for v in K.truncpr_finish(*ops[:3], bits, first)] == \
                [_py_truncpr(*t, bits, first) for t in zip(*py[:3])]


# --------------------------------------------------------------------------
# share-level checks: the two parties' outputs reconstruct the right value
# --------------------------------------------------------------------------

def _share(rng, v):
    s0 = rand_u64(rng, v.shape)
    with np.errstate(over="ignore"):
        return s0, v - s0


def test_beaver_protocol_reconstructs_product():
    rng = np.random.default_rng(5)
    n = 4096
    x, y, a, b = (rand_u64(rng, n) for _ in range(4))
    with np.errstate(over="ignore"):
        c = a * b
        e, f = x - a, y - b
        want = x * y
    a0, a1 = _share(rng, a)
    b0, b1 = _share(rng, b)
    c0, c1 = _share(rng, c)
    z0 = K.beaver_finish(c0, e, f, a0, b0, 1)
    z1 = K.beaver_finish(c1, e, f, a1, b1, 0)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(z0 + z1, want)


def test_and_protocol_reconstructs_and():
    rng = np.random.default_rng(6)
    n = 4096
    x, y, a, b = (rand_u64(rng, n) for _ in range(4))
    c = a & b
    e, f = x ^ a, y ^ b
    rs = [rand_u64(rng, n) for _ in range(3)]
    z0 = K.and_finish(c ^ rs[0], e, f, a ^ rs[1], b ^ rs[2], 1)
    z1 = K.and_finish(rs[0], e, f, rs[1], rs[2], 0)
    np.testing.assert_array_equal(z0 ^ z1, x & y)


@pytest.mark.parametrize("bits", [1, 8, 13, 24, 40, 60])
def test_truncpr_protocol_is_probabilistic_truncation(bits):
    """Mask r, c = x + r + 2^62 opened, shares of r's top bit and of
    (r << 1) >> (bits + 1): the outputs sum to floor(x / 2^bits) or one more."""
    rng = np.random.default_rng(bits)
    n = 4096
    x = rng.integers(-(2**61), 2**61, size=n, dtype=np.int64)
    x[:4] = [-(2**61), 2**61 - 1, 0, -1]
    r = rand_u64(rng, n)
    with np.errstate(over="ignore"):
        c = x.view(np.uint64) + r + np.uint64(1 << 62)
    r_msb = r >> np.uint64(63)
    r_low = (r << np.uint64(1)) >> np.uint64(bits + 1)
    m0, m1 = _share(rng, r_msb)
    l0, l1 = _share(rng, r_low)
    y0 = K.truncpr_finish(c, m0, l0, bits, 1)
    y1 = K.truncpr_finish(c, m1, l1, bits, 0)
    with np.errstate(over="ignore"):
        got = (y0 + y1).view(np.int64)
    diff = got - (x >> np.int64(bits))
    assert set(np.unique(diff).tolist()) <= {0, 1}


# --------------------------------------------------------------------------
# out=, aliasing, non-contiguous inputs, validation
# --------------------------------------------------------------------------

def test_out_and_inplace_every_operand():
    rng = np.random.default_rng(8)
    shape = (37, 29)
    ops = [rand_u64(rng, shape) for _ in range(5)]
    for fk, fr, k, extra in [(K.beaver_finish, R.beaver_finish, 5, ()),
                             (K.and_finish, R.and_finish, 5, ()),
                             (K.truncpr_finish, R.truncpr_finish, 3, (17,))]:
        for first in (0, 1):
            want = fr(*ops[:k], *extra, first)
            out = np.empty(shape, dtype=np.uint64)
            assert fk(*ops[:k], *extra, first, out=out) is out
            np.testing.assert_array_equal(out, want)
            for j in range(k):
                cp = [o.copy() for o in ops[:k]]
                assert fk(*cp, *extra, first, out=cp[j]) is cp[j]
                np.testing.assert_array_equal(cp[j], want)
            # the same array passed as several operands, and as out
            s = ops[0].copy()
            want_same = fr(*([ops[0]] * k), *extra, first)
            np.testing.assert_array_equal(fk(*([s] * k), *extra, first, out=s), want_same)


def test_noncontiguous_inputs_are_copied():
    rng = np.random.default_rng(9)
    big = [rand_u64(rng, (40, 30)) for _ in range(5)]
    rows = rand_u64(rng, (60, 40))
    ops = [big[0].T, big[1][:, ::-1].T, rows[::2], np.asfortranarray(big[3].T), big[4].T.copy()]
    assert not any(o.flags.c_contiguous for o in ops[:4])
    for first in (0, 1):
        np.testing.assert_array_equal(K.beaver_finish(*ops, first), R.beaver_finish(*ops, first))
        np.testing.assert_array_equal(K.and_finish(*ops, first), R.and_finish(*ops, first))
        np.testing.assert_array_equal(K.truncpr_finish(*ops[:3], 20, first),
                                      R.truncpr_finish(*ops[:3], 20, first))


def test_validation():
    a = np.zeros((2, 3), dtype=np.uint64)
    for fk, k in [(K.beaver_finish, 5), (K.and_finish, 5)]:
        with pytest.raises(ValueError, match="uint64"):
            fk(*([a] * (k - 1)), a.astype(np.int64), 0)
        with pytest.raises(ValueError, match="uint64"):
            fk([[0, 0, 0], [0, 0, 0]], *([a] * (k - 1)), 1)
        with pytest.raises(ValueError, match="shape mismatch"):
            fk(*([a] * (k - 1)), a.reshape(3, 2), 0)
        with pytest.raises(ValueError, match="shape mismatch"):
            fk(*([a] * (k - 1)), a.reshape(-1), 0)
        for bad_first in (2, -1, 0.0, None, "1"):
            with pytest.raises(ValueError, match="first"):
                fk(*([a] * k), bad_first)
        with pytest.raises(ValueError, match="shape"):
            fk(*([a] * k), 0, out=np.zeros(6, dtype=np.uint64))
        with pytest.raises(ValueError, match="dtype"):
            fk(*([a] * k), 0, out=np.zeros((2, 3), dtype=np.int64))
        with pytest.raises(ValueError, match="contiguous"):
            fk(*([a] * k), 0, out=np.zeros((2, 6), dtype=np.uint64)[:, ::2])
        ro = np.zeros((2, 3), dtype=np.uint64)
        ro.flags.writeable = False
        with pytest.raises(ValueError, match="read-only"):
            fk(*([a] * k), 0, out=ro)
        big = np.zeros(8, dtype=np.uint64)
        with pytest.raises(ValueError, match="overlap"):
            fk(*([big[:4]] * k), 1, out=big[1:5])
    for bad_bits in (0, 63, 64, -1, 1.0, None, True):
        with pytest.raises(ValueError, match="bits"):
            K.truncpr_finish(a, a, a, bad_bits, 0)
    with pytest.raises(ValueError, match="first"):
        K.truncpr_finish(a, a, a, 5, 3)
    with pytest.raises(ValueError, match="shape mismatch"):
        K.truncpr_finish(a, a, a.reshape(3, 2), 5, 0)
    with pytest.raises(ValueError, match="uint64"):
        K.truncpr_finish(a, a.view(np.int64), a, 5, 0)
    # numpy integer scalars are accepted for first / bits
    np.testing.assert_array_equal(K.truncpr_finish(a, a, a, np.int64(5), np.int8(1)),
                                  R.truncpr_finish(a, a, a, 5, 1))
