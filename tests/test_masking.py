"""The seed patent's masking protocol on dense and convolution layers.

The client (alice, p1) holds x, the server (bob, p2) holds W (and b). The
selection pass keeps W private at bob and picks ``masking`` where its
declared cost is lower than Beaver's, or wherever it applies when the program
prefers it; results match plain JAX within fixed-point error.
"""
# No `from __future__ import annotations`: mixc.program needs the Input objects.
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixc
from mixc import device, reveal
from mixc.bundle import build, simulate

from conftest import make_program

REPO = Path(__file__).resolve().parents[1]
C = mixc.init_device(str(REPO / "examples" / "two_party.devices"))
P1, P2, MPC = C.p1, C.p2, C.mpc
RNG = np.random.default_rng(11)


def arr(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def program(fn, inputs, prefer=()):
    names = list(inputs)
    specs = {n: mixc.Input(d, a.shape) for n, (d, a) in inputs.items()}
    prog = make_program(lambda **kw: reveal(device(MPC)(fn)(*[kw[n] for n in names]), P1), specs)
    prog.prefer = prefer
    return prog, {n: a for n, (_, a) in inputs.items()}


def run(fn, inputs, prefer=(), stats=None):
    prog, values = program(fn, inputs, prefer)
    bundle = build(prog, verify_between=True)
    out = simulate(bundle, values, stats=stats)
    return bundle, out, np.asarray(fn(*[jnp.asarray(v) for v in values.values()]))


def protocols(bundle, op):
    return [row[2] for row in bundle.cost_report.rows if row[1] == op]


def mlp(x, w1, b1, w2, b2):
    return jax.nn.relu(x @ w1 + b1) @ w2 + b2


def mlp_inputs(batch=1):
    return {"x": (P1, arr(batch, 784)), "w1": (P2, arr(784, 128, scale=0.05)),
            "b1": (P2, arr(128, scale=0.1)), "w2": (P2, arr(128, 10, scale=0.1)),
            "b2": (P2, arr(10, scale=0.1))}


def test_dense_chosen_by_cost_where_cheaper():
    """Batch 1, 784 -> 128: Enc(r) and one sanitised result move fewer bytes than Beaver
    opening W - b, so masking wins; the 128 -> 10 layer is cheaper with Beaver."""
    stats = {}
    bundle, out, ref = run(mlp, mlp_inputs(), stats=stats)
    np.testing.assert_allclose(out, ref, atol=2e-3)
    assert protocols(bundle, "dot_general") == ["masking", "arith2pc"]
    text = bundle.stages["select_protocols"]
    assert "@mpc:private = to(" in text and 'protocol="masking"' in text
    # declared bytes (the public key, once per session, is not in the op costs) match
    sent = sum(s["bytes_sent_total"] for s in stats.values())
    from mixc.runtime.he_ops import PK_BYTES
    estimate = bundle.cost_report.total.bytes + PK_BYTES
    assert abs(sent - estimate) <= 0.1 * estimate, (sent, estimate)


def test_dense_preferred_on_every_layer_input_shared_or_private():
    """prefer=("masking",): layer 1 with x private at the client, layer 2 with x shared."""
    bundle, out, ref = run(mlp, mlp_inputs(batch=3), prefer=("masking",))
    np.testing.assert_allclose(out, ref, atol=2e-3)
    assert protocols(bundle, "dot_general") == ["masking", "masking"]


def test_weights_on_the_left_and_transposed_weights():
    def f(x, w, v):
        return w @ x.T, x @ v.T  # v.T: the server transposes its own weights, locally
    bundle, out, ref = run(lambda x, w, v: f(x, w, v)[0] + f(x, w, v)[1].T,
                           {"x": (P1, arr(2, 16)), "w": (P2, arr(5, 16)), "v": (P2, arr(5, 16))},
                           prefer=("masking",))
    np.testing.assert_allclose(out, ref, atol=1e-3)
    assert protocols(bundle, "dot_general").count("masking") >= 2
    assert 'transpose(%' in bundle.stages["select_protocols"]


@pytest.mark.parametrize("dn,xs,ks,strides,padding", [
    (("NCHW", "OIHW", "NCHW"), (1, 1, 8, 8), (4, 1, 3, 3), (1, 1), "VALID"),
    (("NHWC", "HWIO", "NHWC"), (2, 7, 7, 3), (3, 3, 3, 5), (2, 2), "SAME"),
])
def test_conv_preferred(dn, xs, ks, strides, padding):
    def f(x, k, b):
        y = jax.lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=dn)
        return jax.nn.relu(y + b)
    bundle, out, ref = run(f, {"x": (P1, arr(*xs)), "k": (P2, arr(*ks, scale=0.3)),
                               "b": (P2, arr(scale=0.1))}, prefer=("masking",))
    np.testing.assert_allclose(out, ref, atol=1e-3)
    assert protocols(bundle, "conv_general_dilated") == ["masking"]


