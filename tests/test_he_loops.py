"""Loops on HE devices stay loops: a carried ciphertext keeps one layout and fraction bits
in every iteration (``protocols.he.HeCarry``, ``passes.lower._settle``).

alice owns the key (and x, b0), bob evaluates with his plaintext (w, the updates m).
Every program is built with the verifier between passes, run over the real HE and
compared with plain JAX; the party programs hold one loop whatever the trip count (their
text and ops are the same at 3 and 50 steps); the audit lists a loop's messages and
disclosures once with their multiplicity; one program runs over TCP party processes.
"""
import re
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import mixc
from mixc import device, reveal
from mixc.bundle import build, simulate
from mixc.ir.core import walk

from conftest import make_program

DEVICES = str(Path(__file__).resolve().parents[1] / "examples" / "two_party_he_device.devices")
C = mixc.init_device(DEVICES)
ATOL = 2e-3


def rnd(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def loops_of(bundle, party):
    return [n for n in walk(bundle.programs[party].nodes) if n.op == "loop"]


def accumulate(steps):
    """An accumulator of an encrypted dense layer: acc + x @ w, ``steps`` times."""
    def f(x, w):
        return lax.fori_loop(0, steps, lambda i, acc: acc + x @ w, jnp.zeros(2))
    return f


def bias_update(steps, lr=0.1):
    """The seed patent's HE bias: b <- (1 - lr) b - lr m_i, b encrypted under the server's
    (alice's) key, the updates m_i the trainer's (bob's) plaintext, row i picked at run time."""
    def f(b, m):
        return lax.fori_loop(0, steps, lambda i, b: (1 - lr) * b - lr * m[i], b)
    return f


def linear_regression(steps, bs=8):
    """An encrypted linear-model update: alice's model w under her own key, trained by
    minibatch gradient descent on bob's rows (x | y), batch i sliced at run time."""
    def f(w0, xy):
        x, y = xy[:, :-1], xy[:, -1]

        def step(i, w):
            xb = lax.dynamic_slice(x, (i * bs, 0), (bs, x.shape[1]))
            yb = lax.dynamic_slice(y, (i * bs,), (bs,))
            return w - 0.1 * xb.T @ (xb @ w - yb) / bs
        return lax.fori_loop(0, steps, step, w0)
    return f


def regression_data(steps, bs=8):
    x = rnd(steps * bs, 3, seed=4)
    y = x @ np.array([0.5, -1.0, 0.25], np.float32)
    return np.zeros(3, np.float32), np.concatenate([x, y[:, None]], axis=1)


def he_program(f, x_shape, y_shape):
    def body(x, y):
        return reveal(device(C.he)(f)(x, y), C.p1)
    return make_program(body, {"x": mixc.Input(C.p1, x_shape), "y": mixc.Input(C.p2, y_shape)})


def plain(f, *args):
    return np.asarray(f(*[jnp.asarray(a) for a in args]))


def program_bytes(bundle):
    return sum(len(str(bundle.programs[p])) for p in bundle.parties)


@pytest.mark.parametrize("steps", [3, 50])
def test_an_accumulating_dense_layer_is_one_loop(steps):
    f = accumulate(steps)
    x, w = rnd(3), rnd(3, 2, seed=1)
    bundle = build(he_program(f, (3,), (3, 2)), verify_between=True)
    for party in bundle.parties:
        (loop,) = loops_of(bundle, party)
        assert loop.attrs["trip_count"] == steps
    np.testing.assert_allclose(simulate(bundle, {"x": x, "y": w}), plain(f, x, w),
                               atol=ATOL * steps / 3)


@pytest.mark.parametrize("steps", [3, 50])
def test_the_patents_encrypted_bias_update_is_one_loop(steps):
    """(1 - lr) b adds fraction bits every step: the carried ciphertext keeps one count of
    bits (a truncating refresh where the step's bits would not fit), checked against JAX."""
    f = bias_update(steps)
    b, m = rnd(4, seed=2), rnd(steps, 4, seed=3)
    bundle = build(he_program(f, (4,), (steps, 4)), verify_between=True)
    assert all(len(loops_of(bundle, p)) == 1 for p in bundle.parties)
    np.testing.assert_allclose(simulate(bundle, {"x": b, "y": m}), plain(f, b, m), atol=ATOL)


@pytest.mark.parametrize("steps", [3, 50])
def test_an_encrypted_linear_model_trains_in_one_loop(steps):
    f = linear_regression(steps)
    w0, xy = regression_data(steps)
    bundle = build(he_program(f, w0.shape, xy.shape), verify_between=True)
    assert all(len(loops_of(bundle, p)) == 1 for p in bundle.parties)
    np.testing.assert_allclose(simulate(bundle, {"x": w0, "y": xy}), plain(f, w0, xy),
                               atol=ATOL)


@pytest.mark.parametrize("make, shapes", [
    (bias_update, lambda n: ((4,), (n, 4))),
    (linear_regression, lambda n: ((3,), (8 * n, 4)))])
def test_build_size_does_not_grow_with_the_trip_count(make, shapes):
    small = build(he_program(make(3), *shapes(3)))
    large = build(he_program(make(50), *shapes(50)))
    assert program_bytes(large) < 1.1 * program_bytes(small)
    ops = lambda b: sorted(n.op for p in b.parties for n in walk(b.programs[p].nodes))  # noqa: E731
    assert ops(small) == ops(large)


def test_a_while_loop_and_mixc_fori_loop_on_he():
    def f(x, w):
        def body(c):
            i, acc = c
            return i + 1, 0.5 * acc + x @ w
        return lax.while_loop(lambda c: c[0] < 4, body, (0, jnp.zeros(2)))[1]
    x, w = rnd(3), rnd(3, 2, seed=1)
    bundle = build(he_program(f, (3,), (3, 2)), verify_between=True)
    assert all(len(loops_of(bundle, p)) == 1 for p in bundle.parties)
    np.testing.assert_allclose(simulate(bundle, {"x": x, "y": w}), plain(f, x, w), atol=ATOL)

    def rounds(x, w):
        acc = device(C.he)(lambda x, w: x @ w)(x, w)
        acc = mixc.fori_loop(0, 5, lambda i, a: device(C.he)(lambda a, w: a - 0.25 * a)(a, w),
                             acc)
        return reveal(acc, C.p1)
    prog = make_program(rounds, {"x": mixc.Input(C.p1, (3,)), "w": mixc.Input(C.p2, (3, 2))})
    bundle = build(prog, verify_between=True)
    assert all(len(loops_of(bundle, p)) == 1 for p in bundle.parties)
    np.testing.assert_allclose(simulate(bundle, {"x": x, "w": w}), (x @ w) * 0.75 ** 5,
                               atol=ATOL)


def test_the_audit_counts_each_iterations_messages():
    steps = 7
    bundle = build(he_program(bias_update(steps), (4,), (steps, 4)))
    audit = bundle.audit()
    messages = audit.split("messages (what crosses between parties", 1)[1].split("\n\n", 1)[0]
    looped = [ln for ln in messages.splitlines() if f"\u00d7{steps} (" in ln]
    assert looped, messages
    sent = [n for p in bundle.parties for n in walk(loops_of(bundle, p)[0].body.nodes)
            if n.op == "send"]
    assert len(looped) == len({n.attrs["what"] for n in sent}) > 0


def test_a_reveal_in_each_round_is_listed_once_with_its_multiplicity():
    """mixc.fori_loop over rounds that each decrypt the HE device's value to alice."""
    rounds = 4

    def prog(x, w):
        def one_round(i, x):
            y = device(C.he)(lambda x, w: 0.5 * x + w[0])(x, w)
            return reveal(y, C.p1)  # HE-ROUND-REVEAL
        return mixc.fori_loop(0, rounds, one_round, x)
    x, w = rnd(2), rnd(3, 2, seed=1)
    bundle = build(make_program(prog, {"x": mixc.Input(C.p1, (2,)),
                                       "w": mixc.Input(C.p2, (3, 2))}), verify_between=True)
    assert all(len(loops_of(bundle, p)) == 1 for p in bundle.parties)
    want = x
    for _ in range(rounds):
        want = 0.5 * want + w[0]
    np.testing.assert_allclose(simulate(bundle, {"x": x, "w": w}), want, atol=ATOL)
    audit = bundle.audit()
    disclosures = audit.split("disclosures (plaintext leaving its owner):", 1)[1]
    disclosures = disclosures.split("\n\n", 1)[0]
    assert disclosures.count("\n- ") == 1, disclosures
    assert "revealed to p1 (alice)" in disclosures and f"{rounds} times" in disclosures
    messages = audit.split("messages (what crosses between parties", 1)[1].split("\n\n", 1)[0]
    assert re.search(rf"bob -> alice: 1 x 'HE ciphertext \(sanitised result\)' as ciphertext, "
                     rf"\d+ elements per iteration, \u00d7{rounds} \({rounds} messages",
                     messages), messages


def test_a_ciphertext_indexed_by_the_loop_counter_is_refreshed():
    """xw[i] of a ciphertext: its positions are fixed when compiling, so each iteration
    refreshes xw and both parties slice their parts at the run-time index."""
    def f(x, w):
        xw = x @ w
        return lax.fori_loop(0, 2, lambda i, a: 0.5 * a + xw[i], 0.0)
    x, w = rnd(3), rnd(3, 2, seed=1)
    bundle = build(he_program(f, (3,), (3, 2)), verify_between=True)
    (loop,) = loops_of(bundle, "alice")
    assert "dynamic_slice" in [n.op for n in walk(loop.body.nodes)]
    np.testing.assert_allclose(simulate(bundle, {"x": x, "y": w}), plain(f, x, w), atol=ATOL)


def test_nested_loops_on_he():
    def f(x, w):
        def outer(i, acc):
            inner = lax.fori_loop(0, 3, lambda j, a: a + 0.5 * (x @ w), jnp.zeros(2))
            return acc * 0.5 + inner
        return lax.fori_loop(0, 4, outer, jnp.zeros(2))
    x, w = rnd(3), rnd(3, 2, seed=1)
    bundle = build(he_program(f, (3,), (3, 2)), verify_between=True)
    assert all(len(loops_of(bundle, p)) == 2 for p in bundle.parties)
    np.testing.assert_allclose(simulate(bundle, {"x": x, "y": w}), plain(f, x, w), atol=ATOL)


TCP_PROGRAM = '''
from jax import lax
import mixc

cluster = mixc.init_device({devices!r})


def update(b, m):
    return lax.fori_loop(0, 6, lambda i, b: 0.9 * b - 0.1 * m[i], b)


@mixc.program
def bias(b: mixc.Input(cluster.p1, (4,)), m: mixc.Input(cluster.p2, (6, 4))):
    return {{"b": mixc.reveal(mixc.device(cluster.he)(update)(b, m), cluster.p1)}}
'''


def test_the_he_loop_runs_over_tcp_party_processes(tmp_path):
    b, m = rnd(4, seed=2), rnd(6, 4, seed=3)
    np.save(tmp_path / "b.npy", b)
    np.save(tmp_path / "m.npy", m)
    (tmp_path / "bias.py").write_text(TCP_PROGRAM.format(devices=DEVICES))
    for args in (("build", tmp_path / "bias.py", "-o", tmp_path / "out_bundle"),
                 ("run", tmp_path / "out_bundle", "--local", "--input",
                  f"b={tmp_path / 'b.npy'}", "--input", f"m={tmp_path / 'm.npy'}",
                  "--output", tmp_path / "out", "--timeout", "60", "--no-progress")):
        res = subprocess.run([sys.executable, "-m", "mixc", *map(str, args)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, res.stderr
    np.testing.assert_allclose(np.load(tmp_path / "out" / "alice" / "b.npy"),
                               plain(bias_update(6), b, m), atol=ATOL)


def test_each_iteration_masks_and_encrypts_afresh():
    """The refresh masks (``random``), the sanitised ciphertexts and the owner's encryptions
    in the body differ in every iteration: no keystream is reused across iterations."""
    from test_loops_dealer_free import run_recording
    steps = 3
    b, m = rnd(4, seed=2), rnd(steps, 4, seed=3)
    bundle = build(he_program(bias_update(steps), (4,), (steps, 4)))
    execs, _ = run_recording(bundle, {"x": b, "y": m})
    checked = set()
    for party, ex in execs.items():
        runs = {}
        for node, it, out in ex.made:
            runs.setdefault(node, {})[it] = out
        for node, by_iteration in runs.items():
            if node.op in ("random", "he.extract", "he.encrypt") and len(by_iteration) > 1:
                assert len(by_iteration) == steps, node.op
                assert len({out[0] for out in by_iteration.values()}) == steps, \
                    f"{party}: {node.op} repeated a value across iterations"
                checked.add(node.op)
    assert {"random", "he.extract", "he.encrypt"} <= checked


def scan_plain_rows(b, m):
    """A scan over bob's plaintext rows whose ys are the encrypted running values."""
    def step(b, mi):
        nb = 0.9 * b - 0.1 * mi
        return nb, nb
    return lax.scan(step, b, m)


def scan_encrypted_rows(b, m):
    """A scan whose xs are ciphertext rows (alice's b mixed into bob's rows)."""
    def step(acc, row):
        return acc + 0.5 * row, acc
    return lax.scan(step, jnp.zeros(4), m + b)


@pytest.mark.parametrize("f", [scan_plain_rows, scan_encrypted_rows])
def test_a_scan_over_rows_is_one_loop(f):
    """xs and ys rows at the run-time step: one loop at 5 and 20 steps (a ciphertext row is a
    refresh per iteration), the same ops (only the buffers' element positions grow with the
    rows, like the data); ``unroll=True`` copies the body instead."""
    ops = []
    for steps in (5, 20):
        b, m = rnd(4, seed=2), rnd(steps, 4, seed=3)
        bundle = build(he_program(f, (4,), (steps, 4)), verify_between=True)
        assert all(len(loops_of(bundle, p)) == 1 for p in bundle.parties)
        out = simulate(bundle, {"x": b, "y": m})
        for got, want in zip(out, f(jnp.asarray(b), jnp.asarray(m))):
            np.testing.assert_allclose(got, np.asarray(want), atol=ATOL)
        ops.append({p: [n.op for n in walk(bundle.programs[p].nodes)] for p in bundle.parties})
    assert ops[0] == ops[1]


def test_scan_unroll_true_copies_the_body():
    def f(b, m):
        return lax.scan(lambda acc, row: (acc + row, acc), b, m, unroll=True)
    bundle = build(he_program(f, (4,), (3, 4)))
    assert all(not loops_of(bundle, p) for p in bundle.parties)
