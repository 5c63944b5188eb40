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

Loops stay loops (a ``loop`` node owns its body once, however many times it
runs), and so does the audit: everything inside a loop body is listed once,
with its multiplicity N (the product of the trip counts of the loops around
it): a disclosure "N times", a message "×N" per iteration plus its total, and
the totals per pair of parties (messages, elements, payload bytes) count every
iteration. A DP mechanism inside a loop is applied once per iteration: the
accountant (basic sequential composition) counts its epsilon and delta N
times.

``html_view`` lays out the global graph and every party's graph as inline
SVG (columns by topological depth, no external JS or CSS), coloured by
device and share kind, with a legend and the audit text; a loop is a box
("loop ×N") holding its body's graph, laid out the same way. ``dot_graph``
draws a loop body as a ``subgraph cluster_...`` labelled "loop ×N".
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


def _walk(nodes, loops=()):
    """(node, the loop nodes around it, outermost first) for every node, those in loop
    bodies included, in program order (a loop before its body)."""
    for n in nodes:
        yield n, loops
        if n.body is not None:
            yield from _walk(n.body.nodes, loops + (n,))


def _times(loops) -> int:
    """How many times a node inside ``loops`` runs: the product of their trip counts."""
    count = 1
    for loop in loops:
        count *= int(loop.attrs.get("trip_count", 1))
    return count


def _loop_where(loops):
    """"the loop at f.py:9" / "the nested loops at f.py:9 (×4) > f.py:12 (×3)"."""
    if len(loops) == 1:
        return f"the loop at {loops[0].loc or '?'}"
    return "the nested loops at " + " > ".join(
        f"{l.loc or '?'} (\u00d7{l.attrs.get('trip_count', 1)})" for l in loops)


def _repeated(loops):
    """", 20 times (once per iteration of the loop at f.py:9)"; "" outside loops."""
    if not loops:
        return ""
    n = _times(loops)
    return f", {n} time{'' if n == 1 else 's'} (once per iteration of {_loop_where(loops)})"


def _per_iteration(loops):
    """" (in a loop body, \u00d720)"; "" outside loops."""
    return f" (in a loop body, \u00d7{_times(loops)})" if loops else ""


def _device_line(d):
    extra = ""
    if d.kind == "MPC" and len(d.parties) == 3:
        extra = f" (replicated sharing, no dealer, {d.fraction_bits} fraction bits)"
    elif d.kind == "MPC":
        extra = f" ({d.offline} offline, {d.fraction_bits} fraction bits)"
    elif d.kind == "HE" and d.key_owner:
        extra = f" (key owner {d.key_owner})"
    elif d.kind == "TEE":
        extra = " (simulated)"
    return f"device {d.name}: {d.kind} on {', '.join(d.parties)}{extra}"


def _tee_inflows(selected):
    """tee device name -> [(value, how, loc, loops)] of every plaintext the TEE is given."""
    out = {}
    for n, loops in _walk(selected.nodes):
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
        out.setdefault(dst.name, []).append((v, how, n.loc, loops))
    return out


def _messages(final):
    """(sender, receiver, what, kind, times) -> [count, elements, locs, bytes] from a
    lowered/partitioned module; ``times`` is how often each of them crosses (1 outside
    loops, the product of the enclosing trip counts inside), count/elements/bytes are
    per iteration (multiply by ``times`` for the run's total)."""
    out = {}
    for n, loops in _walk(final.nodes):
        if n.op == "xfer":
            (v,) = n.operands
            r = n.result
            key = (v.type.place, r.type.place, n.attrs["what"], r.type.kind, _times(loops))
        elif n.op == "recv":
            r = n.results[0]
            key = (n.attrs["from"], r.type.place, n.attrs["what"], r.type.kind, _times(loops))
        else:
            continue
        entry = out.setdefault(key, [0, 0, [], 0])
        entry[0] += 1
        entry[1] += r.type.size
        entry[3] += r.type.size * _itemsize(r.type.dtype)
        if n.loc and n.loc not in entry[2]:
            entry[2].append(n.loc)
    return out


ITEMSIZE = {"f32": 4, "f64": 8, "i32": 4, "i64": 8, "u8": 1, "u32": 4, "u64": 8, "bool": 1}


