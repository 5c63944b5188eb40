"""mixc's side of the side-by-side benchmark with SPU (see benchmarks/README.md).

    python benchmarks/run.py [NAME ...] [--reps 3] [--network lan] [--offline dealer|he] [--steps N]
                             [--ring 64|128]
                              [--check-ranges]

Runs the workloads of ``shared/peer/spu_peer.py`` with the same names, sizes
and seeds (``np.random.default_rng(0)``, data drawn in the order of that
script's ``workloads()``) as mixc programs on ``examples/two_party.devices``
(alice = p1, bob = p2, ``mpc`` over both with dealer-made triples), and
prints one JSON line per workload:

- ``name``, ``system`` ("mixc-dealer");
- ``wall_s``: median of ``--reps`` warm runs of the already built bundle
  (``mixc.bundle.simulate``: every party, the dealer included, in its own
  thread of this process over in-process links), after one warm-up run;
- ``max_abs_err`` against plain JAX, or ``accuracy`` for lr_train_10k,
  lr_sgd_60k and mlp_train_100 (computed as spu_peer's ``score`` does); for
  the two training workloads also ``plain_accuracy`` (the same model trained
  by plain JAX for the same number of steps), ``params_max_abs_err``
  (max |mixc's trained parameters - plain JAX's|) and ``steps``;
- ``bytes_sent``: payload bytes each party sent in one run (from the links'
  stats; pairwise PRG keys come from the X25519 handshake and send nothing); ``bytes_total``: their sum;
- ``rounds``: communication rounds, from the party programs (see ``rounds``
  below); ``rounds_in_order``: the same when each party runs its program
  strictly in order, as the executor does;
- ``build_s``: time of ``prog.build()`` (trace + passes + partition);
- ``peak_rss_mb``: peak resident set size of this process so far, in MB
  (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), taken after the workload;
  it never goes down, so run a workload alone for its own figure;
- ``ops``: per party, how many times a run executes each op (a loop body's
  ops counted once per iteration; ``op_counts``).

``--check-ranges`` also times each workload with ``simulate``'s range sanitizer
on (``check_ranges_wall_s``, ``check_ranges_ratio`` to ``wall_s``, and the
``range_warnings`` a run gives); ``wall_s`` is always without it.

``--steps N`` trains lr_sgd_60k and mlp_train_100 for N steps instead of
468 and 100 (same inputs, for quick checks); the plain JAX reference then
trains for N steps too. Their ``lax.fori_loop`` is one loop in the party
programs, so ``build_s`` does not depend on N.

``--offline he`` runs the same workloads on ``examples/two_party_he.devices``
(the MPC device makes its own correlations: HE matrix triples, OT triples,
no dealer; ``system`` "mixc-he") in two phases: every party first runs the
part of its program that depends on no input (key generation, OT sessions,
triples, truncation bits: ``runtime.phases``), the parties wait for each
other, then run the rest. Extra fields: ``offline_s``/``online_s`` (medians of
the two phases; ``wall_s`` is the median of their sum), ``offline_bytes``/
``online_bytes`` (all parties, one run; for mlp_infer_64 the server's weights
count as known before the query: ``static_inputs``), ``inline_wall_s`` (the warm-up run,
unphased: correlations made where they are used), ``dealer_free`` (no dealer
party in the bundle) and ``protocols`` (the protocol chosen for each product
and comparison).

``--ring 128`` runs them on ``examples/two_party_ring128.devices`` (shares in
Z_2^128, 40 fraction bits; with ``--offline he``, on
``examples/two_party_he_ring128.devices``); each record then has ``"ring": 128``.

``--parties 3`` runs them on ``examples/three_party.devices`` (alice = p1,
bob = p2, ``mpc`` replicated over alice, bob and carol: ``protocols/rep3.py``,
no dealer; ``system`` "mixc-rep3"), timed like the dealer runs.

A workload that mixc cannot build yet prints
``{"name", "system", "skipped": "<error>", "build_s", "peak_rss_mb"}``
(``build_s``: until the build failed); one that builds but fails to run
prints ``"error"`` instead. Either way the other workloads still run.
"""

import argparse
import collections
import json
import os
import resource
import sys
import time
import traceback
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import mixc
import mixc.bundle

