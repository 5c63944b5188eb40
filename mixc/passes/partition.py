"""Partition: the lowered program becomes one program per party.

Invariant established: every node belongs to exactly one party, and values
cross parties only through ``send``/``recv`` pairs with the same
(sender, receiver, tag); each ``xfer`` became one such pair. A ``recv`` sits
just before the first op that reads it, so a party sends all it can before
it waits (both parties of an opening send first, then receive). ``split``
projects the result onto each party: that party's local ops and messages,
in program order, which is what its executor runs and its auditor reads.
"""
from ..ir.core import Node


def node_party(node):
    """The party a lowered node runs at."""
    if node.op in ("send", "output"):
        return node.operands[0].type.place
    return node.results[0].type.place


def run(module):
    out = module.fresh()
    users = module.users()
    pending = {}  # value -> its recv, placed just before the first use
    for node in module.nodes:
        for v in node.operands:
            if v in pending:
                out.nodes.append(pending.pop(v))
        if node.op != "xfer":
            out.nodes.append(node)
            continue
        (v,) = node.operands
        dst = node.result.type
        common = {"tag": node.attrs["tag"], "what": node.attrs["what"]}
        out.nodes.append(Node("send", (v,), (), {"to": dst.place, **common}, node.loc))
        recv = Node("recv", (), node.results,
                    {"from": v.type.place, "dtype": dst.dtype, "shape": tuple(dst.shape), **common},
                    node.loc)
        if node.result in users:
            pending[node.result] = recv
        else:
            out.nodes.append(recv)
    out.nodes.extend(pending.values())
    return out


def split(module):
    """{party: that party's program} from a partitioned module.

    Its devices are those of the party and of the peers it exchanges messages
    with, so a reader (and the verifier) can tell what each peer is: a TEE's
    party, an MPC party, a PYU's owner."""
    programs = {}
    for party in module.parties:
        m = module.fresh()
        m.name = f"{module.name}:{party}"
        m.nodes = [n for n in module.nodes if node_party(n) == party]
        peers = {n.attrs["to"] for n in m.nodes if n.op == "send"}
        peers |= {n.attrs["from"] for n in m.nodes if n.op == "recv"}
        m.devices = {k: d for k, d in module.devices.items()
                     if party in d.parties or peers & set(d.parties)}
        programs[party] = m.renumbered()
    return programs
