"""C kernels (mixc.runtime.kernels) against the numpy references (kernels_ref)."""

import threading

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
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def rand_u64(rng, shape):
    return rng.integers(0, 2**64, size=shape, dtype=np.uint64, endpoint=False)


@st.composite
def u64_pair(draw):
    shape = draw(shapes)
    a = draw(hnp.arrays(np.uint64, shape, elements=u64_values))
    b = draw(hnp.arrays(np.uint64, shape, elements=u64_values))
    return a, b


# --------------------------------------------------------------------------
# elementwise
# --------------------------------------------------------------------------

@SETTINGS
@given(u64_pair())
def test_elementwise_vs_ref(ab):
    a, b = ab
    for fk, fr in [(K.ring_add, R.ring_add), (K.ring_sub, R.ring_sub), (K.ring_mul, R.ring_mul)]:
        got = fk(a, b)
        assert got.dtype == np.uint64 and got.shape == a.shape
        np.testing.assert_array_equal(got, fr(a, b))
    np.testing.assert_array_equal(K.ring_neg(a), R.ring_neg(a))


@SETTINGS
@given(u64_pair(), u64_values)
def test_elementwise_scalar_vs_ref(ab, s):
    a, _ = ab
    np.testing.assert_array_equal(K.ring_mul(a, s), R.ring_mul(a, s))
    np.testing.assert_array_equal(K.ring_add(a, s), R.ring_add(a, s))
    np.testing.assert_array_equal(K.ring_sub(a, s), R.ring_sub(a, s))


def test_elementwise_python_int_semantics():
    a = np.array(EDGE, dtype=np.uint64)
    b = np.array(EDGE[::-1], dtype=np.uint64)
    for fk, op in [(K.ring_add, lambda x, y: x + y), (K.ring_sub, lambda x, y: x - y),
                   (K.ring_mul, lambda x, y: x * y)]:
        want = [op(int(x), int(y)) & MASK for x, y in zip(a, b)]
        assert [int(v) for v in fk(a, b)] == want
    assert [int(v) for v in K.ring_neg(a)] == [(-int(x)) & MASK for x in a]
    # negative python scalars wrap mod 2^64
    assert [int(v) for v in K.ring_mul(a, -3)] == [(-3 * int(x)) & MASK for x in a]
    assert [int(v) for v in K.ring_sub(a, -1)] == [(int(x) + 1) & MASK for x in a]


def test_elementwise_large_and_inplace_and_noncontiguous():
    rng = np.random.default_rng(1)
    a = rand_u64(rng, (1000, 37))
    b = rand_u64(rng, (1000, 37))
    np.testing.assert_array_equal(K.ring_mul(a, b), R.ring_mul(a, b))
    # non-contiguous inputs are copied
    np.testing.assert_array_equal(K.ring_add(a.T, b.T), R.ring_add(a.T, b.T))
    np.testing.assert_array_equal(K.ring_sub(a[::2], b[1::2]), R.ring_sub(a[::2], b[1::2]))
    # in place
    want = R.ring_add(a, b)
    c = a.copy()
    assert K.ring_add(c, b, out=c) is c
    np.testing.assert_array_equal(c, want)
    # out=
    out = np.empty_like(a)
    assert K.ring_neg(a, out=out) is out
    np.testing.assert_array_equal(out, R.ring_neg(a))


def test_elementwise_validation():
    a = np.zeros(4, dtype=np.uint64)
    with pytest.raises(ValueError, match="uint64"):
        K.ring_add(a, np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="uint64"):
        K.ring_add([1, 2], a[:2])
    with pytest.raises(ValueError, match="shape mismatch"):
        K.ring_mul(a, np.zeros(5, dtype=np.uint64))
    with pytest.raises(ValueError, match="shape"):
        K.ring_add(a, a, out=np.zeros(3, dtype=np.uint64))
    with pytest.raises(ValueError, match="dtype"):
        K.ring_add(a, a, out=np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="contiguous"):
        K.ring_add(a, a, out=np.zeros(8, dtype=np.uint64)[::2])
    big = np.zeros(8, dtype=np.uint64)
    with pytest.raises(ValueError, match="overlap"):
        K.ring_add(big[:4], big[:4], out=big[1:5])
    ro = np.zeros(4, dtype=np.uint64)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        K.ring_add(a, a, out=ro)


