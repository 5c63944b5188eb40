"""Three-party replicated arithmetic sharing (ABY3 style, honest majority, no dealer).

Trust: three parties P0, P1, P2 (the MPC device's domain, in order), at most
one of them corrupt (semi-honest). Any one party learns nothing; two
colluding parties learn everything (together they hold all three shares).

A secret x in Z_2^64 (fixed point with the device's ``fraction_bits`` as in
``arith2pc``) is x = x0 + x1 + x2; party Pi holds the pair (x_i, x_{i+1})
(indices mod 3), so every share is held by two parties. In ``ctx.parts`` a
replicated value is ``{party: (first, second)}``: two local values per party.
The pairwise PRG keys ``"a~b"`` of the executor are the only randomness: no
dealer, no offline phase.

- Input sharing from an MPC party Pi: x_i comes from the key P(i-1)~Pi and
  x_{i+1} from Pi~P(i+1) (drawn by both holders, nothing sent); Pi sends the
  third share x - x_i - x_{i+1} to the two others (two ring elements per
  element, one round). From a party outside the device: it draws the three
  shares itself and sends each party its pair.
- Linear ops are local on both components; a public constant is added to x0
  only (held by P0 as first, P2 as second).
- Products (mul, dot_general, conv_general_dilated): Pi computes the 3-out-of-3 share
  z_i = x_i y_i + x_i y_{i+1} + x_{i+1} y_i + a_i with the zero sharing
  a_i = F(Pi~P(i+1)) - F(P(i-1)~Pi) from the pairwise PRGs, and sends z_i to
  P(i-1): one round, one ring element per party per product element.
- Truncation (fixed-point products): the TruncPr of Escudero et al. (CRYPTO
  2020), as the 2-party protocols run it with a dealer (``correlations``),
  with P2 as the dealer of P0 and P1 (``common.truncpr_*``). P2 draws
  r = r02 + r12 from its keys with P0 and P1 (for a product, plus a mask g
  of its own), computes msb(r) and r's bits f..k-2, and sends P1 their
  corrections (shares of P0: from the key P0~P2); these two messages do not
  depend on data. P0 and P1 open c = z + 2^(k-2) + r to each other, finish
  with ``truncpr_finish`` and re-replicate as (r02', t0 - r02' + t1 - r12',
  r12'), swapping their masked halves of the middle share. For a product's
  3-out-of-3 sharing z = z0 + z1 + z2, P2's part is folded into the
  opening: P2 sends z2 + g to P0 and to P1 in the round in which P0 sends
  z0 + 2^(k-2) + r02 and P1 z1 + r12, so a fixed-point product takes two
  rounds (the opening, the swap). Every message is masked by randomness its
  receiver lacks: P0 receives z1 + r12 (key P1~P2), z2 + g (P2's own) and
  the swap t1 - r12' (key P1~P2); P1 receives z0 + ... + r02 and the
  corrections (key P0~P2), z2 + g, and t0 - r02'; c = z + 2^(k-2) + r is
  uniform to both, and P2 receives nothing (it never sees c). Per product
  element: eight ring elements (two of them the data-independent
  corrections), two rounds; ``truncate`` of a replicated value (product or
  division by a public value): six elements, two rounds (x0 + x1 from P0, x2
  from P1). The alternative fold, P2 first sending z2 + g' to P1 alone (a
  2-out-of-2 sharing, as ABY3 does), saves one element but costs a third
  round. The msb(r) correction stays a ring element: ``truncpr_finish``
  takes arithmetic shares of msb(r), and a bit-packed (XOR) share would
  need a product to convert. **Error bound**: for |z| < 2^(k-2) the result
  is floor(z / 2^f) or floor(z / 2^f) + 1 (within one unit in the last
  place, 2^-f, of z / 2^f), with no failure probability: the top bit's
  wrap is fixed with msb(r), never left to chance (ABY3's share truncation,
  used here before, was off by about 2^(k-f) with probability
  2^(l+1-k) per element for |z| < 2^l).
- Reveal (``relay_open``): one party sends a relay the share the relay
  lacks, masked by m from its key with the destination; the relay sends the
  destination the sum of all three shares plus m. Two elements per element,
  two rounds (one message straight from P(i+1) would do for a destination
  Pi, but then a linear output's message and the destination's own input
  share carry the same PRG word, which the disclosure check reads as a
  two-time pad; relayed, every message is plainly uniform or value + mask).
- select_n(p, f, t) = f + p (t - f) with p a 0/1 share: one product, no
  truncation. Comparisons, logic and conversions are ``rep3bool``'s.

On ``ring: 128`` (``ring.Ring``: u128 elements, fraction bits up to 48) the
sharing, linear ops, products, matrix products and their truncation, ``div`` by a
public value, ``select_n`` and the reveal run unchanged (``rep3bool``: comparisons and
conversions on 128-bit words). Loops stay loops: a
loop carries both components of every party's pair (``passes.lower``).
"""
from functools import partial

