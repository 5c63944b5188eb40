"""Two-party semi-honest additive sharing over Z_2^64 (or Z_2^128) with fixed point.

A secret x is held as shares x0 + x1 = x (mod 2^k) by the MPC device's two
parties P0 and P1; k is the device's ring, 64 or 128 (``ring: 128``; every
ring value is made through ``ring.Ring``, the ops are the same on both). Floats are fixed point: round(x * 2^f), f the device's
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
- On an ``offline: he`` device the same lowering runs as protocol
  ``arith2pc.he`` with no dealer: triples from OT (elementwise) and HE
  (matrix products), truncation from an OT bit product (``dealerfree``).
- Truncation after a fixed-point product is the dealer-assisted TruncPr of
  Escudero et al. (CRYPTO 2020): with r from the dealer, open c = x + 2^62 + r
  and fix the wrap of the top bit with the dealer's shares of msb(r). For
  |x| < 2^62 (values below 2^(62-2f) in magnitude before truncation, i.e.
  |value| < 2^26 at f = 18) the result is x / 2^f with an error of at most
  one unit in the last place (2^-f), never a wrap-around. On the 128-bit
  ring the offset is 2^126: |value| < 2^46 at f = 40.
"""
import numpy as np

from ..passes.lower import DEALER, seed_name
from . import Cost, register, register_public_sharing
from .common import frac_bits, open_values, parties, ring_bytes, two_party
from .correlations import dealer_truncation_cost, triple, truncate
from .dealerfree import elementwise_triple_cost, matmul_triple_cost, only, truncation_cost
from .ring import ring_of
from .shares import encoded_public, reveal_shares, run_time_slice_rule, shares_of

PROTOCOL = "arith2pc"
PROTOCOL_HE = "arith2pc.he"  # the same on ``offline: he`` devices: no dealer (dealerfree.py)


def _device(ctx, value):
    return ctx.source.devices[value.type.place]


# ------------------------------------------------------------ share / reveal

def _lower_share(ctx, node):
    (x,) = node.operands
    device = _device(ctx, node.result)
    p0, p1 = parties(device)
    (owner,) = ctx.device_of(x).parties
    f = frac_bits(device, x.type.dtype)
    ring = ring_of(device)
    encoded = ring.encode(ctx, owner, ctx.parts[x][owner], f, "plain")
    shape = x.type.shape
    if owner in (p0, p1):
        other = p1 if owner == p0 else p0
        seed = seed_name(owner, other)
        stream = ctx.stream(seed)
        mask_at_owner = ring.random(ctx, owner, seed, shape, stream)
        ctx.parts[node.result] = {
            owner: ctx.emit(owner, "sub", [encoded, mask_at_owner], "arith"),
            other: ring.random(ctx, other, seed, shape, stream)}
    else:
        seed = seed_name(owner, p0)
        stream = ctx.stream(seed)
        share0 = ring.random(ctx, owner, seed, shape, stream)
        share1 = ctx.emit(owner, "sub", [encoded, share0], "arith")
        ctx.parts[node.result] = {p0: ring.random(ctx, p0, seed, shape, stream),
                                  p1: ctx.xfer(share1, p1, "share", "arith")}


def _share_cost(node, module):
    (x,) = node.operands
    (owner,) = module.devices[x.type.place].parties
    inside = owner in module.devices[node.result.type.place].parties
    return Cost(0, 0) if inside else Cost(x.type.size * ring_bytes(module, node.result), 1)


def _reveal_cost(node, module):
    (x,) = node.operands
    (dst,) = module.devices[node.result.type.place].parties
    senders = sum(1 for p in module.devices[x.type.place].parties if p != dst)
    return Cost(senders * x.type.size * ring_bytes(module, x), 1)


# ------------------------------------------------------------ linear ops

