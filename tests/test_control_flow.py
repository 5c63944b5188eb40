"""lax control flow on MPC, against plain JAX: loops with a trip count known when
tracing are unrolled; a cond with a secret index runs every branch and selects."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jax import lax

from conftest import secure_program
from mixc.bundle import build, simulate

ATOL = 2e-3       # a few fixed-point products (f = 18) per output


def rnd(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).uniform(-scale, scale, shape)).astype(np.float32)


def check(secure, plain, fn, *arrays, atol=ATOL):
    got, want = secure(fn, *arrays), plain(fn, *arrays)
    for g, w in zip(np.atleast_1d(got) if not isinstance(got, tuple) else got,
                    want if isinstance(want, tuple) else np.atleast_1d(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=atol)


def test_fori_loop_with_int_bounds(secure, plain):
    check(secure, plain, lambda a, b: lax.fori_loop(0, 4, lambda i, c: c * 0.5 + b * i, a),
          rnd(3, 4), rnd(3, 4, seed=1))


def test_scan_carry_xs_ys_and_reverse(secure, plain):
    def f(a, b):
        total, prods = lax.scan(lambda c, row: (c + row, c * row), jnp.zeros(4), b)
        back, firsts = lax.scan(lambda c, row: (c * 0.5 + row, row[0] + c[1]), a[0], b,
                                reverse=True)
        return total, prods, back, firsts
    check(secure, plain, f, rnd(3, 4), rnd(5, 4, seed=1))


def test_gradient_descent_in_fori_loop(secure, plain):
    """The LR demo as a JAX author would write its training loop."""
    def train(x, y):
        def step(_, w):
            return w - 0.1 * x.T @ (x @ w - y) / x.shape[0]
        return lax.fori_loop(0, 5, step, jnp.zeros((x.shape[1], 1)))
    x = rnd(32, 3)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32)
    check(secure, plain, train, x, y)


@settings(max_examples=8, deadline=None)
@given(st.lists(st.floats(-4, 4, width=32), min_size=3, max_size=3))
def test_cond_on_a_secret_predicate(secure, plain, values):
    a = np.asarray(values, np.float32)
    # a sum within a few fixed-point units of 0 may take either branch (1e-9 encodes to 0)
    assume(abs(float(a.sum())) > 1e-4)
    b = rnd(3, seed=2)
    check(secure, plain,
          lambda a, b: lax.cond(a.sum() > 0, lambda x, y: x * y, lambda x, y: x - y, a, b), a, b)


def test_switch_on_a_secret_index(secure, plain):
    def f(a, b):
        branches = [lambda x: x + 1, lambda x: x * b, lambda x: -x]
        return lax.switch(jnp.argmax(a), branches, b)
    for seed in range(3):
        a = np.zeros(3, np.float32)
        a[seed] = 1.0
        check(secure, plain, f, a, rnd(3, seed=seed))


def test_cond_inside_a_scan(secure, plain):
    def f(a, b):
        def body(c, row):
            c = lax.cond(row.sum() > c.sum(), lambda: c + row, lambda: c * 0.5)
            return c, c.sum()
        return lax.scan(body, a, b)
    check(secure, plain, f, rnd(4), rnd(6, 4, seed=1))


def test_cond_with_an_index_known_when_tracing_runs_one_branch(cluster, plain):
    def f(a, b):
        return lax.switch(2, [lambda x: x, lambda x: -x, lambda x: x * b], a)
    prog, inputs = secure_program(cluster, f, rnd(3), rnd(3, seed=1))
    bundle = build(prog)
    text = bundle.stages["place"]
    # the clamp of the index runs on public values; no branch but the third runs
    assert "neg(" not in text
    assert not [ln for ln in text.splitlines() if "select_n(" in ln and ":public" not in ln]
    np.testing.assert_allclose(simulate(bundle, inputs), plain(f, *inputs.values()), atol=ATOL)


def test_while_loop_with_a_counter_from_constants(secure, plain):
    def f(a, b):
        def body(c):
            i, x = c
            return i + 1, x * 0.5 + b
        return lax.while_loop(lambda c: c[0] < 5, body, (0, a))[1]
    check(secure, plain, f, rnd(4), rnd(4, seed=1))
