"""Two-party boolean (XOR) sharing, comparisons, and conversions with arith2pc.

A boolean-shared value is x = x0 XOR x1. Bool-dtype values are packed 64
elements to a u64 word (element k is bit k % 64 of word k // 64); integer
and float values keep one word per element (the bits of its ring encoding).
XOR, NOT and shifts are local; AND uses a dealer-made AND triple
(a, b, c = a AND b, PRG-seed compressed like arith2pc's Beaver triples).

- ``lt`` computes msb(a - b) with a log-depth carry tree: P0 holds
  x = (a - b)_0 and P1 holds y = (a - b)_1 as private words; the carry into
  bit 63 of x + y comes from combining (generate, propagate) pairs
  G = x AND y, P = x XOR y over 64 positions. Each level splits the packed
  bit stream into its even and odd bits (``bits_unzip``) and combines
  neighbours: G' = G_odd XOR (P_odd AND G_even), P' = P_odd AND P_even, so
  level k ANDs only n * 64 / 2^k bits. 6 levels + 1 AND round, then
  msb = x_63 XOR y_63 XOR carry. Exact whenever |a - b| < 2^63 in the ring.
  On a ``ring: 128`` device each element is its two words, low first (``ring_words``):
  one stream of 128 positions, 7 levels (only the top word's bit 63 is the
  identity); ``eq`` ANDs 128 bits; the radix-4 tree ends with one radix-2
  level (128 = 4^3 * 2).
- Full words on ``ring: 128``: a boolean-shared word is a u128 element, so
  moves, XOR, NOT, shifts and public masks are the same local ops; an AND
  gate on u128 words gates their two u64 words (``_and_gates_wide``) and
  rebuilds the u128 (``circuits.from_words``). A2B's adder has 7 levels,
  B2A opens both words and recombines 128 bits (each dealt bit a 16-byte
  ring element: 4x the 64-bit B2A's bytes), and rounding reads the low word
  and the sign (f + 1 <= 49 bits: the low word holds the fraction).
- ``eq`` is a zero test: x = (a - b)_0 and y = -(a - b)_1 are equal iff
  every bit of NOT(x XOR y) is 1, an AND tree over 64 bits (6 rounds).
- Conversions: a 0/1 arithmetic value becomes boolean locally (the low bit
  of x0 + x1 is x0_0 XOR x1_0). Boolean to arithmetic uses a dealer pair:
  random r with XOR shares and additive shares of each of r's bits; open
  c = x XOR r, then x = sum_i 2^i (c_i + r_i - 2 c_i r_i). Full words use
  the same with 64 (128) bits; A2B of full words is a Kogge-Stone adder.
- Rounding to integers is exact: ``floor`` clears the f fraction bits of
  the two's complement word (an AND with a public mask, local). ``round``
  and float -> int32 add to that floor (for int32, the word shifted right
  by f) a round-up bit lead AND (any of f other bits is 1) =
  lead XOR AND(lead, NOT each of them): for ``round`` the lead is the half
  bit, the others the lower fraction bits and bit f (ties to even: floor
  odd) or NOT the sign (ties away from zero: x >= 0); for int32 (toward
  zero) the lead is the sign and the others the fraction bits. One AND tree
  of ceil(log2(f + 1)) rounds over those bits, compacted per element; then
  floor and bit become arithmetic in one B2A round and are added. Of the
  floor (the word shifted right by f) only the bits the result keeps are
  converted: 32 for an int32 (the top one weighted -2^31), bits - f for a
  fixed-point result, which is shifted back left by f.
- On an ``offline: he`` device the same lowerings run as protocol
  ``bool2pc.ot``: AND triples and B2A pairs are made by the two parties by
  OT (``dealerfree``); the radix-4 variant needs dealt subset products and
  runs on dealer devices only.
"""
import itertools

import numpy as np

from ..passes.lower import DEALER
from . import Cost, register, register_public_sharing
from .circuits import (Family, add_words, and_tree, and_tree_words, bit_weights, carry_tree,
                       carry_tree_words, from_words, kept_bits, low_and_top_words, low_bits,
                       per_word, round_up_bit, tree_levels, word_stream)
from .common import Dealt, frac_bits, open_values, parties, two_party, u64
from .correlations import triple
from .dealerfree import b2a_pair, b2a_pair_cost, elementwise_triple_cost, only
from .ring import ring_of
from .shares import run_time_slice_rule, shares_of

PROTOCOL = "bool2pc"
PROTOCOL_RADIX4 = "bool2pc.radix4"
PROTOCOL_OT = "bool2pc.ot"  # the same on ``offline: he`` devices: no dealer (dealerfree.py)
WORD = 8
LOW63 = (1 << 63) - 1


def _device(ctx, value):
    return ctx.source.devices[value.type.place]


def _packed(dtype):
    return dtype == "bool"