# --------------------------------------------------------------------------
# matmul
# --------------------------------------------------------------------------

def test_matmul_limb_reference_matches_pyint():
    rng = np.random.default_rng(2)
    for (m, k, n) in [(1, 1, 1), (3, 5, 7), (4, 9, 2)]:
        a, b = rand_u64(rng, (m, k)), rand_u64(rng, (k, n))
        np.testing.assert_array_equal(R.matmul_limbs(a, b), R.matmul_pyint(a, b))


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 5, 7), (65, 130, 33), (12, 16, 16),
                                   (13, 17, 15), (1, 1000, 1), (200, 3, 1), (25, 385, 40),
                                   (97, 400, 50), (5, 400, 2100)])
def test_matmul_shapes(m, k, n):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a, b = rand_u64(rng, (m, k)), rand_u64(rng, (k, n))
    want = R.matmul_limbs(a, b)
    np.testing.assert_array_equal(K.ring_matmul(a, b), want)
    if m * k * n <= 50000:
        np.testing.assert_array_equal(want, R.matmul_pyint(a, b))


def test_matmul_256_cube_and_accumulate():
    rng = np.random.default_rng(3)
    a, b, c0 = rand_u64(rng, (256, 256)), rand_u64(rng, (256, 256)), rand_u64(rng, (256, 256))
    want = R.matmul_limbs(a, b)
    np.testing.assert_array_equal(K.ring_matmul(a, b), want)
    c = c0.copy()
    assert K.ring_matmul(a, b, out=c, accumulate=True) is c
    np.testing.assert_array_equal(c, R.ring_add(c0, want))
    # fuse two terms: c = a.b + b.a
    c = np.empty_like(c0)
    K.ring_matmul(a, b, out=c)
    K.ring_matmul(b, a, out=c, accumulate=True)
    np.testing.assert_array_equal(c, R.ring_add(want, R.matmul_limbs(b, a)))


def test_matmul_edge_values():
    vals = np.array(EDGE, dtype=np.uint64)
    a = np.resize(vals, (8, 8))
    b = np.resize(vals[::-1], (8, 8)).T.copy()
    np.testing.assert_array_equal(K.ring_matmul(a, b), R.matmul_pyint(a, b))
    a = np.full((40, 300), MASK, dtype=np.uint64)
    b = np.full((300, 20), 1 << 63, dtype=np.uint64)
    np.testing.assert_array_equal(K.ring_matmul(a, b), R.matmul_pyint(a, b))


@SETTINGS
@given(st.integers(0, 30), st.integers(0, 30), st.integers(0, 30), st.integers(0, 2**32))
def test_matmul_random_shapes(m, k, n, seed):
    rng = np.random.default_rng(seed)
    a, b = rand_u64(rng, (m, k)), rand_u64(rng, (k, n))
    got = K.ring_matmul(a, b)
    assert got.shape == (m, n)
    np.testing.assert_array_equal(got, R.matmul_pyint(a, b) if k else np.zeros((m, n), np.uint64))


