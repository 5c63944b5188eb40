"""Loops stay loops on dealer-free MPC devices (``offline: he``).

The correlations a body consumes (HE matrix triples, OT triples, truncation
bits) are made inside the body, once per iteration; the OT session and the HE
keys are made once, at program start, and captured by the loop. Checked: an
LR training is one loop op at both parties and matches plain JAX; the
correlations of two iterations differ; nested loops and ``mixc.fori_loop``;
a loop's OT calls do not use up the session's tag space; the audit counts
every iteration's correlations; the same program over TCP party processes.
HE devices keep their loops too (``translate_control.keeps_loops``; test_he_loops.py).
"""
# No `from __future__ import annotations`: mixc.program needs the Input objects.
import contextlib
import subprocess
import sys
import threading

import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import mixc
from mixc.bundle import build, inputs_by_party, simulate
from mixc.ir.core import walk
from mixc.runtime.executor import PartyExecutor
from mixc.runtime.links import InProcessHub

from conftest import REPO, make_program, secure_program

HE_DEVICES = REPO / "examples" / "two_party_he.devices"
ATOL = 2e-3


@pytest.fixture(scope="module")
def he_cluster():
    return mixc.init_device(str(HE_DEVICES))


def rnd(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


from test_loops import loop_nodes as loops_of, sgd  # noqa: E402 - the same programs, dealer-free


def lr_data(n=200):
    return rnd(n, 4), (rnd(n, seed=1) > 0).astype(np.float32)


class _Recording(PartyExecutor):
    """Records what every op inside a loop produces, per iteration."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.made = []  # (node, flat iteration, [results as bytes])

    def _eval(self, node, kind, args):
        out = super()._eval(node, kind, args)
        if self._iteration is not None:
            self.made.append((node, self._iteration[0], [np.asarray(o).tobytes() for o in out]))
        return out


def run_recording(bundle, inputs):
    per_party = inputs_by_party(bundle.manifest, inputs)
    hub = InProcessHub(list(bundle.parties), timeout=60)
    execs = {p: _Recording(bundle.programs[p], p, hub.link(p), per_party[p])
             for p in bundle.parties}
    outputs, errors = {}, []

    def go(p):
        try:
            outputs[p] = execs[p].run()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=go, args=(p,)) for p in execs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return execs, outputs


def test_lr_training_is_one_loop_at_both_parties_and_matches_jax(he_cluster, plain):
    x, y = lr_data()
    prog, inputs = secure_program(he_cluster, sgd(20), x, y)
    bundle = build(prog, verify_between=True)
    assert sorted(bundle.parties) == ["alice", "bob"]
    ot_order = {}
    for party in ("alice", "bob"):
        (loop,) = loops_of(bundle, party)
        assert loop.attrs["trip_count"] == 20
        body = [n.op for n in walk(loop.body.nodes)]
        # the body makes its own correlations: HE matrix triples and OT calls
        assert "he_mm.encrypt" in body and "ot.and_triple" in body and "ot.bit_ole" in body
        top = [n.op for n in bundle.programs[party].nodes]
        assert top.count("ot.session") == 1 and "ot.session" not in body
        ot_order[party] = [(n.op, n.attrs["seq"]) for n in walk(loop.body.nodes)
                           if n.op.startswith("ot.")]
    assert ot_order["alice"] == ot_order["bob"]  # both run the OT calls in one order
    np.testing.assert_allclose(simulate(bundle, inputs), plain(sgd(20), x, y), atol=ATOL)


def test_program_size_does_not_grow_with_the_trip_count(he_cluster):
    x, y = lr_data(2000)
    sizes = []
    for steps in (10, 200):
        prog, _ = secure_program(he_cluster, sgd(steps), x, y)
        bundle = build(prog)
        sizes.append(sum(len(bundle.text(p)) for p in bundle.parties))
    assert sizes[1] <= sizes[0] * 1.01


def test_two_iterations_make_different_correlations(he_cluster):
    """The same product and truncation in every iteration: each correlation op in the
    body (OT triples, truncation bit-OLEs, HE-made matrix triples, the parties' own
    random shares) gives other values in each iteration."""
    def f(a, b, w):
        return lax.fori_loop(0, 3, lambda i, c: c + (a * b) @ w, jnp.zeros((3, 2)))
    prog, inputs = secure_program(he_cluster, f, rnd(3, 4), rnd(3, 4, seed=1), rnd(4, 2, seed=2))
    bundle = build(prog)
    execs, _ = run_recording(bundle, inputs)
    checked = set()
    for party, ex in execs.items():
        by_node = {}
        for node, it, out in ex.made:
            by_node.setdefault(node, {})[it] = out
        for node, runs in by_node.items():
            if node.op.startswith(("ot.", "he_mm.")) or node.op == "random":
                assert len(runs) == 3, node.op
                for k in range(len(node.results)):
                    assert len({out[k] for out in runs.values()}) == 3, \
                        f"{party}: {node.op} repeated a value across iterations"
                checked.add(node.op)
    assert {"ot.arith_triple", "ot.bit_ole", "he_mm.encrypt", "he_mm.eval", "he_mm.decrypt",
            "random"} <= checked


def test_a_long_loop_takes_no_tags_from_the_session(he_cluster):
    """An OT call in a body takes its tags from a window of its own per iteration: the
    session's own 2^20 tags are used by the base OTs alone, whatever the trip count."""
    def f(a, b):
        return lax.fori_loop(0, 40, lambda i, c: c * 0.5 + a * b, jnp.zeros(4))
    a, b = rnd(4), rnd(4, seed=1)
    prog, inputs = secure_program(he_cluster, f, a, b)
    execs, outputs = run_recording(build(prog), inputs)
    for ex in execs.values():
        ((session, _),) = ex._ot_sessions.values()
        assert session.stats["tags_used"] == 2  # the base OTs'
    want = np.asarray(lax.fori_loop(0, 40, lambda i, c: c * 0.5 + a * b, jnp.zeros(4)))
    ((got,),) = [list(o.values()) for o in outputs.values() if o]
    np.testing.assert_allclose(got, want, atol=ATOL)


def test_nested_loops(he_cluster, plain):
    def f(a, b):
        def outer(i, c):
            inner = lax.fori_loop(0, 3, lambda j, d: d * 0.5 + a * b[j], c)
            return inner @ jnp.eye(4) * 0.5 + a
        return lax.fori_loop(0, 4, outer, jnp.zeros(4))
    a, b = rnd(4), rnd(3, 4, seed=1)
    prog, inputs = secure_program(he_cluster, f, a, b)
    bundle = build(prog, verify_between=True)
    (outer,) = [n for n in bundle.programs["bob"].nodes if n.op == "loop"]
    assert [n.op for n in walk(outer.body.nodes)].count("loop") == 1
    np.testing.assert_allclose(simulate(bundle, inputs), plain(f, a, b), atol=ATOL)


def test_program_level_fori_loop_over_a_dealer_free_device(he_cluster):
    c = he_cluster

    def body(a, b):
        def step(i, acc):
            return mixc.device(c.mpc)(lambda u, v, s: s + u * v)(a, b, acc)
        acc = mixc.device(c.mpc)(lambda u: u * 0.0)(a)
        return mixc.reveal(mixc.fori_loop(0, 5, step, acc), c.p1)
    prog = make_program(body, {"a": mixc.Input(c.p1, (3,)), "b": mixc.Input(c.p2, (3,))})
    bundle = build(prog, verify_between=True)
    assert len(loops_of(bundle, "alice")) == 1 and len(loops_of(bundle, "bob")) == 1
    a, b = rnd(3), rnd(3, seed=1)
    np.testing.assert_allclose(simulate(bundle, {"a": a, "b": b}), 5 * a * b, atol=ATOL)


def test_the_audit_counts_every_iterations_correlations(he_cluster):
    def f(a, b):
        return lax.fori_loop(0, 7, lambda i, c: c + a * b, jnp.zeros(4))
    prog, _ = secure_program(he_cluster, f, rnd(4), rnd(4, seed=1))
    audit = build(prog).audit()
    assert "arithmetic triples: OT-based OLE between alice and bob (28 elements)" in audit
    assert "arithmetic triple (OLE) x7" in audit


HE_DEVICE = """
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
"""


def test_loops_on_an_he_device_stay_loops(plain):
    """A carried ciphertext keeps one layout and fraction bits (``protocols.he.HeCarry``;
    more in test_he_loops.py)."""
    c = mixc.init_device(HE_DEVICE)

    def f(x, w):
        return lax.fori_loop(0, 3, lambda i, acc: acc + x @ w, jnp.zeros(2))
    x, w = rnd(3), rnd(3, 2, seed=1)

    def body(x, w):
        return mixc.reveal(mixc.device(c.he)(f)(x, w), c.p1)
    prog = make_program(body, {"x": mixc.Input(c.p1, (3,)), "w": mixc.Input(c.p2, (3, 2))})
    bundle = build(prog, verify_between=True)
    assert all(len(loops_of(bundle, p)) == 1 for p in bundle.parties)
    np.testing.assert_allclose(simulate(bundle, {"x": x, "w": w}), plain(f, x, w), atol=ATOL)


PROGRAM = f'''
import jax
from jax import lax
import jax.numpy as jnp
import mixc

cluster = mixc.init_device({str(HE_DEVICES)!r})


def train(x, y):
    def step(i, w):
        xb = lax.dynamic_slice(x, (i * 10, 0), (10, x.shape[1]))
        yb = lax.dynamic_slice(y, (i * 10,), (10,))
        return w - 0.5 * xb.T @ (jax.nn.sigmoid(xb @ w) - yb) / 10
    return lax.fori_loop(0, 5, step, jnp.zeros(x.shape[1]))


@mixc.program
def lr(x: mixc.Input(cluster.p1, (50, 4)), y: mixc.Input(cluster.p2, (50,))):
    return {{"w": mixc.reveal(mixc.device(cluster.mpc)(train)(x, y), cluster.p1)}}
'''


def test_the_loop_runs_over_tcp_party_processes(tmp_path, plain):
    x, y = lr_data(50)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "lr.py").write_text(PROGRAM)
    for args in (("build", tmp_path / "lr.py", "-o", tmp_path / "b"),
                 ("run", tmp_path / "b", "--local", "--input", f"x={tmp_path / 'x.npy'}",
                  "--input", f"y={tmp_path / 'y.npy'}", "--output", tmp_path / "out",
                  "--timeout", "60", "--no-progress")):
        res = subprocess.run([sys.executable, "-m", "mixc", *map(str, args)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, res.stderr
    want = plain(sgd(5), x, y)
    np.testing.assert_allclose(np.load(tmp_path / "out" / "alice" / "w.npy"), want, atol=ATOL)


def test_an_ot_call_runs_once_per_iteration_with_its_own_tags():
    """``ot_ops.run`` refuses an OT call that runs twice (outside loops, or in one
    iteration), and gives a call in each iteration a tag window of its own."""
    from mixc.errors import MixcError
    from mixc.ir.core import Module, Node
    from mixc.runtime import ot_ops

    class Session:
        def __init__(self):
            self.windows = []

        def tags_from(self, start):
            self.windows.append(start)
            return contextlib.nullcontext()

        def arith_triples(self, n):
            return [np.zeros(n, np.uint64)] * 3

    session = Session()
    ex = PartyExecutor(Module("m"), "alice", None, {})
    ex._ot_sessions = {"bob": (session, {})}
    ex._iteration = None
    call = Node("ot.arith_triple", (), (), {"peer": "bob", "seq": 1, "shape": (2,), "what": "t"})
    ot_ops.run(ex, call, [])
    with pytest.raises(MixcError, match="OT call #1 with 'bob' runs twice"):
        ot_ops.run(ex, call, [])
    looped = Node("ot.arith_triple", (), (), {"peer": "bob", "seq": 2, "shape": (2,),
                                              "what": "t"})
    for flat in (0, 1):
        ex._iteration = (flat, flat)
        ot_ops.run(ex, looped, [])
    with pytest.raises(MixcError, match="runs twice in loop iteration 1"):
        ot_ops.run(ex, looped, [])
    assert len(set(session.windows)) == 2 and all(w >= 1 << 32 for w in session.windows)
