"""Boolean circuits shared by the protocol families, generic over their AND gate.

A family of boolean shares (``bool2pc``: one XOR share per party of two;
``rep3bool``: a pair of the three XOR shares per party of three) is a
``Family``: how a party's share splits into local pieces (each piece gets
the same local op: a shift, an unzip, an XOR), and its AND gate
(``and_gates(ctx, device, pairs)``: shares of x AND y for each pair, all in
one round). The circuits below use only those two and local ops, so each
family gets comparisons from the same code:

- ``carry_tree``: the carry into the top bit of x + y from the packed
  (generate, propagate) bits of its positions, a log-depth tree: each level
  splits the bit stream into even and odd positions (``bits_unzip``) and
  combines neighbours, G' = G_odd ^ (P_odd & G_even), P' = P_odd & P_even;
- ``and_tree``: the AND of each group of 2^levels consecutive bits (a zero
  test: every bit of NOT(x ^ y) is 1);
- ``add_words``: x + y on boolean-shared full words (A2B), a Kogge-Stone
  adder on u64 or u128 words (a ``ring: 128`` device's; ``word_stream``,
  ``from_words`` and ``low_and_top_words`` move between a u128 and its two
  u64 words, low first);
- ``round_up_bit``: the bit that rounds floor(x) up to x rounded to an integer,
  one AND tree over f + 1 bits of each word (``xor_public``: the family's XOR
  with a public word, which touches one share); ``kept_bits``, ``low_bits``
  and ``bit_weights``: which bits of floor(x) a rounding's B2A converts, and
  their weights.
"""
from dataclasses import dataclass

import numpy as np

from ..ir.ops import U128


@dataclass(frozen=True)
class Family:
    """How a protocol family holds boolean shares and ANDs them."""
    name: str
    and_gates: object  # (ctx, device, [(x, y)]) -> [shares of x & y], one round
    pieces: object     # a party's share -> its local pieces (list)
    build: object      # list of pieces -> a party's share
    xor_public: object  # (ctx, device, shares, word) -> shares ^ word (a public u64)


def each(fam, shares, fn, outputs=1):
    """``fn(party, piece)`` on every local piece of ``shares``; with ``outputs`` > 1, fn
    returns that many values and so many shares come back."""
    outs = [{} for _ in range(outputs)]
    for p, s in shares.items():
        results = [fn(p, piece) for piece in fam.pieces(s)]
        for k in range(outputs):
            outs[k][p] = fam.build([r[k] if outputs > 1 else r for r in results])
    return outs[0] if outputs == 1 else outs


def xor(ctx, fam, x, y):
    """XOR of two boolean sharings: local, piece by piece."""
    out = {}
    for p in x:
        out[p] = fam.build([ctx.emit(p, "xor", [a, b], "bool")
                            for a, b in zip(fam.pieces(x[p]), fam.pieces(y[p]))])
    return out


