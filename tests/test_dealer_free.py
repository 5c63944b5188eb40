"""Dealer-free 2PC (``offline: he``): the two parties make every correlation themselves.

Matrix-product triples by HE under each party's key, elementwise and AND
triples by OT, truncation by an OT bit product, B2A pairs by bit-OLE
(``mixc/protocols/dealerfree.py``). Checked: MLP and CNN inference match
plain JAX within fixed-point error via ``simulate`` and ``mixc run --local``;
the bundle has exactly the two parties and no party program mentions a
dealer; mul/matmul/lt/relu/where are right; the audit names the sources;
the truncation's error bound; the offline part holds every correlation.
"""
# No `from __future__ import annotations`: mixc.program needs the Input objects.
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mixc
from mixc.bundle import build, simulate
from mixc.ir.ops import OPS
from mixc.protocols import rules_for
from mixc.runtime.phases import offline_first, simulate_phased

from conftest import REPO, make_program

HE_DEVICES = REPO / "examples" / "two_party_he.devices"
TOL = 2e-3  # fixed point at f = 18, a few products and truncations deep


@pytest.fixture(scope="module")
def he_cluster():
    return mixc.init_device(str(HE_DEVICES))


def mlp(x, w1, b1, w2, b2):
    return jnp.maximum(x @ w1 + b1, 0) @ w2 + b2


def cnn(img, k, w, b):
    y = jax.lax.conv_general_dilated(img, k, (1, 1), "VALID")
    y = jax.nn.relu(y).reshape(img.shape[0], -1)
    return y @ w + b


def _mlp_data(batch=4, n_in=48, hidden=16, out=10, seed=0):
    rng = np.random.default_rng(seed)
    n = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {"x": n(batch, n_in), "w1": n(n_in, hidden) * 0.2, "b1": n(hidden) * 0.1,
            "w2": n(hidden, out) * 0.2, "b2": n(out) * 0.1}


def _mlp_program(c, data, prefer=()):
    specs = {"x": mixc.Input(c.p1, data["x"].shape)}
    specs.update({k: mixc.Input(c.p2, v.shape) for k, v in data.items() if k != "x"})

    def body(x, w1, b1, w2, b2):
        return mixc.reveal(mixc.device(c.mpc)(mlp)(x, w1, b1, w2, b2), c.p1)
    prog = make_program(body, specs, "mlp")
    prog.prefer = tuple(prefer)
    return prog


def _no_dealer(text):
    """No dealer anywhere in a program's text (source locations aside: this file's name)."""
    return "dealer" not in re.sub(r' loc\("[^"]*"\)', "", text).lower()


def _protocols(bundle, op):
    return {n.attrs["protocol"] for n in bundle.graph_module.nodes if n.op == op}


@pytest.fixture(scope="module")
def mlp_bundle(he_cluster):
    """The MLP with HE-made matrix triples (``prefer``: Beaver on shares for every layer)."""
    data = _mlp_data()
    bundle = build(_mlp_program(he_cluster, data, prefer=("arith2pc.he",)), verify_between=True)
    return bundle, data


def test_bundle_has_only_the_two_parties(mlp_bundle):
    bundle, _ = mlp_bundle
    assert bundle.parties == ("alice", "bob")
    assert set(bundle.programs) == {"alice", "bob"}
    for party in bundle.parties:
        text = bundle.text(party)
        assert _no_dealer(text), party
        assert "ot.session" in text and "he.keygen" in text
    # the dealer rules do not run on an offline: he device; the dealer-free ones did
    assert _protocols(bundle, "dot_general") == {"arith2pc.he"}
    assert _protocols(bundle, "lt") <= {"bool2pc.ot"}


def test_mlp_matches_jax_simulate(mlp_bundle):
    bundle, data = mlp_bundle
    out = simulate(bundle, data)
    np.testing.assert_allclose(out, np.asarray(mlp(**data)), atol=TOL)


def test_mlp_default_selection_is_dealer_free(he_cluster):
    """Without a preference the selector may pick the masking protocol for the layers;
    everything it needs besides (truncation, comparison, select) is still dealer-free."""
    data = _mlp_data(seed=1)
    bundle = build(_mlp_program(he_cluster, data), verify_between=True)
    assert bundle.parties == ("alice", "bob")
    assert all(_no_dealer(bundle.text(p)) for p in bundle.parties)
    np.testing.assert_allclose(simulate(bundle, data), np.asarray(mlp(**data)), atol=TOL)


