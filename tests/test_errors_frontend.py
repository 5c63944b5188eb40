"""Errors the author can cause, reported at the author's code.

Tracing errors are ``mixc.errors.TraceError`` (a ``MixcError``) whose one-line
message names the op or value at fault and the author's ``file:line``; the
tests find the offending line of this file by a marker comment. Bad inputs to
``simulate`` are ``InputError``s raised before any party starts.
"""
# No `from __future__ import annotations` here: mixc.program reads the
# mixc.Input annotations as objects (see the report on PEP 563).
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import mixc
from mixc.bundle import build, simulate
from mixc.errors import InputError, MixcError, TraceError, VerifyError

HERE = os.path.basename(__file__)


def line_of(marker):
    """The line number of the line of this file that carries ``# <marker>``."""
    with open(__file__) as f:
        hits = [i for i, line in enumerate(f, 1) if line.rstrip().endswith(f"# {marker}")]
    assert len(hits) == 1, f"marker {marker!r} found {len(hits)} times"
    return hits[0]


def assert_at(err, marker):
    msg = str(err)
    assert "\n" not in msg, f"not one line: {msg!r}"
    assert f"{HERE}:{line_of(marker)}" in msg, f"{msg!r} does not point at {HERE}:{line_of(marker)}"


def build_checked(prog):
    return build(prog, verify_between=True)


# ------------------------------------------------------------ outputs

def test_unrevealed_output_names_output_and_program(cluster):
    p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc

    @mixc.program  # PROGRAM-unrevealed
    def leaky(x: mixc.Input(p1, (3,)), y: mixc.Input(p2, (3,))):  # DEF-unrevealed
        return mixc.device(mpc)(lambda a, b: a + b)(x, y)

    with pytest.raises(TraceError) as e:
        build_checked(leaky)
    msg = str(e.value)
    assert "'out0'" in msg and "unrevealed" in msg and "reveal(" in msg
    assert "\n" not in msg
    assert any(f"{HERE}:{line_of(m)}" in msg for m in ("PROGRAM-unrevealed", "DEF-unrevealed"))


def test_unrevealed_named_output(cluster):
    p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc

    @mixc.program
    def leaky(x: mixc.Input(p1, (3,)), y: mixc.Input(p2, (3,))):
        z = mixc.device(mpc)(lambda a, b: a * b)(x, y)
        return {"ok": mixc.reveal(z, p1), "secret_sum": z}

    with pytest.raises(TraceError, match="'secret_sum'.*unrevealed"):
        build_checked(leaky)


# ------------------------------------------------------------ unsupported on MPC

def _one_input_program(cluster, fn):
    p1, mpc = cluster.p1, cluster.mpc

    @mixc.program
    def prog(x: mixc.Input(p1, (3,)), y: mixc.Input(cluster.p2, (3,))):
        return mixc.reveal(mixc.device(mpc)(fn)(x, y), p1)
    return prog


def test_unsupported_lgamma_names_op_and_line(cluster):
    def f(a, b):
        c = a * b
        return jax.scipy.special.gammaln(c)  # OFFENDING-lgamma

    with pytest.raises(TraceError) as e:
        build_checked(_one_input_program(cluster, f))
    assert "'lgamma'" in str(e.value) and "mpc" in str(e.value)
    assert_at(e.value, "OFFENDING-lgamma")


def test_unsupported_digamma_names_op_and_line(cluster):
    def f(a, b):
        return a + jax.scipy.special.digamma(b)  # OFFENDING-digamma

    with pytest.raises(TraceError) as e:
        build_checked(_one_input_program(cluster, f))
    assert "'digamma'" in str(e.value)
    assert_at(e.value, "OFFENDING-digamma")


def test_while_loop_on_mpc_names_line(cluster):
    def f(a, b):
        return lax.while_loop(lambda c: c.sum() < 10, lambda c: c + b, a)  # OFFENDING-while

    with pytest.raises(TraceError) as e:
        build_checked(_one_input_program(cluster, f))
    assert "while_loop" in str(e.value) and "trip count" in str(e.value)
    assert_at(e.value, "OFFENDING-while")


