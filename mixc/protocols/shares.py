"""Making and opening arithmetic shares: lowerings several protocols share.

An arithmetic share of x on a 2-party MPC device is a ring element per party
with x0 + x1 = x (mod 2^64), fixed point with the device's fraction bits
(``common.frac_bits``). Here are the ways into and out of that form that more
than one protocol uses:

- ``encoded_public`` and ``shares_of``: a public value as a ring element, and
  as trivial shares (P0 holds encode(x), P1 holds 0); ``arith2pc`` and
  ``bool2pc`` read public operands this way, and ``arith2pc`` registers
  ``shares_of`` as the public sharing of kind ``arith`` (loops);
- ``share_private``: a value private to one party of the device (kind
  ``private``) becomes shares, the owner masking it with PRG words from the
  pairwise key (no bytes cross): ``private``'s ``share`` conversion, and
  ``he``'s ``to`` of a party's private value from an HE device into MPC;
- ``reveal_shares``: every party sends its share to the destination, which
  adds them and decodes: ``arith2pc``'s reveal to a PYU and ``tee``'s opening
  of shares inside a TEE;
- ``run_time_slice_rule``: dynamic_slice / dynamic_update_slice at starts
  every party knows (a loop's counter), local on each party's share of either
  kind (``arith2pc`` and ``bool2pc`` register it with their own share reader).
"""
from ..passes.lower import seed_name
from .common import frac_bits, parties
from .ring import ring_of


def encoded_public(ctx, party, value, frac, device):
    """A public plaintext value at ``party`` as an element of ``device``'s ring (not a share)."""
    return ring_of(device).encode(ctx, party, value, frac, "public")


def zero_share(ctx, party, shape, device):
    """A share of zeros of ``shape`` at ``party``, in ``device``'s ring."""
    zero = ring_of(device).const(ctx, party, 0)
    return ctx.emit(party, "broadcast_in_dim", [zero], "arith",
                    {"shape": tuple(shape), "broadcast_dimensions": ()})


def shares_of(ctx, value, device):
    """Shares of ``value`` at both parties; a public value becomes (encode, 0)."""
    p0, p1 = parties(device)
    if value.type.kind == "arith":
        return ctx.parts[value]
    f = frac_bits(device, value.type.dtype)
    return {p0: encoded_public(ctx, p0, ctx.parts[value][p0], f, device),
            p1: zero_share(ctx, p1, value.type.shape, device)}


def share_private(ctx, node):
    """Lower ``node`` (one operand, private to one party of the result's device) to
    arithmetic shares: the owner keeps x - r, the other party draws r (same PRG key)."""
    (x,) = node.operands
    device = ctx.device_of(node.result)
    (owner,) = ctx.parts[x]
    f = frac_bits(device, x.type.dtype)
    ring = ring_of(device)
    encoded = ring.encode(ctx, owner, ctx.parts[x][owner], f, "plain")
    shape = x.type.shape
    pieces = {}
    for other in parties(device):
        if other == owner:
            continue
        seed = seed_name(owner, other)
        stream = ctx.stream(seed)
        pieces[other] = ring.random(ctx, other, seed, shape, stream)
        mask = ring.random(ctx, owner, seed, shape, stream)
        encoded = ctx.emit(owner, "sub", [encoded, mask], "arith")
    pieces[owner] = encoded
    ctx.parts[node.result] = pieces


def reveal_shares(ctx, node):
    """Lower ``node`` (one arithmetic-shared operand, a result on a one-party device):
    the other parties send their shares to the destination, which adds and decodes."""
    (x,) = node.operands
    device = ctx.source.devices[x.type.place]
    (dst,) = ctx.device_of(node.result).parties
    shares = ctx.parts[x]
    received = [s if p == dst else ctx.xfer(s, dst, "share (reveal)", "arith")
                for p, s in shares.items()]
    total = ctx.emit(dst, "add", received, "plain")
    f = frac_bits(device, x.type.dtype)
    ctx.parts[node.result] = {dst: ctx.emit(dst, "decode", [total], "plain",
                                            {"frac_bits": f, "dtype": x.type.dtype})}


def run_time_slice_rule(share_kind, shares_fn, words_only=False, fits=None):
    """(accepts, lower) of dynamic_slice / dynamic_update_slice on ``share_kind`` shares
    read by ``shares_fn(ctx, value, device)``, starts public; ``words_only``: not for
    packed bits (bool values), whose slices are not whole words; ``fits(node, module)``:
    the devices the protocol runs on (2-party ones by default). A party's piece may be a
    tuple (replicated shares): each component is sliced alike."""
    from .common import two_party
    fits = fits or two_party

    def data_count(node):
        return 1 if node.op == "dynamic_slice" else 2

    def accepts(kinds, node, module):
        n = data_count(node)
        return (share_kind in kinds[:n] and all(k in (share_kind, "public") for k in kinds[:n])
                and all(k == "public" for k in kinds[n:]) and fits(node, module)
                and not (words_only and node.result.type.dtype == "bool"))

    def lower(ctx, node):
        device = ctx.device_of(node.result)
        n = data_count(node)
        data = [shares_fn(ctx, v, device) for v in node.operands[:n]]
        starts = node.operands[n:]
        attrs = {k: v for k, v in node.attrs.items() if k != "protocol"}

        def each(p, pieces):
            return ctx.emit(p, node.op, pieces + [ctx.parts[s][p] for s in starts],
                            share_kind, attrs)
        out = {}
        for p in device.parties:
            mine = [d[p] for d in data]
            out[p] = (tuple(each(p, list(parts)) for parts in zip(*mine))
                      if isinstance(mine[0], tuple) else each(p, mine))
        ctx.parts[node.result] = out
    lower.__doc__ = "Each party slices (or updates) its own share(s) at the public starts."
    return accepts, lower