import numpy as np

from ..errors import MixcError
from ..passes.lower import seed_name
from . import Cost, register, register_public_sharing
from .common import frac_bits, ring_bytes, truncpr_dealt, truncpr_finish, truncpr_offset
from .ring import Ring, ring_of
from .shares import run_time_slice_rule

PROTOCOL = "rep3"
PROTOCOLS = ("rep3", "rep3.bool")  # the 3-party rules: these and rep3bool's
RING_BYTES = 8


# ------------------------------------------------------------ parties and keys

def trio(device):
    """The device's three parties, in the order the shares are numbered."""
    if len(device.parties) != 3:
        raise MixcError(f"3-party protocols need three parties; MPC device {device.name} has "
                        f"{len(device.parties)}")
    if device.offline == "he":
        raise MixcError(f"MPC device {device.name}: offline: he (HE and OT between two parties) "
                        "is for 2-party devices; a 3-party device shares replicated (honest "
                        "majority) and needs no correlated randomness: drop the option")
    return tuple(device.parties)


def three_party(node, module):
    """Whether every MPC device ``node`` touches has three parties (and at least one does)."""
    found = False
    for v in list(node.results) + list(node.operands):
        d = module.devices[v.type.place]
        if d.kind == "MPC":
            if len(d.parties) != 3:
                return False
            found = True
    return found


def _device(ctx, value):
    return ctx.source.devices[value.type.place]


def pair_random(ctx, a, b, shape, ring=Ring(64)):
    """The same uniform elements of ``ring`` drawn at ``a`` and at ``b`` from their pairwise
    key."""
    seed = seed_name(a, b)
    stream = ctx.stream(seed)
    return {p: ring.random(ctx, p, seed, shape, stream) for p in (a, b)}


def _zero_sharing(ctx, ps, shape, ring):
    """{Pi: a_i} with a0 + a1 + a2 = 0: a_i = F(Pi~P(i+1)) - F(P(i-1)~Pi)."""
    draws = [pair_random(ctx, ps[i], ps[(i + 1) % 3], shape, ring) for i in range(3)]
    return {ps[i]: ctx.emit(ps[i], "sub", [draws[i][ps[i]], draws[(i - 1) % 3][ps[i]]], "arith")
            for i in range(3)}


# ------------------------------------------------------------ local helpers

def _each(ctx, x, op, attrs=None, others=()):
    """``op`` applied to both components of every party's pair (with the pairs of
    ``others`` as further operands, component by component)."""
    return {p: tuple(ctx.emit(p, op, [x[p][k]] + [o[p][k] for o in others], "arith", attrs)
                     for k in range(2)) for p in x}


def _encoded(ctx, party, value, frac, device):
    return ring_of(device).encode(ctx, party, value, frac, "public")


def _zeros(ctx, party, shape, ring):
    zero = ring.const(ctx, party, 0)
    return ctx.emit(party, "broadcast_in_dim", [zero], "arith",
                    {"shape": tuple(shape), "broadcast_dimensions": ()})


def public_shares(ctx, value, device):
    """A public value as replicated shares: x0 = encode(value), x1 = x2 = 0."""
    ps = trio(device)
    f = frac_bits(device, value.type.dtype)
    shape = value.type.shape
    enc = {p: _encoded(ctx, p, ctx.parts[value][p], f, device) for p in (ps[0], ps[2])}
    ring = ring_of(device)
    return {ps[0]: (enc[ps[0]], _zeros(ctx, ps[0], shape, ring)),
            ps[1]: (_zeros(ctx, ps[1], shape, ring), _zeros(ctx, ps[1], shape, ring)),
            ps[2]: (_zeros(ctx, ps[2], shape, ring), enc[ps[2]])}


