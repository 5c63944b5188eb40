"""End to end: every op the foundation needs, on MPC, against plain JAX.

Each test traces a program (inputs at ``p1``/``p2``, the function on ``mpc``,
outputs revealed to ``p1``), builds it with the verifier after every pass and
simulates alice, bob and the dealer over in-process links (``conftest.secure``).
The same function run by plain JAX on the same inputs is the reference.

Error model (arith2pc, f = 18 fraction bits, ring Z_2^64):

- encoding a float is round(x * 2^18): error <= 2^-19 per input value;
- linear ops (add, sub, neg, sums, reshape, slicing, padding, ...) are exact
  on shares, so a sum of K inputs is off by at most K * 2^-19;
- a fixed-point product of K terms sum_k a_k * b_k (mul: K = 1, dot_general:
  K = contracted size) is off by at most sum_k (|a_k| + |b_k|) * 2^-19 (the
  encoding errors) + 2^-18 (TruncPr rounds to one of the two neighbouring
  fixed-point values) -- "K * 2^-18 per product" for |a|, |b| ~ 1;
- both sides are float32 at the end: the decoded result and the JAX
  reference each round by 2^-24 relative (JAX's float32 accumulation by at
  most K * 2^-24 * sum_k |a_k b_k|).

The fixed-input tests draw x ~ N(0, 1) clipped to |x| <= 4, so one product of
K terms is within (4K + 1) * 2^-18 ~ K * 1.5e-5; they check
``|secure - jax| <= atol(terms) + 2^-20 |jax|`` with ``atol(t) = (4t + 1) * 2^-18``
and ``t`` the number of product terms (chained products count their terms).

The hypothesis tests use values up to 2^10 in magnitude and check the
per-element bound above computed from the actual inputs. TruncPr is exact up
to that error for |x| < 2^62 on the ring, i.e. values below 2^(62 - 2f) =
2^26 in magnitude *before* truncation (arith2pc module docstring), so the
drawn ranges keep every product and dot product below 2^26:
|a b| <= 2^20 for mul, K * 2^20 <= 2^22 for matmul (K <= 4).

int32 values use f = 0 (no truncation): int32 add/mul/sum/matmul are exact.
"""
# No `from __future__ import annotations`: mixc.program needs the Input objects.
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax import lax

import mixc
from mixc.bundle import build, simulate

from conftest import make_program

ULP = 2.0 ** -18
F32_REL = 2.0 ** -20


def atol(terms=1):
    """Absolute tolerance for a result built from ``terms`` product terms of values |x| <= 4."""
    return (4 * terms + 1) * ULP


def rnd(*shape, seed=0):
    rng = np.random.default_rng(seed + 7919 * len(shape) + sum(shape))
    return np.clip(rng.standard_normal(shape), -4, 4).astype(np.float32)


def rint(*shape, seed=0, lo=-50, hi=50):
    rng = np.random.default_rng(seed + 31 * sum(shape))
    return rng.integers(lo, hi, size=shape).astype(np.int32)


def check(out, ref, terms=1):
    """Same structure, shapes and dtypes; values within the fixed-point tolerance."""
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(ref)
    for o, r in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(ref)):
        o, r = np.asarray(o), np.asarray(r)
        assert o.shape == r.shape, (o.shape, r.shape)
        assert o.dtype == r.dtype, (o.dtype, r.dtype)
        if np.issubdtype(r.dtype, np.integer):
            np.testing.assert_array_equal(o, r)
        else:
            err = np.abs(o.astype(np.float64) - r.astype(np.float64))
            bound = atol(terms) + F32_REL * np.abs(r.astype(np.float64))
            assert np.all(err <= bound), f"max error {err.max():.3g} > bound {bound.max():.3g}"


def compare(secure, plain, fn, *arrays, terms=1, owners=None):
    out = secure(fn, *arrays, owners=owners)
    check(out, plain(fn, *arrays), terms)
    return out


# ------------------------------------------------------------ elementwise

@pytest.mark.parametrize("name,fn,terms", [
    ("add", lambda a, b: a + b, 1),
    ("sub", lambda a, b: a - b, 1),
    ("mul", lambda a, b: a * b, 1),
    ("chain", lambda a, b: (a - b) * b + a, 1),
])
def test_binary_secret_secret(secure, plain, name, fn, terms):
    compare(secure, plain, fn, rnd(3, 4), rnd(3, 4, seed=1), terms=terms)


