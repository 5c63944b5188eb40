"""Three-party replicated boolean (XOR) sharing, comparisons and conversions (ABY3 style).

A boolean-shared value is b = b0 ^ b1 ^ b2; party Pi holds (b_i, b_{i+1}) as
``rep3`` holds arithmetic shares. Bool-dtype values are packed 64 to a u64
word as in ``bool2pc``. XOR, NOT, shifts and moves are local; a public
constant is XORed into b0 (P0's first piece, P2's second).

- AND (``and_gates``): Pi computes z_i = x_i y_i ^ x_i y_{i+1} ^ x_{i+1} y_i
  ^ a_i with the XOR zero sharing a_i = F(Pi~P(i+1)) ^ F(P(i-1)~Pi) and sends
  z_i to P(i-1): one round, one word per party per 64 gates.
- ``lt`` is msb(a - b). With d = a - b replicated, u = d0 + d1 is P0's (it
  holds both) and v = d2 is P1's and P2's. P0 XOR-shares u (one word per
  element to P1, masked by a P0~P2 PRG word); v already is a boolean
  sharing (its share sits in slot 2, the other slots 0). Then msb(u + v) =
  u_63 ^ v_63 ^ carry, the carry from the generate/propagate tree of
  ``circuits.carry_tree`` (G = u & v on the 63 low positions, 6 levels).
  Exact whenever |a - b| < 2^63 in the ring. 8 rounds.
- ``eq`` is a zero test: d = 0 iff u = -d2, i.e. every bit of NOT(u ^ -d2)
  is 1: ``circuits.and_tree`` over 64 bits (1 + 6 rounds).
- A2B of 0/1 values is local (the low bit of d0 + d1 + d2 is the XOR of the
  shares' low bits). B2A of bits (bit injection): b = b0 ^ b1 ^ b2 with
  x ^ y = x + y - 2xy on the trivial arithmetic sharings of the b_k: P0
  holds b0 and b1, so b0 ^ b1 is its 3-out-of-3 share, re-shared (one
  round), then one ``rep3`` product with b2 (one round).

``floor`` clears the fraction bits of both XOR shares of every party (local
after a full-word A2B); ``round`` and float -> int32 add the round-up bit of
``circuits.round_up_bit`` (shared with ``bool2pc``) after both become
arithmetic by bit injection (of the floor, only the bits the result keeps:
``circuits.kept_bits``). Integer shifts are local on the XOR shares.

On ``ring: 128`` a full boolean word is a u128 element: AND gates, XOR and
shifts run on it as they are (the u128 C kernels), the adder has 7
levels, comparisons run on the stream of each element's two words (128
positions, 7 levels, like ``bool2pc``) and bit injection widens the bits
into the ring first (128 of them per word for B2A).
"""
import numpy as np

from . import Cost, register, register_public_sharing
from .circuits import (Family, add_words, and_tree, and_tree_words, bit_weights, carry_tree,
                       carry_tree_words, each, kept_bits, low_and_top_words, low_bits,
                       per_word, round_up_bit, tree_levels, word_stream, xor)
from .common import frac_bits
from .rep3 import cross_terms, relay_open, reshare, shares_of, three_party, trio
from .ring import Ring, ring_of
from .shares import run_time_slice_rule
from ..passes.lower import seed_name

PROTOCOL = "rep3.bool"
WORD = 8
LOW63 = (1 << 63) - 1


def _device(ctx, value):
    return ctx.source.devices[value.type.place]