def shares_of(ctx, value, device):
    return ctx.parts[value] if value.type.kind == "arith" else public_shares(ctx, value, device)


def _with_public(ctx, device, shared, public, op, public_first):
    """shared (op) public: only the x0 component changes (P0's first, P2's second)."""
    ps = trio(device)
    f = frac_bits(device, public.type.dtype)
    out = {}
    for i, p in enumerate(ps):
        first, second = ctx.parts[shared][p]
        comps = [first, second]
        k = {0: 0, 2: 1}.get(i)
        if k is not None:
            enc = _encoded(ctx, p, ctx.parts[public][p], f, device)
            operands = [enc, comps[k]] if public_first else [comps[k], enc]
            comps[k] = ctx.emit(p, op, operands, "arith")
        if op == "sub" and public_first:
            comps = [c if (j == k) else ctx.emit(p, "neg", [c], "arith")
                     for j, c in enumerate(comps)]
        out[p] = tuple(comps)
    return out


# ------------------------------------------------------------ share / reveal

def _lower_share(ctx, node):
    (x,) = node.operands
    device = _device(ctx, node.result)
    ring = ring_of(device)
    ps = trio(device)
    (owner,) = ctx.device_of(x).parties
    f = frac_bits(device, x.type.dtype)
    shape = x.type.shape
    encoded = ring.encode(ctx, owner, ctx.parts[x][owner], f, "plain")
    if owner in ps:
        i = ps.index(owner)
        nxt, prv = ps[(i + 1) % 3], ps[(i - 1) % 3]
        mine = pair_random(ctx, prv, owner, shape, ring)      # x_i: held by P(i-1) and Pi
        following = pair_random(ctx, owner, nxt, shape, ring)  # x_{i+1}: Pi and P(i+1)
        rest = ctx.emit(owner, "sub", [ctx.emit(owner, "sub", [encoded, mine[owner]], "arith"),
                                       following[owner]], "arith")
        ctx.parts[node.result] = {
            owner: (mine[owner], following[owner]),
            nxt: (following[nxt], ctx.xfer(rest, nxt, "replicated share", "arith")),
            prv: (ctx.xfer(rest, prv, "replicated share", "arith"), mine[prv])}
        return
    seed = seed_name(owner)
    s0, s1 = (ring.random(ctx, owner, seed, shape, ctx.stream(seed)) for _ in range(2))
    s2 = ctx.emit(owner, "sub", [ctx.emit(owner, "sub", [encoded, s0], "arith"), s1], "arith")
    shares = (s0, s1, s2)
    ctx.parts[node.result] = {
        p: tuple(ctx.xfer(shares[(i + k) % 3], p, "replicated share", "arith") for k in range(2))
        for i, p in enumerate(ps)}


def _share_cost(node, module):
    (x,) = node.operands
    (owner,) = module.devices[x.type.place].parties
    inside = owner in module.devices[node.result.type.place].parties
    return Cost(ring_bytes(module, node.result) * x.type.size * (2 if inside else 6), 1)


def _lower_reveal(ctx, node):
    (x,) = node.operands
    device = _device(ctx, x)
    (dst,) = ctx.device_of(node.result).parties
    total = relay_open(ctx, trio(device), ctx.parts[x], dst, x.type.shape, "add",
                       partial(pair_random, ring=ring_of(device)))
    ctx.parts[node.result] = {dst: ctx.emit(dst, "decode", [total], "plain",
                                            {"frac_bits": frac_bits(device, x.type.dtype),
                                             "dtype": x.type.dtype})}


def relay_open(ctx, ps, shares, dst, shape, combine, draw):
    """The value of replicated ``shares`` (combined by ``combine``: add or xor) at ``dst``.

    One party S sends a relay R the share R lacks, masked by m from the key S~dst; R sends
    dst the three shares combined with m, and dst removes m. Every message is uniform to
    its receiver or the value plus a mask the receiver knows (so each is seen to disclose
    nothing but the value), two rounds. For dst = Pi inside the device S = P(i+2) and
    R = P(i+1) (S sends x_i, which it holds with dst); outside, S = P1 and R = P0.
    ``draw(ctx, a, b, shape)``: PRG values from the key a~b."""
    unmask, kind = ("sub", "arith") if combine == "add" else ("xor", "bool")
    if dst in ps:
        i = ps.index(dst)
        sender, relay = ps[(i + 2) % 3], ps[(i + 1) % 3]
    else:
        sender, relay = ps[1], ps[0]
    m = draw(ctx, sender, dst, shape)
    # the sender's second share is the one the relay lacks (x_i, or x2 for P0)
    masked = ctx.xfer(ctx.emit(sender, combine, [shares[sender][1], m[sender]], kind),
                      relay, "masked share (relayed to open a value)", kind)
    own = ctx.emit(relay, combine, list(shares[relay]), kind)
    got = ctx.xfer(ctx.emit(relay, combine, [own, masked], kind), dst,
                   "masked value (reveal)", kind)
    return ctx.emit(dst, unmask, [got, m[dst]], "plain")


