"""Coalesce messages: what one party sends a peer in one burst travels as one message.

Invariant established: within a block, no two ``send``s from party A to party B of
the same value kind lie in one burst of A's program -- a stretch in which A runs no
op that can wait (a ``recv``, a loop, a call, an OT subprotocol) -- except sends that
are disclosures (a reveal, an explicit ``to``, a public value, an HE key: the audit
shows each of those alone), not ring words, or large (``MAX_PACKED``). The sends of a burst become one
``pack`` of their values, sent where the last of them was, and B's ``recv``s become
one ``recv`` where the first of them was, followed by an ``unpack`` that defines the
same values.

No wait is added: B now waits at its first receive for A's last send of the burst,
and A gets from its first send of it to its last without waiting on anyone. A
message costs a fixed overhead (a frame, waking the receiver, the bookkeeping of
its tag) whatever its size, and protocols send in bursts: the two openings of a
Beaver product, the dealer's corrections for a whole training step (dozens of
messages, the dealer never waits) now one.
"""
from __future__ import annotations

from ..ir.core import Block, Node
from .verify import is_reveal_label

_PACKABLE_KINDS = ("arith", "bool", "masked")  # plaintext, public and HE messages are disclosures
_WAITS = ("recv", "loop", "call")
# Above this many elements a message's fixed cost is noise and packing only copies it.
MAX_PACKED = 1 << 16


def run(module):
    module.nodes = _coalesce(module, module.nodes)
    return module


def _party(node):
    if node.op in ("send", "output", "xfer"):
        return node.operands[0].type.place
    return node.results[0].type.place if node.results else None


def _waits(node):
    return node.op in _WAITS or node.op.startswith("ot.") or node.body is not None


def _packable(node):
    v = node.operands[0]
    return (v.type.kind in _PACKABLE_KINDS and v.type.dtype in ("u64", "u128")
            and v.type.size <= MAX_PACKED and not is_reveal_label(node.attrs["what"]))


def _bursts(nodes):
    """Groups (two or more) of sends that may travel as one message."""
    burst, groups = {}, {}
    for node in nodes:
        party = _party(node)
        if _waits(node):
            burst[party] = burst.get(party, 0) + 1
        elif node.op == "send" and _packable(node):
            v = node.operands[0]
            key = (party, node.attrs["to"], v.type.kind, v.type.dtype, burst.get(party, 0))
            groups.setdefault(key, []).append(node)
    return [g for g in groups.values() if len(g) > 1]


def _coalesce(module, nodes):
    """The block's nodes with bursts coalesced (new nodes where anything changes: the
    build keeps the partitioned module as it was)."""
    nodes = [node if node.body is None else
             Node(node.op, node.operands, node.results, dict(node.attrs), node.loc,
                  Block(node.body.args, _coalesce(module, node.body.nodes)))
             for node in nodes]
    groups = _bursts(nodes)
    if not groups:
        return nodes
    recvs = {(n.attrs["from"], n.results[0].type.place, n.attrs["tag"]): n
             for n in nodes if n.op == "recv"}
    position = {n: i for i, n in enumerate(nodes)}
    replace = {}  # node -> nodes in its place ([] drops it)
    for sends in groups:
        src, dst = _party(sends[0]), sends[0].attrs["to"]
        received = [recvs[(src, dst, s.attrs["tag"])] for s in sends]
        values = [s.operands[0] for s in sends]
        kind = values[0].type.kind
        whats = " + ".join(dict.fromkeys(s.attrs["what"] for s in sends))
        packed_type = values[0].type.with_(shape=(sum(v.type.size for v in values),))
        pack = Node("pack", tuple(values), (module.new_value(packed_type),), {}, sends[-1].loc)
        send = Node("send", (pack.result,), (), {"to": dst, "tag": sends[0].attrs["tag"],
                                                 "what": whats}, sends[-1].loc)
        recv = Node("recv", (), (module.new_value(packed_type.with_(place=dst, kind=kind)),),
                    {"from": src, "tag": sends[0].attrs["tag"], "what": whats,
                     "dtype": packed_type.dtype, "shape": packed_type.shape}, received[0].loc)
        unpack = Node("unpack", (recv.result,), tuple(r.results[0] for r in received),
                      {"shapes": tuple(tuple(v.type.shape) for v in values)}, received[0].loc)
        first = min(received, key=position.__getitem__)
        for s in sends[:-1]:
            replace[s] = []
        replace[sends[-1]] = [pack, send]
        for r in received:
            replace[r] = []
        replace[first] = [recv, unpack]
    out = []
    for node in nodes:
        out.extend(replace.get(node, [node]))
    return out
