"""Three parties, honest majority: replicated sharing (``protocols/rep3.py``, ``rep3bool.py``).

Programs run on ``examples/three_party.devices`` (alice, bob, carol; ``mpc``
over all three, no dealer) and every result is compared with plain JAX.

Error model (f = 18, ring Z_2^64; f = 40 on ``ring: 128``): encoding rounds by
2^-(f+1); linear ops are exact; a fixed-point product z (2f fraction bits) is
truncated by TruncPr dealt by the third party (rep3 module docstring) to
floor(z / 2^f) or floor(z / 2^f) + 1 whenever |z| < 2^(k-2), never a wrap: checked
exactly, on integers, up to |z| near 2^62 (2^126 on 128 bits), where ABY3's
share truncation failed for about one element in four. Comparisons and int32
arithmetic are exact.
"""
# No `from __future__ import annotations`: mixc.program needs the Input objects.
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import mixc
import mixc.passes
from mixc.bundle import build, simulate
from mixc.errors import MixcError
from mixc.protocols import rules_for

from conftest import chain_pass, make_program

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ROOT / "examples" / "three_party.devices"
ULP = 2.0 ** -18


@pytest.fixture(scope="module")
def trio():
    return mixc.init_device(str(DEVICES))


def run3(cluster, fn, arrays, owners, to="p1", stats=None, prefer=()):
    """Build fn on mpc with inputs at ``owners`` (device names), reveal to ``to``, simulate."""
    names = [f"x{i}" for i in range(len(arrays))]
    specs = {n: mixc.Input(getattr(cluster, o), a.shape, a.dtype)
             for n, o, a in zip(names, owners, arrays)}

    def body(**kw):
        out = mixc.device(cluster.mpc)(fn)(*[kw[n] for n in names])
        return mixc.reveal(out, getattr(cluster, to))
    prog = make_program(body, specs)
    bundle = build(prog, verify_between=True, prefer=prefer or None)
    return simulate(bundle, dict(zip(names, arrays)), stats=stats), bundle


def rnd(*shape, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale).clip(-4, 4).astype(np.float32)


def protocols_of(bundle, op):
    return {line.split('protocol="')[1].split('"')[0]
            for line in bundle.stages["select_protocols"].splitlines()
            if f"= {op}(" in line and "@mpc" in line}


# ------------------------------------------------------------ arithmetic

def test_products_and_linear_ops(trio):
    x, y, w = rnd(6, 5, seed=1), rnd(5, 4, seed=2), rnd(6, 5, seed=3)

    def fn(x, y, w):
        return (x @ y, x * w + 1.0, (x * 3.0) / 4.0, 2.0 - x, jnp.sum(x, axis=0),
                jnp.pad(x, 1, constant_values=0.5), x.T.reshape(-1)[3:9])
    out, bundle = run3(trio, fn, [x, y, w], ["p1", "p2", "p3"])
    ref = fn(x, y, w)
    terms = [5, 1, 1, 0, 0, 0, 0]
    for got, want, k in zip(out, ref, terms):
        np.testing.assert_allclose(got, want, atol=(4 * k + 2) * ULP + 2.0 ** -20 * np.abs(want).max(),
                                   rtol=0)
    assert protocols_of(bundle, "dot_general") == {"rep3"}


def test_int_products_are_exact(trio):
    rng = np.random.default_rng(5)
    a = rng.integers(-3000, 3000, (50,)).astype(np.int32)
    b = rng.integers(-3000, 3000, (50,)).astype(np.int32)
    out, _ = run3(trio, lambda a, b: (a * b + a, a - 2 * b), [a, b], ["p1", "p2"], to="p3")
    np.testing.assert_array_equal(out[0], a * b + a)
    np.testing.assert_array_equal(out[1], a - 2 * b)


def test_truncation_stays_within_one_ulp(trio):
    """Every product lands on a fixed-point neighbour of the product of the encoded inputs."""
    n = 20000
    x, y = rnd(n, seed=7), rnd(n, seed=8)
    out, _ = run3(trio, lambda x, y: x * y, [x, y], ["p2", "p3"])
    enc = lambda v: np.round(v.astype(np.float64) * 2 ** 18) / 2 ** 18  # noqa: E731
    exact = enc(x) * enc(y)
    err = np.abs(out.astype(np.float64) - exact)
    assert err.max() <= ULP + 2.0 ** -24 * np.abs(exact).max(), err.max()


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """The 3-party devices on ``ring: 128`` at 40 fraction bits."""
    text = DEVICES.read_text().replace('      domain: ["alice", "bob", "carol"]\n',
                                       '      domain: ["alice", "bob", "carol"]\n      ring: 128\n'
                                       '      fraction_bits: 40\n')
    path = tmp_path_factory.mktemp("wide") / "wide.devices"
    path.write_text(text)
    return mixc.init_device(str(path))