def test_fori_loop_with_traced_bounds_names_line(cluster):
    def f(a, b):
        n = (a.sum() > 0).astype(jnp.int32)
        return lax.fori_loop(0, n, lambda i, c: c + b, a)  # OFFENDING-fori

    with pytest.raises(TraceError) as e:
        build_checked(_one_input_program(cluster, f))
    assert "fori_loop" in str(e.value)
    assert_at(e.value, "OFFENDING-fori")


def test_error_in_nested_jit_points_inside(cluster):
    @jax.jit
    def helper(a):
        return jax.scipy.special.i0e(a)  # OFFENDING-nested-i0e

    with pytest.raises(TraceError) as e:
        build_checked(_one_input_program(cluster, lambda a, b: helper(a) + b))
    assert "'bessel_i0e'" in str(e.value)
    assert_at(e.value, "OFFENDING-nested-i0e")


# ------------------------------------------------------------ leaks refused

def test_mpc_value_in_pyu_function_without_reveal(cluster):
    p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc

    @mixc.program
    def leaky(x: mixc.Input(p1, (3,)), y: mixc.Input(p2, (3,))):
        z = mixc.device(mpc)(lambda a, b: a * b)(x, y)
        return mixc.device(p1)(lambda a: a + 1)(z)  # OFFENDING-pyu-reads-mpc

    # with the verifier between passes (what the tests use) it refuses right after place
    with pytest.raises(MixcError) as e:
        build_checked(leaky)
    assert isinstance(e.value, (TraceError, VerifyError))
    assert "mpc" in str(e.value) and "reveal" in str(e.value)
    assert_at(e.value, "OFFENDING-pyu-reads-mpc")
    # a plain build: insert_transfers refuses it with the fix in the message
    with pytest.raises(TraceError, match=r"secret value from mpc is used on p1; reveal\(value, p1\)"):
        build(leaky)


def test_reveal_then_pyu_is_fine(cluster):
    p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc

    @mixc.program
    def ok(x: mixc.Input(p1, (3,)), y: mixc.Input(p2, (3,))):
        z = mixc.device(mpc)(lambda a, b: a * b)(x, y)
        return mixc.device(p1)(lambda a: a + 1)(mixc.reveal(z, p1))

    x, y = np.ones(3, np.float32), np.full(3, 2.0, np.float32)
    np.testing.assert_allclose(simulate(build_checked(ok), {"x": x, "y": y}), x * y + 1, atol=1e-4)


def test_plaintext_of_p1_on_p2_needs_explicit_to(cluster):
    p1, p2 = cluster.p1, cluster.p2

    @mixc.program
    def leaky(x: mixc.Input(p1, (3,)), y: mixc.Input(p2, (3,))):
        return mixc.device(p2)(lambda a, b: a + b)(x, y)  # OFFENDING-p1-on-p2

    with pytest.raises(MixcError) as e:
        build_checked(leaky)
    assert isinstance(e.value, (TraceError, VerifyError))
    assert "p1" in str(e.value) and "p2" in str(e.value)
    assert_at(e.value, "OFFENDING-p1-on-p2")
    with pytest.raises(TraceError, match=r"explicit to\(value, p2\)"):
        build(leaky)


def test_explicit_to_works_and_is_audited(cluster):
    p1, p2 = cluster.p1, cluster.p2

    @mixc.program
    def shared(x: mixc.Input(p1, (3,)), y: mixc.Input(p2, (3,))):
        return mixc.device(p2)(lambda a, b: a + b)(mixc.to(x, p2), y)  # EXPLICIT-to

    bundle = build_checked(shared)
    x, y = np.arange(3, dtype=np.float32), np.ones(3, np.float32)
    np.testing.assert_array_equal(simulate(bundle, {"x": x, "y": y}), x + y)
    audit = bundle.audit()
    section = audit.split("disclosures (plaintext leaving its owner):")[1].split("\n\n")[0]
    assert "plaintext of p1 sent to p2" in section and "by explicit to" in section
    assert f"{HERE}:{line_of('EXPLICIT-to')}" in section
    # and the message crosses as what it is
    assert 'what="plaintext (explicit to)"' in bundle.text("alice")


