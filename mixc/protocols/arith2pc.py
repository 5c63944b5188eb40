"""Two-party semi-honest additive sharing over Z_2^64 with fixed point.

A secret x is held as shares x0 + x1 = x (mod 2^64) by the MPC device's two
parties P0 and P1. Floats are fixed point: round(x * 2^f), f the device's
``fraction_bits`` (default 18); int32 values use f = 0.

- Sharing an input: the owner and the other party draw the same PRG words r
  from their pairwise key; the other party's share is r, the owner's is
  x - r. No bytes cross when the owner is an MPC party.
- Linear ops (add, sub, neg, reshape, slice, sums, ...) are local on shares;
  a public operand is added in by P0 only.
- Products (mul, dot_general) use Beaver triples from a dealer, compressed
  with PRG seeds: the dealer shares a key with each party, so P0's triple
  and P1's a1, b1 come from PRG streams and the dealer sends P1 only the
  correction c1 = a*b - c0.
- Truncation after a fixed-point product is the dealer-assisted TruncPr of
  Escudero et al. (CRYPTO 2020): with r from the dealer, open c = x + 2^62 + r
  and fix the wrap of the top bit with the dealer's shares of msb(r). For
  |x| < 2^62 (values below 2^(62-2f) in magnitude before truncation, i.e.
  |value| < 2^26 at f = 18) the result is x / 2^f with an error of at most
  one unit in the last place (2^-f), never a wrap-around.
"""
import numpy as np

from ..errors import MixcError
from ..ir import ops as irops
from ..passes.lower import DEALER, seed_name
from . import Cost, register

PROTOCOL = "arith2pc"
RING_BYTES = 8
TRUNC_OFFSET = 62  # x + 2^62 is non-negative for |x| < 2^62


def _device(ctx, value):
    return ctx.source.devices[value.type.place]


def frac_bits(device, dtype):
    if dtype == "f32":
        return device.fraction_bits
    if dtype in ("i32",):
        return 0
    raise NotImplementedError(f"{dtype} values on MPC device {device.name}")


def _parties(device):
    if len(device.parties) != 2:
        raise MixcError(f"{PROTOCOL} runs on two parties; MPC device {device.name} has "
                        f"{len(device.parties)}")
    return device.parties


def _two_party(node, module):
    for v in list(node.results) + list(node.operands):
        d = module.devices[v.type.place]
        if d.kind == "MPC" and len(d.parties) != 2:
            return False
    return True


# ------------------------------------------------------------ local helpers

def _u64(ctx, party, value):
    return ctx.const(party, np.uint64(value % (1 << 64)))


def _encoded_public(ctx, party, value, frac):
    """A public plaintext value at ``party`` as a ring element (not a share)."""
    return ctx.emit(party, "encode", [value], "public", {"frac_bits": frac})


def _zero_share(ctx, party, shape):
    zero = _u64(ctx, party, 0)
    return ctx.emit(party, "broadcast_in_dim", [zero], "arith",
                    {"shape": tuple(shape), "broadcast_dimensions": ()})


def _shares_of(ctx, value, device):
    """Shares of ``value`` at both parties; a public value becomes (encode, 0)."""
    p0, p1 = _parties(device)
    if value.type.kind == "arith":
        return ctx.parts[value]
    f = frac_bits(device, value.type.dtype)
    return {p0: _encoded_public(ctx, p0, ctx.parts[value][p0], f),
            p1: _zero_share(ctx, p1, value.type.shape)}


# ------------------------------------------------------------ share / reveal

def _lower_share(ctx, node):
    (x,) = node.operands
    device = _device(ctx, node.result)
    p0, p1 = _parties(device)
    (owner,) = ctx.device_of(x).parties
    f = frac_bits(device, x.type.dtype)
    encoded = ctx.emit(owner, "encode", [ctx.parts[x][owner]], "plain", {"frac_bits": f})
    shape = x.type.shape
    if owner in (p0, p1):
        other = p1 if owner == p0 else p0
        seed = seed_name(owner, other)
        stream = ctx.stream(seed)
        mask_at_owner = ctx.random(owner, seed, shape, stream)
        ctx.parts[node.result] = {
            owner: ctx.emit(owner, "sub", [encoded, mask_at_owner], "arith"),
            other: ctx.random(other, seed, shape, stream)}
    else:
        seed = seed_name(owner, p0)
        stream = ctx.stream(seed)
        share0 = ctx.random(owner, seed, shape, stream)
        share1 = ctx.emit(owner, "sub", [encoded, share0], "arith")
        ctx.parts[node.result] = {p0: ctx.random(p0, seed, shape, stream),
                                  p1: ctx.xfer(share1, p1, "share", "arith")}


