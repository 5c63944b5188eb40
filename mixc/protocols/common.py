"""Lowering helpers shared by the 2-party protocols (arith2pc, bool2pc, and the
others that produce or read their shares).

Both protocols hold a secret as one share per party of the MPC device:
arithmetic shares combine with + (mod 2^64), boolean shares with XOR. Their
correlated randomness comes from a dealer that shares a PRG key with each
party (``Dealt``: every party's part is drawn from a PRG stream), or, on an
``offline: he`` device, from the two parties themselves; ``correlations``
picks the source. The TruncPr steps (``truncpr_*``) serve ``rep3`` too, where
the third party deals. This module imports no other protocol module but
``ring`` (the device's share ring): the protocols import it.
"""
from ..errors import MixcError
from ..passes.lower import DEALER, seed_name
from .ring import ring_of

RING_BYTES = 8  # one element of Z_2^64 (``ring.Ring.bytes`` on a device's own ring)

# How shares of each ring combine, and how a correction is made.
COMBINE = {"arith": "add", "bool": "xor"}
CORRECT = {"arith": "sub", "bool": "xor"}


def parties(device):
    if len(device.parties) != 2:
        raise MixcError(f"2-party protocols need two parties; MPC device {device.name} has "
                        f"{len(device.parties)}")
    return device.parties


def two_party(node, module):
    for v in list(node.results) + list(node.operands):
        d = module.devices[v.type.place]
        if d.kind == "MPC" and len(d.parties) != 2:
            return False
    return True


def frac_bits(device, dtype):
    """Fixed-point fraction bits of a dtype on an MPC device (0 for integers and bools)."""
    if dtype == "f32":
        return device.fraction_bits
    if dtype in ("i32", "bool"):
        return 0
    raise NotImplementedError(f"{dtype} values on MPC device {device.name}")


def u64(ctx, party, value):
    """A public u64 word at ``party`` (a 64-bit ring constant, or packed bits)."""
    import numpy as np
    return ctx.const(party, np.uint64(value % (1 << 64)))


def ring_bytes(module, value):
    """Bytes of one share element of ``value``'s MPC device (its ring)."""
    return ring_of(module.devices[value.type.place]).bytes


class Dealt:
    """Fresh PRG streams, per party, for one use of the dealer's randomness."""

    def __init__(self, ctx, device, names):
        ctx.add_party(DEALER)
        self.ctx, self.streams, self.ring = ctx, {}, ring_of(device)
        for p in parties(device):
            seed = seed_name(p, DEALER)
            self.streams[p] = (seed, {n: ctx.stream(seed) for n in names})

    def draw(self, party, owner, name, shape, words=False):
        """``owner``'s PRG value ``name``, drawn at ``party`` (the owner or the dealer): ring
        elements of the device's ring, or u64 ``words`` (boolean shares' packed bits)."""
        seed, ids = self.streams[owner]
        if words:
            return self.ctx.random(party, seed, shape, ids[name])
        return self.ring.random(self.ctx, party, seed, shape, ids[name])


def truncpr_dealt(ctx, dealer, r, bits, ring, kind="plain"):
    """At the dealer of a TruncPr correlation (Escudero et al., CRYPTO 2020) for mask r of
    ``ring``: (msb(r), r's bits ``bits``..k-2 as an integer), the values that
    ``truncpr_finish`` takes shares of."""
    msb = ctx.emit(dealer, "lshr", [r], kind, {"bits": ring.bits - 1})
    low = ctx.emit(dealer, "lshr", [ctx.emit(dealer, "shl", [r], kind, {"bits": 1})], kind,
                   {"bits": bits + 1})
    return msb, low


def truncpr_offset(ctx, party, ring):
    """2^(k-2), added to x once before x + r is opened: x + 2^(k-2) is non-negative for
    |x| < 2^(k-2), so the opened value's top bit wraps only through r."""
    return ring.const(ctx, party, 1 << ring.trunc_offset)


def truncpr_finish(ctx, party, c, msb, low, bits, first):
    """A party's share of x / 2^bits from the opened c = x + 2^(k-2) + r and its shares of
    msb(r) and r's low bits (``first``: the one party that adds c's public part)."""
    return ctx.emit(party, "truncpr_finish", [c, msb, low], "arith",
                    {"bits": bits, "first": first})


def open_values(ctx, device, *openings, ring="arith"):
    """Open each (pieces, what) to both parties: send everything first, then combine.

    All sends of one round go out before any value is used, so the openings
    cost one round together."""
    p0, p1 = parties(device)
    received = [{p1: ctx.xfer(pieces[p0], p1, what, "masked"),
                 p0: ctx.xfer(pieces[p1], p0, what, "masked")} for pieces, what in openings]
    return [{p: ctx.emit(p, COMBINE[ring], [pieces[p], got[p]], "masked") for p in (p0, p1)}
            for (pieces, _), got in zip(openings, received)]
