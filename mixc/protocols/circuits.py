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
  test: every bit of NOT(x ^ y) is 1).
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """How a protocol family holds boolean shares and ANDs them."""
    name: str
    and_gates: object  # (ctx, device, [(x, y)]) -> [shares of x & y], one round
    pieces: object     # a party's share -> its local pieces (list)
    build: object      # list of pieces -> a party's share


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
