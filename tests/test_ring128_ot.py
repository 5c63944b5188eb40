"""Dealer-free (``offline: he``) correlations on the 128-bit ring (``ring: 128``).

Runtime level (runtime/ot.py, csrc/ot.c): the 128-bit Gilboa OLE (128 COTs per product,
128-bit messages) and bit-OLE mod 2^128 reconstruct a*b mod 2^128 over random and edge
values, their C kernels match a Python-int reference built on the (vector-tested) hash,
and the bytes on the wire are the declared ones; the truncation's local step over
Z_2^128 is floor(x / 2^f) or one more for every |x| < 2^126 (error < one ulp).
Program level (``mixc.simulate`` on a ``ring: 128``, ``offline: he`` device, f = 40):
products (x * x at 2e4, which wraps on 64 bits), a shared scalar times a tensor,
comparisons, relu, select and max against plain JAX, and a loop.
"""
# No `from __future__ import annotations`: mixc.program needs the Input objects.
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mixc
from mixc._ckernels import ffi, lib
from mixc.bundle import build, simulate
from mixc.errors import PeerError
from mixc.ir.ops import OPS
from mixc.protocols import dealerfree
from mixc.runtime import kernels as K
from mixc.runtime import ot
from mixc.runtime.kernels import Prg
from mixc.runtime.ot import OTSession

from conftest import REPO, make_program, run_secure
from test_ot import run_pair

R = 1 << 128
MASK = R - 1
EDGE = [0, 1, 2, 3, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 1 << 64, (1 << 64) + 1,
        (1 << 127) - 1, 1 << 127, MASK - 1, MASK]
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASE_OT_BYTES = 33 + 4096  # one direction's base-OT messages (tests/test_ot.py)
RING128_DEVICES = REPO / "examples" / "two_party_ring128.devices"


def u128(ints):
    return K.r128_from_int(np.asarray(ints, dtype=object))


def ints(a):
    return [int(v) for v in K.r128_to_int(a).reshape(-1)]


u128_values = st.one_of(st.sampled_from(EDGE), st.integers(0, MASK))


# ---------------------------------------------------------------- the OT session

@SETTINGS
@given(st.lists(st.tuples(u128_values, u128_values), min_size=1, max_size=40))
def test_ole128_reconstructs_products(pairs):
    a, b = u128([p[0] for p in pairs]), u128([p[1] for p in pairs])
    s0, s1, _, _ = run_pair(lambda s: s.ole_send(a), lambda s: s.ole_recv(b))
    assert s0.dtype == s1.dtype == K.U128 and s0.shape == a.shape
    for x, y, u, v in zip(ints(a), ints(b), ints(s0), ints(s1)):
        assert (u + v) % R == x * y % R


def test_ole128_both_ways_edges_shapes_and_bytes():
    a = u128(np.repeat(np.array(EDGE, dtype=object), len(EDGE)))
    b = u128(np.tile(np.array(EDGE, dtype=object), len(EDGE)))
    a2 = K.r128_keystream(K.PrgKey(b"x" * 32), 1, (3, 5))
    b2 = K.r128_keystream(K.PrgKey(b"y" * 32), 1, (3, 5))
    (sa1, sa2), (sb1, sb2), sa, sb = run_pair(lambda s: (s.ole_send(a), s.ole_recv(b2)),
                                              lambda s: (s.ole_recv(b), s.ole_send(a2)))
    for x, y, u, v in zip(ints(a), ints(b), ints(sa1), ints(sb1)):
        assert (u + v) % R == x * y % R
    assert sa2.shape == (3, 5)
    for x, y, u, v in zip(ints(a2), ints(b2), ints(sb2), ints(sa2)):
        assert (u + v) % R == x * y % R
    # per product: the receiver's 128 OTs (2 words of u per base OT) and 129 correction words
    n, m = a.size, b2.size
    assert sb.stats["bytes_sent"] - BASE_OT_BYTES == (256 * n + 129 * m) * 8
    assert sa.stats["bytes_sent"] - BASE_OT_BYTES == (129 * n + 256 * m) * 8
    assert (256 + 129) * 8 == dealerfree.OLE128_BYTES