def test_matmul_views_and_strided_out():
    rng = np.random.default_rng(4)
    big_a = rand_u64(rng, (80, 90))
    big_b = rand_u64(rng, (70, 60))
    a = big_a[5:45, 3:53]          # row-strided view
    b = big_b[::-1][10:60, 7:37]   # negative row stride -> copied
    bt = rand_u64(rng, (30, 50)).T  # transposed -> copied
    want = R.matmul_limbs(a, b)
    np.testing.assert_array_equal(K.ring_matmul(a, b), want)
    np.testing.assert_array_equal(K.ring_matmul(a, bt), R.matmul_limbs(a, bt))
    big_c = rand_u64(rng, (60, 50))
    before = big_c.copy()
    out = big_c[10:50, 5:35]
    K.ring_matmul(a, b, out=out)
    np.testing.assert_array_equal(big_c[10:50, 5:35], want)
    mask = np.ones(big_c.shape, bool)
    mask[10:50, 5:35] = False
    np.testing.assert_array_equal(big_c[mask], before[mask])  # nothing else touched
    K.ring_matmul(a, b, out=out, accumulate=True)
    np.testing.assert_array_equal(big_c[10:50, 5:35], R.ring_add(want, want))


def test_matmul_validation():
    a = np.zeros((3, 4), dtype=np.uint64)
    b = np.zeros((4, 5), dtype=np.uint64)
    with pytest.raises(ValueError, match="inner"):
        K.ring_matmul(a, a)
    with pytest.raises(ValueError, match="2-D"):
        K.ring_matmul(a[0], b)
    with pytest.raises(ValueError, match="uint64"):
        K.ring_matmul(a.astype(np.int64), b)
    with pytest.raises(ValueError, match="accumulate"):
        K.ring_matmul(a, b, accumulate=True)
    with pytest.raises(ValueError, match="shape"):
        K.ring_matmul(a, b, out=np.zeros((3, 4), dtype=np.uint64))
    with pytest.raises(ValueError, match="overlap"):
        sq = np.zeros((4, 4), dtype=np.uint64)
        K.ring_matmul(sq, sq, out=sq)
    # K == 0: product of empty inner dimension is zero (or unchanged with accumulate)
    z = K.ring_matmul(np.zeros((2, 0), np.uint64), np.zeros((0, 3), np.uint64))
    np.testing.assert_array_equal(z, np.zeros((2, 3), np.uint64))


def test_matmul_threads():
    """Kernels are reentrant: concurrent calls from threads give right answers."""
    rng = np.random.default_rng(5)
    jobs = [(rand_u64(rng, (70, 90)), rand_u64(rng, (90, 40))) for _ in range(4)]
    wants = [R.matmul_limbs(a, b) for a, b in jobs]
    results = [None] * len(jobs)

    def run(i):
        for _ in range(5):
            results[i] = K.ring_matmul(*jobs[i])

    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for got, want in zip(results, wants):
        np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------
# fixed point and shifts
# --------------------------------------------------------------------------

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(hnp.arrays(np.float64, shapes, elements=finite), st.integers(0, 40))
def test_encode_decode_roundtrip(x, f):
    u = K.encode_fixed(x, f)
    assert u.dtype == np.uint64 and u.shape == x.shape
    np.testing.assert_array_equal(u, R.encode_fixed(x, f))
    y = K.decode_fixed(u, f)
    np.testing.assert_array_equal(y, R.decode_fixed(u, f))
    assert np.all(np.abs(y - x) <= 2.0 ** -f / 2 + 1e-9 * np.abs(x))


def test_encode_fixed_values():
    f = 16
    x = np.array([0.0, 1.0, -1.0, 0.5 / 2**f, 1.5 / 2**f, -0.5 / 2**f, 3.25, -2.0**46, 2.0**46])
    u = K.encode_fixed(x, f)
    want = [0, 1 << 16, (-(1 << 16)) & MASK, 0, 2, 0, int(3.25 * 2**16),
            (-(1 << 62)) & MASK, 1 << 62]
    assert [int(v) for v in u] == want
    # integer and list inputs are accepted and converted to float64
    np.testing.assert_array_equal(K.encode_fixed([1, -2], 8), K.encode_fixed(np.array([1.0, -2.0]), 8))
    assert K.encode_fixed(-(2.0**47), 16) == np.uint64(1 << 63)  # exactly -2^63 fits