def _reveal_cost(node, module):
    return Cost(2 * ring_bytes(module, node.operands[0]) * node.operands[0].type.size, 2)


# ------------------------------------------------------------ linear ops

def _lower_linear(ctx, node):
    device = _device(ctx, node.result)
    attrs = {k: v for k, v in node.attrs.items() if k != "protocol"}
    kinds = [v.type.kind for v in node.operands]
    if node.op in ("add", "sub") and "public" in kinds:
        a, b = node.operands
        shared, public = (a, b) if a.type.kind == "arith" else (b, a)
        ctx.parts[node.result] = _with_public(ctx, device, shared, public, node.op, b is shared)
        return
    if node.op == "pad":
        x, fill = node.operands
        if fill.type.kind != "public":
            raise NotImplementedError("pad with a secret padding value on 3-party MPC")
        ps = trio(device)
        f = frac_bits(device, x.type.dtype)
        out = {}
        for i, p in enumerate(ps):
            fills = [ring_of(device).const(ctx, p, 0)] * 2
            k = {0: 0, 2: 1}.get(i)
            if k is not None:
                fills[k] = _encoded(ctx, p, ctx.parts[fill][p], f, device)
            out[p] = tuple(ctx.emit(p, "pad", [ctx.parts[x][p][j], fills[j]], "arith", attrs)
                           for j in range(2))
        ctx.parts[node.result] = out
        return
    shares = [shares_of(ctx, v, device) for v in node.operands]
    ctx.parts[node.result] = _each(ctx, shares[0], node.op, attrs, shares[1:])


def _lower_convert(ctx, node):
    """Integers and 0/1 bools to fixed point or int: a local shift of both components."""
    (x,) = node.operands
    device = _device(ctx, x)
    shift = frac_bits(device, node.attrs["new_dtype"]) - frac_bits(device, x.type.dtype)
    ctx.parts[node.result] = (_each(ctx, ctx.parts[x], "shl", {"bits": shift}) if shift
                              else ctx.parts[x])


# ------------------------------------------------------------ products

def cross_terms(ctx, ps, x, y, product):
    """Pi's 3-out-of-3 share of product(x, y) before masking:
    x_i y_i + x_i y_{i+1} + x_{i+1} y_i = x_i (y_i + y_{i+1}) + x_{i+1} y_i."""
    out = {}
    for p in ps:
        (x0, x1), (y0, y1) = x[p], y[p]
        both = ctx.emit(p, "add", [y0, y1], "arith")
        out[p] = ctx.emit(p, "add", [product(p, x0, both), product(p, x1, y0)], "arith")
    return out


def reshare(ctx, device, z):
    """Replicated shares of sum(z) for a 3-out-of-3 sharing z: each party adds its part of a
    zero sharing and sends the result to the party before it (one round)."""
    ps = trio(device)
    shape = z[ps[0]].type.shape
    alpha = _zero_sharing(ctx, ps, shape, ring_of(device))
    masked = {p: ctx.emit(p, "add", [z[p], alpha[p]], "arith") for p in ps}
    return {p: (masked[p], ctx.xfer(masked[ps[(i + 1) % 3]], p, "re-shared product", "arith"))
            for i, p in enumerate(ps)}


def truncate_3of3(ctx, device, z, bits):
    """Replicated shares of z / 2^bits for a 3-out-of-3 sharing z, exactly (TruncPr, the
    module docstring): P2 folds its part into the opening, masked by randomness of its own
    that joins r, and sends it to P0 and P1 in the round where they exchange theirs."""
    ps = trio(device)
    p0, p1, p2 = ps
    ring = ring_of(device)
    seed = seed_name(p2)
    own = ring.random(ctx, p2, seed, z[p2].type.shape, ctx.stream(seed))
    folded = ctx.emit(p2, "add", [z[p2], own], "arith")
    return _truncate_opened(ctx, ps, z[p0], z[p1], bits, ring, (folded, own))


