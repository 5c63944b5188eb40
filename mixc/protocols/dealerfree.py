"""Dealer-free correlated randomness for the 2-party protocols (``offline: he``).

On an MPC device with ``offline: he`` the two parties P0 and P1 make every
correlation themselves; no third party appears in the bundle. ``arith2pc``
and ``bool2pc`` lower exactly as with a dealer (Beaver openings, AND gates,
B2A openings), and only the *source* of the correlations changes:
``correlations.triple``, ``correlations.truncate`` and ``bool2pc``'s B2A pair
call this module when the device is dealer-free.

Every correlation is explicit in the per-party programs:

- **matrix-product triples** (``dot_general``, ``conv_general_dilated``;
  Cheetah-style coefficient-encoded HE, ``runtime.he``): each party draws
  its triple shares a_p, b_p from its own PRG key and makes an RLWE key pair
  at program start (``he.keygen``; the public key goes to the peer as
  ``HE public key``). For each cross term, the party holding the encrypted
  side E sends ``Enc_E(X_E)`` (``he_mm.encrypt``, its share of one operand in
  the matrix-product packing), the other party V computes
  ``Enc_E(W_V . X_E - s_V)`` (``he_mm.eval``: the product masked by its
  uniform s_V, each output re-randomised, noise flooded, modulus switched,
  only the result coefficients kept) and sends it back; E decrypts
  (``he_mm.decrypt``).
  Both directions run at once (each party evaluates one cross term), so
  c_p = a_p . b_p + (its decrypted cross term) + s_p. The encrypted operand
  (a or b) is the one whose packing plan is cheaper. A batched
  ``dot_general`` takes one such triple per batch element.
- **elementwise arithmetic triples** (``mul``, ``select_n``, 0/1 logic):
  ``ot.arith_triple``, random triples from the OT session: random a_p, b_p
  and a Gilboa OLE (64 correlated OTs per product, IKNP, ``runtime.ot``)
  each way at once for a0*b1 and a1*b0. A broadcast product (a shared
  scalar times a tensor) draws a_p, b_p from each party's own PRG key and
  gets the cross terms by ``ot.ole``. On a ``ring: 128`` device both are over
  Z_2^128: 128 correlated OTs per product, each carrying the whole 128-bit
  hash as its message (``ring=128`` on ``ot.arith_triple``; ``ot.ole`` on u128
  values).
- **AND triples** (``bool2pc`` AND gates: comparisons, adders, zero tests):
  ``ot.and_triple``, one random OT per bit each way, one message each way
  (``ot.and`` for the broadcast case).
- **truncation** after fixed-point products (``truncate``): no random
  pair is opened. With u0 = x0 + 2^62 at P0 and v1 = -x1 at P1 (so
  u0 - v1 = x + 2^62 =: x' in [0, 2^63) whenever |x| < 2^62),

      (u0 >> f) - (v1 >> f) + w * 2^(64-f) - 2^(62-f)  =  floor(x / 2^f) + c,

  c in {0, 1}, where w = [u0 < v1] is the borrow of the 64-bit subtraction;
  because x' < 2^63, w = NOT msb(u0) AND msb(v1): a product of a bit P0
  knows and a bit P1 knows. Offline, P0 draws random bits alpha, P1 random
  bits beta, and a bit-OLE (``ot.bit_ole``) gives additive shares t0 + t1 =
  alpha * beta. Online (one round, one bit each way per element) P0 sends
  e = a XOR alpha and P1 sends g = b XOR beta; then with s = (1-2e)(1-2g),
  P0 takes w0 = e g + g (1-2e) alpha + s t0 and P1 takes
  w1 = e (1-2g) beta + s t1 (w0 + w1 = a b = w). **Error**: the result is
  floor(x/2^f) or floor(x/2^f) + 1, so |result - x/2^f| < 2^-f (one unit in
  the last place), never a wrap-around, for |x| < 2^62 (|value| < 2^26
  before truncation at f = 18) -- the same bound as the dealer's TruncPr.
  (This is Cheetah's truncation with a known most significant bit,
  Huang et al., USENIX Security 2022, with the one AND precomputed.)
  **Ring 128**: the same with 2^126 for 2^62, the top bit 127 and 2^(128-f)
  for 2^(64-f); exact as above for |x| < 2^126 (|value| < 2^46 before
  truncation at f = 40). w enters only as w * 2^(128-f), so its shares are
  needed mod 2^f alone: the bit-OLE stays mod 2^64 (f <= 64) and costs what it
  costs on 64 bits; only the local step reads 128-bit u.
- **B2A pairs** (boolean -> arithmetic): random r with XOR shares r0 (P0's
  PRG) and r1 (P1's PRG); additive shares of each bit r0_i XOR r1_i =
  r0_i + r1_i - 2 r0_i r1_i from one bit-OLE per bit, in the device's ring
  (mod 2^128 on ``ring: 128``: a 128-bit correction per bit).

The OT ops run a two-party subprotocol over the link between the two
parties (``runtime.ot_ops``); they share one OT session per pair of
parties (``ot.session``, at program start: the base OTs), whose messages
use the tags ``[tag_base, tag_base + 2^20)`` (``tag_base`` = 2^48 +
session * 2^40, far above the tags of ordinary messages; each call takes
the next ones). Each call is numbered (``seq``) in the order both parties
run it. Everything above except truncation's masked bits depends on no
input, so it is moved to the start of its block (``hepack.hoist``): each
party's program opens with its offline part, in the same order at both.

**Loops** (``lax.fori_loop``/``scan``/``while_loop`` stay ``loop`` ops here
as with a dealer): the correlations a loop body consumes are made *in the
body, once per iteration*, hoisted to the start of the body (not of the
program), so iteration k's triples and truncation bits are made right before
iteration k uses them. (Batching all iterations' correlations ahead of the
loop would make the program's offline part, and its memory, grow with the
trip count, and would need run-time slicing of every correlation at the
counter; per iteration, memory stays flat and the program text does not
depend on the trip count.) The session and the HE key pairs are still made
once, at the program's start (``hepack.at_program_start``), and reach the
body as captured operands. Nothing repeats across iterations: a body's
``random`` streams (the parties' triple shares and masks) are offset per
iteration by the executor; an OT call in a body takes its tags from a
window of its own per iteration (``runtime.ot_ops``: static tags
``2^31 + seq * 2^8``, offset by the iteration like every tag in a loop), so
a long loop never exhausts the session's 2^20 tags; its OT extension
keystreams continue where the last call stopped and its random choices
come from the session's private PRG; each HE encryption and evaluation
seeds a fresh stream from ``os.urandom``. Per iteration, the cost is that
of one run of the body's correlations (the selector multiplies it by the
trip count). An OT call running twice in one iteration is an error.

Costs (declared, for the selector and ``--cost-report``; offline and online
bytes together, offline rounds included): IKNP correlated OT costs the
receiver kappa = 128 bits per OT plus the sender's corrections; an OLE of
64-bit words is 64 COTs (Gilboa; of 128-bit words 128 COTs and 129
correction words), a bit-OLE one COT with a 64-bit correction (128-bit for
B2A pairs on ``ring: 128``), an AND bit one COT with a 1-bit correction. HE matrix triples
cost the plan's input ciphertexts and sanitised outputs, both directions.
"""
from __future__ import annotations

