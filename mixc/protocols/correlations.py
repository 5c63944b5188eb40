"""Correlated randomness of a 2-party MPC device: from the dealer, or dealer-free.

Products and fixed-point truncation consume correlations: Beaver triples
(``triple``) and truncation pairs (``truncate``). On an ordinary MPC device
a dealer makes them: it shares a PRG key with each party (``common.Dealt``),
so every party's part is drawn from a PRG stream, and the dealer sends P1
only the correction that makes the correlation hold. On an ``offline: he``
device the two parties make them themselves (``dealerfree``). The protocols
that need them (``arith2pc``, ``bool2pc``, and ``he`` and ``masking`` when
they hand shares to an MPC device) call this module, which picks the source
from the device.

Truncation with a dealer is the TruncPr of Escudero et al. (CRYPTO 2020):
with r from the dealer, open c = x + 2^(k-2) + r (k = 64 or 128, the device's
ring) and fix the wrap of the top bit with the dealer's shares of msb(r). For
|x| < 2^(k-2) the result is x / 2^f with an error of at most one unit in the
last place (2^-f), never a wrap-around.
"""
from ..passes.lower import DEALER
from . import Cost
from .common import (COMBINE, CORRECT, RING_BYTES, Dealt, open_values, parties, truncpr_dealt,
                     truncpr_finish, truncpr_offset)
from .dealerfree import triple as dealer_free_triple
from .dealerfree import truncate as dealer_free_truncate
from .ring import ring_of


def triple(ctx, device, shape_a, shape_b, product, ring="arith", given=(None, None)):
    """Shares {party: (a, b, c)} with c = product(a, b) over the ring; the dealer sends c1 only.

    ``given``: for a or b, a mask the dealer made earlier in this block, as
    (the dealer's value, {party: share}), reused instead of a fresh one (an operand
    opened once as x - a feeds several products: ``arith2pc``'s mask reuse).
    On an ``offline: he`` device the two parties make the triple themselves
    (``dealerfree.triple``: OT for elementwise and AND triples, HE for matrix
    products; ``product.op``/``product.attrs`` name the product when it is not
    ``mul``/``and``)."""
    if device.offline == "he":
        return dealer_free_triple(ctx, device, shape_a, shape_b, product, ring)
    p0, p1 = parties(device)
    fresh = [name for name, g in zip("ab", given) if g is None]
    dealt = Dealt(ctx, device, tuple(fresh) + ("c",))
    combine, correct = COMBINE[ring], CORRECT[ring]
    words = ring == "bool"  # AND triples are on u64 words of bits whatever the device's ring

    def draw(party, owner, name, shape):
        return dealt.draw(party, owner, name, shape, words=words)

    def mask(name, shape, g):
        if g is not None:
            return g[0], {p: g[1][p] for p in (p0, p1)}
        at_dealer = ctx.emit(DEALER, combine, [draw(DEALER, p0, name, shape),
                                               draw(DEALER, p1, name, shape)], "plain")
        return at_dealer, {p: draw(p, p, name, shape) for p in (p0, p1)}
    (a, a_shares), (b, b_shares) = mask("a", shape_a, given[0]), mask("b", shape_b, given[1])
    c = product(DEALER, a, b, "plain")
    c1 = ctx.emit(DEALER, correct, [c, draw(DEALER, p0, "c", c.type.shape)], ring)
    shares = {p0: (a_shares[p0], b_shares[p0], draw(p0, p0, "c", c.type.shape)),
              p1: (a_shares[p1], b_shares[p1], ctx.xfer(c1, p1, "triple correction", ring))}
    shares[DEALER] = (a, b)
    return shares


def truncate(ctx, device, x, bits):
    """Shares of x / 2^bits (TruncPr with dealer-made r, msb(r) and r's truncated low bits;
    on an ``offline: he`` device the dealer-free truncation of ``dealerfree.truncate``)."""
    if device.offline == "he":
        return dealer_free_truncate(ctx, device, x, bits)
    p0, p1 = parties(device)
    shape = x[p0].type.shape
    ring = ring_of(device)
    dealt = Dealt(ctx, device, ("r", "msb", "low"))

    def draw(party, owner, name):
        return dealt.draw(party, owner, name, shape)

    r = ctx.emit(DEALER, "add", [draw(DEALER, p0, "r"), draw(DEALER, p1, "r")], "plain")
    msb, low = truncpr_dealt(ctx, DEALER, r, bits, ring)
    msb1 = ctx.emit(DEALER, "sub", [msb, draw(DEALER, p0, "msb")], "arith")
    low1 = ctx.emit(DEALER, "sub", [low, draw(DEALER, p0, "low")], "arith")
    mine = {p0: (draw(p0, p0, "r"), draw(p0, p0, "msb"), draw(p0, p0, "low")),
            p1: (draw(p1, p1, "r"), ctx.xfer(msb1, p1, "truncation pair correction", "arith"),
                 ctx.xfer(low1, p1, "truncation pair correction", "arith"))}
    masked = {}
    for p in (p0, p1):
        xs = x[p]
        if p == p0:
            xs = ctx.emit(p, "add", [xs, truncpr_offset(ctx, p, ring)], "arith")
        masked[p] = ctx.emit(p, "add", [xs, mine[p][0]], "masked")
    (c,) = open_values(ctx, device, (masked, "masked value (x + r) for truncation"))
    return {p: truncpr_finish(ctx, p, c[p], mine[p][1], mine[p][2], bits, p == p0)
            for p in (p0, p1)}


def dealer_truncation_cost(size, element_bytes=RING_BYTES):
    """Declared cost of ``truncate`` on a dealer device for ``size`` elements: the dealer
    sends the msb and low corrections; each party opens x + r (one round)."""
    return Cost(element_bytes * size * 4, 1)