def _itemsize(dtype):
    return ITEMSIZE.get(dtype, 8)


def _message_lines(messages):
    """One line per kind of message (those inside loops once, "×N"), then per pair of
    parties the run's totals, every iteration counted."""
    lines, totals = [], {}
    for (s, r, what, kind, times), (count, elems, locs, size) in sorted(messages.items()):
        where = f" (from {', '.join(locs[:3])}{', ...' if len(locs) > 3 else ''})" if locs else ""
        if times == 1:
            lines.append(f"- {s} -> {r}: {count} x {what!r} as {SHORT_FORMS[kind]}, "
                         f"{elems} elements{where}")
        else:
            lines.append(f"- {s} -> {r}: {count} x {what!r} as {SHORT_FORMS[kind]}, {elems} "
                         f"elements per iteration, \u00d7{times} ({count * times} messages, "
                         f"{elems * times} elements in all){where}")
        t = totals.setdefault((s, r), [0, 0, 0])
        t[0] += count * times
        t[1] += elems * times
        t[2] += size * times
    if any(times != 1 for (_s, _r, _w, _k, times) in messages):
        lines.append("totals per pair of parties (every loop iteration counted):")
        for (s, r), (count, elems, size) in sorted(totals.items()):
            lines.append(f"- {s} -> {r}: {count} messages, {elems} elements, "
                         f"{size} payload bytes")
    return lines


def _dp_lines(selected):
    """The program's (epsilon, delta) under basic sequential composition, and each mechanism.

    A mechanism inside a loop body is applied once per iteration, N times in all (N the
    product of the trip counts around it): it composes to N * epsilon, N * delta."""
    uses = [(n, loops) for n, loops in _walk(selected.nodes) if n.op == "dp_noise"]
    if not uses:
        return ["- differential privacy: no DP mechanism used (outputs are exact; no (epsilon, "
                "delta) guarantee is claimed)"]
    epsilon = sum(_times(loops) * n.attrs["epsilon"] for n, loops in uses)
    delta = sum(_times(loops) * n.attrs["delta"] for n, loops in uses)
    applications = sum(_times(loops) for _n, loops in uses)
    looped = any(loops for _n, loops in uses)
    how = (f"basic composition of {len(uses)} mechanism(s)" if not looped else
           f"basic composition of {applications} application(s) of {len(uses)} mechanism(s): "
           "one inside a loop is applied once per iteration, so its epsilon and delta count "
           "once per iteration")
    lines = [f"- differential privacy: total budget epsilon = {epsilon:g}, delta = {delta:g} "
             f"({how}; exact discrete Laplace/Gaussian noise on the fixed-point grid, "
             "Canonne-Kamath-Steinke sampling from ChaCha20 keyed by os.urandom)"]
    for n, loops in uses:
        where = "each party adds its own, in its share" if \
            selected.devices[n.result.type.place].kind == "MPC" else "its party adds it"
        line = (f"  - {n.attrs['mechanism']} scale {n.attrs['scale']:.4g} "
                f"(sensitivity {n.attrs['sensitivity']:g}, epsilon {n.attrs['epsilon']:g}, "
                f"delta {n.attrs['delta']:g}) on {n.result.type.place} at {n.loc}: {where}")
        if loops:
            times = _times(loops)
            line += (f"; applied {times} times (once per iteration of {_loop_where(loops)}), "
                     f"composing to epsilon {times * n.attrs['epsilon']:g}, "
                     f"delta {times * n.attrs['delta']:g}")
        lines.append(line)
    return lines


def _he_lines(selected):
    """Trust lines for HE devices and the masking protocol (protocols.he, .masking)."""
    from .protocols.he import params_text
    from .protocols.ring import ring_of
    out = []
    for d in selected.devices.values():
        if d.kind == "HE":
            out.append(f"- HE device {d.name}: {d.key_owner} holds the secret key; "
                       f"{d.evaluator} sees only ciphertexts ({params_text()}) and the key owner "
                       "only sanitised results or values masked by the evaluator's randomness")
    uses = [n for n in selected.walk() if n.attrs.get("protocol") == "masking"]
    if uses:
        where = ", ".join(sorted({n.loc or n.op for n in uses}))
        rings = sorted({ring_of(selected.devices[n.result.type.place]).bits for n in uses})
        out.append(f"- masking protocol (the seed patent) on {len(uses)} linear layer(s) at "
                   f"{where}: the weights stay at their owner; the other party sends only x - r "
                   "(r its own uniform mask) and gets W.r - s under its own HE key, sanitised "
                   f"(s the weights owner's mask); HE: {'; '.join(params_text(b) for b in rings)}")
    return out


