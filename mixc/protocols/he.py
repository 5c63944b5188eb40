"""HE device: linear functions of the key owner's data, evaluated by the other party.

An HE device (``type: HE``, ``domain: [a, b]``, ``key_owner: a``) runs its
functions on ciphertexts under the key owner's RLWE key (``runtime.he``:
n = 8192, log q = 218, t = 2^64, coefficient encoding, 128-bit security);
the other party, the *evaluator*, holds the ciphertexts and its own
plaintext. Kinds on the device:

- ``private``: a party's own plaintext that entered the device (``to``, or
  an implicit use); what is computed from one party's values alone stays
  with it, in the clear, for free (``he_local`` in ``private.py``);
- ``public``: constants and what follows from them (``he_public``);
- ``he``: anything that mixes the key owner's data with the evaluator's:
  ciphertexts under the owner's key, held by the evaluator.

Keys: the key owner runs ``he.keygen`` once per (owner, evaluator) pair at
the start of its program and sends the public key (``HE public key``).

Element layout. A ciphertext value is a list of ciphertexts; element i sits
at a flat position (ciphertext * n + coefficient). The compiler tracks every
element's position, so reshape, transpose, slice, squeeze and broadcast of a
ciphertext value cost nothing (they relabel positions), and the IR types
show exact byte sizes.

Linear ops (``he`` protocol; x: the operand carrying the owner's data, y:
the evaluator's plaintext or a public value):

- add/sub/neg: ciphertext + ciphertext when their elements line up (same
  coefficient, one ciphertext pairing), + the evaluator's plaintext or the
  owner's data (encrypted at the same positions), negation;
- mul/div by a scalar (public or the evaluator's): every ciphertext times a
  constant polynomial; mul by a plaintext vector: the elementwise packing
  (floor(sqrt(n)) = 90 products per ciphertext);
- dot_general and conv_general_dilated with a plaintext matrix/kernel
  (either operand): the matrix-product packing (``MatmulPlan``, Cheetah-style
  coefficient encoding; convolution as kernel-matrix times im2col patches);
- reduce_sum, pad, concatenate, dynamic_slice / dynamic_update_slice at a
  start index known only at run time (a loop's counter: public), and any of
  the above where the elements do not line up or a ciphertext must be
  multiplied again: a *refresh*. The
  evaluator masks the ciphertext with fresh uniform s, sanitises it
  (``mask_and_extract``: re-randomised, noise flooded) and sends it; the key
  owner decrypts v + s; now v = (v + s) + (-s) is additively shared between
  them, each applies the (linear) op to its part, the owner encrypts its
  result in the packing the op needs and the evaluator adds its part in.
  One round trip; the owner learns only v + s, the evaluator only ciphertexts.

A product of two values that both carry the owner's data is not linear:
compile error naming the op and line (as is every non-linear jnp op, refused
by the frontend).

Fixed point: values are encoded with the device's ``fraction_bits`` f; a
product by a plaintext adds f fraction bits, and a value is decoded with the
bits it carries, at most 56 (``MAX_FRAC_BITS``; at 54 bits values below 2^9
in magnitude fit the ring). A product whose encrypted operand carries too
many bits for its result to fit (operand bits + f > 56: at f = 18, the third
product in a chain, whose operand carries 54) refreshes that operand down to
f bits: a *truncating refresh*. After the owner decrypts v + s, the shares
(v + s, -s) are truncated by the extra bits with the dealer-free truncation
of MPC devices (``dealerfree.truncate``: the borrow bit of the shares' sum,
an AND of a bit each party knows, from an OT bit-OLE made at program start,
plus one masked bit each way per element). The evaluator's masked bits go
with its masked ciphertexts and the owner's with its re-encryption, so a
product that refreshes its operand anyway (a matrix or elementwise product
of a ciphertext) truncates in the same round trip; a product that needs no
refresh (a ciphertext times a scalar) gets one only when its bits would not
fit. Declared cost of a truncation: the bit-OLE's bytes and rounds (offline)
and one bit each way per element. Error: the truncated operand is
floor(v / 2^b) or one more, i.e. within 2^-f (one unit in the last place)
of the exact value, never a wrap-around, when |v| < 2^62 (before truncating
b = operand bits - f bits: |value| < 2^(62 - operand bits), 2^8 at 54);
then the product by the plaintext scales that error. What cannot be
truncated: products need 2f <= 56, so on a device with ``fraction_bits``
above 28 any product by a fractional plaintext is a compile error. Moving a
value into MPC shares truncates it back to the MPC device's f; into a
``ring: 128`` device the Z_2^64 shares (u, t) of v become Z_2^128 shares
(u 2^64, t 2^64) of v 2^64, truncated by 64 bits less the fraction bits the
device adds (same bound |v| < 2^62, same error: one unit in the last place).

Loops (``lax.fori_loop``, ``while_loop``, ``scan``, ``mixc.fori_loop``) stay
one ``loop`` op (a scan's ciphertext row at the run-time step: a refresh): a carried ciphertext keeps
one layout -- element positions and fraction bits -- in every iteration
(``HeCarry``). ``passes.lower`` lowers the body on trial from the layout of
what enters, then from what the body yields, and from the layouts of the
body's own ciphertexts (an accumulator adding up a matrix product keeps that
product's packing), and keeps the layout whose iteration sends the fewest
messages. What enters, and what the body yields, is brought to it: fewer
fraction bits at the same positions by a product with 2^bits (local), else by
a refresh (a truncating one where it carries more bits) re-encrypted at the
layout's positions. E.g. b <- 0.9 b - 0.1 m_i keeps 3f bits: each iteration
truncates b to f bits in the refresh its product by 0.9 needs and scales the
2f-bit result back up.

``reveal(x, owner's PYU)``: the evaluator sanitises and sends the values'
coefficients; the owner decrypts. ``reveal(x, evaluator's PYU)``: the same
with a mask s; the owner returns v + s and the evaluator subtracts s.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ..errors import MixcError
from ..ir.core import walk
from ..ir.ops import OPS
from . import Cost, register, register_loop_carrier
from .hepack import Product, apply_local, apply_numpy, he_keys, product_cost
from .hepack import he_runtime as _he
from .plaintext import MPC_PUBLIC_OPS, lower_local
from .private import HE_PROTOCOL, owner_of
from .common import ring_bytes
from .ring import ring_of

PROTOCOL = "he"
PUBLIC_PROTOCOL = "he_public"
MAX_FRAC_BITS = 56

STRUCTURAL = ("broadcast_in_dim", "reshape", "transpose", "squeeze", "slice", "take")
AFFINE = ("add", "sub", "neg", "reduce_sum", "concatenate", "pad", "convert_element_type") \
    + STRUCTURAL
PRODUCTS = ("mul", "div", "dot_general", "conv_general_dilated")
# ops at a start index known at run time (a loop's counter), and where their indices begin:
# a ciphertext's positions are fixed when compiling, so these refresh (the general path)
DYNAMIC = {"dynamic_slice": 1, "dynamic_update_slice": 2}


# ------------------------------------------------------------ fraction bits

def _natural_frac(dtype, f):
    """Fraction bits of a plaintext of ``dtype`` (None: no fixed point for it on HE)."""
    return {"f32": f, "i32": 0}.get(dtype)


def _integer_constant(v, module):
    """The value of a public scalar constant with integer entries (|v| < 2^31), else None."""
    if v.type.kind != "public":
        return None
    producers = module.__dict__.get("_he_producers")
    if producers is None or v not in producers:
        producers = {r: n for n in walk(module.nodes) for r in n.results}
        module.__dict__["_he_producers"] = producers
    n = producers.get(v)
    if n is not None and n.op == "broadcast_in_dim":
        n = producers.get(n.operands[0])
    if n is None or n.op != "constant":
        return None
    value = np.asarray(n.attrs["value"], dtype=np.float64)
    if value.shape != () or not np.all(value == np.round(value)) or np.any(
            np.abs(value) >= 2 ** 31):
        return None
    return value


def _whole_multiplier(node, x, y, module):
    """For ``mul`` of x by an integer constant y, x of the result's shape, y's value."""
    if node.op != "mul" or tuple(x.type.shape) != tuple(node.result.type.shape):
        return None
    return _integer_constant(y, module)


def _multiplier_frac(node, x, y, f, module):
    """Fraction bits a product of x by the plaintext y adds: none for an integer constant,
    f for ``div`` (x times the reciprocal), else y's own."""
    if node.op == "div":
        return f
    if _whole_multiplier(node, x, y, module) is not None:
        return 0
    return _natural_frac(y.type.dtype, f) or 0


