"""Private values: plaintext that one party of an MPC or HE device holds alone.

A party's input moved into an MPC device is normally secret-shared at once.
When the party is itself one of the device's parties, sharing costs nothing
and can wait: the value may stay *private* (kind ``private``: plaintext at
its one owner, nothing at the other parties) for as long as the protocols
that read it can use it that way. The masking protocol (``masking.py``)
needs exactly that: the server's weights, never shared. On an HE device every
value that enters from a PYU is private to its party until an op mixes the
key owner's and the evaluator's data (``he.py``).

Rules here:

- ``private`` on MPC and ``he_local`` on HE: ``to`` from a party's PYU into a
  device it is part of keeps the value at its owner (free); an op whose
  operands are all private to one owner (or public) runs at that owner in
  the clear (free; its result is private to the same owner);
- ``private_add``: add/sub of an arithmetic share and a private value: the
  owner adds its plaintext into its own share (free);
- ``share``: the conversion private -> arith (the owner masks it with PRG
  words from the pairwise key; no bytes cross), inserted by the selector
  where a rule wants shares;
- ``reveal`` of a private value to its owner's PYU: nothing moves; to another
  party's (``private_reveal``): the owner sends the plaintext.

Which MPC values stay private is decided by ``assign_private`` (called by
``select_protocols`` before the share-kind min-cut): a value that could stay
private stays private only if some reader is strictly cheaper with it
private with a protocol that needs the plaintext (e.g. a dense layer's
weights: masking instead of Beaver), or it feeds another value that stays
private. (Computing one party's data in the clear, or revealing it to
itself, does not count: the author put the function on MPC.) Everything else is shared at its
``to`` exactly as before, so programs that gain nothing see no change.
"""
from . import Cost, register, register_public_sharing, rules_for
from .plaintext import MPC_PUBLIC_OPS
from .ring import ring_of

PROTOCOL = "private"          # MPC: kept at its owner, computed there in the clear
ADD_PROTOCOL = "private_add"  # MPC: share + owner's plaintext
HE_PROTOCOL = "he_local"      # HE device: one party's own plaintext
REVEAL_PROTOCOL = "private_reveal"  # a private value revealed to another party
LOCAL_OPS = tuple(MPC_PUBLIC_OPS) + ("conv_general_dilated",)


# ------------------------------------------------------------ owners

def _compute_owners(module):
    own = {}
    _owners_in(module, module.nodes, own)
    return own


def _single_party(module, value):
    device = module.devices.get(value.type.place)
    return device.parties[0] if device is not None and len(device.parties) == 1 else None


def _owners_in(module, nodes, own):
    """Owners of the private values in ``nodes``; a loop's private argument and result are
    its entering value's (``place`` keeps a carried private value at one owner), or, where
    it enters public (a scan's ys buffer of zeros), what the body yields."""
    for n in nodes:
        if n.body is not None:
            for v, a in zip(n.operands, n.body.args):
                if a.type.kind == "private":
                    own[a] = own.get(v) or _single_party(module, v)
            _owners_in(module, n.body.nodes, own)
            carried = n.body.args[n.attrs["captures"]:]
            unowned = [(a, y) for a, y in zip(carried, n.body.nodes[-1].operands)
                       if a.type.kind == "private" and not own.get(a) and own.get(y)]
            for a, y in unowned:
                own[a] = own[y]
            if unowned:
                _owners_in(module, n.body.nodes, own)
            for r, a in zip(n.results, n.body.args[n.attrs["captures"]:]):
                if r.type.kind == "private" and own.get(a):
                    own[r] = own[a]
            continue
        for r in n.results:
            if r.type.kind != "private":
                continue
            if n.op == "to":
                src = module.devices.get(n.operands[0].type.place)
                if src is not None and len(src.parties) == 1:
                    own[r] = src.parties[0]
                continue
            for v in n.operands:
                if own.get(v):
                    own[r] = own[v]
                    break


def owner_of(value, module):
    """The party holding private ``value`` (None if it is not private)."""
    cache = module.__dict__.get("_private_owners")
    if cache is None or value not in cache:
        cache = _compute_owners(module)
        module.__dict__["_private_owners"] = cache
    return cache.get(value)


def _owners_of(values, kinds, module):
    return {owner_of(v, module) for v, k in zip(values, kinds) if k == "private"}


def _one_owner(kinds, node, module):
    """All operands private to one owner or public, at least one private."""
    if "private" not in kinds or any(k not in ("private", "public") for k in kinds):
        return False
    owners = _owners_of(node.operands, kinds, module)
    return len(owners) == 1 and None not in owners


