"""Packed-bit and boolean C kernels (mixc.runtime.kernels) against kernels_ref."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mixc.runtime import kernels as K
from mixc.runtime import kernels_ref as R

MASK = (1 << 64) - 1
EDGE = [0, 1, 2, 0x5555555555555555, 0xAAAAAAAAAAAAAAAA, (1 << 63) - 1, 1 << 63,
        0xFFFFFFFF, 0xFFFFFFFF00000000, MASK - 1, MASK]

u64_values = st.one_of(st.sampled_from(EDGE), st.integers(0, MASK))
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def rand_u64(rng, shape):
    return rng.integers(0, 2**64, size=shape, dtype=np.uint64)


@st.composite
def word_arrays(draw, max_words=80):
    """1-D uint64 arrays; sizes up to 80 words cover the 16-word vector loop,
    its scalar tail and odd word counts.  Some are constant (all ones, ...)."""
    n = draw(st.integers(0, max_words))
    if draw(st.booleans()):
        return np.full(n, draw(st.sampled_from(EDGE)), dtype=np.uint64)
    return draw(hnp.arrays(np.uint64, (n,), elements=u64_values))


@st.composite
def words_and_n(draw):
    w = draw(word_arrays())
    n = draw(st.integers(0, 64 * w.size))
    return w, n


# --------------------------------------------------------------------------
# unzip
# --------------------------------------------------------------------------

@SETTINGS
@given(word_arrays())
def test_unzip_vs_ref(w):
    even, odd = K.bits_unzip(w)
    m = (w.size + 1) // 2
    assert even.dtype == odd.dtype == np.uint64 and even.shape == odd.shape == (m,)
    re, ro = R.bits_unzip(w)
    np.testing.assert_array_equal(even, re)
    np.testing.assert_array_equal(odd, ro)


@SETTINGS
@given(word_arrays())
def test_unzip_interleave_reproduces_stream(w):
    nbits = 64 * w.size
    even, odd = K.bits_unzip(w)
    stream = K.bits_unpack(w, nbits)
    e = K.bits_unpack(even, 64 * even.size)
    o = K.bits_unpack(odd, 64 * odd.size)
    inter = np.empty(nbits, dtype=np.uint64)
    inter[0::2] = e[: nbits // 2]
    inter[1::2] = o[: nbits // 2]
    np.testing.assert_array_equal(inter, stream)
    # odd word count: the missing half word is zero
    assert not e[nbits // 2:].any() and not o[nbits // 2:].any()


def test_unzip_values():
    ones = np.full(5, MASK, dtype=np.uint64)
    even, odd = K.bits_unzip(ones)
    assert [int(v) for v in even] == [MASK, MASK, 0xFFFFFFFF]
    assert [int(v) for v in odd] == [MASK, MASK, 0xFFFFFFFF]
    alt = np.full(4, 0xAAAAAAAAAAAAAAAA, dtype=np.uint64)  # odd stream bits set
    even, odd = K.bits_unzip(alt)
    assert not even.any() and [int(v) for v in odd] == [MASK, MASK]
    even, odd = K.bits_unzip(np.array([0b0110], dtype=np.uint64))  # bits 1, 2
    assert [int(even[0]), int(odd[0])] == [0b10, 0b1]
    e0, o0 = K.bits_unzip(np.zeros(0, dtype=np.uint64))
    assert e0.shape == o0.shape == (0,)


def test_unzip_large_and_out():
    rng = np.random.default_rng(11)
    w = rand_u64(rng, 100_003)
    re, ro = R.bits_unzip(w)
    even, odd = np.empty(50_002, np.uint64), np.empty(50_002, np.uint64)
    got = K.bits_unzip(w, out=(even, odd))
    assert got[0] is even and got[1] is odd
    np.testing.assert_array_equal(even, re)
    np.testing.assert_array_equal(odd, ro)
    # non-contiguous input is copied
    np.testing.assert_array_equal(K.bits_unzip(w[::3])[1], R.bits_unzip(w[::3])[1])


def test_unzip_carry_tree_levels():
    """Repeated unzips (as in the log-depth carry tree) pick bits 2^l * j + r."""
    rng = np.random.default_rng(12)
    w = rand_u64(rng, 64)
    stream = R.stream_bits(w)
    cur = {0: w}
    for level in range(1, 7):
        nxt = {}
        for r, words in cur.items():
            e, o = K.bits_unzip(words)
            nxt[r], nxt[r + (1 << (level - 1))] = e, o
        cur = nxt
        step = 1 << level
        for r, words in cur.items():
            np.testing.assert_array_equal(R.stream_bits(words)[: stream.size // step],
                                          stream[r::step])


# --------------------------------------------------------------------------
# pack / unpack
# --------------------------------------------------------------------------

bit_shapes = hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=150)


@SETTINGS
@given(st.sampled_from([np.uint64, np.uint8, np.bool_]), bit_shapes, st.data())
def test_pack_vs_ref_and_roundtrip(dtype, shape, data):
    elems = u64_values if dtype is np.uint64 else None
    bits = data.draw(hnp.arrays(dtype, shape, elements=elems))
    n = bits.size
    words = K.bits_pack(bits)
    assert words.dtype == np.uint64 and words.shape == ((n + 63) // 64,)
    np.testing.assert_array_equal(words, R.bits_pack(bits))
    # unpack . pack = (bit 0 of each element); padding bits are zero
    lsb = (bits.reshape(-1).astype(np.uint64) & np.uint64(1))
    np.testing.assert_array_equal(K.bits_unpack(words, n), lsb)
    assert not K.bits_unpack(words, 64 * words.size)[n:].any()


@SETTINGS
@given(words_and_n())
def test_unpack_vs_ref_and_repack(wn):
    w, n = wn
    got = K.bits_unpack(w, n)
    assert got.dtype == np.uint64 and got.shape == (n,)
    np.testing.assert_array_equal(got, R.bits_unpack(w, n))
    # pack . unpack = the first n stream bits, zero padded
    nw = (n + 63) // 64
    want = w[:nw].copy()
    if n % 64:
        want[-1] &= np.uint64((1 << (n % 64)) - 1)
    np.testing.assert_array_equal(K.bits_pack(got), want)


def test_pack_unpack_values_and_out():
    bits = np.zeros(130, dtype=np.uint64)
    bits[[0, 63, 64, 129]] = 1
    bits[5] = 2  # only bit 0 counts
    bits[6] = MASK
    words = K.bits_pack(bits)
    assert [int(v) for v in words] == [(1 << 63) | (1 << 6) | 1, 1, 2]
    np.testing.assert_array_equal(K.bits_pack(bits.astype(np.uint8)), words)
    np.testing.assert_array_equal(K.bits_pack(bits & np.uint64(1) == 1), words)
    out = np.empty(130, np.uint64)
    assert K.bits_unpack(words, 130, out=out) is out
    np.testing.assert_array_equal(out, bits & np.uint64(1))
    pk = np.empty(3, np.uint64)
    assert K.bits_pack(out, out=pk) is pk
    np.testing.assert_array_equal(pk, words)
    # all ones / empty
    np.testing.assert_array_equal(K.bits_pack(np.ones(200, np.uint8)),
                                  np.array([MASK, MASK, MASK, 0xFF], np.uint64))
    assert K.bits_pack(np.zeros(0, np.uint64)).shape == (0,)
    assert K.bits_unpack(np.zeros(0, np.uint64), 0).shape == (0,)
    # extra words are ignored
    np.testing.assert_array_equal(K.bits_unpack(np.full(4, MASK, np.uint64), 70), np.ones(70, np.uint64))


def test_pack_unpack_large():
    rng = np.random.default_rng(13)
    n = 100_037
    bits = rng.integers(0, 2, size=n, dtype=np.uint64)
    words = K.bits_pack(bits)
    np.testing.assert_array_equal(words, R.bits_pack(bits))
    np.testing.assert_array_equal(K.bits_pack(bits.astype(bool)), words)
    np.testing.assert_array_equal(K.bits_unpack(words, n), bits)
    np.testing.assert_array_equal(K.bits_pack(bits[::2]), R.bits_pack(bits[::2]))  # strided


# --------------------------------------------------------------------------
# xor / and / not / popcount
# --------------------------------------------------------------------------

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9)


@st.composite
def u64_pair(draw):
    shape = draw(shapes)
    a = draw(hnp.arrays(np.uint64, shape, elements=u64_values))
    b = draw(hnp.arrays(np.uint64, shape, elements=u64_values))
    return a, b


@SETTINGS
@given(u64_pair(), st.one_of(u64_values, st.integers(-5, -1)))
def test_boolean_ops_vs_ref(ab, s):
    a, b = ab
    for fk, fr in [(K.ring_xor, R.ring_xor), (K.ring_and, R.ring_and)]:
        got = fk(a, b)
        assert got.dtype == np.uint64 and got.shape == a.shape
        np.testing.assert_array_equal(got, fr(a, b))
        np.testing.assert_array_equal(fk(a, s), fr(a, s))
    np.testing.assert_array_equal(K.ring_not(a), R.ring_not(a))
    pc = K.popcount(a)
    assert pc.dtype == np.uint64 and pc.shape == a.shape
    np.testing.assert_array_equal(pc, R.popcount(a))
    assert [int(v) for v in pc.reshape(-1)] == [bin(int(v)).count("1") for v in a.reshape(-1)]


def test_boolean_ops_semantics_inplace():
    a = np.array(EDGE, dtype=np.uint64)
    b = np.array(EDGE[::-1], dtype=np.uint64)
    assert [int(v) for v in K.ring_and(a, -1)] == [int(x) for x in a]
    assert [int(v) for v in K.ring_xor(a, -1)] == [int(x) ^ MASK for x in a]
    np.testing.assert_array_equal(K.ring_xor(a, -1), K.ring_not(a))
    c = a.copy()
    assert K.ring_xor(c, b, out=c) is c
    np.testing.assert_array_equal(c, a ^ b)
    assert K.ring_and(c, c, out=c) is c
    assert K.ring_not(c, out=c) is c
    np.testing.assert_array_equal(c, ~(a ^ b))
    rng = np.random.default_rng(14)
    x, y = rand_u64(rng, (300, 7)), rand_u64(rng, (300, 7))
    np.testing.assert_array_equal(K.ring_and(x.T, y.T), x.T & y.T)
    assert int(K.popcount(np.array([MASK], np.uint64))[0]) == 64


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------

def test_bit_kernels_validation():
    w = np.zeros(4, dtype=np.uint64)
    with pytest.raises(ValueError, match="uint64"):
        K.bits_unzip(np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="1-D"):
        K.bits_unzip(np.zeros((2, 2), np.uint64))
    with pytest.raises(ValueError, match="tuple"):
        K.bits_unzip(w, out=np.zeros(2, np.uint64))
    with pytest.raises(ValueError, match="shape"):
        K.bits_unzip(w, out=(np.zeros(3, np.uint64), np.zeros(2, np.uint64)))
    big = np.zeros(8, np.uint64)
    with pytest.raises(ValueError, match="overlap"):
        K.bits_unzip(big[:4], out=(big[:2], np.zeros(2, np.uint64)))
    with pytest.raises(ValueError, match="overlap"):
        K.bits_unzip(w, out=(big[:2], big[1:3]))
    with pytest.raises(ValueError, match="dtype"):
        K.bits_pack(np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="dtype"):
        K.bits_pack([1, 0, 1])
    with pytest.raises(ValueError, match="shape"):
        K.bits_pack(np.zeros(65, np.uint8), out=np.zeros(1, np.uint64))
    with pytest.raises(ValueError, match="words"):
        K.bits_unpack(w, 257)
    with pytest.raises(ValueError, match="n must"):
        K.bits_unpack(w, -1)
    with pytest.raises(ValueError, match="n must"):
        K.bits_unpack(w, 3.0)
    with pytest.raises(ValueError, match="1-D"):
        K.bits_unpack(np.zeros((1, 1), np.uint64), 1)
    with pytest.raises(ValueError, match="overlap"):
        K.bits_unpack(big, 4, out=big[2:6])
    with pytest.raises(ValueError, match="uint64"):
        K.ring_xor(w, np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="shape mismatch"):
        K.ring_and(w, np.zeros(5, np.uint64))
    with pytest.raises(ValueError, match="contiguous"):
        K.ring_not(w, out=np.zeros(8, np.uint64)[::2])
    with pytest.raises(ValueError, match="uint64"):
        K.popcount(np.zeros(3, np.int32))