def test_input_on_mpc_device_refused(cluster):
    with pytest.raises(TraceError) as e:
        mixc.Input(cluster.mpc, (3,))  # OFFENDING-input-mpc
    assert "PYU" in str(e.value) and "'mpc'" in str(e.value)
    assert_at(e.value, "OFFENDING-input-mpc")


def test_input_with_unsupported_dtype_refused(cluster):
    with pytest.raises(TraceError, match="float32, int32 or bool"):
        mixc.Input(cluster.p1, (3,), np.float64)


def test_parameter_without_input_annotation(cluster):
    def f(x, y: mixc.Input(cluster.p1, (2,))):
        return y
    with pytest.raises(TraceError, match="'x'.*mixc.Input"):
        mixc.program(f)


def test_program_in_module_with_postponed_annotations(cluster):
    source = ("from __future__ import annotations\n"
              "import mixc\n"
              "def prog(x: mixc.Input(P1, (3,))):\n"
              "    return mixc.device(P1)(lambda a: a * 2)(x)\n")
    namespace = {"P1": cluster.p1}
    exec(compile(source, "author_module.py", "exec"), namespace)
    prog = mixc.program(namespace["prog"])
    x = np.arange(3, dtype=np.float32)
    np.testing.assert_array_equal(prog.simulate(x=x), x * 2)


def test_device_value_used_outside_device_function(cluster):
    @mixc.program
    def bad(x: mixc.Input(cluster.p1, (3,))):
        return x + 1  # OFFENDING-body-arith

    with pytest.raises(TraceError) as e:
        build_checked(bad)
    assert "device value" in str(e.value)
    assert_at(e.value, "OFFENDING-body-arith")


# ------------------------------------------------------------ simulate inputs

@pytest.fixture(scope="module")
def mul_bundle(cluster):
    p1, p2, mpc = cluster.p1, cluster.p2, cluster.mpc

    @mixc.program
    def prog(x: mixc.Input(p1, (2, 3)), n: mixc.Input(p2, (3,), jnp.int32)):
        z = mixc.device(mpc)(lambda a, b: a * b.astype(jnp.float32))(x, n)
        return mixc.reveal(z, p1)
    return build_checked(prog)


GOOD = {"x": np.ones((2, 3), np.float32), "n": np.arange(3, dtype=np.int32)}


@pytest.fixture
def no_party_runs(monkeypatch):
    from mixc.runtime import executor, links
    started = []

    def spy(self):
        started.append(self.party)
        raise AssertionError(f"party {self.party} ran")
    monkeypatch.setattr(executor.PartyExecutor, "run", spy)
    sent = []
    monkeypatch.setattr(links.Link, "send", lambda self, *a, **k: sent.append(a))
    yield started
    assert not started and not sent


def test_good_inputs_run(mul_bundle):
    np.testing.assert_allclose(simulate(mul_bundle, GOOD), GOOD["x"] * GOOD["n"], atol=1e-4)


@pytest.mark.parametrize("inputs,pattern", [
    ({"x": np.ones((3, 2), np.float32), "n": GOOD["n"]}, r"'x'.*shape \(3, 2\).*\(2, 3\)"),
    ({"x": np.ones((2, 3, 1), np.float32), "n": GOOD["n"]}, r"'x'.*shape"),
    ({"x": GOOD["x"], "n": np.arange(4, dtype=np.int32)}, r"'n'.*shape \(4,\)"),
    ({"x": GOOD["x"], "n": np.ones(3, np.float32)}, r"'n'.*dtype float32.*i32"),
    ({"x": np.ones((2, 3), np.int32), "n": GOOD["n"]}, r"'x'.*dtype int32.*f32"),
    ({"x": GOOD["x"]}, r"missing input.*\bn\b"),
    ({"n": GOOD["n"]}, r"missing input.*\bx\b"),
    ({**GOOD, "z": np.ones(3, np.float32)}, r"unknown input.*\bz\b"),
    ({"x": np.array([[1, np.nan, 2], [3, 4, 5]], np.float32), "n": GOOD["n"]},
     r"^input 'x' of party 'alice' holds nan at index \[0, 1\], which fixed point cannot encode"),
    ({"x": np.array([[1, 2, 3], [4, 5, -np.inf]], np.float32), "n": GOOD["n"]},
     r"'x' of party 'alice' holds -inf at index \[1, 2\]"),
    ({"x": np.array([[1, 2, 3], [4, 2.0 ** 46, 5]], np.float32), "n": GOOD["n"]},
     r"'x' of party 'alice' holds 7\.03687e\+13 at index \[1, 1\], outside the fixed-point "
     r"range \|x\| < 2\^45 \(18 fraction bits\)"),
])
def test_bad_inputs_refused_before_any_party_runs(mul_bundle, no_party_runs, inputs, pattern):
    with pytest.raises(InputError, match=pattern) as e:
        simulate(mul_bundle, inputs)
    assert "\n" not in str(e.value)