def test_conv_chosen_by_cost_for_a_large_kernel():
    def f(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), "VALID")
    bundle, out, ref = run(f, {"x": (P1, arr(1, 64, 3, 3)), "k": (P2, arr(256, 64, 3, 3,
                                                                            scale=0.05))})
    np.testing.assert_allclose(out, ref, atol=2e-3)
    assert protocols(bundle, "conv_general_dilated") == ["masking"]


def test_small_conv_uses_beaver_conv_triples():
    """Without a preference the tiny conv is cheaper with a Beaver conv triple."""
    def f(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME")
    bundle, out, ref = run(f, {"x": (P1, arr(2, 2, 6, 6)), "k": (P2, arr(3, 2, 3, 3))})
    np.testing.assert_allclose(out, ref, atol=1e-3)
    assert protocols(bundle, "conv_general_dilated") == ["arith2pc"]
    assert "triple correction" in bundle.text("bob")


def test_audit_and_messages_name_the_protocol():
    prog, values = program(mlp, mlp_inputs())
    bundle = build(prog, verify_between=True)
    audit = bundle.audit()
    assert "masking protocol (the seed patent) on 1 linear layer" in audit
    assert "dot_general [masking]" in audit
    assert "bob sees plaintext (its owner's alone" in audit  # W stays at the server
    alice, bob = bundle.text("alice"), bundle.text("bob")
    assert 'what="masked input (x - r)"' in alice and 'what="HE ciphertext: Enc(r)' in alice
    assert 'what="HE ciphertext: Enc(W.r - s)' in bob
    # the server sends nothing about W but the sanitised ciphertext and its shares' openings
    sent = {l.split('what="')[1].split('"')[0] for l in bob.splitlines() if l.startswith("send(")}
    assert not any("W" in w and "Enc(W.r - s)" not in w for w in sent)


def test_cost_report_and_cli_run_local(tmp_path):
    """The dealer-free example builds with --cost-report naming masking (chosen by cost),
    has exactly the two parties, and runs as party processes."""
    def mixc_cmd(*args):
        done = subprocess.run([sys.executable, "-m", "mixc", *map(str, args)],
                              capture_output=True, text=True, timeout=300, cwd=REPO)
        assert done.returncode == 0, done.stderr
        return done.stdout
    example = REPO / "examples" / "secure_inference.py"
    report = mixc_cmd("build", example, "--program", "cnn", "-o", tmp_path / "cnn",
                      "--cost-report")
    assert "conv_general_dilated  masking" in report and "dot_general           masking" in report
    import json
    assert json.loads((tmp_path / "cnn" / "manifest.json").read_text())["parties"] == \
        ["alice", "bob"]
    subprocess.run([sys.executable, str(example), "--save-inputs", tmp_path / "in", "cnn"],
                   check=True, timeout=120)
    inputs = [f"--input={p.stem}={p}" for p in sorted((tmp_path / "in").glob("*.npy"))]
    mixc_cmd("run", tmp_path / "cnn", "--local", "--timeout", "60", "--output",
             tmp_path / "out", *inputs)
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import secure_inference as ex
    finally:
        sys.path.pop(0)
    data = ex.cnn_data()
    logits, label = ex.cnn_model(**data)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "alice" / "logits.npy"),
                               np.asarray(logits), atol=1e-3)
    assert np.load(tmp_path / "out" / "alice" / "label.npy").tolist() == \
        np.asarray(label).tolist()


def test_example_programs_simulate_dealer_free():
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import secure_inference as ex
    finally:
        sys.path.pop(0)
    for name in ex.MODELS:
        assert ex.check(name) < 2e-3
        bundle = ex.MODELS[name][0].build()
        assert bundle.parties == ("alice", "bob")
        linear = [r[2] for r in bundle.cost_report.rows
                  if r[1] in ("dot_general", "conv_general_dilated")]
        assert linear == ["masking", "masking"]
