"""The HE device: linear functions on ciphertexts under the key owner's key.

alice owns the key (and the input x), bob evaluates with his plaintext (W, v).
Every program is built with the verifier between passes and run over the real
HE (runtime.he: n = 8192, log q = 218), then compared with plain JAX.
"""
# No `from __future__ import annotations`: mixc.program needs the Input objects.
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixc
from mixc import device, reveal
from mixc.bundle import build, simulate
from mixc.errors import MixcError, TraceError

from conftest import make_program

DEVICES = """
domain: ["alice", "bob"]
device:
  - p1:
      type: PYU
      domain: "alice"
  - p2:
      type: PYU
      domain: "bob"
  - he:
      type: HE
      domain: ["alice", "bob"]
      key_owner: "alice"
  - mpc:
      type: MPC
      domain: ["alice", "bob"]
"""
C = mixc.init_device(DEVICES)
P1, P2, HE, MPC = C.p1, C.p2, C.he, C.mpc
RNG = np.random.default_rng(7)


def arr(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def run(fn, inputs, reveal_to=None, stats=None, **build_kw):
    """Build (verifier on) and simulate ``fn`` on the HE device; inputs: name -> (device, array);
    ``stats`` gets each party's traffic."""
    names = list(inputs)
    specs = {n: mixc.Input(d, a.shape, a.dtype) for n, (d, a) in inputs.items()}

    def body(**kw):
        outs = device(HE)(fn)(*[kw[n] for n in names])
        outs = outs if isinstance(outs, tuple) else (outs,)
        dst = reveal_to or [P1] * len(outs)
        return tuple(reveal(o, d) for o, d in zip(outs, dst))
    bundle = build(make_program(body, specs), verify_between=True, **build_kw)
    out = simulate(bundle, {n: a for n, (_, a) in inputs.items()}, stats=stats)
    ref = fn(*[jnp.asarray(a) for _, a in inputs.values()])
    ref = ref if isinstance(ref, tuple) else (ref,)
    return bundle, out, [np.asarray(r) for r in ref]


def close(out, ref, atol=1e-3):
    for o, r in zip(out, ref):
        np.testing.assert_allclose(np.asarray(o, np.float64), np.asarray(r, np.float64), atol=atol)


def test_dense_layer_and_elementwise_linear_ops():
    """matmul with the evaluator's matrix, + its bias, scalar and vector products, neg, sub."""
    def f(x, w, b, v):
        y = x @ w + b
        return y, 2.0 * y - v[:, :3], -y, x * v[0, 0], x[0] * v[1], y / 4.0
    x, w, b, v = arr(2, 4), arr(4, 3), arr(3), arr(2, 4)
    bundle, out, ref = run(f, {"x": (P1, x), "w": (P2, w), "b": (P2, b), "v": (P2, v)})
    close(out, ref)
    text = bundle.stages["select_protocols"]
    assert 'dot_general(%' in text and 'protocol="he"' in text
    assert bundle.parties == ("alice", "bob")  # no dealer anywhere


def test_weights_on_the_left_conv_and_structural_ops():
    """W @ x with the ciphertext on the right, a convolution with the evaluator's kernel,
    reshape/transpose/slice/broadcast/concatenate of ciphertexts (relabelled for free)."""
    def f(x, w, img, k):
        y = w @ x                                     # (3, 2)
        z = jax.lax.conv_general_dilated(img, k, (1, 1), "SAME")
        t = jnp.transpose(y)[1:, ::2].reshape(-1)
        return y, z, t, jnp.concatenate([y, y * 3.0], axis=0), jnp.broadcast_to(x[0], (3, 2))
    x, w, img, k = arr(4, 2), arr(3, 4), arr(1, 2, 5, 5), arr(3, 2, 3, 3)
    _, out, ref = run(f, {"x": (P1, x), "w": (P2, w), "img": (P1, img), "k": (P2, k)})
    close(out, ref)


def test_sums_pads_and_second_products_refresh():
    """reduce_sum, pad and a product of a product's result need a refresh round trip."""
    def f(x, w, w2, v):
        y = x @ w
        return jnp.sum(y, axis=1), jnp.pad(y, ((1, 0), (0, 2))), (y @ w2) + v, jnp.sum(x * v)
    x, w, w2, v = arr(2, 4, scale=0.5), arr(4, 3, scale=0.5), arr(3, 4, scale=0.5), arr(2, 4)
    bundle, out, ref = run(f, {"x": (P1, x), "w": (P2, w), "w2": (P2, w2), "v": (P2, v)})
    close(out, ref, atol=2e-3)
    alice = bundle.text("alice")
    assert "he.decrypt" in alice and "HE ciphertext (sanitised, masked: v + s)" in alice


def test_reveal_to_the_evaluator_and_integers():
    def f(x, w, n):
        return x @ w, n * 3 + n
    x, w = arr(2, 4), arr(4, 3)
    n = RNG.integers(-1000, 1000, size=(5,)).astype(np.int32)
    bundle, out, ref = run(f, {"x": (P1, x), "w": (P2, w), "n": (P1, n)}, reveal_to=[P2, P2])
    close(out, ref)
    assert out[1].dtype == np.int32
    # bob gets the values only through alice's masked reply
    assert "masked value v + s (reveal)" in bundle.text("bob")


def test_keys_and_what_each_party_sees():
    def f(x, w):
        return x @ w
    bundle, out, ref = run(f, {"x": (P1, arr(1, 4)), "w": (P2, arr(4, 2))})
    close(out, ref)
    alice, bob = bundle.text("alice"), bundle.text("bob")
    assert alice.index("he.keygen") < alice.index("HE public key")
    assert "he.keygen" not in bob and "he.decrypt" not in bob
    # bob receives the public key and ciphertexts, never alice's plaintext
    recv = [l for l in bob.splitlines() if "recv()" in l]
    assert recv and all(":he =" in l or "HE public key" in l for l in recv)
    audit = bundle.audit()
    assert "HE device he: alice holds the secret key" in audit
    assert "bob sees a ciphertext under alice's key" in audit


def test_he_values_into_mpc_shares():
    """A dense layer on HE, relu on MPC: the ciphertexts become shares (truncated)."""
    def body(x, w, b):
        h = device(HE)(lambda x, w, b: x @ w + b)(x, w, b)
        return reveal(device(MPC)(jax.nn.relu)(h), P1)
    x, w, b = arr(1, 6), arr(6, 4), arr(4)
    prog = make_program(body, {"x": mixc.Input(P1, x.shape), "w": mixc.Input(P2, w.shape),
                               "b": mixc.Input(P2, b.shape)})
    bundle = build(prog, verify_between=True)
    out = simulate(bundle, {"x": x, "w": w, "b": b})
    np.testing.assert_allclose(out, np.maximum(x @ w + b, 0), atol=1e-3)


def test_linear_scan_and_a_cond_with_a_known_index():
    """A scan whose body is linear in the ciphertexts runs on HE as a loop; a cond whose
    index is known when tracing is its one branch."""
    def f(x, w):
        total, rows = jax.lax.scan(lambda c, r: (c + r @ w, 2.0 * r), jnp.zeros(3), x)
        return total, rows, jax.lax.cond(True, lambda v: v - 1.0, lambda v: v * w[0, 0], x)
    x, w = arr(4, 2), arr(2, 3)
    _, out, ref = run(f, {"x": (P1, x), "w": (P2, w)})
    close(out, ref)


def test_gathers_and_reversals_with_known_indices():
    def f(x, w):
        y = jnp.flip(x, 0)[jnp.array([1, 0, 1])] @ w
        return y, jnp.tile(x[:, ::-1], (1, 2)), jnp.cumsum(x, axis=1), x.at[0, 1].add(w[0, 0])
    x, w = arr(2, 4), arr(4, 3)
    _, out, ref = run(f, {"x": (P1, x), "w": (P2, w)})
    close(out, ref)


def cond_on_ciphertext(x):
    return jax.lax.cond(x.sum() > 0, lambda: x, lambda: -x)  # not linear


def test_cond_on_a_ciphertext_is_a_compile_error():
    with pytest.raises(TraceError) as e:
        _traced(cond_on_ciphertext, [(P1, (3,))]).build()
    msg = str(e.value)
    assert "is not a linear op" in msg or "lax.cond" in msg
    assert f"test_he_device.py:{_line_of(cond_on_ciphertext, 'not linear')}" in msg


def _line_of(fn, text):
    src, start = inspect.getsourcelines(fn)
    return start + next(i for i, l in enumerate(src) if text in l)


def _traced(fn, shapes):
    names = [f"a{i}" for i in range(len(shapes))]
    specs = {n: mixc.Input(d, s) for n, (d, s) in zip(names, shapes)}
    return make_program(lambda **kw: reveal(device(HE)(fn)(*[kw[n] for n in names]), P1), specs)


def relu_layer(x, w):
    y = x @ w
    return jax.nn.relu(y)  # not linear


def exp_of(x):
    return jnp.exp(x)  # not linear


def squared(x, w):
    return (x @ w) * x.sum()  # a product of two ciphertexts


@pytest.mark.parametrize("fn,shapes,op,marker", [
    (relu_layer, [(P1, (2, 3)), (P2, (3, 2))], "max", "jax.nn.relu(y)"),
    (exp_of, [(P1, (3,))], "exp", "jnp.exp(x)"),
])
def test_nonlinear_op_is_a_compile_error_naming_op_and_line(fn, shapes, op, marker):
    with pytest.raises(TraceError) as e:
        _traced(fn, shapes).build()
    msg = str(e.value)
    assert f"'{op}' is not a linear op" in msg
    assert f"test_he_device.py:{_line_of(fn, marker)}" in msg
    assert "\n" not in msg


def test_product_of_two_ciphertexts_is_an_error_naming_op_and_line():
    with pytest.raises(MixcError) as e:
        _traced(squared, [(P1, (2, 3)), (P2, (3, 2))]).build()
    msg = str(e.value)
    assert "mul of two values that both carry the key owner's data" in msg
    assert f"test_he_device.py:{_line_of(squared, 'x.sum()')}" in msg


def _messages(program):
    return [l for l in program.splitlines() if "send(" in l or "recv()" in l]


def test_four_products_in_a_chain_truncate_once_in_a_refresh():
    """x @ W1 @ W2 @ W3 @ W4: the operands of products 2-4 are refreshed; the third's
    carries 54 fraction bits (54 + 18 > 56), so its refresh truncates it to 18, its masked
    bits riding on the refresh's two messages. Fixed point: x and W round to 2^-19, the
    truncation errs by less than 2^-18 before the last two products: within 1e-3."""
    def chain(x, w1, w2, w3, w4):
        return x @ w1 @ w2 @ w3 @ w4
    ws = {f"w{i}": (P2, arr(8, 8, scale=0.4)) for i in range(1, 5)}
    stats = {}
    bundle, out, ref = run(chain, {"x": (P1, arr(2, 8)), **ws}, stats=stats)
    close(out, ref)
    alice, bob = bundle.text("alice"), bundle.text("bob")
    assert alice.count("he.decrypt") == 3 + 1  # three refreshes, the reveal
    assert alice.count("trunc_wrap_finish") == bob.count("trunc_wrap_finish") == 1
    # no message of its own: bob's masked bits follow his masked ciphertexts, alice's
    # re-encryption follows her masked bits
    sent_by_bob, sent_by_alice = _messages(bob), _messages(alice)
    bits = next(i for i, l in enumerate(sent_by_bob) if "send(" in l and "masked bit" in l)
    assert "send(" in sent_by_bob[bits - 1] and "sanitised, masked" in sent_by_bob[bits - 1]
    bits = next(i for i, l in enumerate(sent_by_alice) if "send(" in l and "masked bit" in l)
    assert "recv()" in sent_by_alice[bits - 1] and "sanitised, masked" in sent_by_alice[bits - 1]
    assert "recv()" in sent_by_alice[bits + 1] and "masked bit" in sent_by_alice[bits + 1]
    assert "send(" in sent_by_alice[bits + 2] and "matrix packing" in sent_by_alice[bits + 2]
    # declared: Enc(x); refresh rounds (the truncation adds only its offline bit-OLE's)
    from mixc.protocols.dealerfree import OT_ROUNDS
    rounds = [r[3].rounds for r in bundle.cost_report.rows if r[1] == "dot_general"]
    assert rounds == [1, 2, 2 + OT_ROUNDS, 2]
    assert_declared_bytes_match(bundle, stats)


def assert_declared_bytes_match(bundle, stats):
    """Declared bytes plus the public key (sent once, in no op's cost) match the run; the
    OT session's base OTs, also once, are in no op's cost either (a few kB)."""
    from mixc.runtime.he_ops import PK_BYTES
    sent = sum(s["bytes_sent_total"] for s in stats.values())
    estimate = bundle.cost_report.total.bytes + PK_BYTES
    assert abs(sent - estimate) <= 0.02 * estimate, (sent, estimate)


def test_chains_of_elementwise_and_scalar_products_truncate_where_needed():
    """x * v * v * v: the third elementwise product truncates in its refresh; a scalar
    product needs no refresh, so one is inserted, truncating, only when its operand's bits
    would overflow (* 1.5 after two products); * 3 adds no fraction bits."""
    def f(x, v, a):
        y = x * v * v
        return y * v * 3 * v, (y * 1.5) * a * v[0]
    stats = {}
    bundle, out, ref = run(f, {"x": (P1, arr(3, 5)), "v": (P2, arr(3, 5)),
                               "a": (P2, np.float32(-1.3))}, stats=stats)
    close(out, ref)
    alice = bundle.text("alice")
    assert alice.count("trunc_wrap_finish") == 3  # y * v, y * 1.5 and (...) * v[0]
    assert_declared_bytes_match(bundle, stats)


def test_products_need_fraction_bits_that_fit_twice():
    """A product of two 30-bit fixed-point values would carry 60 fraction bits: no
    truncation of an operand (down to f) helps, so it stays a compile error."""
    c = mixc.init_device(DEVICES.replace('key_owner: "alice"',
                                         'key_owner: "alice"\n      fraction_bits: 30'))
    prog = make_program(lambda x, w: reveal(device(c.he)(lambda x, w: x @ w)(x, w), c.p1),
                        {"x": mixc.Input(c.p1, (1, 2)), "w": mixc.Input(c.p2, (2, 2))})
    with pytest.raises(MixcError, match="would carry 60 fraction bits.*f <= 28"):
        prog.build()


def test_third_party_data_cannot_enter_the_he_device():
    c = mixc.init_device(DEVICES.replace('domain: ["alice", "bob"]\ndevice:',
                                         'domain: ["alice", "bob", "carol"]\ndevice:\n'
                                         '  - p3:\n      type: PYU\n      domain: "carol"'))
    prog = make_program(lambda x: reveal(device(c.he)(lambda x: x * 2.0)(x), c.p1),
                        {"x": mixc.Input(c.p3, (3,))})
    with pytest.raises(TraceError, match="only its parties"):
        prog.build()


def test_ir_of_he_and_masking_programs_round_trips():
    """parse(print(m)) == m for every stage and party of an HE program (ciphertext types,
    he.* ops, position arrays) and of a masking program (private values)."""
    from mixc.ir.parser import parse_module
    from mixc.ir.printer import print_module
    from mixc.passes import PIPELINE, partition, run_pipeline

    def f(x, w):
        y = x @ w
        return jnp.sum(y) + y[0, 0]
    he_prog = _traced(f, [(P1, (2, 3)), (P2, (3, 2))])
    mpc_prog = make_program(lambda x, w: reveal(device(MPC)(lambda a, b: a @ b)(x, w), P1),
                            {"x": mixc.Input(P1, (1, 300)), "w": mixc.Input(P2, (300, 64))})
    mpc_prog.prefer = ("masking",)
    def check(name, m):
        text = print_module(m)
        assert parse_module(text) == m, name
        texts.append(text)
    for prog in (he_prog, mpc_prog):
        texts = []
        m = prog.trace()
        m.prefer = getattr(prog, "prefer", ())
        final = run_pipeline(m, keep=check)
        for party, pm in partition.split(final).items():
            check(party, pm)
    selected = [n for n, _ in PIPELINE].index("select_protocols")
    assert 'protocol="masking"' in texts[selected]


def test_integer_ciphertext_as_float_keeps_fraction_bits():
    """An i32 ciphertext converted to f32 then added to fractional plaintexts (the owner's
    and the evaluator's): they must not be rounded to integers."""
    def f(i, j, x, v):
        return (i + j).astype(jnp.float32) + x + v
    i = np.array([[3, -2, 7]], np.int32)
    j = np.array([[1, 5, -4]], np.int32)
    x, v = np.array([[0.25, -0.375, 0.5]], np.float32), np.array([[0.125, 0.75, -0.625]], np.float32)
    _, out, ref = run(f, {"i": (P1, i), "j": (P2, j), "x": (P1, x), "v": (P2, v)})
    close(out, ref, atol=1e-4)
