"""simulate's range sanitizer and the build-time warnings for constants fixed point loses
(``mixc.RangeWarning``, at the author's line): each secure result is also compared with
plain JAX, and where the value leaves the op's range the warning says which line."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mixc
from mixc.approx import ERROR_BOUNDS
from mixc.bundle import simulate
from mixc.sanitize import imprecise_constant

from conftest import secure_program

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).name


def _run(cluster, fn, *arrays):
    """(fn's MPC result, the RangeWarnings the run gave)."""
    prog, inputs = secure_program(cluster, fn, *arrays)
    bundle = prog.build()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = simulate(bundle, inputs)
    return out, [w for w in seen if issubclass(w.category, mixc.RangeWarning)]


def _line_of(fn, offset=1):
    """The line ``offset`` lines below ``fn``'s ``def``."""
    return fn.__code__.co_firstlineno + offset


def test_range_warning_is_exported():
    assert issubclass(mixc.RangeWarning, UserWarning)


def test_square_beyond_the_product_range_warns_at_its_line(cluster):
    def square(x):
        return x * x
    x = np.array([1.5, -3.0, 2e4], np.float32)
    out, seen = _run(cluster, square, x)
    np.testing.assert_allclose(out[:2], (x * x)[:2], rtol=1e-4)  # in range: right
    assert abs(out[2] - 4e8) > 1e6                               # 4e8 > 2^26: wrapped
    (w,) = seen
    assert (w.filename, w.lineno) == (HERE, _line_of(square))
    message = str(w.message)
    assert message.startswith(f"{HERE}:{_line_of(square)}: mul: ")
    assert "4e+08" in message and "2^26" in message


@pytest.mark.parametrize("name, make", [
    ("exp", lambda: (np.array([0.5, ERROR_BOUNDS["exp"][1] + 4.0], np.float32),)),
    ("reciprocal", lambda: (np.array([3.0, 1.0], np.float32), np.array([2.0, 1e-7], np.float32))),
])
def test_an_approximation_outside_its_range_warns(cluster, name, make):
    def approximated(*xs):
        return jnp.exp(xs[0]) if len(xs) == 1 else xs[0] / xs[1]
    arrays = make()
    out, seen = _run(cluster, approximated, *arrays)
    plain = np.asarray(approximated(*arrays))
    np.testing.assert_allclose(out[0], plain[0], rtol=1e-3)  # inside the range: right
    (w,) = seen
    assert w.lineno == _line_of(approximated)
    assert f": {name}: input " in str(w.message)


def test_a_128_bit_ring_has_its_own_limits(tmp_path):
    """``ring: 128`` at 40 fraction bits: 2e4 squared is right and quiet, 4e12 squared
    (beyond 2^(126 - 80)) wraps and warns."""
    devices = (ROOT / "examples" / "two_party.devices").read_text()
    (tmp_path / "r128.devices").write_text(devices + "      ring: 128\n      fraction_bits: 40\n")
    cluster = mixc.init_device(str(tmp_path / "r128.devices"))

    def square(x):
        return x * x
    x = np.array([1.5, 2e4, 4e12], np.float32)
    out, seen = _run(cluster, square, x)
    np.testing.assert_allclose(out[:2], (x * x)[:2], rtol=1e-6)
    (w,) = seen
    assert "magnitude 1.6e+25" in str(w.message) and "2^46" in str(w.message)


def test_a_comparison_beyond_its_bound_warns(cluster):
    def less(x, y):
        return jnp.where(x < y, 1.0, 0.0)
    x = np.array([1.0, 2.0 ** 44.5], np.float32)
    y = np.array([2.0, -(2.0 ** 44.5)], np.float32)
    out, seen = _run(cluster, less, x, y)
    assert out[0] == 1.0
    (w,) = seen
    assert w.lineno == _line_of(less) and ": lt: " in str(w.message) and "2^45" in str(w.message)


def test_a_value_too_large_to_encode_warns_even_when_the_run_fails(cluster):
    @mixc.program
    def scaled(x=mixc.Input(cluster.p1, (2,))):
        big = mixc.device(cluster.p1)(lambda v: v * 1e14)(x)
        return mixc.reveal(mixc.device(cluster.mpc)(lambda v: v + 1.0)(big), cluster.p1)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(mixc.MixcError):
            scaled.simulate(x=np.array([1.0, 2.0], np.float32))
    (w,) = [w for w in seen if issubclass(w.category, mixc.RangeWarning)]
    assert w.lineno == _line_of(scaled.fn, 3)
    assert ": to: a value of magnitude 2e+14" in str(w.message)


def test_programs_that_are_not_the_global_irs_lowering_are_refused(cluster):
    def square(x):
        return x * x
    x = np.array([2.0], np.float32)
    prog, inputs = secure_program(cluster, square, x)
    bundle = prog.build()
    other, _ = secure_program(cluster, lambda v: v + v, x)
    bundle.programs["alice"] = other.build().programs["alice"]
    with pytest.raises(mixc.MixcError, match="the program of party 'alice' .*rebuild the bundle"):
        simulate(bundle, inputs)


def test_check_ranges_false_is_silent(cluster):
    def square(x):
        return x * x
    prog, inputs = secure_program(cluster, square, np.array([2e4], np.float32))
    for check_ranges, expected in ((False, 0), (True, 1)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            prog.simulate(inputs, check_ranges=check_ranges)
        assert sum(issubclass(w.category, mixc.RangeWarning) for w in seen) == expected


def _gradient_descent(x, y):
    def step(_, w):
        return w - 0.1 * x.T @ (x @ w - y) / x.shape[0]
    return jax.lax.fori_loop(0, 20, step, jnp.zeros(x.shape[1]))


def test_a_normal_linear_regression_does_not_warn(cluster):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1 * rng.normal(size=200)).astype(np.float32)
    out, seen = _run(cluster, _gradient_descent, x, y)
    np.testing.assert_allclose(out, _gradient_descent(x, y), atol=2e-3)
    assert seen == []


def test_one_warning_per_line_in_a_loop_of_50_iterations(cluster):
    def growing(x):
        return jax.lax.fori_loop(0, 50, lambda i, acc: acc + x * x, jnp.zeros_like(x))
    prog, inputs = secure_program(cluster, growing, np.array([1.0, 2e4], np.float32))
    bundle = prog.build()
    assert any(n.op == "loop" for n in bundle.programs["alice"].nodes)  # a loop, not unrolled
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = simulate(bundle, inputs)
    assert out[0] == pytest.approx(50.0, rel=1e-4)
    (w,) = [w for w in seen if issubclass(w.category, mixc.RangeWarning)]
    assert w.lineno == _line_of(growing) and "loop iteration 0" in str(w.message)


def test_nested_loops_are_checked_in_every_iteration(cluster):
    """The inner body reads x only through products a pass hoists in front of both loops
    (their captured argument is gone): the check still sees x, every iteration."""
    def nested(x, c):
        def outer(i, acc):
            return jax.lax.fori_loop(0, 3, lambda j, a: a + 0.5 * x * acc * c, acc)
        return jax.lax.fori_loop(0, 4, outer, jnp.ones_like(x))
    for x, warns in ((np.array([1.0, 0.5], np.float32), False),
                     (np.array([1.0, 300.0], np.float32), True)):
        c = np.ones(2, np.float32)
        out, seen = _run(cluster, nested, x, c)
        assert out[0] == pytest.approx(float(nested(x, c)[0]), rel=1e-4)
        assert [w.lineno for w in seen] == ([_line_of(nested, 2)] if warns else [])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-2.0 ** 40, 2.0 ** 40), min_size=1, max_size=6), st.integers(0, 2 ** 63))