def test_neg(secure, plain):
    compare(secure, plain, lambda a: -a, rnd(3, 4))


@pytest.mark.parametrize("const", [1.5, -0.25, 3.0])
def test_mul_public_scalar(secure, plain, const):
    compare(secure, plain, lambda a: a * const, rnd(2, 5))
    compare(secure, plain, lambda a: const * a, rnd(2, 5))


def test_mul_public_array(secure, plain):
    c = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    compare(secure, plain, lambda a: a * c, rnd(3, 4))


def test_both_inputs_from_one_party(secure, plain):
    compare(secure, plain, lambda a, b: a * b - a, rnd(3), rnd(3, seed=2), owners="p2")


# ------------------------------------------------------------ products

@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 2)),    # matrix @ matrix
                                   ((3, 4), (4,)),      # matrix @ vector
                                   ((4,), (4, 2)),      # vector @ matrix
                                   ((5,), (5,))])       # vector @ vector (a scalar)
def test_matmul(secure, plain, sa, sb):
    compare(secure, plain, lambda a, b: a @ b, rnd(*sa), rnd(*sb, seed=3), terms=sa[-1])


def test_matmul_public_matrix(secure, plain):
    w = rnd(4, 3, seed=5)
    compare(secure, plain, lambda a: a @ w, rnd(2, 4), terms=4)
    compare(secure, plain, lambda a: w.T @ a, rnd(4, 2), terms=4)


def test_batched_einsum(secure, plain):
    compare(secure, plain, lambda a, b: jnp.einsum("bij,bjk->bik", a, b),
            rnd(2, 3, 4), rnd(2, 4, 2, seed=1), terms=4)


def test_dot_general_batch_dims(secure, plain):
    # batch dim 0 on both sides, contract a's dim 2 with b's dim 1
    dn = (((2,), (1,)), ((0,), (0,)))
    compare(secure, plain, lambda a, b: lax.dot_general(a, b, dn),
            rnd(3, 2, 4), rnd(3, 4, 2, seed=1), terms=4)


# ------------------------------------------------------------ reductions

@pytest.mark.parametrize("axis", [None, 0, 1, (0, 2)])
def test_sum(secure, plain, axis):
    compare(secure, plain, lambda a: jnp.sum(a, axis=axis), rnd(2, 3, 4), terms=6)


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_mean(secure, plain, axis):
    compare(secure, plain, lambda a: jnp.mean(a, axis=axis), rnd(3, 4), terms=6)


# ------------------------------------------------------------ broadcasting

def test_broadcast_explicit_none(secure, plain):
    compare(secure, plain, lambda a, b: a + b[None, :], rnd(3, 4), rnd(4, seed=1))


def test_broadcast_implicit_rank(secure, plain):
    compare(secure, plain, lambda a, b: a * b, rnd(3, 4), rnd(4, seed=1))
    compare(secure, plain, lambda a, b: a - b[:, None], rnd(3, 4), rnd(3, seed=1))


def test_scalar_plus_array(secure, plain):
    compare(secure, plain, lambda a: 2.0 + a, rnd(3, 4))
    compare(secure, plain, lambda a, s: a + s, rnd(3, 4), rnd(seed=1))   # secret scalar
    compare(secure, plain, lambda a, s: a * s, rnd(3, 4), rnd(seed=1))


# ------------------------------------------------------------ structure

def test_reshape(secure, plain):
    compare(secure, plain, lambda a: a.reshape(2, 6), rnd(3, 4))
    compare(secure, plain, lambda a: jnp.reshape(a, (-1,)), rnd(3, 4))


def test_transpose(secure, plain):
    compare(secure, plain, lambda a: a.T, rnd(3, 4))
    compare(secure, plain, lambda a: jnp.transpose(a, (2, 0, 1)), rnd(2, 3, 4))


@pytest.mark.parametrize("name,fn", [
    ("range", lambda a: a[1:3]),
    ("strided", lambda a: a[::2]),
    ("2d", lambda a: a[1:, ::2]),
    ("index", lambda a: a[1]),
])
def test_slicing(secure, plain, name, fn):
    compare(secure, plain, fn, rnd(5, 4))


