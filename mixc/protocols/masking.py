"""The seed patent's masked two-party inference for linear layers (protocol ``masking``).

A dense layer (``dot_general``) or a convolution (``conv_general_dilated``)
whose weights W are *private* to one party of a 2-party MPC device (the
server S: they were never shared, see ``private.py``) and whose input x is
private to the other party (the client C) or secret-shared between them:

offline (independent of x; the key pair is made once, at C's program start,
and S gets the public key):

1. C draws a uniform r (C's own PRG key) shaped like x and sends Enc(r),
   encrypted under its RLWE key in the matrix-product packing
   (``runtime.he.MatmulPlan``; a convolution is its kernel matrix times the
   im2col patches of r);
2. S draws a uniform s shaped like the result, computes Enc(W.r - s)
   homomorphically, sanitises it (``mask_and_extract``: re-randomised,
   noise flooded to 2^-40 statistical distance, only the result
   coefficients kept) and sends it back;
3. C decrypts: it holds W.r - s.

online: C sends x - r (its share of x minus r when x is shared; S adds its
own share), and S computes W.(x - r) + s locally.

Now W.x = (W.r - s) + (W.(x - r) + s): C's and S's values are arithmetic
shares of the product, exactly like ``arith2pc`` shares, so the following
layers (bias add, relu, ...) continue on them. The patent's bias b is added
by S into its share (``private_add``: free), the same as folding it into
W.r + b - s. Fixed point: x and W carry f fraction bits each, so the shares
are truncated as ``arith2pc`` truncates (``correlations.truncate``: TruncPr,
error at most 2^-f).

What each side sees: S sees Enc(r) (IND-CPA under C's key) and x - r
(uniform, r is C's alone); C sees a sanitised Enc(W.r - s) (W.r - s is
uniform, s is S's alone). Neither learns the other's input or weights.

On a ``ring: 128`` device the same steps run with plaintext modulus 2^128
(``runtime.he.DEFAULT_128``) through the plan-addressed ops of
``runtime.he_mm_ops`` (``he_mm.encrypt`` of r, ``he_mm.eval`` of W.r - s,
``he_mm.decrypt``), and a convolution's local product W.(x - r) is the
packing's matrix product of the kernel matrix and the im2col patches.

Cost (declared, per use): bytes = Enc(r) ciphertexts + sanitised result
ciphertexts + x - r (one ring element per element) + truncation; rounds = 1 (x - r)
+ truncation. The offline messages depend on no input, and the lowered
program sends them before anything that waits for an input, so they
overlap; they are counted as bytes, not rounds (as the dealer's corrections
of Beaver triples are). The public key (223 kB, once per session) is not
counted.
"""
from __future__ import annotations

from ..passes.lower import seed_name
from . import Cost, register
from .common import frac_bits, parties
from .ring import ring_of
from .correlations import dealer_truncation_cost, truncate
from .hepack import Product, apply_local, he_keys, hoist, product_cost
from .private import owner_of

PROTOCOL = "masking"


def _roles(kinds, node, module):
    """(index of the input x, index of the weights W) or None."""
    dev = module.devices[node.result.type.place]
    if dev.kind != "MPC" or len(dev.parties) != 2 or node.result.type.dtype not in ("f32", "i32"):
        return None
    if node.op == "dot_general" and (node.attrs["batch"][0] or node.attrs["batch"][1]):
        return None
    for wi in (1, 0):
        xi = 1 - wi
        if kinds[wi] != "private":
            continue
        server = owner_of(node.operands[wi], module)
        if server not in dev.parties:
            continue
        if kinds[xi] == "arith":
            return xi, wi
        if kinds[xi] == "private" and owner_of(node.operands[xi], module) not in (server, None):
            return xi, wi
    return None


def _accepts(kinds, node, module):
    return _roles(kinds, node, module) is not None


