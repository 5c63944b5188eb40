"""HE machinery shared by ``he``, ``masking`` and ``dealerfree``.

Three protocols run RLWE products between two parties (``runtime.he``): the
HE device (``he.py``), the masked linear layers (``masking.py``) and the
dealer-free matrix-product triples (``dealerfree.py``). What they share
lives here, so none of them imports another's internals:

- ``he_keys``: one key pair per (owner, evaluator) and plaintext modulus (2^64,
  or 2^128 for a ``ring: 128`` device), generated at the start of the owner's
  program; the public key is sent once (``HE public key``);
- ``hoist``: move work that depends on no input to the start of the block
  being lowered (the program's, after the key generation; a loop body's, so
  it runs once per iteration), so it runs, and is sent, before anything waits;
- ``at_program_start``: what is made once per run (key pairs, OT sessions),
  at the program's start even when a loop body asks for it first;
- ``Product``: how a bilinear op (``dot_general``, ``conv_general_dilated``)
  becomes W (M x K, plaintext) . X (K x N, encrypted) in the matrix-product
  packing, with the local reshapes/transposes on each side (``apply_local``
  on IR values, ``apply_numpy`` on arrays) and its bytes (``product_cost``).
"""
from __future__ import annotations

import numpy as np

from ..errors import MixcError
from ..ir.ops import OPS, conv_output_perm, conv_output_spatial

HE_PUBLIC_KEY = "HE public key"


def he_runtime():
    """``runtime.he_ops`` (imported on first use: it loads the HE kernels)."""
    from ..runtime import he_ops
    return he_ops


# ------------------------------------------------------------ keys

def he_keys(ctx, owner, evaluator, t_bits=64):
    """(secret key at owner, public key at evaluator): one key pair per (owner, evaluator)
    and plaintext modulus 2^t_bits (128: the u128 ring's products), generated at the start
    of the owner's program; the public key is sent once. Inside a loop body they are the
    loop's captured copies (``ctx.captured``)."""
    keys = ctx.__dict__.setdefault("_he_keys", {})
    slot = (owner, evaluator) if t_bits == 64 else (owner, evaluator, t_bits)
    if slot not in keys:
        from ..ir.core import TensorType
        sk_bytes, pk_bytes = he_runtime().key_bytes(t_bits)
        ctx.add_party(owner)
        sk, pk = at_program_start(ctx, "he.keygen", (), [
            TensorType("u8", (sk_bytes,), owner, "plain"),
            TensorType("u8", (pk_bytes,), owner, "public")],
            {} if t_bits == 64 else {"t_bits": t_bits}).results
        tags = ctx._tags
        tags[(owner, evaluator)] = tag = tags.get((owner, evaluator), 0) + 1
        sent = at_program_start(ctx, "xfer", [pk], [pk.type.with_(place=evaluator)],
                                {"tag": tag, "what": HE_PUBLIC_KEY}).result
        keys[slot] = (sk, sent)
    return tuple(ctx.captured(v) for v in keys[slot])


def at_program_start(ctx, op, operands, result_types, attrs):
    """A node made once per run, before any other work: inserted at the start of the
    whole program (after those inserted there before it), even while a loop body is
    being lowered. Key pairs and OT sessions are made this way."""
    from ..ir.core import Node
    at = ctx.__dict__.setdefault("_program_front", 0)
    node = Node(op, tuple(operands), tuple(ctx.out.new_value(t) for t in result_types),
                dict(attrs), None)
    ctx.program_nodes.insert(at, node)
    ctx.__dict__["_program_front"] = at + 1
    return node


def hoist(ctx, start):
    """Move the nodes emitted since index ``start`` to the front of the block being lowered
    (in the program, after the key generation and OT sessions; in a loop body, its start):
    work that depends on no input (e.g. the masking protocol's Enc(r), dealer-free
    triples) then runs, and is sent, before anything waits -- in a loop, once per
    iteration, before the iteration's first product."""
    moved = ctx.out.nodes[start:]
    del ctx.out.nodes[start:]
    front = ctx.scoped("hepack.hoist")  # per block: a body's front is its own
    at = front.get("hoisted", 0)
    if ctx.out.nodes is ctx.program_nodes:
        at += ctx.__dict__.get("_program_front", 0)
    ctx.out.nodes[at:at] = moved
    front["hoisted"] = front.get("hoisted", 0) + len(moved)


# ------------------------------------------------------------ layouts of products

def _ident(perm):
    return tuple(perm) == tuple(range(len(perm)))


