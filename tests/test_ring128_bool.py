"""Boolean shares on the 128-bit ring (``ring: 128``): A2B and B2A of full words, rounding
to integers, comparisons (radix-2 and radix-4) and what is built on them, against plain JAX.

On a ``ring: 128`` device a full boolean word is a u128 element (the IR's ``u128``: two
u64 words, low first); AND gates on it run as gates on its two words, the Kogge-Stone
adder of A2B has 7 levels instead of 6, and B2A of a full word recombines 128 bits
(rounding converts only the bits of floor(x) its result keeps). The tests use
values whose encoding at f = 40 is beyond 2^63 units (|x| >= 2^23): a 64-bit circuit
would be wrong there, so a right answer shows the 128-bit circuit ran. Rounding and
conversions are exact on the fixed-point grid (multiples of 2^-40: every float32 of
magnitude >= 2^-16 is one); comparisons, max, select and sort are exact; division
carries its approximation's error.

Devices: 2 parties with a dealer (examples/two_party_ring128.devices), 3 parties
(examples/three_party.devices with ``ring: 128``) and 2 parties without a dealer
(examples/two_party_he.devices with ``ring: 128``: AND triples and B2A pairs by OT),
the last two written by fixtures. The cost model's bytes must match the run's within
10% on each.
"""
# No `from __future__ import annotations`: mixc.program needs the Input objects.
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

from conftest import REPO, chain_pass, secure_program

FRAC = 40
ULP = 2.0 ** -FRAC
BIG = 2.0 ** 23  # |x| * 2^40 >= 2^63: out of a 64-bit word's reach


def on_grid(x):
    """x snapped to the fixed-point grid (f = 40), so that encoding it loses nothing."""
    return (np.round(np.asarray(x, np.float64) / ULP) * ULP).astype(np.float32)


@pytest.fixture(scope="module")
def two128():
    return mixc.init_device(str(REPO / "examples" / "two_party_ring128.devices"))


def _with_ring128(tmp_path_factory, example, frac=FRAC):
    """``example``'s devices with the MPC device on the 128-bit ring at ``frac`` fraction
    bits."""
    text = (REPO / "examples" / example).read_text()
    path = tmp_path_factory.mktemp("ring128") / example
    path.write_text(text.rstrip("\n") + f"\n      ring: 128\n      fraction_bits: {frac}\n")
    return mixc.init_device(str(path))


@pytest.fixture(scope="module")
def three128(tmp_path_factory):
    return _with_ring128(tmp_path_factory, "three_party.devices")


@pytest.fixture(scope="module")
def dealer_free128(tmp_path_factory):
    return _with_ring128(tmp_path_factory, "two_party_he.devices")


@pytest.fixture(params=["two", "three", "dealer_free"])
def cluster128(request, two128, three128, dealer_free128):
    return {"two": two128, "three": three128, "dealer_free": dealer_free128}[request.param]


def run(cluster, fn, *arrays, stats=None, **build_args):
    prog, inputs = secure_program(cluster, fn, *arrays)
    bundle = build(prog, verify_between=True, **build_args)
    return simulate(bundle, inputs, stats=stats), bundle


def protocols_of(bundle, *ops):
    return {n.attrs["protocol"] for n in bundle.graph_module.nodes if n.op in ops}


# ------------------------------------------------------------ rounding to integers

def rounded(x):
    """floor, ceil, both rounds, trunc and the int32 cast of x."""
    return {"floor": jnp.floor(x), "ceil": jnp.ceil(x), "round": jnp.round(x),
            "round_away": jax.lax.round(x), "trunc": jnp.trunc(x),
            "int32": x.astype(jnp.int32)}


CHOSEN = on_grid([0, 1, -1, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.25, -0.75, 2.75, -2.75,
                  ULP, -ULP, 3 * ULP, -3 * ULP, 0.5 + ULP, -0.5 - ULP, 0.5 - 2 ** -20,
                  1 - 2 ** -20, -1 + 2 ** -20, 12345.25, -12345.5, 2 ** 20 + 0.5,
                  -2 ** 20 - 0.5, BIG + 0.5, -BIG - 0.5, BIG + 1.5, -BIG - 1.5,
                  2 ** 30, -2 ** 30, 2 ** 30 + 64, -2 ** 30 - 192])


