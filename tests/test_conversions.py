"""Share conversions are identities, and shares look random to each party alone.

A2B (arithmetic -> XOR shares; full words by a Kogge-Stone adder, 0/1 bools
locally from the low bit) and B2A (XOR -> arithmetic, with a dealer pair) are
inserted by ``select_protocols`` wherever a rule wants its operand in the
other share kind. Two ways to make them run:

1. From plain JAX, where the program forces them. int32 bitwise ops run only
   on XOR shares and add only on arithmetic shares, so ``(x ^ 0) + 0`` is
   ``b2a(xor(a2b(x), 0)) + 0``, and ``((x ^ 0) + 0) ^ 0`` converts back again.
   A comparison makes a boolean result, so ``(a < b).astype(f32)`` is a B2A
   of packed bits. Each test checks in ``bundle.stages["select_protocols"]``
   that the conversions sit exactly where claimed.
2. A jnp program puts a float into XOR shares only to round it
   (``jnp.floor`` and friends, ``test_floor.py``): JAX has no bitwise ops on
   floats, and comparisons take arithmetic shares. To convert floats as
   such, and to run chains of conversions on any dtype, ``forced_chain``
   adds a pass to the pipeline,
   between ``insert_transfers`` and ``select_protocols``, that puts explicit
   ``a2b``/``b2a`` nodes on the value about to be revealed. The rest of the
   real pipeline (selection, lowering, partition, the verifier after every
   pass) and the simulated parties run unchanged; the test checks the nodes
   are still there, as written, after selection (which may add one more
   conversion before the reveal when revealing the other share kind is
   cheaper, as it is for packed bits, whose A2B is free).

The identity is exact: the output must be bit for bit what revealing the
value without conversions gives -- for int32 and bool the input itself, for
float32 the fixed-point rounding decode(encode(x)) (f = 18), which is exact on
the 64-bit ring for |x| < 2^45.

The last tests run the parties with an executor that keeps what each one
holds and sends, and check that a party's share alone says nothing: shares
of a constant input, and every message sent (including the values opened
inside A2B, B2A and comparisons), differ between two runs and have about
half their bits set, while the shares still reconstruct the value.
"""
# No `from __future__ import annotations`: mixc.program needs the Input objects.
import re
import threading

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import mixc.passes
from mixc.bundle import build, inputs_by_party, restructure, simulate
from mixc.runtime import kernels
from mixc.runtime.executor import PartyExecutor
from mixc.runtime.links import InProcessHub

from conftest import chain_pass, secure_program

I32_MIN, I32_MAX = -2 ** 31, 2 ** 31 - 1
FRAC = 18
LINE = re.compile(r"^%(\d+): (\S+) = (\w+)\(([^)]*)\)")


def graph(bundle, stage="select_protocols"):
    """{value id: (op, [operand ids], result type)} of the global IR after ``stage``."""
    out = {}
    for line in bundle.stages[stage].splitlines():
        m = LINE.match(line)
        if m:
            ids = [int(t) for t in re.findall(r"%(\d+)", m.group(4))]
            out[int(m.group(1))] = (m.group(3), ids, m.group(2))
    return out


def ops_of(g, op):
    return [i for i, (o, _, _) in g.items() if o == op]


def producer(g, value_id):
    return g[value_id][0]


def fixed_point(x):
    """What revealing x from MPC gives without any conversion: decode(encode(x))."""
    return kernels.decode_fixed(kernels.encode_fixed(np.asarray(x, np.float64), FRAC), FRAC) \
        .astype(np.float32)


# ------------------------------------------------------------ forced by jnp: int32 words

def xor_add_xor(x):
    once = (x ^ 0) + 0           # a2b, xor, b2a, add
    return once, once ^ 0        # ... a2b, xor, reveal from boolean shares


def check_xor_add_xor(bundle):
    g = graph(bundle)
    (to,) = [i for i, (o, _, t) in g.items() if o == "to" and "@mpc" in t]
    xor1, xor2 = sorted(ops_of(g, "xor"))
    (add,) = ops_of(g, "add")
    # A2B of the shared input feeds the first xor; B2A of that xor feeds the add;
    # A2B of the add's result feeds the second xor.
    a2b_in = [v for v in g[xor1][1] if producer(g, v) == "a2b"]
    assert len(a2b_in) == 1 and g[a2b_in[0]][1] == [to]
    b2a_in = [v for v in g[add][1] if producer(g, v) == "b2a"]
    assert len(b2a_in) == 1 and g[b2a_in[0]][1] == [xor1]
    a2b_add = [v for v in g[xor2][1] if producer(g, v) == "a2b"]
    assert len(a2b_add) == 1 and g[a2b_add[0]][1] == [add]
    assert len(ops_of(g, "a2b")) == 2 and len(ops_of(g, "b2a")) == 1
    return g