def _share_cost(node, module):
    (x,) = node.operands
    (owner,) = module.devices[x.type.place].parties
    inside = owner in module.devices[node.result.type.place].parties
    return Cost(0, 0) if inside else Cost(x.type.size * RING_BYTES, 1)


def _lower_reveal(ctx, node):
    (x,) = node.operands
    device = _device(ctx, x)
    (dst,) = ctx.device_of(node.result).parties
    shares = ctx.parts[x]
    received = [s if p == dst else ctx.xfer(s, dst, "share (reveal)", "arith")
                for p, s in shares.items()]
    total = ctx.emit(dst, "add", received, "plain")
    f = frac_bits(device, x.type.dtype)
    ctx.parts[node.result] = {dst: ctx.emit(dst, "decode", [total], "plain",
                                            {"frac_bits": f, "dtype": x.type.dtype})}


def _reveal_cost(node, module):
    (x,) = node.operands
    (dst,) = module.devices[node.result.type.place].parties
    senders = sum(1 for p in module.devices[x.type.place].parties if p != dst)
    return Cost(senders * x.type.size * RING_BYTES, 1)


# ------------------------------------------------------------ linear ops

def _lower_linear(ctx, node):
    """Ops that are linear in the shares: apply them to each share."""
    device = _device(ctx, node.result)
    p0, p1 = _parties(device)
    attrs = {k: v for k, v in node.attrs.items() if k != "protocol"}
    kinds = [v.type.kind for v in node.operands]
    pieces = {}
    if node.op in ("add", "sub") and "public" in kinds:
        a, b = node.operands
        shared, public = (a, b) if a.type.kind == "arith" else (b, a)
        for p in (p0, p1):
            s = ctx.parts[shared][p]
            if p == p0:
                enc = _encoded_public(ctx, p, ctx.parts[public][p],
                                      frac_bits(device, public.type.dtype))
                operands = [s, enc] if a is shared else [enc, s]
                pieces[p] = ctx.emit(p, node.op, operands, "arith")
            elif node.op == "sub" and b is shared:
                pieces[p] = ctx.emit(p, "neg", [s], "arith")
            else:
                pieces[p] = s
    elif node.op == "pad":
        x, pad_value = node.operands
        if pad_value.type.kind != "public":
            raise NotImplementedError("pad with a secret padding value on MPC")
        f = frac_bits(device, x.type.dtype)
        for p in (p0, p1):
            fill = (_encoded_public(ctx, p, ctx.parts[pad_value][p], f) if p == p0
                    else _u64(ctx, p, 0))
            pieces[p] = ctx.emit(p, "pad", [ctx.parts[x][p], fill], "arith", attrs)
    else:
        shares = [_shares_of(ctx, v, device) for v in node.operands]
        for p in (p0, p1):
            pieces[p] = ctx.emit(p, node.op, [s[p] for s in shares], "arith", attrs)
    ctx.parts[node.result] = pieces


def _lower_convert(ctx, node):
    (x,) = node.operands
    device = _device(ctx, x)
    f = frac_bits(device, "f32")
    ctx.parts[node.result] = {p: ctx.emit(p, "shl", [s], "arith", {"bits": f})
                              for p, s in ctx.parts[x].items()}


# ------------------------------------------------------------ products

def _dealer_streams(ctx, device, names):
    """Fresh PRG streams, per party, for the dealer's correlated randomness."""
    ctx.add_party(DEALER)
    out = {}
    for p in _parties(device):
        seed = seed_name(p, DEALER)
        out[p] = (seed, {n: ctx.stream(seed) for n in names})
    return out


def _triple(ctx, device, shape_a, shape_b, product):
    """Beaver triple shares {party: (a, b, c)} with c = product(a, b); the dealer sends c1 only."""
    p0, p1 = _parties(device)
    streams = _dealer_streams(ctx, device, ("a", "b", "c"))

    def draw(party, owner, name, shape):
        seed, ids = streams[owner]
        return ctx.random(party, seed, shape, ids[name])

    a0, b0 = draw(DEALER, p0, "a", shape_a), draw(DEALER, p0, "b", shape_b)
    a1, b1 = draw(DEALER, p1, "a", shape_a), draw(DEALER, p1, "b", shape_b)
    a = ctx.emit(DEALER, "add", [a0, a1], "plain")
    b = ctx.emit(DEALER, "add", [b0, b1], "plain")
    c = product(DEALER, a, b, "plain")
    c0 = draw(DEALER, p0, "c", c.type.shape)
    c1 = ctx.emit(DEALER, "sub", [c, c0], "arith")
    return {p0: (draw(p0, p0, "a", shape_a), draw(p0, p0, "b", shape_b),
                 draw(p0, p0, "c", c.type.shape)),
            p1: (draw(p1, p1, "a", shape_a), draw(p1, p1, "b", shape_b),
                 ctx.xfer(c1, p1, "triple correction", "arith"))}