import functools

import numpy as np

from ..errors import MixcError
from ..ir.core import Node, TensorType, Value
from ..ir.ops import infer
from ..passes.lower import seed_name
from . import Cost
from .common import parties, u64
from .hepack import Product, apply_local, at_program_start, he_keys, hoist
from .ring import Ring, ring_of

# The protocol names of the dealer-free rules (same lowerings as arith2pc/bool2pc).
PROTOCOLS = ("arith2pc.he", "bool2pc.ot")

OT_TAG_BASE = 1 << 48
OT_SESSION_STRIDE = 1 << 40
RING_BYTES = 8

# ------------------------------------------------------------ declared unit costs
# (runtime.ot: IKNP with kappa = 128; the receiver sends 16 bytes per OT)
KAPPA_BYTES = 16
OLE_BYTES = 64 * KAPPA_BYTES + 33 * 8  # one 64-bit Gilboa OLE: 64 COTs, 33 correction words
OLE128_BYTES = 128 * KAPPA_BYTES + 129 * 8  # one 128-bit Gilboa OLE: 128 COTs, 129 words
BIT_OLE_BYTES = KAPPA_BYTES + 8        # one bit-OLE: one COT, a 64-bit correction
BIT_OLE128_BYTES = KAPPA_BYTES + 16    # one bit-OLE mod 2^128: a 128-bit correction
AND_TRIPLE_WORD_BYTES = 2 * 64 * KAPPA_BYTES  # 64 AND triples: a random OT per bit each way
AND_WORD_BYTES = 64 * KAPPA_BYTES + 8  # 64 chosen-input ANDs: 64 COTs, 1-bit corrections
OT_ROUNDS = 2                          # receiver's matrix, sender's corrections
HE_ROUNDS = 2                          # Enc(X) one way, the sanitised product back