def truncate(ctx, device, x, bits):
    """Replicated shares of x / 2^bits for replicated x: P0 opens x0 + x1 and P1 x2 (plus
    the masks) to each other, then ``_truncate_opened``'s finish (two rounds)."""
    ps = trio(device)
    a = ctx.emit(ps[0], "add", list(x[ps[0]]), "arith")
    return _truncate_opened(ctx, ps, a, x[ps[1]][1], bits, ring_of(device))


def _truncate_opened(ctx, ps, a, b, bits, ring, from_p2=None):
    """Replicated shares of (a + b (+ P2's part)) / 2^bits, a at P0 and b at P1: P2 deals
    the TruncPr correlation (r = r02 + r12 (+ P2's own mask), msb(r) and r's low bits)
    and P0 and P1 open c = x + 2^(k-2) + r to each other, finish, and re-replicate.
    ``from_p2``: (P2's part plus its own mask, that mask), or None."""
    p0, p1, p2 = ps
    shape = a.type.shape
    r02, m0, low0 = (pair_random(ctx, p0, p2, shape, ring) for _ in range(3))
    r12 = pair_random(ctx, p1, p2, shape, ring)
    r = ctx.emit(p2, "add", [r02[p2], r12[p2]], "arith")
    if from_p2 is not None:
        r = ctx.emit(p2, "add", [r, from_p2[1]], "arith")
    msb, low = truncpr_dealt(ctx, p2, r, bits, ring, "arith")
    # data-independent: these go out before any opening
    corrections = [ctx.xfer(ctx.emit(p2, "sub", [v, mask[p2]], "arith"), p1,
                            "truncation pair correction", "arith")
                   for v, mask in ((msb, m0), (low, low0))]
    masked = {p0: ctx.emit(p0, "add", [ctx.emit(p0, "add", [a, truncpr_offset(ctx, p0, ring)],
                                                "arith"), r02[p0]], "masked"),
              p1: ctx.emit(p1, "add", [b, r12[p1]], "masked")}
    what = "masked value (x + r) for truncation"
    got = {p1: [ctx.xfer(masked[p0], p1, what, "masked")],
           p0: [ctx.xfer(masked[p1], p0, what, "masked")]}
    if from_p2 is not None:
        for p in (p0, p1):
            got[p].append(ctx.xfer(from_p2[0], p, "masked product share (truncation)", "masked"))
    c = {}
    for p in (p0, p1):
        c[p] = masked[p]
        for piece in got[p]:
            c[p] = ctx.emit(p, "add", [c[p], piece], "masked")
    shares = {p0: (m0[p0], low0[p0]), p1: tuple(corrections)}
    t = {p: truncpr_finish(ctx, p, c[p], *shares[p], bits, p == p0) for p in (p0, p1)}
    return _rereplicate(ctx, ps, t[p0], t[p1], ring)


def _rereplicate(ctx, ps, t0, t1, ring):
    """Replicated shares of t0 + t1 (t0 at P0, t1 at P1) as (r02, t0 - r02 + t1 - r12, r12),
    r02 from P0~P2 and r12 from P1~P2: P0 and P1 swap their masked halves of the middle
    share (one round, one element each way)."""
    p0, p1, p2 = ps
    shape = t0.type.shape
    r02, r12 = pair_random(ctx, p0, p2, shape, ring), pair_random(ctx, p1, p2, shape, ring)
    half0 = ctx.emit(p0, "sub", [t0, r02[p0]], "arith")
    half1 = ctx.emit(p1, "sub", [t1, r12[p1]], "arith")
    middle = {p0: ctx.emit(p0, "add", [half0, ctx.xfer(half1, p0, "truncated share", "arith")],
                           "arith"),
              p1: ctx.emit(p1, "add", [ctx.xfer(half0, p1, "truncated share", "arith"), half1],
                           "arith")}
    return {p0: (r02[p0], middle[p0]), p1: (middle[p1], r12[p1]), p2: (r12[p2], r02[p2])}


def _product_fn(ctx, node):
    attrs = {k: v for k, v in node.attrs.items() if k != "protocol"}

    def product(party, a, b):
        return ctx.emit(party, node.op, [a, b], "arith", attrs)
    return product