def assert_same(out, ref):
    for name, want in ref.items():
        want = np.asarray(want)
        assert out[name].dtype == want.dtype, name
        np.testing.assert_array_equal(out[name], want, err_msg=name)


def test_rounding_matches_jax(cluster128, plain):
    out, bundle = run(cluster128, rounded, CHOSEN)
    assert_same(out, plain(rounded, CHOSEN))
    mpc = cluster128.mpc
    family = "rep3.bool" if len(mpc.parties) == 3 else \
        "bool2pc.ot" if mpc.offline == "he" else "bool2pc"
    assert protocols_of(bundle, "round", "convert_element_type") == {family}


@pytest.fixture(scope="module")
def random_bundles(two128, three128, dealer_free128):
    x = np.zeros(12, np.float32)
    return [build(secure_program(c, rounded, x)[0], verify_between=True)
            for c in (two128, three128, dealer_free128)]


GRID_VALUES = st.one_of(
    st.floats(-2 ** 30, 2 ** 30, width=32),
    st.integers(-2 ** 25, 2 ** 25).map(lambda k: k / 2),       # ties, beyond 2^23
    st.integers(-2 ** 8, 2 ** 8).map(lambda k: k * ULP),       # the smallest fractions
)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(hnp.arrays(np.float32, (12,), elements=GRID_VALUES))
def test_random_rounding_matches_jax(random_bundles, plain, x):
    x = on_grid(x)
    for bundle in random_bundles:
        assert_same(simulate(bundle, {"x0": x}), plain(rounded, x))


@pytest.mark.parametrize("example", ["two_party.devices", "three_party.devices"])
def test_rounding_at_48_fraction_bits(tmp_path_factory, plain, example):
    """The most fraction bits a 128-bit ring allows: the round-up bit's tree reads 49 bits
    of the low word, and a fixed-point result keeps 128 - 48 = 80 bits of floor(x)."""
    cluster = _with_ring128(tmp_path_factory, example, frac=48)
    x = (np.round(CHOSEN.astype(np.float64) * 2.0 ** 48) / 2.0 ** 48).astype(np.float32)
    x = np.concatenate([x, np.float32([2.0 ** -48, -2.0 ** -48, 0.5 + 2.0 ** -48])])
    assert_same(run(cluster, rounded, x)[0], plain(rounded, x))


def test_integer_division_by_a_known_divisor(cluster128):
    """int32 // and % by a constant: integer shifts of XOR shares sign-extended to 128 bits."""
    x = np.array([0, 1, -1, 6, -7, 999, -1000, 2 ** 17, -(2 ** 17) + 3], np.int32)

    def f(x, one):
        x = x * one
        return x // 7, x % 7, jax.lax.div(x, -3), x >> 2, x << 3
    got, _ = run(cluster128, f, x, np.ones_like(x))
    for g, w in zip(got, f(jnp.asarray(x), jnp.ones_like(x))):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_rounding_and_comparison_in_a_loop(cluster128, plain):
    """A fori_loop body with floor and a comparison: the loop carries u128 shares."""
    x = on_grid([2.5, -2.5, 3.75, -1.25, 1e4, -7.5, 0.5, 12345.25])

    def fn(a, b):
        def body(i, acc):
            return jnp.floor(acc * 1.5) + jnp.where(a[i] > acc, 1.0, -1.0)
        return jax.lax.fori_loop(0, 4, body, b)
    got, _ = run(cluster128, fn, x, x * 0.5)
    np.testing.assert_array_equal(got, plain(fn, x, x * 0.5))