def _lower_linear(ctx, node):
    """Ops that are linear in the shares: apply them to each share."""
    device = _device(ctx, node.result)
    p0, p1 = parties(device)
    attrs = {k: v for k, v in node.attrs.items() if k != "protocol"}
    kinds = [v.type.kind for v in node.operands]
    pieces = {}
    if node.op in ("add", "sub") and "public" in kinds:
        a, b = node.operands
        shared, public = (a, b) if a.type.kind == "arith" else (b, a)
        for p in (p0, p1):
            s = ctx.parts[shared][p]
            if p == p0:
                enc = encoded_public(ctx, p, ctx.parts[public][p],
                                     frac_bits(device, public.type.dtype), device)
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
            fill = (encoded_public(ctx, p, ctx.parts[pad_value][p], f, device) if p == p0
                    else ring_of(device).const(ctx, p, 0))
            pieces[p] = ctx.emit(p, "pad", [ctx.parts[x][p], fill], "arith", attrs)
    else:
        shares = [shares_of(ctx, v, device) for v in node.operands]
        for p in (p0, p1):
            pieces[p] = ctx.emit(p, node.op, [s[p] for s in shares], "arith", attrs)
    ctx.parts[node.result] = pieces


def _lower_convert(ctx, node):
    """Integers and 0/1 bools to another dtype: shift into or out of fixed point."""
    (x,) = node.operands
    device = _device(ctx, x)
    shift = frac_bits(device, node.attrs["new_dtype"]) - frac_bits(device, x.type.dtype)
    ctx.parts[node.result] = {p: ctx.emit(p, "shl", [s], "arith", {"bits": shift}) if shift else s
                              for p, s in ctx.parts[x].items()}


# ------------------------------------------------------------ products

def _beaver(ctx, device, x, y, product, elementwise=False, values=(None, None)):
    """Shares of product(x, y) for secret x, y: one round, masked operands opened.
    ``elementwise``: the product is ``mul`` of equal shapes, finished by one fused op.

    ``values``: the global values x and y are shares of, when known. An operand
    already opened as x - a earlier in this block (with the dealer) is not opened
    again: its mask a and the opened x - a are reused and the dealer's new triple
    is built on the same a (``_opened_before``). Opening the same x - a once reveals
    nothing new, and a training step that reads a batch in its forward and its
    backward product opens the batch once."""
    p0, p1 = parties(device)
    reused = [_opened_before(ctx, device, v) for v in values]
    given = [(r["dealer"], r["mask"]) if r is not None else None for r in reused]
    t = triple(ctx, device, x[p0].type.shape, y[p0].type.shape, product, given=tuple(given))
    openings, where = [], []
    for i, (shares, r, what) in enumerate(((x, reused[0], "masked operand (x - a)"),
                                           (y, reused[1], "masked operand (y - b)"))):
        if r is None:
            where.append(len(openings))
            openings.append(({p: ctx.emit(p, "sub", [shares[p], t[p][i]], "masked")
                              for p in (p0, p1)}, what))
        else:
            where.append(None)
    opened = open_values(ctx, device, *openings)
    e, f = (opened[k] if k is not None else r["opened"] for k, r in zip(where, reused))
    if device.offline != "he":
        for i, (v, r, o) in enumerate(zip(values, reused, (e, f))):
            if v is not None and r is None:
                ctx.scoped("beaver masks")[v] = {"dealer": t[DEALER][i],
                                                 "mask": {p: t[p][i] for p in (p0, p1)},
                                                 "opened": o}
    out = {}
    for p in (p0, p1):
        a, b, c = t[p]
        if elementwise:
            out[p] = ctx.emit(p, "beaver_finish", [c, e[p], f[p], a, b], "arith",
                              {"first": p == p0})
            continue
        # z = c + e*b + a*f (+ e*f at P0); P0 folds e*f into e*(b + f).
        rhs = ctx.emit(p, "add", [b, f[p]], "masked") if p == p0 else b
        z = ctx.emit(p, "add", [c, product(p, e[p], rhs, "arith")], "arith")
        out[p] = ctx.emit(p, "add", [z, product(p, a, f[p], "arith")], "arith")
    return out


