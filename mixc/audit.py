"""The leakage report and the graph views (DOT and a self-contained HTML page).

The audit (``audit.txt``, ``mixc audit DIR``, ``bundle.audit()``) says:

- **trust assumptions**: the dealer of correlated randomness (what it sees,
  with whom it must not collude), each MPC device's non-collusion
  assumption, each TEE (simulated here: its party sees the plaintexts it is
  sent; in deployment it must be an attested enclave), semi-honesty, and the
  differential-privacy budget (or that no DP mechanism is used);
- **disclosures**: every plaintext that leaves its owner (a ``reveal``, an
  explicit ``to`` between PYUs, a PYU's plaintext sent into a TEE), each with
  the author's ``file:line`` that allowed it;
- **values**: for every value of the global program, which parties see it
  and in what form (plaintext, public, additive/boolean share, masked value,
  ciphertext);
- **messages**: for every pair of parties, what crosses, in what form, how
  many elements, and from which lines (read off the partitioned program, so
  it is exactly what the per-party programs send).

``html_view`` lays out the global graph and every party's graph as inline
SVG (columns by topological depth, no external JS or CSS), coloured by
device and share kind, with a legend and the audit text.
"""
from __future__ import annotations

import html

from .passes.lower import DEALER

FORMS = {"plain": "plaintext", "public": "plaintext (public: follows from constants)",
         "arith": "an additive share", "bool": "a boolean share",
         "he": "a ciphertext", "masked": "a masked value",
         "private": "plaintext (its owner's alone; the other parties hold nothing)"}
SHORT_FORMS = {"plain": "plaintext", "public": "public plaintext", "arith": "additive share",
               "bool": "boolean share", "he": "ciphertext", "masked": "masked value",
               "private": "private plaintext"}


def _seen_by(module, value):
    device = module.devices[value.type.place]
    form = FORMS[value.type.kind]
    if value.type.kind == "private":
        from .protocols.private import owner_of
        owner = owner_of(value, module)
        if owner is not None:
            return (owner,), form
    if value.type.kind == "he" and device.kind == "HE" and device.evaluator:
        return (device.evaluator,), form + f" under {device.key_owner}'s key"
    if device.kind == "TEE":
        form += " (inside the simulated TEE)"
    return device.parties, form


def _desc(v):
    return f"%{v.id} {v.type.dtype}{list(v.type.shape)}"


def _at(loc):
    return f" at {loc}" if loc else ""


def _device_line(d):
    extra = ""
    if d.kind == "MPC":
        extra = f" ({d.offline} offline, {d.fraction_bits} fraction bits)"
    elif d.kind == "HE" and d.key_owner:
        extra = f" (key owner {d.key_owner})"
    elif d.kind == "TEE":
        extra = " (simulated)"
    return f"device {d.name}: {d.kind} on {', '.join(d.parties)}{extra}"


def _tee_inflows(selected):
    """tee device name -> [(value, how, loc)] of every plaintext the TEE is given."""
    out = {}
    for n in selected.nodes:
        if n.op not in ("to", "reveal") or not n.results:
            continue
        dst = selected.devices[n.result.type.place]
        if dst.kind != "TEE":
            continue
        (v,) = n.operands
        src = selected.devices[v.type.place]
        if src.name == dst.name:
            continue
        if n.op == "reveal":
            how = f"revealed from {src.kind} {src.name}"
        else:
            how = (f"plaintext of {src.name} ({', '.join(src.parties)}), "
                   f"{'explicit' if n.attrs.get('explicit') else 'implicit'} to")
        out.setdefault(dst.name, []).append((v, how, n.loc))
    return out


def _messages(final):
    """(sender, receiver, what, kind) -> [count, elements, locs] from a lowered/partitioned module."""
    out = {}
    for n in final.nodes:
        if n.op == "xfer":
            (v,) = n.operands
            key = (v.type.place, n.result.type.place, n.attrs["what"], n.result.type.kind)
            size, loc = n.result.type.size, n.loc
        elif n.op == "recv":
            r = n.results[0]
            key = (n.attrs["from"], r.type.place, n.attrs["what"], r.type.kind)
            size, loc = r.type.size, n.loc
        else:
            continue
        entry = out.setdefault(key, [0, 0, []])
        entry[0] += 1
        entry[1] += size
        if loc and loc not in entry[2]:
            entry[2].append(loc)
    return out


