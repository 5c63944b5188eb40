"""Float and integer operands together on an MPC device, against plain JAX.

int32 values are shared with no fraction bits and float32 ones with f = 18, so
every op mixing them must promote as JAX does: JAX converts explicitly for the
elementwise ops (``convert_element_type`` in the jaxpr), but ``dot_general`` and
convolutions take operands of different dtypes with a ``preferred_element_type``
(``x.T @ y`` with int32 labels). Before the promotion such a product was
truncated as if both operands carried fraction bits and came back about 0.

Tolerances: one product of K terms with |x| <= 4 and |y| <= 3 is within
(4 + 3) K 2^-19 + 2^-18 of JAX (encoding and one truncation); integer results
are exact.
"""
# No `from __future__ import annotations`: mixc.program needs the Input objects.
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mixc
from mixc.errors import TraceError

from conftest import make_program

ULP = 2.0 ** -18


def floats(*shape, seed=0):
    return np.clip(np.random.default_rng(seed).standard_normal(shape), -4, 4).astype(np.float32)


def ints(*shape, seed=0, lo=-3, hi=4):
    return np.random.default_rng(seed + 1).integers(lo, hi, size=shape).astype(np.int32)


def close(out, ref, terms=1):
    out, ref = np.asarray(out), np.asarray(ref)
    assert out.shape == ref.shape and out.dtype == ref.dtype, (out.shape, out.dtype, ref.dtype)
    if ref.dtype == np.bool_ or np.issubdtype(ref.dtype, np.integer):
        np.testing.assert_array_equal(out, ref)
    else:
        np.testing.assert_allclose(out, ref, rtol=2.0 ** -20, atol=(4 * terms + 2) * ULP)


PRODUCTS = {
    "matmul x.T @ y": (lambda x, y: x.T @ y, (6, 3), (6,), 6),
    "jnp.dot(y, x)": (lambda x, y: jnp.dot(y, x), (6, 3), (6,), 6),
    "int matrix @ float": (lambda x, y: y @ x, (4, 3), (5, 4), 4),
    "einsum ij,i->j": (lambda x, y: jnp.einsum("ij,i->j", x, y), (6, 3), (6,), 6),
    "einsum batched": (lambda x, y: jnp.einsum("bij,bj->bi", x, y), (2, 3, 4), (2, 4), 4),
    "x * y": (lambda x, y: x * y[:, None], (6, 3), (6,), 1),
    "y * x scalar int": (lambda x, y: y[0] * x, (6, 3), (6,), 1),
    "bool mask @ x": (lambda x, y: (y > 0) @ x, (6, 3), (6,), 6),
}


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_int_float_products(secure, plain, name):
    fn, sx, sy, terms = PRODUCTS[name]
    x, y = floats(*sx), ints(*sy)
    close(secure(fn, x, y), plain(fn, x, y), terms * 3)


def test_int_by_int_product_with_float_result(secure, plain):
    fn = lambda a, b: jax.lax.dot(a, b, preferred_element_type=jnp.float32)  # noqa: E731
    a, b = ints(3, 4), ints(4, 2, seed=5)
    close(secure(fn, a, b), plain(fn, a, b), 4 * 3)


def test_int_convolution_with_float_result(secure, plain):
    def fn(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                            preferred_element_type=jnp.float32)
    x, w = ints(1, 2, 5, 5), ints(3, 2, 2, 2, seed=2)
    close(secure(fn, x, w), plain(fn, x, w), 8 * 3)


def test_convolve_float_by_int(secure, plain):
    fn = lambda x, w: jnp.convolve(x, w)      # noqa: E731
    x, w = floats(7), ints(3)
    close(secure(fn, x, w), plain(fn, x, w), 3 * 3)