def test_encode_fixed_errors():
    for bad in [np.nan, np.inf, -np.inf, 2.0**47, -(2.0**47) - 1.0]:
        with pytest.raises(ValueError, match="out of range"):
            K.encode_fixed(np.array([0.0, bad]), 16)
    with pytest.raises(ValueError, match="frac_bits"):
        K.encode_fixed([1.0], 64)
    with pytest.raises(ValueError, match="frac_bits"):
        K.decode_fixed(np.zeros(1, np.uint64), -1)
    with pytest.raises(ValueError, match="dtype"):
        K.encode_fixed(np.array(["a"]), 8)


@SETTINGS
@given(hnp.arrays(np.uint64, shapes, elements=u64_values), st.integers(0, 63))
def test_shifts_vs_ref(u, s):
    np.testing.assert_array_equal(K.arshift(u, s), R.arshift(u, s))
    np.testing.assert_array_equal(K.lrshift(u, s), R.lrshift(u, s))
    # python-int semantics
    flat = u.reshape(-1)
    signed = [int(v) - (1 << 64) if int(v) >> 63 else int(v) for v in flat]
    assert [int(v) for v in K.arshift(flat, s)] == [(v >> s) & MASK for v in signed]


def test_arshift_inplace_and_truncation():
    x = np.array([-3.75, 3.75, -0.001, 1000.5])
    f = 12
    u = K.encode_fixed(x, f)
    prod = K.ring_mul(u, K.encode_fixed(np.full(4, 2.0), f))  # scale 2^(2f)
    assert K.arshift(prod, f, out=prod) is prod
    np.testing.assert_allclose(K.decode_fixed(prod, f), 2 * x, atol=2.0**-f)
    with pytest.raises(ValueError, match="bits"):
        K.arshift(prod, 64)


# --------------------------------------------------------------------------
# ChaCha20 PRG
# --------------------------------------------------------------------------

RFC_KEY = bytes(range(32))
# RFC 8439 2.3.2: counter = 1, nonce = 00:00:00:09:00:00:00:4a:00:00:00:00.
# In the 64-bit counter / 64-bit stream layout: state word 13 = 0x09000000
# and word 14 = 0x4a000000.
RFC_COUNTER = 1 | (0x09000000 << 32)
RFC_STREAM = 0x4A000000
RFC_BLOCK = [
    0xE4E7F110, 0x15593BD1, 0x1FDD0F50, 0xC47120A3,
    0xC7F4D1C7, 0x0368C033, 0x9AAA2204, 0x4E6CD4C3,
    0x466482D2, 0x09AA9F07, 0x05D7C214, 0xA2028BD9,
    0xD19C12B5, 0xB94E16DE, 0xE883D0CB, 0x4E3C50A2,
]
RFC_SERIALIZED = bytes.fromhex(
    "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
    "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"
)


def test_chacha20_rfc8439_block():
    out = K.ffi.new("uint32_t[16]")
    K.lib.mixc_chacha20_block(K.ffi.from_buffer("uint8_t[]", RFC_KEY), RFC_STREAM, RFC_COUNTER, out)
    assert list(out) == RFC_BLOCK
    assert [int(v) for v in R.chacha20_block(RFC_KEY, RFC_STREAM, RFC_COUNTER)] == RFC_BLOCK
    words = K.prg_fill(RFC_KEY, RFC_STREAM, RFC_COUNTER, np.empty(8, np.uint64))
    assert words.astype("<u8").tobytes() == RFC_SERIALIZED


def test_chacha20_rfc8439_keystream_2_4_2():
    # RFC 8439 2.4.2: first keystream block (counter 1) of the encryption example,
    # key 00..1f, nonce 00:00:00:00:00:00:00:4a:00:00:00:00; plaintext starts
    # "Ladies and Gentlemen" and ciphertext with 6e 2e 35 9a 25 68 f9 80.
    pt = b"Ladies and Gentlemen of the class of '99: If I could offer you o"
    ct_prefix = bytes.fromhex("6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b")
    ks = K.prg_fill(RFC_KEY, 0x4A000000, 1, np.empty(8, np.uint64)).astype("<u8").tobytes()
    ct = bytes(p ^ k for p, k in zip(pt, ks))
    assert ct[:32] == ct_prefix