def test_int32_b2a_a2b_identity(secure):
    x = np.array([0, 1, -1, 7, -7, 2 ** 30, -2 ** 30, I32_MIN, I32_MAX, 123456789], np.int32)
    out, bundle = secure(xor_add_xor, x, with_bundle=True)
    check_xor_add_xor(bundle)
    for o in out:
        assert o.dtype == np.int32
        np.testing.assert_array_equal(o, x)


@settings(max_examples=6, deadline=None)
@given(hnp.arrays(np.int32, st.integers(1, 9), elements=st.integers(I32_MIN, I32_MAX)))
def test_hypothesis_int32_conversions(secure, x):
    out = secure(xor_add_xor, x)
    for o in out:
        np.testing.assert_array_equal(o, x)


def test_int32_b2a_two_dimensional(secure):
    # regression: B2A once masked (3, 4)-shaped word shares with (12,) dealt words
    x = np.arange(-6, 6, dtype=np.int32).reshape(3, 4) * 1000003
    out, bundle = secure(xor_add_xor, x, with_bundle=True)
    check_xor_add_xor(bundle)
    for o in out:
        np.testing.assert_array_equal(o, x)


# ------------------------------------------------------------ forced by jnp: packed bits

def test_bits_b2a(secure):
    a = np.array([1.0, 2.0, 3.0, 5.0, -0.0, -4.0, 2.0 ** 20], np.float32)
    b = np.array([3.0, 2.0, 1.0, 6.0, 0.0, -5.0, 2.0 ** 20 - 1], np.float32)
    c, d = b[::-1].copy(), a[::-1].copy()

    def fn(a, b, c, d):
        return ((a < b).astype(jnp.float32), ((a < b) & (c < d)).astype(jnp.float32),
                ((a < b) & jnp.ones(a.shape, bool)).astype(jnp.int32))
    out, bundle = secure(fn, a, b, c, d, with_bundle=True)
    g = graph(bundle)
    b2as = ops_of(g, "b2a")
    assert len(b2as) == 3
    for v in b2as:
        (src,) = g[v][1]
        # a slice of comparisons batched into one (passes.batch_comparisons)
        assert g[src][2].startswith("bool[") and producer(g, src) in ("lt", "and", "slice")
        assert g[v][2].startswith("bool[") and g[v][2].endswith(":arith")
    ref = (np.less(a, b).astype(np.float32), (np.less(a, b) & np.less(c, d)).astype(np.float32),
           np.less(a, b).astype(np.int32))
    for o, r in zip(out, ref):
        assert o.dtype == r.dtype
        np.testing.assert_array_equal(o, r)


def test_bits_and_true_b2a(secure):
    # regression: a public scalar bool was packed as one bit, so `p & True` kept only p[0]
    a = np.array([1.0, 2.0, 3.0, 5.0, 7.0], np.float32)
    b = np.array([3.0, 2.0, 1.0, 6.0, 8.0], np.float32)
    out, bundle = secure(lambda a, b: ((a < b) & True).astype(jnp.float32), a, b, with_bundle=True)
    g = graph(bundle)
    (b2a,) = ops_of(g, "b2a")
    (src,) = g[b2a][1]
    assert producer(g, src) == "and"
    np.testing.assert_array_equal(out, np.less(a, b).astype(np.float32))


# ------------------------------------------------------------ forced in the IR: any dtype