COMPARISONS = {
    "x < y": lambda x, y: x < y,
    "x >= y": lambda x, y: x >= y,
    "x == y": lambda x, y: x == jnp.round(y),
    "max(x, y)": lambda x, y: jnp.maximum(x, y),
    "where(x > 0, x, y)": lambda x, y: jnp.where(x > 0, x, y),
    "where(y > 0, y, x)": lambda x, y: jnp.where(y > 0, y, x),
    "x + y": lambda x, y: x + y,
    "y - x": lambda x, y: y - x,
    "y / 2 * x": lambda x, y: y / 2 * x,
}


@pytest.mark.parametrize("name", sorted(COMPARISONS))
def test_int_float_elementwise(secure, plain, name):
    fn = COMPARISONS[name]
    x, y = floats(8) * 2, ints(8)
    x[:3] = y[:3]                                   # ties: x == y exactly
    close(secure(fn, x, y), plain(fn, x, y), 3)


@settings(max_examples=4, deadline=None)
@given(st.integers(1, 5), st.integers(1, 4), st.integers(0, 2 ** 16))
def test_random_int_float_matmul(secure, plain, n, m, seed):
    fn = lambda x, y: y @ x       # noqa: E731
    x, y = floats(n, m, seed=seed), ints(2, n, seed=seed)
    close(secure(fn, x, y), plain(fn, x, y), 3 * n)


def test_labels_from_a_pyu_into_mpc(cluster):
    """int32 labels computed on bob's PYU (plain JAX there) meet alice's float features on
    the MPC device: the program's own ``simulate`` (no verifier between passes)."""
    x, y = floats(8, 3, seed=3), ints(8, seed=3)

    def body(x, y):
        labels = mixc.device(cluster.p2)(lambda y: jnp.where(y > 0, 1, -1).astype(jnp.int32))(y)
        grad = mixc.device(cluster.mpc)(lambda x, t: x.T @ t / x.shape[0])(x, labels)
        return mixc.reveal(grad, cluster.p1)

    prog = make_program(body, {"x": mixc.Input(cluster.p1, (8, 3)),
                               "y": mixc.Input(cluster.p2, (8,), jnp.int32)})
    ref = x.T @ np.where(y > 0, 1, -1) / 8
    close(prog.simulate(x=x, y=y), ref.astype(np.float32), 8 * 3)


def svm_train(x, y, steps=12, lr=0.5, lam=0.01):
    """A linear SVM by subgradient descent on the hinge loss; y in {-1, +1} as int32."""
    w = jnp.zeros(x.shape[1])
    for _ in range(steps):
        margin = y * (x @ w)
        active = (margin < 1).astype(jnp.int32) * y          # int32
        w = w - lr * (lam * w - x.T @ active / x.shape[0])   # float x int product
    return w


def test_svm_with_integer_labels_reaches_plain_accuracy(secure, plain):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = np.where(x @ np.array([1.0, -2.0, 0.5]) + 0.3 > 0, 1, -1).astype(np.int32)
    w_mpc, w_jax = secure(svm_train, x, y), plain(svm_train, x, y)
    accuracy = lambda w: float(np.mean(np.sign(x @ w) == y))     # noqa: E731
    assert accuracy(w_jax) > 0.9
    assert accuracy(w_mpc) == accuracy(w_jax)
    np.testing.assert_allclose(w_mpc, w_jax, atol=1e-3)


def test_ill_typed_product_is_a_compile_error_at_the_line(cluster):
    """The walker's type check: an IR op whose operands disagree with its type rule is a
    compile error naming the author's line, never a silently wrong product."""
    from mixc import translate_arith, translate_core
    original = translate_core.PRIMITIVES["dot_general"]
    translate_core.PRIMITIVES["dot_general"] = translate_arith._simple(
        "dot_general", translate_arith._dot_attrs)
    try:
        x, y = floats(6, 3), ints(6)
        from conftest import secure_program
        prog, _ = secure_program(cluster, lambda x, y: x.T @ y, x, y)
        with pytest.raises(TraceError, match=r"test_mixed_dtypes.py:\d+: 'dot_general'"):
            mixc.bundle.build(prog)
    finally:
        translate_core.PRIMITIVES["dot_general"] = original