def _cost(node, module):
    xi, wi = _roles(tuple(v.type.kind for v in node.operands), node, module)
    device = module.devices[node.result.type.place]
    ring = ring_of(device)
    enc, out = product_cost(node, xi, ring.bits)
    f = frac_bits(device, node.result.type.dtype)
    online = Cost(ring.bytes * node.operands[xi].type.size, 1)
    trunc = dealer_truncation_cost(node.result.type.size) if f else Cost()
    return Cost(enc + out) + online + trunc


def _setting(ctx, node, kinds, device):
    """Which operand is x (the client's, masked) and which W (the server's), the two
    parties, the result's fraction bits and the product's HE plan."""
    p0, p1 = parties(device)
    x_i, w_i = _roles(kinds, node, ctx.source)
    x, w = node.operands[x_i], node.operands[w_i]
    server = _owner(ctx, w)
    client = p1 if server == p0 else p0
    f = frac_bits(device, node.result.type.dtype)
    return x_i, x, w, server, client, f, Product(node, x_i)


def _lower(ctx, node):
    kinds = tuple(v.type.kind for v in node.operands)
    device = ctx.device_of(node.result)
    if ring_of(device).bits != 64:
        return _lower_wide(ctx, node, kinds, device)
    x_i, x, w, server, client, f, prod = _setting(ctx, node, kinds, device)
    plan = prod.plan()
    from ..runtime import he_ops as h
    sk, pk = he_keys(ctx, client, server)

    # offline: C -> S: Enc(r) (at the start of C's program: it depends on nothing);
    # S -> C: Enc(W.r - s), sanitised
    start = len(ctx.out.nodes)
    r = ctx.random(client, seed_name(client), x.type.shape, ctx.stream(seed_name(client)), "plain")
    rm = apply_local(ctx, client, r, prod.x_steps, "plain")
    enc_r = ctx.emit(client, "he.encrypt", [sk, rm], "he",
                     {"positions": h.matmul_input_positions(plan).reshape(-1).astype("int32"),
                      "count": h.matmul_plan(plan).n_inputs})
    enc_r = ctx.xfer(enc_r, server, "HE ciphertext: Enc(r) (masking, offline)", "he")
    hoist(ctx, start)
    w_enc = ctx.emit(server, "encode", [ctx.parts[w][server]], "plain", {"frac_bits": f})
    wm = apply_local(ctx, server, w_enc, prod.w_steps, "plain")
    raw = ctx.emit(server, "he.matmul", [enc_r, wm], "he", {"plan": tuple(plan)})
    out_shape = tuple(node.result.type.shape)
    s = ctx.random(server, seed_name(server), out_shape, ctx.stream(seed_name(server)), "plain")
    neg_s = ctx.emit(server, "neg", [apply_local(ctx, server, s, prod.inv_steps, "plain")], "plain")
    attrs = {"positions": h.matmul_output_positions(plan).reshape(-1).astype("int32"),
             "count": h.matmul_plan(plan).n_outputs}
    ext = ctx.emit(server, "he.extract", [pk, raw, neg_s], "he", attrs)
    ext = ctx.xfer(ext, client, "HE ciphertext: Enc(W.r - s) (masking, offline)", "he")
    dec_attrs = attrs

    # online: C -> S: x - r; S: W.(x - r) + s
    if x.type.kind == "private":
        xc = ctx.emit(client, "encode", [ctx.parts[x][client]], "plain", {"frac_bits": f})
    else:
        xc = ctx.parts[x][client]
    masked = ctx.emit(client, "sub", [xc, r], "masked")
    got = ctx.xfer(masked, server, "masked input (x - r)", "masked")
    if x.type.kind == "arith":
        got = ctx.emit(server, "add", [got, ctx.parts[x][server]], "masked")
    attrs = {k: v for k, v in node.attrs.items() if k not in ("protocol", "explicit")}
    operands = [got, w_enc] if x_i == 0 else [w_enc, got]
    z = ctx.emit(server, node.op, operands, "arith", attrs)
    share_s = ctx.emit(server, "add", [z, s], "arith")
    # C decrypts last, so that it sends x - r before it waits for Enc(W.r - s)
    u = ctx.emit(client, "he.decrypt", [sk, ext], "arith", dec_attrs)
    u = ctx.emit(client, "reshape", [u], "arith", {"new_sizes": (prod.M, prod.N)})
    share_c = apply_local(ctx, client, u, prod.out_steps, "arith")
    shares = {client: share_c, server: share_s}
    ctx.parts[node.result] = truncate(ctx, device, shares, f) if f else shares