def test_audit_names_the_sources(mlp_bundle):
    bundle, _ = mlp_bundle
    audit = bundle.audit()
    line = next(ln for ln in audit.splitlines() if "correlated randomness for MPC device" in ln)
    assert "no dealer" in line
    assert "matmul triples: HE under each party's key" in line
    assert "alice's key (bob evaluates)" in line and "bob's key (alice evaluates)" in line
    assert "AND triples: OT" in line and "between alice and bob" in line
    assert "arithmetic triples: OT-based OLE between alice and bob" in line
    assert "truncation: bit products by OT" in line
    assert "party 'dealer'" not in audit


def test_cnn_matches_jax(he_cluster):
    rng = np.random.default_rng(2)
    n = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    data = {"img": n(1, 1, 6, 6), "k": n(3, 1, 3, 3) * 0.3, "w": n(48, 5) * 0.2, "b": n(5) * 0.1}
    specs = {"img": mixc.Input(he_cluster.p1, data["img"].shape)}
    specs.update({k: mixc.Input(he_cluster.p2, v.shape) for k, v in data.items() if k != "img"})

    def body(img, k, w, b):
        return mixc.reveal(mixc.device(he_cluster.mpc)(cnn)(img, k, w, b), he_cluster.p1)
    prog = make_program(body, specs, "cnn")
    prog.prefer = ("arith2pc.he",)  # conv and dense by HE-made triples on shares
    bundle = build(prog, verify_between=True)
    assert bundle.parties == ("alice", "bob")
    assert _protocols(bundle, "conv_general_dilated") == {"arith2pc.he"}
    np.testing.assert_allclose(simulate(bundle, data), np.asarray(cnn(**data)), atol=TOL)