def audit_text(name, snapshots, final) -> str:
    selected = snapshots["select_protocols"]
    lines = [f"audit of program {name!r}", "", "parties: " + ", ".join(final.parties)]
    lines += [_device_line(d) for d in selected.devices.values()]
    messages = _messages(final)
    lines += ["", "trust assumptions:"] + _trust_lines(selected, final, messages)
    lines += ["", "disclosures (plaintext leaving its owner):"] + _disclosure_lines(selected)
    lines += ["", "values (who sees each, and in what form):"] + _value_lines(selected)
    if messages:
        from .protocols.dealerfree import ot_message_lines
        lines += ["", "messages (what crosses between parties, from the per-party programs):"]
        lines += _message_lines(messages) + ot_message_lines(final)
    return "\n".join(lines) + "\n"


def _trust_lines(selected, final, messages):
    lines = []
    if DEALER in final.parties:
        got = sorted({(s, w) for (s, r, w, _k, _t) in messages if r == DEALER})
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
        if d.kind == "MPC" and len(d.parties) == 3:
            lines.append(f"- MPC device {d.name}: three parties ({', '.join(d.parties)}), honest "
                         "majority (replicated sharing, ABY3): any one party learns nothing; two "
                         "colluding learn all (semi-honest)")
        elif d.kind == "MPC":
            lines.append(f"- MPC device {d.name}: secure while {' and '.join(d.parties)} do not "
                         "collude (semi-honest, 2-party additive sharing)")
    lines += _tee_lines(selected)
    lines += _he_lines(selected)
    lines.append("- semi-honest parties: each follows its program")
    return lines + _dp_lines(selected)


def _tee_lines(selected):
    """What each simulated TEE's party sees in the clear: what flows in, what it computes."""
    lines = []
    inflows = _tee_inflows(selected)
    for d in selected.devices.values():
        if d.kind != "TEE":
            continue
        (party,) = d.parties
        given = inflows.get(d.name, [])
        lines.append(f"- simulated TEE: party {party} (device {d.name}) sees these plaintexts; "
                     "in deployment this must be an attested enclave (nothing here attests, "
                     "encrypts or isolates it):")
        for v, how, loc, loops in given:
            lines.append(f"    {_desc(v)}: {how}{_at(loc)}{_repeated(loops)}")
        computed = [(n, loops) for n, loops in _walk(selected.nodes)
                    if n.results and n.results[0].type.place == d.name
                    and n.op not in ("to", "reveal", "loop")]
        for n, loops in computed:
            lines.append("    " + f"and computes in the clear: {n.op} {n.attrs.get('fn', '')}"
                         f"{_at(n.loc)}{_repeated(loops)}".replace("  ", " "))
        if not given and not computed:
            lines.append("    (nothing)")
    return lines


def _disclosure_lines(selected):
    """Every reveal, explicit ``to`` between plaintext devices, and plaintext sent to a TEE."""
    lines = []
    for n, loops in _walk(selected.nodes):
        if n.op not in ("to", "reveal") or not n.results:
            continue
        (v,) = n.operands
        src = selected.devices[v.type.place]
        dst = selected.devices[n.result.type.place]
        to_parties = ", ".join(dst.parties)
        times = _repeated(loops)
        if n.op == "reveal":
            lines.append(f"- {_desc(v)} on {v.type.place} revealed to {dst.name} ({to_parties}) "
                         f"by reveal at {n.loc}{times}")
        elif n.attrs.get("explicit") and dst.kind == "PYU" and src.name != dst.name:
            lines.append(f"- {_desc(v)} plaintext of {src.name} sent to {dst.name} ({to_parties}) "
                         f"by explicit to at {n.loc}{times}")
        elif dst.kind == "TEE" and src.kind == "PYU":
            how = "explicit to" if n.attrs.get("explicit") else "implicit to (the TEE function's use)"
            lines.append(f"- {_desc(v)} plaintext of {src.name} ({', '.join(src.parties)}) sent to "
                         f"TEE {dst.name} ({to_parties}) by {how} at {n.loc}{times}")
    return lines or ["- none"]