# Labels of what the correlations are for (``what`` on ot ops, message labels).
ARITH_TRIPLE = "arithmetic triple (OLE)"
AND_TRIPLE = "AND triple"
TRUNC_PAIR = "truncation bits"
B2A_PAIR = "bit-conversion pair"
MATMUL_TRIPLE = "matmul triple"


def dealer_free(device) -> bool:
    return getattr(device, "offline", None) == "he"


def offline_of(node, module):
    """``offline`` of the MPC device a node runs on (or reads from); None if none."""
    for v in list(node.results) + list(node.operands):
        d = module.devices.get(v.type.place)
        if d is not None and d.kind == "MPC":
            return d.offline
    return None


def only(mode, accepts):
    """``accepts`` restricted to MPC devices whose correlations come from ``mode``."""
    def check(kinds, node, module):
        return offline_of(node, module) == mode and accepts(kinds, node, module)
    return check


# ------------------------------------------------------------ OT sessions and ops

def ot_session(ctx, device):
    """The OT session of the device's two parties: {"tokens": {party: its token, as the
    block being lowered sees it}, "seq": calls numbered so far}. Made once, at the start
    of both programs (``ot.session`` runs the base OTs), even when a loop body asks first."""
    sessions = ctx.__dict__.setdefault("_ot_sessions", {})
    key = tuple(sorted(parties(device)))  # one session per pair of parties, whatever device
    if key not in sessions:
        base = OT_TAG_BASE + len(sessions) * OT_SESSION_STRIDE
        toks = {}
        first, second = key
        for me, peer in ((first, second), (second, first)):
            node = at_program_start(ctx, "ot.session", (),
                                    [TensorType("u8", (1,), me, "public")],
                                    {"peer": peer, "base_sender": me == first,
                                     "tag_base": base})
            toks[me] = node.result
        sessions[key] = {"program_tokens": toks, "seq": 0}
    s = sessions[key]
    s["tokens"] = {p: ctx.captured(t) for p, t in s["program_tokens"].items()}
    return s


def _ot_pair(ctx, device, op, x0, x1, kind, what, attrs=None):
    """Run ``op`` between P0 (input x0, the sender's role) and P1 (input x1): each
    party's share of the elementwise product of x0 and x1 (additive for ``ot.ole`` and
    ``ot.bit_ole``, XOR for ``ot.and``)."""
    p0, p1 = parties(device)
    s = ot_session(ctx, device)
    s["seq"] += 1
    common = {"seq": s["seq"], "what": what, **(attrs or {})}
    return {p0: ctx.emit(p0, op, [s["tokens"][p0], x0], kind,
                         dict(common, peer=p1, role="send")),
            p1: ctx.emit(p1, op, [s["tokens"][p1], x1], kind,
                         dict(common, peer=p0, role="recv"))}


def _own_random(ctx, party, shape, kind="arith", ring=Ring(64)):
    """Uniform elements of ``ring`` from the party's own PRG key."""
    seed = seed_name(party)
    return ring.random(ctx, party, seed, tuple(shape), ctx.stream(seed), kind)


def _ring_attr(ring):
    """The ``ring`` attribute of ot ops making ring values (absent on the 64-bit ring)."""
    return {} if ring.bits == 64 else {"ring": ring.bits}


def _broadcast(ctx, party, value, shape):
    if tuple(value.type.shape) == tuple(shape):
        return value
    return ctx.emit(party, "broadcast_in_dim", [value], value.type.kind,
                    {"shape": tuple(shape), "broadcast_dimensions": ()})


# ------------------------------------------------------------ triples

