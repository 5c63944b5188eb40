"""Partition: the lowered program becomes one program per party.

Invariant established: every node belongs to exactly one party, and values
cross parties only through ``send``/``recv`` pairs with the same
(sender, receiver, tag); each ``xfer`` became one such pair. A ``recv`` sits
just before the first op that reads it, in the block where it was sent (a
loop that reads it gets it before the loop), so a party sends all it can
before it waits (both parties of an opening send first, then receive).
``split`` projects the result onto each party: that party's local ops and
messages, in program order, which is what its executor runs and its auditor
reads; a loop becomes, at each party with a part in it, a loop over that
party's pieces and body ops (the same trip count everywhere).
"""
from ..ir.core import Block, Node, walk


def node_party(node):
    """The party a lowered node runs at (None for a loop: it spans parties until ``split``)."""
    if node.op == "loop":
        return None
    if node.op in ("send", "output"):
        return node.operands[0].type.place
    if node.op == "yield":
        return None
    return node.results[0].type.place


def _partition(nodes, read):
    out = []
    pending = {}  # value -> its recv, placed just before the first use
    for node in nodes:
        for v in node.operands:
            if v in pending:
                out.append(pending.pop(v))
        if node.body is not None:
            node.body.nodes = _partition(node.body.nodes, read)
        if node.op != "xfer":
            out.append(node)
            continue
        (v,) = node.operands
        dst = node.result.type
        common = {"tag": node.attrs["tag"], "what": node.attrs["what"]}
        out.append(Node("send", (v,), (), {"to": dst.place, **common}, node.loc))
        recv = Node("recv", (), node.results,
                    {"from": v.type.place, "dtype": dst.dtype, "shape": tuple(dst.shape), **common},
                    node.loc)
        if node.result in read:
            pending[node.result] = recv
        else:
            out.append(recv)
    if out and out[-1].op == "yield":
        out[-1:-1] = pending.values()
    else:
        out.extend(pending.values())
    return out


def run(module):
    out = module.fresh()
    read = {v for n in walk(module.nodes) for v in n.operands}  # values some node reads
    out.nodes = _partition(module.nodes, read)
    return out


def _project(nodes, parties):
    """Each party's part of ``nodes`` (party -> node list): its own ops, and its part of
    each loop (one walk for all parties)."""
    mine = {p: [] for p in parties}
    for n in nodes:
        if n.op == "loop":
            for party, loop in _project_loop(n, parties).items():
                mine[party].append(loop)
        elif n.op == "yield":
            for party, out in mine.items():
                out.append(Node("yield", tuple(v for v in n.operands if v.type.place == party),
                                (), dict(n.attrs), n.loc))
        else:
            out = mine.get(node_party(n))
            if out is not None:
                out.append(n)
    return mine


def _project_loop(node, parties):
    bodies = _project(node.body.nodes, parties)
    loops = {}
    for party, body in bodies.items():
        here = [i for i, a in enumerate(node.body.args) if a.type.place == party]
        if not here and len(body) <= 1:  # nothing of this party's in it
            continue
        captures = sum(1 for i in here if i < node.attrs["captures"])
        loops[party] = Node("loop", tuple(node.operands[i] for i in here),
                            tuple(r for r in node.results if r.type.place == party),
                            {**node.attrs, "captures": captures}, node.loc,
                            Block(tuple(node.body.args[i] for i in here), body))
    return loops


def _messages(nodes, kind, key):
    return {n.attrs[key] for n in nodes if n.op == kind}


def split(module, consume=False):
    """{party: that party's program} from a partitioned module.

    Its devices are those of the party and of the peers it exchanges messages
    with, so a reader (and the verifier) can tell what each peer is: a TEE's
    party, an MPC party, a PYU's owner. ``consume``: the party programs take
    over ``module``'s nodes and values (renumbered in place, not copied), so
    ``module`` must not be used after."""
    parts = _project(module.nodes, module.parties)
    programs = {party: _program(module, party, parts[party]) for party in module.parties}
    return {party: m.renumber() if consume else m.renumbered() for party, m in programs.items()}


def project(module, party):
    """``party``'s program, its values those of ``module`` (``split`` renumbers them)."""
    return _program(module, party, _project(module.nodes, (party,))[party])


def _program(module, party, nodes):
    m = module.fresh()
    m.name = f"{module.name}:{party}"
    m.nodes = nodes
    nodes = list(walk(m.nodes))
    peers = _messages(nodes, "send", "to") | _messages(nodes, "recv", "from")
    m.devices = {k: d for k, d in module.devices.items()
                 if party in d.parties or peers & set(d.parties)}
    return m