def test_arith_triples128_across_batches(monkeypatch):
    monkeypatch.setattr(ot, "BATCH_WORDS", 128)  # 64 products of 128 bits per message
    n = 64 * 5 + 7

    def party(s):
        return s.arith_triples(n, ring=128), s.arith_triples(0, ring=128)

    ((a0, b0, c0), e0), ((a1, b1, c1), e1), sa, _ = run_pair(party, party)
    for x0, x1, y0, y1, z0, z1 in zip(*(ints(v) for v in (a0, a1, b0, b1, c0, c1))):
        assert (z0 + z1) % R == (x0 + x1) * (y0 + y1) % R
    assert all(v.shape == (0,) and v.dtype == K.U128 for v in e0 + e1)
    for v0, v1 in ((a0, a1), (b0, b1), (c0, c1)):  # random-looking, different at each party
        assert not np.array_equal(v0, v1)
        assert 0.45 < np.unpackbits(K.r128_words(v0).view(np.uint8)).mean() < 0.55
    assert sa.stats["rounds"] == 2 + 2 + 0  # base OTs, the triples; an empty call is free
    # both directions at once: the declared bytes of n triples
    total = sa.stats["bytes_sent"] + sa.stats["bytes_received"] - 2 * BASE_OT_BYTES
    assert total == dealerfree.elementwise_triple_cost(n, ring_bits=128).bytes