def triple(ctx, device, shape_a, shape_b, product, ring="arith"):
    """Shares {party: (a, b, c)} with c = product(a, b), made by the two parties alone.
    The triple depends on no input: its ops move to the start of the block (the program,
    or the loop body that uses it: once per iteration; ``hepack.hoist``), so every party
    makes its correlations before it reads an input."""
    op = getattr(product, "op", "and" if ring == "bool" else "mul")
    if op in ("dot_general", "conv_general_dilated"):
        make = _batched_matmul_triple if op == "dot_general" and any(product.attrs["batch"]) \
            else _matmul_triple
        _he_keys_both(ctx, device)
    elif op in ("mul", "and"):
        make = functools.partial(_elementwise_triple, ring=ring)
        ot_session(ctx, device)
    else:
        raise NotImplementedError(f"dealer-free triples for {op}")
    return _offline(ctx, make, ctx, device, shape_a, shape_b, product)


def _offline(ctx, fn, *args):
    """fn(*args), its nodes moved to the start of the block being lowered (in the program,
    after keys and sessions, which are inserted at its start themselves)."""
    start = len(ctx.out.nodes)
    out = fn(*args)
    hoist(ctx, start)
    return out


def _he_keys_both(ctx, device):
    """Each party's key pair for its share's encryptions, the plaintext modulus the ring's."""
    p0, p1 = parties(device)
    bits = ring_of(device).bits
    return he_keys(ctx, p0, p1, bits), he_keys(ctx, p1, p0, bits)


def _elementwise_triple(ctx, device, shape_a, shape_b, product, ring="arith"):
    p0, p1 = parties(device)
    kind = "bool" if ring == "bool" else "arith"
    # AND triples are on u64 words of bits whatever the device's ring
    values = Ring(64) if ring == "bool" else ring_of(device)
    if tuple(shape_a) == tuple(shape_b):
        # random triples straight from the OT session (both directions in one call)
        op, what = ("ot.and_triple", AND_TRIPLE) if ring == "bool" else \
            ("ot.arith_triple", ARITH_TRIPLE)
        s = ot_session(ctx, device)
        s["seq"] += 1
        out = {}
        for me, peer in ((p0, p1), (p1, p0)):
            t = TensorType(values.dtype, tuple(shape_a), me, kind)
            out[me] = tuple(ctx.emit_many(me, op, [s["tokens"][me]], [t, t, t],
                                          {"peer": peer, "seq": s["seq"], "what": what,
                                           "shape": tuple(shape_a), **_ring_attr(values)}))
        return out
    # a broadcast product (scalar times tensor): the parties' own a, b; cross terms by OLE
    a = {p: _own_random(ctx, p, shape_a, kind, values) for p in (p0, p1)}
    b = {p: _own_random(ctx, p, shape_b, kind, values) for p in (p0, p1)}
    local = {p: product(p, a[p], b[p], kind) for p in (p0, p1)}
    shape = tuple(local[p0].type.shape)
    op, what = ("ot.and", AND_TRIPLE) if ring == "bool" else ("ot.ole", ARITH_TRIPLE)
    x01 = _ot_pair(ctx, device, op, _broadcast(ctx, p0, a[p0], shape),
                   _broadcast(ctx, p1, b[p1], shape), kind, what)
    x10 = _ot_pair(ctx, device, op, _broadcast(ctx, p0, b[p0], shape),
                   _broadcast(ctx, p1, a[p1], shape), kind, what)
    combine = "xor" if ring == "bool" else "add"
    out = {}
    for p in (p0, p1):
        c = ctx.emit(p, combine, [local[p], x01[p]], kind)
        out[p] = (a[p], b[p], ctx.emit(p, combine, [c, x10[p]], kind))
    return out


def _probe(op, attrs, shape_a, shape_b):
    """A stand-in node with the product's operand and result shapes (for hepack.Product)."""
    ta = TensorType("u64", tuple(shape_a), "?", "arith")
    tb = TensorType("u64", tuple(shape_b), "?", "arith")
    ((_, shape_c),) = infer(op, [ta, tb], attrs)
    return Node(op, (Value(-1, ta), Value(-2, tb)),
                (Value(-3, TensorType("u64", tuple(shape_c), "?", "arith")),), dict(attrs))


def matmul_orientation(op, attrs, shape_a, shape_b):
    """(index of the operand to encrypt, its hepack.Product): the cheaper packing plan."""
    try:
        key = (op, tuple(sorted(attrs.items())), tuple(shape_a), tuple(shape_b))
        hash(key)
    except TypeError:
        return _orientation(op, attrs, shape_a, shape_b)
    if key not in _ORIENTATIONS:
        _ORIENTATIONS[key] = _orientation(op, attrs, shape_a, shape_b)
    return _ORIENTATIONS[key]


