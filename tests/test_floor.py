"""Rounding to integers on MPC is exact: floor, ceil, round, trunc and float -> int32.

``floor`` clears the fraction bits of the XOR-shared fixed-point word (local
after A2B); ``round`` and ``astype(int32)`` add a round-up bit from one AND
tree to that floor (``mixc/protocols/bool2pc.py``). Each result must equal
plain JAX's on the same inputs, bit for bit, for inputs on the fixed-point
grid (multiples of 2^-18, which every float32 of magnitude >= 32 is): ties
of ``jnp.round`` go to even and those of ``lax.round`` away from zero, as in
JAX. Checked on chosen values (ties, integers, the smallest fractions, ±2^20),
on random ones (hypothesis, one build simulated for every example), on public
values, and on the dealer-free ``offline: he`` device, whose estimated bytes
must match the run's within 10% like the dealer's (``test_cost_model.py``).
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
from mixc.bundle import build, simulate

from conftest import REPO, secure_program

FRAC = 18
ULP = 2.0 ** -FRAC


def rounded(x):
    """floor, ceil, both rounds, trunc and the int32 cast of x: what every test compares."""
    return {"floor": jnp.floor(x), "ceil": jnp.ceil(x), "round": jnp.round(x),
            "round_away": jax.lax.round(x), "trunc": jnp.trunc(x), "int32": x.astype(jnp.int32)}


def on_grid(x):
    """x snapped to the fixed-point grid, so that encoding it loses nothing."""
    return (np.round(np.asarray(x, np.float64) / ULP) * ULP).astype(np.float32)


CHOSEN = on_grid([0, 1, -1, 7, -7, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.25, -0.75, 2.75, -2.75,
                  ULP, -ULP, 3 * ULP, -3 * ULP, 0.5 + ULP, -0.5 - ULP, 0.5 - ULP, -0.5 + ULP,
                  1 - ULP, -1 + ULP, 12345.25, -12345.5, 2 ** 20, -2 ** 20, 2 ** 20 - 0.5,
                  -2 ** 20 + 0.5, 2 ** 19 + 0.5, -2 ** 19 - 0.5, 1048575.75, -1048575.25])


def assert_same(out, ref):
    for name, want in ref.items():
        want = np.asarray(want)
        assert out[name].dtype == want.dtype, name
        np.testing.assert_array_equal(out[name], want, err_msg=name)


def test_chosen_values_match_jax(secure, plain):
    assert_same(secure(rounded, CHOSEN), plain(rounded, CHOSEN))


@pytest.fixture(scope="module")
def random_bundle(cluster):
    prog, _ = secure_program(cluster, rounded, np.zeros(16, np.float32))
    return build(prog, verify_between=True)


GRID_VALUES = st.one_of(
    st.floats(-2 ** 20, 2 ** 20, width=32),
    st.integers(-2 ** 21, 2 ** 21).map(lambda k: k / 2),        # ties
    st.integers(-2 ** 8, 2 ** 8).map(lambda k: k * ULP),        # the smallest fractions
)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(hnp.arrays(np.float32, (16,), elements=GRID_VALUES))
def test_random_values_match_jax(random_bundle, plain, x):
    x = on_grid(x)
    assert_same(simulate(random_bundle, {"x0": x}), plain(rounded, x))


def test_public_values_are_rounded_in_the_clear(secure, plain):
    """A value known to both parties is rounded at each of them: no protocol runs."""
    def fn(x):
        public = jnp.arange(8, dtype=jnp.float32) * 0.75 - 2.5
        return x + jnp.floor(public) + jnp.round(public) + public.astype(jnp.int32)

    x = on_grid(np.linspace(-3, 3, 8))
    out, bundle = secure(fn, x, with_bundle=True)
    np.testing.assert_array_equal(out, plain(fn, x))
    protocols = {n.op: n.attrs["protocol"] for n in bundle.graph_module.nodes
                 if n.op in ("floor", "round")}
    assert protocols == {"floor": "plaintext", "round": "plaintext"}


def test_secret_rounding_runs_on_boolean_shares(secure):
    out, bundle = secure(rounded, CHOSEN[:4], with_bundle=True)
    rows = {row[1]: row for row in bundle.cost_report.rows}
    assert rows["floor"][2] == "bool2pc" and rows["floor"][3].bytes == 0
    assert rows["round"][2] == "bool2pc" and rows["convert_element_type"][2] == "bool2pc"
    # the round-up bit's AND tree over f + 1 = 19 bits is 5 rounds, its B2A one more
    assert rows["round"][3].rounds == 6


def test_dealer_free_device(plain):
    """On ``offline: he`` the AND triples and B2A pairs come from OT: two parties only."""
    c = mixc.init_device(str(REPO / "examples" / "two_party_he.devices"))
    x = np.concatenate([CHOSEN, on_grid(np.random.default_rng(3).uniform(-2e3, 2e3, 265))])
    prog, inputs = secure_program(c, rounded, x)
    bundle = build(prog, verify_between=True)
    assert bundle.parties == ("alice", "bob")
    assert {n.attrs["protocol"] for n in bundle.graph_module.nodes
            if n.op in ("round", "convert_element_type")} == {"bool2pc.ot"}
    stats = {}
    assert_same(simulate(bundle, inputs, stats=stats), plain(rounded, x))
    sent = sum(s["bytes_sent_total"] for s in stats.values())
    estimate = bundle.cost_report.total.bytes
    assert abs(sent - estimate) <= 0.10 * estimate, (sent, estimate)


# |x| < 2^18 = 2^f: the range in which integer division by a known divisor is exact
EDGE_INTS = np.array([0, 1, -1, 2, -2, 6, -6, 7, -7, 999, -1000, 2 ** 18 - 1, -(2 ** 18 - 1)],
                     np.int32)


@pytest.mark.parametrize("d", [3, -7, 1000])
def test_integer_division_and_remainder_by_a_known_divisor(secure, d):
    """lax.div/rem, // and % of secret int32 by a constant, bit for bit as JAX."""
    x = np.concatenate([EDGE_INTS, np.random.default_rng(d & 0xFF).integers(
        -(2 ** 18) + 1, 2 ** 18, 64).astype(np.int32)])

    def f(x, one):
        x = x * one                      # a secret
        return jax.lax.div(x, d), jax.lax.rem(x, d), x // d, x % d
    got = secure(f, x, np.ones_like(x))
    for g, w in zip(got, f(jnp.asarray(x), jnp.ones_like(x))):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_shift_by_a_secret_amount_is_an_error(cluster):
    """Division by a secret compiles (tests/test_division.py); a shift by a secret amount
    still does not, and the error names the op and the author's line."""
    from mixc.errors import TraceError

    def shifted(a, b):
        return a << b
    prog, _ = secure_program(cluster, shifted, np.ones(3, np.int32), np.ones(3, np.int32))
    with pytest.raises(TraceError, match="shift_left on MPC needs a constant shift amount") as e:
        build(prog)
    assert f"test_floor.py:{shifted.__code__.co_firstlineno + 1}:" in str(e.value)