@pytest.mark.parametrize("offline", ["dealer", "he"])
def test_int32_bitwise_logic_on_two_parties(two128, dealer_free128, offline):
    """AND, OR, XOR and NOT of int32 words (2 parties: full-word AND gates on u128)."""
    x = np.array([0, 1, -1, 2 ** 31 - 1, -2 ** 31, 12345, -999, 7], np.int32)
    y = np.array([5, -1, 3, -2 ** 31, 2 ** 30, -6, 0, 7], np.int32)

    def f(a, b):
        return (a & b) + 1, (a | 12) - 1, (a ^ b) * 2, ~a + b
    got, _ = run(two128 if offline == "dealer" else dealer_free128, f, x, y)
    for g, w in zip(got, f(jnp.asarray(x), jnp.asarray(y))):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_scalars_and_matrices(cluster128, plain):
    """0-d and 2-D values through rounding, comparisons, argmax and sort along an axis."""
    x = on_grid([[2.5, -2.5, 3.75], [-1.25, BIG + 0.5, -7.5]])

    def fn(a):
        return (jnp.floor(a), jnp.round(a.sum()), a.astype(jnp.int32), jnp.argmax(a, axis=1),
                jnp.sort(a, axis=0), a[0, 0] < a[1, 1], jnp.floor(a[1, 1]))
    got, _ = run(cluster128, fn, x)
    for g, w in zip(got, plain(fn, x)):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_u128_words_views():
    """``ring_words`` and back (the bitwise ops' view of u128 values), 0-d included."""
    from mixc.runtime import kernels
    for shape in [(), (3,), (2, 3)]:
        ints = np.arange(int(np.prod(shape)), dtype=object).reshape(shape) * (3 << 64) + 5
        x = kernels.r128_from_int(ints)
        words = kernels.r128_words(x)
        assert words.shape == shape + (2,) and words.dtype == np.uint64
        np.testing.assert_array_equal(words[..., 0], np.full(shape, 5, np.uint64))
        np.testing.assert_array_equal(kernels.r128_to_int(kernels.r128_from_words(words)), ints)


# ------------------------------------------------------------ conversions

def forced_chain(cluster, monkeypatch, chain, x):
    """x revealed through an explicit chain of conversions (``conftest.chain_pass``)."""
    pipeline = list(mixc.passes.PIPELINE)
    pipeline.insert([n for n, _ in pipeline].index("select_protocols"),
                    ("force_conversions", chain_pass(chain)))
    monkeypatch.setattr(mixc.passes, "PIPELINE", pipeline)
    prog, inputs = secure_program(cluster, lambda v: v.reshape(-1), x)
    bundle = build(prog, verify_between=True)
    monkeypatch.undo()
    ops = [n.op for n in bundle.graph_module.nodes]
    assert ops.count("a2b") >= chain.count("a2b") and ops.count("b2a") >= chain.count("b2a")
    return simulate(bundle, inputs)


CHAINS = [("a2b", "b2a"), ("a2b", "b2a", "a2b")]


@pytest.mark.parametrize("chain", CHAINS, ids=["B2A.A2B", "A2B.B2A"])
def test_forced_conversions_are_identities(cluster128, monkeypatch, chain):
    """Full 128-bit words through A2B and B2A: the float32 values are on the grid and
    up to 2^80 (2^120 units), the int32 ones span the type."""
    f = on_grid([[0, -0.0, ULP, -ULP, 1, -1, 0.1, -0.1, 3.14159, -2.71828],
                 [BIG, -BIG, 2 ** 40, -2 ** 40, 2 ** 62, -2 ** 62, 2 ** 80, -2 ** 80,
                  1e-9, -1e-9]])
    np.testing.assert_array_equal(forced_chain(cluster128, monkeypatch, chain, f),
                                  f.reshape(-1))
    i = np.array([[0, 1, -1, -2 ** 31, 2 ** 31 - 1], [2 ** 30, -2 ** 30, 5, -5, 99]],
                 np.int32)
    np.testing.assert_array_equal(forced_chain(cluster128, monkeypatch, chain, i),
                                  i.reshape(-1))


# ------------------------------------------------------------ comparisons and their users

X = on_grid([2e4, -2e4, 3.5, 1e-3, 7.0, -1e-9, BIG * 3, -BIG * 5, 0.0, 1e9])
Y = on_grid([1e-3, 3.5, -2e4, 2e4, 7.0, 1e-9, -BIG * 3, BIG * 5, -0.0, 1e9 + 64])


def comparisons(a, b):
    return (a < b, a >= b, a == b, jax.nn.relu(a - b), jnp.maximum(a, b), jnp.max(a),
            jnp.where(a < b, a, b), jnp.sort(a), jnp.argmax(b))


def test_comparisons_and_their_users_match_jax(cluster128, plain):
    got, _ = run(cluster128, comparisons, X, Y)
    for g, w in zip(got, plain(comparisons, X, Y)):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_division_matches_jax(cluster128, plain):
    """a / b over the positive and negative range (the reciprocal's error, not the ring's)."""
    a = np.array([1.0, -3.0, 1e6, -2.5e-3, 7.0, 4e4], np.float32)
    b = np.array([3.0, 7.0, -1e3, 0.5, -1e-2, 2e5], np.float32)
    got, _ = run(cluster128, lambda p, q: p / q, a, b)
    np.testing.assert_allclose(got, plain(lambda p, q: p / q, a, b), rtol=2e-3)


