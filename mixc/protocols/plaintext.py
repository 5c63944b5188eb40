"""Plaintext: ops on a party's own data, and MPC ops over public values only.

On a PYU every op runs in the clear at its one party. On an MPC device an op
whose operands are all public (constants and what follows from them) runs
in the clear at every party, which costs nothing and reveals nothing new.
An explicit ``to`` between PYUs sends plaintext: that is the author's
choice, and the audit lists it.
"""
import numpy as np

from ..ir import ops as irops
from . import Cost, register

PROTOCOL = "plaintext"


def _pyu_party(ctx, value):
    (party,) = ctx.device_of(value).parties
    return party


def lower_local(ctx, node):
    """Run the op where its device lives: its PYU party, or every MPC party on public values
    (also ``he``'s rule for public values on an HE device: every party of the device)."""
    device = ctx.source.devices[node.results[0].type.place]
    kind = "plain" if device.kind == "PYU" else "public"
    pieces = {}
    for party in device.parties:
        operands = [ctx.parts[v][party] for v in node.operands]
        attrs = {k: v for k, v in node.attrs.items() if k not in ("protocol", "explicit")}
        types = [r.type.with_(place=party, kind=kind) for r in node.results]
        pieces[party] = ctx.emit_many(party, node.op, operands, types, attrs)
    for i, r in enumerate(node.results):
        ctx.parts[r] = {p: vals[i] for p, vals in pieces.items()}


def _lower_output(ctx, node):
    (v,) = node.operands
    party = _pyu_party(ctx, v)
    ctx.out.add("output", [ctx.parts[v][party]], [], {"name": node.attrs["name"]}, ctx.loc)


def _lower_plain_move(ctx, node):
    (v,) = node.operands
    src, dst = _pyu_party(ctx, v), _pyu_party(ctx, node.result)
    local = ctx.parts[v][src]
    moved = local if src == dst else ctx.xfer(local, dst, "plaintext (explicit to)", "plain")
    ctx.parts[node.result] = {dst: moved}


def _lower_reveal_public(ctx, node):
    (v,) = node.operands
    dst = _pyu_party(ctx, node.result)
    copies = ctx.parts[v]
    if dst in copies:
        value = copies[dst]
    else:
        value = ctx.xfer(copies[sorted(copies)[0]], dst, "public value", "plain")
    ctx.parts[node.result] = {dst: value}


def _free(node, module):
    return Cost()


def _nbytes(t):
    return t.size * np.dtype(irops.NUMPY_DTYPES[t.dtype]).itemsize


def _all_plain(kinds, node, module):
    return all(k == "plain" for k in kinds)


def _all_public(kinds, node, module):
    return all(k == "public" for k in kinds)


for _op in ("input", "call", "dp_noise", "loop_index"):
    register(PROTOCOL, _op, device="PYU", accepts=_all_plain, result_kind="plain",
             cost=_free, lower=lower_local)
register(PROTOCOL, "output", device="PYU", accepts=_all_plain, result_kind="plain",
         cost=_free, lower=_lower_output)
register(PROTOCOL, "to", device="PYU", accepts=_all_plain, result_kind="plain",
         cost=lambda node, m: Cost(_nbytes(node.operands[0].type), 1), lower=_lower_plain_move,
         doc="explicit to() between PYUs: the owner sends its plaintext")
register(PROTOCOL, "reveal", device="PYU", accepts=_all_public, result_kind="plain",
         cost=_free, lower=_lower_reveal_public)

MPC_PUBLIC_OPS = ("constant", "add", "sub", "mul", "div", "neg", "max", "min", "dot_general",
                  "conv_general_dilated",
                  "reduce_sum", "broadcast_in_dim", "reshape", "transpose", "squeeze", "slice",
                  "concatenate", "pad", "take", "convert_element_type", "integer_pow", "lt", "eq",
                  "and", "or", "xor", "not", "select_n", "shl", "lshr", "ashr", "floor", "round",
                  "loop_index", "dynamic_slice", "dynamic_update_slice")
for _op in MPC_PUBLIC_OPS:
    register(PROTOCOL, _op, device="MPC", accepts=_all_public, result_kind="public",
             cost=_free, lower=lower_local)