def test_shares_of_every_kind_are_put_back_together(values, seed):
    from mixc.runtime import kernels
    from mixc.runtime.sanitizer import _reconstruct
    x = np.asarray(values)
    encoded = kernels.encode_fixed(x, 18)
    mask = np.random.default_rng(seed % 2 ** 32).integers(0, 2 ** 63, x.shape, dtype=np.uint64)
    expected = np.rint(x * 2.0 ** 18) / 2.0 ** 18
    how = ("arith", "f32", x.shape, 18)
    np.testing.assert_array_equal(_reconstruct(how, [encoded - mask, mask]), expected)
    how = ("bool", "f32", x.shape, 18)
    np.testing.assert_array_equal(_reconstruct(how, [encoded ^ mask, mask]), expected)
    bits = x > 0
    packed = kernels.bits_pack(bits.astype(np.uint64))
    words = np.random.default_rng(seed % 2 ** 32).integers(0, 2 ** 63, packed.shape,
                                                           dtype=np.uint64)
    how = ("bool", "bool", x.shape, 0)
    np.testing.assert_array_equal(_reconstruct(how, [packed ^ words, words]), bits)
    high = kernels.r128_encode(x, 40)
    mask128 = kernels.r128_from_int([int(m) << 40 for m in mask])
    how = ("arith", "f32", x.shape, 40)
    np.testing.assert_array_equal(_reconstruct(how, [kernels.r128_sub(high, mask128), mask128]),
                                  np.rint(x * 2.0 ** 40) / 2.0 ** 40)


