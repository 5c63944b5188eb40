"""TEE: a party trusted to see plaintext (a simulated trusted execution environment).

A TEE device is one party that every data owner agrees to trust with its
plaintext, the way SecretFlow's TEE device stands for an attested enclave.
Here nothing is attested or encrypted: the TEE party simply runs the ops in
the clear, and the audit says so. Its rules:

- ``to`` from a PYU into a TEE: the owner sends its plaintext to the TEE
  party (``what="plaintext to trusted TEE"``); free when the same party hosts
  both. ``insert_transfers`` inserts it implicitly, as for MPC sharing.
- ``call`` (and any op traced onto the TEE) runs in the clear at the TEE
  party, exactly like a PYU function.
- ``reveal`` from a TEE to a PYU: the TEE party sends the plaintext to the
  owner of the destination (``what="plaintext revealed by TEE"``).
- ``reveal`` from an MPC device into a TEE (protocol ``tee_open``): the MPC
  parties send their shares to the TEE party, which adds them (the 2-party
  arithmetic reveal).

The verifier (``passes.verify``) accepts plaintext xfers labelled with
``TO_TEE`` only when they reach a TEE device's party, and ``FROM_TEE`` only
when they leave one.
"""
import numpy as np

from ..ir import ops as irops
from . import Cost, register

PROTOCOL = "tee"
OPEN_PROTOCOL = "tee_open"  # MPC shares opened into a TEE (one rule per (protocol, op))
TO_TEE = "plaintext to trusted TEE"
FROM_TEE = "plaintext revealed by TEE"


def _party(ctx, value):
    (party,) = ctx.device_of(value).parties
    return party


def _nbytes(t):
    return t.size * np.dtype(irops.NUMPY_DTYPES[t.dtype]).itemsize


def _lower_to_tee(ctx, node):
    (v,) = node.operands
    src, dst = _party(ctx, v), _party(ctx, node.result)
    local = ctx.parts[v][src]
    ctx.parts[node.result] = {dst: local if src == dst else ctx.xfer(local, dst, TO_TEE, "plain")}


def _lower_reveal_from_tee(ctx, node):
    (v,) = node.operands
    src, dst = _party(ctx, v), _party(ctx, node.result)
    local = ctx.parts[v][src]
    ctx.parts[node.result] = {dst: local if src == dst else ctx.xfer(local, dst, FROM_TEE, "plain")}


def _lower_local(ctx, node):
    """The op runs in the clear at the TEE's one party."""
    (party,) = ctx.source.devices[node.results[0].type.place].parties
    operands = [ctx.parts[v][party] for v in node.operands]
    attrs = {k: v for k, v in node.attrs.items() if k not in ("protocol", "explicit")}
    types = [r.type.with_(place=party, kind="plain") for r in node.results]
    results = ctx.emit_many(party, node.op, operands, types, attrs)
    for r, local in zip(node.results, results):
        ctx.parts[r] = {party: local}


def _lower_reveal_into_tee(ctx, node):
    """The 2-party arithmetic reveal (``shares.reveal_shares``), into the TEE party."""
    from .shares import reveal_shares
    reveal_shares(ctx, node)


def _move_cost(node, module):
    (v,) = node.operands
    src = module.devices[v.type.place].parties
    dst = module.devices[node.result.type.place].parties
    return Cost() if tuple(src) == tuple(dst) else Cost(_nbytes(v.type), 1)


def _from_pyu(kinds, node, module):
    (v,) = node.operands
    return kinds == ("plain",) and module.devices[v.type.place].kind == "PYU"


def _from_tee(kinds, node, module):
    (v,) = node.operands
    return kinds == ("plain",) and module.devices[v.type.place].kind == "TEE"


def _all_plain(kinds, node, module):
    return all(k == "plain" for k in kinds)


def _shared_into_tee(kinds, node, module):
    from .common import two_party
    return kinds == ("arith",) and two_party(node, module)


def _reveal_cost(node, module):
    (v,) = node.operands
    (dst,) = module.devices[node.result.type.place].parties
    senders = sum(1 for p in module.devices[v.type.place].parties if p != dst)
    return Cost(senders * v.type.size * 8, 1)


register(PROTOCOL, "to", device="TEE", accepts=_from_pyu, result_kind="plain", cost=_move_cost,
         lower=_lower_to_tee,
         doc="PYU to TEE: the owner sends its plaintext to the trusted (simulated) TEE party")
register(PROTOCOL, "call", device="TEE", accepts=_all_plain, result_kind="plain",
         cost=lambda node, m: Cost(), lower=_lower_local,
         doc="a JAX function run in the clear inside the TEE")
register(PROTOCOL, "reveal", device="PYU", accepts=_from_tee, result_kind="plain",
         cost=_move_cost, lower=_lower_reveal_from_tee,
         doc="TEE to PYU: the TEE party sends the plaintext to the destination's owner")
register(OPEN_PROTOCOL, "reveal", device="TEE", accepts=_shared_into_tee, result_kind="plain",
         cost=_reveal_cost, lower=_lower_reveal_into_tee, wants="arith",
         doc="MPC to TEE: the MPC parties send their shares to the TEE party")
