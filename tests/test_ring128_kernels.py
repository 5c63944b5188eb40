"""The u128 GEMM (csrc/ring128.c mixc_r128_matmul, and the portable path without AVX-512
IFMA) against Python-int products (kernels_ref.r128_matmul).

The IFMA kernel's blocking: register tiles of 3 rows x 16 columns, K blocks of 256, row
blocks of 96, column blocks of 1024; its weight-2^52 lane sums stay exact while a K
block has at most 1365 terms. The sizes below cross each of these edges."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixc.ir.ops import U128
from mixc.runtime import kernels as K
from mixc.runtime import kernels_ref as R

MASK = (1 << 128) - 1


def _random(rng, shape):
    return rng.integers(0, 2**64, shape + (2,), dtype=np.uint64).view(U128).reshape(shape)


def _check(a, b, fn=K.r128_matmul):
    want = R.r128_matmul(K.r128_to_int(a), K.r128_to_int(b))
    np.testing.assert_array_equal(K.r128_to_int(fn(a, b)), want)


@pytest.mark.parametrize("m,k,n", [
    (1, 1, 1), (2, 3, 15), (3, 256, 16), (4, 257, 17), (97, 5, 33), (5, 513, 1),
    (7, 2, 1030), (1, 1400, 3),
])
def test_gemm_vs_ref(m, k, n):
    rng = np.random.default_rng(m * 7919 + k * 31 + n)
    _check(_random(rng, (m, k)), _random(rng, (k, n)))


def test_gemm_all_ones_carries():
    """Every limb at its maximum: the largest lane sums and every carry between the
    three limb weights and the two output words."""
    a = K.r128_from_int(np.full((4, 1400), MASK, dtype=object))
    b = K.r128_from_int(np.full((1400, 18), MASK, dtype=object))
    _check(a, b)
    edge = [0, 1, (1 << 52) - 1, 1 << 52, (1 << 64) - 1, 1 << 64, (1 << 104) - 1, 1 << 104,
            (1 << 127), MASK]
    grid = np.array([[edge[(i * 3 + j) % len(edge)] for j in range(300)] for i in range(5)],
                    dtype=object)
    _check(K.r128_from_int(grid), K.r128_from_int(grid.T[:, ::-1].copy()))


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 130, 5), (2, 0, 4)])
def test_portable_gemm_vs_ref(m, k, n):
    """The path for builds without IFMA, called directly so it is tested here too."""
    rng = np.random.default_rng(k)
    a, b = _random(rng, (m, k)), _random(rng, (k, n))
    _check(a, b, lambda x, y: K._r128_matmul_portable(x, y, np.empty((m, n), U128)))


def test_gemm_of_strided_operands_and_empty():
    rng = np.random.default_rng(1)
    big = _random(rng, (6, 40))
    _check(big[::2, 3:20], _random(rng, (17, 9)).T.copy().T)
    assert K.r128_matmul(_random(rng, (0, 3)), _random(rng, (3, 4))).shape == (0, 4)
    np.testing.assert_array_equal(K.r128_to_int(K.r128_matmul(_random(rng, (2, 0)),
                                                              _random(rng, (0, 3)))),
                                  np.zeros((2, 3), dtype=object))
    with pytest.raises(ValueError, match="cannot multiply"):
        K.r128_matmul(_random(rng, (2, 3)), _random(rng, (2, 3)))


@pytest.mark.parametrize("batch", [0, 1, 3])
def test_batched_dot_general_vs_ref(batch):
    """runtime.ringops.dot_general on U128: batch axis first in x, last in y."""
    from mixc.runtime import ringops
    rng = np.random.default_rng(batch)
    x, y = _random(rng, (batch, 4, 5)), _random(rng, (5, 2, batch))
    got = ringops.dot_general(x, y, (2,), (0,), (0,), (2,))
    assert got.shape == (batch, 4, 2)
    xi, yi = K.r128_to_int(x), K.r128_to_int(y)
    for i in range(batch):
        np.testing.assert_array_equal(K.r128_to_int(got[i]), R.r128_matmul(xi[i], yi[:, :, i]))


@settings(max_examples=60, deadline=None)
@given(exponents=st.lists(st.integers(-60, 86), min_size=1, max_size=20),
       signs=st.lists(st.sampled_from([-1.0, 1.0]), min_size=20, max_size=20),
       frac=st.sampled_from([18, 40, 48]))
def test_encode_decode_every_magnitude_vs_ref(exponents, signs, frac):
    """Values on both sides of 2^63 units (the kernels' int64 fast path and the int128
    conversion), exact powers of two at the edge, zeros; the encoding is exact."""
    x = np.array([s * 2.0 ** e * 1.37 for s, e in zip(signs, exponents)]
                 + [0.0, -0.0, 2.0 ** (63 - frac), -(2.0 ** (63 - frac)), 2.0 ** (62 - frac)])
    x = x[np.abs(x) * 2.0 ** frac < 2.0 ** 127]
    enc = K.r128_encode(x, frac)
    np.testing.assert_array_equal(K.r128_to_int(enc), R.r128_encode(x, frac))
    np.testing.assert_array_equal(K.r128_decode(enc, frac), R.r128_decode(R.r128_encode(x, frac),
                                                                           frac))


def test_ifma_and_portable_paths_agree_on_a_larger_product():
    """Beyond what Python ints check quickly: several row, column and K blocks at once."""
    rng = np.random.default_rng(3)
    a, b = _random(rng, (200, 700)), _random(rng, (700, 1100))
    fast = K.r128_matmul(a, b)
    slow = K._r128_matmul_portable(a, b, np.empty((200, 1100), U128))
    np.testing.assert_array_equal(K.r128_words(fast), K.r128_words(slow))