# ------------------------------------------------------------ lowering

def _owner_in_parts(ctx, value):
    (owner,) = ctx.parts[value]
    return owner


def _lower_keep(ctx, node):
    """``to`` a device the owner is part of: nothing moves."""
    (x,) = node.operands
    (owner,) = ctx.device_of(x).parties
    ctx.parts[node.result] = {owner: ctx.parts[x][owner]}


def _lower_local(ctx, node):
    owners = {_owner_in_parts(ctx, v) for v in node.operands if v.type.kind == "private"}
    (owner,) = owners
    attrs = {k: v for k, v in node.attrs.items() if k not in ("protocol", "explicit")}
    operands = [ctx.parts[v][owner] for v in node.operands]
    ctx.parts[node.result] = {owner: ctx.emit(owner, node.op, operands, "plain", attrs)}


def _lower_reveal(ctx, node):
    (x,) = node.operands
    (dst,) = ctx.device_of(node.result).parties
    ctx.parts[node.result] = {dst: ctx.parts[x][dst]}


def _lower_share(ctx, node):
    """private -> arith: the owner keeps x - r, the other party draws r (same PRG key);
    ``shares.share_private``, which ``he`` uses too (imported here, not at the top:
    ``shares`` imports ``passes.lower``, whose package imports this module)."""
    from .shares import share_private
    share_private(ctx, node)


def _lower_add(ctx, node):
    """share +- private: the owner adds (subtracts) its encoded plaintext into its share."""
    from .common import frac_bits
    a, b = node.operands
    device = ctx.device_of(node.result)
    shared, private = (a, b) if a.type.kind == "arith" else (b, a)
    owner = _owner_in_parts(ctx, private)
    enc = ring_of(device).encode(ctx, owner, ctx.parts[private][owner],
                                 frac_bits(device, private.type.dtype), "plain")
    out = {}
    for p, s in ctx.parts[shared].items():
        if p != owner:
            out[p] = ctx.emit(p, "neg", [s], "arith") if node.op == "sub" and b is shared else s
            continue
        operands = [s, enc] if a is shared else [enc, s]
        out[p] = ctx.emit(p, node.op, operands, "arith")
    ctx.parts[node.result] = out


# ------------------------------------------------------------ registration

def _free(node, module):
    return Cost()


def _to_own_device(kinds, node, module):
    (x,) = node.operands
    src = module.devices[x.type.place]
    dst = module.devices[node.result.type.place]
    return kinds == ("plain",) and src.kind == "PYU" and src.parties[0] in dst.parties


def _share_add(kinds, node, module):
    from .common import two_party
    if sorted(kinds) != ["arith", "private"] or not two_party(node, module):
        return False
    return node.operands[0].type.dtype in ("f32", "i32")


def _reveal_to_owner(kinds, node, module):
    if kinds != ("private",):
        return False
    (dst,) = module.devices[node.result.type.place].parties
    return owner_of(node.operands[0], module) == dst


def _reveal_to_other(kinds, node, module):
    if kinds != ("private",):
        return False
    (dst,) = module.devices[node.result.type.place].parties
    owner = owner_of(node.operands[0], module)
    return owner is not None and owner != dst


def _lower_reveal_sent(ctx, node):
    (x,) = node.operands
    (dst,) = ctx.device_of(node.result).parties
    owner = _owner_in_parts(ctx, x)
    ctx.parts[node.result] = {dst: ctx.xfer(ctx.parts[x][owner], dst, "plaintext (reveal)",
                                            "plain")}


def _reveal_cost(node, module):
    from ..ir.ops import NUMPY_DTYPES
    import numpy as np
    t = node.operands[0].type
    return Cost(t.size * np.dtype(NUMPY_DTYPES[t.dtype]).itemsize, 1)


def _share_cost(node, module):
    return Cost()  # PRG words from the pairwise key: nothing crosses


def _register_kept(protocol, device):
    register(protocol, "to", device=device, accepts=_to_own_device, result_kind="private",
             cost=_free, lower=_lower_keep,
             doc=f"a party's plaintext into an {device} device it is part of, kept at the party")
    for op in LOCAL_OPS:
        register(protocol, op, device=device, accepts=_one_owner, result_kind="private",
                 cost=_free, lower=_lower_local, doc="the owner computes on its own plaintext")