def _lower_product(ctx, node):
    device = _device(ctx, node.result)
    ps = trio(device)
    a, b = node.operands
    f = frac_bits(device, node.result.type.dtype)
    product = _product_fn(ctx, node)
    if a.type.kind == "arith" and b.type.kind == "arith":
        z = cross_terms(ctx, ps, ctx.parts[a], ctx.parts[b], product)
        ctx.parts[node.result] = truncate_3of3(ctx, device, z, f) if f else reshare(ctx, device, z)
        return
    pieces = {}
    for p in ps:
        pieces[p] = tuple(
            product(p, *[ctx.parts[v][p][k] if v.type.kind == "arith"
                         else _encoded(ctx, p, ctx.parts[v][p], f, device) for v in (a, b)])
            for k in range(2))
    ctx.parts[node.result] = truncate(ctx, device, pieces, f) if f else pieces


def _lower_div(ctx, node):
    """x / c for public c: x times the public reciprocal 1/c, then truncation."""
    device = _device(ctx, node.result)
    x, c = node.operands
    if node.result.type.dtype != "f32":
        raise NotImplementedError(f"integer division on MPC device {device.name}")
    f = frac_bits(device, "f32")
    pieces = {}
    for p in trio(device):
        recip = ctx.emit(p, "div", [ctx.const(p, np.float32(1.0)), ctx.parts[c][p]], "public")
        enc = _encoded(ctx, p, recip, f, device)
        pieces[p] = tuple(ctx.emit(p, "mul", [s, enc], "arith") for s in ctx.parts[x][p])
    ctx.parts[node.result] = truncate(ctx, device, pieces, f)


def _lower_select(ctx, node):
    """select_n(p, f, t) = f + p * (t - f), p a 0/1 share (no fraction bits): one product,
    no truncation (local when both cases are public)."""
    device = _device(ctx, node.result)
    ps = trio(device)
    pred, false_case, true_case = node.operands
    shape = tuple(node.result.type.shape)

    def widened(party, piece):
        if tuple(piece.type.shape) == shape:
            return piece
        return ctx.emit(party, "broadcast_in_dim", [piece], piece.type.kind,
                        {"shape": shape, "broadcast_dimensions": ()})
    f_shares = shares_of(ctx, false_case, device)
    if pred.type.kind == "public":
        # a known 0/1 predicate scales every component alike: local, no product to reshare
        t_shares = shares_of(ctx, true_case, device)

        def chosen(party, mask, t, f):
            diff = ctx.emit(party, "sub", [widened(party, t), widened(party, f)], "arith")
            picked = ctx.emit(party, "mul", [diff, mask], "arith")
            return ctx.emit(party, "add", [widened(party, f), picked], "arith")
        out = {}
        for p in ps:
            mask = widened(p, _encoded(ctx, p, ctx.parts[pred][p], 0, device))
            out[p] = tuple(chosen(p, mask, t, f) for t, f in zip(t_shares[p], f_shares[p]))
        ctx.parts[node.result] = out
        return
    p_shares = {p: tuple(widened(p, s) for s in ctx.parts[pred][p]) for p in ps}
    if false_case.type.kind == "public" and true_case.type.kind == "public":
        frac = frac_bits(device, node.result.type.dtype)
        out = {}
        for p in ps:
            diff = ctx.emit(p, "sub", [ctx.parts[true_case][p], ctx.parts[false_case][p]], "public")
            enc = widened(p, _encoded(ctx, p, diff, frac, device))
            out[p] = tuple(ctx.emit(p, "add", [ctx.emit(p, "mul", [s, enc], "arith"),
                                               widened(p, f)], "arith")
                           for s, f in zip(p_shares[p], f_shares[p]))
        ctx.parts[node.result] = out
        return
    t_shares = shares_of(ctx, true_case, device)
    diff = {p: tuple(ctx.emit(p, "sub", [widened(p, t), widened(p, f)], "arith")
                     for t, f in zip(t_shares[p], f_shares[p])) for p in ps}

    def product(party, u, w):
        return ctx.emit(party, "mul", [u, w], "arith")
    z = reshare(ctx, device, cross_terms(ctx, ps, p_shares, diff, product))
    ctx.parts[node.result] = {p: tuple(ctx.emit(p, "add", [widened(p, f), s], "arith")
                                       for f, s in zip(f_shares[p], z[p])) for p in ps}