# ------------------------------------------------------------ HE devices

@pytest.fixture(scope="module")
def he_cluster():
    return mixc.init_device(str(ROOT / "examples" / "two_party_he_device.devices"))


def _he_run(cluster, fn, x, w):
    """fn on the HE device of alice's x (encrypted) and bob's w (plaintext), revealed to bob:
    (result, RangeWarnings)."""
    from conftest import make_program

    def body(x, w):
        return mixc.reveal(mixc.device(cluster.he)(fn)(x, w), cluster.p2)
    prog = make_program(body, {"x": mixc.Input(cluster.p1, x.shape),
                               "w": mixc.Input(cluster.p2, w.shape)})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = simulate(prog.build(), {"x": x, "w": w})
    return np.asarray(out), [w for w in seen if issubclass(w.category, mixc.RangeWarning)]


def test_a_ciphertext_product_beyond_the_plaintext_modulus_warns_at_its_line(he_cluster):
    """x @ w carries 36 fraction bits: beyond 2^27 it wraps modulo 2^64."""
    def project(x, w):
        return x @ w
    rng = np.random.default_rng(0)
    x, w = (rng.normal(size=(4, 3)) * 1e6).astype(np.float32), \
        (rng.normal(size=(3, 2)) * 100).astype(np.float32)
    out, seen = _he_run(he_cluster, project, x, w)
    assert np.abs(out - x @ w).max() > 1e6                     # wrapped
    (warning,) = seen
    assert (warning.filename, warning.lineno) == (HERE, _line_of(project))
    message = str(warning.message)
    assert message.startswith(f"{HERE}:{_line_of(project)}: dot_general: a ciphertext product")
    assert "2^27" in message and "36 fraction bits on HE device 'he'" in message
    assert f"{np.abs(x.astype(np.float64) @ w).max():.4g}" in message


def test_a_chain_of_fractional_products_has_a_lower_limit(he_cluster):
    """x * w * 0.5 * 0.25 carries 18 bits more per product: 54 at the third, limit 2^9."""
    def chain(x, w):
        return x * w * 0.5 * 0.25
    x, w = np.float32([1.0, -2.0, 4000.0]), np.float32([1.5, 1.0, 2.0])
    out, seen = _he_run(he_cluster, chain, x, w)
    np.testing.assert_allclose(out[:2], (x * w * 0.125)[:2], rtol=1e-4)
    (warning,) = seen
    assert warning.lineno == _line_of(chain) and "2^9 = 512" in str(warning.message)
    assert "54 fraction bits" in str(warning.message)