def _value_lines(selected):
    lines = []
    for n, loops in _walk(selected.nodes):
        for r in n.results:
            parties, form = _seen_by(selected, r)
            proto = n.attrs.get("protocol", "")
            verb = "sees" if len(parties) == 1 else "each see"
            op = f"input {n.attrs['name']}" if n.op == "input" else n.op  # params/w: a leaf
            lines.append(f"{_desc(r)} = {op} [{proto}]{_at(n.loc)}{_per_iteration(loops)}: "
                         f"{', '.join(parties)} {verb} {form}")
    return lines


# ------------------------------------------------------------------ DOT view

COLORS = {"PYU": "lightblue", "MPC": "orange", "HE": "palegreen", "TEE": "plum"}
KIND_STYLE = {"plain": "solid", "public": "dotted", "arith": "bold", "bool": "dashed"}


def dot_graph(module) -> str:
    """The module as a Graphviz digraph: a box per op that has results (and per loop), an
    edge per operand; a loop's body is a ``subgraph cluster_loopN`` labelled "loop ×N" (its
    trip count) with its block arguments (ellipses, fed by the loop's operands) and its
    ``yield`` (whose operands feed the loop's results)."""
    dot = _DotWriter(module)
    dot.emit(module.nodes, 1, 1)
    return "\n".join(dot.lines + dot.edges + ["}"]) + "\n"


class _DotWriter:
    def __init__(self, module):
        self.module = module
        self.lines = [f'digraph "{module.name}" {{', "  node [shape=box, style=filled];",
                      "  compound=true;"]
        self.edges = []
        self.names = {}      # value -> the DOT node that defines it
        self.yields = {}     # yield node -> its DOT node
        self.loops = 0
        self.unnamed = 0     # nodes without results

    def emit(self, nodes, indent, outer):
        pad = "  " * indent
        for n in nodes:
            if not n.results and n.body is None and n.op != "yield":
                continue  # output, send, ...: not drawn
            if n.results:
                name = f"v{n.results[0].id}"
            else:
                self.unnamed += 1
                name = f"n{self.unnamed}"
            if n.body is None:  # a loop's operands feed its block's arguments instead
                self.edges += [f"  {self.names[v]} -> {name};" for v in n.operands
                               if v in self.names]
            if n.op == "yield":
                self.lines.append(f'{pad}{name} [label="yield", shape=house, fillcolor=white];')
                self.yields[n] = name
                continue
            for r in n.results:
                self.names[r] = name
            self.lines.append(f"{pad}{name} {self._node_attrs(n)};")
            if n.body is not None:
                self._loop(n, name, pad, indent, outer)

    def _node_attrs(self, n):
        if n.results:
            r = n.results[0]
            device = self.module.devices.get(r.type.place)
            color = COLORS.get(device.kind if device else "", "white")
            label = f"%{r.id} = {n.op}\\n{r.type}"
            style = KIND_STYLE.get(r.type.kind, "solid")
        else:
            color, label, style = "white", n.op, "solid"
        if n.body is not None:
            label = (", ".join(f"%{r.id}" for r in n.results) + " = " if n.results else "") \
                + f"loop \u00d7{n.attrs.get('trip_count', '?')}"
        label = label.replace('"', '\\"')
        return f'[label="{label}", fillcolor={color}, style="filled,{style}"]'

    def _loop(self, n, name, pad, indent, outer):
        """The loop's body as a cluster: its arguments, fed by the loop's operands, then its ops;
        its yield feeds the loop's node."""
        self.loops += 1
        where = f" at {n.loc}" if n.loc else ""
        trips = n.attrs.get("trip_count", 1)
        in_all = f" (\u00d7{outer * trips} in all)" if outer != 1 else ""
        caption = f"loop \u00d7{trips}{in_all}{where}".replace('"', '\\"')
        self.lines.append(f"{pad}subgraph cluster_loop{self.loops} {{")
        self.lines.append(f'{pad}  label="{caption}"; style="rounded,dashed"; color=gray40;')
        captures = n.attrs.get("captures", 0)
        for i, (arg, operand) in enumerate(zip(n.body.args, n.operands)):
            arg_name = f"a{arg.id}"
            self.names[arg] = arg_name
            role = "captured" if i < captures else "carried"
            self.lines.append(f'{pad}  {arg_name} [label="%{arg.id} {role}", shape=ellipse, '
                              'fillcolor=white];')
            if operand in self.names:
                self.edges.append(f"  {self.names[operand]} -> {arg_name} [style=dashed];")
        self.emit(n.body.nodes, indent + 1, outer * trips)
        self.lines.append(f"{pad}}}")
        last = n.body.nodes[-1] if n.body.nodes else None
        if last in self.yields:
            self.edges.append(f"  {self.yields[last]} -> {name} [style=dashed, "
                              'label="after the last iteration"];')


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