def _dp_lines(selected):
    """The program's (epsilon, delta) under basic sequential composition, and each mechanism."""
    uses = [n for n in selected.nodes if n.op == "dp_noise"]
    if not uses:
        return ["- differential privacy: no DP mechanism used (outputs are exact; no (epsilon, "
                "delta) guarantee is claimed)"]
    epsilon = sum(n.attrs["epsilon"] for n in uses)
    delta = sum(n.attrs["delta"] for n in uses)
    lines = [f"- differential privacy: total budget epsilon = {epsilon:g}, delta = {delta:g} "
             f"(basic composition of {len(uses)} mechanism(s); noise from ChaCha20 keyed by "
             "os.urandom)"]
    for n in uses:
        where = "each party adds its own, in its share" if \
            selected.devices[n.result.type.place].kind == "MPC" else "its party adds it"
        lines.append(f"  - {n.attrs['mechanism']} scale {n.attrs['scale']:.4g} "
                     f"(sensitivity {n.attrs['sensitivity']:g}, epsilon {n.attrs['epsilon']:g}, "
                     f"delta {n.attrs['delta']:g}) on {n.result.type.place} at {n.loc}: {where}")
    return lines


def _he_lines(selected):
    """Trust lines for HE devices and the masking protocol (protocols.he, .masking)."""
    from .protocols.he import PARAMS_TEXT
    out = []
    for d in selected.devices.values():
        if d.kind == "HE":
            out.append(f"- HE device {d.name}: {d.key_owner} holds the secret key; "
                       f"{d.evaluator} sees only ciphertexts ({PARAMS_TEXT}) and the key owner "
                       "only sanitised results or values masked by the evaluator's randomness")
    uses = [n for n in selected.nodes if n.attrs.get("protocol") == "masking"]
    if uses:
        where = ", ".join(sorted({n.loc or n.op for n in uses}))
        out.append(f"- masking protocol (the seed patent) on {len(uses)} linear layer(s) at "
                   f"{where}: the weights stay at their owner; the other party sends only x - r "
                   "(r its own uniform mask) and gets W.r - s under its own HE key, sanitised "
                   f"(s the weights owner's mask); HE: {PARAMS_TEXT}")
    return out