def test_in_range_he_programs_do_not_warn(he_cluster):
    def affine(x, w):
        return (x @ w) * 3.0 + x[:, :2] * 0.5 - 1.0
    rng = np.random.default_rng(1)
    x, w = (rng.normal(size=(5, 3)) * 100).astype(np.float32), \
        rng.normal(size=(3, 2)).astype(np.float32)
    out, seen = _he_run(he_cluster, affine, x, w)
    assert seen == []
    np.testing.assert_allclose(out, affine(x, w), rtol=1e-4, atol=1e-3)


# ------------------------------------------------------------ build time: constants

def _build_warnings(cluster, fn):
    prog, _ = secure_program(cluster, fn, np.ones(3, np.float32))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        prog.build()
    return [w for w in seen if issubclass(w.category, mixc.RangeWarning)]


def test_adam_epsilon_that_rounds_to_zero_warns_once_at_its_line(cluster):
    def adam_step(g):
        m, v = 0.1 * g, 0.25 * g * g
        eps = 1e-8
        return m / (jnp.sqrt(v) + eps) + m / (jnp.sqrt(v) + eps)
    (w,) = _build_warnings(cluster, adam_step)
    assert w.lineno == _line_of(adam_step, 3)
    assert "1e-08 rounds to 0 at 18 fraction bits" in str(w.message)


def test_a_tiny_factor_warns(cluster):
    def scaled(x):
        return x * 1e-7
    (w,) = _build_warnings(cluster, scaled)
    assert w.lineno == _line_of(scaled) and "rounds to 0" in str(w.message)


def test_a_constant_keeping_few_bits_warns(cluster):
    def scaled(x):
        return x * 3e-4
    (w,) = _build_warnings(cluster, scaled)
    assert "keeps 7 of its" in str(w.message)


def test_normal_constants_do_not_warn(cluster):
    def ordinary(x):
        return 0.5 * x + 0.01 * x - 3 * x + 0.0 * x + jnp.float32(1000.0) + x / 7
    assert _build_warnings(cluster, ordinary) == []


def test_only_the_authors_constants_warn_at_few_fraction_bits(tmp_path):
    """At 12 fraction bits an approximation's own coefficients lose bits too; the warning
    is for what the author wrote, at their line."""
    devices = (ROOT / "examples" / "two_party.devices").read_text() + "      fraction_bits: 12\n"
    (tmp_path / "f12.devices").write_text(devices)
    cluster = mixc.init_device(str(tmp_path / "f12.devices"))

    def f(x):
        y = jnp.exp(x) + jax.nn.sigmoid(x)
        return y * 0.001
    (w,) = _build_warnings(cluster, f)
    assert w.lineno == _line_of(f, 2) and "0.001 keeps 3 of its 24" in str(w.message)


def test_jnp_interp_does_not_warn_about_jaxs_own_epsilon(cluster, plain):
    """jnp.interp compares |dx| <= 1.42e-14 inside JAX's code: on the 2^-18 grid that is
    |dx| <= 0, the same comparison, so its rounding to 0 is no warning (public or secret
    breakpoints), and the result is JAX's."""
    xp, fp = np.float32([0.0, 1.0, 2.0, 3.0]), np.float32([0.0, 2.0, 1.0, 5.0])
    x = np.linspace(-1.0, 4.0, 21).astype(np.float32)
    for fn, args in ((lambda x: jnp.interp(x, xp, fp), (x,)),
                     (lambda x, xp, fp: jnp.interp(x, xp, fp), (x, xp, fp))):
        prog, inputs = secure_program(cluster, fn, *args)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            out = simulate(prog.build(), inputs)
        assert [w for w in seen if issubclass(w.category, mixc.RangeWarning)] == []
        np.testing.assert_allclose(out, plain(fn, *args), atol=1e-4)