def _operand_frac(frac, is_ciphertext, added, f):
    """Fraction bits a product's encrypted operand enters it with: its own, or f (a
    truncating refresh) when a ciphertext's product would carry more than MAX_FRAC_BITS."""
    if is_ciphertext and frac + added > MAX_FRAC_BITS and frac > f:
        return f
    return frac


def _ciphertext_fracs(module):
    """Fraction bits of every ciphertext value once lowered: ``_Lowering``'s rules replayed
    on the graph, so declared costs know which products truncate their operand."""
    fracs = {}
    _replay_fracs(module, module.nodes, fracs)
    return fracs


def _replay_fracs(module, nodes, fracs):
    for node in nodes:
        if node.body is not None:
            _replay_loop_fracs(module, node, fracs)
            continue
        if not node.results or node.results[0].type.kind != "he":
            continue
        f = module.devices[node.results[0].type.place].fraction_bits

        def frac(v):
            return fracs[v] if v.type.kind == "he" else _natural_frac(v.type.dtype, f) or 0
        carriers = [v for v in node.operands if _carries_owner(v, module)]
        if node.op in PRODUCTS and len(carriers) == 1:
            (x,) = carriers
            y = node.operands[1 - node.operands.index(x)]
            added = _multiplier_frac(node, x, y, f, module)
            fracs[node.result] = _operand_frac(frac(x), x.type.kind == "he", added, f) + added
        elif node.op == "convert_element_type":
            fracs[node.result] = max(frac(v) for v in carriers + [node.result])
        else:
            fracs[node.result] = max(frac(v) for v in carriers)


def _replay_loop_fracs(module, loop, fracs):
    """A loop's ciphertexts: its carried ones enter with their own bits, then with what the
    body yields, as ``HeCarry`` settles them (an estimate: here bits only, no positions);
    without a fixed point, the most bits seen (what goes round is scaled up to them)."""
    body, captures = loop.body, loop.attrs["captures"]

    def bits(v, arg):
        if v.type.kind == "he":
            return fracs[v]
        return _natural_frac(arg.type.dtype, module.devices[arg.type.place].fraction_bits) or 0
    for v, a in zip(loop.operands, body.args):
        if a.type.kind == "he":
            fracs[a] = bits(v, a)
    carried = [(a, y) for a, y in zip(body.args[captures:], body.nodes[-1].operands)
               if a.type.kind == "he"]
    seen = []
    for _ in range(3):
        _replay_fracs(module, body.nodes, fracs)
        following = [bits(y, a) for a, y in carried]
        seen.append(following)
        if following == [fracs[a] for a, _ in carried]:
            break
        for (a, _), b in zip(carried, following):
            fracs[a] = b
    else:
        for i, (a, _) in enumerate(carried):
            fracs[a] = max(s[i] for s in seen)
        _replay_fracs(module, body.nodes, fracs)
    for r, a in zip(loop.results, body.args[captures:]):
        if a.type.kind == "he":
            fracs[r] = fracs[a]


def _truncates_operand(node, x, module):
    """Whether product ``node`` refreshes its ciphertext operand ``x`` down to f bits."""
    if x.type.kind != "he":
        return False
    f = module.devices[x.type.place].fraction_bits
    y = node.operands[1 - node.operands.index(x)]
    fracs = module.__dict__.get("_he_fracs")
    if fracs is None or x not in fracs:
        fracs = module.__dict__["_he_fracs"] = _ciphertext_fracs(module)
    own = fracs[x]
    return _operand_frac(own, True, _multiplier_frac(node, x, y, f, module), f) != own