def _lower_wide(ctx, node, kinds, device):
    """The protocol on a ring wider than 64 bits: HE with plaintext modulus 2^ring.bits,
    addressed by the packing plan (he_mm ops); the same messages as ``_lower``."""
    ring = ring_of(device)
    x_i, x, w, server, client, f, prod = _setting(ctx, node, kinds, device)
    plan = {"plan": tuple(int(v) for v in prod.plan(ring.bits))}
    sk, pk = he_keys(ctx, client, server, ring.bits)

    # offline: C -> S: Enc(r); S -> C: Enc(W.r - s), sanitised
    start = len(ctx.out.nodes)
    seed_c, seed_s = seed_name(client), seed_name(server)
    r = ring.random(ctx, client, seed_c, x.type.shape, ctx.stream(seed_c), "plain")
    enc_r = ctx.emit(client, "he_mm.encrypt",
                     [sk, apply_local(ctx, client, r, prod.x_steps, "plain")], "he", plan)
    enc_r = ctx.xfer(enc_r, server, "HE ciphertext: Enc(r) (masking, offline)", "he")
    hoist(ctx, start)
    w_enc = ring.encode(ctx, server, ctx.parts[w][server], f, "plain")
    wm = apply_local(ctx, server, w_enc, prod.w_steps, "plain")
    s = ring.random(ctx, server, seed_s, tuple(node.result.type.shape), ctx.stream(seed_s),
                    "plain")
    neg_s = ctx.emit(server, "neg", [apply_local(ctx, server, s, prod.inv_steps, "plain")], "plain")
    ext = ctx.emit(server, "he_mm.eval", [pk, enc_r, wm, neg_s], "he", plan)
    ext = ctx.xfer(ext, client, "HE ciphertext: Enc(W.r - s) (masking, offline)", "he")

    # online: C -> S: x - r; S: W.(x - r) + s, the product in the packing's layout
    xc = ring.encode(ctx, client, ctx.parts[x][client], f, "plain") \
        if x.type.kind == "private" else ctx.parts[x][client]
    got = ctx.xfer(ctx.emit(client, "sub", [xc, r], "masked"), server, "masked input (x - r)",
                   "masked")
    if x.type.kind == "arith":
        got = ctx.emit(server, "add", [got, ctx.parts[x][server]], "masked")
    z = ctx.emit(server, "dot_general", [wm, apply_local(ctx, server, got, prod.x_steps, "masked")],
                 "arith", {"contract": ((1,), (0,)), "batch": ((), ())})
    share_s = ctx.emit(server, "add", [apply_local(ctx, server, z, prod.out_steps, "arith"), s],
                       "arith")
    # C decrypts last, so that it sends x - r before it waits for Enc(W.r - s)
    u = ctx.emit(client, "he_mm.decrypt", [sk, ext], "arith", plan)
    shares = {client: apply_local(ctx, client, u, prod.out_steps, "arith"), server: share_s}
    ctx.parts[node.result] = truncate(ctx, device, shares, f) if f else shares


def _owner(ctx, value):
    if value.type.kind != "private":
        return None
    (party,) = ctx.parts[value]
    return party


for _op in ("dot_general", "conv_general_dilated"):
    register(PROTOCOL, _op, device="MPC", accepts=_accepts, result_kind="arith", cost=_cost,
             lower=_lower, wants="arith",
             doc="the seed patent: offline Enc(r) -> Enc(W.r - s) by HE, online x - r; "
                 "W private to one party, x private to or shared with the other")