def _open(ctx, device, *openings):
    """Open each (pieces, what) to both parties: send everything first, then add.

    All sends of one round go out before any value is used, so the openings
    cost one round together."""
    p0, p1 = _parties(device)
    received = [{p1: ctx.xfer(pieces[p0], p1, what, "masked"),
                 p0: ctx.xfer(pieces[p1], p0, what, "masked")} for pieces, what in openings]
    return [{p: ctx.emit(p, "add", [pieces[p], got[p]], "masked") for p in (p0, p1)}
            for (pieces, _), got in zip(openings, received)]


def _beaver(ctx, device, x, y, product):
    """Shares of product(x, y) for secret x, y: one round, masked operands opened."""
    p0, p1 = _parties(device)
    t = _triple(ctx, device, x[p0].type.shape, y[p0].type.shape, product)
    e, f = _open(ctx, device,
                 ({p: ctx.emit(p, "sub", [x[p], t[p][0]], "masked") for p in (p0, p1)},
                  "masked operand (x - a)"),
                 ({p: ctx.emit(p, "sub", [y[p], t[p][1]], "masked") for p in (p0, p1)},
                  "masked operand (y - b)"))
    out = {}
    for p in (p0, p1):
        a, b, c = t[p]
        # z = c + e*b + a*f (+ e*f at P0); P0 folds e*f into e*(b + f).
        rhs = ctx.emit(p, "add", [b, f[p]], "masked") if p == p0 else b
        z = ctx.emit(p, "add", [c, product(p, e[p], rhs, "arith")], "arith")
        out[p] = ctx.emit(p, "add", [z, product(p, a, f[p], "arith")], "arith")
    return out


def _truncate(ctx, device, x, bits):
    """Shares of x / 2^bits (TruncPr with dealer-made r, msb(r) and r's truncated low bits)."""
    p0, p1 = _parties(device)
    shape = x[p0].type.shape
    streams = _dealer_streams(ctx, device, ("r", "msb", "low"))

    def draw(party, owner, name):
        seed, ids = streams[owner]
        return ctx.random(party, seed, shape, ids[name])

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
            xs = ctx.emit(p, "add", [xs, _u64(ctx, p, 1 << TRUNC_OFFSET)], "arith")
        masked[p] = ctx.emit(p, "add", [xs, mine[p][0]], "masked")
    (c,) = _open(ctx, device, (masked, "masked value (x + r) for truncation"))
    out = {}
    for p in (p0, p1):
        r_i, msb_i, low_i = mine[p]
        c_low = ctx.emit(p, "lshr", [ctx.emit(p, "shl", [c[p]], "masked", {"bits": 1})],
                         "masked", {"bits": bits + 1})
        c_msb = ctx.emit(p, "lshr", [c[p]], "masked", {"bits": 63})
        # wrap bit b = c_msb xor msb(r) = c_msb + msb - 2 c_msb msb (c_msb public)
        cross = ctx.emit(p, "shl", [ctx.emit(p, "mul", [c_msb, msb_i], "arith")], "arith", {"bits": 1})
        b = ctx.emit(p, "sub", [msb_i, cross], "arith")
        if p == p0:
            b = ctx.emit(p, "add", [b, c_msb], "arith")
        y = ctx.emit(p, "sub", [ctx.emit(p, "shl", [b], "arith", {"bits": 63 - bits}), low_i], "arith")
        if p == p0:
            y = ctx.emit(p, "add", [y, c_low], "arith")
            y = ctx.emit(p, "sub", [y, _u64(ctx, p, 1 << (TRUNC_OFFSET - bits))], "arith")
        out[p] = y
    return out


def _product_fn(ctx, node):
    attrs = {k: v for k, v in node.attrs.items() if k != "protocol"}

    def product(party, a, b, kind):
        return ctx.emit(party, node.op, [a, b], kind, attrs)
    return product


