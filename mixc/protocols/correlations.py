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
with r from the dealer, open c = x + 2^62 + r and fix the wrap of the top bit
with the dealer's shares of msb(r). For |x| < 2^62 the result is x / 2^f
with an error of at most one unit in the last place (2^-f), never a
wrap-around.
"""
from ..passes.lower import DEALER
from . import Cost
from .common import COMBINE, CORRECT, RING_BYTES, Dealt, open_values, parties, u64
from .dealerfree import triple as dealer_free_triple
from .dealerfree import truncate as dealer_free_truncate

TRUNC_OFFSET = 62  # x + 2^62 is non-negative for |x| < 2^62


def triple(ctx, device, shape_a, shape_b, product, ring="arith"):
    """Shares {party: (a, b, c)} with c = product(a, b) over the ring; the dealer sends c1 only.

    On an ``offline: he`` device the two parties make the triple themselves
    (``dealerfree.triple``: OT for elementwise and AND triples, HE for matrix
    products; ``product.op``/``product.attrs`` name the product when it is not
    ``mul``/``and``)."""
    if device.offline == "he":
        return dealer_free_triple(ctx, device, shape_a, shape_b, product, ring)
    p0, p1 = parties(device)
    dealt = Dealt(ctx, device, ("a", "b", "c"))
    combine, correct = COMBINE[ring], CORRECT[ring]
    a = ctx.emit(DEALER, combine, [dealt.draw(DEALER, p0, "a", shape_a),
                                   dealt.draw(DEALER, p1, "a", shape_a)], "plain")
    b = ctx.emit(DEALER, combine, [dealt.draw(DEALER, p0, "b", shape_b),
                                   dealt.draw(DEALER, p1, "b", shape_b)], "plain")
    c = product(DEALER, a, b, "plain")
    c1 = ctx.emit(DEALER, correct, [c, dealt.draw(DEALER, p0, "c", c.type.shape)], ring)
    return {p0: (dealt.draw(p0, p0, "a", shape_a), dealt.draw(p0, p0, "b", shape_b),
                 dealt.draw(p0, p0, "c", c.type.shape)),
            p1: (dealt.draw(p1, p1, "a", shape_a), dealt.draw(p1, p1, "b", shape_b),
                 ctx.xfer(c1, p1, "triple correction", ring))}


def truncate(ctx, device, x, bits):
    """Shares of x / 2^bits (TruncPr with dealer-made r, msb(r) and r's truncated low bits;
    on an ``offline: he`` device the dealer-free truncation of ``dealerfree.truncate``)."""
    if device.offline == "he":
        return dealer_free_truncate(ctx, device, x, bits)
    p0, p1 = parties(device)
    shape = x[p0].type.shape
    dealt = Dealt(ctx, device, ("r", "msb", "low"))

    def draw(party, owner, name):
        return dealt.draw(party, owner, name, shape)

    r = ctx.emit(DEALER, "add", [draw(DEALER, p0, "r"), draw(DEALER, p1, "r")], "plain")
    msb = ctx.emit(DEALER, "lshr", [r], "plain", {"bits": 63})
    low = ctx.emit(DEALER, "lshr", [ctx.emit(DEALER, "shl", [r], "plain", {"bits": 1})],
                   "plain", {"bits": bits + 1})
    msb1 = ctx.emit(DEALER, "sub", [msb, draw(DEALER, p0, "msb")], "arith")
    low1 = ctx.emit(DEALER, "sub", [low, draw(DEALER, p0, "low")], "arith")
    mine = {p0: (draw(p0, p0, "r"), draw(p0, p0, "msb"), draw(p0, p0, "low")),
            p1: (draw(p1, p1, "r"), ctx.xfer(msb1, p1, "truncation pair correction", "arith"),
                 ctx.xfer(low1, p1, "truncation pair correction", "arith"))}
    masked = {}
    for p in (p0, p1):
        xs = x[p]
        if p == p0:
            xs = ctx.emit(p, "add", [xs, u64(ctx, p, 1 << TRUNC_OFFSET)], "arith")
        masked[p] = ctx.emit(p, "add", [xs, mine[p][0]], "masked")
    (c,) = open_values(ctx, device, (masked, "masked value (x + r) for truncation"))
    return {p: ctx.emit(p, "truncpr_finish", [c[p], mine[p][1], mine[p][2]], "arith",
                        {"bits": bits, "first": p == p0}) for p in (p0, p1)}


def dealer_truncation_cost(size):
    """Declared cost of ``truncate`` on a dealer device for ``size`` elements: the dealer
    sends the msb and low corrections; each party opens x + r (one round)."""
    return Cost(RING_BYTES * size * 4, 1)
