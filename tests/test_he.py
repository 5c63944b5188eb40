"""RLWE additive HE (mixc.runtime.he, csrc/he.c) against numpy references (he_ref)."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixc.errors import MixcError
from mixc.runtime import he
from mixc.runtime import he_ref as R
from mixc.runtime.kernels import Prg

MASK = (1 << 64) - 1
P = he.DEFAULT
N = P.n
EDGE = [0, 1, 2, (1 << 63) - 1, 1 << 63, (1 << 63) + 1, MASK - 1, MASK]

SETTINGS = settings(max_examples=12, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FEW = settings(max_examples=4, deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# small insecure parameter sets for exhaustive checks
TOY64 = he.HEParams.toy(64, bits=(50, 50, 50), keep=2)   # IFMA path, full pipeline
TOY8 = he.HEParams.toy(8, bits=(40,))                    # n < 16: scalar NTT
TOY_BIG = he.HEParams.toy(32, bits=(55, 56))             # p >= 2^50: scalar NTT / mulmod


def rand_u64(rng, shape):
    return rng.integers(0, 2**64, size=shape, dtype=np.uint64)


def u64_vec(max_len):
    return st.lists(st.one_of(st.sampled_from(EDGE), st.integers(0, MASK)),
                    min_size=0, max_size=max_len).map(lambda v: np.array(v, dtype=np.uint64))


def matvec_ref(W, x):
    r = W.astype(object).dot(x.astype(object))
    return np.array([int(v) & MASK for v in np.asarray(r).reshape(-1)],
                    dtype=np.uint64).reshape(np.asarray(r).shape)


@pytest.fixture(scope="module")
def keys():
    prg = Prg(b"\x01" * 32, stream=7)
    sk, pk = he.keygen(prg)
    return sk, pk, prg


@pytest.fixture(scope="module")
def toy_keys():
    prg = Prg(b"\x02" * 32)
    sk, pk = he.keygen(prg, TOY64)
    return sk, pk, prg


# --------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------

def test_default_parameters_are_128_bit_secure():
    assert P.n == 8192 and P.L == 5
    assert P.q < 2**218 and P.logq > 217.9  # HE standard: n = 8192 -> log q <= 218
    assert P.secure
    for p in P.primes:
        assert p < 2**50 and (p - 1) % (2 * N) == 0
    assert "128-bit" in P.describe()
    assert issubclass(he.HEError, MixcError)


def test_insecure_parameters_refused():
    with pytest.raises(he.HEError, match="not 128-bit secure"):
        he.HEParams(8192, he.HEParams.toy(8192, bits=(50,) * 5).primes)
    with pytest.raises(he.HEError, match="not 128-bit secure"):
        he.HEParams(64, TOY64.primes)
    with pytest.raises(he.HEError):
        he.HEParams(8192, (P.primes[0] + 2,))  # not prime / not 1 mod 2n
    assert not TOY64.secure


# --------------------------------------------------------------------------
# NTT
# --------------------------------------------------------------------------

def _ntt_mul(a, b, i, params):
    c = he._ctx(params)
    A = he.ntt_forward(a, i, params)
    B = he.ntt_forward(b, i, params)
    prod = np.empty_like(A)
    lib_mods = c.mods[8 * i:8 * i + 8]
    he.lib.mixc_he_mul(he._p64(A), he._p64(B), he._p64(prod), he._p64(lib_mods), 1, c.n)
    return he.ntt_inverse(prod, i, params)


@SETTINGS
@given(st.sampled_from([TOY8, TOY_BIG, he.HEParams.toy(16), he.HEParams.toy(128, bits=(50,)), TOY64]),
       st.integers(0, 2**32 - 1))
def test_ntt_small_vs_reference(params, seed):
    rng = np.random.default_rng(seed)
    c = he._ctx(params)
    for i, p in enumerate(params.primes):
        a = rng.integers(0, p, params.n, dtype=np.uint64)
        b = rng.integers(0, p, params.n, dtype=np.uint64)
        a[:2] = [0, p - 1]
        A = he.ntt_forward(a, i, params)
        np.testing.assert_array_equal(A, R.ntt_direct(a, p, c.psi[i]))
        np.testing.assert_array_equal(he.ntt_inverse(A, i, params), a)
        np.testing.assert_array_equal(_ntt_mul(a, b, i, params), R.negacyclic_mod_p(a, b, p))


def test_ntt_full_size_vs_convolution():
    rng = np.random.default_rng(5)
    for i, p in enumerate(P.primes):
        a = rng.integers(0, p, N, dtype=np.uint64)
        b = rng.integers(0, p, N, dtype=np.uint64) if i % 2 else np.full(N, p - 1, np.uint64)
        np.testing.assert_array_equal(he.ntt_inverse(he.ntt_forward(a, i), i), a)
        np.testing.assert_array_equal(_ntt_mul(a, b, i, P), R.negacyclic_mod_p(a, b, p))


# --------------------------------------------------------------------------
# other kernels
# --------------------------------------------------------------------------

def test_from_i64_encode_decode_drop_pack_vs_reference():
    rng = np.random.default_rng(11)
    c = he._ctx(P)
    x = rng.integers(-2**63, 2**63, 4096, dtype=np.int64)
    x[:6] = [-2**63, 2**63 - 1, -1, 0, 1, -(P.primes[2] * 17)]
    r = c.from_i64(x)
    for i, p in enumerate(P.primes):
        assert [int(v) for v in r[i, :64]] == [int(v) % p for v in x[:64]]
        assert np.all(r[i] < p)
    m = np.concatenate([np.array(EDGE, dtype=np.uint64), rand_u64(rng, 56)])
    np.testing.assert_array_equal(c.encode(m), R.encode_scaled(m, P.primes))
    # decode a noisy encoding: m back, residual ~ noise * t / q
    for l in (5, 2):
        enc = c.encode(m, l)
        lim = int(min(c.levels[l].budget, 2.0**62))
        noise = rng.integers(-lim, lim, m.size).astype(np.int64)
        v = c.add(enc, c.from_i64(noise, l), l=l)
        got, frac = c.decode(v, l)
        np.testing.assert_array_equal(got, m)
        ref_m, ref_frac = R.decode(v, P.primes[:l])
        np.testing.assert_array_equal(ref_m, m)
        np.testing.assert_allclose(frac / 2.0**64, ref_frac, atol=1e-12, rtol=1e-9)
    # decode of arbitrary residues agrees with the big-int reference
    v = np.stack([rng.integers(0, p, 64, dtype=np.uint64) for p in P.primes])
    got, frac = c.decode(v, 5)
    ref_m, ref_frac = R.decode(v, P.primes)
    np.testing.assert_array_equal(got, ref_m)
    np.testing.assert_allclose(frac / 2.0**64, ref_frac, atol=1e-12)
    # modulus switching
    for l in (5, 4, 3):
        v = np.stack([rng.integers(0, p, 200, dtype=np.uint64) for p in P.primes[:l]])
        v[:, 0] = 0
        np.testing.assert_array_equal(c.drop_last(v, l), R.drop_last(v, P.primes[:l]))
    # bit packing
    for bits in (1, 7, 42, 45, 64):
        vals = rand_u64(rng, 37) & np.uint64((1 << bits) - 1)
        packed = he._pack_limbs(vals.reshape(1, -1), [bits])
        assert packed == R.pack(vals, bits)
        out = np.empty(37, dtype=np.uint64)
        he.lib.mixc_he_unpack(he.ffi.from_buffer("uint8_t[]", packed), 37, bits, he._p64(out))
        np.testing.assert_array_equal(out, vals)


def test_samplers():
    c = he._ctx(P)
    prg = Prg(b"\x03" * 32)
    e = c.cbd(prg, 200_000)
    assert e.min() >= -21 and e.max() <= 21
    assert abs(e.mean()) < 0.05 and abs(e.var() - 10.5) < 0.3  # CBD(21): sigma^2 = 10.5
    t = c.ternary(prg, 90_000)
    assert set(np.unique(t)) == {-1, 0, 1}
    assert all(abs(np.mean(t == v) - 1 / 3) < 0.01 for v in (-1, 0, 1))
    u = c.uniform(prg)
    for i, p in enumerate(P.primes):
        assert np.all(u[i] < p) and abs(u[i].astype(float).mean() / p - 0.5) < 0.02
    # wide (flooding) samples: residues of integers in [-2^(b-1), 2^(b-1))
    for bits in (10, 70, 140):
        w = c.wide(prg, bits, 50)
        ints = R.crt(w, P.primes)
        q = P.q
        ints = [v - q if v > q // 2 else v for v in ints]
        assert all(-(1 << (bits - 1)) <= v < (1 << (bits - 1)) for v in ints)
        assert max(abs(v) for v in ints) > 1 << (bits - 4)
    # same Prg state -> same samples (seed expansion is deterministic)
    np.testing.assert_array_equal(c.expand_seed(b"s" * 32), c.expand_seed(b"s" * 32))


# --------------------------------------------------------------------------
# encryption
# --------------------------------------------------------------------------

@SETTINGS
@given(u64_vec(300), st.booleans())
def test_decrypt_encrypt_identity(keys, x, public):
    sk, pk, prg = keys
    ct = he.encrypt(pk if public else sk, x, prg)
    assert isinstance(ct, he.Ciphertext) and ct.length == x.size
    np.testing.assert_array_equal(he.decrypt(sk, ct), x)


def test_decrypt_encrypt_long_and_full(keys):
    sk, pk, prg = keys
    rng = np.random.default_rng(1)
    for key in (sk, pk):
        x = rand_u64(rng, N)
        np.testing.assert_array_equal(he.decrypt(sk, he.encrypt(key, x, prg)), x)
        x = rand_u64(rng, 2 * N + 5)
        cts = he.encrypt(key, x, prg)
        assert isinstance(cts, list) and len(cts) == 3
        np.testing.assert_array_equal(he.decrypt(sk, cts), x)


def test_encryption_is_randomised_and_deterministic_in_prg(keys):
    sk, _, _ = keys
    x = np.arange(10, dtype=np.uint64)
    a = he.encrypt(sk, x, Prg(b"\x09" * 32)).to_bytes()
    b = he.encrypt(sk, x, Prg(b"\x09" * 32)).to_bytes()
    c = he.encrypt(sk, x, Prg(b"\x0a" * 32)).to_bytes()
    assert a == b and a != c


# --------------------------------------------------------------------------
# homomorphic operations
# --------------------------------------------------------------------------

@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(1, 400), st.booleans())
def test_add_sub_add_plain(keys, seed, size, public):
    sk, pk, prg = keys
    rng = np.random.default_rng(seed)
    x, y, z = rand_u64(rng, size), rand_u64(rng, size), rand_u64(rng, size)
    x[0], y[0] = MASK, 1
    cx = he.encrypt(pk if public else sk, x, prg)
    cy = he.encrypt(sk, y, prg)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(he.decrypt(sk, he.add(cx, cy)), x + y)
        np.testing.assert_array_equal(he.decrypt(sk, he.sub(cx, cy)), x - y)
        np.testing.assert_array_equal(he.decrypt(sk, he.neg(cx)), np.uint64(0) - x)
        np.testing.assert_array_equal(he.decrypt(sk, he.add_plain(cx, z)), x + z)
        # mixed domains (coefficient-form operand)
        np.testing.assert_array_equal(he.decrypt(sk, he.add(cx.to_coeff(), cy)), x + y)
        np.testing.assert_array_equal(he.decrypt(sk, he.add_plain(cx.to_coeff(), z)), x + z)


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(1, 64), st.integers(1, 64))
def test_mul_plain_toy_full_convolution(toy_keys, seed, lx, lw):
    sk, pk, prg = toy_keys
    rng = np.random.default_rng(seed)
    x, w = rand_u64(rng, lx), rand_u64(rng, lw)
    x[0] = MASK
    ct = he.encrypt(sk if seed % 2 else pk, x, prg)
    got = he.decrypt(sk, he.mul_plain(ct, w))
    ref = R.negacyclic_mod_2_64(he._pad(x, 64), he._pad(w, 64))
    np.testing.assert_array_equal(he._pad(got, 64), ref)


@FEW
@given(st.integers(0, 2**32 - 1))
def test_mul_plain_full_size(keys, seed):
    sk, pk, prg = keys
    rng = np.random.default_rng(seed)
    x, w = rand_u64(rng, N), rand_u64(rng, N)
    out = he.mul_plain(he.encrypt(pk, x, prg), he.encode_plain(w))
    got = he.decrypt(sk, out)
    for k in (0, 1, rng.integers(N), N - 1):
        assert int(got[k]) == R.negacyclic_coeff_mod_2_64(x, w, int(k))


@SETTINGS
@given(st.integers(1, 40), st.integers(1, 50), st.integers(0, 2**32 - 1), st.booleans())
def test_matvec_small(keys, m, k, seed, masked):
    sk, pk, prg = keys
    rng = np.random.default_rng(seed)
    W, x = rand_u64(rng, (m, k)), rand_u64(rng, k)
    W.flat[0] = MASK
    plan = he.plan_matvec(m, k)
    cts = he.encrypt_input(sk, plan, x, prg)
    ref = matvec_ref(W, x)
    if masked:
        mask = rand_u64(rng, m)
        outs = he.matvec(plan, W, cts, mask, pk, prg)
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(he.decrypt_output(sk, plan, outs), ref + mask)
    else:
        np.testing.assert_array_equal(he.decrypt_output(sk, plan, he.matvec(plan, W, cts)), ref)


@FEW
@given(st.integers(1, 12), st.integers(1, 300), st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_matmul_small(keys, M, K, Nc, seed):
    sk, pk, prg = keys
    rng = np.random.default_rng(seed)
    W, X = rand_u64(rng, (M, K)), rand_u64(rng, (K, Nc))
    plan = he.plan_matmul(M, K, Nc)
    assert plan.mw * plan.kw * plan.nw <= N
    cts = he.encrypt_input(sk, plan, X, prg)
    mask = rand_u64(rng, (M, Nc))
    outs = he.evaluate_masked(plan, W, cts, mask, pk, prg)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(he.decrypt_output(sk, plan, outs), matvec_ref(W, X) + mask)


@pytest.mark.parametrize("shape", [(128, 784), (3, 8192 + 7)])
def test_matvec_layer_sizes(keys, shape):
    sk, pk, prg = keys
    m, k = shape
    rng = np.random.default_rng(m)
    W, x, s = rand_u64(rng, (m, k)), rand_u64(rng, k), rand_u64(rng, m)
    plan = he.plan_matvec(m, k)
    # the patent's offline step: client encrypts r, server returns W r + b - s
    b = rand_u64(rng, m)
    with np.errstate(over="ignore"):
        outs = he.matvec(plan, W, he.encrypt_input(sk, plan, x, prg), b - s, pk, prg)
        got = he.decrypt_output(sk, plan, [he.from_bytes(o.to_bytes()) for o in outs])
        np.testing.assert_array_equal(got, matvec_ref(W, x) + b - s)


@SETTINGS
@given(st.integers(1, 200), st.integers(0, 2**32 - 1))
def test_elementwise(keys, size, seed):
    sk, pk, prg = keys
    rng = np.random.default_rng(seed)
    x, y, mask = rand_u64(rng, size), rand_u64(rng, size), rand_u64(rng, size)
    plan = he.plan_elementwise(size)
    assert plan.d == 90
    cts = he.encrypt_input(sk, plan, x, prg)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(he.decrypt_output(sk, plan, he.elementwise(plan, y, cts)),
                                      x * y)
        outs = he.elementwise(plan, y, cts, mask, pk, prg)
        np.testing.assert_array_equal(he.decrypt_output(sk, plan, outs), x * y + mask)


def test_mask_and_extract_sanitises(keys):
    sk, pk, prg = keys
    rng = np.random.default_rng(3)
    x, w = rand_u64(rng, N), rand_u64(rng, N)
    raw = he.mul_plain(he.encrypt(sk, x, prg), w)
    pos = np.array([5, 0, N - 1, 77])
    mask = rand_u64(rng, 4)
    ex = he.mask_and_extract(raw, pos, mask, pk, Prg(b"\x07" * 32))
    assert ex.level == P.keep and ex.c0.shape == (P.keep, 4) and ex.c1.shape == (P.keep, N)
    full = he.decrypt(sk, raw)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(he.decrypt(sk, ex), full[pos] + mask)
    # the flooding noise dominates the evaluation noise by >= 2^40 * r
    c = he._ctx(P)
    cs = c.intt(c.mul(c.ntt(ex.c1.copy(), 2), sk.s_ntt[:2], l=2), 2)
    _, frac = c.decode(c.add(ex.c0, np.ascontiguousarray(cs[:, pos]), l=2), 2)
    measured = np.abs(frac.astype(float)).max() / 2.0**128 * c.levels[2].q
    before = raw.noise  # bound on the noise the flooding must hide, rescaled below
    assert measured > before * 2.0**40 / (P.q / c.levels[2].q)
    # c1 was re-randomised: not the scaled c1 of the raw product
    raw_c1 = he.mod_switch(raw, 2).data[1]
    assert not np.array_equal(raw_c1, ex.c1)
    # only the requested coefficients of c0 go on the wire
    assert ex.nbytes == len(ex.to_bytes()) == he.ciphertext_bytes(P, "extracted", positions=4)


# --------------------------------------------------------------------------
# serialisation
# --------------------------------------------------------------------------

def test_serialisation_round_trip(keys):
    sk, pk, prg = keys
    rng = np.random.default_rng(4)
    x = rand_u64(rng, 1000)
    seeded = he.encrypt(sk, x, prg)
    full = he.add_plain(he.encrypt(pk, x, prg), x)
    coeff = seeded.to_coeff()
    low = he.mod_switch(he.encrypt(sk, x, prg), 3)
    for ct, kind in ((seeded, "seeded"), (full, "full"), (coeff, "full"), (low, "full")):
        data = ct.to_bytes()
        assert len(data) == ct.nbytes == he.ciphertext_bytes(P, kind, level=ct.level)
        back = he.Ciphertext.from_bytes(data)
        assert back.length == ct.length and back.level == ct.level and back.ntt == ct.ntt
        assert back.noise == ct.noise and back.key_id == ct.key_id
        np.testing.assert_array_equal(back.data, ct.data)
        assert he.decrypt(sk, back).tolist() == (x + x if ct is full else x).tolist()
    assert seeded.nbytes == 223_300 and full.nbytes == 446_500  # 218 bits per coefficient
    # public and secret keys
    pk2 = he.PublicKey.from_bytes(pk.to_bytes())
    assert len(pk.to_bytes()) == pk.nbytes
    np.testing.assert_array_equal(pk2.a, pk.a)
    np.testing.assert_array_equal(he.decrypt(sk, he.encrypt(pk2, x, prg)), x)
    sk2 = he.SecretKey.from_bytes(sk.to_bytes())
    np.testing.assert_array_equal(sk2.s, sk.s)
    np.testing.assert_array_equal(he.decrypt(sk2, seeded), x)


def test_malformed_messages_raise(keys):
    sk, pk, prg = keys
    data = he.encrypt(sk, np.arange(5, dtype=np.uint64), prg).to_bytes()
    with pytest.raises(he.HEError):
        he.from_bytes(data[:-1])
    with pytest.raises(he.HEError):
        he.from_bytes(b"XXXX" + data[4:])
    with pytest.raises(he.HEError, match="different HE parameters"):
        he.from_bytes(data, TOY64)
    bad = bytearray(data)
    bad[he._HDR.size:he._HDR.size + 6] = b"\xff" * 6  # residue >= p_0
    with pytest.raises(he.HEError, match="out of range"):
        he.from_bytes(bytes(bad))
    with pytest.raises(he.HEError):
        he.Ciphertext.from_bytes(pk.to_bytes())


# --------------------------------------------------------------------------
# noise budget and wrong keys
# --------------------------------------------------------------------------

def test_noise_budget_exceeded_raises(keys):
    sk, pk, prg = keys
    rng = np.random.default_rng(6)
    ct = he.encrypt(sk, rand_u64(rng, N), prg)
    w = he.encode_plain(rand_u64(rng, N))
    once = he.mul_plain(ct, w)
    he.decrypt(sk, once)  # one product of full-size polynomials is fine
    with pytest.raises(he.HEError, match="noise budget"):
        he.mul_plain(once, w)  # the second would not decrypt
    # small multipliers chain until the budget runs out
    small = he.encode_plain(np.array([3, 1], dtype=np.uint64))
    c, steps = ct, 0
    with pytest.raises(he.HEError, match="mul_plain: noise bound"):
        while True:
            c = he.mul_plain(c, small)
            steps += 1
    lv = he._ctx(P).levels[5]
    assert steps == math.floor(math.log(lv.budget / ct.noise, 4 * (1 + 2**-40)))
    # noise beyond the budget that slipped past the static bound (forged bound)
    # is caught at decryption instead of returning garbage
    forged = he.mul_plain(ct, w)
    forged.noise = ct.noise
    forged = he.mul_plain(forged, w)
    with pytest.raises(he.HEError, match="measured noise"):
        he.decrypt(sk, forged)


def test_wrong_key_never_returns_plaintext(keys):
    sk, pk, prg = keys
    sk2, pk2 = he.keygen(Prg(b"\x05" * 32))
    x = np.arange(1, 101, dtype=np.uint64)
    for ct in (he.encrypt(sk, x, prg), he.encrypt(pk, x, prg)):
        with pytest.raises(he.HEError, match="encrypted under key"):
            he.decrypt(sk2, ct)
        with pytest.raises(he.HEError, match="wrong secret key"):
            he.decrypt(sk2, ct, check_key_id=False)
    # a sanitised result (large flooding noise, few coefficients)
    plan = he.plan_matvec(8, 8)
    W = np.ones((8, 8), dtype=np.uint64)
    outs = he.matvec(plan, W, he.encrypt_input(sk, plan, x[:8], prg), x[:8], pk, prg)
    with pytest.raises(he.HEError):
        he.decrypt_output(sk2, plan, outs)
    with pytest.raises(he.HEError, match="wrong secret key"):
        he.decrypt(sk2, outs[0], check_key_id=False)
    with pytest.raises(he.HEError, match="does not match"):
        he.mask_and_extract(he.encrypt(sk, x, prg), [0], None, pk2, prg)
    with pytest.raises(he.HEError):
        he.add(he.encrypt(sk, x, prg), he.encrypt(sk2, x, prg))


def test_corrupted_ciphertext_detected(keys):
    sk, pk, prg = keys
    ct = he.encrypt(sk, np.arange(50, dtype=np.uint64), prg)
    bad = ct.copy()
    bad.data[0, 2, 17] = (int(bad.data[0, 2, 17]) + 12345) % P.primes[2]
    with pytest.raises(he.HEError, match="measured noise"):
        he.decrypt(sk, bad)


def test_result_metadata_does_not_depend_on_weights(keys):
    sk, pk, prg = keys
    rng = np.random.default_rng(8)
    plan = he.plan_matvec(20, 30)
    cts = he.encrypt_input(sk, plan, rand_u64(rng, 30), prg)
    small = np.ones((20, 30), dtype=np.uint64)
    big = rand_u64(rng, (20, 30))
    a = he.matvec(plan, small, cts, None, pk, prg)
    b = he.matvec(plan, big, cts, None, pk, prg)
    assert [o.noise for o in a] == [o.noise for o in b]
    assert [len(o.to_bytes()) for o in a] == [len(o.to_bytes()) for o in b]
    # mul_plain: the exact norm by default, a caller-supplied public bound on request
    ct = he.encrypt(sk, rand_u64(rng, 10), prg)
    w = np.array([1, 2], dtype=np.uint64)
    assert he.mul_plain(ct, w).noise == pytest.approx(ct.noise * 3)
    assert he.mul_plain(ct, w, norm_bound=2.0**64).noise == ct.noise * 2.0**64
    with pytest.raises(ValueError):
        he.mul_plain(ct, w, norm_bound=2.0)


def test_parties_in_threads(keys):
    """Two parties evaluating concurrently (C kernels release the GIL; scratch
    buffers are per thread)."""
    import threading

    sk, pk, _ = keys
    results, errors = {}, []

    def party(i):
        try:
            prg = Prg(bytes([i + 40]) * 32)
            rng = np.random.default_rng(i)
            W, x = rand_u64(rng, (30, 70)), rand_u64(rng, 70)
            plan = he.plan_matvec(30, 70)
            for _ in range(3):
                outs = he.matvec(plan, W, he.encrypt_input(sk, plan, x, prg), None, pk, prg)
                got = he.decrypt_output(sk, plan, outs)
            results[i] = np.array_equal(got, matvec_ref(W, x))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=party, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == {0: True, 1: True}
