"""The leakage report and the graph view.

The audit says, value by value, which parties see what: plaintext at its
owner, shares at each party of an MPC device, public values everywhere on
that device; every plaintext that leaves its owner and the ``reveal`` or
``to`` that allowed it; and the trust assumptions (a dealer).
"""
from __future__ import annotations

from .passes.lower import DEALER

FORMS = {"plain": "plaintext", "public": "plaintext (public: follows from constants)",
         "arith": "an additive share", "bool": "a boolean share",
         "he": "a ciphertext", "masked": "a masked value"}


def _seen_by(module, value):
    device = module.devices[value.type.place]
    return device.parties, FORMS[value.type.kind]


def audit_text(name, snapshots, final) -> str:
    selected = snapshots["select_protocols"]
    lines = [f"audit of program {name!r}", "", "parties: " + ", ".join(final.parties)]
    for d in selected.devices.values():
        extra = f" ({d.offline} offline, {d.fraction_bits} fraction bits)" if d.kind == "MPC" else ""
        lines.append(f"device {d.name}: {d.kind} on {', '.join(d.parties)}{extra}")
    lines += ["", "trust assumptions:"]
    trust = []
    if DEALER in final.parties:
        trust.append(f"- party {DEALER!r} deals Beaver triples and truncation pairs; it sees no "
                     "input, share or output, but must not collude with an MPC party")
    trust.append("- semi-honest parties: each follows its program")
    lines += trust
    lines += ["", "disclosures (plaintext leaving its owner):"]
    disclosures = 0
    for n in selected.nodes:
        if n.op == "reveal":
            (v,) = n.operands
            lines.append(f"- %{v.id} {v.type.dtype}{list(v.type.shape)} on {v.type.place} revealed "
                         f"to {n.result.type.place} by reveal at {n.loc}")
            disclosures += 1
        elif n.op == "to" and n.attrs.get("explicit") and \
                selected.devices[n.result.type.place].kind == "PYU":
            (v,) = n.operands
            lines.append(f"- %{v.id} plaintext of {v.type.place} sent to {n.result.type.place} "
                         f"by explicit to at {n.loc}")
            disclosures += 1
    if not disclosures:
        lines.append("- none")
    lines += ["", "values (who sees each, and in what form):"]
    for n in selected.nodes:
        for r in n.results:
            parties, form = _seen_by(selected, r)
            proto = n.attrs.get("protocol", "")
            loc = f" at {n.loc}" if n.loc else ""
            verb = "sees" if len(parties) == 1 else "each see"
            lines.append(f"%{r.id} {r.type.dtype}{list(r.type.shape)} = {n.op} [{proto}]{loc}: "
                         f"{', '.join(parties)} {verb} {form}")
    return "\n".join(lines) + "\n"


COLORS = {"PYU": "lightblue", "MPC": "orange", "HE": "palegreen", "TEE": "plum"}
KIND_STYLE = {"plain": "solid", "public": "dotted", "arith": "bold", "bool": "dashed"}


def dot_graph(module) -> str:
    lines = [f'digraph "{module.name}" {{', "  node [shape=box, style=filled];"]
    for n in module.nodes:
        if not n.results:
            continue
        r = n.results[0]
        device = module.devices.get(r.type.place)
        color = COLORS.get(device.kind if device else "", "white")
        label = f"%{r.id} = {n.op}\\n{r.type}"
        lines.append(f'  v{r.id} [label="{label}", fillcolor={color}, '
                     f'style="filled,{KIND_STYLE.get(r.type.kind, "solid")}"];')
    for n in module.nodes:
        for v in n.operands:
            for r in n.results[:1]:
                lines.append(f"  v{v.id} -> v{r.id};")
    lines.append("}")
    return "\n".join(lines) + "\n"