def on_ring(ring, trio, wide):
    """(cluster, fraction bits) of the 3-party device on ``ring``."""
    return (trio, 18) if ring == 64 else (wide, 40)


def _grid(ints, f):
    """Fixed-point integers (each with at most 24 significant bits) as exact float32."""
    return np.array([float(v) * 2.0 ** -f for v in ints], np.float32)


def _pieces(q, f):
    """q (integers, in units of 2^-f) split as q = sum(pieces) + rest: float32-exact pieces
    (24 significant bits each) and a rest in [0, 2^20), so that revealing
    trunc(z) - sum(pieces) recovers trunc(z) - q + rest exactly in float32."""
    pieces, rest = [], list(q)
    while any(abs(v) >= 2 ** 20 for v in rest):
        cut = [max(0, abs(v).bit_length() - 23) for v in rest]
        piece = [(v >> c) << c for v, c in zip(rest, cut)]
        pieces.append(piece)
        rest = [v - p for v, p in zip(rest, piece)]
    return [_grid(p, f) for p in pieces], rest


def assert_exact_truncation(cluster, f, big, small, public=False):
    """x * y for fixed-point integers ``big`` and ``small`` (x = big 2^-f, y = small 2^-f,
    y public when ``public``): the truncated product is floor(big small / 2^f) or that + 1.
    The result minus float32 pieces of the floor is revealed, so no digit is lost."""
    q = [(a * b) >> f for a, b in zip(big, small)]
    pieces, rest = _pieces(q, f)
    x, y = _grid(big, f), _grid(small, f)
    n = len(pieces)

    def minus_pieces(z, ps):
        for p in ps:
            z = z - p
        return z
    if public:
        out, _ = run3(cluster, lambda x, *ps: minus_pieces(x * y, ps), [x] + pieces,
                      ["p1"] + ["p3"] * n)
    else:
        out, _ = run3(cluster, lambda x, y, *ps: minus_pieces(x * y, ps), [x, y] + pieces,
                      ["p1", "p2"] + ["p3"] * n)
    off = np.round(np.asarray(out, np.float64) * 2.0 ** f) - np.array(rest, np.float64)
    bad = ~np.isin(off, (0.0, 1.0))
    assert not bad.any(), [(big[i], small[i], off[i]) for i in np.flatnonzero(bad)]


def _near_the_limit(k, f, n, seed):
    """n pairs of fixed-point integers (24 significant bits each, either sign) whose
    product z has |z| in [2^(k-5), 2^(k-2)); the first n/2 keep low bits below 2^f."""
    rng = np.random.default_rng(seed)
    big, small = [], []
    for i in range(n):
        while True:
            a = int(rng.integers(2 ** 22, 2 ** 24)) * int(rng.choice([-1, 1]))
            m = int(rng.integers(2 ** 22, 2 ** 24)) * int(rng.choice([-1, 1]))
            shift = int(rng.integers(k - 5 - 46, k - 2 - 46))  # |a m| is about 2^46
            low = min(shift, f - 1) if i < n // 2 else 0
            a, b = a << low, m << (shift - low)
            if 2 ** (k - 5) <= abs(a * b) < 2 ** (k - 2):
                break
        big.append(a)
        small.append(b)
    return big, small


@pytest.mark.parametrize("ring", [64, 128])
def test_truncation_is_exact_near_the_limit(trio, wide, ring):
    """Products z up to 2^(k-2) in magnitude (2^62 on 64 bits: product values near 2^25
    at f = 18), secret by secret and secret by public: floor(z / 2^f) or one more, never
    a wrap (ABY3's share truncation wraps for about one element in four up there)."""
    cluster, f = on_ring(ring, trio, wide)
    big, small = _near_the_limit(ring, f, 24, seed=ring)
    assert_exact_truncation(cluster, f, big, small)
    y = small[0]
    scaled = [a >> max(0, abs(a * y).bit_length() - (ring - 2)) for a in big[:12]]
    assert_exact_truncation(cluster, f, scaled, [y] * 12, public=True)