def audit_text(name, snapshots, final) -> str:
    selected = snapshots["select_protocols"]
    lines = [f"audit of program {name!r}", "", "parties: " + ", ".join(final.parties)]
    for d in selected.devices.values():
        lines.append(_device_line(d))

    # ---------------------------------------------------------------- trust
    lines += ["", "trust assumptions:"]
    messages = _messages(final)
    if DEALER in final.parties:
        got = sorted({(s, w) for (s, r, w, _k) in messages if r == DEALER})
        sees = ("it receives nothing" if not got else
                "it receives " + ", ".join(f"{w!r} from {s}" for s, w in got))
        served = [d.name for d in selected.devices.values()
                  if d.kind == "MPC" and d.offline == "dealer"]
        lines.append(f"- dealer: party {DEALER!r} deals Beaver triples and truncation pairs for "
                     f"{', '.join(served) or 'the MPC devices'}; {sees} and sees no input, share "
                     "or output, but must not collude with any MPC party (with one it could "
                     "unmask the other's shares)")
    from .protocols.dealerfree import audit_lines as _dealer_free_lines
    lines += _dealer_free_lines(selected, final)
    for d in selected.devices.values():
        if d.kind == "MPC":
            lines.append(f"- MPC device {d.name}: secure while {' and '.join(d.parties)} do not "
                         "collude (semi-honest, 2-party additive sharing)")
    inflows = _tee_inflows(selected)
    for d in selected.devices.values():
        if d.kind != "TEE":
            continue
        (party,) = d.parties
        given = inflows.get(d.name, [])
        lines.append(f"- simulated TEE: party {party} (device {d.name}) sees these plaintexts; "
                     "in deployment this must be an attested enclave (nothing here attests, "
                     "encrypts or isolates it):")
        for v, how, loc in given:
            lines.append(f"    {_desc(v)}: {how}{_at(loc)}")
        computed = [n for n in selected.nodes if n.results and n.results[0].type.place == d.name
                    and n.op not in ("to", "reveal")]
        for n in computed:
            lines.append(f"    and computes in the clear: {n.op} {n.attrs.get('fn', '')}"
                         f"{_at(n.loc)}".replace("  ", " "))
        if not given and not computed:
            lines.append("    (nothing)")
    lines += _he_lines(selected)
    lines.append("- semi-honest parties: each follows its program")
    lines += _dp_lines(selected)

    # ---------------------------------------------------------- disclosures
    lines += ["", "disclosures (plaintext leaving its owner):"]
    disclosures = 0
    for n in selected.nodes:
        if n.op not in ("to", "reveal") or not n.results:
            continue
        (v,) = n.operands
        src = selected.devices[v.type.place]
        dst = selected.devices[n.result.type.place]
        to_parties = ", ".join(dst.parties)
        if n.op == "reveal":
            lines.append(f"- {_desc(v)} on {v.type.place} revealed to {dst.name} ({to_parties}) "
                         f"by reveal at {n.loc}")
        elif n.attrs.get("explicit") and dst.kind == "PYU" and src.name != dst.name:
            lines.append(f"- {_desc(v)} plaintext of {src.name} sent to {dst.name} ({to_parties}) "
                         f"by explicit to at {n.loc}")
        elif dst.kind == "TEE" and src.kind == "PYU":
            how = "explicit to" if n.attrs.get("explicit") else "implicit to (the TEE function's use)"
            lines.append(f"- {_desc(v)} plaintext of {src.name} ({', '.join(src.parties)}) sent to "
                         f"TEE {dst.name} ({to_parties}) by {how} at {n.loc}")
        else:
            continue
        disclosures += 1
    if not disclosures:
        lines.append("- none")

    # --------------------------------------------------------------- values
    lines += ["", "values (who sees each, and in what form):"]
    for n in selected.nodes:
        for r in n.results:
            parties, form = _seen_by(selected, r)
            proto = n.attrs.get("protocol", "")
            verb = "sees" if len(parties) == 1 else "each see"
            lines.append(f"{_desc(r)} = {n.op} [{proto}]{_at(n.loc)}: "
                         f"{', '.join(parties)} {verb} {form}")

    # ------------------------------------------------------------- messages
    if messages:
        lines += ["", "messages (what crosses between parties, from the per-party programs):"]
        for (s, r, what, kind), (count, elems, locs) in sorted(messages.items()):
            where = f" (from {', '.join(locs[:3])}{', ...' if len(locs) > 3 else ''})" if locs else ""
            lines.append(f"- {s} -> {r}: {count} x {what!r} as {SHORT_FORMS[kind]}, "
                         f"{elems} elements{where}")
        from .protocols.dealerfree import ot_message_lines
        lines += ot_message_lines(final)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ DOT view

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
        label = f"%{r.id} = {n.op}\\n{r.type}".replace('"', '\\"')
        lines.append(f'  v{r.id} [label="{label}", fillcolor={color}, '
                     f'style="filled,{KIND_STYLE.get(r.type.kind, "solid")}"];')
    for n in module.nodes:
        for v in n.operands:
            for r in n.results[:1]:
                lines.append(f"  v{v.id} -> v{r.id};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- HTML view

DEVICE_FILL = {"PYU": "#add8e6", "MPC": "#ffc680", "HE": "#98fb98", "TEE": "#dda0dd",
               "party": "#f4f4f4"}
KIND_STROKE = {"plain": "#222222", "public": "#9a9a9a", "arith": "#d62728", "bool": "#1f4fd6",
               "masked": "#8c2bb3", "he": "#1a8a2a"}
KIND_DASH = {"plain": "", "public": "2,2", "arith": "", "bool": "6,3", "masked": "1,3", "he": "8,2,2,2"}
MESSAGE_FILL = {"send": "#fff3b0", "recv": "#d9f7d9"}
BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 170, 34, 46, 10, 12
MAX_NODES = 2500  # larger graphs are cut (the IR text in the bundle is complete)


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _node_kind(n):
    if n.results:
        return n.results[0].type.kind
    return n.operands[0].type.kind if n.operands else "plain"


def _layout(nodes):
    """{node: (column, row)}: column = topological depth, rows in program order."""
    producer, depth, pos, rows = {}, {}, {}, {}
    for n in nodes:
        d = 0
        for v in n.operands:
            if v in producer:
                d = max(d, depth[producer[v]] + 1)
        depth[n] = d
        pos[n] = (d, rows.get(d, 0))
        rows[d] = rows.get(d, 0) + 1
        for r in n.results:
            producer[r] = n
    return pos, producer


def _label(n):
    head = ", ".join(f"%{r.id}" for r in n.results)
    head = f"{head} = {n.op}" if head else n.op
    if n.op == "send":
        head += f" \u2192 {n.attrs.get('to')}"
    elif n.op == "recv":
        head += f" \u2190 {n.attrs.get('from')}"
    elif n.op == "call" and n.attrs.get("fn"):
        head += f" {n.attrs['fn']}"
    elif n.op in ("input", "output") and n.attrs.get("name"):
        head += f" {n.attrs['name']}"
    t = n.results[0].type if n.results else (n.operands[0].type if n.operands else None)
    sub = f"{t.dtype}[{','.join(map(str, t.shape))}] {t.kind}" if t is not None else ""
    if n.attrs.get("protocol"):
        sub += f" \u00b7 {n.attrs['protocol']}"
    return head, sub


def _tooltip(n):
    parts = [", ".join(f"%{r.id}: {r.type}" for r in n.results)]
    parts.append(f"{n.op}({', '.join(f'%{v.id}' for v in n.operands)})")
    for key in ("protocol", "what", "to", "from", "tag", "fn", "name"):
        if key in n.attrs:
            parts.append(f"{key}={n.attrs[key]}")
    if n.loc:
        parts.append(f"at {n.loc}")
    return " ".join(p for p in parts if p)


def _clip(text, width):
    limit = max(4, int(width / 6.2))
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def _svg(module, fill_of, title):
    nodes = list(module.nodes)
    cut = len(nodes) > MAX_NODES
    nodes = nodes[:MAX_NODES]
    pos, producer = _layout(nodes)
    cols = 1 + max((c for c, _ in pos.values()), default=0)
    rows = 1 + max((r for _, r in pos.values()), default=0)
    width = PAD * 2 + cols * BOX_W + (cols - 1) * GAP_X
    height = PAD * 2 + rows * BOX_H + (rows - 1) * GAP_Y

    def xy(n):
        c, r = pos[n]
        return PAD + c * (BOX_W + GAP_X), PAD + r * (BOX_H + GAP_Y)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
           "<title>" + _e(title) + "</title>", '<g class="edges">']
    for n in nodes:
        x2, y2 = xy(n)
        for v in n.operands:
            src = producer.get(v)
            if src is None:
                continue
            x1, y1 = xy(src)
            x1, y1, y2c = x1 + BOX_W, y1 + BOX_H / 2, y2 + BOX_H / 2
            mid = (x1 + x2) / 2
            color = KIND_STROKE.get(v.type.kind, "#444")
            out.append(f'<path d="M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2c:.0f} '
                       f'{x2:.0f},{y2c:.0f}" stroke="{color}" fill="none" stroke-opacity="0.45"/>')
    out.append("</g>")
    out.append('<g class="nodes">')
    for n in nodes:
        x, y = xy(n)
        kind = _node_kind(n)
        head, sub = _label(n)
        dash = KIND_DASH.get(kind, "")
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<g class="node op-{_e(n.op)}"><title>{_e(_tooltip(n))}</title>'
                   f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="5" '
                   f'fill="{fill_of(n)}" stroke="{KIND_STROKE.get(kind, "#222")}" '
                   f'stroke-width="2"{dash_attr}/>'
                   f'<text x="{x + 6}" y="{y + 14}" font-size="11">{_e(_clip(head, BOX_W))}</text>'
                   f'<text x="{x + 6}" y="{y + 27}" font-size="9" fill="#444">'
                   f'{_e(_clip(sub, BOX_W))}</text></g>')
    out.append("</g></svg>")
    note = (f'<p class="note">showing the first {MAX_NODES} of {len(module.nodes)} ops; the '
            "IR files hold them all</p>") if cut else ""
    return note + "\n".join(out)