SYSTEM = "mixc-dealer"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES = os.path.join(ROOT, "examples", "two_party.devices")
HE_SYSTEM = "mixc-he"
HE_DEVICES = os.path.join(ROOT, "examples", "two_party_he.devices")
HE_RING128_DEVICES = os.path.join(ROOT, "examples", "two_party_he_ring128.devices")
RING128_DEVICES = os.path.join(ROOT, "examples", "two_party_ring128.devices")
REP3_SYSTEM = "mixc-rep3"
THREE_PARTY_DEVICES = os.path.join(ROOT, "examples", "three_party.devices")


# ------------------------------------------------------------- the functions
# The same computations as spu_peer.py, in plain jnp: they run on the MPC
# device under mixc and as the plain-JAX reference.

def lr_train(x1, x2, y, epochs=5, lr=0.5, bs=1000):
    x = jnp.concatenate((x1, x2), axis=1)
    w = jnp.zeros(x.shape[1])
    b = 0.0
    for _ in range(epochs):
        for i in range(0, x.shape[0], bs):
            xb, yb = x[i:i + bs], y[i:i + bs]
            g = jax.nn.sigmoid(xb @ w + b) - yb
            w = w - lr * xb.T @ g / bs
            b = b - lr * jnp.mean(g)
    return w, b


def mlp(x, w1, b1, w2, b2):
    return jnp.maximum(x @ w1 + b1, 0) @ w2 + b2


def lr_sgd(x1, x2, y, bs=128, lr=0.5, steps=None):
    """One epoch of minibatch SGD as a structured loop (468 steps at 60000 rows).

    spu_peer's ``lr_sgd``; ``steps`` (None: the epoch, ``x.shape[0] // bs``)
    is only for ``--steps``.
    """
    x = jnp.concatenate((x1, x2), axis=1)

    def step(i, wb):
        w, b = wb
        xb = jax.lax.dynamic_slice_in_dim(x, i * bs, bs)
        yb = jax.lax.dynamic_slice_in_dim(y, i * bs, bs)
        g = jax.nn.sigmoid(xb @ w + b) - yb
        return w - lr * xb.T @ g / bs, b - lr * jnp.mean(g)
    n = x.shape[0] // bs if steps is None else steps
    return jax.lax.fori_loop(0, n, step, (jnp.zeros(x.shape[1]), 0.0))