@pytest.mark.parametrize("ring", [64, 128])
def test_large_products_match_numpy(trio, wide, ring):
    """Matrix products, products by a public value and division by one, of values whose
    products run up to 2^24 (f = 18) and 2^44 (f = 40), against numpy in float64."""
    cluster, f = on_ring(ring, trio, wide)
    top = 2.0 ** (12 if ring == 64 else 22)
    seventh = np.round(2.0 ** f / 7.0) / 2.0 ** f  # 1/7 as encoded for the division
    rng = np.random.default_rng(31)
    x = rng.uniform(-top, top, (5, 8)).astype(np.float32)
    w = rng.uniform(-top / 8, top / 8, (8, 3)).astype(np.float32)
    out, _ = run3(cluster, lambda x, w: (x @ w, x * 3000.5, x / 7.0, x * x), [x, w], ["p1", "p2"])
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    for got, want in zip(out, (x64 @ w64, x64 * 3000.5, x64 * seventh, x64 * x64)):
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("ring", [64, 128])
@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 2 ** 24 - 1), st.integers(1, 2 ** 24 - 1),
                          st.floats(0, 1), st.integers(0, 39), st.booleans(), st.booleans()),
                min_size=1, max_size=12))
def test_truncation_property(trio, wide, ring, cases):
    """For any |z| < 2^(k-2): the truncated product is floor(z / 2^f) or one more
    (``scale`` places |z| anywhere up to the limit, ``low`` keeps low bits below 2^f)."""
    cluster, f = on_ring(ring, trio, wide)
    big, small = [], []
    for a, m, scale, low, neg_a, neg_b in cases:
        shift = int(scale * (ring - 2 - (a * m).bit_length()))
        low = min(low, shift, f - 1)
        big.append((-a if neg_a else a) << low)
        small.append((-m if neg_b else m) << (shift - low))
    assert_exact_truncation(cluster, f, big, small)


@pytest.mark.parametrize("ring", [64, 128])
def test_fixed_point_product_bytes_and_rounds(trio, wide, ring):
    """A fixed-point product moves eight ring elements per element (P2's folded part to
    P0 and P1, the opening both ways, the dealt msb and low corrections, the swap), a
    product by a public value six; two rounds each, as declared in the cost report. P2
    (carol, the dealer) receives nothing for the truncation."""
    cluster, _ = on_ring(ring, trio, wide)
    n, size = 2048, ring // 8
    x, y = rnd(n, seed=40), rnd(n, seed=41)
    for fn, args, owners, elements in ((lambda x, y: x * y, [x, y], ["p1", "p2"], 8),
                                       (lambda x: x * 3.0, [x], ["p1"], 6)):
        stats = {}
        out, bundle = run3(cluster, fn, args, owners, stats=stats)
        np.testing.assert_allclose(out, fn(*args), atol=4 * ULP)
        sent = sum(s["bytes_sent_total"] for s in stats.values())
        shared_and_revealed = (2 * len(args) + 2) * size * n
        assert sent - shared_and_revealed == elements * size * n
        (row,) = [r for r in bundle.cost_report.rows if r[1] == "mul"]
        assert (row[3].bytes, row[3].rounds) == (elements * size * n, 2)
        # the dealer of the truncation receives its input shares and nothing else: never c
        assert bundle.text("carol").count("= recv()") == len(args)


@settings(max_examples=15, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 12),
                  elements=st.floats(-2.0 ** 20, 2.0 ** 20, width=32)),
       st.sampled_from(["p1", "p2", "p3"]), st.sampled_from(["p1", "p2", "p3"]))
def test_shares_reconstruct(trio, x, owner, to):
    """Sharing at any party and revealing to any gives the fixed-point value back."""
    out, _ = run3(trio, lambda v: v + 0.0, [x], [owner], to=to)
    want = np.round(x.astype(np.float64) * 2 ** 18) / 2 ** 18
    np.testing.assert_array_equal(out.astype(np.float64), want.astype(np.float32))


# ------------------------------------------------------------ boolean shares