def _words(n):
    return -(-n // 64)


# ------------------------------------------------------------ AND gates

def _pair_words(ctx, a, b, shape, dtype="u64"):
    """The same uniform words (u64, or u128 full words of a ``ring: 128`` device) at ``a``
    and ``b`` from their pairwise key."""
    seed = seed_name(a, b)
    stream = ctx.stream(seed)
    if dtype == "u128":
        return {p: Ring(128).random(ctx, p, seed, shape, stream, "bool") for p in (a, b)}
    return {p: ctx.random(p, seed, shape, stream, "bool") for p in (a, b)}


def and_gates(ctx, device, pairs):
    """Replicated XOR shares of x & y for each pair, all in one round."""
    ps = trio(device)
    out = []
    for x, y in pairs:
        shape, dtype = x[ps[0]][0].type.shape, x[ps[0]][0].type.dtype
        draws = [_pair_words(ctx, ps[i], ps[(i + 1) % 3], shape, dtype) for i in range(3)]
        z = {}
        for i, p in enumerate(ps):
            (x0, x1), (y0, y1) = x[p], y[p]
            both = ctx.emit(p, "xor", [y0, y1], "bool")
            cross = ctx.emit(p, "xor", [ctx.emit(p, "and", [x0, both], "bool"),
                                        ctx.emit(p, "and", [x1, y0], "bool")], "bool")
            zero = ctx.emit(p, "xor", [draws[i][p], draws[(i - 1) % 3][p]], "bool")
            z[p] = ctx.emit(p, "xor", [cross, zero], "bool")
        out.append({p: (z[p], ctx.xfer(z[ps[(i + 1) % 3]], p, "re-shared AND", "bool"))
                    for i, p in enumerate(ps)})
    return out


# ------------------------------------------------------------ local helpers

def _flat(ctx, shares):
    return each(REP3, shares, lambda p, s: ctx.emit(p, "reshape", [s], s.type.kind,
                                                     {"new_sizes": (s.type.size,)}))


def _zeros(ctx, party, shape, dtype="u64"):
    zero = Ring(128).const(ctx, party, 0) if dtype == "u128" else ctx.const(party, np.uint64(0))
    return ctx.emit(party, "broadcast_in_dim", [zero], "bool",
                    {"shape": tuple(shape), "broadcast_dimensions": ()})


def _xor_public(ctx, device, shares, word):
    """shares ^ word (a public u64 constant, or ``word(party)``: a public value made at
    the party): only slot 0 changes."""
    p0, _, p2 = trio(device)
    out = dict(shares)
    c0, c2 = (word(p) if callable(word) else ctx.const(p, np.uint64(word)) for p in (p0, p2))
    out[p0] = (ctx.emit(p0, "xor", [shares[p0][0], c0], "bool"), shares[p0][1])
    out[p2] = (shares[p2][0], ctx.emit(p2, "xor", [shares[p2][1], c2], "bool"))
    return out


REP3 = Family("rep3", and_gates, pieces=list, build=tuple, xor_public=_xor_public)


def _summands(ctx, device, d, negate_last=False):
    """Boolean replicated shares of u = d0 + d1 (P0's, shared by one message) and of
    v = d2 (or -d2; already a sharing: slot 2 holds it), for arithmetic shares d."""
    p0, p1, p2 = trio(device)
    d = _flat(ctx, d)
    shape, dtype = d[p0][0].type.shape, d[p0][0].type.dtype
    u = ctx.emit(p0, "add", list(d[p0]), "bool")
    r = _pair_words(ctx, p2, p0, shape, dtype)  # slot 0
    masked = ctx.emit(p0, "xor", [u, r[p0]], "bool")  # slot 1
    v1, v2 = d[p1][1], d[p2][0]
    if negate_last:
        v1, v2 = ctx.emit(p1, "neg", [v1], "bool"), ctx.emit(p2, "neg", [v2], "bool")
    us = {p0: (r[p0], masked),
          p1: (ctx.xfer(masked, p1, "XOR-shared summand (comparison)", "bool"),
               _zeros(ctx, p1, shape, dtype)),
          p2: (_zeros(ctx, p2, shape, dtype), r[p2])}
    vs = {p0: (_zeros(ctx, p0, shape, dtype), _zeros(ctx, p0, shape, dtype)),
          p1: (_zeros(ctx, p1, shape, dtype), v1),
          p2: (v2, _zeros(ctx, p2, shape, dtype))}
    return us, vs


def _streams(ctx, device, shares):
    """Full words as one stream of u64 words per piece (a u128's two, low first)."""
    if ring_of(device).words == 1:
        return shares
    return each(REP3, shares, lambda p, w: word_stream(ctx, p, w))


def _public_words(ctx, n, values):
    """``party -> a public u64 word per word of each of n elements`` (``values``, low
    first): one constant on the 64-bit ring, a word per position of the stream on wider."""
    if len(values) == 1:
        return lambda p: ctx.const(p, np.uint64(values[0]))
    return lambda p: per_word(ctx, p, values, n, "public")


def msb_bits(ctx, device, d):
    """Packed boolean shares of msb(d) for replicated arithmetic shares d."""
    u, v = _summands(ctx, device, d)
    ring = ring_of(device)
    n = next(iter(u.values()))[0].type.size
    keep = _public_words(ctx, n, [(1 << 64) - 1] * (ring.words - 1) + [LOW63])
    low = [each(REP3, s, lambda p, w: ctx.emit(p, "and", [w, keep(p)], "bool"))
           for s in (_streams(ctx, device, u), _streams(ctx, device, v))]
    (g,) = and_gates(ctx, device, [tuple(low)])
    # the top position is the identity of the combine (G = 0, P = 1): positions reduce evenly
    prop = _xor_public(ctx, device, xor(ctx, REP3, *low),
                       _public_words(ctx, n, [0] * (ring.words - 1) + [1 << 63]))
    carry = carry_tree(ctx, device, REP3, g, prop, ring.bits.bit_length() - 1)
    top = each(REP3, xor(ctx, REP3, u, v), lambda p, w: ctx.emit(
        p, "bits_pack", [ctx.emit(p, "lshr", [low_and_top_words(ctx, p, w)[1]], "bool",
                                  {"bits": 63})], "bool"))
    return xor(ctx, REP3, top, carry)


def zero_bits(ctx, device, d):
    """Packed boolean shares of (d == 0) for replicated arithmetic shares d."""
    u, v = _summands(ctx, device, d, negate_last=True)
    same = _xor_public(ctx, device, _streams(ctx, device, xor(ctx, REP3, u, v)), (1 << 64) - 1)
    return and_tree(ctx, device, REP3, same, ring_of(device).bits.bit_length() - 1)


def _compare_with(circuit):
    def lower(ctx, node):
        device = _device(ctx, node.result)
        a, b = (shares_of(ctx, v, device) for v in node.operands)
        d = {p: tuple(ctx.emit(p, "sub", [a[p][k], b[p][k]], "arith") for k in range(2))
             for p in a}
        ctx.parts[node.result] = circuit(ctx, device, d)
    return lower


# ------------------------------------------------------------ logic and moves on bits

def bool_shares_of(ctx, value, device, shape=None):
    """Boolean replicated shares of a bool-kind or public value (public: slot 0; bools
    packed, int32 as ring words)."""
    if value.type.kind == "bool":
        return ctx.parts[value]
    p0, p1, p2 = trio(device)
    pieces = {}
    for p in (p0, p2):
        plain = ctx.parts[value][p]
        if shape is not None and tuple(value.type.shape) != tuple(shape):
            plain = ctx.emit(p, "broadcast_in_dim", [plain], "public",
                             {"shape": tuple(shape), "broadcast_dimensions": ()})
        pieces[p] = (ctx.emit(p, "bits_pack", [plain], "public") if value.type.dtype == "bool"
                     else ring_of(device).encode(ctx, p, plain, 0, "public"))
    words, dtype = pieces[p0].type.shape, pieces[p0].type.dtype
    return {p0: (pieces[p0], _zeros(ctx, p0, words, dtype)),
            p1: (_zeros(ctx, p1, words, dtype), _zeros(ctx, p1, words, dtype)),
            p2: (_zeros(ctx, p2, words, dtype), pieces[p2])}


def _lower_logic(ctx, node):
    device = _device(ctx, node.result)
    xs = [bool_shares_of(ctx, v, device, node.result.type.shape) for v in node.operands]
    if node.op == "xor":
        out = xor(ctx, REP3, *xs)
    elif node.op == "not":
        # every bit of one XOR share flipped: packed bits and whole ring words alike
        p0, _, p2 = trio(device)
        (x,) = xs
        out = dict(x)
        out[p0] = (ctx.emit(p0, "not", [x[p0][0]], "bool"), x[p0][1])
        out[p2] = (x[p2][0], ctx.emit(p2, "not", [x[p2][1]], "bool"))
    elif node.op == "and":
        (out,) = and_gates(ctx, device, [tuple(xs)])
    else:  # or: x | y = x ^ y ^ (x & y)
        (both,) = and_gates(ctx, device, [tuple(xs)])
        out = xor(ctx, REP3, xor(ctx, REP3, *xs), both)
    ctx.parts[node.result] = out


def _lower_floor(ctx, node):
    """``floor`` of a boolean-shared float: each party clears the fraction bits of both its
    XOR shares (an AND with a public mask is local on every share)."""
    (x,) = node.operands
    device = _device(ctx, x)
    f = frac_bits(device, x.type.dtype)
    ctx.parts[node.result] = each(REP3, ctx.parts[x], lambda p, s: ctx.emit(
        p, "and", [s, ring_of(device).const(ctx, p, ~((1 << f) - 1))], "bool"))


def _lower_shift(ctx, node):
    """Shifts are local on XOR shares, piece by piece. An i32 lives sign-extended in a
    ring word (64 or 128 bits), so a left shift re-extends bit 31 and a logical right shift
    first drops the extension."""
    (x,) = node.operands
    k = node.attrs["bits"]
    ext = ring_of(_device(ctx, x)).bits - 32
    steps = {"ashr": [("ashr", k)],
             "shl": [("shl", ext + k), ("ashr", ext)],
             "lshr": [("shl", ext), ("lshr", ext + k)]}[node.op]

    def shifted(p, s):
        for op, bits in steps:
            s = ctx.emit(p, op, [s], "bool", {"bits": bits})
        return s
    ctx.parts[node.result] = each(REP3, ctx.parts[x], shifted)


def _lower_structural(ctx, node):
    """Moves of packed bits: unpack, move, pack, on every piece."""
    device = _device(ctx, node.result)
    attrs = {k: v for k, v in node.attrs.items() if k != "protocol"}
    xs = [bool_shares_of(ctx, v, device) for v in node.operands]
    out = {}
    for p in trio(device):
        comps = []
        for k in range(2):
            elems = [ctx.emit(p, "bits_unpack", [x[p][k]], "bool", {"shape": tuple(v.type.shape)})
                     for x, v in zip(xs, node.operands)]
            moved = ctx.emit(p, node.op, elems, "bool", attrs)
            comps.append(ctx.emit(p, "bits_pack", [moved], "bool"))
        out[p] = tuple(comps)
    ctx.parts[node.result] = out


def _lower_reveal(ctx, node):
    """Open to one party as ``rep3.relay_open`` does, with XOR."""
    (x,) = node.operands
    device = _device(ctx, x)
    (dst,) = ctx.device_of(node.result).parties
    ps = trio(device)
    shares = ctx.parts[x]
    total = relay_open(ctx, ps, shares, dst, shares[ps[0]][0].type.shape, "xor", _pair_words)
    total = ctx.emit(dst, "bits_unpack", [total], "plain", {"shape": tuple(x.type.shape)})
    ctx.parts[node.result] = {dst: ctx.emit(dst, "decode", [total], "plain",
                                            {"frac_bits": 0, "dtype": x.type.dtype})}


# ------------------------------------------------------------ conversions

def _lower_a2b(ctx, node):
    """0/1 values: the low bit of d0 + d1 + d2 is the XOR of the shares' low bits, local.
    Full words: u = d0 + d1 (P0's, XOR-shared) plus v = d2 by ``circuits.add_words``."""
    (x,) = node.operands
    device = _device(ctx, x)
    if x.type.dtype == "bool":
        ctx.parts[node.result] = each(REP3, _flat(ctx, ctx.parts[x]), lambda p, s: ctx.emit(
            p, "bits_pack", [low_and_top_words(ctx, p, s)[0]], "bool"))
        return
    u, v = _summands(ctx, device, ctx.parts[x])
    shape = tuple(x.type.shape)
    ctx.parts[node.result] = each(REP3, add_words(ctx, device, REP3, u, v), lambda p, w: ctx.emit(
        p, "reshape", [w], "bool", {"new_sizes": shape}))


def inject_bits(ctx, device, b):
    """Replicated arithmetic shares of b0 ^ b1 ^ b2 for replicated XOR shares of 0/1 u64
    arrays (bit injection): b0 ^ b1 is P0's 3-out-of-3 share, re-shared (one round), then
    one product with b2 (one round): x ^ y = x + y - 2xy."""
    p0, p1, p2 = ps = trio(device)
    ring = ring_of(device)
    b = each(REP3, b, lambda p, w: ring.widen(ctx, p, w, "arith"))
    b0, b1 = b[p0]
    both = ctx.emit(p0, "mul", [b0, b1], "arith")
    first = ctx.emit(p0, "sub", [ctx.emit(p0, "add", [b0, b1], "arith"),
                                 ctx.emit(p0, "shl", [both], "arith", {"bits": 1})], "arith")
    zero = {p: zero_like(ctx, p, b[p][0]) for p in ps}
    c = reshare(ctx, device, {p0: first, p1: zero[p1], p2: zero[p2]})
    last = {p0: (zero[p0], zero[p0]), p1: (zero[p1], b[p1][1]), p2: (b[p2][0], zero[p2])}

    def product(party, u, w):
        return ctx.emit(party, "mul", [u, w], "arith")
    prod = reshare(ctx, device, cross_terms(ctx, ps, c, last, product))
    return {p: tuple(ctx.emit(p, "sub", [ctx.emit(p, "add", [c[p][k], last[p][k]], "arith"),
                                         ctx.emit(p, "shl", [prod[p][k]], "arith", {"bits": 1})],
                              "arith") for k in range(2)) for p in ps}


def _lower_b2a(ctx, node):
    """Bits: ``inject_bits``. Full words: every bit injected, then sum_i 2^i b_i."""
    (x,) = node.operands
    device = _device(ctx, x)
    packed = x.type.dtype == "bool"
    pieces = ctx.parts[x] if packed else _flat(ctx, ctx.parts[x])
    ctx.parts[node.result] = _to_arith(ctx, device, pieces, tuple(x.type.shape), packed)


def _to_arith(ctx, device, pieces, shape, packed, kept=None):
    """Arithmetic shares of flat boolean shares: packed 0/1 bits, or full ring words (each
    bit injected, then sum_i 2^i b_i; ``kept``: (count, signed), only the low count bits,
    the top one a sign if signed), reshaped to ``shape``."""
    n = int(np.prod(shape, dtype=np.int64))
    ring_bits = ring_of(device).bits
    if packed:
        bits = each(REP3, pieces, lambda p, w: ctx.emit(p, "bits_unpack", [w], "arith",
                                                        {"shape": (n,)}))
    elif kept is None:
        bits = each(REP3, _streams(ctx, device, pieces), lambda p, w: ctx.emit(
            p, "bits_unpack", [w], "arith", {"shape": (n, ring_bits)}))
    else:
        bits = each(REP3, pieces, lambda p, w: low_bits(ctx, p, w, n, kept[0], "arith"))
    value = inject_bits(ctx, device, bits)
    if not packed:
        weights = bit_weights(ring_bits, *(kept or ()))

        def weighted(p, s):
            return ctx.emit(p, "dot_general", [s, ctx.const(p, weights)], "arith",
                            {"contract": ((1,), (0,)), "batch": ((), ())})
        value = each(REP3, value, weighted)
    return each(REP3, value, lambda p, s: ctx.emit(p, "reshape", [s], "arith",
                                                   {"new_sizes": shape}))


def _lower_round_to_integer(ctx, node):
    """``round`` (ties by its rounding_method) and float -> int32 (toward zero, as JAX):
    floor(x) on the XOR shares plus the round-up bit of ``circuits.round_up_bit``, both made
    arithmetic (``_to_arith``) and added there. floor(x) is the word shifted right by f, of
    which only the bits the result keeps are injected (``circuits.kept_bits``); a
    fixed-point result is shifted back by f at the end."""
    (x,) = node.operands
    device = _device(ctx, x)
    f = frac_bits(device, x.type.dtype)
    to_int = node.op == "convert_element_type"
    flat = _flat(ctx, ctx.parts[x])
    up = round_up_bit(ctx, device, REP3, flat,
                      "trunc" if to_int else node.attrs["rounding_method"], f)
    down = each(REP3, flat, lambda p, w: ctx.emit(p, "ashr", [w], "bool", {"bits": f}))
    shape = tuple(x.type.shape)
    down, up = (_to_arith(ctx, device, down, shape, False,
                          kept_bits(to_int, ring_of(device).bits, f)),
                _to_arith(ctx, device, up, shape, True))
    total = {p: tuple(ctx.emit(p, "add", [a, b], "arith") for a, b in zip(down[p], up[p]))
             for p in down}
    # a fixed-point result: floor(x) + the bit are integers, 2^f units each
    ctx.parts[node.result] = total if to_int else each(
        REP3, total, lambda p, s: ctx.emit(p, "shl", [s], "arith", {"bits": f}))


def zero_like(ctx, party, like):
    return ctx.emit(party, "sub", [like, like], "arith")


# ------------------------------------------------------------ costs

def _and_cost(words, rounds=1):
    return Cost(3 * WORD * words, rounds)


def _ring(node, module):
    return ring_of(module.devices[node.operands[0].type.place])


def _lt_cost(node, module):
    """P0's summand (one ring element per element), then the carry tree over the words of
    the ring's positions (a 128-bit ring: twice the words, one more level)."""
    ring, n = _ring(node, module), node.operands[0].type.size
    levels = ring.bits.bit_length() - 1
    return Cost(ring.bytes * n, 1) \
        + _and_cost(carry_tree_words(n * ring.words, levels), levels + 1)


def _eq_cost(node, module):
    ring, n = _ring(node, module), node.operands[0].type.size
    levels = ring.bits.bit_length() - 1
    return Cost(ring.bytes * n, 1) + _and_cost(and_tree_words(n * ring.words, levels), levels)


def _logic_cost(node, module):
    if node.op in ("and", "or"):
        t = node.result.type
        words = _words(t.size) if t.dtype == "bool" else t.size * _ring(node, module).words
        return _and_cost(words)
    return Cost()


def _b2a_cost(node, module):
    """Two re-sharings of a ring element per party per injected bit."""
    t, ring = node.operands[0].type, _ring(node, module)
    bits = t.size * (1 if t.dtype == "bool" else ring.bits)
    return Cost(2 * 3 * ring.bytes * bits, 2)


def _a2b_cost(node, module):
    """P0's summand, then the adder: its generate, two gates per shift 1 .. bits/4, one at
    bits/2, on the ring's words."""
    t, ring = node.operands[0].type, _ring(node, module)
    if t.dtype == "bool":
        return Cost()
    levels = ring.bits.bit_length() - 1
    return Cost(ring.bytes * t.size, 1) + _and_cost(t.size * ring.words * 2 * levels, levels)


def _reveal_cost(node, module):
    return Cost(2 * WORD * _words(node.operands[0].type.size), 2)


def _free(node, module):
    return Cost()


# ------------------------------------------------------------ registration

def _arith_operands(kinds, node, module):
    return "arith" in kinds and all(k in ("arith", "public") for k in kinds) \
        and three_party(node, module)


def _bool_operands(kinds, node, module):
    return "bool" in kinds and all(k in ("bool", "public") for k in kinds) \
        and node.result.type.dtype == "bool" and three_party(node, module)


def _logic_operands(kinds, node, module):
    """and/or/xor/not on packed bits or on int32 words (bitwise, as JAX)."""
    return "bool" in kinds and all(k in ("bool", "public") for k in kinds) \
        and node.result.type.dtype in ("bool", "i32") and three_party(node, module)


def _bits(kinds, node, module, kind):
    return kinds == (kind,) and node.operands[0].type.dtype == "bool" \
        and three_party(node, module)


def _one(kinds, node, module, kind):
    return kinds == (kind,) and three_party(node, module)


def _reg(op, accepts, result_kind, cost, lower, wants, doc, device="MPC"):
    register(PROTOCOL, op, device=device, accepts=accepts, result_kind=result_kind, cost=cost,
             lower=lower, wants=wants, doc=doc)


_reg("lt", _arith_operands, "bool", _lt_cost, _compare_with(msb_bits), "arith",
     "msb of the difference: P0 XOR-shares d0 + d1, carry tree with d2, 8 rounds")
_reg("eq", _arith_operands, "bool", _eq_cost, _compare_with(zero_bits), "arith",
     "zero test of the difference: AND tree, 7 rounds")
for _op in ("and", "or"):
    _reg(_op, _logic_operands, "bool", _logic_cost, _lower_logic, "bool",
         "replicated AND: local cross terms + PRG zero sharing, one re-sharing message")
for _op in ("xor", "not"):
    _reg(_op, _logic_operands, "bool", _free, _lower_logic, "bool", "local on XOR shares")
for _op in ("broadcast_in_dim", "reshape", "transpose", "squeeze", "slice", "concatenate",
            "take"):
    _reg(_op, _bool_operands, "bool", _free, _lower_structural, "bool",
         "local: unpack, move, pack")
_reg("reveal", lambda k, n, m: _bits(k, n, m, "bool"), "plain", _reveal_cost, _lower_reveal,
     "bool", "open to one party: the XOR of the shares it misses, from one other party",
     device="PYU")
_reg("a2b", lambda k, n, m: _one(k, n, m, "arith"), "bool", _a2b_cost, _lower_a2b, "arith",
     "bits: local (low bits of the shares); words: P0's d0 + d1 plus d2, Kogge-Stone adder")
_reg("b2a", lambda k, n, m: _one(k, n, m, "bool"), "arith", _b2a_cost, _lower_b2a, "bool",
     "bit injection: b0 ^ b1 re-shared, then one product with b2 (2 rounds); words: per bit")
def _float_operand(kinds, node, module):
    return _one(kinds, node, module, "bool") and node.operands[0].type.dtype == "f32"


def _rounding_cost(node, module):
    """The round-up bit's AND tree, then B2A of the round-up bit and of the bits of floor(x)
    that the result keeps."""
    t, ring = node.operands[0].type, _ring(node, module)
    f = frac_bits(module.devices[t.place], t.dtype)
    levels = tree_levels(f)
    tree = sum(_words(t.size << levels) >> k for k in range(1, levels + 1))
    count, _ = kept_bits(node.op == "convert_element_type", ring.bits, f)
    return _and_cost(tree, levels) + Cost(2 * 3 * ring.bytes * (count + 1) * t.size, 2)


_reg("round", _float_operand, "arith", _rounding_cost, _lower_round_to_integer, "bool",
     "floor plus a round-up bit from an AND tree; both injected bit by bit (B2A)")
_reg("convert_element_type", lambda k, n, m: _float_operand(k, n, m)
     and n.attrs["new_dtype"] == "i32", "arith", _rounding_cost, _lower_round_to_integer,
     "bool", "toward zero: shifted floor plus a round-up bit from an AND tree; B2A of both")
for _op in ("shl", "lshr", "ashr"):
    _reg(_op, lambda k, n, m: _one(k, n, m, "bool") and n.result.type.dtype == "i32", "bool",
         _free, _lower_shift, "bool", "local on both XOR shares of the words")
_reg("floor", lambda k, n, m: _one(k, n, m, "bool") and n.operands[0].type.dtype == "f32",
     "bool", _free, _lower_floor, "bool", "local: each party clears the fraction bits of its "
     "two XOR shares")
_slice_accepts, _lower_slice = run_time_slice_rule("bool", bool_shares_of, words_only=True,
                                                  fits=three_party)
for _op in ("dynamic_slice", "dynamic_update_slice"):
    _reg(_op, _slice_accepts, "bool", _free, _lower_slice, "bool",
         "local on both XOR shares of whole words, at starts every party knows")
register_public_sharing("bool", lambda ctx, value, device, arg: bool_shares_of(ctx, value, device), parties=3)