# ------------------------------------------------------------ costs

def _free(node, module):
    return Cost()


def _product_cost(node, module):
    a, b = node.operands
    f = frac_bits(module.devices[node.result.type.place], node.result.type.dtype)
    n = node.result.type.size
    if not f:
        # one ring element per party per product element
        return Cost(3 * ring_bytes(module, node.result) * n, 1) \
            if a.type.kind == "arith" and b.type.kind == "arith" else Cost()
    cost = truncation_cost(n, ring_bytes(module, node.result))
    if a.type.kind == "arith" and b.type.kind == "arith":
        # P2's part, folded into the opening, goes to P0 and P1 in its first round
        cost += Cost(2 * ring_bytes(module, node.result) * n)
    return cost


def truncation_cost(n, element_bytes=RING_BYTES):
    """``truncate`` of n replicated elements: the dealt corrections (two elements, to P1,
    off the critical path), the opening of x + r (one element each way) and the
    re-replication swap (one each way): six elements, two rounds."""
    return Cost(6 * element_bytes * n, 2)


def _select_cost(node, module):
    if node.operands[0].type.kind == "public" \
            or all(v.type.kind == "public" for v in node.operands[1:]):
        return Cost()
    return Cost(3 * ring_bytes(module, node.result) * node.result.type.size, 1)


def _div_cost(node, module):
    return truncation_cost(node.result.type.size, ring_bytes(module, node.result))


# ------------------------------------------------------------ registration

def _secret_any(kinds, node, module):
    return "arith" in kinds and all(k in ("arith", "public") for k in kinds) \
        and three_party(node, module)


def _secret_first(kinds, node, module):
    return kinds[:1] == ("arith",) and all(k == "public" for k in kinds[1:]) \
        and three_party(node, module)


def _exact_convert(kinds, node, module):
    return _secret_first(kinds, node, module) and node.attrs["new_dtype"] in ("f32", "i32") \
        and node.operands[0].type.dtype in ("i32", "bool")


def _rule(op, accepts, cost, lower, doc):
    register(PROTOCOL, op, device="MPC", accepts=accepts, result_kind="arith", cost=cost,
             lower=lower, wants="arith", doc=doc)


register(PROTOCOL, "to", device="MPC",
         accepts=lambda k, n, m: k == ("plain",) and three_party(n, m), result_kind="arith",
         cost=_share_cost, lower=_lower_share,
         doc="replicated shares of a party's plaintext: two from pairwise PRGs, one sent")
register(PROTOCOL, "reveal", device="PYU",
         accepts=lambda k, n, m: k == ("arith",) and three_party(n, m), result_kind="plain",
         cost=_reveal_cost, lower=_lower_reveal, wants="arith",
         doc="open to one party: the share it misses, from one other party")
for _op in ("add", "sub", "neg", "reduce_sum", "broadcast_in_dim", "reshape", "transpose",
            "squeeze", "slice", "concatenate", "take"):
    _rule(_op, _secret_any, _free, _lower_linear, "local on both replicated shares")
_rule("pad", _secret_first, _free, _lower_linear, "local; the x0 share pads with the value")
_slice_accepts, _lower_slice = run_time_slice_rule("arith", shares_of, fits=three_party)
for _op in ("dynamic_slice", "dynamic_update_slice"):
    _rule(_op, _slice_accepts, _free, _lower_slice, "local on both replicated shares, at "
          "starts every party knows")
_rule("convert_element_type", _exact_convert, _free, _lower_convert,
      "int/bool to fixed point or int: a local shift")
for _op in ("mul", "dot_general", "conv_general_dilated"):  # all bilinear: same cross terms
    _rule(_op, _secret_any, _product_cost, _lower_product,
          "local cross terms + PRG zero sharing, one re-sharing message per party "
          "(ABY3); fixed point: exact truncation (TruncPr, the third party deals) folded "
          "into it, 2 rounds")
_rule("div", _secret_first, _div_cost, _lower_div,
      "times the public reciprocal, then exact truncation (TruncPr, 2 rounds)")
_rule("select_n", _secret_any, _select_cost, _lower_select,
      "f + p * (t - f): one replicated product, no truncation (local for public cases "
      "or a public predicate)")
register_public_sharing("arith", lambda ctx, value, device, arg: shares_of(ctx, value, device), parties=3)
