"""Select protocols: every op names the protocol that will run it.

Invariant established: every node carries ``protocol``, naming a rule in
``mixc.protocols.RULES`` for its op that accepts its operands' kinds, and
its results have the kind that rule produces. Among the rules that apply,
the one with the least estimated time on the module's network profile
(``module.network``: lan or wan) wins; the costs come only from the
protocols' own declarations.
"""
from ..errors import MixcError
from ..protocols import NETWORKS, CostReport, rules_for

def candidates(node, module):
    device = module.devices[node.results[0].type.place if node.results
                            else node.operands[0].type.place]
    kinds = tuple(v.type.kind for v in node.operands)
    return [r for r in rules_for(node.op)
            if r.device == device.kind and r.accepts(kinds, node, module)], device


def run(module):
    profile = NETWORKS[module.network]
    report = CostReport(profile)
    for node in module.nodes:
        options, device = candidates(node, module)
        if not options:
            kinds = ", ".join(v.type.kind for v in node.operands) or "no operands"
            raise MixcError(f"{node.loc or '<program>'}: no protocol implements {node.op} on "
                            f"{device.kind} device {device.name} for operands ({kinds})")
        best = min(options, key=lambda r: profile.seconds(r.cost(node, module)))
        node.attrs["protocol"] = best.protocol
        for r in node.results:
            r.type = r.type.with_(kind=best.result_kind)
        report.rows.append((node.results[0].id if node.results else None, node.op,
                            best.protocol, best.cost(node, module), node.loc))
    module.cost_report = report
    return module