@SETTINGS
@given(st.integers(0, MASK), st.integers(0, MASK), st.integers(0, 7), st.integers(0, 300))
def test_prg_fill_vs_ref(stream, counter, skip, n):
    key = bytes((7 * i + stream) % 256 for i in range(32))
    got = K.prg_fill(key, stream, counter, np.empty(n, np.uint64), skip=skip)
    np.testing.assert_array_equal(got, R.prg_words(key, stream, counter * 8 + skip, n))


def test_prg_large_vs_ref_and_counter_wrap():
    key = bytes(range(100, 132))
    got = K.prg_fill(key, 5, MASK - 3, np.empty(5000, np.uint64), skip=3)
    np.testing.assert_array_equal(got, R.prg_words(key, 5, (MASK - 3) * 8 + 3, 5000))


def test_prg_determinism_and_independence():
    key = bytes(range(32))
    p1, p2 = K.Prg(key, 7), K.Prg(key, 7)
    a = p1.random_u64((3, 100))
    b = p2.random_u64((3, 100))
    np.testing.assert_array_equal(a, b)  # deterministic
    c = p1.random_u64((3, 100))
    assert not np.array_equal(a, c)  # fresh values on every call
    # successive calls == one long call, whatever the split
    p3 = K.Prg(key, 7)
    parts = [p3.random_u64(n) for n in (1, 7, 13, 200, 379)]
    np.testing.assert_array_equal(np.concatenate(parts), K.Prg(key, 7).random_u64(600))
    np.testing.assert_array_equal(np.concatenate(parts), R.Prg(key, 7).random_u64(600))
    # other streams / keys are unrelated
    d = K.Prg(key, 8).random_u64((3, 100))
    e = K.Prg(bytes(31) + b"\x01", 7).random_u64((3, 100))
    for other in (d, e):
        assert np.count_nonzero(other == a) == 0
    # position addresses any range
    p4 = K.Prg(key, 7, position=300)
    np.testing.assert_array_equal(p4.random_u64(300), np.concatenate([a, c]).reshape(-1)[300:])
    assert p4.position == 600


@SETTINGS
@given(st.integers(0, MASK), st.integers(0, 300), st.integers(1, 4))
def test_keystream_words_vs_ref(stream, n, rows):
    key = bytes((5 * i + 3) % 256 for i in range(32))
    got = K.keystream_words(K.PrgKey(key), stream, (rows, n))
    np.testing.assert_array_equal(got.reshape(-1), R.prg_words(key, stream, 0, rows * n))
    np.testing.assert_array_equal(got, K.Prg(key, stream).random_u64((rows, n)))


def test_prg_statistics_and_bits():
    p = K.Prg(bytes(32), 0)
    x = p.random_u64(1 << 16)
    bits = np.unpackbits(x.view(np.uint8))
    assert abs(bits.mean() - 0.5) < 0.005
    rb = p.random_bits((1000, 3))
    assert rb.shape == (1000, 3) and rb.dtype == np.uint64
    assert set(np.unique(rb)) <= {0, 1}
    assert abs(rb.mean() - 0.5) < 0.05
    assert p.random_u64().shape == ()


def test_prg_validation():
    with pytest.raises(ValueError, match="32 bytes"):
        K.Prg(b"short")
    with pytest.raises(ValueError, match="stream"):
        K.Prg(bytes(32), -1)
    with pytest.raises(ValueError, match="stream"):
        K.Prg(bytes(32), 1 << 64)
    with pytest.raises(ValueError, match="dtype"):
        K.Prg(bytes(32)).fill(np.empty(3, np.int64))
    with pytest.raises(ValueError, match="skip"):
        K.prg_fill(bytes(32), 0, 0, np.empty(3, np.uint64), skip=8)
