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
- ``round_up_bit``: the bit that rounds floor(x) up to x rounded to an integer,
  one AND tree over f + 1 bits of each word (``xor_public``: the family's XOR
  with a public word, which touches one share).
"""
from dataclasses import dataclass

import numpy as np


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


def add_words(ctx, device, fam, x, y):
    """Shares of x + y (mod 2^64) for boolean-shared u64 words: a Kogge-Stone adder,
    6 AND rounds (generate, then shifts 1, 2, ..., 32)."""
    def shifted(shares, k):
        return each(fam, shares, lambda p, w: ctx.emit(p, "shl", [w], "bool", {"bits": k}))
    (g,) = fam.and_gates(ctx, device, [(x, y)])
    prop = total = xor(ctx, fam, x, y)
    shift = 1
    while shift < 64:
        last = shift == 32
        pairs = [(prop, shifted(g, shift))] + ([] if last else [(prop, shifted(prop, shift))])
        products = fam.and_gates(ctx, device, pairs)
        g = xor(ctx, fam, g, products[0])
        if not last:
            prop = products[1]
        shift *= 2
    return xor(ctx, fam, total, shifted(g, 1))


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
        word = ctx.emit(p, "and", [w, u64(p, (1 << keep) - 1)], "bool")
        if sign_slot is not None:
            sign = ctx.emit(p, "lshr", [w], "bool", {"bits": 63})
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