def unzip(ctx, fam, shares):
    """The (even, odd) positions of each party's packed bit stream."""
    def split(p, s):
        half = s.type.with_(shape=(-(-s.type.shape[0] // 2),))
        return ctx.emit_many(p, "bits_unzip", [s], [half, half], {})
    return each(fam, shares, split, outputs=2)


def carry_tree(ctx, device, fam, g, prop, levels):
    """Shares of the carry out of 2^levels positions per element, from the packed
    (generate, propagate) bits of every position (low position first)."""
    for level in range(levels):
        g_even, g_odd = unzip(ctx, fam, g)
        p_even, p_odd = unzip(ctx, fam, prop)
        last = level == levels - 1
        pairs = [(p_odd, g_even)] + ([] if last else [(p_odd, p_even)])
        products = fam.and_gates(ctx, device, pairs)
        g = xor(ctx, fam, g_odd, products[0])
        if not last:
            prop = products[1]
    return g


def and_tree(ctx, device, fam, z, levels):
    """Shares of the AND of each group of 2^levels consecutive packed bits."""
    for _ in range(levels):
        even, odd = unzip(ctx, fam, z)
        (z,) = fam.and_gates(ctx, device, [(even, odd)])
    return z


def word_bits(shares):
    """Bits of the boolean full words ``shares`` holds: 128 for u128 (a ``ring: 128``
    device's words), else 64."""
    piece = next(iter(shares.values()))
    piece = piece[0] if isinstance(piece, tuple) else piece
    return 128 if piece.type.dtype == "u128" else 64


def carry_tree_words(n, levels):
    """u64 words ANDed by the generate gate and a carry tree of ``levels`` over n words."""
    return n + sum(2 * -(-n // 2 ** k) for k in range(1, levels)) + -(-n // 2 ** levels)


def and_tree_words(n, levels):
    """u64 words ANDed by an AND tree of ``levels`` over n words."""
    return sum(-(-n // 2 ** k) for k in range(1, levels + 1))


def add_words(ctx, device, fam, x, y):
    """Shares of x + y (mod 2^64 or 2^128) for boolean-shared u64 or u128 words: a
    Kogge-Stone adder, 1 + log2(bits) AND rounds (generate, then shifts 1, 2, ..., bits/2)."""
    def shifted(shares, k):
        return each(fam, shares, lambda p, w: ctx.emit(p, "shl", [w], "bool", {"bits": k}))
    bits = word_bits(x)
    (g,) = fam.and_gates(ctx, device, [(x, y)])
    prop = total = xor(ctx, fam, x, y)
    shift = 1
    while shift < bits:
        last = shift == bits // 2
        pairs = [(prop, shifted(g, shift))] + ([] if last else [(prop, shifted(prop, shift))])
        products = fam.and_gates(ctx, device, pairs)
        g = xor(ctx, fam, g, products[0])
        if not last:
            prop = products[1]
        shift *= 2
    return xor(ctx, fam, total, shifted(g, 1))


def word_column(ctx, party, words, i, kind="bool"):
    """Word ``i`` (0: low) of every element of ``words`` (a ``ring_words`` result, shape
    S + (2,)), shape S."""
    shape = words.type.shape[:-1]
    col = ctx.emit(party, "slice", [words], kind,
                   {"start": (0,) * len(shape) + (i,), "limit": tuple(shape) + (i + 1,),
                    "strides": (1,) * (len(shape) + 1)})
    return ctx.emit(party, "reshape", [col], kind, {"new_sizes": tuple(shape)})


def from_words(ctx, party, words, kind="bool"):
    """u128 elements from their two u64 words (shape S + (2,), low first): the inverse of
    ``ring_words``, built from zero extensions, a shift and an OR."""
    low, high = (ctx.emit(party, "ring_widen", [word_column(ctx, party, words, i, kind)], kind)
                 for i in (0, 1))
    high = ctx.emit(party, "shl", [high], kind, {"bits": 64})
    return ctx.emit(party, "or", [low, high], kind)


def word_stream(ctx, party, w):
    """Full boolean words as one flat stream of u64 words (a u128's two, low first)."""
    if w.type.dtype == "u128":
        w = ctx.emit(party, "ring_words", [w], w.type.kind)
    return ctx.emit(party, "reshape", [w], w.type.kind, {"new_sizes": (w.type.size,)})


def per_word(ctx, party, values, n, kind):
    """A public u64 word per word of an element (``values``, low word first), for all n
    elements, flattened like ``word_stream``."""
    row = ctx.const(party, np.array(values, dtype=np.uint64))
    full = ctx.emit(party, "broadcast_in_dim", [row], kind,
                    {"shape": (n, len(values)), "broadcast_dimensions": (1,)})
    return ctx.emit(party, "reshape", [full], kind, {"new_sizes": (n * len(values),)})


def bit_weights(bits, count=None, signed=False):
    """2^i for bits i < ``count`` (all of a ``bits``-bit ring element by default), as ring
    elements; ``signed``: the top one is -2^(count-1), the weights of a two's complement
    count-bit integer."""
    count = bits if count is None else count
    weights = [(-1 if signed and i == count - 1 else 1) * (1 << i) % (1 << bits)
               for i in range(count)]
    if bits == 64:
        return np.array(weights, dtype=np.uint64)
    return np.array([(w & (1 << 64) - 1, w >> 64) for w in weights], dtype=U128)


def kept_bits(to_int, ring_bits, f):
    """The low bits of floor(x) (the word shifted right by f) that a rounding's result keeps,
    and whether the top one is a sign: an int32 (float -> int32) keeps 32, two's
    complement; a fixed-point result (shifted back left by f) the ring's bits - f. The B2A
    of the floor converts those bits only."""
    return (32, True) if to_int else (ring_bits - f, False)


def low_bits(ctx, party, w, n, count, kind="bool"):
    """The low ``count`` bits of each of the n full words of ``w`` (u64 or u128), unpacked:
    shape (n, count)."""
    words = 2 if w.type.dtype == "u128" else 1
    bits = ctx.emit(party, "bits_unpack", [word_stream(ctx, party, w)], kind,
                    {"shape": (n, 64 * words)})
    if count == 64 * words:
        return bits
    return ctx.emit(party, "slice", [bits], kind,
                    {"start": (0, 0), "limit": (n, count), "strides": (1, 1)})


def low_and_top_words(ctx, party, w):
    """A full boolean word's low and top u64 words (both ``w`` itself for a u64 word)."""
    if w.type.dtype != "u128":
        return w, w
    words = ctx.emit(party, "ring_words", [w], "bool")
    return word_column(ctx, party, words, 0), word_column(ctx, party, words, 1)


def carry_layout(mode, f):
    """The inputs of the bit that rounds floor(x) up, for ``mode`` at f fraction bits:
    (x's low bits kept in place, which of those are negated, the slot that takes x's sign
    bit or None, the lead's slot). The bit is lead AND NOT (every other input is 1), i.e.
    lead ^ AND(lead and the others): one AND tree over f + 1 slots."""
    if mode == "trunc":            # x < 0 and some fraction bit is set
        return f, (1 << f) - 1, f, f
    if mode == "to_nearest_even":  # the half bit, and a lower bit set or floor(x) odd
        return f + 1, ((1 << (f + 1)) - 1) ^ (1 << (f - 1)), None, f - 1
    if mode == "away_from_zero":   # the half bit, and a lower bit set or x >= 0
        return f, (1 << (f - 1)) - 1, f, f - 1
    raise NotImplementedError(f"rounding mode {mode!r} on MPC")


def tree_levels(f):
    """Depth of the AND tree over the f + 1 inputs of a round-up bit."""
    return f.bit_length()


def round_up_bit(ctx, device, fam, x, mode, f):
    """Packed boolean shares of the bit that rounds floor(x) up to x rounded by ``mode``,
    for flat boolean-shared words ``x``: every piece lays the tree's inputs out in one word
    per element (the NOTs and the 1s, the AND's identity in unused slots, by one public
    XOR), the 2^L slots the tree reads are kept, and L rounds AND neighbouring bits."""
    keep, negated, sign_slot, lead = carry_layout(mode, f)
    levels = tree_levels(f)

    def u64(p, value):
        return ctx.const(p, np.uint64(value % (1 << 64)))

    def laid_out(p, w):
        low, top = low_and_top_words(ctx, p, w)  # f + 1 <= 49 bits: the low word holds them
        word = ctx.emit(p, "and", [low, u64(p, (1 << keep) - 1)], "bool")
        if sign_slot is not None:
            sign = ctx.emit(p, "lshr", [top], "bool", {"bits": 63})
            word = ctx.emit(p, "xor", [word, ctx.emit(p, "shl", [sign], "bool",
                                                      {"bits": sign_slot})], "bool")
        return word
    words = fam.xor_public(ctx, device, each(fam, x, laid_out),
                           (negated | ~((1 << (f + 1)) - 1)) % (1 << 64))
    leads = each(fam, words, lambda p, w: ctx.emit(
        p, "bits_pack", [ctx.emit(p, "lshr", [w], "bool", {"bits": lead})], "bool"))

    def tree_inputs(p, w):
        n = w.type.size
        bits = ctx.emit(p, "bits_unpack", [w], "bool", {"shape": (n, 64)})
        used = ctx.emit(p, "slice", [bits], "bool",
                        {"start": (0, 0), "limit": (n, 1 << levels), "strides": (1, 1)})
        return ctx.emit(p, "bits_pack", [used], "bool")
    return xor(ctx, fam, leads, and_tree(ctx, device, fam, each(fam, words, tree_inputs),
                                         levels))