LOOP_HEAD, ARG_W = 34, 120  # a loop box's title band; a block argument's box


class _Laid:
    """A block laid out: ``items`` (dicts: node or arg, col, x, y, w, h, inner), its size,
    and ``producer``: value -> index of the item that defines it."""

    def __init__(self, items, width, height, producer):
        self.items, self.width, self.height, self.producer = items, width, height, producer


def _lay_out(nodes, args, captures, budget):
    """Columns by topological depth within the block, rows in program order; a loop is a
    box as large as its body laid out the same way (plus a title band); the block's
    arguments (what a loop body binds) form column 0. ``budget[0]``: ops still to draw."""
    items, producer = [], {}
    for i, a in enumerate(args):
        producer[a] = len(items)
        items.append({"arg": a, "role": "captured" if i < captures else "carried",
                      "col": 0, "w": ARG_W, "h": BOX_H})
    base = 1 if args else 0
    for n in nodes:
        if budget[0] <= 0:
            break
        budget[0] -= 1
        col = base
        for v in n.operands:
            if v in producer:
                col = max(col, items[producer[v]]["col"] + 1)
        inner = None
        w, h = BOX_W, BOX_H
        if n.body is not None:
            inner = _lay_out(n.body.nodes, n.body.args, n.attrs.get("captures", 0), budget)
            w, h = max(BOX_W + 60, inner.width), LOOP_HEAD + inner.height
        for r in n.results:
            producer[r] = len(items)
        items.append({"node": n, "col": col, "w": w, "h": h, "inner": inner})
    widths, heights = {}, {}
    for it in items:
        widths[it["col"]] = max(widths.get(it["col"], 0), it["w"])
    xs, x = {}, PAD
    for c in range(max(widths, default=-1) + 1):
        xs[c] = x
        x += widths.get(c, 0) + GAP_X
    for it in items:
        it["x"] = xs[it["col"]]
        it["y"] = PAD + heights.get(it["col"], 0)
        heights[it["col"]] = heights.get(it["col"], 0) + it["h"] + GAP_Y
    width = max(x - GAP_X + PAD, 2 * PAD + BOX_W)
    height = max((h - GAP_Y for h in heights.values()), default=BOX_H) + 2 * PAD
    return _Laid(items, width, height, producer)