def test_concatenate_secret_secret(secure, plain):
    compare(secure, plain, lambda a, b: jnp.concatenate([a, b], axis=1), rnd(3, 4), rnd(3, 2))
    compare(secure, plain, lambda a, b: jnp.concatenate([a, b]), rnd(2, 3), rnd(1, 3))


def test_concatenate_secret_public(secure, plain):
    c = np.arange(4, dtype=np.float32)[None, :]
    compare(secure, plain, lambda a: jnp.concatenate([a, c], axis=0), rnd(3, 4))
    compare(secure, plain, lambda a: jnp.concatenate([jnp.ones((3, 1)), a], axis=1), rnd(3, 4))


@pytest.mark.parametrize("value", [0.0, 2.5, -1.0])
def test_pad_constant(secure, plain, value):
    compare(secure, plain, lambda a: jnp.pad(a, ((1, 0), (0, 2)), constant_values=value),
            rnd(3, 4))


def test_pad_default(secure, plain):
    compare(secure, plain, lambda a: jnp.pad(a, 1), rnd(2, 3))


# ------------------------------------------------------------ constants, division, powers

def test_constants_made_inside(secure, plain):
    compare(secure, plain, lambda a: a + jnp.zeros((3, 4)), rnd(3, 4))
    compare(secure, plain, lambda a: a * jnp.ones((3, 4)) + jnp.ones(4), rnd(3, 4))
    compare(secure, plain, lambda a: a + jnp.arange(4).astype(jnp.float32), rnd(3, 4))
    compare(secure, plain, lambda a: a * jnp.arange(3).astype(jnp.float32)[:, None], rnd(3, 4),
            terms=2)


def test_public_only_subexpression(secure, plain):
    # constants combined with constants stay public and cost nothing
    compare(secure, plain, lambda a: a + (jnp.ones(3) * 2.0 - jnp.arange(3.0)) @ jnp.ones((3, 3)),
            rnd(3))


@pytest.mark.parametrize("d", [4.0, 3.0, -0.5])
def test_div_public_scalar(secure, plain, d):
    compare(secure, plain, lambda a: a / d, rnd(3, 4), terms=2)


def test_div_public_array(secure, plain):
    d = np.array([1.0, 2.0, -4.0, 8.0], np.float32)
    compare(secure, plain, lambda a: a / d, rnd(3, 4), terms=2)
    compare(secure, plain, lambda a: a / jnp.arange(1, 5).astype(jnp.float32), rnd(3, 4), terms=2)


def test_powers(secure, plain):
    compare(secure, plain, lambda a: a ** 2, rnd(3, 4), terms=2)
    # x**3 = x * x**2: the square's error times |x| <= 4, then one more product
    compare(secure, plain, lambda a: a ** 3, rnd(3, 4), terms=8)


# ------------------------------------------------------------ int32

def test_int32_exact(secure, plain):
    a, b = rint(3, 4), rint(3, 4, seed=1)
    compare(secure, plain, lambda a, b: a + b, a, b)
    compare(secure, plain, lambda a, b: a * b, a, b)
    compare(secure, plain, lambda a, b: a * b - 3 * a, a, b)
    compare(secure, plain, lambda a: jnp.sum(a), a)
    compare(secure, plain, lambda a: jnp.sum(a, axis=1), a)
    compare(secure, plain, lambda a, b: a @ b, a, rint(4, 2, seed=2))


def test_int32_to_float(secure, plain):
    compare(secure, plain, lambda a, b: a.astype(jnp.float32) * b, rint(3, 4), rnd(3, 4), terms=13)


# ------------------------------------------------------------ tracing features

def test_python_loop_unrolls_linear_regression(cluster, secure, plain):
    """Three gradient steps of linear regression: the Python loop unrolls at trace time."""
    x, y = rnd(8, 3), rnd(8, seed=1)

    def lr(x, y):
        w = jnp.zeros(3)
        for _ in range(3):
            grad = x.T @ (x @ w - y) / x.shape[0]
            w = w - 0.1 * grad
        return w
    out, bundle = secure(lr, x, y, with_bundle=True)
    # 3 unrolled steps, each with x @ w and x.T @ r: six dot_generals, no loop op
    mul_lines = [l for l in bundle.stages["select_protocols"].splitlines()
                 if "= dot_general(" in l and "arith2pc" in l]
    assert len(mul_lines) == 6
    # errors of x @ w (K = 3) and x.T @ r (K = 8) compound over the steps
    check(out, plain(lr, x, y), terms=64)


