"""HE with plaintext modulus t = 2^128 (``runtime.he``, ``HEParams.t_bits``) and what runs on it:
dealer-free matrix-product triples and the masking protocol on ``ring: 128`` MPC devices.

The C kernels (``mixc_he_encode_scaled128``, ``mixc_he_decode128``, ``mixc_he_from_i128``,
the 256-bit flooding sampler) against the Python-int references of ``runtime.he_ref``;
encryption, products and sanitised matrix products against Python-int arithmetic mod 2^128;
the plan-addressed runtime ops (``he_mm.*``) as a triple's cross term; and programs on
``offline: he`` / ``offline: dealer`` devices with ``ring: 128`` via ``mixc.simulate``
against plain JAX (40 fraction bits).
"""
# No `from __future__ import annotations`: mixc.program needs the Input objects.
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mixc
from mixc import device, reveal
from mixc.bundle import build, simulate
from mixc.protocols.dealerfree import matmul_triple_cost
from mixc.runtime import he, he_mm_ops, he_ops
from mixc.runtime import he_ref as R
from mixc.runtime.he_params import _ctx
from mixc.runtime.kernels import Prg, U128, r128_from_int, r128_to_int

from conftest import make_program, secure_program

MASK = (1 << 128) - 1
EDGE = [0, 1, 2, (1 << 64) - 1, 1 << 64, (1 << 127) - 1, 1 << 127, (1 << 127) + 1, MASK]
P = he.DEFAULT_128
# insecure toy set with the 128-bit pipeline's shape: six 50-bit primes at n = 64
TOY = he.HEParams.toy(64, bits=(50,) * 6, keep=3, t_bits=128)
FEW = settings(max_examples=6, deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SOME = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
DEVICES = """domain: ["alice", "bob"]
device:
  - p1:
      type: PYU
      domain: "alice"
  - p2:
      type: PYU
      domain: "bob"
  - mpc:
      type: MPC
      domain: ["alice", "bob"]
      offline: {offline}
      ring: 128
      fraction_bits: 40
  - he:
      type: HE
      domain: ["alice", "bob"]
      key_owner: "alice"
"""


def ints(values):
    """Python ints of U128 values, or of anything numpy can hold as objects."""
    if getattr(values, "dtype", None) == U128:
        values = r128_to_int(values)
    return [int(v) for v in np.asarray(values, dtype=object).reshape(-1)]


def u128(values):
    return r128_from_int(np.asarray(values, dtype=object))


def u128_vec(max_len, min_len=0):
    return st.lists(st.one_of(st.sampled_from(EDGE), st.integers(0, MASK)),
                    min_size=min_len, max_size=max_len).map(u128)


def random_u128(rng, shape):
    words = rng.integers(0, 2**64, size=tuple(shape) + (2,), dtype=np.uint64)
    return np.ascontiguousarray(words).view(U128).reshape(shape)


def as_ints(a):
    return np.array(r128_to_int(a), dtype=object).reshape(np.shape(a))


@pytest.fixture(scope="module")
def keys():
    prg = Prg(b"\x05" * 32, stream=3)
    sk, pk = he.keygen(prg, P)
    return sk, pk, prg


@pytest.fixture(scope="module")
def toy_keys():
    prg = Prg(b"\x06" * 32)
    sk, pk = he.keygen(prg, TOY)
    return sk, pk, prg


# ---------------------------------------------------------------- parameters

def test_parameters_secure_and_distinct_from_64():
    assert P.secure and P.t_bits == 128 and P.n == 16384 and P.keep == 3
    assert P.logq < he.STD_128_TERNARY[P.n]
    assert all(p.bit_length() <= 50 for p in P.primes)  # the IFMA path
    assert "t = 2^128" in P.describe() and "128-bit classical" in P.describe()
    assert he.params_for(128) is P and he.params_for(64) is he.DEFAULT
    assert P.params_id != he.DEFAULT.params_id
    assert he.DEFAULT.t_bits == 64 and he.DEFAULT.plain_dtype == np.uint64
    assert P.plain_dtype == U128
    with pytest.raises(he.HEError, match="t_bits must be 64 or 128"):
        he.HEParams(16384, P.primes, t_bits=96)
    with pytest.raises(he.HEError, match="not 128-bit secure"):  # 350 bits at n = 8192
        he.HEParams(8192, he.HEParams.toy(8192, bits=(50,) * 7).primes, t_bits=128)


def test_default_64_params_id_unchanged():
    import hashlib
    d = he.DEFAULT
    h = hashlib.blake2b(digest_size=8, person=b"mixc-he-params")
    h.update(repr((d.n, d.primes, d.eta, d.keep, d.stat_sec)).encode())
    assert d.params_id == h.digest()  # ciphertexts of t = 2^64 keep their header


# ---------------------------------------------------------------- kernels vs references

@SOME
@given(u128_vec(64, min_len=1))
def test_encode_decode_from_signed_vs_reference(m):
    c = _ctx(TOY)
    vals = ints(m)
    enc = c.encode(m)
    assert np.array_equal(enc, R.encode_scaled(vals, TOY.primes, t_bits=128))
    got, frac = c.decode(enc, TOY.L)
    assert ints(got) == vals
    assert np.all(np.abs(frac.astype(np.float64)) <= 2.0 ** 63)
    assert np.array_equal(c.from_plain(m), R.residues_of_signed(vals, TOY.primes, 128))


@SOME
@given(st.integers(0, 2**32))
def test_decode_random_residues_vs_reference(seed):
    rng = np.random.default_rng(seed)
    c = _ctx(TOY)
    res = np.stack([rng.integers(0, p, size=16, dtype=np.uint64) for p in TOY.primes])
    for l in (TOY.L, TOY.keep):
        got, frac = c.decode(np.ascontiguousarray(res[:l]), l)
        want, wfrac = R.decode(res[:l], TOY.primes[:l], t_bits=128)
        assert ints(got) == ints(want)
        np.testing.assert_allclose(frac.astype(np.float64) / 2.0 ** 64, wfrac, atol=2.0 ** -40)


def test_flooding_sampler_256_bits():
    c = _ctx(TOY)
    prg = Prg(b"\x07" * 32)
    for bits in (193, 220, 256):
        vals = R.crt(c.wide(prg, bits, 512), TOY.primes)
        q = TOY.q
        centred = [v - q if v > q // 2 else v for v in vals]
        assert all(-(1 << (bits - 1)) <= v < (1 << (bits - 1)) for v in centred)
        assert max(abs(v) for v in centred) > 1 << (bits - 4)  # spread over the range
    with pytest.raises(he.HEError, match="out of range"):
        c.wide(prg, 257, 4)


# ---------------------------------------------------------------- the scheme at t = 2^128

@SOME
@given(u128_vec(64), st.booleans())
def test_encrypt_decrypt_identity(toy_keys, x, public):
    sk, pk, prg = toy_keys
    ct = he.encrypt(pk if public else sk, x, prg)
    assert ints(he.decrypt(sk, ct)) == ints(x)


def test_plaintexts_must_be_u128(keys):
    sk, _pk, prg = keys
    with pytest.raises(ValueError, match=r"dtype u128 \(t = 2\^128\)"):
        he.encrypt(sk, np.arange(4, dtype=np.uint64), prg)


@SOME
@given(st.integers(0, 2**32), st.integers(1, 64), st.integers(1, 64))
def test_mul_plain_add_plain_vs_negacyclic(toy_keys, seed, lx, lw):
    sk, pk, prg = toy_keys
    rng = np.random.default_rng(seed)
    x, w, y = random_u128(rng, (lx,)), random_u128(rng, (lw,)), random_u128(rng, (64,))
    x[0], w[-1] = u128([MASK]), u128([1 << 127])  # extreme centred values
    ct = he.add_plain(he.mul_plain(he.encrypt(sk, x, prg), w), y)
    pad = lambda v: ints(v) + [0] * (64 - v.size)  # noqa: E731
    want = [(a + b) & MASK for a, b in zip(R.negacyclic_mod_2k(pad(x), pad(w), 128), ints(y))]
    got = he.decrypt(sk, he.add(ct, he.encrypt(pk, u128([0] * 64), prg)))
    assert ints(got) == want


@FEW
@given(st.integers(1, 40), st.integers(1, 300), st.integers(1, 40), st.integers(0, 2**32))
def test_sanitised_matmul_vs_python_ints(keys, M, K, N, seed):
    sk, pk, prg = keys
    rng = np.random.default_rng(seed)
    W, X, mask = random_u128(rng, (M, K)), random_u128(rng, (K, N)), random_u128(rng, (M, N))
    plan = he.plan_matmul(M, K, N, P)
    cts = he.encrypt_input(sk, plan, X, prg)
    outs = he.evaluate_masked(plan, W, cts, mask, pk, prg)
    got = he.decrypt_output(sk, plan, [he.from_bytes(o.to_bytes(), P) for o in outs])
    want = (as_ints(W).dot(as_ints(X)) + as_ints(mask)) % (1 << 128)
    assert (as_ints(got) == want).all()
    assert all(o.level == P.keep and o.nbytes == len(o.to_bytes()) for o in outs)
    assert all(len(c.to_bytes()) == he.ciphertext_bytes(P, "seeded") for c in cts)


def test_result_metadata_public_and_noise_flooded(keys):
    sk, pk, prg = keys
    rng = np.random.default_rng(3)
    M, K, N = 8, 50, 4
    plan = he.plan_matmul(M, K, N, P)
    X = random_u128(rng, (K, N))
    cts = he.encrypt_input(sk, plan, X, prg)
    zero = he.evaluate_masked(plan, u128(np.zeros((M, K), dtype=object)), cts, None, pk, prg)
    full = he.evaluate_masked(plan, random_u128(rng, (M, K)), cts, None, pk, prg)
    # the noise header (hence the flooding size) depends on public sizes only
    assert [o.noise for o in zero] == [o.noise for o in full]
    raw = plan.evaluate(random_u128(rng, (M, K)), cts)[0]
    # flooding: >= 2^40 times the product's noise bound before the switch down
    assert raw.noise > 2.0 ** 130 and all(o.noise < P.q / 2.0 ** 130 for o in full)
    other, _ = he.keygen(Prg(b"\x09" * 32), P)
    with pytest.raises(he.HEError):
        he.decrypt(other, full[0], check_key_id=False)


def test_noise_budget_refused_when_q_too_small():
    small = he.HEParams.toy(64, bits=(50,) * 4, keep=2, t_bits=128)  # 200 bits < 2^130 t/2
    prg = Prg(b"\x0a" * 32)
    sk, pk = he.keygen(prg, small)
    plan = he.plan_matmul(4, 8, 2, small)
    cts = he.encrypt_input(sk, plan, random_u128(np.random.default_rng(0), (8, 2)), prg)
    with pytest.raises(he.HEError, match="noise budget"):
        plan.evaluate(random_u128(np.random.default_rng(1), (4, 8)), cts)


# ---------------------------------------------------------------- runtime ops: a triple

def test_he_mm_ops_make_a_128_bit_triple_cross_term():
    """Both directions of a dealer-free matrix triple with the executor's ops: with
    c_p = a_p b_p + Dec(Enc(x_p) . w_q - s_q) + s_p, c_0 + c_1 = (a_0 + a_1)(b_0 + b_1)."""
    M, K, N = 5, 7, 3
    plan = he_ops.plan_matmul(M, K, N, 128)
    assert plan[6:] == (128,) and he_ops.plan_matmul(M, K, N)[6:] == ()
    rng = np.random.default_rng(4)
    a = [random_u128(rng, (M, K)) for _ in range(2)]
    b = [random_u128(rng, (K, N)) for _ in range(2)]
    s = [random_u128(rng, (M, N)) for _ in range(2)]
    keys = [he_ops.keygen({"t_bits": 128}) for _ in range(2)]
    assert [k.size for k in keys[0]] == list(he_ops.key_bytes(128))
    attrs = {"plan": plan}
    cross = []
    for enc, ev in ((0, 1), (1, 0)):  # party enc's b encrypted, ev's a in the clear
        sk, pk = keys[enc]
        (ct,) = he_mm_ops.encrypt(attrs, sk, b[enc])
        assert ct.size == he_mm_ops.input_bytes(plan)
        neg = u128([(-v) % (1 << 128) for v in ints(s[ev])]).reshape(M, N)
        (ext,) = he_mm_ops.evaluate(attrs, pk, ct, a[ev], neg)
        assert ext.size == sum(he_mm_ops.output_sizes(plan))
        (u,) = he_mm_ops.decrypt(attrs, sk, ext)
        assert u.dtype == U128 and u.shape == (M, N)
        cross.append(as_ints(u))
    c = [(as_ints(a[p]).dot(as_ints(b[p])) + cross[p] + as_ints(s[p])) for p in (0, 1)]
    want = (as_ints(a[0]) + as_ints(a[1])).dot(as_ints(b[0]) + as_ints(b[1])) % (1 << 128)
    assert ((c[0] + c[1]) % (1 << 128) == want).all()


def test_triple_cost_on_128_bits_is_declared():
    attrs = {"contract": ((1,), (0,)), "batch": ((), ())}
    c64 = matmul_triple_cost("dot_general", attrs, (64, 128), (128, 32))
    c128 = matmul_triple_cost("dot_general", attrs, (64, 128), (128, 32), 128)
    assert c128.rounds == c64.rounds and 1.5 * c64.bytes < c128.bytes < 6 * c64.bytes


# ---------------------------------------------------------------- programs on ring: 128

@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    d = tmp_path_factory.mktemp("ring128_he")
    out = {}
    for offline in ("he", "dealer"):
        path = d / f"{offline}.devices"
        path.write_text(DEVICES.format(offline=offline))
        out[offline] = mixc.init_device(str(path))
    return out


def run(cluster, fn, *arrays, prefer=()):
    prog, inputs = secure_program(cluster, fn, *arrays)
    prog.prefer = tuple(prefer)
    bundle = build(prog, verify_between=True)
    return np.asarray(simulate(bundle, inputs)), bundle


def normal(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _ops(bundle, party):
    return bundle.text(party)


def test_dealer_free_matmul_triples_vs_jax(clusters):
    rng = np.random.default_rng(0)
    # |x . w| terms ~ 4e8 > 2^26: beyond the 64-bit ring's range at 18 fraction bits
    x, w = normal(rng, 6, 9, scale=2e4), normal(rng, 9, 4, scale=2e4)
    out, bundle = run(clusters["he"], lambda a, b: a @ b, x, w, prefer=("arith2pc.he",))
    np.testing.assert_allclose(out, x @ w, rtol=1e-5, atol=1e-5 * np.abs(x @ w).max())
    alice = _ops(bundle, "alice")
    assert "he.keygen() {t_bits=128}" in alice and "he_mm.encrypt" in alice
    assert "plan=(" in alice and ", 128)" in alice and "u128[6,4]@alice:arith = he_mm.decrypt" \
        in alice
    assert set(bundle.programs) == {"alice", "bob"}  # no dealer


def test_dealer_free_batched_einsum_vs_jax(clusters):
    rng = np.random.default_rng(1)
    x, w = normal(rng, 2, 3, 5), normal(rng, 2, 5, 4)
    fn = lambda a, b: jnp.einsum("bij,bjk->bik", a, b)  # noqa: E731
    out, bundle = run(clusters["he"], fn, x, w, prefer=("arith2pc.he",))
    np.testing.assert_allclose(out, np.asarray(fn(x, w)), atol=1e-5)
    assert bundle.text("bob").count("he_mm.eval") == 2  # one triple per batch element


def test_dealer_free_conv_triples_vs_jax(clusters):
    rng = np.random.default_rng(7)
    img, ker = normal(rng, 2, 2, 5, 5), normal(rng, 3, 2, 2, 2)
    conv = lambda a, b: jax.lax.conv_general_dilated(a, b, (1, 1), "VALID")  # noqa: E731
    out, bundle = run(clusters["he"], conv, img, ker, prefer=("arith2pc.he",))
    np.testing.assert_allclose(out, np.asarray(conv(img, ker)), atol=1e-5)
    assert "matmul triple" in bundle.text("alice")


@pytest.mark.parametrize("offline", ["he", "dealer"])
def test_masking_private_weights_vs_jax(clusters, offline):
    rng = np.random.default_rng(2)
    x, w = normal(rng, 4, 7), normal(rng, 7, 3)
    out, bundle = run(clusters[offline], lambda a, b: a @ b, x, w, prefer=("masking",))
    np.testing.assert_allclose(out, x @ w, atol=1e-5)
    assert "Enc(W.r - s) (masking, offline)" in bundle.text("bob")
    img, ker = normal(rng, 1, 2, 5, 5), normal(rng, 3, 2, 2, 2)
    conv = lambda a, b: jax.lax.conv_general_dilated(a, b, (1, 1), "VALID")  # noqa: E731
    out, _ = run(clusters[offline], conv, img, ker, prefer=("masking",))
    np.testing.assert_allclose(out, np.asarray(conv(img, ker)), atol=1e-5)


def test_masking_cost_counts_128_bit_elements(clusters):
    rng = np.random.default_rng(5)
    x, w = normal(rng, 4, 7), normal(rng, 7, 3)
    _out, bundle = run(clusters["he"], lambda a, b: a @ b, x, w, prefer=("masking",))
    enc, back = he_ops.plan_cost(he_ops.plan_matmul(3, 7, 4, 128))
    rows = [r for r in bundle.cost_report.rows if r[1] == "dot_general"]
    assert rows and rows[0][2] == "masking"
    assert rows[0][3].bytes >= enc + back + 16 * x.size
    assert math.isfinite(rows[0][3].bytes)


@pytest.mark.parametrize("offline", ["he", "dealer"])
def test_he_device_values_into_128_bit_shares(clusters, offline):
    """A dense layer on the HE device (t = 2^64, 18 fraction bits), then x * relu(x) on the
    128-bit ring (40 bits): the 64-bit shares are widened and truncated into the ring."""
    c = clusters[offline]
    rng = np.random.default_rng(6)
    x, w, b = (normal(rng, *s, scale=3) for s in ((2, 6), (6, 4), (4,)))

    def body(x, w, b):
        h = device(c.he)(lambda x, w, b: x @ w + b)(x, w, b)
        return reveal(device(c.mpc)(lambda h: jax.nn.relu(h) * h)(h), c.p1)
    prog = make_program(body, {"x": mixc.Input(c.p1, x.shape), "w": mixc.Input(c.p2, w.shape),
                               "b": mixc.Input(c.p2, b.shape)})
    bundle = build(prog, verify_between=True)
    out = simulate(bundle, {"x": x, "w": w, "b": b})
    h = x @ w + b
    # the HE device's 18 fraction bits dominate: |h| <~ 20, encoding errors ~ 2^-19 per input
    np.testing.assert_allclose(out, np.maximum(h, 0) * h, atol=4e-3)
    assert "ring_widen" in bundle.text("alice") and "u128" in bundle.text("bob")