def test_comparisons_and_logic(trio):
    x, y = rnd(130, seed=11), rnd(130, seed=12)
    y[:10] = x[:10]  # ties

    def fn(x, y):
        return (x < y, x <= y, x > y, x == y, x != y, ((x < y) & (x > 0)) | ~(y > 1),
                jnp.logical_xor(x < 0, y < 0))
    out, bundle = run3(trio, fn, [x, y], ["p1", "p2"])
    for got, want in zip(out, fn(x, y)):
        np.testing.assert_array_equal(got, np.asarray(want))
    assert protocols_of(bundle, "lt") == {"rep3.bool"}


def test_nonlinear_built_on_comparisons(trio):
    """relu, max, select, sigmoid, sort, argmax and secret indexing: the shared translations,
    unchanged, on the 3-party device."""
    x, y = rnd(40, seed=13), rnd(40, seed=14)
    cases = {
        "relu": (lambda x, y: jnp.maximum(x, 0), 0.0),
        "max": (lambda x, y: jnp.maximum(x, y), 0.0),
        "where": (lambda x, y: jnp.where(x < y, x * 2.0, y), 4 * ULP),
        "sigmoid": (jax.nn.sigmoid, 5e-4),
        "sort": (lambda x, y: jnp.sort(x), 0.0),
        "argmax": (lambda x, y: jnp.argmax(x), 0.0),
        "take": (lambda x, y: x[jnp.argmax(y)], 0.0),
    }
    for name, (fn, tol) in cases.items():
        out, _ = run3(trio, fn if name != "sigmoid" else (lambda x, y: jax.nn.sigmoid(x)),
                      [x, y], ["p1", "p1"])
        want = np.asarray(fn(x, y) if name != "sigmoid" else jax.nn.sigmoid(x))
        np.testing.assert_allclose(np.asarray(out, np.float64), want.astype(np.float64),
                                   atol=tol + 2 * ULP, rtol=0, err_msg=name)


def test_input_and_output_outside_the_device(tmp_path):
    """A fourth party's input is shared into the device (it sends each party its pair) and
    the result revealed back to it (two messages)."""
    four = DEVICES.read_text().replace('domain: ["alice", "bob", "carol"]\ndevice:',
                                       'domain: ["alice", "bob", "carol", "dave"]\ndevice:\n'
                                       '  - p4:\n      type: PYU\n      domain: "dave"')
    (tmp_path / "four.devices").write_text(four)
    cluster = mixc.init_device(str(tmp_path / "four.devices"))
    x, y = rnd(10, seed=20), rnd(10, seed=21)
    out, bundle = run3(cluster, lambda x, y: x * y - x, [x, y], ["p4", "p4"], to="p4")
    np.testing.assert_allclose(out, x * y - x, atol=8 * ULP, rtol=0)
    assert set(bundle.parties) == {"alice", "bob", "carol", "dave"}


def test_loops_stay_loops(trio):
    """A lax loop on the 3-party device is one ``loop`` op in every party's program (each
    party carries both components of its replicated pair), the same size at 4 and 40 steps."""
    x, w = rnd(8, seed=18), rnd(8, seed=19)

    def fn(steps):
        return lambda x, w: jax.lax.fori_loop(0, steps, lambda i, a: a * 0.5 + x * w, x)
    out, bundle = run3(trio, fn(4), [x, w], ["p1", "p3"])
    np.testing.assert_allclose(out, fn(4)(x, w), atol=16 * ULP, rtol=0)
    assert all(sum(n.op == "loop" for n in p.nodes) == 1 for p in bundle.programs.values())
    _, longer = run3(trio, fn(40), [x, w], ["p1", "p3"])
    for p in bundle.parties:  # only the trip count's digits differ
        assert abs(len(bundle.text(p)) - len(longer.text(p))) <= 2