class Product:
    """How a bilinear op becomes W (M x K, plaintext) . X (K x N, encrypted).

    ``xi`` is the operand carrying the encrypted side. Each ``*_steps`` is a list of
    (op, attrs) applied to a value: to the x operand -> X, to the other -> W, to the
    (M, N) result -> the op's result (``out``) and back (``inv``)."""

    def __init__(self, node, xi):
        self.node, self.xi = node, xi
        x, w = node.operands[xi], node.operands[1 - xi]
        out_shape = tuple(node.result.type.shape)
        if node.op == "dot_general":
            (lc, rc), (lb, rb) = node.attrs["contract"], node.attrs["batch"]
            if lb or rb:
                raise MixcError(f"{node.loc or node.op}: batched dot_general with one side "
                                "encrypted is not supported (unbatch it, or use MPC)")
            cx, cw = (lc, rc) if xi == 0 else (rc, lc)
            fx = [i for i in range(len(x.type.shape)) if i not in cx]
            fw = [i for i in range(len(w.type.shape)) if i not in cw]
            self.K = int(np.prod([x.type.shape[i] for i in cx], dtype=np.int64))
            self.N = int(np.prod([x.type.shape[i] for i in fx], dtype=np.int64))
            self.M = int(np.prod([w.type.shape[i] for i in fw], dtype=np.int64))
            self.x_steps = _transpose(tuple(cx) + tuple(fx)) + [("reshape", (self.K, self.N))]
            self.w_steps = _transpose(tuple(fw) + tuple(cw)) + [("reshape", (self.M, self.K))]
            if xi == 0:  # result = (x free, w free) = Z^T
                self.out_steps = [("transpose", (1, 0)), ("reshape", out_shape)]
                self.inv_steps = [("reshape", (self.N, self.M)), ("transpose", (1, 0))]
            else:
                self.out_steps = [("reshape", out_shape)]
                self.inv_steps = [("reshape", (self.M, self.N))]
            return
        a = {k: v for k, v in node.attrs.items() if k not in ("protocol", "explicit")}
        lhs, rhs, _ = a["dimension_numbers"]
        img, ker = node.operands
        window = tuple(ker.type.shape[i] for i in rhs[2:])
        sp = conv_output_spatial([img.type.shape[i] for i in lhs[2:]], window, a)
        O = ker.type.shape[rhs[0]]
        B = img.type.shape[lhs[0]]
        K = ker.type.shape[rhs[1]] * int(np.prod(window, dtype=np.int64))
        Np = B * int(np.prod(sp, dtype=np.int64))
        perm = conv_output_perm(a, len(sp))
        inv = tuple(int(i) for i in np.argsort(perm))
        patches = [("conv_patches", dict(a, window=window))]
        kmat = _transpose(tuple(rhs)) + [("reshape", (O, K))]
        to_out = [("reshape", (O, B) + sp)] + _transpose(perm)
        from_out = _transpose(inv) + [("reshape", (O, Np))]
        if xi == 0:  # the image is encrypted: Z (O, Np) = kernel . patches
            self.M, self.K, self.N = O, K, Np
            self.x_steps, self.w_steps = patches, kmat
            self.out_steps, self.inv_steps = to_out, from_out
        else:  # the kernel is encrypted: Z^T (Np, O) = patches^T . kernel^T
            self.M, self.K, self.N = Np, K, O
            self.x_steps = kmat + [("transpose", (1, 0))]
            self.w_steps = patches + [("transpose", (1, 0))]
            self.out_steps = [("transpose", (1, 0))] + to_out
            self.inv_steps = from_out + [("transpose", (1, 0))]

    def plan(self, t_bits=64):
        return he_runtime().plan_matmul(self.M, self.K, self.N, t_bits)


def _transpose(perm):
    return [] if _ident(perm) else [("transpose", tuple(int(i) for i in perm))]


_STEP_ATTR = {"transpose": "permutation", "reshape": "new_sizes"}


def _step_attrs(op, arg):
    return dict(arg) if isinstance(arg, dict) else {_STEP_ATTR[op]: tuple(arg)}


def apply_local(ctx, party, value, steps, kind):
    for op, arg in steps:
        attrs = _step_attrs(op, arg)
        if op == "reshape" and tuple(value.type.shape) == tuple(arg):
            continue
        value = ctx.emit(party, op, [value], kind, attrs)
    return value


def apply_numpy(array, steps):
    for op, arg in steps:
        array = np.asarray(OPS[op].impl(_step_attrs(op, arg), array))
    return array


def product_cost(node, xi, t_bits=64):
    """Bytes of one HE matrix product: Enc(X) to the evaluator, sanitised result back."""
    enc, out = he_runtime().plan_cost(Product(node, xi).plan(t_bits))
    return enc, out