@pytest.mark.parametrize("shape", [(1,), (64,), (7, 13), (5000,)])
def test_bit_ole128(shape):
    rng = np.random.default_rng(sum(shape))
    a, b = (rng.integers(0, 2, size=shape, dtype=np.uint64) for _ in range(2))
    s0, s1, sa, _ = run_pair(lambda s: s.bit_ole_send(a, ring=128),
                             lambda s: s.bit_ole_recv(b, ring=128))
    assert s0.shape == s1.shape == shape and s0.dtype == K.U128
    total = K.r128_to_int(K.r128_add(s0, s1))
    assert np.array_equal(total.astype(np.int64), (a * b).astype(np.int64))
    assert len(set(ints(s0))) > min(a.size, 64) // 2  # shares are not the bits themselves
    n = int(np.prod(shape))
    assert sa.stats["bytes_sent"] - BASE_OT_BYTES == 16 * 64 * ((n + 63) // 64)


def test_128_bit_calls_refuse_bad_input():
    with pytest.raises(ValueError, match="ring must be 64 or 128"):
        OTSession(None, "bob", True, Prg(b"A" * 32), 0).bit_ole_send(np.zeros(3, np.uint64), 96)
    with pytest.raises(ValueError, match="ring must be 64 or 128"):
        OTSession(None, "bob", True, Prg(b"A" * 32), 0).arith_triples(3, ring=32)
    with pytest.raises(ValueError, match="0 and 1"):
        OTSession(None, "bob", True, Prg(b"A" * 32), 0).bit_ole_recv(np.full(3, 2, np.uint64), 128)
    # one party on 128 bits, the other on 64: the sizes differ, named at the receiver
    with pytest.raises(PeerError, match="same OT calls"):
        run_pair(lambda s: s.ole_send(u128([1, 2])), lambda s: s.ole_recv(np.ones(2, np.uint64)),
                 timeout=10)


# ---------------------------------------------------------------- C kernels vs reference

def _p64(a):
    return ffi.from_buffer("uint64_t[]", a)


def _rows(seed, n):
    return np.random.default_rng(seed).integers(0, 1 << 64, size=(n, 2), dtype=np.uint64)


def _hash_ints(rows, tweak, delta=None):
    return [int(lo) | int(hi) << 64 for lo, hi in ot.ot_hash(rows, tweak, delta)]


@pytest.mark.parametrize("n", [1, 3])
def test_gilboa128_kernels_match_reference(n):
    q = _rows(1, 128 * n)
    s = _rows(2, 1)[0]
    tweak = (2**64 - 200, 77)  # the low word wraps inside the call
    a = K.r128_keystream(K.PrgKey(b"a" * 32), 0, (n,))
    b = K.r128_keystream(K.PrgKey(b"b" * 32), 0, (n,))
    tw = np.array(tweak, dtype=np.uint64)
    share = np.empty(2 * n, dtype=np.uint64)
    d = np.empty((n, 129), dtype=np.uint64)
    lib.mixc_gilboa128_send(_p64(q), n, _p64(s), _p64(K.r128_words(a).reshape(-1)), _p64(tw),
                            _p64(share), _p64(d))
    h0, h1 = _hash_ints(q, tweak), _hash_ints(q, tweak, s)
    for p, ap in enumerate(ints(a)):
        ks = range(128 * p, 128 * p + 128)
        assert ints(share.view(K.U128))[p] == -sum(h0[i] << k for k, i in enumerate(ks)) % R
        packed = sum(((h0[i] + ap - h1[i]) % (1 << (128 - k))) << (128 * k - k * (k - 1) // 2)
                     for k, i in enumerate(ks))
        assert sum(int(w) << (64 * j) for j, w in enumerate(d[p])) == packed
    # receiver, with t_i = q_i ^ b_k s: its share + the sender's = a * b
    bits = [(bp >> k) & 1 for bp in ints(b) for k in range(128)]
    t = q ^ (np.array(bits, dtype=np.uint64)[:, None] * s)
    got = np.empty(2 * n, dtype=np.uint64)
    lib.mixc_gilboa128_recv_hash(_p64(t), n, _p64(tw), _p64(got))
    lib.mixc_gilboa128_recv_fix(_p64(K.r128_words(b).reshape(-1)), _p64(d), n, _p64(got))
    for x, y, u, v in zip(ints(a), ints(b), ints(share.view(K.U128)), ints(got.view(K.U128))):
        assert (u + v) % R == x * y % R


def test_bitole128_kernels_match_reference():
    n = 300
    q, s = _rows(3, n), _rows(4, 1)[0]
    tweak = (5, 2**64 - 1)
    tw = np.array(tweak, dtype=np.uint64)
    a = np.random.default_rng(5).integers(0, 2, size=n, dtype=np.uint64)
    c = np.random.default_rng(6).integers(0, 2, size=n, dtype=np.uint64)
    share, d = np.empty((n, 2), np.uint64), np.empty((n, 2), np.uint64)
    lib.mixc_bitole128_send(_p64(q), n, _p64(s), _p64(a), _p64(tw), _p64(share), _p64(d))
    h0, h1 = _hash_ints(q, tweak), _hash_ints(q, tweak, s)
    assert ints(share.view(K.U128)) == [-h % R for h in h0]
    assert ints(d.view(K.U128)) == [(x + int(ai) - y) % R for x, y, ai in zip(h0, h1, a)]
    y = np.ascontiguousarray(ot.ot_hash(q ^ (c[:, None] * s), tweak))
    lib.mixc_bitole128_recv_fix(_p64(K.bits_pack(c)), _p64(d), n, _p64(y))
    for u, v, ai, ci in zip(ints(share.view(K.U128)), ints(y.view(K.U128)), a, c):
        assert (u + v) % R == int(ai) * int(ci)


# ---------------------------------------------------------------- truncation's local step

def _trunc_shares(x, f, rng):
    """Both parties' trunc_wrap_finish on random shares of the ints x (|x| < 2^126)."""
    n = len(x)
    x0 = K.r128_keystream(K.PrgKey(rng.bytes(32)), 0, (n,))
    x1 = K.r128_sub(u128([v % R for v in x]), x0)
    u0, v1 = K.r128_add(x0, 1 << 126), K.r128_neg(x1)
    a = np.uint64(1) - (K.r128_words(u0)[:, 1] >> np.uint64(63))  # NOT msb(u0)
    b = K.r128_words(v1)[:, 1] >> np.uint64(63)                    # msb(v1)
    alpha, beta = (rng.integers(0, 2, n, dtype=np.uint64) for _ in range(2))
    t0 = rng.integers(0, 1 << 64, n, dtype=np.uint64)
    t1 = alpha * beta - t0
    e, g = a ^ alpha, b ^ beta
    impl = OPS["trunc_wrap_finish"].impl_u128
    y0 = impl({"bits": f, "first": True}, u0, e, g, alpha, t0)
    y1 = impl({"bits": f, "first": False}, v1, e, g, beta, t1)
    return [(v + (1 << 127)) % R - (1 << 127) for v in ints(K.r128_add(y0, y1))]


LIMIT = 1 << 126


@SETTINGS
@given(st.lists(st.one_of(st.integers(-LIMIT, LIMIT - 1),
                          st.sampled_from([-LIMIT, LIMIT - 1, 0, -1, 1, 1 << 80, -(1 << 80)])),
                min_size=1, max_size=60),
       st.integers(1, 64), st.integers(0, 2**32))
def test_truncation128_within_one_ulp(x, f, seed):
    got = _trunc_shares(x, f, np.random.default_rng(seed))
    for v, y in zip(x, got):
        assert y - (v >> f) in (0, 1), (v, f, y)


def test_truncation128_random_values_many():
    rng = np.random.default_rng(7)
    x = [int(v) for v in rng.integers(-(1 << 62), 1 << 62, 5000)]
    x = [v << int(s) for v, s in zip(x, rng.integers(0, 64, 5000))]  # magnitudes up to 2^125
    for f in (18, 40, 48, 64):
        got = _trunc_shares(x, f, rng)
        assert all(y - (v >> f) in (0, 1) for v, y in zip(x, got))


# ---------------------------------------------------------------- programs (simulate)

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """examples/two_party_ring128.devices (f = 40) with the dealer replaced by OT and HE."""
    text = RING128_DEVICES.read_text()
    assert text.count("offline: dealer") == 1
    path = tmp_path_factory.mktemp("ring128_he") / "two_party_ring128_he.devices"
    path.write_text(text.replace("offline: dealer", "offline: he"))
    return mixc.init_device(str(path))


def _secure(cluster, fn, *arrays):
    out, bundle = run_secure(cluster, fn, *arrays, with_bundle=True)
    for p in bundle.parties:
        assert "dealer" not in bundle.text(p).replace("dealerfree", "")
    assert bundle.parties == ("alice", "bob")
    ref = jax.tree_util.tree_map(np.asarray, fn(*[jnp.asarray(a) for a in arrays]))
    return out, ref, bundle


def _data(seed, n=200, scale=1.0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(n) * scale).astype(np.float32) for _ in range(2)]


def test_products_at_2e4_are_right(cluster):
    """x * x at 2e4 exceeds 2^26 before truncation (wraps at 64 bits, f = 18); below 2^46 here."""
    x, y = _data(1, scale=2e4)
    x[:3] = [2e4, -2e4, 3e5]
    out, ref, bundle = _secure(cluster, lambda x, y: (x * x, x * y), x, y)
    for o, r in zip(out, ref):
        np.testing.assert_allclose(o, r, rtol=1e-6, atol=1e-6)
    text = bundle.text("alice")
    assert "ot.arith_triple(" in text and "ring=128" in text
    assert "u128" in next(ln for ln in text.splitlines() if "trunc_wrap_finish" in ln)


def test_broadcast_scalar_product(cluster):
    x, y = _data(2, n=64)
    fn = lambda x, y: jnp.sum(y) * x * 0.25 + x * 1e-8  # noqa: E731
    out, ref, bundle = _secure(cluster, fn, x, y)
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    assert "ot.ole(" in bundle.text("bob")


def test_compare_relu_select_max(cluster):
    x, y = _data(3, scale=50.0)
    y[:4] = x[:4]  # ties
    def fn(x, y):
        return x < y, x >= y, jnp.maximum(x, 0), jnp.where(x < y, x * y, y), jnp.maximum(x, y)
    out, ref, bundle = _secure(cluster, fn, x, y)
    for i, (o, r) in enumerate(zip(out, ref)):
        if r.dtype == bool:
            np.testing.assert_array_equal(o, r, err_msg=f"output {i}")
        else:
            np.testing.assert_allclose(o, r, rtol=1e-6, atol=1e-6, err_msg=f"output {i}")
    # the comparisons' bits become ring elements by B2A pairs from bit-OLE mod 2^128
    bit_oles = [ln for ln in bundle.text("alice").splitlines()
                if "ot.bit_ole(" in ln and dealerfree.B2A_PAIR in ln]
    assert bit_oles and all("u128" in ln and "ring=128" in ln for ln in bit_oles)


def test_full_word_conversions_floor_cast_division(cluster):
    """bool2pc's 128-bit boolean words (A2B, B2A) on dealer-free correlations."""
    x, y = _data(5, n=40, scale=30.0)
    y = np.abs(y) + 2.0
    x[:4] = [2.5, -2.5, -0.0, 7.0]
    fn = lambda x, y: (jnp.floor(x), x.astype(jnp.int32), jnp.round(x), x / y)  # noqa: E731
    out, ref, _ = _secure(cluster, fn, x, y)
    for i, (o, r) in enumerate(zip(out, ref)):
        tol = 1e-4 if i == 3 else 0  # division: the reciprocal's approximation
        np.testing.assert_allclose(np.asarray(o, np.float64), r, atol=tol, err_msg=f"output {i}")


def test_loop_on_ring128(cluster):
    """A fori_loop whose body multiplies: its triples and truncation bits made per iteration."""
    x, y = _data(4, n=16)

    def fn(x, y):
        return jax.lax.fori_loop(0, 5, lambda i, v: v * y * 0.5 + x, x)

    specs = {"x": mixc.Input(cluster.p1, x.shape), "y": mixc.Input(cluster.p2, y.shape)}

    def body(x, y):
        return mixc.reveal(mixc.device(cluster.mpc)(fn)(x, y), cluster.p1)
    bundle = build(make_program(body, specs, "loop128"), verify_between=True)
    np.testing.assert_allclose(simulate(bundle, {"x": x, "y": y}), np.asarray(fn(x, y)),
                               rtol=1e-5, atol=1e-5)


PROGRAM = """
import jax.numpy as jnp
import mixc
c = mixc.init_device({devices!r})

@mixc.program
def f(x: mixc.Input(c.p1, (50,)), y: mixc.Input(c.p2, (50,))):
    def g(x, y):
        return jnp.where(x < y, x * x, jnp.sum(y) * y)
    return {{"z": mixc.reveal(mixc.device(c.mpc)(g)(x, y), c.p1)}}
"""


def test_mixc_run_local_over_tcp(cluster, tmp_path):
    """Two party processes over TCP (``mixc run --local``): the bundle passes the untrusted-
    bundle check, runs without a dealer, and its audit names the 128-bit OLE."""
    src = tmp_path / "prog.py"
    src.write_text(PROGRAM.format(devices=cluster.source))
    rng = np.random.default_rng(8)
    x, y = ((rng.standard_normal(50) * 2e4).astype(np.float32) for _ in range(2))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)

    def mixc_cmd(*args):
        done = subprocess.run([sys.executable, "-m", "mixc", *map(str, args)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout
    mixc_cmd("build", src, "-o", tmp_path / "bundle")
    mixc_cmd("run", tmp_path / "bundle", "--local", "--timeout", "120", "--output",
             tmp_path / "out", f"--input=x={tmp_path / 'x.npy'}", f"--input=y={tmp_path / 'y.npy'}")
    z = np.load(tmp_path / "out" / "alice" / "z.npy")
    np.testing.assert_allclose(z, np.asarray(jnp.where(x < y, x * x, jnp.sum(y) * y)), rtol=1e-6)
    audit = mixc_cmd("audit", tmp_path / "bundle")
    assert "arithmetic triples: OT-based OLE over Z_2^128 between alice and bob" in audit
    assert "no dealer" in audit