def test_jit_helper_is_inlined(cluster, secure, plain):
    @jax.jit
    def affine(a, b):
        return a @ b + 1.0

    def f(a, b):
        return affine(a, b) * 2.0
    out, bundle = secure(f, rnd(2, 3), rnd(3, 2, seed=1), with_bundle=True)
    check(out, plain(f, rnd(2, 3), rnd(3, 2, seed=1)), terms=6)
    text = bundle.stages["select_protocols"]
    assert "dot_general(" in text
    assert not any(("= call(" in l or "pjit" in l) and "@mpc" in l for l in text.splitlines())


def test_pyu_arbitrary_jnp_feeds_mpc(cluster):
    p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc

    def features(a):
        # anything JAX can run: it stays in plaintext at alice
        loop = lax.fori_loop(0, 3, lambda i, c: c * 0.5 + a, a)
        return jnp.stack([jnp.sin(a), jnp.sort(a), a / jnp.linalg.norm(a), loop])

    def body(x, w):
        f = mixc.device(p1)(features)(x)
        return mixc.reveal(mixc.device(mpc)(lambda f, w: f @ w)(f, w), p1)

    prog = make_program(body, {"x": mixc.Input(p1, (5,)), "w": mixc.Input(p2, (5, 2))})
    x, w = rnd(5), rnd(5, 2, seed=1)
    bundle = build(prog, verify_between=True)
    out = simulate(bundle, {"x": x, "w": w})
    check(out, features(x) @ w, terms=5 * 3)
    assert "call(" in bundle.text("alice") and "call(" not in bundle.text("bob")


def test_dict_outputs(secure, plain):
    out = compare(secure, plain, lambda a, b: {"sum": a + b, "prod": a * b, "total": jnp.sum(a)},
                  rnd(3), rnd(3, seed=1), terms=3)
    # the device function's dict went through a JAX pytree (keys sorted); same keys
    assert isinstance(out, dict) and set(out) == {"sum", "prod", "total"}


def test_tuple_outputs(cluster, secure, plain):
    out, bundle = secure(lambda a, b: (a + b, a @ b), rnd(3), rnd(3, seed=1), with_bundle=True)
    assert isinstance(out, tuple) and len(out) == 2
    check(out, plain(lambda a, b: (a + b, a @ b), rnd(3), rnd(3, seed=1)), terms=3)
    assert list(bundle.manifest["outputs"]) == ["out0", "out1"]
    assert bundle.manifest["outputs"] == {"out0": "alice", "out1": "alice"}  # output party


def test_single_output_and_pyu_outputs(cluster):
    p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc

    def body(x, y):
        z = mixc.device(mpc)(lambda a, b: a * b)(x, y)
        return {"z": mixc.reveal(z, p2), "own": mixc.device(p1)(lambda a: a + 1)(x)}
    prog = make_program(body, {"x": mixc.Input(p1, (2,)), "y": mixc.Input(p2, (2,))})
    x, y = rnd(2), rnd(2, seed=1)
    bundle = build(prog, verify_between=True)
    out = simulate(bundle, {"x": x, "y": y})
    check(out, {"z": x * y, "own": x + 1})
    # a dict built in the program body keeps the author's key order
    assert list(out) == ["z", "own"]
    assert list(bundle.manifest["outputs"].items()) == [("z", "bob"), ("own", "alice")]


# ------------------------------------------------------------ hypothesis

EPS_ENC = 2.0 ** -19
EPS_F32 = 2.0 ** -24
BIG = 2.0 ** 10  # |values| for products: |a b| <= 2^20, K |a b| <= 2^22 < 2^26 (TruncPr range)

small_dims = st.integers(1, 4)


def values(shape, bound):
    return hnp.arrays(np.float32, shape, elements=st.floats(
        -bound, bound, width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False))