# ------------------------------------------------------------ placement (used by place)

def place_kind(node, device, kinds, module):
    """The kind of ``node``'s results on HE device ``device`` (``passes.place``)."""
    owners = module.__dict__.setdefault("_he_place_owners", {})
    if node.op == "to":
        src = module.devices[node.operands[0].type.place]
        if len(src.parties) != 1 or src.parties[0] not in device.parties:
            raise MixcError(f"{node.loc or node.op}: values enter HE device {device.name} only "
                            f"from its parties' own devices ({', '.join(device.parties)}), "
                            f"not from {src.name}")
        owners.update((r, src.parties[0]) for r in node.results)
        return "private"
    holders = set()
    for v in node.operands:
        k = kinds.get(v)
        if k == "public":
            continue
        if k == "he":
            return "he"
        if v.type.place != device.name:  # a party's plaintext, moved in as private later
            holders.update(module.devices[v.type.place].parties)
        else:
            holders.add(owners.get(v))
    if not holders:
        return "public"
    if len(holders) == 1 and None not in holders:
        owners.update((r, next(iter(holders))) for r in node.results)
        return "private"
    return "he"


def carried_kind(module, arg, values, kinds):
    """The kind of a loop's block argument on an HE device that takes ``values`` (what
    enters it; or the argument and what the body yields): public if all are, one party's
    private value if all are that party's, else a ciphertext (``passes.place``)."""
    owners = module.__dict__.setdefault("_he_place_owners", {})
    holders = set()
    for v in values:
        if v.type.place != arg.type.place:  # a party's plaintext, moved in as private
            holders.update(module.devices[v.type.place].parties)
        elif kinds.get(v) == "he":
            return "he"
        elif kinds.get(v) != "public":
            holders.add(owners.get(v))
    if not holders:
        return "public"
    if len(holders) == 1 and None not in holders:
        owners[arg] = next(iter(holders))
        return "private"
    return "he"


# ------------------------------------------------------------ HE values during lowering

class Ct:
    """A ciphertext value: bytes at the evaluator, element positions, fraction bits."""

    def __init__(self, value, pos, count, frac, products):
        self.value, self.pos, self.count = value, np.asarray(pos, dtype=np.int64), int(count)
        self.frac, self.products = int(frac), int(products)

    def relabel(self, pos):
        return Ct(self.value, pos, self.count, self.frac, self.products)


def _state(ctx):
    return ctx.__dict__.setdefault("_he_values", {})