_RELABELLINGS = ("transpose", "reshape")  # ops that only move elements: masks move along


def _opened_before(ctx, device, value):
    """The mask, the dealer's copy of it and the opened value of ``value`` if it (or a
    value it is a transpose/reshape of) was opened earlier in this block; else None."""
    if value is None or device.offline == "he":
        return None
    cache = ctx.scoped("beaver masks")
    if value in cache:
        return cache[value]
    made_by = ctx.producer(value)
    if made_by is None or made_by.op not in _RELABELLINGS:
        return None
    source = _opened_before(ctx, device, made_by.operands[0])
    if source is None:
        return None
    attrs = {k: v for k, v in made_by.attrs.items() if k != "protocol"}

    def moved(party, piece, kind):
        return ctx.emit(party, made_by.op, [piece], kind, attrs)
    cache[value] = entry = {
        "dealer": moved(DEALER, source["dealer"], "plain"),
        "mask": {p: moved(p, s, "arith") for p, s in source["mask"].items()},
        "opened": {p: moved(p, s, "masked") for p, s in source["opened"].items()}}
    return entry


def _product_fn(ctx, node):
    attrs = {k: v for k, v in node.attrs.items() if k != "protocol"}

    def product(party, a, b, kind):
        return ctx.emit(party, node.op, [a, b], kind, attrs)
    product.op, product.attrs = node.op, attrs  # what the triple must be (dealerfree.triple)
    return product


def _lower_product(ctx, node):
    device = _device(ctx, node.result)
    p0, p1 = parties(device)
    a, b = node.operands
    f = frac_bits(device, node.result.type.dtype)
    product = _product_fn(ctx, node)
    if a.type.kind == "arith" and b.type.kind == "arith":
        z = _beaver(ctx, device, ctx.parts[a], ctx.parts[b], product,
                    elementwise=node.op == "mul" and a.type.shape == b.type.shape,
                    values=(a, b))
    else:
        z = {}
        for p in (p0, p1):
            pieces = [ctx.parts[v][p] if v.type.kind == "arith"
                      else encoded_public(ctx, p, ctx.parts[v][p], f, device) for v in (a, b)]
            z[p] = product(p, pieces[0], pieces[1], "arith")
    ctx.parts[node.result] = truncate(ctx, device, z, f) if f else z


def _lower_div(ctx, node):
    """x / c for public c: x times the public reciprocal 1/c."""
    device = _device(ctx, node.result)
    x, c = node.operands
    if node.result.type.dtype != "f32":
        raise NotImplementedError(f"integer division on MPC device {device.name}")
    f = frac_bits(device, "f32")
    z = {}
    for p in parties(device):
        one = ctx.const(p, np.float32(1.0))
        recip = ctx.emit(p, "div", [one, ctx.parts[c][p]], "public")
        z[p] = ctx.emit(p, "mul", [ctx.parts[x][p], encoded_public(ctx, p, recip, f, device)],
                        "arith")
    ctx.parts[node.result] = truncate(ctx, device, z, f)


# ------------------------------------------------------------ costs

def _words(t):
    return t.size


def _product_cost(node, module):
    a, b = node.operands
    f = frac_bits(module.devices[node.result.type.place], node.result.type.dtype)
    out = node.result.type.size
    cost = Cost()
    if a.type.kind == "arith" and b.type.kind == "arith":
        # dealer's c1, then each party opens the masked operands not opened before
        reused = _reused_openings(module).get(node, ())
        opened = sum(_words(v.type) for i, v in enumerate((a, b)) if i not in reused)
        cost = Cost(ring_bytes(module, node.result) * (out + 2 * opened), 1)
    return cost + (dealer_truncation_cost(out, ring_bytes(module, node.result)) if f else Cost())