def test_sgd_loop_with_minibatches_and_comparisons(trio):
    """Minibatch logistic regression in a fori_loop: dynamic_slice at the counter, sigmoid
    (comparisons, boolean shares) and a public start carried as replicated shares."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 1.0], np.float32) > 0).astype(np.float32)

    def train(x, y):
        def step(i, w):
            xb = jax.lax.dynamic_slice(x, (i * 16, 0), (16, 4))
            yb = jax.lax.dynamic_slice(y, (i * 16,), (16,))
            return w - 0.5 * xb.T @ (jax.nn.sigmoid(xb @ w) - yb) / 16
        return jax.lax.fori_loop(0, 4, step, jnp.zeros(4, jnp.float32))
    out, bundle = run3(trio, train, [x, y], ["p1", "p2"])
    np.testing.assert_allclose(out, train(x, y), atol=2e-3, rtol=0)
    assert all(sum(n.op == "loop" for n in p.nodes) == 1 for p in bundle.programs.values())


@settings(max_examples=10, deadline=None)
@given(hnp.arrays(np.int32, st.integers(1, 70), elements=st.integers(-2 ** 31, 2 ** 31 - 1)),
       st.sampled_from([("a2b", "b2a"), ("a2b", "b2a", "a2b")]))
def test_a2b_b2a_identity(trio, x, chain):
    """a2b and b2a of full words (adder, bit injection) chained as written are the identity."""
    pipeline = list(mixc.passes.PIPELINE)
    at = [n for n, _ in pipeline].index("select_protocols")
    pipeline.insert(at, ("force_conversions", chain_pass(chain)))
    saved = mixc.passes.PIPELINE
    mixc.passes.PIPELINE = pipeline
    try:
        out, bundle = run3(trio, lambda v: v.reshape(-1), [x], ["p1"])
    finally:
        mixc.passes.PIPELINE = saved
    assert protocols_of(bundle, "a2b") == {"rep3.bool"}
    np.testing.assert_array_equal(out, x.reshape(-1))


# ------------------------------------------------------------ tables, errors, processes

def test_rules_registered_with_costs(trio):
    for op in ("mul", "dot_general", "lt", "eq", "and", "a2b", "b2a", "reveal", "to"):
        mine = [r for r in rules_for(op) if r.protocol.startswith("rep3")]
        assert mine and all(r.doc for r in mine), op
    x, y = rnd(1000, seed=15), rnd(1000, seed=16)
    _, bundle = run3(trio, lambda x, y: x * y, [x, y], ["p1", "p2"])
    report = bundle.stages["select_protocols"]
    assert 'protocol="rep3"' in report


def test_range_sanitizer_reads_replicated_shares(trio):
    """simulate's range check puts the 3-party shares back together: a product that wraps
    (x * x at 3e4, past 2^26 before truncation) warns at the author's line, in a loop too."""
    x = np.array([1.0, 2.0, 3e4, 4.0], np.float32)
    with pytest.warns(mixc.RangeWarning, match="mul: a product of magnitude 9e\\+08"):
        run3(trio, lambda x: x * x, [x], ["p1"])
    with pytest.warns(mixc.RangeWarning, match="before truncation"):
        run3(trio, lambda x: jax.lax.fori_loop(0, 3, lambda i, a: a * x, x), [x], ["p1"])


def test_floor_and_ceil_are_exact(trio):
    """floor clears the fraction bits of the XOR shares (after a full-word A2B); ceil is
    -floor(-x): exact on the encoded values, as on two parties."""
    x = rnd(300, seed=23, scale=50.0)
    enc = np.round(x.astype(np.float64) * 2 ** 18) / 2 ** 18
    for fn, ref in ((jnp.floor, np.floor), (jnp.ceil, np.ceil)):
        out, _ = run3(trio, fn, [x], ["p2"])
        np.testing.assert_array_equal(out, ref(enc).astype(np.float32))


def test_rounding_and_int_casts_as_jax(trio):
    """round (ties to even, as jnp.round), lax.round (ties away) and float -> int32
    (toward zero): exact on the encoded values, as on two parties."""
    x = np.concatenate([rnd(200, seed=24, scale=40.0),
                        np.array([2.5, -2.5, 0.5, -0.5, 3.0, -7.25], np.float32)])
    enc = (np.round(x.astype(np.float64) * 2 ** 18) / 2 ** 18).astype(np.float32)
    for fn in (jnp.round, lambda v: jax.lax.round(v), lambda v: v.astype(jnp.int32)):
        out, _ = run3(trio, fn, [x], ["p3"])
        np.testing.assert_array_equal(out, np.asarray(fn(jnp.asarray(enc))))


def test_integer_shifts(trio):
    """<<, >> and logical >> of int32 secrets: local on the XOR shares, bit for bit as JAX."""
    rng = np.random.default_rng(25)
    a = rng.integers(-2 ** 31, 2 ** 31, 64, dtype=np.int64).astype(np.int32)
    for fn in (lambda v: v << 3, lambda v: v >> 5,
               lambda v: jax.lax.shift_right_logical(v, jnp.int32(7))):
        out, _ = run3(trio, fn, [a], ["p2"])
        np.testing.assert_array_equal(out, np.asarray(fn(jnp.asarray(a))))