_register_kept(PROTOCOL, "MPC")
for _op in ("add", "sub"):
    register(ADD_PROTOCOL, _op, device="MPC", accepts=_share_add, result_kind="arith",
             cost=_free, lower=_lower_add, doc="the owner adds its plaintext into its share")
register(PROTOCOL, "share", device="MPC", accepts=lambda k, n, m: k == ("private",),
         result_kind="arith", cost=_share_cost, lower=_lower_share,
         doc="private to arithmetic shares: the owner masks with pairwise PRG words")
register(PROTOCOL, "reveal", device="PYU", accepts=_reveal_to_owner, result_kind="plain",
         cost=_free, lower=_lower_reveal, doc="a private value to its owner: nothing moves")
register(REVEAL_PROTOCOL, "reveal", device="PYU", accepts=_reveal_to_other, result_kind="plain",
         cost=_reveal_cost, lower=_lower_reveal_sent,
         doc="a private value to another party: its owner sends the plaintext (a reveal)")

_register_kept(HE_PROTOCOL, "HE")


def _public_at_owner(ctx, value, device, arg):
    """A public value entering a loop as a private carried value (a scan's ys buffer that
    one party's rows fill): the owner's copy."""
    owner = owner_of(arg, ctx.source)
    return {owner: ctx.parts[value][owner]}


for _parties in (2, 3):
    register_public_sharing("private", _public_at_owner, parties=_parties)


# ------------------------------------------------------------ which MPC values stay private

def _local_rule(op):
    return any(r.protocol == PROTOCOL for r in rules_for(op))


def candidates(module):
    """MPC values that could stay private: ``to`` from a party's PYU into a device it is
    part of, and what is computed from one owner's such values (and public ones) alone."""
    cands = {}
    for node in module.nodes:
        if len(node.results) != 1:
            continue
        r = node.result
        dev = module.devices[r.type.place]
        if dev.kind != "MPC" or r.type.dtype not in ("f32", "i32"):
            continue
        if node.op == "to":
            src = module.devices[node.operands[0].type.place]
            if src.kind == "PYU" and src.parties[0] in dev.parties:
                cands[r] = src.parties[0]
            continue
        owners = {cands[v] for v in node.operands if v in cands}
        if (len(owners) == 1 and _local_rule(node.op)
                and all(v in cands or v.type.kind == "public" for v in node.operands)):
            cands[r] = owners.pop()
    return cands


def assign_private(module, sel):
    """Mark (kind ``private``) the MPC values that stay at their owner; see the module doc.

    ``sel`` is the selector (``passes.select_protocols._Selector``): its ``options``
    gives each reader's rules and estimated seconds. A value stays private when a
    reader's best rule taking it private beats the reader's best rule taking it shared,
    or when a value computed from it stays private."""
    cands = candidates(module)
    if not cands:
        return set()
    original = {v: v.type for v in cands}
    for v in cands:
        v.type = v.type.with_(kind="private")
    module.__dict__["_private_owners"] = dict(cands)
    saved_secret = set(sel.secret)
    sel.secret.difference_update(cands)
    users = module.users()
    useful = set()
    try:
        for node in reversed(module.nodes):
            for r in node.results:
                if r in cands and _useful(r, users.get(r, ()), cands, useful, sel):
                    useful.add(r)
    finally:
        sel.secret.clear()
        sel.secret.update(saved_secret)
    for v in cands:
        if v not in useful:
            v.type = original[v]
    module.__dict__["_private_owners"] = {v: cands[v] for v in useful}
    return useful


def _useful(v, readers, cands, useful, sel):
    for n in readers:
        res = n.results[0] if n.results else None
        if res is not None and res in cands:
            if res in useful:
                return True
            continue
        private_best = shared_best = None
        for rule, kinds, seconds in sel.options(n):
            as_private = any(op is v and k == "private" for op, k in zip(n.operands, kinds))
            if as_private:
                # only a protocol that needs the plaintext (masking) makes keeping it worth
                # it: computing a party's own data in the clear, or revealing it to itself,
                # would take the author's MPC function off MPC altogether
                if rule.protocol not in (PROTOCOL, ADD_PROTOCOL, HE_PROTOCOL, REVEAL_PROTOCOL):
                    private_best = seconds if private_best is None else min(private_best, seconds)
            else:
                shared_best = seconds if shared_best is None else min(shared_best, seconds)
        if private_best is not None and (shared_best is None
                                         or private_best < shared_best * (1 - 1e-9)):
            return True
    return False