_MASKED_PRODUCTS = ("mul", "dot_general", "conv_general_dilated")


def _reused_openings(module):
    """{product node: indices of operands whose opening an earlier product in the same
    block made} (what ``_opened_before`` will reuse), computed once per module."""
    cached = module.__dict__.get("_reused_openings")
    if cached is not None and cached[0] == len(module.nodes):
        return cached[1]
    from ..ir.core import walk
    made_by = {r: n for n in walk(module.nodes) for r in n.results}

    def chain(v):
        """v and what it relabels, transitively: where ``_opened_before`` looks."""
        yield v
        while v in made_by and made_by[v].op in _RELABELLINGS:
            v = made_by[v].operands[0]
            yield v

    reused = {}

    def scan(nodes):
        opened = set()
        for n in nodes:
            if n.body is not None:
                scan(n.body.nodes)
            if n.op not in _MASKED_PRODUCTS or any(v.type.kind == "public" for v in n.operands):
                continue
            for i, v in enumerate(n.operands):
                if any(u in opened for u in chain(v)):
                    reused.setdefault(n, set()).add(i)
                else:
                    opened.add(v)
    scan(module.nodes)
    module.__dict__["_reused_openings"] = (len(module.nodes), reused)
    return reused


def _div_cost(node, module):
    return dealer_truncation_cost(node.result.type.size, ring_bytes(module, node.result))


def _free(node, module):
    return Cost()


# dealer-free (``offline: he``): triples from OT (elementwise) or HE (matrix products),
# truncation by a bit product from OT plus one round of masked bits (see dealerfree)

def _opening(element_bytes, *sizes):
    """Each party opens each masked operand to the other: one round."""
    return Cost(element_bytes * 2 * sum(sizes), 1)


def _ring_bits(module, node):
    return ring_of(module.devices[node.result.type.place]).bits