def test_radix4_comparison(two128):
    """bool2pc.radix4 on 128 positions: three 4-to-1 levels, then one 2-to-1."""
    got, bundle = run(two128, lambda a, b: (a < b, a * 1024.0 < b), X, Y,
                      prefer=("bool2pc.radix4",))
    assert protocols_of(bundle, "lt") == {"bool2pc.radix4"}
    np.testing.assert_array_equal(got[0], X < Y)
    np.testing.assert_array_equal(got[1], X * 1024 < Y)


# ------------------------------------------------------------ declared costs

COST_CASES = {
    "rounding": lambda a, b: jnp.floor(a) + jnp.round(b) - a.astype(jnp.int32),
    "less": lambda a, b: a < b,
    "equal_and": lambda a, b: (a == b) & (a < 1.0),
}


@pytest.mark.parametrize("name", list(COST_CASES))
def test_declared_bytes_match_the_run(cluster128, name):
    """The cost model's bytes on the 128-bit ring are what the parties send (within 10%)."""
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal(700).astype(np.float32) for _ in range(2))
    stats = {}
    _, bundle = run(cluster128, COST_CASES[name], a, b, stats=stats)
    sent = sum(s["bytes_sent_total"] for s in stats.values())
    estimate = bundle.cost_report.total.bytes
    assert abs(sent - estimate) <= 0.10 * estimate, (sent, estimate)


def test_select_declared_bytes_match_the_run(two128, three128):
    """Comparisons feeding selects and a product (dealer and 3-party devices: the dealer-free
    device's products are ``arith2pc.he``'s, costed there)."""
    rng = np.random.default_rng(3)
    a, b = (rng.standard_normal(700).astype(np.float32) for _ in range(2))
    for cluster in (two128, three128):
        stats = {}
        _, bundle = run(cluster, lambda p, q: jnp.where(p > q, jnp.maximum(p, 0.0), q * 2.0),
                        a, b, stats=stats)
        sent = sum(s["bytes_sent_total"] for s in stats.values())
        estimate = bundle.cost_report.total.bytes
        assert abs(sent - estimate) <= 0.10 * estimate, (sent, estimate)


def test_radix4_declared_bytes_match_the_run(two128):
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal(3000).astype(np.float32) for _ in range(2))
    stats = {}
    _, bundle = run(two128, lambda p, q: p < q, a, b, stats=stats, prefer=("bool2pc.radix4",))
    sent = sum(s["bytes_sent_total"] for s in stats.values())
    estimate = bundle.cost_report.total.bytes
    assert abs(sent - estimate) <= 0.10 * estimate, (sent, estimate)


def test_declared_bytes_against_64_bits(two128, three128):
    """A2B of full words moves two u64 words per element where 64 bits move one, and its
    adder has one level more: 14 gates of 2 words per element, not 12 of 1. Rounding
    converts only the bits of floor(x) its result keeps (32 for an int32, the ring's bits
    - f for a fixed-point value), each dealt bit a 16-byte ring element instead of 8."""
    x = np.linspace(-3, 3, 1000).astype(np.float32)
    rows = {}
    for name, c in (("2p-64", "two_party.devices"), ("3p-64", "three_party.devices")):
        c = mixc.init_device(str(REPO / "examples" / c))
        rows[name] = {r[1]: r[3].bytes for r in run(c, rounded, x)[1].cost_report.rows}
    for name, c in (("2p-128", two128), ("3p-128", three128)):
        rows[name] = {r[1]: r[3].bytes for r in run(c, rounded, x)[1].cost_report.rows}
    assert rows["2p-128"]["a2b"] * 12 == rows["2p-64"]["a2b"] * 28
    for parties in ("2p", "3p"):
        wide, narrow = rows[parties + "-128"], rows[parties + "-64"]
        # int32: 32 bits on either ring, twice the bytes each
        assert 1.8 <= wide["convert_element_type"] / narrow["convert_element_type"] <= 2.1
        # fixed point: 128 - 40 = 88 bits of 16 bytes against 64 - 18 = 46 of 8
        assert 3.4 <= wide["round"] / narrow["round"] <= 3.9, (wide["round"], narrow["round"])