@settings(max_examples=200, deadline=None)
@given(exponent=st.floats(40, 47), sign=st.sampled_from([-1.0, 1.0]),
       special=st.sampled_from([None, np.nan, np.inf, -np.inf]), frac_bits=st.sampled_from([0, 18]))
def test_input_check_agrees_with_the_encoder(exponent, sign, special, frac_bits):
    """The input check refuses exactly what kernels.encode_fixed cannot encode."""
    from mixc.runtime import kernels
    from mixc.runtime.executor import first_unencodable
    value = sign * 2.0 ** (exponent + 18 - frac_bits) if special is None else special
    x = np.array([1.0, value, 2.0])
    try:
        kernels.encode_fixed(x, frac_bits)
        encodes = True
    except ValueError:
        encodes = False
    bad = first_unencodable(x, frac_bits, 64)
    assert (bad is None) == encodes
    if bad is not None:
        assert bad[0] == (1,) and np.array_equal(bad[1], value, equal_nan=True)


# ------------------------------------------------------- values that fail at run time

def test_public_constant_that_cannot_be_encoded_names_the_line(cluster):
    from mixc.errors import NumericError

    @mixc.program
    def prog(x: mixc.Input(cluster.p1, (3,))):
        y = mixc.device(cluster.mpc)(lambda a: a + jnp.inf)(x)  # OFFENDING-inf-constant
        return mixc.reveal(y, cluster.p1)
    with pytest.raises(NumericError, match="a public constant, encoded in fixed point here, "
                                           "holds inf") as e:
        prog.simulate(x=np.ones(3, np.float32))
    assert_at(e.value, "OFFENDING-inf-constant")


def test_plaintext_result_that_cannot_be_encoded_names_the_line(cluster):
    from mixc.errors import NumericError

    @mixc.program
    def prog(x: mixc.Input(cluster.p1, (3,))):
        y = mixc.device(cluster.p1)(lambda a: a / (a - 1))(x)
        z = mixc.device(cluster.mpc)(jnp.negative)(y)  # OFFENDING-inf-result
        return mixc.reveal(z, cluster.p1)
    np.testing.assert_allclose(prog.simulate(x=np.full(3, 3, np.float32)), -1.5, atol=1e-4)
    with np.errstate(divide="ignore"), pytest.raises(
            NumericError, match=r"result of <lambda> on this party, encoded in fixed point here, "
                                r"holds inf at index \[1\], which fixed point cannot encode "
                                r"\(party 'alice'\)") as e:
        prog.simulate(x=np.array([3, 1, 2], np.float32))
    assert_at(e.value, "OFFENDING-inf-result")


def test_op_failing_on_a_value_names_op_party_and_line(cluster, monkeypatch):
    """Any ValueError/ArithmeticError of a run-time kernel becomes one line naming
    the op, the party and the author's line (decode_fixed raises one for a bad
    argument)."""
    from mixc.errors import NumericError
    from mixc.runtime import kernels

    @mixc.program
    def prog(x: mixc.Input(cluster.p1, (3,))):
        y = mixc.device(cluster.mpc)(lambda a: a * a)(x)
        return mixc.reveal(y, cluster.p1)  # OFFENDING-decode

    def failing(u, frac_bits, out=None):
        raise ValueError("decode_fixed: u must be a uint64 array")
    monkeypatch.setattr(kernels, "decode_fixed", failing)
    with pytest.raises(NumericError, match=r"decode failed on party 'alice': ValueError: "
                                           r"decode_fixed: u must be") as e:
        prog.simulate(x=np.ones(3, np.float32))
    assert_at(e.value, "OFFENDING-decode")