_ORIENTATIONS = {}


def _orientation(op, attrs, shape_a, shape_b):
    from ..runtime import he as rhe
    node = _probe(op, attrs, shape_a, shape_b)
    best = None
    for xi in (1, 0):
        try:
            prod = Product(node, xi)
        except MixcError as e:
            raise NotImplementedError(f"dealer-free {op} triples ({e})") from None
        plan = rhe.plan_matmul(prod.M, prod.K, prod.N)
        secs, nbytes = plan.cost()
        score = secs + nbytes / rhe.DEFAULT_BANDWIDTH
        if best is None or score < best[0]:
            best = (score, xi, prod)
    return best[1], best[2]


def _matmul_triple(ctx, device, shape_a, shape_b, product):
    # the HE keys (he_keys) were made by the caller (triple); on the 128-bit ring they
    # and the plan have plaintext modulus 2^128 (runtime.he.DEFAULT_128)
    p0, p1 = parties(device)
    ring = ring_of(device)
    attrs = dict(getattr(product, "attrs", {}))
    xi, prod = matmul_orientation(product.op, attrs, shape_a, shape_b)
    plan = {"plan": tuple(int(v) for v in prod.plan(ring.bits))}
    a = {q: _own_random(ctx, q, shape_a, ring=ring) for q in (p0, p1)}
    b = {q: _own_random(ctx, q, shape_b, ring=ring) for q in (p0, p1)}
    enc_side = a if xi == 0 else b
    plain_side = b if xi == 0 else a
    names = ("a", "b") if xi == 0 else ("b", "a")
    out_shape = tuple(_probe(product.op, attrs, shape_a, shape_b).result.type.shape)
    # 1. each party encrypts its share of the encrypted operand, under its own key
    sent = {}
    for enc, ev in ((p0, p1), (p1, p0)):
        sk, _pk = he_keys(ctx, enc, ev, ring.bits)
        x = apply_local(ctx, enc, enc_side[enc], prod.x_steps, "arith")
        ct = ctx.emit(enc, "he_mm.encrypt", [sk, x], "he", plan)
        sent[enc] = ctx.xfer(ct, ev, f"HE ciphertext: Enc({enc}'s {names[0]}) under {enc}'s key "
                                     f"({MATMUL_TRIPLE}, offline)", "he")
    # 2. each evaluates the cross term on the other's ciphertexts, masked by -s, sanitised
    back, masks = {}, {}
    for enc, ev in ((p0, p1), (p1, p0)):
        _sk, pk = he_keys(ctx, enc, ev, ring.bits)
        w = apply_local(ctx, ev, plain_side[ev], prod.w_steps, "arith")
        s = _own_random(ctx, ev, out_shape, ring=ring)
        neg_s = ctx.emit(ev, "neg", [apply_local(ctx, ev, s, prod.inv_steps, "arith")], "arith")
        ext = ctx.emit(ev, "he_mm.eval", [pk, sent[enc], w, neg_s], "he", plan)
        back[enc] = ctx.xfer(ext, enc, f"HE ciphertext: Enc({ev}'s {names[1]} x {enc}'s "
                                       f"{names[0]} - s), sanitised ({MATMUL_TRIPLE}, offline)",
                             "he")
        masks[ev] = s
    # 3. each decrypts its cross share; c_p = a_p . b_p + decrypted + own mask
    out = {}
    for enc, ev in ((p0, p1), (p1, p0)):
        sk, _pk = he_keys(ctx, enc, ev, ring.bits)
        u = ctx.emit(enc, "he_mm.decrypt", [sk, back[enc]], "arith", plan)
        cross = apply_local(ctx, enc, u, prod.out_steps, "arith")
        c = product(enc, a[enc], b[enc], "arith")
        c = ctx.emit(enc, "add", [c, cross], "arith")
        out[enc] = (a[enc], b[enc], ctx.emit(enc, "add", [c, masks[enc]], "arith"))
    return out