def test_ops_mul_matmul_lt_relu_where(he_cluster):
    """Also a batched matrix product (one HE triple per batch element), a shared scalar
    times a tensor (OLE cross terms) and sigmoid (its approximation's products)."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((6, 5)).astype(np.float32) * 3
    b = rng.standard_normal((6, 5)).astype(np.float32) * 3
    m = rng.standard_normal((5, 4)).astype(np.float32)
    b[0, 0] = a[0, 0]  # a tie

    def fn(a, b, m):
        s = a + b  # shared (not private) operands: Beaver products on shares
        return (a * b, s @ m, a < b, jnp.maximum(s, 0), jnp.where(a < b, a, s), s * 2.5,
                jnp.einsum("bi,bij->bj", s[:2], (s[:2, :, None] * m[None, :, :2])),  # batched
                jnp.sum(a) * s * 0.1, jax.nn.sigmoid(s))  # a shared scalar times a tensor

    specs = {"a": mixc.Input(he_cluster.p1, a.shape), "b": mixc.Input(he_cluster.p2, b.shape),
             "m": mixc.Input(he_cluster.p2, m.shape)}

    def body(a, b, m):
        return mixc.reveal(mixc.device(he_cluster.mpc)(fn)(a, b, m), he_cluster.p1)
    prog = make_program(body, specs, "ops")
    prog.prefer = ("arith2pc.he",)
    bundle = build(prog, verify_between=True)
    assert bundle.parties == ("alice", "bob")
    out = simulate(bundle, {"a": a, "b": b, "m": m})
    ref = fn(a, b, m)
    for i, (o, r) in enumerate(zip(out, ref)):
        o, r = np.asarray(o), np.asarray(r)
        if r.dtype == bool:
            np.testing.assert_array_equal(o, r, err_msg=f"output {i}")
        else:
            np.testing.assert_allclose(o, r, atol=TOL, err_msg=f"output {i}")


def test_dealer_only_rules_refuse_he_devices(mlp_bundle):
    bundle, _ = mlp_bundle
    module = bundle.graph_module
    lt_rules = {r.protocol for r in rules_for("lt")}
    assert {"bool2pc", "bool2pc.radix4", "bool2pc.ot"} <= lt_rules
    for node in module.nodes:
        if node.op in ("lt", "dot_general", "mul") and "protocol" in node.attrs:
            kinds = tuple(v.type.kind for v in node.operands)
            for r in rules_for(node.op):
                if r.protocol in ("bool2pc", "bool2pc.radix4", "arith2pc"):
                    assert not r.accepts(kinds, node, module), (node.op, r.protocol)


def test_truncation_error_at_most_one_ulp():
    """trunc_wrap_finish on random shares of extreme values: floor(x/2^f) or one more."""
    rng = np.random.default_rng(4)
    f = 18
    n = 20000
    x = np.concatenate([rng.integers(-(1 << 62), 1 << 62, n, dtype=np.int64),
                        np.array([-(1 << 62), (1 << 62) - 1, 0, -1, 1], dtype=np.int64)])
    x0 = rng.integers(0, 1 << 64, x.size, dtype=np.uint64)
    x1 = x.view(np.uint64) - x0
    u0, v1 = x0 + np.uint64(1 << 62), np.uint64(0) - x1
    a = np.uint64(1) - (u0 >> np.uint64(63))
    b = v1 >> np.uint64(63)
    alpha = rng.integers(0, 2, x.size, dtype=np.uint64)
    beta = rng.integers(0, 2, x.size, dtype=np.uint64)
    t0 = rng.integers(0, 1 << 64, x.size, dtype=np.uint64)
    t1 = alpha * beta - t0
    e, g = a ^ alpha, b ^ beta
    impl = OPS["trunc_wrap_finish"].impl
    y0 = impl({"bits": f, "first": True}, u0, e, g, alpha, t0)
    y1 = impl({"bits": f, "first": False}, v1, e, g, beta, t1)
    got = (y0 + y1).view(np.int64)
    floor = x >> f
    assert np.all((got == floor) | (got == floor + 1))


def test_offline_part_holds_every_correlation(mlp_bundle):
    bundle, data = mlp_bundle
    programs, split = offline_first(bundle.programs)
    for p, m in programs.items():
        online = m.nodes[split[p]:]
        assert not [n.op for n in online if n.op.startswith(("ot.", "he.", "he_mm."))], p
    out, report = simulate_phased(bundle, data)
    np.testing.assert_allclose(out, np.asarray(mlp(**data)), atol=TOL)
    assert report["offline_s"] > 0 and report["online_s"] > 0
    assert sum(report["offline_bytes"].values()) > sum(report["online_bytes"].values()) > 0


PROGRAM = """
    import os
    import jax.numpy as jnp
    import mixc
    c = mixc.init_device({devices!r})

    def mlp(x, w1, b1, w2, b2):
        return jnp.maximum(x @ w1 + b1, 0) @ w2 + b2

    @mixc.program(prefer=("arith2pc.he",))
    def infer(x: mixc.Input(c.p1, (2, 12)), w1: mixc.Input(c.p2, (12, 8)),
              b1: mixc.Input(c.p2, (8,)), w2: mixc.Input(c.p2, (8, 3)),
              b2: mixc.Input(c.p2, (3,))):
        return {{"y": mixc.reveal(mixc.device(c.mpc)(mlp)(x, w1, b1, w2, b2), c.p1)}}
"""


def test_mixc_run_local(tmp_path):
    """Two party processes over TCP (``mixc run --local``), no dealer process."""
    src = tmp_path / "prog.py"
    src.write_text(textwrap.dedent(PROGRAM.format(devices=str(HE_DEVICES))))
    data = _mlp_data(batch=2, n_in=12, hidden=8, out=3, seed=5)
    for k, v in data.items():
        np.save(tmp_path / f"{k}.npy", v)

    def mixc_cmd(*args):
        done = subprocess.run([sys.executable, "-m", "mixc", *map(str, args)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done
    mixc_cmd("build", src, "-o", tmp_path / "bundle")
    manifest = (tmp_path / "bundle" / "manifest.json").read_text()
    assert '"dealer"' not in manifest
    assert sorted(p.name for p in (tmp_path / "bundle").glob("*.mir")) == ["alice.mir", "bob.mir",
                                                                          "global.mir"]
    mixc_cmd("run", tmp_path / "bundle", "--local", "--timeout", "120", "--output",
             tmp_path / "out", *[f"--input={k}={tmp_path / f'{k}.npy'}" for k in data])
    y = np.load(tmp_path / "out" / "alice" / "y.npy")
    np.testing.assert_allclose(y, np.asarray(mlp(**data)), atol=TOL)