def forced_chain(cluster, monkeypatch, chain, x):
    """Build and simulate reveal(chain(reshape(x))) with the chain inserted before selection."""
    pipeline = list(mixc.passes.PIPELINE)
    at = [n for n, _ in pipeline].index("select_protocols")
    pipeline.insert(at, ("force_conversions", chain_pass(chain)))
    monkeypatch.setattr(mixc.passes, "PIPELINE", pipeline)
    prog, inputs = secure_program(cluster, lambda x: x.reshape(-1), x)
    bundle = build(prog, verify_between=True)
    monkeypatch.undo()
    g = graph(bundle)
    (reveal,) = ops_of(g, "reveal")
    (reshape,) = ops_of(g, "reshape")
    # the chain, as written, right after the reshape; the selector may append one more
    # conversion if revealing from the other share kind is cheaper (packed bits: a free A2B)
    v, seen = g[reveal][1][0], []
    while g[v][0] in ("a2b", "b2a"):
        seen.append(g[v][0])
        (v,) = g[v][1]
    seen.reverse()
    assert v == reshape and tuple(seen[:len(chain)]) == tuple(chain), seen
    assert len(seen) <= len(chain) + 1
    assert len(ops_of(g, "a2b")) + len(ops_of(g, "b2a")) == len(seen)
    return simulate(bundle, inputs)


CHAINS = {"B2A.A2B": ("a2b", "b2a"),            # arith -> bool -> arith, revealed arithmetic
          "A2B.B2A": ("a2b", "b2a", "a2b")}     # bool -> arith -> bool, revealed boolean
chains = pytest.mark.parametrize("chain", list(CHAINS.values()), ids=list(CHAINS))


@chains
def test_forced_float32(cluster, monkeypatch, chain):
    x = np.array([[0.0, -0.0, 2.0 ** -18, -2.0 ** -18, 1.0, -1.0, 0.1, -0.1],
                  [2.0 ** 20, -2.0 ** 20, 3.14159, -2.71828, 2.0 ** 40, -2.0 ** 40,
                   2.0 ** 44, -2.0 ** 44]], np.float32)
    out = forced_chain(cluster, monkeypatch, chain, x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, fixed_point(x).reshape(-1))


@chains
def test_forced_int32(cluster, monkeypatch, chain):
    x = np.array([[0, 1, -1, I32_MIN, I32_MAX], [2 ** 30, -2 ** 30, 5, -5, 99]], np.int32)
    out = forced_chain(cluster, monkeypatch, chain, x)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, x.reshape(-1))


@chains
def test_forced_bool(cluster, monkeypatch, chain):
    # 2 x 37 = 74 bits: more than one packed word, the last one partly used
    x = np.random.default_rng(0).integers(0, 2, (2, 37)).astype(bool)
    out = forced_chain(cluster, monkeypatch, chain, x)
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out, x.reshape(-1))


@settings(max_examples=5, deadline=None)
@given(st.data())
def test_hypothesis_forced_conversions(cluster, data):
    chain = data.draw(st.sampled_from(list(CHAINS.values())), label="chain")
    dtype = data.draw(st.sampled_from([np.float32, np.int32, np.bool_]), label="dtype")
    shape = (2, data.draw(st.integers(1, 40), label="n"))
    if dtype is np.float32:
        elements = st.floats(-2.0 ** 40, 2.0 ** 40, width=32, allow_nan=False,
                             allow_infinity=False)
    elif dtype is np.int32:
        elements = st.integers(I32_MIN, I32_MAX)
    else:
        elements = st.booleans()
    x = data.draw(hnp.arrays(dtype, shape, elements=elements), label="x")
    with pytest.MonkeyPatch.context() as mp:
        out = forced_chain(cluster, mp, chain, x)
    expected = fixed_point(x) if dtype is np.float32 else x
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected.reshape(-1))


# ------------------------------------------------------------ what each party holds