def _lower_product(ctx, node):
    device = _device(ctx, node.result)
    p0, p1 = _parties(device)
    a, b = node.operands
    f = frac_bits(device, node.result.type.dtype)
    product = _product_fn(ctx, node)
    if a.type.kind == "arith" and b.type.kind == "arith":
        z = _beaver(ctx, device, ctx.parts[a], ctx.parts[b], product)
    else:
        z = {}
        for p in (p0, p1):
            pieces = [ctx.parts[v][p] if v.type.kind == "arith"
                      else _encoded_public(ctx, p, ctx.parts[v][p], f) for v in (a, b)]
            z[p] = product(p, pieces[0], pieces[1], "arith")
    ctx.parts[node.result] = _truncate(ctx, device, z, f) if f else z


def _lower_div(ctx, node):
    """x / c for public c: x times the public reciprocal 1/c."""
    device = _device(ctx, node.result)
    x, c = node.operands
    if node.result.type.dtype != "f32":
        raise NotImplementedError(f"integer division on MPC device {device.name}")
    f = frac_bits(device, "f32")
    z = {}
    for p in _parties(device):
        one = ctx.const(p, np.float32(1.0))
        recip = ctx.emit(p, "div", [one, ctx.parts[c][p]], "public")
        z[p] = ctx.emit(p, "mul", [ctx.parts[x][p], _encoded_public(ctx, p, recip, f)], "arith")
    ctx.parts[node.result] = _truncate(ctx, device, z, f)


# ------------------------------------------------------------ costs

def _words(t):
    return t.size


def _trunc_cost(shape_size):
    # dealer sends msb and low corrections; each party opens x + r
    return Cost(RING_BYTES * shape_size * 4, 1)


def _product_cost(node, module):
    a, b = node.operands
    f = frac_bits(module.devices[node.result.type.place], node.result.type.dtype)
    out = node.result.type.size
    cost = Cost()
    if a.type.kind == "arith" and b.type.kind == "arith":
        # dealer's c1, then each party opens both masked operands
        cost = Cost(RING_BYTES * (out + 2 * (_words(a.type) + _words(b.type))), 1)
    return cost + (_trunc_cost(out) if f else Cost())


def _div_cost(node, module):
    return _trunc_cost(node.result.type.size)


def _free(node, module):
    return Cost()


# ------------------------------------------------------------ registration

def _secret_any(kinds, node, module):
    return "arith" in kinds and all(k in ("arith", "public") for k in kinds) \
        and _two_party(node, module)


def _secret_first(kinds, node, module):
    return kinds[:1] == ("arith",) and all(k == "public" for k in kinds[1:]) \
        and _two_party(node, module)


register(PROTOCOL, "to", device="MPC", accepts=lambda k, n, m: k == ("plain",) and _two_party(n, m),
         result_kind="arith", cost=_share_cost, lower=_lower_share,
         doc="share a party's plaintext: PRG mask from the pairwise key")
register(PROTOCOL, "reveal", device="PYU", accepts=lambda k, n, m: k == ("arith",) and _two_party(n, m),
         result_kind="plain", cost=_reveal_cost, lower=_lower_reveal,
         doc="open to one party: the others send it their shares")
for _op in ("add", "sub", "neg", "reduce_sum", "broadcast_in_dim", "reshape", "transpose",
            "squeeze", "slice", "concatenate"):
    register(PROTOCOL, _op, device="MPC", accepts=_secret_any, result_kind="arith",
             cost=_free, lower=_lower_linear, doc="local on shares")
register(PROTOCOL, "pad", device="MPC", accepts=_secret_first, result_kind="arith",
         cost=_free, lower=_lower_linear, doc="local on shares; P0 pads with the value")
def _int_to_fixed(kinds, node, module):
    return _secret_first(kinds, node, module) and node.operands[0].type.dtype == "i32" \
        and node.attrs["new_dtype"] == "f32"


register(PROTOCOL, "convert_element_type", device="MPC", accepts=_int_to_fixed,
         result_kind="arith", cost=_free, lower=_lower_convert, doc="i32 to fixed point: shift")
for _op in ("mul", "dot_general"):
    register(PROTOCOL, _op, device="MPC", accepts=_secret_any, result_kind="arith",
             cost=_product_cost, lower=_lower_product,
             doc="Beaver product from dealer triples, then TruncPr for fixed point")
register(PROTOCOL, "div", device="MPC", accepts=_secret_first, result_kind="arith",
         cost=_div_cost, lower=_lower_div, doc="times the public reciprocal, then TruncPr")
