"""Loops stay loops: lax.fori_loop / scan / while_loop on an MPC device become one
``loop`` op through every pass and run as loops in every party's program; results
match plain JAX, program size does not grow with the trip count, and no PRG stream
or message tag repeats across iterations."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from conftest import secure_program
from mixc.bundle import build, simulate
from mixc.errors import TraceError
from mixc.ir.core import walk
from mixc.runtime.executor import PartyExecutor
from mixc.runtime.links import InProcessHub

ATOL = 2e-3


def rnd(*shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).uniform(-scale, scale, shape).astype(np.float32)


def ops(bundle, party):
    return [n.op for n in walk(bundle.programs[party].nodes)]


def loop_nodes(bundle, party):
    return [n for n in walk(bundle.programs[party].nodes) if n.op == "loop"]


def sgd(steps, bs=10):
    def train(x, y):
        def step(i, w):
            xb = lax.dynamic_slice(x, (i * bs, 0), (bs, x.shape[1]))
            yb = lax.dynamic_slice(y, (i * bs,), (bs,))
            return w - 0.5 * xb.T @ (jax.nn.sigmoid(xb @ w) - yb) / bs
        return lax.fori_loop(0, steps, step, jnp.zeros(x.shape[1]))
    return train


def test_minibatch_sgd_is_one_loop_and_matches_jax(cluster, plain):
    x, y = rnd(200, 4), (rnd(200, seed=1) > 0).astype(np.float32)
    prog, inputs = secure_program(cluster, sgd(20), x, y)
    bundle = build(prog, verify_between=True)
    for party in ("alice", "bob", "dealer"):
        (loop,) = loop_nodes(bundle, party)
        assert loop.attrs["trip_count"] == 20
    np.testing.assert_allclose(simulate(bundle, inputs), plain(sgd(20), x, y), atol=ATOL)


def test_program_size_does_not_grow_with_the_trip_count(cluster):
    x, y = rnd(2000, 4), rnd(2000, seed=1)
    sizes = []
    for steps in (10, 200):
        prog, _ = secure_program(cluster, sgd(steps), x, y)
        bundle = build(prog)
        sizes.append(sum(len(bundle.text(p)) for p in bundle.parties))
    assert sizes[1] <= sizes[0] * 1.01


def test_scan_xs_ys_reverse_and_unroll(secure, plain):
    def f(a, b):
        total, prods = lax.scan(lambda c, row: (c + row, c * row), jnp.zeros(4), b)
        back, firsts = lax.scan(lambda c, row: (c * 0.5 + row, row[0] + c[1]), a[0], b,
                                reverse=True)
        twice, sums = lax.scan(lambda c, row: (c + row, row.sum()), a[1], b, unroll=2)
        return total, prods, back, firsts, twice, sums
    a, b = rnd(3, 4), rnd(6, 4, seed=1)
    got, bundle = secure(f, a, b, with_bundle=True)
    assert len(loop_nodes(bundle, "alice")) == 3
    for g, w in zip(got, plain(f, a, b)):
        np.testing.assert_allclose(g, w, atol=ATOL)


def test_while_loop_with_a_known_trip_count_is_a_loop(secure, plain):
    def f(a, b):
        def body(c):
            i, x = c
            return i + 1, x * 0.5 + b[i]
        return lax.while_loop(lambda c: c[0] < 7, body, (0, a))[1]
    a, b = rnd(4), rnd(9, 4, seed=1)
    got, bundle = secure(f, a, b, with_bundle=True)
    (loop,) = loop_nodes(bundle, "alice")
    assert loop.attrs["trip_count"] == 7
    np.testing.assert_allclose(got, plain(f, a, b), atol=ATOL)


def test_fori_loop_with_traced_bounds_from_constants(secure, plain):
    def f(a):
        n = jnp.int32(3) + 2
        return lax.fori_loop(1, n, lambda i, c: c * 0.5 + i, a)
    got, bundle = secure(f, rnd(4), with_bundle=True)
    assert loop_nodes(bundle, "alice")[0].attrs["trip_count"] == 4
    np.testing.assert_allclose(got, plain(f, rnd(4)), atol=ATOL)


def test_nested_loops_and_a_carried_counter(secure, plain):
    def f(a, b):
        def outer(i, c):
            inner = lax.fori_loop(0, 3, lambda j, d: d * 0.5 + b[j] * i, c)
            return inner + a
        return lax.fori_loop(0, 4, outer, jnp.zeros(4))
    a, b = rnd(4), rnd(3, 4, seed=1)
    got, bundle = secure(f, a, b, with_bundle=True)
    (outer,) = [n for n in bundle.programs["alice"].nodes if n.op == "loop"]
    assert [n.op for n in walk(outer.body.nodes)].count("loop") == 1
    np.testing.assert_allclose(got, plain(f, a, b), atol=ATOL)


def test_a_python_loop_still_unrolls(secure):
    def f(a):
        for _ in range(3):
            a = a * a
        return a
    _, bundle = secure(f, rnd(4), with_bundle=True)
    assert not loop_nodes(bundle, "alice")


def test_a_trip_count_from_secret_data_names_the_line(cluster):
    def f(a):
        return lax.while_loop(lambda c: c[0] < c[1].sum(), lambda c: (c[0] + 1, c[1]),
                              (0, a))[1]
    prog, _ = secure_program(cluster, f, rnd(4))
    with pytest.raises(TraceError, match=r"test_loops.py:\d+: lax.while_loop .* secret"):
        build(prog)


def test_a_carried_value_changing_kind_keeps_one_kind(secure, plain):
    """A carry that starts public and becomes secret is shared from the start; one that
    stays public stays public (no conversion per iteration)."""
    def f(a):
        return lax.fori_loop(0, 5, lambda i, c: (c[0] + 1.0, c[1] * 0.5 + a * c[0]),
                             (0.0, jnp.zeros(4)))
    got, bundle = secure(f, rnd(4), with_bundle=True)
    (loop,) = loop_nodes(bundle, "alice")
    kinds = [a.type.kind for a in loop.body.args[loop.attrs["captures"]:]]
    assert kinds == ["public", "public", "arith"]  # the counter, c[0], c[1]
    for g, w in zip(got, plain(f, rnd(4))):
        np.testing.assert_allclose(g, w, atol=ATOL)


class _Recording(PartyExecutor):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent = []

    def _eval(self, node, kind, args):
        if node.op == "send":
            self.sent.append((node.attrs["tag"], self._iteration, np.array(args[0])))
        return super()._eval(node, kind, args)


def test_every_iteration_draws_fresh_masks(cluster):
    """The same secret product in every iteration: its masked operands differ between
    iterations (a repeated keystream would send the same x - a twice)."""
    def f(a, b):
        return lax.fori_loop(0, 3, lambda i, c: c + a * b, jnp.zeros(4))
    prog, inputs = secure_program(cluster, f, rnd(4), rnd(4, seed=1))
    bundle = build(prog)
    from mixc.bundle import inputs_by_party
    per_party = inputs_by_party(bundle.manifest, inputs)
    hub = InProcessHub(list(bundle.parties), timeout=30)
    execs = {p: _Recording(bundle.programs[p], p, hub.link(p), per_party[p])
             for p in bundle.parties}
    import threading
    threads = [threading.Thread(target=e.run) for e in execs.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    in_loop = [(tag, it, v) for tag, it, v in execs["alice"].sent if it is not None]
    by_tag = {}
    for tag, it, v in in_loop:
        by_tag.setdefault(tag, []).append(v.tobytes())
    assert by_tag and all(len(vs) == 3 for vs in by_tag.values())
    for vs in by_tag.values():
        assert len(set(vs)) == 3, "a masked value repeated across iterations"


def test_dp_noise_inside_a_lax_loop_is_refused(cluster):
    """The same noise added in every iteration would let differences of revealed values
    through; fresh noise per iteration needs mixc.fori_loop at the program level."""
    import mixc.dp

    def f(a):
        return lax.fori_loop(0, 3, lambda i, c: c + mixc.dp.laplace(a, 1.0, 1.0), a)
    prog, _ = secure_program(cluster, f, rnd(4))
    with pytest.raises(TraceError, match=r"test_loops.py:\d+: a mixc.dp mechanism inside a lax loop"):
        build(prog)


def test_an_operand_of_two_products_is_opened_once(cluster, plain):
    """x @ w and x.T @ g in one block: x - a is opened once and the dealer builds both
    triples on the same mask; the result still matches JAX."""
    def f(x, w):
        g = x @ w
        return x.T @ g
    x, w = rnd(8, 5), rnd(5, seed=1)
    prog, inputs = secure_program(cluster, f, x, w)
    bundle = build(prog, verify_between=True)
    nodes = list(walk(bundle.programs["alice"].nodes))
    packed = {n.result: n.operands for n in nodes if n.op == "pack"}
    opened = [v for n in nodes if n.op == "send" and n.attrs["what"].startswith("masked operand")
              for v in packed.get(n.operands[0], n.operands)]  # sends of a burst travel packed
    assert [tuple(v.type.shape) for v in opened].count((8, 5)) == 1
    np.testing.assert_allclose(simulate(bundle, inputs), plain(f, x, w), atol=ATOL)