def _legend():
    items = []
    for kind, color in DEVICE_FILL.items():
        name = "a party's local op" if kind == "party" else f"{kind} device"
        items.append(f'<li><svg width="26" height="14"><rect x="1" y="1" width="24" height="12" '
                     f'fill="{color}" stroke="#222"/></svg> {_e(name)}</li>')
    for op, color in MESSAGE_FILL.items():
        items.append(f'<li><svg width="26" height="14"><rect x="1" y="1" width="24" height="12" '
                     f'fill="{color}" stroke="#222"/></svg> {op} (a message to/from a peer)</li>')
    for kind, color in KIND_STROKE.items():
        dash = KIND_DASH.get(kind, "")
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        items.append(f'<li><svg width="26" height="14"><rect x="2" y="2" width="22" height="10" '
                     f'fill="white" stroke="{color}" stroke-width="2"{dash_attr}/></svg> '
                     f'border: {_e(SHORT_FORMS[kind])} ({kind})</li>')
    return '<ul class="legend">' + "".join(items) + "</ul>"


def _anchor(i, name):
    return f"party{i}-" + "".join(c if c.isalnum() else "_" for c in name)


def html_view(name, global_module, programs, audit="") -> str:
    """One self-contained page: the global graph, each party's graph, a legend, the audit."""
    def global_fill(n):
        v = n.results[0] if n.results else (n.operands[0] if n.operands else None)
        d = global_module.devices.get(v.type.place) if v is not None else None
        return DEVICE_FILL.get(d.kind if d else "", "#ffffff")

    def party_fill(n):
        return MESSAGE_FILL.get(n.op, DEVICE_FILL["party"])

    nav = ['<li><a href="#global">global program</a></li>']
    nav += [f'<li><a href="#{_anchor(i, p)}">{_e(p)}</a></li>' for i, p in enumerate(programs)]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>mixc: {_e(name)}</title>",
        "<style>body{font-family:sans-serif;margin:1em 2em;color:#111}"
        ".scroll{overflow:auto;border:1px solid #ccc;max-height:80vh;margin-bottom:1.5em}"
        ".legend{list-style:none;padding:0;columns:3}.legend li{margin:2px 0}"
        "pre{background:#f7f7f7;padding:1em;overflow:auto}.note{color:#a33}"
        "nav ul{list-style:none;padding:0}nav li{display:inline;margin-right:1em}</style>",
        "</head><body>",
        f"<h1>mixc program {_e(name)}</h1>",
        f"<p>parties: {_e(', '.join(global_module.parties))}. Devices: "
        + _e("; ".join(f"{d.name} = {d.kind}({', '.join(d.parties)})"
                       for d in global_module.devices.values())) + "</p>",
        "<nav><ul>" + "".join(nav) + "</ul></nav>",
        "<h2>legend</h2>", _legend(),
        "<p>Boxes are ops, laid out left to right by dependency depth; hover a box for its IR "
        "line. Edges take the colour of the value's kind.</p>",
        '<section id="global"><h2>global program (after select_protocols)</h2>',
        '<div class="scroll">', _svg(global_module, global_fill, f"{name}: global"),
        "</div></section>",
    ]
    for i, (party, prog) in enumerate(programs.items()):
        parts += [f'<section id="{_anchor(i, party)}" class="party"><h2>party {_e(party)}</h2>',
                  f"<p>{len(prog.nodes)} ops, "
                  f"{sum(1 for n in prog.nodes if n.op == 'send')} sends, "
                  f"{sum(1 for n in prog.nodes if n.op == 'recv')} receives</p>",
                  '<div class="scroll">', _svg(prog, party_fill, f"{name}: {party}"),
                  "</div></section>"]
    if audit:
        parts += ['<section id="audit"><h2>audit</h2>', f"<pre>{_e(audit)}</pre></section>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