def _unbatched(attrs, shape_a, shape_b):
    """A batched dot_general as (batch shape, permutations moving the batch dims first,
    per-element operand shapes, the per-element dot_general's attrs)."""
    (lc, rc), (lb, rb) = attrs["contract"], attrs["batch"]
    fa = [i for i in range(len(shape_a)) if i not in lb]
    fb = [j for j in range(len(shape_b)) if j not in rb]
    inner = {"contract": (tuple(fa.index(i) for i in lc), tuple(fb.index(j) for j in rc)),
             "batch": ((), ())}
    return (tuple(shape_a[i] for i in lb), (tuple(lb) + tuple(fa), tuple(rb) + tuple(fb)),
            (tuple(shape_a[i] for i in fa), tuple(shape_b[j] for j in fb)), inner)


def _batched_matmul_triple(ctx, device, shape_a, shape_b, product):
    """A batched dot_general: one HE matrix triple per batch element, stacked."""
    p0, p1 = parties(device)
    bshape, perms, (sa, sb), inner = _unbatched(product.attrs, shape_a, shape_b)
    count = int(np.prod(bshape, dtype=np.int64))

    def inner_product(party, x, y, kind):
        return ctx.emit(party, "dot_general", [x, y], kind, inner)
    inner_product.op, inner_product.attrs = "dot_general", inner
    parts = [_matmul_triple(ctx, device, sa, sb, inner_product) for _ in range(count)]

    def stack(p, k, perm):
        pieces = [ctx.emit(p, "reshape", [t[p][k]], "arith",
                           {"new_sizes": (1,) + tuple(t[p][k].type.shape)}) for t in parts]
        v = pieces[0] if count == 1 else ctx.emit(p, "concatenate", pieces, "arith",
                                                  {"dimension": 0})
        v = ctx.emit(p, "reshape", [v], "arith",
                     {"new_sizes": bshape + tuple(parts[0][p][k].type.shape)})
        if perm is None or tuple(perm) == tuple(range(len(perm))):
            return v
        return ctx.emit(p, "transpose", [v], "arith",
                        {"permutation": tuple(int(i) for i in np.argsort(perm))})
    return {p: (stack(p, 0, perms[0]), stack(p, 1, perms[1]), stack(p, 2, None))
            for p in (p0, p1)}


# ------------------------------------------------------------ truncation