class Recording(PartyExecutor):
    """A party executor that keeps every value it computes and every message it sends."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.values, self.sent = {}, []

    def _eval(self, node, index, args):
        results = super()._eval(node, index, args)
        if node.op == "send":
            self.sent.append((node.attrs["to"], node.attrs["what"], np.array(args[0])))
        for r, v in zip(node.results, results):
            self.values[r] = np.array(v)
        return results


def run_recorded(bundle, inputs):
    """``simulate`` with recording executors: (outputs, {party: executor})."""
    per_party = inputs_by_party(bundle.manifest, inputs)
    hub = InProcessHub(list(bundle.parties), timeout=60.0)
    execs = {p: Recording(bundle.programs[p], p, hub.link(p), per_party[p])
             for p in bundle.parties}
    results, errors = {}, {}

    def work(p):
        try:
            results[p] = execs[p].run()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors[p] = e
            hub.abort(p, repr(e))
    threads = [threading.Thread(target=work, args=(p,)) for p in bundle.parties]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in bundle.parties:
        hub.link(p).close()
    if errors:
        raise next(iter(errors.values()))
    merged = {k: np.asarray(v) for r in results.values() for k, v in r.items()}
    return restructure(bundle.manifest, merged), execs


def reveal_shares(bundle, execs, output="alice"):
    """(the output party's own share, the share it received) at the reveal of out0."""
    prog = bundle.programs[output]
    ex = execs[output]
    (decode,) = [n for n in prog.nodes if n.op == "decode"]
    (combined,) = decode.operands
    (combine,) = [n for n in prog.nodes if combined in n.results]
    received = [v for v in combine.operands
                if any(n.op == "recv" and v in n.results for n in prog.nodes)]
    (theirs,) = received
    (mine,) = [v for v in combine.operands if v is not theirs]
    return combine.op, ex.values[mine], ex.values[theirs]


def bit_fraction(words):
    words = np.ascontiguousarray(words).view(np.uint8)
    return np.unpackbits(words).mean()


@pytest.mark.parametrize("fn,x,combine", [
    (lambda x: x + 0.0, np.zeros(64, np.float32), "add"),   # arithmetic shares of 0.0
    (lambda x: x ^ 0, np.zeros(64, np.int32), "xor"),       # XOR shares (after A2B) of 0
], ids=["arith", "bool"])
def test_shares_of_a_constant_look_random(cluster, fn, x, combine):
    prog, inputs = secure_program(cluster, fn, x)
    bundle = build(prog)
    runs = []
    for _ in range(2):
        out, execs = run_recorded(bundle, inputs)
        np.testing.assert_array_equal(out, x)
        op, mine, theirs = reveal_shares(bundle, execs)
        assert op == combine and mine.dtype == np.uint64 and theirs.dtype == np.uint64
        # the shares reconstruct the encoding of 0 ...
        total = mine + theirs if op == "add" else mine ^ theirs
        assert not total.any()
        # ... while each alone has about half its 4096 bits set (6 sigma: 0.047)
        for share in (mine, theirs):
            assert abs(bit_fraction(share) - 0.5) < 0.05
        runs.append((mine, theirs))
    # and neither party's share repeats when the same input is shared again
    for a, b in zip(*runs):
        assert not np.any(a == b)


def test_messages_look_random(cluster):
    """Everything any party sends while converting and comparing constants is masked."""
    x = np.full(64, 3, np.int32)
    y = np.full(64, 5.0, np.float32)

    def fn(x, y):
        # a2b of x, b2a of the xor; lt (carry tree) and b2a of its bits
        return ((x ^ 6) + 1, (y < 7.5).astype(jnp.float32))
    prog, inputs = secure_program(cluster, fn, x, y)
    bundle = build(prog)
    sent = []
    for _ in range(2):
        out, execs = run_recorded(bundle, inputs)
        np.testing.assert_array_equal(out[0], (x ^ 6) + 1)
        np.testing.assert_array_equal(out[1], np.ones(64, np.float32))
        sent.append([(p, to, what, m) for p, ex in sorted(execs.items())
                     for to, what, m in ex.sent])
    kinds = {part for _, _, what, _ in sent[0] for part in what.split(" + ")}  # packed bursts
    # among them: B2A's and the AND gates' opened values, the dealer's corrections
    assert {"masked bits (x ^ r)", "masked bits (x ^ a)", "share (reveal)"} <= kinds, kinds
    assert any("correction" in w for w in kinds), kinds
    assert len(sent[0]) == len(sent[1])
    for (p, to, what, m1), (_, _, _, m2) in zip(*sent):
        if m1.size * m1.itemsize < 8:
            continue
        assert m1.dtype == np.uint64, (p, to, what, m1.dtype)
        assert not np.array_equal(m1, m2), f"{p} -> {to} ({what}) is the same in two runs"
        if m1.size >= 16:
            # the top halves: a share of a value made by a local shift (bool -> f32 is
            # << 18) has known-zero low bits, which says nothing about the value
            top = bit_fraction((m1 >> np.uint64(32)).astype(np.uint32))
            assert abs(top - 0.5) < 0.1, (p, to, what, top)