def test_select_with_a_known_predicate(trio):
    """where(public mask, secret, secret or public): local on the replicated shares (jnp.diag,
    jnp.tril build such a mask); it crashed, the lowering reading the mask as shares."""
    x, y = rnd(4, 4, seed=26), rnd(4, 4, seed=27)
    mask = np.tri(4, 4, dtype=bool)
    for fn in (jnp.diag, lambda v: jnp.diag(jnp.diag(v)), jnp.tril,
               lambda v: jnp.where(mask, v, 2.5)):
        out, bundle = run3(trio, fn, [x[0] if fn is jnp.diag else x], ["p1"])
        want = np.asarray(fn(jnp.asarray(x[0] if fn is jnp.diag else x)))
        np.testing.assert_allclose(out, want, atol=ULP)
    out, _ = run3(trio, lambda a, b: jnp.where(mask, a, b), [x, y], ["p2", "p3"])
    np.testing.assert_allclose(out, np.where(mask, x, y), atol=ULP)


@pytest.mark.parametrize("ring", [64, 128])
def test_exp_family(trio, wide, ring):
    """exp's range reduction turns a 0/1 share back into a boolean one: bit 0 of the share's
    low u64 word on 128 bits. Errors: mixc/approx.py's table (exp rel 1e-4)."""
    cluster, _ = on_ring(ring, trio, wide)
    x = rnd(3, 4, seed=28)
    for fn in (jnp.exp, jax.nn.softmax, jax.nn.elu):
        out, _ = run3(cluster, fn, [x], ["p2"])
        np.testing.assert_allclose(out, np.asarray(fn(jnp.asarray(x))), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ring", [64, 128])
def test_bitwise_ops_on_int32_words(trio, wide, ring):
    """&, |, ^, ~ of int32 secrets (and with a public word): on the XOR shares of whole
    ring words, bit for bit as JAX, negative values included (sign-extended words)."""
    cluster, _ = on_ring(ring, trio, wide)
    rng = np.random.default_rng(29)
    a, b = (rng.integers(-2 ** 31, 2 ** 31, 40, dtype=np.int64).astype(np.int32)
            for _ in range(2))
    mask = np.int32(-0x0F0F0F10)
    for fn in (lambda x, y: x & y, lambda x, y: x | y, lambda x, y: x ^ y,
               lambda x, y: ~x, lambda x, y: (x & mask) | (~y ^ 7)):
        out, _ = run3(cluster, fn, [a, b], ["p1", "p3"])
        np.testing.assert_array_equal(out, np.asarray(fn(jnp.asarray(a), jnp.asarray(b))))


@pytest.mark.parametrize("ring", [64, 128])
def test_convolutions(trio, wide, ring):
    """conv_general_dilated (jnp.convolve, lax.conv) of secrets, and of a secret by a public
    kernel: the product's cross terms and truncation, as for dot_general."""
    cluster, f = on_ring(ring, trio, wide)
    x, w = rnd(1, 2, 6, 6, seed=30), rnd(3, 2, 3, 3, seed=31)

    def conv(v, k):
        return jax.lax.conv_general_dilated(v, k, (2, 1), ((1, 1), (0, 1)), rhs_dilation=(1, 2))
    tol = 18 * 4 * 2.0 ** -f + 1e-5       # 18 products of values below 4, each input encoded
    out, _ = run3(cluster, conv, [x, w], ["p1", "p2"])
    np.testing.assert_allclose(out, np.asarray(conv(x, w)), atol=tol)
    out, _ = run3(cluster, lambda v: conv(v, w), [x], ["p3"])
    np.testing.assert_allclose(out, np.asarray(conv(x, w)), atol=tol)
    u, v = rnd(6, seed=32), rnd(3, seed=33)
    out, _ = run3(cluster, jnp.convolve, [u, v], ["p2", "p3"])
    np.testing.assert_allclose(out, np.convolve(u, v), atol=tol)


def test_two_party_options_refused_on_three_parties(trio, tmp_path):
    """A 3-party device asking for HE and OT correlations (offline: he), or an HE device
    over three parties, is refused in one line: HE stays 2-party."""
    from mixc.errors import ConfigError
    with pytest.raises(ConfigError, match="an HE device needs exactly 2 parties"):
        mixc.init_device(DEVICES.read_text() + "  - he:\n      type: HE\n"
                         '      domain: ["alice", "bob", "carol"]\n      key_owner: "alice"\n')
    x = rnd(4, seed=17)
    bad = DEVICES.read_text().replace('      domain: ["alice", "bob", "carol"]\n',
                                      '      domain: ["alice", "bob", "carol"]\n      offline: he\n')
    (tmp_path / "bad.devices").write_text(bad)
    with pytest.raises(MixcError, match="offline: he .* is for 2-party devices"):
        run3(mixc.init_device(str(tmp_path / "bad.devices")), lambda v: v * v, [x], ["p1"])
def test_ring_128_arithmetic(tmp_path):
    """ring: 128 (f = 40): sharing, linear ops, products and matrix products with their
    truncation, reveal; x * x at 2e4 is right (it wraps on 64 bits at f = 18), and a
    product by 1e-8 keeps five digits. Comparisons run there too (tests/test_ring128_bool.py)."""
    wide = DEVICES.read_text().replace('      domain: ["alice", "bob", "carol"]\n',
                                       '      domain: ["alice", "bob", "carol"]\n      ring: 128\n'
                                       '      fraction_bits: 40\n')
    (tmp_path / "wide.devices").write_text(wide)
    cluster = mixc.init_device(str(tmp_path / "wide.devices"))
    x = np.array([2e4, -1.5e4, 3.25, -0.5], np.float32)
    m = rnd(4, 3, seed=26)
    stats = {}
    out, bundle = run3(cluster, lambda x, m: (x * x, (x * 1e-8) @ m * 1e8, x @ m - 2.0 * x[0]),
                       [x, m], ["p1", "p2"], stats=stats)
    want = [x.astype(np.float64) ** 2, x.astype(np.float64) @ m, x.astype(np.float64) @ m - 2 * x[0]]
    # 1e-8 encodes as 10995 units of 2^-40: relative error 1e-5
    for got, ref, rtol in zip(out, want, (1e-6, 2e-5, 1e-6)):
        np.testing.assert_allclose(np.asarray(got, np.float64), ref, rtol=rtol, atol=1e-3)
    assert "u128" in bundle.text("alice")
    relu, _ = run3(cluster, lambda x: jnp.maximum(x * x - 1e6, 0.0), [x], ["p1"])
    np.testing.assert_allclose(relu, np.maximum(x.astype(np.float64) ** 2 - 1e6, 0.0), rtol=1e-6)


CLI_PROGRAM = f'''
import jax.numpy as jnp
import mixc
from mixc import device, reveal
cluster = mixc.init_device({str(DEVICES)!r})
p1, p2, p3, mpc = cluster.p1, cluster.p2, cluster.p3, cluster.mpc
@mixc.program
def three(a: mixc.Input(p1, (4, 3)), b: mixc.Input(p2, (3, 5)), c: mixc.Input(p3, (4, 5))):
    r = device(mpc)(lambda a, b, c: (a @ b) * c + 1.0)(a, b, c)
    return {{"r1": reveal(r, p1), "r3": reveal(r, p3)}}
'''


def test_three_processes_over_tcp(tmp_path):
    rng = np.random.default_rng(3)
    arrays = {"a": rng.normal(size=(4, 3)), "b": rng.normal(size=(3, 5)),
              "c": rng.normal(size=(4, 5))}
    for k, v in arrays.items():
        np.save(tmp_path / f"{k}.npy", v.astype(np.float32))
    (tmp_path / "three.py").write_text(CLI_PROGRAM)

    def mixc_cmd(*args):
        return subprocess.run([sys.executable, "-m", "mixc", *map(str, args)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
    res = mixc_cmd("build", "three.py", "-o", "bundle", "--cost-report")
    assert res.returncode == 0, res.stderr
    assert "dot_general  rep3" in res.stdout and "mul          rep3" in res.stdout, res.stdout
    assert not (tmp_path / "bundle" / "dealer.mir").exists()
    res = mixc_cmd("run", "bundle", "--local", *[f"--input={k}={tmp_path / k}.npy" for k in arrays],
                   "--output", "out", "--timeout", 60)
    assert res.returncode == 0, res.stderr
    a, b, c = (arrays[k].astype(np.float32) for k in "abc")
    want = (a @ b) * c + 1.0
    for party, name in (("alice", "r1"), ("carol", "r3")):
        got = np.load(tmp_path / "out" / party / f"{name}.npy")
        np.testing.assert_allclose(got, want, atol=20 * ULP, rtol=0)