def truncate(ctx, device, x, bits):
    """Shares of x / 2^bits without a dealer (see the module docstring for the proof)."""
    ring = ring_of(device)
    if bits > 64:  # the borrow's shares are mod 2^64 (trunc_wrap_finish)
        raise NotImplementedError(f"dealer-free (offline: he) truncation by {bits} > 64 bits "
                                  f"(MPC device {device.name})")
    p0, p1 = parties(device)
    shape = tuple(x[p0].type.shape)
    n = int(np.prod(shape, dtype=np.int64))
    words = (-(-n // 64),)

    def offline():
        # random bits alpha (P0), beta (P1); shares of alpha * beta by bit-OLE
        packed = {p: _own_random(ctx, p, words) for p in (p0, p1)}
        rbits = {p: ctx.emit(p, "bits_unpack", [packed[p]], "arith", {"shape": (n,)})
                 for p in (p0, p1)}
        return packed, rbits, _ot_pair(ctx, device, "ot.bit_ole", rbits[p0], rbits[p1],
                                       "arith", TRUNC_PAIR)
    ot_session(ctx, device)
    packed, rbits, t = _offline(ctx, offline)
    flat = {p: ctx.emit(p, "reshape", [x[p]], "arith", {"new_sizes": (n,)}) for p in (p0, p1)}
    # online: u0 = x0 + 2^(k-2) at P0, v1 = -x1 at P1; the borrow bit's factors, masked
    u = {p0: ctx.emit(p0, "add", [flat[p0], ring.const(ctx, p0, 1 << ring.trunc_offset)],
                      "arith"),
         p1: ctx.emit(p1, "neg", [flat[p1]], "arith")}
    top = {p: _msb(ctx, p, u[p], n) for p in (p0, p1)}
    top[p0] = ctx.emit(p0, "xor", [top[p0], u64(ctx, p0, 1)], "arith")  # NOT msb(u0)
    masked = {p: ctx.emit(p, "xor", [ctx.emit(p, "bits_pack", [top[p]], "arith"), packed[p]],
                          "masked") for p in (p0, p1)}
    got = {p1: ctx.xfer(masked[p0], p1, f"masked bit (NOT msb(x0 + 2^{ring.trunc_offset}) "
                                        "^ alpha) for truncation", "masked"),
           p0: ctx.xfer(masked[p1], p0, "masked bit (msb(-x1) ^ beta) for truncation",
                        "masked")}
    out = {}
    for p in (p0, p1):
        e_packed = masked[p0] if p == p0 else got[p]
        g_packed = got[p] if p == p0 else masked[p1]
        e = ctx.emit(p, "bits_unpack", [e_packed], "masked", {"shape": (n,)})
        g = ctx.emit(p, "bits_unpack", [g_packed], "masked", {"shape": (n,)})
        y = ctx.emit(p, "trunc_wrap_finish", [u[p], e, g, rbits[p], t[p]], "arith",
                     {"bits": bits, "first": p == p0})
        out[p] = ctx.emit(p, "reshape", [y], "arith", {"new_sizes": shape})
    return out


def _msb(ctx, party, u, n):
    """The top bit of each of the n ring elements u as u64 words (0/1)."""
    if u.type.dtype == "u64":
        return ctx.emit(party, "lshr", [u], "arith", {"bits": 63})
    words = ctx.emit(party, "ring_words", [u], "arith")
    high = ctx.emit(party, "slice", [words], "arith",
                    {"start": (0, 1), "limit": (n, 2), "strides": (1, 1)})
    return ctx.emit(party, "lshr", [high], "arith", {"bits": 63})


# ------------------------------------------------------------ B2A pairs

def b2a_pair(ctx, device, words, bit_shape):
    """({p: XOR share of random words r}, {p: additive shares of r's bits in the device's
    ring}) from bit-OLE."""
    ot_session(ctx, device)
    return _offline(ctx, _b2a_pair, ctx, device, words, bit_shape)


def _b2a_pair(ctx, device, words, bit_shape):
    p0, p1 = parties(device)
    rb = {p: _own_random(ctx, p, words, "bool") for p in (p0, p1)}
    n = int(np.prod(bit_shape, dtype=np.int64))
    bits = {p: ctx.emit(p, "bits_unpack", [rb[p]], "arith", {"shape": (n,)}) for p in (p0, p1)}
    ring = ring_of(device)
    t = _ot_pair(ctx, device, "ot.bit_ole", bits[p0], bits[p1], "arith", B2A_PAIR,
                 _ring_attr(ring))
    ra = {}
    for p in (p0, p1):
        twice = ctx.emit(p, "shl", [t[p]], "arith", {"bits": 1})
        mine = ring.widen(ctx, p, bits[p], "arith")
        ra[p] = ctx.emit(p, "reshape", [ctx.emit(p, "sub", [mine, twice], "arith")], "arith",
                         {"new_sizes": tuple(bit_shape)})
    return rb, ra


# ------------------------------------------------------------ declared costs

def elementwise_triple_cost(n, ring="arith", ring_bits=64):
    """Bytes of n elementwise triples (arith: an OLE in the device's ring each way;
    bool: n words)."""
    if ring == "bool":
        return Cost(n * AND_TRIPLE_WORD_BYTES, 1)
    return Cost(2 * n * (OLE128_BYTES if ring_bits == 128 else OLE_BYTES), OT_ROUNDS)


def truncation_cost(n):
    # offline: n bit-OLEs (mod 2^64 on either ring); online: one masked bit each way per
    # element
    return Cost(n * BIT_OLE_BYTES + 2 * 8 * -(-n // 64), OT_ROUNDS + 1)


def b2a_pair_cost(bits, ring_bits=64):
    return Cost(bits * (BIT_OLE128_BYTES if ring_bits == 128 else BIT_OLE_BYTES), OT_ROUNDS)


def matmul_triple_cost(op, attrs, shape_a, shape_b, ring_bits=64):
    """Both directions' Enc(X) and sanitised results of the cheaper orientation (HE with
    plaintext modulus 2^ring_bits)."""
    from ..runtime import he_mm_ops as h
    if op == "dot_general" and any(attrs["batch"]):
        bshape, _perms, (sa, sb), inner = _unbatched(attrs, shape_a, shape_b)
        one = matmul_triple_cost(op, inner, sa, sb, ring_bits)
        return Cost(one.bytes * int(np.prod(bshape, dtype=np.int64)), one.rounds)
    try:
        _xi, prod = matmul_orientation(op, attrs, shape_a, shape_b)
    except NotImplementedError:
        return Cost(10 ** 15, HE_ROUNDS)  # not available: never the cheaper choice
    plan = tuple(prod.plan(ring_bits))
    return Cost(2 * (h.input_bytes(plan) + sum(h.output_sizes(plan))), HE_ROUNDS)


# ------------------------------------------------------------ audit

def _runs(nodes, times=1):
    """(node, how many times it runs) for every node, those in loop bodies included: an
    OT call in a loop body runs once per iteration, and is counted so."""
    for n in nodes:
        yield n, times
        if n.body is not None:
            yield from _runs(n.body.nodes, times * int(n.attrs.get("trip_count", 1)))


def audit_lines(selected, final):
    """Trust lines: where each dealer-free MPC device's correlations come from."""
    devices = [d for d in selected.devices.values() if d.kind == "MPC" and dealer_free(d)]
    if not devices:
        return []
    ot_use = {}  # (what, pair) -> elements (words for AND triples), every iteration counted
    for n, times in _runs(final.nodes):
        if not n.op.startswith("ot.") or n.op == "ot.session":
            continue
        me, peer = n.results[0].type.place, n.attrs["peer"]
        if me > peer:  # count each two-party call once
            continue
        size = int(n.results[0].type.size)
        if n.op in ("ot.ole", "ot.and") and n.attrs["what"] in (ARITH_TRIPLE, AND_TRIPLE):
            size //= 2  # a broadcast triple takes two OLE calls
        key = (n.attrs["what"], (me, peer))
        ot_use[key] = ot_use.get(key, 0) + size * times
    keyed = set()  # parties whose key encrypts matmul-triple shares
    for n, _times in _runs(final.nodes):
        if n.op in ("send", "xfer") and MATMUL_TRIPLE in n.attrs.get("what", "") \
                and n.attrs["what"].startswith("HE ciphertext: Enc(") and " under " in n.attrs["what"]:
            keyed.add(n.operands[0].type.place)
    out = []
    for d in devices:
        a, b = d.parties
        src = []
        arith = ot_use.get((ARITH_TRIPLE, tuple(sorted((a, b)))), 0)
        if arith:
            over = "" if ring_of(d).bits == 64 else f" over Z_2^{ring_of(d).bits}"
            src.append(f"arithmetic triples: OT-based OLE{over} between {a} and {b} "
                       f"({arith} elements)")
        if keyed & {a, b}:
            keys = " and ".join(f"{p}'s key ({q} evaluates)" for p, q in ((a, b), (b, a))
                                if p in keyed)
            src.append(f"matmul triples: HE under each party's key -- {keys}; results masked "
                       "and sanitised before they return")
        ands = ot_use.get((AND_TRIPLE, tuple(sorted((a, b)))), 0)
        if ands:
            src.append(f"AND triples: OT (IKNP extension of Chou-Orlandi base OTs) between "
                       f"{a} and {b} ({ands} words of 64)")
        tr = ot_use.get((TRUNC_PAIR, tuple(sorted((a, b)))), 0)
        if tr:
            src.append(f"truncation: bit products by OT between {a} and {b} ({tr} elements), "
                       "then one round of masked bits")
        b2a = ot_use.get((B2A_PAIR, tuple(sorted((a, b)))), 0)
        if b2a:
            src.append(f"bit-conversion pairs: bit-OLE by OT between {a} and {b} ({b2a} bits)")
        if not src:
            src.append("none needed by this program")
        out.append(f"- correlated randomness for MPC device {d.name} (offline: he) is made by "
                   f"{a} and {b} themselves; no dealer: " + "; ".join(src))
    return out


def ot_message_lines(final):
    """Audit lines for the traffic inside ot.* ops (not ``send``/``recv`` nodes)."""
    calls = {}
    for n, times in _runs(final.nodes):
        if not n.op.startswith("ot."):
            continue
        me, peer = n.results[0].type.place, n.attrs["peer"]
        if me > peer:
            continue
        entry = calls.setdefault((me, peer), {})
        what = "base OTs (session setup)" if n.op == "ot.session" else n.attrs["what"]
        entry[what] = entry.get(what, 0) + times
    out = []
    for (a, b), whats in sorted(calls.items()):
        listed = ", ".join(f"{k} x{v}" for k, v in sorted(whats.items()))
        out.append(f"- {a} <-> {b}: OT subprotocol messages inside ot.* ops ({listed}): "
                   "Chou-Orlandi points, IKNP matrices (pseudorandom under the base OTs) and "
                   "corrections masked by hashes the receiver cannot invert")
    return out