def product_bound(a, b, exact, k_abs_sum, enc_sum, k):
    """Per-element bound of a K-term fixed-point product against float32 JAX (docstring)."""
    return (EPS_ENC * enc_sum + ULP                          # encodings + TruncPr
            + EPS_F32 * np.abs(exact)                        # decode to float32
            + k * EPS_F32 * k_abs_sum                        # JAX's float32 products/sums
            + 2.0 ** -30)


@settings(max_examples=8, deadline=None)
@given(st.data())
def test_hypothesis_mul(secure, data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=4), label="shape")
    a = data.draw(values(shape, BIG), label="a")
    b = data.draw(values(shape, BIG), label="b")
    out = secure(lambda a, b: a * b, a, b)
    ref = np.asarray(jnp.asarray(a) * jnp.asarray(b))
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    exact = a64 * b64
    bound = product_bound(a64, b64, exact, np.abs(exact), np.abs(a64) + np.abs(b64), 1)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert np.all(np.abs(out - ref.astype(np.float64)) <= bound)


@settings(max_examples=8, deadline=None)
@given(st.data())
def test_hypothesis_matmul(secure, data):
    m, k, n = data.draw(small_dims), data.draw(small_dims), data.draw(small_dims)
    a = data.draw(values((m, k), BIG), label="a")
    b = data.draw(values((k, n), BIG), label="b")
    out = secure(lambda a, b: a @ b, a, b)
    ref = np.asarray(jnp.asarray(a) @ jnp.asarray(b)).astype(np.float64)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    exact = a64 @ b64
    enc = np.abs(a64).sum(1)[:, None] + np.abs(b64).sum(0)[None, :]
    bound = product_bound(a64, b64, exact, np.abs(a64) @ np.abs(b64), enc, k)
    assert out.shape == (m, n)
    assert np.all(np.abs(out - ref) <= bound)


@settings(max_examples=8, deadline=None)
@given(st.data())
def test_hypothesis_sum(secure, data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4), label="shape")
    axis = data.draw(st.none() | st.integers(0, len(shape) - 1), label="axis")
    a = data.draw(values(shape, BIG), label="a")
    out = secure(lambda a: jnp.sum(a, axis=axis), a)
    ref = np.asarray(jnp.sum(jnp.asarray(a), axis=axis)).astype(np.float64)
    a64 = a.astype(np.float64)
    k = a.size if axis is None else shape[axis]
    bound = (EPS_ENC * k + EPS_F32 * np.abs(ref) + k * EPS_F32 * np.sum(np.abs(a64), axis=axis)
             + 2.0 ** -30)
    assert out.shape == ref.shape
    assert np.all(np.abs(out - ref) <= bound)


@settings(max_examples=8, deadline=None)
@given(st.data())
def test_hypothesis_int32_matmul_exact(secure, data):
    m, k, n = data.draw(small_dims), data.draw(small_dims), data.draw(small_dims)
    ints = hnp.arrays(np.int32, st.just((m, k)), elements=st.integers(-1000, 1000))
    a = data.draw(ints)
    b = data.draw(hnp.arrays(np.int32, (k, n), elements=st.integers(-1000, 1000)))
    out = secure(lambda a, b: a @ b, a, b)
    np.testing.assert_array_equal(out, np.asarray(jnp.asarray(a) @ jnp.asarray(b)))
    assert out.dtype == np.int32


def test_program_simulate_entry_point(cluster):
    """SPEC 3: ``prog.simulate(**inputs)`` compiles and runs; outputs in the returned structure."""
    p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc

    @mixc.program
    def lr(x1: mixc.Input(p1, (4, 2)), x2: mixc.Input(p2, (4, 1)), y: mixc.Input(p2, (4,))):
        def train(x1, x2, y):
            x = jnp.concatenate((x1, x2), axis=1)
            w = jnp.zeros(3)
            for _ in range(2):
                w = w - 0.1 * x.T @ (x @ w - y) / 4.0
            return w
        return mixc.reveal(mixc.device(mpc)(train)(x1, x2, y), p1)

    x1, x2, y = rnd(4, 2), rnd(4, 1, seed=1), rnd(4, seed=2)
    x = np.concatenate([x1, x2], axis=1)
    w = np.zeros(3, np.float32)
    for _ in range(2):
        w = w - 0.1 * x.T @ (x @ w - y) / 4.0
    check(lr.simulate(x1=x1, x2=x2, y=y), w.astype(np.float32), terms=32)