def test_a_jax_constant_that_can_change_the_result_warns_and_says_whose(cluster):
    def rounded(x):
        return jnp.round(x, -9) + jnp.isclose(x, 1.0)
    (w,) = _build_warnings(cluster, rounded)
    message = str(w.message)
    assert w.lineno == _line_of(rounded)
    assert "1e-09 rounds to 0" in message and "JAX's own round (lax_numpy.py:" in message
    assert "not one written here (it feeds mul)" in message


def test_a_constant_in_the_authors_own_jit_still_warns(cluster):
    @jax.jit
    def tiny(x):
        return x * 1e-8
    (w,) = _build_warnings(cluster, tiny)
    assert w.lineno == _line_of(tiny.__wrapped__, 2) and "scale it" in str(w.message)


@pytest.mark.parametrize("op,position,value,same", [
    ("le", 1, 1.42e-14, True), ("gt", 1, 1.42e-14, True), ("ge", 0, 1.42e-14, True),
    ("lt", 1, 1.42e-14, False), ("ge", 1, 1.42e-14, False), ("le", 0, 1.42e-14, False),
    ("lt", 1, 3 * 2.0 ** -20, True), ("le", 1, 3 * 2.0 ** -20, False),
    ("eq", 1, 2.0 ** -18, True), ("eq", 1, 1e-9, False), ("mul", 1, 1e-9, False)])
def test_which_comparisons_a_rounded_constant_leaves_alone(op, position, value, same):
    """The rule, checked by brute force on the grid around the constant."""
    from mixc.sanitize import _same_comparisons
    assert _same_comparisons(op, position, np.float32(value), 18) is same
    if op == "mul":
        return
    compare = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
               "eq": np.equal}[op]
    grid = np.arange(-8, 9) * 2.0 ** -18
    c, rounded = np.float64(np.float32(value)), np.rint(np.float32(value) * 2.0 ** 18) / 2.0 ** 18
    exact, encoded = ((compare(grid, k) if position else compare(k, grid)) for k in (c, rounded))
    assert np.array_equal(exact, encoded) is same


@settings(max_examples=50, deadline=None)
@given(st.integers(-2 ** 40, 2 ** 40), st.integers(0, 18))
def test_a_constant_on_the_grid_keeps_every_bit(numerator, shift):
    value = np.float32(numerator / 2.0 ** shift)
    if float(value) == numerator / 2.0 ** shift:  # exactly a float32
        assert imprecise_constant(value, 18) is None


# ------------------------------------------------------------ the command line

CLI_PROGRAM = f'''
import jax.numpy as jnp
import mixc
from mixc import device, reveal

cluster = mixc.init_device({str(ROOT / "examples" / "two_party.devices")!r})
p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc


def mix(a, b):
    e = jnp.exp(a)
    return e + a * b


@mixc.program
def small(a: mixc.Input(p1, (2,)), b: mixc.Input(p2, (2,))):
    return {{"r": reveal(device(mpc)(mix)(a, b), p1)}}
'''


def test_cli_run_local_check_ranges_warns_at_the_line(tmp_path):
    src = tmp_path / "prog.py"
    src.write_text(CLI_PROGRAM)
    a, b = np.array([1.0, 40.0], np.float32), np.array([2.0, 3e6], np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    mixc_cli = [sys.executable, "-m", "mixc"]
    subprocess.run(mixc_cli + ["build", str(src), "-o", str(tmp_path / "bundle")], check=True,
                   capture_output=True, cwd=tmp_path)
    run = subprocess.run(mixc_cli + ["run", str(tmp_path / "bundle"), "--local", "--check-ranges",
                                     "--input", f"a={tmp_path / 'a.npy'}",
                                     "--input", f"b={tmp_path / 'b.npy'}",
                                     "--output", str(tmp_path / "out")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("mixc: warning: ")]
    assert any(line.startswith("mixc: warning: prog.py:11: exp: input 40") for line in lines)
    assert any(line.startswith("mixc: warning: prog.py:12: mul: ") for line in lines)
    r = np.load(tmp_path / "out" / "alice" / "r.npy")
    assert r[0] == pytest.approx(np.exp(1.0) + 2.0, rel=1e-3)