class _Lowering:
    def __init__(self, ctx, node, dev=None):
        self.ctx, self.node = ctx, node
        if dev is None:
            dev = ctx.source.devices[node.results[0].type.place] if node.results else None
            if node.op in ("reveal", "to"):
                dev = ctx.source.devices[node.operands[0].type.place]
        self.device = dev
        self.owner, self.ev = dev.key_owner, dev.evaluator
        if self.ev is None:
            raise MixcError(f"HE device {dev.name} needs two parties and a key owner")
        self.f = dev.fraction_bits
        self.sk, self.pk = he_keys(ctx, self.owner, self.ev)

    # -- classification
    def role(self, v):
        if v.type.kind == "he":
            return "H"
        if v.type.kind == "public":
            return "P"
        (party,) = self.ctx.parts[v]
        return "O" if party == self.owner else "E"

    def natural_frac(self, v):
        frac = _natural_frac(v.type.dtype, self.f)
        if frac is None:
            raise MixcError(f"{self.node.loc or self.node.op}: {v.type.dtype} values on HE "
                            f"device {self.device.name}")
        return frac

    def frac_of(self, v):
        return _state(self.ctx)[v].frac if self.role(v) == "H" else self.natural_frac(v)

    # -- local helpers
    def emit(self, party, op, operands, kind, attrs=None):
        return self.ctx.emit(party, op, operands, kind, attrs)

    def encode(self, party, v, frac, kind="plain"):
        raw = self.ctx.parts[v][party]
        return self.emit(party, "encode", [raw], kind, {"frac_bits": int(frac)})

    def shift(self, party, value, bits):
        return self.emit(party, "shl", [value], value.type.kind, {"bits": int(bits)}) if bits else value

    def zeros(self, party, shape):
        zero = self.ctx.const(party, np.uint64(0))
        return self.emit(party, "broadcast_in_dim", [zero], "plain",
                         {"shape": tuple(shape), "broadcast_dimensions": ()})

    def encrypt(self, value, pos, count, what):
        """The owner encrypts its ring ``value`` at flat positions and sends it."""
        ct = self.emit(self.owner, "he.encrypt", [self.sk, value], "he",
                       {"positions": np.asarray(pos, dtype=np.int64).reshape(-1).astype(np.int32),
                        "count": int(count)})
        return self.ctx.xfer(ct, self.ev, what, "he")

    def encrypt_dense(self, value, frac, products=0):
        size = int(np.prod(value.type.shape, dtype=np.int64))
        count = max(1, -(-size // _he().N))
        pos = np.arange(size, dtype=np.int64).reshape(value.type.shape)
        ct = self.encrypt(value, pos, count, "HE ciphertext (key owner's data)")
        return Ct(ct, pos, count, frac, products)

    def scale_ct(self, c, bits):
        """c times 2^bits (to line up fraction bits)."""
        if not bits:
            return c
        k = self.ctx.const(self.ev, np.uint64(1 << bits))
        v = self.emit(self.ev, "he.mul_scalar", [c.value, k], "he",
                      {"count": c.count, "bound": 0.0})
        return Ct(v, c.pos, c.count, c.frac + bits, c.products)

    # -- refresh: a ciphertext value into additive parts (owner, evaluator)
    def refresh(self, v, frac=None):
        """(owner part, evaluator part, products so far) of ciphertext v at ``frac`` fraction
        bits (default: its own); fewer than it carries truncates the parts."""
        c = _state(self.ctx)[v]
        uniq, inverse = np.unique(c.pos.reshape(-1), return_inverse=True)
        shape = tuple(v.type.shape)
        seed = self.ev
        s = self.ctx.random(self.ev, seed, (uniq.size,), self.ctx.stream(seed), "plain")
        attrs = {"positions": uniq.astype(np.int32), "count": c.count}
        ext = self.emit(self.ev, "he.extract", [self.pk, c.value, s], "he", attrs)
        got = self.ctx.xfer(ext, self.owner, "HE ciphertext (sanitised, masked: v + s)", "he")
        w = self.emit(self.owner, "he.decrypt", [self.sk, got], "arith", attrs)
        take = {"indices": inverse.astype(np.int32), "shape": shape}
        u = self.emit(self.owner, "take", [w], "arith", take)
        t = self.emit(self.ev, "neg", [self.emit(self.ev, "take", [s], "arith", take)], "arith")
        bits = 0 if frac is None else frac - c.frac
        if bits < 0:
            return self.truncate(u, t, -bits) + (c.products,)
        return self.shift(self.owner, u, bits), self.shift(self.ev, t, bits), c.products

    def truncate(self, u, t, bits):
        """(owner part, evaluator part) of (u + t) / 2^bits by the dealer-free truncation of
        MPC devices, which sends its first party's masked bits first. The evaluator is first:
        its bits are known when it sends the refresh's ciphertext, so both parties' bits
        travel with the refresh's two messages (with the owner first, the evaluator would
        wait for the owner's bits before sending its own: one more round trip)."""
        from .dealerfree import truncate
        evaluator_first = SimpleNamespace(name=self.device.name, parties=(self.ev, self.owner))
        parts = truncate(self.ctx, evaluator_first, {self.owner: u, self.ev: t}, bits)
        return parts[self.owner], parts[self.ev]

    def parts(self, v, frac):
        """(owner part, evaluator part, products so far) of v as ring values at ``frac``."""
        r = self.role(v)
        if r == "H":
            return self.refresh(v, frac)
        if r == "O":
            return self.encode(self.owner, v, frac), None, 0
        return None, self.encode(self.ev, v, frac), 0

    def finish(self, c):
        if c.frac > MAX_FRAC_BITS:
            raise MixcError(f"{self.node.loc or self.node.op}: {self.node.op} on HE device "
                            f"{self.device.name} would carry {c.frac} fraction bits "
                            f"({c.products} products by plaintexts in a chain); at most "
                            f"{MAX_FRAC_BITS} fit the 64-bit ring, and an operand is "
                            f"truncated only down to the device's fraction_bits f = {self.f}, "
                            f"so a product by a fractional plaintext needs f <= "
                            f"{MAX_FRAC_BITS // 2}: lower fraction_bits, or compute it on MPC")
        _state(self.ctx)[self.node.result] = c
        self.ctx.parts[self.node.result] = {self.ev: c.value}

    # -- the ops
    def run(self):
        op = self.node.op
        if op == "reveal":
            return self.reveal()
        roles = [self.role(v) for v in self.node.operands]
        if op in PRODUCTS:
            return self.product(roles)
        if op in STRUCTURAL and roles == ["H"]:
            return self.relabel()
        if op == "convert_element_type" and roles == ["H"]:
            return self.convert()
        if op == "neg" and roles == ["H"]:
            c = _state(self.ctx)[self.node.operands[0]]
            v = self.emit(self.ev, "he.neg", [c.value], "he", {"count": c.count})
            return self.finish(Ct(v, c.pos, c.count, c.frac, c.products))
        if op in ("add", "sub") and "H" in roles and self.add_fast(roles):
            return None
        if op == "concatenate" and set(roles) == {"H"}:
            return self.concat()
        return self.affine(roles)

    def relabel(self):
        (x,) = self.node.operands
        c = _state(self.ctx)[x]
        attrs = {k: v for k, v in self.node.attrs.items() if k not in ("protocol", "explicit")}
        return self.finish(c.relabel(OPS[self.node.op].impl(attrs, c.pos)))

    def convert(self):
        (x,) = self.node.operands
        src, dst = x.type.dtype, self.node.result.type.dtype
        if not (src == "i32" and dst == "f32"):
            raise MixcError(f"{self.node.loc}: convert_element_type {src} -> {dst} of a "
                            f"ciphertext is not linear")
        # an integer carries 0 fraction bits; as f32 it carries f, as plaintexts added to
        # it are encoded at the ciphertext's bits (at 0 they would be rounded to integers)
        c = _state(self.ctx)[x]
        return self.finish(self.scale_ct(c, self.f - c.frac))

    def add_fast(self, roles):
        """add/sub with a ciphertext whose elements line up; False: use the general path."""
        a, b = self.node.operands
        st = _state(self.ctx)
        sub = self.node.op == "sub"
        if roles == ["H", "H"]:
            ca, cb = st[a], st[b]
            pairs = _pairing(ca.pos, cb.pos)
            if pairs is None:
                return False
            frac = max(ca.frac, cb.frac)
            ca, cb = self.scale_ct(ca, frac - ca.frac), self.scale_ct(cb, frac - cb.frac)
            index = {p: i for i, p in enumerate(pairs)}
            pos = np.vectorize(lambda pa, pb: index[(pa // _he().N, pb // _he().N)] * _he().N
                               + pa % _he().N, otypes=[np.int64])(ca.pos, cb.pos)
            v = self.emit(self.ev, "he.sub" if sub else "he.add", [ca.value, cb.value], "he",
                          {"pairs": tuple(pairs)})
            return self.finish(Ct(v, pos, len(pairs), frac, max(ca.products, cb.products))) or True
        hi = roles.index("H")
        h, other = self.node.operands[hi], self.node.operands[1 - hi]
        c = st[h]
        flat = c.pos.reshape(-1)
        if np.unique(flat).size != flat.size or tuple(other.type.shape) not in \
                ((), tuple(h.type.shape)):
            return False
        role = roles[1 - hi]
        if role == "O":
            enc = self.encode(self.owner, other, c.frac)
            if tuple(other.type.shape) != tuple(h.type.shape):
                enc = self.emit(self.owner, "broadcast_in_dim", [enc], "plain",
                                {"shape": tuple(h.type.shape), "broadcast_dimensions": ()})
            ct = self.encrypt(enc, c.pos, c.count, "HE ciphertext (key owner's data)")
            operands = [c.value, ct] if hi == 0 else [ct, c.value]
            v = self.emit(self.ev, "he.sub" if sub else "he.add", operands, "he",
                          {"pairs": tuple((i, i) for i in range(c.count))})
            return self.finish(Ct(v, c.pos, c.count, c.frac, c.products)) or True
        y = self.encode(self.ev, other, c.frac)
        if tuple(other.type.shape) != tuple(h.type.shape):
            y = self.emit(self.ev, "broadcast_in_dim", [y], "plain",
                          {"shape": tuple(h.type.shape), "broadcast_dimensions": ()})
        base = c.value
        if sub and hi == 0:
            y = self.emit(self.ev, "neg", [y], "plain")
        elif sub:
            base = self.emit(self.ev, "he.neg", [base], "he", {"count": c.count})
        v = self.emit(self.ev, "he.add_plain", [base, y], "he",
                      {"positions": flat.astype(np.int32), "count": c.count})
        return self.finish(Ct(v, c.pos, c.count, c.frac, c.products)) or True

    def concat(self):
        st = _state(self.ctx)
        cs = [st[v] for v in self.node.operands]
        frac = max(c.frac for c in cs)
        cs = [self.scale_ct(c, frac - c.frac) for c in cs]
        offset, pos = 0, []
        for c in cs:
            pos.append(c.pos + offset * _he().N)
            offset += c.count
        v = self.emit(self.ev, "concatenate", [c.value for c in cs], "he", {"dimension": 0})
        full = np.concatenate(pos, axis=self.node.attrs["dimension"])
        return self.finish(Ct(v, full, offset, frac, max(c.products for c in cs)))

    def affine(self, roles):
        """The general path: each party applies the op to its parts; the owner encrypts."""
        node = self.node
        frac = max(self.frac_of(v) for v, r in zip(node.operands, roles) if r in ("H", "O"))
        owner_parts, ev_parts, products = [], [], 0
        for i, v in enumerate(node.operands):
            r = roles[i]
            if r == "P" and node.op == "pad" and v is node.operands[1]:
                owner_parts.append(None)
                ev_parts.append(self.encode(self.ev, v, frac))
                continue
            if i >= DYNAMIC.get(node.op, len(roles)):  # a start index: both use it as is
                if r != "P":
                    raise MixcError(f"{node.loc or node.op}: {node.op} on HE device "
                                    f"{self.device.name} needs public start indices")
                owner_parts.append(self.ctx.parts[v][self.owner])
                ev_parts.append(self.ctx.parts[v][self.ev])
                continue
            o, e, k = self.parts(v, frac)
            owner_parts.append(o)
            ev_parts.append(e)
            products = max(products, k)
        attrs = {k: v for k, v in node.attrs.items() if k not in ("protocol", "explicit")}
        o = self._side(self.owner, node.op, owner_parts, attrs)
        e = self._side(self.ev, node.op, ev_parts, attrs)
        c = self.encrypt_dense(o, frac, products)
        if e is not None:
            v = self.emit(self.ev, "he.add_plain", [c.value, e], "he",
                          {"positions": c.pos.reshape(-1).astype(np.int32), "count": c.count})
            c = Ct(v, c.pos, c.count, frac, products)
        return self.finish(c)

    def _side(self, party, op, parts, attrs):
        if all(p is None for p in parts):
            return None
        operands = [p if p is not None else self.zeros(party, v.type.shape)
                    for p, v in zip(parts, self.node.operands)]
        return self.emit(party, op, operands, "plain", attrs)

    def product(self, roles):
        node = self.node
        enc_side = [i for i, r in enumerate(roles) if r in ("H", "O")]
        if len(enc_side) != 1:
            raise MixcError(f"{node.loc or node.op}: {node.op} of two values that both carry "
                            f"the key owner's data on HE device {self.device.name} is not "
                            "linear (one side must be the evaluator's plaintext or public)")
        xi = enc_side[0]
        x, y = node.operands[xi], node.operands[1 - xi]
        if node.op == "div" and xi != 0:
            raise MixcError(f"{node.loc}: division by a value carrying the key owner's data on "
                            f"HE device {self.device.name} is not linear")
        if node.op in ("mul", "div"):
            return self.elementwise(x, y)
        prod = Product(node, xi)
        plan = prod.plan()
        h = _he()
        yf = self.natural_frac(y)
        xf = _operand_frac(self.frac_of(x), self.role(x) == "H", yf, self.f)
        o, t, k = self.parts(x, xf)
        xm = apply_local(self.ctx, self.owner, o, prod.x_steps, "plain")
        ct = self.encrypt(xm, h.matmul_input_positions(plan), h.matmul_plan(plan).n_inputs,
                          "HE ciphertext (key owner's data, matrix packing)")
        wm = apply_local(self.ctx, self.ev, self.encode(self.ev, y, yf), prod.w_steps, "plain")
        v = self.emit(self.ev, "he.matmul", [ct, wm], "he", {"plan": tuple(plan)})
        pos = apply_numpy(h.matmul_output_positions(plan), prod.out_steps)
        c = Ct(v, pos, h.matmul_plan(plan).n_outputs, xf + yf, k + 1)
        if t is not None:  # the evaluator's part times its plaintext, added in
            attrs = {a: b for a, b in node.attrs.items() if a not in ("protocol", "explicit")}
            ye = self.encode(self.ev, y, yf)
            local = self.emit(self.ev, node.op, [t, ye] if xi == 0 else [ye, t], "plain", attrs)
            c.value = self.emit(self.ev, "he.add_plain", [c.value, local], "he",
                                {"positions": pos.reshape(-1).astype(np.int32), "count": c.count})
        return self.finish(c)

    def elementwise(self, x, y):
        node = self.node
        shape = tuple(node.result.type.shape)
        whole = _whole_multiplier(node, x, y, self.ctx.source)
        scalar = tuple(y.type.shape) == () or whole is not None  # one value for all elements
        if whole is not None:  # an integer constant: no fraction bits added
            ye = self.ctx.const(self.ev, np.asarray(whole).astype(np.int64).view(np.uint64))
        elif node.op == "div":  # times the reciprocal, computed where y is
            parties = [self.ev]
            recip = {}
            for p in parties:
                one = self.ctx.const(p, np.float32(1.0))
                recip[p] = self.emit(p, "div", [one, self.ctx.parts[y][p]], "plain")
            ye = self.emit(self.ev, "encode", [recip[self.ev]], "plain", {"frac_bits": self.f})
        else:
            ye = self.encode(self.ev, y, self.natural_frac(y))
        yf = _multiplier_frac(node, x, y, self.f, self.ctx.source)
        xf = _operand_frac(self.frac_of(x), self.role(x) == "H", yf, self.f)
        bound = float(2 ** 63) if self.role(y) == "E" else 0.0
        if scalar and self.role(x) == "H" and xf == self.frac_of(x):  # no refresh needed
            c = _state(self.ctx)[x]
            v = self.emit(self.ev, "he.mul_scalar", [c.value, ye], "he",
                          {"count": c.count, "bound": bound})
            return self.finish(Ct(v, c.pos, c.count, xf + yf, c.products + 1))
        o, t, k = self.parts(x, xf)
        if tuple(x.type.shape) != shape:
            o = self.emit(self.owner, "broadcast_in_dim", [o], o.type.kind,
                          {"shape": shape, "broadcast_dimensions": ()})
            if t is not None:
                t = self.emit(self.ev, "broadcast_in_dim", [t], t.type.kind,
                              {"shape": shape, "broadcast_dimensions": ()})
        size = int(np.prod(shape, dtype=np.int64))
        h = _he()
        if scalar:  # scalar times an owner value: encrypt densely
            c = self.encrypt_dense(o, xf, k)
            v = self.emit(self.ev, "he.mul_scalar", [c.value, ye], "he",
                          {"count": c.count, "bound": bound})
            c = Ct(v, c.pos, c.count, xf + yf, k + 1)
            yb = ye
        else:
            flat_o = apply_local(self.ctx, self.owner, o, [("reshape", (size,))], o.type.kind)
            count = -(-size // h.elementwise_d())
            ct = self.encrypt(flat_o, h.elementwise_input_positions(size), count,
                              "HE ciphertext (key owner's data, elementwise packing)")
            yflat = apply_local(self.ctx, self.ev, ye, [("reshape", (size,))], "plain")
            v = self.emit(self.ev, "he.mul_elementwise", [ct, yflat], "he", {"size": size})
            pos = h.elementwise_output_positions(size).reshape(shape)
            c = Ct(v, pos, count, xf + yf, k + 1)
            yb = ye
        if t is not None:
            local = self.emit(self.ev, "mul", [t, yb], "plain")
            c.value = self.emit(self.ev, "he.add_plain", [c.value, local], "he",
                                {"positions": c.pos.reshape(-1).astype(np.int32),
                                 "count": c.count})
        return self.finish(c)

    def reveal(self):
        (x,) = self.node.operands
        (dst,) = self.ctx.source.devices[self.node.result.type.place].parties
        c = _state(self.ctx)[x]
        uniq, inverse = np.unique(c.pos.reshape(-1), return_inverse=True)
        attrs = {"positions": uniq.astype(np.int32), "count": c.count}
        take = {"indices": inverse.astype(np.int32), "shape": tuple(x.type.shape)}
        decode = {"frac_bits": c.frac, "dtype": x.type.dtype}
        if dst == self.owner:
            ext = self.emit(self.ev, "he.extract", [self.pk, c.value], "he", attrs)
            got = self.ctx.xfer(ext, self.owner, "HE ciphertext (sanitised result)", "he")
            w = self.emit(self.owner, "he.decrypt", [self.sk, got], "plain", attrs)
        elif dst == self.ev:
            seed = self.ev
            s = self.ctx.random(self.ev, seed, (uniq.size,), self.ctx.stream(seed), "plain")
            ext = self.emit(self.ev, "he.extract", [self.pk, c.value, s], "he", attrs)
            got = self.ctx.xfer(ext, self.owner, "HE ciphertext (sanitised, masked: v + s)", "he")
            m = self.emit(self.owner, "he.decrypt", [self.sk, got], "masked", attrs)
            back = self.ctx.xfer(m, self.ev, "masked value v + s (reveal)", "masked")
            w = self.emit(self.ev, "sub", [back, s], "plain")
        else:
            raise MixcError(f"{self.node.loc}: reveal from HE device {self.device.name} goes to "
                            f"the key owner or the evaluator, not {dst}")
        vals = self.emit(dst, "take", [w], "plain", take)
        self.ctx.parts[self.node.result] = {dst: self.emit(dst, "decode", [vals], "plain", decode)}


# ------------------------------------------------------------ loops

class Layout:
    """Where a carried ciphertext value's elements sit (flat positions, ciphertext count)
    and the fraction bits it carries: one layout in every iteration of its loop."""

    def __init__(self, pos, count, frac):
        self.pos, self.count, self.frac = np.asarray(pos, dtype=np.int64), int(count), int(frac)

    def __eq__(self, other):
        return (isinstance(other, Layout) and (self.count, self.frac) == (other.count, other.frac)
                and np.array_equal(self.pos, other.pos))

    __hash__ = None


class HeCarry:
    """A loop's carried (or captured) ciphertext value (``passes.lower._settle``): the
    layout it enters with, or what its body yields, brought to the one it keeps.

    Bringing a value to a layout: a ciphertext with the same positions and fewer fraction
    bits is multiplied by 2^bits (local); otherwise -- other positions, more bits (a
    truncating refresh), or a plaintext / public value entering -- the evaluator refreshes
    it (one round trip), the owner encrypts its part at the layout's positions and the
    evaluator adds its own part in. A layout whose positions repeat (a broadcast ciphertext)
    is not kept: such a value is refreshed into a dense layout."""

    def layout_of(self, ctx, v, arg, loop):
        """The layout ``v`` gives block argument ``arg``: its own, or a dense one."""
        if v.type.kind == "he":
            c = _state(ctx)[v]
            if np.unique(c.pos.reshape(-1)).size == c.pos.size:
                return Layout(c.pos, c.count, c.frac)
            frac = c.frac
        else:
            frac = _Lowering(ctx, loop, ctx.device_of(arg)).natural_frac(arg)
        size = int(np.prod(arg.type.shape, dtype=np.int64))
        return Layout(np.arange(size, dtype=np.int64).reshape(arg.type.shape),
                      max(1, -(-size // _he().N)), frac)

    def enter(self, ctx, v, arg, layout, loop):
        """The evaluator's piece of ``v`` as a ciphertext in ``layout``."""
        low = _Lowering(ctx, loop, ctx.device_of(arg))
        if v.type.kind == "he":
            c = _state(ctx)[v]
            if c.count == layout.count and np.array_equal(c.pos, layout.pos) \
                    and c.frac <= layout.frac:
                return {low.ev: self._full(low, low.scale_ct(c, layout.frac - c.frac).value,
                                           arg, layout)}
        o, t, _ = low.parts(v, layout.frac)
        if o is None:
            o = low.zeros(low.owner, arg.type.shape)
        ct = low.encrypt(o, layout.pos, layout.count,
                         "HE ciphertext (a loop's carried value, in the layout it keeps)")
        return {low.ev: self._full(low, ct, arg, layout, t)}

    @staticmethod
    def _full(low, ct, arg, layout, plain=None):
        """``ct`` (plus the evaluator's ``plain`` part) in full ciphertexts, as every
        iteration's value is (a fresh encryption is smaller: seeded)."""
        if plain is None and ct.type.shape[0] == layout.count * _he().FULL:
            return ct
        if plain is None:
            plain = low.zeros(low.ev, arg.type.shape)
        return low.emit(low.ev, "he.add_plain", [ct, plain], "he",
                        {"positions": layout.pos.reshape(-1).astype(np.int32),
                         "count": layout.count})

    def alternatives(self, ctx, arg, most=4):
        """The layouts of ciphertexts of ``arg``'s shape that the loop's body made (at most
        ``most``, the last made first): an accumulator that keeps the packing of what it
        adds up adds it without a refresh."""
        found = []
        for v, c in reversed(list(_state(ctx).items())):
            if tuple(v.type.shape) != tuple(arg.type.shape) or v.type.place != arg.type.place \
                    or np.unique(c.pos.reshape(-1)).size != c.pos.size:
                continue
            layout = Layout(c.pos, c.count, c.frac)
            if layout not in found:
                found.append(layout)
            if len(found) == most:
                break
        return found

    def bind(self, ctx, v, layout):
        (piece,) = ctx.parts[v].values()
        _state(ctx)[v] = Ct(piece, layout.pos, layout.count, layout.frac, 0)


def _pairing(pa, pb):
    """Ciphertext pairs (i, j) if a + b lines up elementwise, else None."""
    n = _he().N
    pa, pb = pa.reshape(-1), pb.reshape(-1)
    if pa.shape != pb.shape or np.any(pa % n != pb % n):
        return None
    pairs = sorted(set(zip((pa // n).tolist(), (pb // n).tolist())))
    firsts = [i for i, _ in pairs]
    seconds = [j for _, j in pairs]
    if len(set(firsts)) != len(firsts) or len(set(seconds)) != len(seconds):
        return None
    return pairs


def _lower(ctx, node):
    _Lowering(ctx, node).run()


def _lower_to_mpc(ctx, node):
    """An HE device's value into shares of an MPC device on the same two parties: the
    evaluator masks the ciphertexts with s, the owner decrypts v + s; (v + s, -s) are
    arithmetic shares; extra fraction bits (after products) are truncated (TruncPr)."""
    (x,) = node.operands
    if x.type.kind == "private":
        from .shares import share_private
        return share_private(ctx, node)
    mpc = ctx.device_of(node.result)
    low = _Lowering(ctx, node)
    u, t, _ = low.refresh(x)
    shares = {low.owner: u, low.ev: t}
    from .common import frac_bits
    from .correlations import truncate
    extra = _state(ctx)[x].frac - frac_bits(mpc, x.type.dtype)
    ring = ring_of(mpc)
    if ring.bits == 64:
        if extra:
            shares = truncate(ctx, mpc, shares, extra)
        ctx.parts[node.result] = shares
        return
    # HE plaintexts are mod 2^64. u + t = v mod 2^64 gives u 2^64 + t 2^64 = v 2^64 mod
    # 2^128: shares of v 2^64 on the wide ring, |v 2^64| < 2^126 for |v| < 2^62 (the
    # truncation's bound); truncating them by 64 + extra bits (64 at a time) leaves v at the
    # MPC device's fraction bits, within one unit in the last place.
    shares = {p: ctx.emit(p, "shl", [ring.widen(ctx, p, v, "arith")], "arith", {"bits": 64})
              for p, v in shares.items()}
    bits = 64 + extra
    while bits > 0:
        step = min(bits, 64)
        shares = truncate(ctx, mpc, shares, step)
        bits -= step
    ctx.parts[node.result] = shares


# ------------------------------------------------------------ costs

def _cts(size):
    return max(1, -(-int(size) // _he().N))


def _enc_bytes(size):
    return _cts(size) * _he().SEEDED


def _ext_bytes(size):
    h = _he()
    n, size = h.N, int(size)
    full, rest = divmod(size, n)
    return full * h.extracted_bytes(n) + (h.extracted_bytes(rest) if rest else 0)


def _truncation_cost(size):
    """A truncating refresh's extra: ``dealerfree.truncate``'s bytes and rounds but its
    online round, whose masked bits travel with the refresh's two messages."""
    from .dealerfree import truncation_cost
    cost = truncation_cost(size)
    return Cost(cost.bytes, cost.rounds - 1)


def _cost(node, module):
    kinds = [v.type.kind for v in node.operands]
    if node.op in PRODUCTS and node.op not in ("mul", "div"):
        xi = next(i for i, v in enumerate(node.operands) if _carries_owner(v, module))
        x = node.operands[xi]
        enc, _out = product_cost(node, xi)
        refresh = (_ext_bytes(x.type.size) if kinds[xi] == "he" else 0)
        cost = Cost(enc + refresh, 1 + (1 if refresh else 0))
        return cost + (_truncation_cost(x.type.size) if _truncates_operand(node, x, module)
                       else Cost())
    if node.op in STRUCTURAL + ("neg", "convert_element_type") and kinds == ["he"]:
        return Cost()
    size = node.result.type.size
    owner_data = [v for v in node.operands if v.type.kind == "private"
                  and _carries_owner(v, module)]
    cts = [v for v in node.operands if v.type.kind == "he"]
    if node.op in ("mul", "div") and len(cts) == 1 and not owner_data:
        return _ciphertext_product_cost(node, cts[0], module)
    if node.op in ("add", "sub") and cts and not owner_data:
        return Cost()  # lines up (else a refresh, not known before lowering)
    refresh = sum(_ext_bytes(v.type.size) for v in cts) if node.op not in ("add", "sub") else 0
    return Cost(_enc_bytes(size) + refresh, 1 + (1 if refresh else 0))


def _ciphertext_product_cost(node, x, module):
    """A ciphertext x times a plaintext: by a scalar, local (unless x must be truncated);
    else (and then) a refresh of x, the owner's part encrypted densely (scalar) or in the
    elementwise packing, in the same round trip as the truncation, if any."""
    y = node.operands[1 - node.operands.index(x)]
    size = node.result.type.size
    truncates = _truncates_operand(node, x, module)
    scalar = tuple(y.type.shape) == () or _whole_multiplier(node, x, y, module) is not None
    if scalar and not truncates:
        return Cost()
    enc = (_enc_bytes(size) if scalar
           else -(-size // _he().elementwise_d()) * _he().SEEDED)
    cost = Cost(_ext_bytes(x.type.size) + enc, 2)
    return cost + (_truncation_cost(x.type.size) if truncates else Cost())


def _carries_owner(v, module):
    if v.type.kind == "he":
        return True
    if v.type.kind != "private":
        return False
    dev = module.devices[v.type.place]
    return owner_of(v, module) == dev.key_owner


def _reveal_cost(node, module):
    (x,) = node.operands
    dev = module.devices[x.type.place]
    (dst,) = module.devices[node.result.type.place].parties
    back = x.type.size * 8 if dst != dev.key_owner else 0
    return Cost(_ext_bytes(x.type.size) + back, 1 if not back else 2)


def _mixed(kinds, node, module):
    if "he" not in kinds and "private" not in kinds:
        return False
    dev = module.devices[node.results[0].type.place]
    if dev.kind != "HE":
        return False
    owners = {owner_of(v, module) for v, k in zip(node.operands, kinds) if k == "private"}
    return "he" in kinds or len(owners) > 1


def _from_he(kinds, node, module):
    (x,) = node.operands
    return kinds == ("he",) and module.devices[x.type.place].kind == "HE"


def _all_public(kinds, node, module):
    return all(k == "public" for k in kinds)


for _op in AFFINE + PRODUCTS + tuple(DYNAMIC):
    register(PROTOCOL, _op, device="HE", accepts=_mixed, result_kind="he", cost=_cost,
             lower=_lower, doc="a linear op on ciphertexts under the key owner's key")
def _into_mpc(kinds, node, module):
    (x,) = node.operands
    src, dst = module.devices[x.type.place], module.devices[node.result.type.place]
    return (src.kind == "HE" and kinds in (("he",), ("private",))
            and set(src.parties) == set(dst.parties) and len(dst.parties) == 2)


def _into_mpc_cost(node, module):
    (x,) = node.operands
    if x.type.kind == "private":
        return Cost()
    return Cost(_ext_bytes(x.type.size) + ring_bytes(module, node.result) * 4 * x.type.size, 2)


register(PROTOCOL, "to", device="MPC", accepts=_into_mpc, result_kind="arith",
         cost=_into_mpc_cost, lower=_lower_to_mpc,
         doc="HE values into MPC shares: the key owner decrypts v + s, the evaluator keeps -s")
register(PROTOCOL, "reveal", device="PYU", accepts=_from_he, result_kind="plain",
         cost=_reveal_cost, lower=_lower,
         doc="sanitised ciphertexts to the key owner, who decrypts (masked, to the evaluator)")
for _op in sorted(set(("constant",) + AFFINE + PRODUCTS + MPC_PUBLIC_OPS)):
    register(PUBLIC_PROTOCOL, _op, device="HE", accepts=_all_public, result_kind="public",
             cost=lambda n, m: Cost(), lower=lower_local,
             doc="public values on an HE device: computed by both parties")
register_loop_carrier("he", HeCarry())
__all__ = ["PROTOCOL", "HE_PROTOCOL", "place_kind", "Product", "he_keys"]



def params_text(t_bits=64):
    """The audit's one-line description of the HE parameters of plaintext modulus 2^t_bits."""
    from ..runtime.he_params import params_for
    p = params_for(t_bits)
    return (f"RLWE n = {p.n}, log2 q = {round(p.logq)}, t = 2^{t_bits}, 128-bit security; "
            "results noise-flooded to 2^-40 statistical distance")