def mlp_train(x, y, w1, w2, steps=100, bs=128, lr=0.1):
    """784-128-10 relu MLP, softmax cross-entropy, plain SGD, as a structured loop."""
    def loss(params, xb, yb):
        h = jnp.maximum(xb @ params[0], 0)
        return -jnp.mean(jnp.sum(yb * jax.nn.log_softmax(h @ params[1]), axis=1))

    def step(i, params):
        j = i % (x.shape[0] // bs)
        xb = jax.lax.dynamic_slice_in_dim(x, j * bs, bs)
        yb = jax.lax.dynamic_slice_in_dim(y, j * bs, bs)
        g = jax.grad(loss)(params, xb, yb)
        return params[0] - lr * g[0], params[1] - lr * g[1]
    return jax.lax.fori_loop(0, steps, step, (w1, w2))


def matmul(a, b):
    return a @ b


def mul(a, b):
    return a * b


def less(a, b):
    return a < b


def relu(a):
    return jnp.maximum(a, 0)


# ------------------------------------------------------------------- data

# The workloads spu_peer draws after the others, and --steps applies to.
TRAINING = ("lr_sgd_60k", "mlp_train_100")


def make_data(seed=0, training=True):
    """All workloads' inputs, drawn from one generator in spu_peer's order.

    Every array is drawn even when only some workloads run, so each workload
    gets exactly the numbers spu_peer gives it. The training workloads'
    data (``TRAINING``) comes last, so ``training=False`` leaves it out
    (about 0.6 GB while it is drawn) without changing the others.
    """
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    # Labelled data for the LR demo first, as spu_peer does.
    features = normal(10000, 20)
    true_w = rng.standard_normal(20)
    noise = rng.standard_normal(10000)
    labels = (features @ true_w + 0.1 * noise > 0).astype(np.float32)

    data = {}
    for name, shape in (("matmul_512", (512, 512)), ("matmul_1024", (1024, 1024)),
                        ("mul_1m", (1_000_000,)), ("less_1m", (1_000_000,))):
        first = normal(*shape)
        second = normal(*shape)
        data[name] = (first, second)
    data["relu_1m"] = (normal(1_000_000),)
    data["sigmoid_1m"] = (normal(1_000_000),)
    data["lr_train_10k"] = (features[:, :10], features[:, 10:], labels)
    x = normal(64, 784)
    w1 = normal(784, 128) * 0.05
    b1 = normal(128) * 0.1
    w2 = normal(128, 10) * 0.1
    b2 = normal(10) * 0.1
    data["mlp_infer_64"] = (x, w1, b1, w2, b2)
    if not training:
        return data

    # Training at scale (structured loops), drawn after the others as in spu_peer.
    m = normal(60000, 784) * 0.5
    m_w = rng.standard_normal(784) * 0.05
    m_noise = rng.standard_normal(60000)
    m_labels = (m @ m_w + 0.1 * m_noise > 0).astype(np.float32)
    cx = normal(6400, 784) * 0.5
    c_w = rng.standard_normal((784, 10))
    c_labels = np.eye(10, dtype=np.float32)[np.argmax(cx @ c_w, axis=1)]
    data["lr_sgd_60k"] = (m[:, :392], m[:, 392:], m_labels)
    w1 = normal(784, 128) * 0.05
    w2 = normal(128, 10) * 0.1
    data["mlp_train_100"] = (cx, c_labels, w1, w2)
    return data


# --------------------------------------------------------------- programs
# Each maker takes the cluster and the workload's arrays and returns
# (the @mixc.program, the plain function, the input names in order).

def _binary(fn):
    def make(c, args):
        a0, b0 = args

        def prog(a: mixc.Input(c.p1, a0.shape), b: mixc.Input(c.p2, b0.shape)):
            out = mixc.device(c.mpc)(fn)(mixc.to(a, c.mpc), mixc.to(b, c.mpc))
            return mixc.reveal(out, c.p1)
        prog.__name__ = fn.__name__
        return mixc.program(prog), fn, ("a", "b")
    return make


def _unary(fn):
    def make(c, args):
        (a0,) = args

        def prog(a: mixc.Input(c.p1, a0.shape)):
            out = mixc.device(c.mpc)(fn)(mixc.to(a, c.mpc))
            return mixc.reveal(out, c.p1)
        prog.__name__ = getattr(fn, "__name__", "unary")
        return mixc.program(prog), fn, ("a",)
    return make


def _vertical_lr(c, args, train, name):
    """LR on features split between p1 (x1) and p2 (x2, labels y); (w, b) to p1."""
    x1_0, x2_0, y_0 = args

    def prog(x1: mixc.Input(c.p1, x1_0.shape), x2: mixc.Input(c.p2, x2_0.shape),
             y: mixc.Input(c.p2, y_0.shape)):
        w, b = mixc.device(c.mpc)(train)(mixc.to(x1, c.mpc), mixc.to(x2, c.mpc),
                                        mixc.to(y, c.mpc))
        return mixc.reveal(w, c.p1), mixc.reveal(b, c.p1)
    prog.__name__ = prog.__qualname__ = name
    return mixc.program(prog), train, ("x1", "x2", "y")


def _make_lr(c, args):
    return _vertical_lr(c, args, lr_train, "lr_train_10k")


def _make_mlp(c, args):
    x0, w1_0, b1_0, w2_0, b2_0 = args

    @mixc.program
    def mlp_infer_64(x: mixc.Input(c.p1, x0.shape),           # the client's batch
                     w1: mixc.Input(c.p2, w1_0.shape),        # the server's model
                     b1: mixc.Input(c.p2, b1_0.shape),
                     w2: mixc.Input(c.p2, w2_0.shape),
                     b2: mixc.Input(c.p2, b2_0.shape)):
        weights = [mixc.to(v, c.mpc) for v in (w1, b1, w2, b2)]
        out = mixc.device(c.mpc)(mlp)(mixc.to(x, c.mpc), *weights)
        return mixc.reveal(out, c.p1)
    return mlp_infer_64, mlp, ("x", "w1", "b1", "w2", "b2")


def _make_lr_sgd(c, args, steps=None):
    def train(x1, x2, y):
        return lr_sgd(x1, x2, y, steps=steps)
    return _vertical_lr(c, args, train, "lr_sgd_60k")


def _make_mlp_train(c, args, steps=None):
    x0, y0, w1_0, w2_0 = args

    def train(x, y, w1, w2):
        return mlp_train(x, y, w1, w2) if steps is None else mlp_train(x, y, w1, w2, steps)

    @mixc.program
    def mlp_train_100(x: mixc.Input(c.p1, x0.shape),        # the data owner's examples
                      y: mixc.Input(c.p1, y0.shape),        # and one-hot labels
                      w1: mixc.Input(c.p2, w1_0.shape),     # the model owner's initial weights
                      w2: mixc.Input(c.p2, w2_0.shape)):
        w1_t, w2_t = mixc.device(c.mpc)(train)(*(mixc.to(v, c.mpc) for v in (x, y, w1, w2)))
        return mixc.reveal(w1_t, c.p2), mixc.reveal(w2_t, c.p2)
    return mlp_train_100, train, ("x", "y", "w1", "w2")


WORKLOADS = {
    "matmul_512": _binary(matmul),
    "matmul_1024": _binary(matmul),
    "mul_1m": _binary(mul),
    "less_1m": _binary(less),
    "relu_1m": _unary(relu),
    "sigmoid_1m": _unary(jax.nn.sigmoid),
    "lr_train_10k": _make_lr,
    "mlp_infer_64": _make_mlp,
    "lr_sgd_60k": _make_lr_sgd,
    "mlp_train_100": _make_mlp_train,
}


def make_workload(name, cluster, args, steps=None):
    """WORKLOADS[name](cluster, args), training for ``steps`` steps if given (TRAINING only)."""
    if steps is not None and name in TRAINING:
        return WORKLOADS[name](cluster, args, steps=steps)
    return WORKLOADS[name](cluster, args)


def training_steps(name, steps=None):
    """How many SGD steps a training workload runs (None for the others)."""
    if name not in TRAINING:
        return None
    if steps is not None:
        return steps
    return 60000 // 128 if name == "lr_sgd_60k" else 100


# ---------------------------------------------------------------- metrics

_ITERATION = 1 << 32  # the executor's offset of a tag inside a loop (runtime/executor.py)
_EXACT_ITERATIONS = 64  # up to this many loop iterations in all, rounds flattens every loop


class _Flat:
    """One node of a flattened party program: ``operands``/``results`` are keys (a Value
    outside loops, (Value, flat iteration) inside), ``tag`` the tag the executor uses."""

    __slots__ = ("op", "operands", "results", "attrs", "tag")

    def __init__(self, op, operands, results, attrs, tag):
        self.op, self.operands, self.results, self.attrs, self.tag = \
            op, operands, results, attrs, tag


def _loops(nodes, outer=()):
    """(loop node, the loop nodes around it) for every loop in ``nodes``, outermost first."""
    for n in nodes:
        if n.body is not None:
            yield n, outer
            yield from _loops(n.body.nodes, outer + (n,))


def _iterations(nodes, outer=1):
    """How many loop iterations a run of ``nodes`` executes, every loop counted."""
    total = 0
    for n in nodes:
        if n.body is not None:
            trips = outer * n.attrs["trip_count"]
            total += trips + _iterations(n.body.nodes, trips)
    return total


def _flatten(nodes, trips=None):
    """``nodes`` as a straight-line list of ``_Flat``, every loop unrolled.

    ``trips``: loop node -> the trip count to unroll it to (default: its own). Each
    iteration's values are fresh keys, and a send/recv inside a loop gets the tag the
    executor gives it, ``tag + (flat iteration + 1) * 2**32`` (the flat iteration of a
    loop inside another's iteration f being ``(f + 1) * trips + i``), so iteration
    copies of one message match up across parties as at run time.
    """
    out = []

    def visit(nodes, env, flat):
        for n in nodes:
            operands = tuple(env.get(v, v) for v in n.operands)
            if n.body is None:
                results = tuple((r, flat) for r in n.results) if flat is not None else n.results
                for r, key in zip(n.results, results):
                    env[r] = key
                tag = n.attrs.get("tag") if n.op in ("send", "recv") else None
                if tag is not None and flat is not None:
                    tag += (flat + 1) * _ITERATION
                out.append(_Flat(n.op, operands, results, n.attrs, tag))
                continue
            count = n.attrs["trip_count"] if trips is None else trips.get(n, n.attrs["trip_count"])
            captures = n.attrs["captures"]
            captured, carried = operands[:captures], operands[captures:]
            base = -1 if flat is None else flat
            for i in range(count):
                inner = dict(env)
                inner.update(zip(n.body.args, captured + carried))
                it = (base + 1) * count + i
                visit(n.body.nodes, inner, it)
                last = n.body.nodes[-1] if n.body.nodes else None
                if last is not None and last.op == "yield":
                    carried = tuple(inner.get(v, v) for v in last.operands)
            for r, key in zip(n.results, carried):
                env[r] = key

    visit(nodes, {}, None)
    return out


def _messages(programs):
    """(sender, receiver, tag) -> (party, index) of the send node, in flattened party
    programs (party -> list of ``_Flat``, see ``_flatten``; a Module is flattened fully)."""
    sends = {}
    for party, m in programs.items():
        nodes = _flatten(m.nodes) if hasattr(m, "nodes") else m
        for i, n in enumerate(nodes):
            if n.op == "send":
                sends[(party, n.attrs["to"], n.tag)] = (party, i)
    return sends


def _depth(flat, in_order):
    """Rounds of flattened party programs (party -> list of ``_Flat``): see ``rounds``."""
    sends = _messages(flat)
    depth = {}          # (party, index) -> depth of that node
    value_depth = {}    # value key -> depth
    pos = {p: 0 for p in flat}
    last = {p: 0 for p in flat}
    remaining = sum(len(nodes) for nodes in flat.values())
    while remaining:
        progressed = False
        for party, nodes in flat.items():
            while pos[party] < len(nodes):
                i = pos[party]
                n = nodes[i]
                d = max((value_depth.get(v, 0) for v in n.operands), default=0)
                if n.op == "recv":
                    key = (n.attrs["from"], party, n.tag)
                    src = sends.get(key)
                    if src is None:
                        raise ValueError(f"recv at {party} has no matching send {key}")
                    if src not in depth:
                        break  # the sender has not got there yet: visit it first
                    d = max(d, depth[src] + 1)
                if in_order:
                    d = max(d, last[party])
                depth[(party, i)] = last[party] = d
                for r in n.results:
                    value_depth[r] = d
                pos[party] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            raise ValueError("party programs deadlock: some recv waits on a send that "
                             "waits on it")
    return max(depth.values(), default=0)


def _loop_groups(programs):
    """The parties' loop nodes grouped by the loop of the global program they come from
    (each party's program has its own ``loop`` node for it): two loops are one when a
    message sent in one is received in the other (matched by sender, receiver and tag,
    the loops around the send paired with those around the recv, innermost first).
    Only loops that (in any party) hold a message are returned: cutting the others
    changes no round. -> [[loop node, ...], ...], in no particular order."""
    parent = {}

    def find(x):
        while parent[x] is not x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    ends = {}  # (sender, receiver, tag) -> {"send"/"recv": loops around it}
    messaging = set()
    for party, m in programs.items():
        def visit(nodes, loops):
            for n in nodes:
                if n.body is not None:
                    parent.setdefault(n, n)
                    visit(n.body.nodes, loops + (n,))
                elif n.op in ("send", "recv"):
                    key = ((party, n.attrs["to"]) if n.op == "send"
                           else (n.attrs["from"], party)) + (n.attrs["tag"],)
                    ends.setdefault(key, {})[n.op] = loops
                    messaging.update(loops)
        visit(m.nodes, ())
    for key, pair in ends.items():
        a, b = pair.get("send", ()), pair.get("recv", ())
        for x, y in zip(reversed(a), reversed(b)):
            rx, ry = find(x), find(y)
            if rx is not ry:
                parent[rx] = ry
    groups = {}
    for loop in parent:
        groups.setdefault(find(loop), []).append(loop)
    return [g for g in groups.values() if any(loop in messaging for loop in g)]


def rounds(programs, in_order=False):
    """Communication rounds of a bundle's party programs.

    Every node gets a depth: the largest number of messages on any chain of
    dependencies that ends at it. A ``recv`` has depth (depth of the value
    its matching ``send`` sent) + 1; any other node has the largest depth of
    its operands (0 for none). Chains cross parties through send/recv pairs,
    matched by (sender, receiver, tag). The result is the largest depth of
    any node: the number of network latencies a run needs if each party
    starts every op as soon as its operands are there.

    With ``in_order=True`` each node also depends on the node before it at
    the same party, since the executor runs a party's program strictly in
    order (a ``recv`` blocks everything after it; ``send`` does not block):
    the latencies a run of today's executor takes (pairwise PRG keys come
    from the handshake and take no message).

    Loops (a ``loop`` node runs its body ``trip_count`` times): the depths
    above are those of the programs unrolled (``_flatten``: fresh values per
    iteration, the executor's per-iteration tags). When a run executes at
    most 64 loop iterations in all (every party, nested ones counted), the
    programs are unrolled fully and the count is exact. Otherwise it is
    extrapolated: the parties' loop nodes are grouped by the global loop they
    come from (``_loop_groups``: matched through the messages between them;
    loops holding no message add no round and are unrolled once), R1 is the
    rounds with every loop cut to one iteration, and for each loop L, D_L
    the rounds with L cut to two iterations (the others to one) minus R1.
    Then

        R = R1 + sum over L of (N_L - 1) * M_L * D_L

    with N_L the trip count of L and M_L the product of the trip counts of
    the loops around it (each of its outer iterations repeats its extra
    iterations). For one top-level loop this is R(N) = R(1) + (N - 1) *
    (R(2) - R(1)); it is exact when every iteration adds the same rounds
    (each waits on the last through its carried values, as in training
    loops), and an upper bound when iterations overlap.
    """
    if max((_iterations(m.nodes) for m in programs.values()), default=0) <= _EXACT_ITERATIONS:
        return _depth({p: _flatten(m.nodes) for p, m in programs.items()}, in_order)
    groups = _loop_groups(programs)
    everything = [loop for m in programs.values() for loop, _ in _loops(m.nodes)]
    ones = {loop: 1 for loop in everything}

    def cut(changes):
        trips = dict(ones)
        trips.update(changes)
        return _depth({p: _flatten(m.nodes, trips) for p, m in programs.items()}, in_order)

    base = cut({})
    total = base
    outer_of = {loop: outer for m in programs.values() for loop, outer in _loops(m.nodes)}
    for group in groups:
        delta = cut({loop: 2 for loop in group}) - base
        if not delta:
            continue
        loop = group[0]
        repeats = 1
        for o in outer_of[loop]:
            repeats *= o.attrs["trip_count"]
        total += (loop.attrs["trip_count"] - 1) * repeats * delta
    return total


def op_counts(programs, static=False):
    """Per party, how many ops of each kind a run executes: an op inside a loop body
    counts once per iteration (times the product of the trip counts of the loops around
    it; the ``loop`` node itself once per run of it, its ``yield`` once per iteration).
    ``static=True``: how many nodes of each op the program text has instead."""
    out = {}
    for p, m in programs.items():
        counts = collections.Counter()

        def visit(nodes, times):
            for n in nodes:
                counts[n.op] += 1 if static else times
                if n.body is not None:
                    visit(n.body.nodes, times * (1 if static else n.attrs["trip_count"]))
        visit(m.nodes, 1)
        out[p] = dict(sorted(counts.items()))
    return out


def _accuracy(name, args, out):
    """Fraction of its training rows a trained model gets right (spu_peer's score)."""
    if name in ("lr_train_10k", "lr_sgd_60k"):
        x = np.concatenate(args[:2], axis=1)
        w, b = out
        return float(((x @ np.asarray(w) + np.asarray(b) > 0) == args[2]).mean())
    x, y = args[:2]
    w1, w2 = (np.asarray(o) for o in out)
    return float((np.argmax(np.maximum(x @ w1, 0) @ w2, 1) == np.argmax(y, 1)).mean())


def score(name, fn, args, out):
    """Like spu_peer's score: accuracy for the training workloads, else max |out - plain JAX|.

    For lr_sgd_60k and mlp_train_100 also the plain-JAX model (``fn``, trained
    for the same number of steps): its accuracy and how far mixc's parameters are
    from it.
    """
    if name == "lr_train_10k":
        return {"accuracy": _accuracy(name, args, out)}
    if name in TRAINING:
        ref = fn(*args)
        err = max(float(np.abs(np.asarray(o, dtype=np.float64)
                               - np.asarray(r, dtype=np.float64)).max())
                  for o, r in zip(out, ref))
        return {"accuracy": _accuracy(name, args, out),
                "plain_accuracy": _accuracy(name, args, ref),
                "params_max_abs_err": err}
    ref = np.asarray(fn(*args), dtype=np.float64)
    return {"max_abs_err": float(np.abs(np.asarray(out, dtype=np.float64) - ref).max())}


def peak_rss_mb():
    """Peak resident set size of this process so far (all its threads), MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10), 1)


def _message(e):
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# ------------------------------------------------------------------- runs

def _protocols(bundle):
    """op -> sorted protocols chosen for it, for the ops that cost something."""
    out = {}
    graph = getattr(bundle, "graph_module", None)
    for n in getattr(graph, "nodes", ()):
        if n.op in ("dot_general", "conv_general_dilated", "mul", "lt", "eq", "select_n", "max",
                    "a2b", "b2a") and "protocol" in n.attrs:
            out.setdefault(n.op, set()).add(n.attrs["protocol"])
    return {k: sorted(v) for k, v in sorted(out.items())}


# Inputs known before the query (the server's model): with --offline he, what depends
# only on them is timed as offline (the seed patent's offline phase uses the weights).
STATIC_INPUTS = {"mlp_infer_64": ("w1", "b1", "w2", "b2")}


def run_one_phased(name, cluster, data, reps, network, prefer=(), steps=None):
    """``--offline he``: offline part, barrier, online part (runtime.phases)."""
    from mixc.runtime.phases import simulate_phased
    rec = {"name": name, "system": HE_SYSTEM}
    if prefer:
        rec["prefer"] = list(prefer)
    args = data[name]
    static = STATIC_INPUTS.get(name, ())
    if name in TRAINING:
        rec["steps"] = training_steps(name, steps)
    t = None
    try:
        prog, fn, input_names = make_workload(name, cluster, args, steps)
        t = time.perf_counter()
        bundle = prog.build(network=network, prefer=tuple(prefer) or None)
        build_s = time.perf_counter() - t
    except Exception as e:  # noqa: BLE001 - a workload mixc cannot build yet
        rec["skipped"] = _message(e)
        rec["build_s"] = None if t is None else round(time.perf_counter() - t, 4)
        return rec
    inputs = dict(zip(input_names, args))
    rec["dealer_free"] = "dealer" not in bundle.parties
    try:
        t = time.perf_counter()
        mixc.bundle.simulate(bundle, inputs, check_ranges=False)  # warm-up, unphased
        rec["inline_wall_s"] = round(time.perf_counter() - t, 4)
        runs = []
        for _ in range(reps):
            out, report = simulate_phased(bundle, inputs, static=static)
            runs.append(report)
        med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        rec["wall_s"] = round(med([r["offline_s"] + r["online_s"] for r in runs]), 4)
        rec["offline_s"] = round(med([r["offline_s"] for r in runs]), 4)
        rec["online_s"] = round(med([r["online_s"] for r in runs]), 4)
        rec.update(score(name, fn, args, out))
        last = runs[-1]
        rec["offline_bytes"] = sum(last["offline_bytes"].values())
        rec["online_bytes"] = sum(last["online_bytes"].values())
        rec["bytes_sent"] = {p: last["offline_bytes"][p] + last["online_bytes"][p]
                             for p in last["offline_bytes"]}
        rec["bytes_total"] = sum(rec["bytes_sent"].values())
    except Exception as e:  # noqa: BLE001 - report it, go on with the others
        rec["error"] = _message(e)
        if os.environ.get("MIXC_BENCH_TRACEBACK"):
            traceback.print_exc()
    try:
        rec["rounds"] = rounds(bundle.programs)
    except Exception as e:  # noqa: BLE001 - keep the measurements
        rec["rounds"] = None
        rec["rounds_error"] = _message(e)
    rec["build_s"] = round(build_s, 4)
    rec["network"] = network
    rec["protocols"] = _protocols(bundle)
    rec["parties"] = list(bundle.parties)
    rec["static_inputs"] = list(static)
    return rec


def time_range_checks(bundle, inputs, reps, wall_s):
    """``--check-ranges``: the median of ``reps`` runs with simulate's range sanitizer on
    (its set-up, the re-lowering of the global IR, included), its ratio to ``wall_s``, and
    how many RangeWarnings a run gives."""
    times = []
    for _ in range(reps):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            t = time.perf_counter()
            mixc.bundle.simulate(bundle, inputs, check_ranges=True)
            times.append(time.perf_counter() - t)
    checked = sorted(times)[len(times) // 2]
    return {"check_ranges_wall_s": round(checked, 4),
            "check_ranges_ratio": round(checked / wall_s, 3),
            "range_warnings": [str(w.message) for w in seen
                               if issubclass(w.category, mixc.RangeWarning)]}


def run_one(name, cluster, data, reps, network, steps=None, check_ranges=False, system=SYSTEM):
    rec = {"name": name, "system": system}
    args = data[name]
    if name in TRAINING:
        rec["steps"] = training_steps(name, steps)
    t = None
    try:
        prog, fn, input_names = make_workload(name, cluster, args, steps)
        t = time.perf_counter()
        bundle = prog.build(network=network)
        build_s = time.perf_counter() - t
    except Exception as e:  # noqa: BLE001 - a workload mixc cannot build yet
        rec["skipped"] = _message(e)
        rec["build_s"] = None if t is None else round(time.perf_counter() - t, 4)
        return rec
    inputs = dict(zip(input_names, args))
    try:
        stats = {}
        mixc.bundle.simulate(bundle, inputs, check_ranges=False)  # warm-up
        times = []
        for _ in range(reps):
            stats = {}
            t = time.perf_counter()
            out = mixc.bundle.simulate(bundle, inputs, stats=stats, check_ranges=False)
            times.append(time.perf_counter() - t)
        rec["wall_s"] = round(sorted(times)[len(times) // 2], 4)
        if check_ranges:
            rec.update(time_range_checks(bundle, inputs, reps, rec["wall_s"]))
        rec.update(score(name, fn, args, out))
        sent = {p: int(s["bytes_sent_total"]) for p, s in stats.items()}
        rec["bytes_sent"] = sent
        rec["bytes_total"] = sum(sent.values())
    except Exception as e:  # noqa: BLE001 - report it, go on with the others
        rec["error"] = _message(e)
        if os.environ.get("MIXC_BENCH_TRACEBACK"):
            traceback.print_exc()
    try:
        rec["rounds"] = rounds(bundle.programs)
        rec["rounds_in_order"] = rounds(bundle.programs, in_order=True)
    except Exception as e:  # noqa: BLE001 - keep the measurements
        rec["rounds"] = rec["rounds_in_order"] = None
        rec["rounds_error"] = _message(e)
    rec["build_s"] = round(build_s, 4)
    rec["network"] = network
    rec["ops"] = op_counts(bundle.programs)
    return rec


def main(argv=None):
    from mixc.protocols import NETWORKS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help=f"workloads to run (default: all): {', '.join(WORKLOADS)}")
    ap.add_argument("--reps", type=int, default=3, help="timed warm runs (median is reported)")
    ap.add_argument("--network", default="lan", choices=sorted(NETWORKS),
                    help="network profile protocol selection optimizes for")
    ap.add_argument("--offline", default="dealer", choices=("dealer", "he"),
                    help="where the MPC device's correlations come from: a dealer "
                         "(examples/two_party.devices) or the two parties themselves, by HE "
                         "and OT (examples/two_party_he.devices; offline and online timed "
                         "apart)")
    ap.add_argument("--prefer", action="append", default=[], metavar="PROTOCOL",
                    help="with --offline he: a protocol to choose wherever it applies (e.g. "
                         "arith2pc.he: products by HE-made Beaver triples instead of the "
                         "masking protocol); repeatable")
    ap.add_argument("--steps", type=int, default=None, metavar="N",
                    help="train lr_sgd_60k and mlp_train_100 for N SGD steps instead of "
                         "their real 468 and 100 (same inputs; the plain-JAX reference "
                         "trains for N steps too): for quick checks. Default: the real sizes")
    ap.add_argument("--check-ranges", action="store_true",
                    help="also time simulate with its range sanitizer on: check_ranges_wall_s, "
                         "check_ranges_ratio (to wall_s) and the range_warnings given")
    ap.add_argument("--ring", type=int, default=64, choices=(64, 128),
                    help="the MPC device's share ring: 64 bits, or 128 "
                         "(examples/two_party_ring128.devices, 40 fraction bits; with --offline he, "
                         "examples/two_party_he_ring128.devices)")
    ap.add_argument("--parties", type=int, default=2, choices=(2, 3),
                    help="3: the same workloads on examples/three_party.devices (replicated "
                         "sharing among alice, bob and carol, no dealer; system mixc-rep3)")
    a = ap.parse_args(argv)
    unknown = [n for n in a.names if n not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    if a.reps < 1:
        ap.error("--reps must be at least 1")
    if a.steps is not None and a.steps < 1:
        ap.error("--steps must be at least 1")
    if a.parties == 3 and (a.offline == "he" or a.ring != 64):
        ap.error("--parties 3 runs on the 64-bit ring with no --offline: it has no dealer")
    he = a.offline == "he"
    system = REP3_SYSTEM if a.parties == 3 else SYSTEM
    devices = {(False, 64): DEVICES, (False, 128): RING128_DEVICES,
               (True, 64): HE_DEVICES, (True, 128): HE_RING128_DEVICES}[he, a.ring]
    cluster = mixc.init_device(THREE_PARTY_DEVICES if a.parties == 3 else devices)
    names = a.names or list(WORKLOADS)
    data = make_data(0, training=any(n in TRAINING for n in names))
    for name in names:
        try:
            rec = (run_one_phased(name, cluster, data, a.reps, a.network, a.prefer, a.steps)
                   if he else run_one(name, cluster, data, a.reps, a.network, a.steps,
                                      a.check_ranges, system))
        except Exception as e:  # noqa: BLE001 - never let one workload end the run
            rec = {"name": name, "system": HE_SYSTEM if he else system, "error": _message(e),
                   "build_s": None}
        rec["peak_rss_mb"] = peak_rss_mb()
        if a.ring != 64:
            rec["ring"] = a.ring
        print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