def _product_cost_he(node, module):
    a, b = node.operands
    f = frac_bits(module.devices[node.result.type.place], node.result.type.dtype)
    out = node.result.type.size
    bits = _ring_bits(module, node)
    cost = Cost()
    if a.type.kind == "arith" and b.type.kind == "arith":
        if node.op == "mul":
            cost = elementwise_triple_cost(out, ring_bits=bits)
        else:
            attrs = {k: v for k, v in node.attrs.items() if k not in ("protocol", "explicit")}
            cost = matmul_triple_cost(node.op, attrs, a.type.shape, b.type.shape, bits)
        cost = cost + _opening(bits // 8, a.type.size, b.type.size)
    return cost + (truncation_cost(out) if f else Cost())


def _div_cost_he(node, module):
    return truncation_cost(node.result.type.size)


def _beaver_cost_he(node, module):
    n, bits = node.result.type.size, _ring_bits(module, node)
    return elementwise_triple_cost(n, ring_bits=bits) + _opening(bits // 8, n, n)


def _select_cost_he(node, module):
    if all(v.type.kind == "public" for v in node.operands[1:]):
        return Cost()
    return _beaver_cost_he(node, module)


def _logic_cost_he(node, module):
    return Cost() if node.op == "not" else _beaver_cost_he(node, module)


# ------------------------------------------------------------ select and logic on 0/1 shares

def _ring_product(ctx, node):
    def product(party, a, b, kind):
        return ctx.emit(party, "mul", [a, b], kind)
    product.op, product.attrs = "mul", {}
    return product


def _lower_select(ctx, node):
    """select_n(p, f, t) = f + p * (t - f) with p a 0/1 share: one Beaver product, no truncation."""
    device = _device(ctx, node.result)
    p0, p1 = parties(device)
    _, false_case, true_case = node.operands
    if false_case.type.kind == "public" and true_case.type.kind == "public":
        # p * (t - f) with t - f public: a local product of the 0/1 share, no Beaver.
        frac = frac_bits(device, node.result.type.dtype)
        pred = shares_of(ctx, node.operands[0], device)
        out = {}
        for p in (p0, p1):
            diff = ctx.emit(p, "sub", [ctx.parts[true_case][p], ctx.parts[false_case][p]], "public")
            scaled = ctx.emit(p, "mul", [_broadcast_to(ctx, p, pred[p], diff.type.shape),
                                         encoded_public(ctx, p, diff, frac, device)], "arith")
            out[p] = (ctx.emit(p, "add", [scaled, encoded_public(ctx, p, ctx.parts[false_case][p],
                                                                  frac, device)], "arith")
                      if p == p0 else scaled)
        ctx.parts[node.result] = out
        return
    pred, f, t = (shares_of(ctx, v, device) for v in node.operands)
    diff = {p: ctx.emit(p, "sub", [t[p], f[p]], "arith") for p in (p0, p1)}
    pred = {p: _broadcast_to(ctx, p, pred[p], diff[p].type.shape) for p in (p0, p1)}
    z = _beaver(ctx, device, pred, diff, _ring_product(ctx, node), elementwise=True)
    ctx.parts[node.result] = {p: ctx.emit(p, "add", [f[p], z[p]], "arith") for p in (p0, p1)}


def _broadcast_to(ctx, party, value, shape):
    if tuple(value.type.shape) == tuple(shape):
        return value
    return ctx.emit(party, "broadcast_in_dim", [value], value.type.kind,
                    {"shape": tuple(shape), "broadcast_dimensions": ()})


def _lower_logic(ctx, node):
    """and/or/xor/not on 0/1 arithmetic shares: x*y, x+y-x*y, x+y-2x*y, 1-x."""
    device = _device(ctx, node.result)
    p0, p1 = parties(device)
    xs = [shares_of(ctx, v, device) for v in node.operands]
    if node.op == "not":
        (x,) = xs
        one = ring_of(device).const(ctx, p0, 1)
        ctx.parts[node.result] = {p0: ctx.emit(p0, "sub", [one, x[p0]], "arith"),
                                  p1: ctx.emit(p1, "neg", [x[p1]], "arith")}
        return
    x, y = xs
    both = _beaver(ctx, device, x, y, _ring_product(ctx, node), elementwise=True)
    out = {}
    for p in (p0, p1):
        if node.op == "and":
            out[p] = both[p]
            continue
        twice = 1 if node.op == "or" else 2
        cross = ctx.emit(p, "shl", [both[p]], "arith", {"bits": 1}) if twice == 2 else both[p]
        out[p] = ctx.emit(p, "sub", [ctx.emit(p, "add", [x[p], y[p]], "arith"), cross], "arith")
    ctx.parts[node.result] = out


def _beaver_cost(node, module):
    n = node.result.type.size
    return Cost(ring_bytes(module, node.result) * 5 * n, 1)


def _select_cost(node, module):
    if all(v.type.kind == "public" for v in node.operands[1:]):
        return Cost()
    return _beaver_cost(node, module)


def _logic_cost(node, module):
    return Cost() if node.op == "not" else _beaver_cost(node, module)


def _lower_dp_noise(ctx, node):
    """Each party draws the full noise into its own share: neither knows the sum. The noise
    is on the device's fixed-point grid (frac_bits), so its encoding is exact."""
    device = _device(ctx, node.result)
    frac = frac_bits(device, node.result.type.dtype)
    attrs = {k: v for k, v in node.attrs.items() if k != "protocol"}
    attrs["frac_bits"] = frac
    ctx.parts[node.result] = {
        p: ring_of(device).encode(ctx, p, ctx.emit(p, "dp_noise", [], "arith", attrs),
                                  frac, "arith")
        for p in parties(device)}


# ------------------------------------------------------------ registration

def _secret_any(kinds, node, module):
    return "arith" in kinds and all(k in ("arith", "public") for k in kinds) \
        and two_party(node, module)


def _secret_first(kinds, node, module):
    return kinds[:1] == ("arith",) and all(k == "public" for k in kinds[1:]) \
        and two_party(node, module)


def _exact_convert(kinds, node, module):
    return _secret_first(kinds, node, module) and node.attrs["new_dtype"] in ("f32", "i32") \
        and node.operands[0].type.dtype in ("i32", "bool")


def _bool_dtype(kinds, node, module):
    return _secret_any(kinds, node, module) and node.result.type.dtype == "bool"


def _rule(op, accepts, cost, lower, doc):
    register(PROTOCOL, op, device="MPC", accepts=accepts, result_kind="arith", cost=cost,
             lower=lower, wants="arith", doc=doc)


def _rules(op, accepts, cost, cost_he, lower, doc, doc_he):
    """An op that consumes correlations: ``arith2pc`` on dealer devices, ``arith2pc.he``
    (same lowering, correlations made by the two parties) on ``offline: he`` devices."""
    _rule(op, only("dealer", accepts), cost, lower, doc)
    register(PROTOCOL_HE, op, device="MPC", accepts=only("he", accepts), result_kind="arith",
             cost=cost_he, lower=lower, wants="arith", doc=doc_he)


register(PROTOCOL, "to", device="MPC", accepts=lambda k, n, m: k == ("plain",) and two_party(n, m),
         result_kind="arith", cost=_share_cost, lower=_lower_share,
         doc="share a party's plaintext: PRG mask from the pairwise key")
register(PROTOCOL, "reveal", device="PYU", accepts=lambda k, n, m: k == ("arith",) and two_party(n, m),
         result_kind="plain", cost=_reveal_cost, lower=reveal_shares, wants="arith",
         doc="open to one party: the others send it their shares")
for _op in ("add", "sub", "neg", "reduce_sum", "broadcast_in_dim", "reshape", "transpose",
            "squeeze", "slice", "concatenate", "take"):
    _rule(_op, _secret_any, _free, _lower_linear, "local on shares")
_rule("pad", _secret_first, _free, _lower_linear, "local on shares; P0 pads with the value")
_rule("convert_element_type", _exact_convert, _free, _lower_convert,
      "int/bool to fixed point or int: a local shift")
for _op in ("mul", "dot_general", "conv_general_dilated"):  # conv: Beaver conv triples
    _rules(_op, _secret_any, _product_cost, _product_cost_he, _lower_product,
           "Beaver product from dealer triples, then TruncPr for fixed point",
           "Beaver product, triples by OT-based OLE (elementwise) or HE under each party's "
           "key (matrix products); truncation by an OT bit product")
_rules("div", _secret_first, _div_cost, _div_cost_he, _lower_div,
       "times the public reciprocal, then TruncPr",
       "times the public reciprocal, then dealer-free truncation")
_rule("dp_noise", lambda k, n, m: k == () and two_party(n, m), _free, _lower_dp_noise,
      "each party adds independent noise of the full scale to its share")
_rules("select_n", _secret_any, _select_cost, _select_cost_he, _lower_select,
       "f + p * (t - f): one Beaver product (local when both cases are public)",
       "f + p * (t - f): one Beaver product, triple by OT (local when both cases are public)")
for _op in ("and", "or", "xor", "not"):
    _rules(_op, _bool_dtype, _logic_cost, _logic_cost_he, _lower_logic,
           "on 0/1 shares: Beaver products", "on 0/1 shares: Beaver products, triples by OT")


# ------------------------------------------------------------ run-time slices (loops)

_slice_accepts, _lower_slice = run_time_slice_rule("arith", shares_of)
for _op in ("dynamic_slice", "dynamic_update_slice"):
    _rule(_op, _slice_accepts, _free, _lower_slice, "local on shares, at starts every party knows")
register_public_sharing("arith", lambda ctx, value, device, arg: shares_of(ctx, value, device))