def _words(n):
    return -(-n // 64)


# ------------------------------------------------------------ AND gates

_JOINED_WORDS = 1 << 14  # above it, joining gates only copies words: messages are few anyway


def and_gates(ctx, device, pairs):
    """Boolean shares of x AND y for each pair of shares, all in one round.

    Gates on flat words (the comparison circuits' packed bits) run as one gate on
    their concatenation: one triple and two openings in all instead of per gate, the
    same bytes in half the messages or fewer (for up to ``_JOINED_WORDS`` words).
    u128 words (a ``ring: 128`` device's) are gated as their two u64 words."""
    if any(x[p].type.dtype == "u128" for x, _ in pairs for p in x):
        return _and_gates_wide(ctx, device, pairs)
    if len(pairs) > 1 and all(len(x[p].type.shape) == 1 and x[p].type.shape == y[p].type.shape
                              for x, y in pairs for p in x) \
            and sum(next(iter(x.values())).type.size for x, _ in pairs) <= _JOINED_WORDS:
        return _split_words(ctx, and_gates(ctx, device, [(_concat_words(ctx, [x for x, _ in pairs]),
                                                          _concat_words(ctx, [y for _, y in pairs]))])[0],
                            [x for x, _ in pairs])
    p0, p1 = parties(device)

    def product(party, a, b, kind):
        return ctx.emit(party, "and", [a, b], kind)
    product.op, product.attrs = "and", {}
    triples = [triple(ctx, device, x[p0].type.shape, y[p0].type.shape, product, ring="bool")
               for x, y in pairs]
    openings = []
    for (x, y), t in zip(pairs, triples):
        openings.append(({p: ctx.emit(p, "xor", [x[p], t[p][0]], "masked") for p in (p0, p1)},
                         "masked bits (x ^ a)"))
        openings.append(({p: ctx.emit(p, "xor", [y[p], t[p][1]], "masked") for p in (p0, p1)},
                         "masked bits (y ^ b)"))
    opened = open_values(ctx, device, *openings, ring="bool")
    out = []
    for i, t in enumerate(triples):
        e, f = opened[2 * i], opened[2 * i + 1]
        # z = c ^ (e & b) ^ (f & a) (^ e & f at P0)
        out.append({p: ctx.emit(p, "and_finish", [t[p][2], e[p], f[p], t[p][0], t[p][1]], "bool",
                                {"first": p == p0}) for p in (p0, p1)})
    return out


def _and_gates_wide(ctx, device, pairs):
    """``and_gates`` on pairs of which some hold u128 words: those go through the u64 gate
    as the flat stream of their words (``ring_words``) and come back as u128."""
    def as_words(shares):
        if next(iter(shares.values())).type.dtype != "u128":
            return shares
        return {p: word_stream(ctx, p, s) for p, s in shares.items()}
    products = and_gates(ctx, device, [(as_words(x), as_words(y)) for x, y in pairs])
    out = []
    for (x, _), z in zip(pairs, products):
        like = next(iter(x.values())).type
        if like.dtype == "u128":
            z = {p: ctx.emit(p, "reshape", [from_words(ctx, p, ctx.emit(
                     p, "reshape", [s], "bool", {"new_sizes": (like.size, 2)}))], "bool",
                             {"new_sizes": tuple(like.shape)}) for p, s in z.items()}
        out.append(z)
    return out


def _xor_public(ctx, device, shares, word):
    """shares ^ word (a public u64): P0's share alone changes."""
    p0 = parties(device)[0]
    return {p: ctx.emit(p, "xor", [s, u64(ctx, p, word)], "bool") if p == p0 else s
            for p, s in shares.items()}


TWO_PARTY = Family("2pc", and_gates, pieces=lambda share: [share], build=lambda pieces: pieces[0],
                   xor_public=_xor_public)


def _concat_words(ctx, values):
    """Each party's flat words of ``values``, one after another."""
    return {p: ctx.emit(p, "concatenate", [v[p] for v in values], values[0][p].type.kind,
                        {"dimension": 0}) for p in values[0]}


def _split_words(ctx, joined, like):
    """``joined`` cut back into pieces as long as each of ``like``."""
    out, start = [], 0
    for v in like:
        n = next(iter(v.values())).type.shape[0]
        out.append({p: ctx.emit(p, "slice", [s], s.type.kind, {"start": (start,), "limit": (start + n,),
                                                               "strides": (1,)})
                    for p, s in joined.items()})
        start += n
    return out


def _unzip(ctx, shares):
    """Each party's (even, odd) halves of its packed bit stream."""
    even, odd = {}, {}
    for p, s in shares.items():
        even[p], odd[p] = ctx.emit_many(p, "bits_unzip", [s],
                                        [s.type.with_(shape=(-(-s.type.shape[0] // 2),))] * 2, {})
    return even, odd


def _xor(ctx, x, y):
    return {p: ctx.emit(p, "xor", [x[p], y[p]], "bool") for p in x}


def _flat(ctx, shares):
    return {p: ctx.emit(p, "reshape", [s], s.type.kind, {"new_sizes": (s.type.size,)})
            for p, s in shares.items()}


# ------------------------------------------------------------ comparisons

def _carry_inputs(ctx, device, d):
    """The words holding each element's top bit, and the (generate, propagate) words of
    x + y for the carry into it (bit 63 of the top word)."""
    if ring_of(device).words > 1:
        return _carry_inputs_wide(ctx, device, d)
    p0, p1 = parties(device)
    d = _flat(ctx, d)
    low = {p: ctx.emit(p, "and", [d[p], u64(ctx, p, LOW63)], "plain") for p in (p0, p1)}
    zeros = {p: ctx.emit(p, "xor", [low[p], low[p]], "bool") for p in (p0, p1)}
    # x's share is (x, 0) and y's is (0, y): each party knows its own operand.
    (g,) = and_gates(ctx, device, [({p0: low[p0], p1: zeros[p1]}, {p0: zeros[p0], p1: low[p1]})])
    # Position 63 is the identity of the combine (G=0, P=1), so 64 positions reduce evenly.
    prop = {p0: ctx.emit(p0, "or", [low[p0], u64(ctx, p0, 1 << 63)], "bool"), p1: low[p1]}
    return d, g, prop


def _element_words(ctx, device, d):
    """Each party's flattened shares of a wide ring as u64 words, shape (n, words)."""
    return {p: ctx.emit(p, "ring_words", [s], s.type.kind) for p, s in _flat(ctx, d).items()}


def _carry_inputs_wide(ctx, device, d):
    """``_carry_inputs`` on a ring of several words per element: an element's words, low
    first, are one stream of ring.bits carry positions; the top word's bit 63 is the
    identity of the combine (G=0, P=1), every other position is x's and y's bits."""
    p0, p1 = parties(device)
    w = ring_of(device).words
    words = _element_words(ctx, device, d)
    n = words[p0].type.shape[0]
    flat = {p: ctx.emit(p, "reshape", [s], "plain", {"new_sizes": (n * w,)})
            for p, s in words.items()}
    keep = [(1 << 64) - 1] * (w - 1) + [LOW63]
    low = {p: ctx.emit(p, "and", [flat[p], per_word(ctx, p, keep, n, "public")], "plain")
           for p in (p0, p1)}
    zeros = {p: ctx.emit(p, "xor", [low[p], low[p]], "bool") for p in (p0, p1)}
    (g,) = and_gates(ctx, device, [({p0: low[p0], p1: zeros[p1]}, {p0: zeros[p0], p1: low[p1]})])
    identity = per_word(ctx, p0, [0] * (w - 1) + [1 << 63], n, "public")
    prop = {p0: ctx.emit(p0, "or", [low[p0], identity], "bool"), p1: low[p1]}
    top = {p: ctx.emit(p, "slice", [s], "plain", {"start": (0, w - 1), "limit": (n, w),
                                                  "strides": (1, 1)})
           for p, s in words.items()}
    return _flat(ctx, top), g, prop


def _with_top_bits(ctx, d, carry):
    """msb = x_63 ^ y_63 ^ carry into bit 63, packed."""
    top = {p: ctx.emit(p, "bits_pack", [ctx.emit(p, "lshr", [s], "plain", {"bits": 63})], "bool")
           for p, s in d.items()}
    return _xor(ctx, top, carry)


def msb_bits(ctx, device, d):
    """Packed boolean shares of msb(d) for arithmetic shares d (any shape, flattened)."""
    d, g, prop = _carry_inputs(ctx, device, d)
    levels = ring_of(device).bits.bit_length() - 1  # log2 of the carry positions
    return _with_top_bits(ctx, d, carry_tree(ctx, device, TWO_PARTY, g, prop, levels))


def multi_and(ctx, device, inputs, products):
    """Shares of the AND of each listed subset of ``inputs``, all in one round.

    The dealer masks every input (a_i) and deals shares of the AND of every
    subset T of a product with |T| >= 2. With the opened e_i = x_i ^ a_i,
    AND_{i in S} x_i = XOR_{T subset of S} (AND_{i in S-T} e_i) & a_T, where
    a_T is a share for |T| >= 2, the mask a_i for |T| = 1, and 1 (at P0) for
    the empty T. One round for any fan-in, paid for in dealt words."""
    p0, p1 = parties(device)
    shape = inputs[0][p0].type.shape
    subsets = sorted({t for s in products for k in range(2, len(s) + 1)
                      for t in itertools.combinations(s, k)})
    dealt = Dealt(ctx, device, [f"a{i}" for i in range(len(inputs))] + [str(t) for t in subsets])
    masks = {i: ctx.emit(DEALER, "xor", [dealt.draw(DEALER, p0, f"a{i}", shape, words=True),
                                         dealt.draw(DEALER, p1, f"a{i}", shape, words=True)], "plain")
             for i in range(len(inputs))}
    shares = {(p, (i,)): dealt.draw(p, p, f"a{i}", shape, words=True)
              for p in (p0, p1) for i in range(len(inputs))}
    for t in subsets:
        product = masks[t[0]]
        for i in t[1:]:
            product = ctx.emit(DEALER, "and", [product, masks[i]], "plain")
        correction = ctx.emit(DEALER, "xor", [product, dealt.draw(DEALER, p0, str(t), shape, words=True)], "bool")
        shares[(p0, t)] = dealt.draw(p0, p0, str(t), shape, words=True)
        shares[(p1, t)] = ctx.xfer(correction, p1, "AND tuple correction", "bool")
    opened = open_values(ctx, device, *[
        ({p: ctx.emit(p, "xor", [x[p], shares[(p, (i,))]], "masked") for p in (p0, p1)},
         "masked bits (x ^ a)") for i, x in enumerate(inputs)], ring="bool")
    out = []
    for s in products:
        z = {}
        for p in (p0, p1):
            acc = None
            for k in range(len(s) + 1):
                for t in itertools.combinations(s, k):
                    public = [opened[i][p] for i in s if i not in t]
                    if not t and p != p0:
                        continue
                    term = shares[(p, t)] if t else None
                    for e in public:
                        term = e if term is None else ctx.emit(p, "and", [term, e], "bool")
                    acc = term if acc is None else ctx.emit(p, "xor", [acc, term], "bool")
            z[p] = acc
        out.append(z)
    return out


def msb_bits_radix4(ctx, device, d):
    """msb(d) like ``msb_bits``, but each level combines four positions with one-round
    multi-input ANDs: 3 levels instead of 6, more dealt words. The 128 positions of a
    ``ring: 128`` element leave two after those 3 levels: one radix-2 level ends it."""
    d, g, prop = _carry_inputs(ctx, device, d)
    radix2 = ring_of(device).bits == 128
    for level in range(3):
        (g0, g2), (g1, g3) = (_unzip(ctx, half) for half in _unzip(ctx, g))
        (p0_, p2_), (p1_, p3_) = (_unzip(ctx, half) for half in _unzip(ctx, prop))
        last = level == 2 and not radix2
        # G' = G3 ^ P3 G2 ^ P3 P2 G1 ^ P3 P2 P1 G0;  P' = P3 P2 P1 P0
        inputs = [p3_, p2_, p1_, p0_, g2, g1, g0]
        products = [(0, 4), (0, 1, 5), (0, 1, 2, 6)] + ([] if last else [(0, 1, 2, 3)])
        terms = multi_and(ctx, device, inputs, products)
        g = g3
        for term in terms[:3]:
            g = _xor(ctx, g, term)
        if not last:
            prop = terms[3]
    if radix2:
        g = carry_tree(ctx, device, TWO_PARTY, g, prop, 1)
    return _with_top_bits(ctx, d, g)


def zero_bits(ctx, device, d):
    """Packed boolean shares of (d == 0) for arithmetic shares d."""
    p0, p1 = parties(device)
    ring = ring_of(device)
    d = _flat(ctx, d)
    # d0 + d1 == 0 iff d0 == -d1 iff NOT(d0 XOR -d1) is all ones
    z = {p0: ctx.emit(p0, "not", [d[p0]], "bool"), p1: ctx.emit(p1, "neg", [d[p1]], "bool")}
    if ring.words > 1:  # an element's words, one after another: one stream of ring.bits bits
        z = {p: ctx.emit(p, "reshape", [w], "bool", {"new_sizes": (w.type.size,)})
             for p, w in _element_words(ctx, device, z).items()}
    return and_tree(ctx, device, TWO_PARTY, z, ring.bits.bit_length() - 1)


def _compare_with(circuit):
    def lower(ctx, node):
        device = _device(ctx, node.result)
        p0, p1 = parties(device)
        a, b = (shares_of(ctx, v, device) for v in node.operands)
        d = {p: ctx.emit(p, "sub", [a[p], b[p]], "arith") for p in (p0, p1)}
        ctx.parts[node.result] = circuit(ctx, device, d)
    return lower


def _and_cost(words):
    # dealer's c1, then each party opens two masked words per gate word
    return WORD * words * 5


# party-local ops of one comparison circuit, all parties together (whatever its width:
# the ops work on packed words); counted from the lowered programs
_LT_OPS, _LT_RADIX4_OPS = 480, 1350


def _operand_ring(node, module):
    return ring_of(module.devices[node.operands[0].type.place])


def _ring_words(node, module):
    """u64 words per element of the operands' ring: the circuits' inputs per element."""
    return _operand_ring(node, module).words


def _tree(node, module):
    """(u64 words of the operands' bits, carry-tree levels): a 128-bit ring has twice the
    words and one more level."""
    words = _ring_words(node, module)
    return node.operands[0].type.size * words, 5 + words


def _lt_cost(node, module):
    n, levels = _tree(node, module)
    return Cost(_and_cost(carry_tree_words(n, levels)), levels + 1, _LT_OPS)


# dealer-free (``offline: he``, protocol ``bool2pc.ot``): AND triples by OT, one offline
# round per AND layer (see dealerfree)

def _and_cost_ot(words, layers):
    return elementwise_triple_cost(words, "bool") + Cost(WORD * words * 4, layers) \
        + Cost(0, layers - 1)


def _lt_cost_ot(node, module):
    n, levels = _tree(node, module)
    return _and_cost_ot(carry_tree_words(n, levels), levels + 1)


# per 4-to-1 level: 7 inputs opened by both parties, and the dealt subset products
_R4_SUBSETS = {3: 15, 4: 22}  # distinct subsets of size >= 2 (last level has no P')


def _lt_radix4_cost(node, module):
    """The generate gate, 3 radix-4 levels (a 128-bit ring: twice the words, and one
    radix-2 level on the two positions left per element)."""
    n = node.operands[0].type.size * _ring_words(node, module)
    radix2 = _ring_words(node, module) > 1
    words = _and_cost(n)
    for level in range(3):
        group_words = -(-n // 4 ** (level + 1))
        products = 3 if level == 2 and not radix2 else 4
        words += WORD * group_words * (2 * 7 + _R4_SUBSETS[products])
    if radix2:
        words += _and_cost(-(-n // 128))
    return Cost(words, 4 + radix2, _LT_RADIX4_OPS)


def _eq_cost(node, module):
    n, levels = _tree(node, module)
    return Cost(_and_cost(and_tree_words(n, levels)), levels)


def _eq_cost_ot(node, module):
    n, levels = _tree(node, module)
    return _and_cost_ot(and_tree_words(n, levels), levels)


# ------------------------------------------------------------ logic on bool shares

def bool_shares_of(ctx, value, device, shape=None):
    """Boolean shares of a bool-kind or public value (public: P0 holds it, P1 zeros).

    ``shape``: the elementwise result's shape. A public bool scalar beside a
    larger operand is broadcast to it before packing: packed, the scalar
    would be one bit, not one per element."""
    if value.type.kind == "bool":
        return ctx.parts[value]
    p0, p1 = parties(device)
    plain = ctx.parts[value][p0]
    if shape is not None and tuple(value.type.shape) != tuple(shape):
        plain = ctx.emit(p0, "broadcast_in_dim", [plain], "public",
                         {"shape": tuple(shape), "broadcast_dimensions": ()})
    if _packed(value.type.dtype):
        mine = ctx.emit(p0, "bits_pack", [plain], "public")
    else:
        mine = ring_of(device).encode(ctx, p0, plain, frac_bits(device, value.type.dtype),
                                      "public")
    return {p0: mine, p1: _zero_like(ctx, device, p1, mine)}


def _zero_like(ctx, device, party, like):
    zero = ring_of(device).const(ctx, party, 0) if like.type.dtype == "u128" \
        else u64(ctx, party, 0)
    return ctx.emit(party, "broadcast_in_dim", [zero], "bool",
                    {"shape": tuple(like.type.shape), "broadcast_dimensions": ()})


def _lower_logic(ctx, node):
    device = _device(ctx, node.result)
    p0, p1 = parties(device)
    xs = [bool_shares_of(ctx, v, device, node.result.type.shape) for v in node.operands]
    if node.op == "xor":
        out = _xor(ctx, *xs)
    elif node.op == "not":
        (x,) = xs
        out = {p0: ctx.emit(p0, "not", [x[p0]], "bool"), p1: x[p1]}
    elif node.op == "and":
        (out,) = and_gates(ctx, device, [tuple(xs)])
    else:  # or: x | y = x ^ y ^ (x & y)
        (both,) = and_gates(ctx, device, [tuple(xs)])
        out = _xor(ctx, _xor(ctx, *xs), both)
    ctx.parts[node.result] = out


def _gate_words(node, module):
    """u64 words an AND of the result's shape gates: packed bits, or full ring words."""
    t = node.result.type
    return _words(t.size) if _packed(t.dtype) else t.size * ring_of(module.devices[t.place]).words


def _logic_cost(node, module):
    if node.op in ("and", "or"):
        return Cost(_and_cost(_gate_words(node, module)), 1)
    return Cost()


def _logic_cost_ot(node, module):
    if node.op in ("and", "or"):
        return _and_cost_ot(_gate_words(node, module), 1)
    return Cost()


def _lower_shift(ctx, node):
    """Shifts are local on XOR shares. An i32 lives sign-extended in a ring word (64 or
    128 bits), so a left shift re-extends bit 31 and a logical right shift first drops
    the extension."""
    (x,) = node.operands
    k = node.attrs["bits"]
    ext = ring_of(_device(ctx, x)).bits - 32
    steps = {"ashr": [("ashr", k)],
             "shl": [("shl", ext + k), ("ashr", ext)],
             "lshr": [("shl", ext), ("lshr", ext + k)]}[node.op]
    out = {}
    for p, s in ctx.parts[x].items():
        for op, bits in steps:
            s = ctx.emit(p, op, [s], "bool", {"bits": bits})
        out[p] = s
    ctx.parts[node.result] = out


def _lower_structural(ctx, node):
    """Structural ops are local: each party moves its share's elements -- whole words
    for int and fixed-point values; bits, unpacked then packed again, for bools."""
    device = _device(ctx, node.result)
    attrs = {k: v for k, v in node.attrs.items() if k != "protocol"}
    xs = [bool_shares_of(ctx, v, device) for v in node.operands]
    packed = _packed(node.result.type.dtype)
    out = {}
    for p in parties(device):
        elems = [ctx.emit(p, "bits_unpack", [x[p]], "bool", {"shape": tuple(v.type.shape)})
                 if packed else x[p] for x, v in zip(xs, node.operands)]
        moved = ctx.emit(p, node.op, elems, "bool", attrs)
        out[p] = ctx.emit(p, "bits_pack", [moved], "bool") if packed else moved
    ctx.parts[node.result] = out


# ------------------------------------------------------------ conversions

def _lower_a2b(ctx, node):
    (x,) = node.operands
    device = _device(ctx, x)
    if _packed(x.type.dtype):
        # 0/1 values: the low bit of x0 + x1 is x0_0 ^ x1_0 (bit 0 of the low u64 word)
        ctx.parts[node.result] = {p: ctx.emit(p, "bits_pack", [low_and_top_words(ctx, p, s)[0]],
                                              "bool")
                                  for p, s in _flat(ctx, ctx.parts[x]).items()}
    else:
        ctx.parts[node.result] = _adder(ctx, device, ctx.parts[x], x.type.shape)


def _adder(ctx, device, shares, shape):
    """Kogge-Stone: boolean shares of x0 + x1 from private words x0 (P0) and x1 (P1)."""
    p0, p1 = parties(device)
    zeros = {p: ctx.emit(p, "xor", [shares[p], shares[p]], "bool") for p in (p0, p1)}
    x = {p0: shares[p0], p1: zeros[p1]}
    y = {p0: zeros[p0], p1: shares[p1]}
    return add_words(ctx, device, TWO_PARTY, x, y)


def _lower_b2a(ctx, node):
    (x,) = node.operands
    (ctx.parts[node.result],) = to_arith(ctx, _device(ctx, x),
                                         [(ctx.parts[x], x.type.shape, _packed(x.type.dtype))])


def to_arith(ctx, device, values):
    """Arithmetic shares of each (boolean shares, shape, packed) value, all opened in one
    round: a random r held both ways masks x, c = x ^ r is opened, and
    x = sum_i 2^i (c_i + r_i (1 - 2 c_i)) from the additive shares of r's bits."""
    p0, p1 = parties(device)
    ring = ring_of(device)
    pending, openings = [], []
    for shares, shape, packed in values:
        n = int(np.prod(shape, dtype=np.int64))
        words = (_words(n),) if packed else (n * ring.words,)
        bit_shape = (n,) if packed else (n, ring.bits)
        rb, ra = _b2a_pair(ctx, device, words, bit_shape)
        # full words are masked one per element (u128: its two words): flatten them to
        # the dealt words' shape
        shares = shares if packed else {p: word_stream(ctx, p, s) for p, s in shares.items()}
        openings.append(({p: ctx.emit(p, "xor", [shares[p], rb[p]], "masked") for p in (p0, p1)},
                         "masked bits (x ^ r)"))
        pending.append((shape, n, packed, bit_shape, ra))
    opened = open_values(ctx, device, *openings, ring="bool")
    results = []
    for c, (shape, n, packed, bit_shape, ra) in zip(opened, pending):
        out = {}
        for p in (p0, p1):
            c_bits = ring.widen(ctx, p, ctx.emit(p, "bits_unpack", [c[p]], "masked",
                                                 {"shape": bit_shape}), "masked")
            flip = ctx.emit(p, "sub", [ring.const(ctx, p, 1),
                                       ctx.emit(p, "shl", [c_bits], "masked", {"bits": 1})],
                            "masked")
            term = ctx.emit(p, "mul", [ra[p], flip], "arith")
            if packed:
                opened_bits = c_bits
            else:
                term = ctx.emit(p, "dot_general", [term, ctx.const(p, bit_weights(ring.bits))],
                                "arith", {"contract": ((1,), (0,)), "batch": ((), ())})
                opened_bits = ctx.emit(p, "reshape", [c[p]], "masked",
                                       {"new_sizes": (n,) + ((2,) if ring.words > 1 else ())})
                if ring.words > 1:
                    opened_bits = from_words(ctx, p, opened_bits, "masked")
            value = ctx.emit(p, "add", [term, opened_bits], "arith") if p == p0 else term
            out[p] = ctx.emit(p, "reshape", [value], "arith", {"new_sizes": tuple(shape)})
        results.append(out)
    return results


def _b2a_pair(ctx, device, words, bit_shape):
    """Random r: ({p: XOR share of r's words}, {p: additive shares of r's bits}).
    From the dealer (P1 gets a correction), or by bit-OLE on ``offline: he`` devices."""
    if device.offline == "he":
        return b2a_pair(ctx, device, words, bit_shape)
    p0, p1 = parties(device)
    dealt = Dealt(ctx, device, ("rb", "ra"))
    # dealer: r = rb0 ^ rb1, additive shares of each of r's bits; P1 gets a correction
    r = ctx.emit(DEALER, "xor", [dealt.draw(DEALER, p0, "rb", words, words=True),
                                 dealt.draw(DEALER, p1, "rb", words, words=True)], "plain")
    r_bits = ring_of(device).widen(
        ctx, DEALER, ctx.emit(DEALER, "bits_unpack", [r], "plain", {"shape": bit_shape}), "plain")
    ra1 = ctx.emit(DEALER, "sub", [r_bits, dealt.draw(DEALER, p0, "ra", bit_shape)], "arith")
    ra = {p0: dealt.draw(p0, p0, "ra", bit_shape),
          p1: ctx.xfer(ra1, p1, "bit-conversion pair correction", "arith")}
    return {p: dealt.draw(p, p, "rb", words, words=True) for p in (p0, p1)}, ra


def _a2b_gates(node, module):
    """u64 words ANDed and AND rounds of the Kogge-Stone adder on the operand's words: the
    first generate, two gates per level at shifts 1 .. bits/4, one at shift bits/2."""
    ring = _operand_ring(node, module)
    levels = ring.bits.bit_length() - 1
    return node.operands[0].type.size * ring.words * (2 * levels), 1 + levels


def _a2b_cost(node, module):
    if _packed(node.operands[0].type.dtype):
        return Cost()
    words, rounds = _a2b_gates(node, module)
    return Cost(_and_cost(words), rounds)


def _to_arith_cost(sizes, dealer_free, ring):
    """Bytes and rounds of ``to_arith`` on values of the given (element count, packed)."""
    opened = sum(_words(n) if packed else n * ring.words for n, packed in sizes)  # each party
    bits = [n if packed else ring.bits * n for n, packed in sizes]  # of the pairs' r
    if dealer_free:
        return sum((b2a_pair_cost(b, ring.bits) for b in bits), Cost()) + Cost(WORD * 2 * opened, 1)
    # the dealer sends P1 one correction ring element per bit of r
    return Cost(ring.bytes * sum(bits) + WORD * 2 * opened, 1)


def _b2a_cost(node, module):
    t = node.operands[0].type
    return _to_arith_cost([(t.size, _packed(t.dtype))], False, _operand_ring(node, module))


def _a2b_cost_ot(node, module):
    if _packed(node.operands[0].type.dtype):
        return Cost()
    return _and_cost_ot(*_a2b_gates(node, module))


def _b2a_cost_ot(node, module):
    t = node.operands[0].type
    return _to_arith_cost([(t.size, _packed(t.dtype))], True, _operand_ring(node, module))


# ------------------------------------------------------------ rounding to integers

def _floor_shares(ctx, device, shares, f):
    """floor clears the fraction bits of the two's complement word: an AND with a public
    mask, which each party applies to its own XOR share."""
    ring = ring_of(device)
    return {p: ctx.emit(p, "and", [s, ring.const(ctx, p, ~((1 << f) - 1))], "bool")
            for p, s in shares.items()}


def _lower_floor(ctx, node):
    """``floor`` of a boolean-shared float: local (see ``_floor_shares``)."""
    (x,) = node.operands
    f = frac_bits(_device(ctx, x), x.type.dtype)
    ctx.parts[node.result] = _floor_shares(ctx, _device(ctx, x), ctx.parts[x], f)


def _lower_round_to_integer(ctx, node):
    """``round`` (ties by its rounding_method) and float -> int32 (toward zero, as JAX):
    floor(x) on the XOR shares plus a round-up bit from one AND tree, both made arithmetic
    in one round and added there (an add on XOR shares would need a carry chain). floor(x)
    is the word shifted right by f, of which only the bits the result keeps are converted
    (``circuits.kept_bits``); a fixed-point result is shifted back by f at the end."""
    (x,) = node.operands
    device = _device(ctx, x)
    ring = ring_of(device)
    f = frac_bits(device, x.type.dtype)
    n, shape = x.type.size, tuple(x.type.shape)
    to_int = node.op == "convert_element_type"
    flat = _flat(ctx, ctx.parts[x])
    up = round_up_bit(ctx, device, TWO_PARTY, flat,
                      "trunc" if to_int else node.attrs["rounding_method"], f)
    count, signed = kept_bits(to_int, ring.bits, f)
    floor_bits = {p: ctx.emit(p, "bits_pack", [low_bits(ctx, p, ctx.emit(
        p, "ashr", [s], "bool", {"bits": f}), n, count)], "bool") for p, s in flat.items()}
    down, up = to_arith(ctx, device, [(floor_bits, (n * count,), True), (up, shape, True)])
    out = {}
    for p in down:
        bits = ctx.emit(p, "reshape", [down[p]], "arith", {"new_sizes": (n, count)})
        value = ctx.emit(p, "dot_general", [bits, ctx.const(p, bit_weights(ring.bits, count,
                                                                           signed))],
                         "arith", {"contract": ((1,), (0,)), "batch": ((), ())})
        value = ctx.emit(p, "add", [ctx.emit(p, "reshape", [value], "arith",
                                             {"new_sizes": shape}), up[p]], "arith")
        # a fixed-point result: floor(x) + the bit are integers, 2^f units each
        out[p] = value if to_int else ctx.emit(p, "shl", [value], "arith", {"bits": f})
    ctx.parts[node.result] = out


def _round_up_tree_words(n, f):
    """Words ANDed at each level of the round-up bit's tree over n elements."""
    words, out = _words(n << tree_levels(f)), []
    for _ in range(tree_levels(f)):
        words = -(-words // 2)
        out.append(words)
    return out


def _rounding_cost(node, module, dealer_free=False):
    """``round`` or float -> int32: the round-up bit's AND tree, then B2A of the bit and of
    the bits of floor(x) that the result keeps."""
    t, ring = node.operands[0].type, _operand_ring(node, module)
    f = frac_bits(module.devices[t.place], t.dtype)
    levels = _round_up_tree_words(t.size, f)
    tree = (_and_cost_ot(sum(levels), len(levels)) if dealer_free
            else Cost(_and_cost(sum(levels)), len(levels)))
    count, _ = kept_bits(node.op == "convert_element_type", ring.bits, f)
    return tree + _to_arith_cost([(t.size * count, True), (t.size, True)], dealer_free, ring)


def _rounding_cost_ot(node, module):
    """``_rounding_cost`` with AND triples by OT and B2A pairs by bit-OLE."""
    return _rounding_cost(node, module, dealer_free=True)


def _lower_reveal(ctx, node):
    (x,) = node.operands
    device = _device(ctx, x)
    (dst,) = ctx.device_of(node.result).parties
    received = [s if p == dst else ctx.xfer(s, dst, "boolean share (reveal)", "bool")
                for p, s in ctx.parts[x].items()]
    total = ctx.emit(dst, "xor", received, "plain")
    if _packed(x.type.dtype):
        total = ctx.emit(dst, "bits_unpack", [total], "plain", {"shape": tuple(x.type.shape)})
    ctx.parts[node.result] = {dst: ctx.emit(dst, "decode", [total], "plain",
                                            {"frac_bits": frac_bits(device, x.type.dtype),
                                             "dtype": x.type.dtype})}


def _reveal_cost(node, module):
    t = node.operands[0].type
    (dst,) = module.devices[node.result.type.place].parties
    senders = sum(1 for p in module.devices[t.place].parties if p != dst)
    return Cost(senders * WORD * (_words(t.size) if _packed(t.dtype) else t.size), 1)


# ------------------------------------------------------------ registration

def _arith_operands(kinds, node, module):
    return "arith" in kinds and all(k in ("arith", "public") for k in kinds) \
        and two_party(node, module)


def _bool_operands(kinds, node, module):
    return "bool" in kinds and all(k in ("bool", "public") for k in kinds) \
        and two_party(node, module)


def _rules(op, accepts, result_kind, cost, cost_ot, lower, wants, doc, doc_ot):
    """An op that consumes correlations: ``bool2pc`` on dealer devices, ``bool2pc.ot``
    (same lowering, AND triples and B2A pairs by OT between the two parties) on
    ``offline: he`` devices."""
    register(PROTOCOL, op, device="MPC", accepts=only("dealer", accepts),
             result_kind=result_kind, cost=cost, lower=lower, wants=wants, doc=doc)
    register(PROTOCOL_OT, op, device="MPC", accepts=only("he", accepts),
             result_kind=result_kind, cost=cost_ot, lower=lower, wants=wants, doc=doc_ot)


def _dealer_only(accepts):
    return only("dealer", accepts)


_rules("lt", _arith_operands, "bool", _lt_cost, _lt_cost_ot, _compare_with(msb_bits), "arith",
       "msb of the difference: radix-2 carry tree, 7 rounds",
       "msb of the difference: radix-2 carry tree, 7 rounds; AND triples by OT")
# radix-4 multi-ANDs need dealt subset products: dealer devices only
register(PROTOCOL_RADIX4, "lt", device="MPC", accepts=_dealer_only(_arith_operands),
         result_kind="bool", cost=_lt_radix4_cost, lower=_compare_with(msb_bits_radix4),
         wants="arith",
         doc="msb of the difference: radix-4 carry tree of one-round multi-ANDs, 4 rounds")
_rules("eq", _arith_operands, "bool", _eq_cost, _eq_cost_ot, _compare_with(zero_bits), "arith",
       "zero test of the difference: AND tree, 6 rounds",
       "zero test of the difference: AND tree, 6 rounds; AND triples by OT")
for _op in ("and", "or"):
    _rules(_op, _bool_operands, "bool", _logic_cost, _logic_cost_ot, _lower_logic, "bool",
           "AND from dealer AND triples", "AND from AND triples by OT")
for _op in ("xor", "not"):
    register(PROTOCOL, _op, device="MPC", accepts=_bool_operands, result_kind="bool",
             cost=_logic_cost, lower=_lower_logic, wants="bool", doc="local on XOR shares")
def _int_words(kinds, node, module):
    return _bool_operands(kinds, node, module) and node.result.type.dtype == "i32"


for _op in ("shl", "lshr", "ashr"):
    register(PROTOCOL, _op, device="MPC", accepts=_int_words, result_kind="bool",
             cost=lambda n, m: Cost(), lower=_lower_shift, wants="bool", doc="local")
for _op in ("broadcast_in_dim", "reshape", "transpose", "squeeze", "slice", "concatenate",
            "take"):
    register(PROTOCOL, _op, device="MPC", accepts=_bool_operands, result_kind="bool",
             cost=lambda n, m: Cost(), lower=_lower_structural, wants="bool",
             doc="local: unpack, move, pack")
register(PROTOCOL, "reveal", device="PYU",
         accepts=lambda k, n, m: k == ("bool",) and two_party(n, m), result_kind="plain",
         cost=_reveal_cost, lower=_lower_reveal, wants="bool",
         doc="open to one party: the others send it their boolean shares")
_rules("a2b", lambda k, n, m: k == ("arith",) and two_party(n, m), "bool", _a2b_cost,
       _a2b_cost_ot, _lower_a2b, "arith",
       "bits: local (low bit of the shares); words: Kogge-Stone adder",
       "bits: local (low bit of the shares); words: Kogge-Stone adder, AND triples by OT")
_rules("b2a", lambda k, n, m: k == ("bool",) and two_party(n, m), "arith", _b2a_cost,
       _b2a_cost_ot, _lower_b2a, "bool",
       "dealer pair: open x ^ r, recombine with shares of r's bits",
       "pair by bit-OLE (OT): open x ^ r, recombine with shares of r's bits")


def _float_operand(kinds, node, module):
    """A boolean-shared float32 on a 2-party device: what rounding reads."""
    return kinds == ("bool",) and node.operands[0].type.dtype == "f32" and two_party(node, module)


def _float_to_int(kinds, node, module):
    """A float32 -> int32 cast of a boolean-shared value."""
    return _float_operand(kinds, node, module) and node.attrs["new_dtype"] == "i32"


register(PROTOCOL, "floor", device="MPC", accepts=_float_operand, result_kind="bool",
         cost=lambda n, m: Cost(), lower=_lower_floor, wants="bool",
         doc="local: each party clears the fraction bits of its XOR share")
_rules("round", _float_operand, "arith", _rounding_cost, _rounding_cost_ot,
       _lower_round_to_integer, "bool",
       "floor plus a round-up bit from an AND tree (log2(f+1) rounds); B2A of both, 1 round",
       "floor plus a round-up bit from an AND tree, AND triples by OT; B2A pairs by bit-OLE")
_rules("convert_element_type", _float_to_int, "arith", _rounding_cost, _rounding_cost_ot,
       _lower_round_to_integer, "bool",
       "toward zero: shifted floor plus a round-up bit (x < 0, fraction != 0) from an AND "
       "tree; B2A of both, 1 round",
       "toward zero: shifted floor plus a round-up bit from an AND tree, AND triples by OT; "
       "B2A pairs by bit-OLE")


# ------------------------------------------------------------ run-time slices (loops)

_slice_accepts, _lower_slice = run_time_slice_rule("bool", bool_shares_of, words_only=True)
for _op in ("dynamic_slice", "dynamic_update_slice"):
    register(PROTOCOL, _op, device="MPC", accepts=_slice_accepts, result_kind="bool",
             cost=lambda n, m: Cost(), lower=_lower_slice, wants="bool",
             doc="local on XOR shares of words, at starts every party knows")
register_public_sharing("bool", lambda ctx, value, device, arg: bool_shares_of(ctx, value, device))