def _draw(laid, ox, oy, fill_of, out):
    """SVG for a laid-out block at offset (ox, oy): its edges, then its boxes (a loop's box
    holds its body, drawn inside it)."""
    for it in laid.items:
        n = it.get("node")
        if n is None:
            continue
        x2, y2c = ox + it["x"], oy + it["y"] + BOX_H / 2
        for v in n.operands:
            src = laid.producer.get(v)
            if src is None:
                continue
            s = laid.items[src]
            x1, y1 = ox + s["x"] + s["w"], oy + s["y"] + (BOX_H / 2 if s.get("inner") is None
                                                           else s["h"] / 2)
            mid = (x1 + x2) / 2
            color = KIND_STROKE.get(v.type.kind, "#444")
            out.append(f'<path d="M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2c:.0f} '
                       f'{x2:.0f},{y2c:.0f}" stroke="{color}" fill="none" stroke-opacity="0.45"/>')
    for it in laid.items:
        x, y = ox + it["x"], oy + it["y"]
        n = it.get("node")
        if n is None:
            a = it["arg"]
            kind = a.type.kind
            dash = KIND_DASH.get(kind, "")
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            t = a.type
            head = f"%{a.id} {it['role']}"
            sub = f"{t.dtype}[{','.join(map(str, t.shape))}] {kind}"
            out.append(f'<g class="arg"><title>{_e(head + ": " + str(t))}</title>'
                       f'<rect x="{x}" y="{y}" width="{it["w"]}" height="{BOX_H}" rx="12" '
                       f'fill="#ffffff" stroke="{KIND_STROKE.get(kind, "#222")}" '
                       f'stroke-width="1.5"{dash_attr}/>'
                       f'<text x="{x + 8}" y="{y + 14}" font-size="11">'
                       f'{_e(_clip(head, it["w"]))}</text>'
                       f'<text x="{x + 8}" y="{y + 27}" font-size="9" fill="#444">'
                       f'{_e(_clip(sub, it["w"]))}</text></g>')
            continue
        if it.get("inner") is not None:
            trips = n.attrs.get("trip_count", "?")
            results = ", ".join(f"%{r.id}" for r in n.results)
            head = (f"{results} = " if results else "") + f"loop \u00d7{trips}"
            sub = f"{n.attrs.get('captures', 0)} captured, " \
                f"{len(n.operands) - n.attrs.get('captures', 0)} carried" + _at(n.loc)
            out.append(f'<g class="loop"><title>{_e(_tooltip(n))}</title>'
                       f'<rect x="{x}" y="{y}" width="{it["w"]}" height="{it["h"]}" rx="8" '
                       f'fill="#fafafa" fill-opacity="0.9" stroke="#555" stroke-width="1.5" '
                       f'stroke-dasharray="5,3"/>'
                       f'<text x="{x + 8}" y="{y + 15}" font-size="12" font-weight="bold">'
                       f'{_e(_clip(head, it["w"]))}</text>'
                       f'<text x="{x + 8}" y="{y + 28}" font-size="9" fill="#444">'
                       f'{_e(_clip(sub, it["w"]))}</text>')
            _draw(it["inner"], x, y + LOOP_HEAD, fill_of, out)
            out.append("</g>")
            continue
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


def _svg(module, fill_of, title):
    total = sum(1 for _ in module.walk())
    budget = [MAX_NODES]
    laid = _lay_out(module.nodes, (), 0, budget)
    width, height = laid.width, laid.height
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
           "<title>" + _e(title) + "</title>", '<g class="graph">']
    _draw(laid, 0, 0, fill_of, out)
    out.append("</g></svg>")
    note = (f'<p class="note">showing the first {MAX_NODES} of {total} ops; the '
            "IR files hold them all</p>") if total > MAX_NODES else ""
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


def _party_summary(prog):
    """"N ops, S sends, R receives" of a party's program; with loops, also how many of
    them a run executes (every iteration counted)."""
    static, run = {}, {}
    looped = False
    for n, loops in _walk(prog.nodes):
        times = _times(loops)
        looped = looped or bool(loops)
        for key in ("ops", n.op):
            static[key] = static.get(key, 0) + 1
            run[key] = run.get(key, 0) + times
    text = (f"{static.get('ops', 0)} ops, {static.get('send', 0)} sends, "
            f"{static.get('recv', 0)} receives")
    if looped:
        text += (f" in the program text; a run, every loop iteration counted, executes "
                 f"{run['ops']} ops, {run.get('send', 0)} sends, {run.get('recv', 0)} receives")
    return _e(text)


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
        "line. Edges take the colour of the value's kind. A dashed box \u201cloop \u00d7N\u201d "
        "is a loop: its body, drawn inside it (its captured and carried values as rounded "
        "boxes on the left), runs N times.</p>",
        '<section id="global"><h2>global program (after select_protocols)</h2>',
        '<div class="scroll">', _svg(global_module, global_fill, f"{name}: global"),
        "</div></section>",
    ]
    for i, (party, prog) in enumerate(programs.items()):
        parts += [f'<section id="{_anchor(i, party)}" class="party"><h2>party {_e(party)}</h2>',
                  f"<p>{_party_summary(prog)}</p>",
                  '<div class="scroll">', _svg(prog, party_fill, f"{name}: {party}"),
                  "</div></section>"]
    if audit:
        parts += ['<section id="audit"><h2>audit</h2>', f"<pre>{_e(audit)}</pre></section>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
